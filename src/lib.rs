//! A trainer for the classic "neural network from scratch" on MNIST (784 → hidden → 10,
//! softmax, gradient descent), on the GPU through WGSL compute shaders, checked against a
//! CPU reference.
//!
//! - `data`: reading IDX and CSV files into bytes.
//! - `model`: the network's parameters and their layout; `model_file`: saving and loading them.
//! - `optimizer`: the update rules (SGD, momentum, Adam).
//! - `backend`: the trait both backends implement.
//! - `cpu`: the CPU backend and the CPU twin of every kernel (`cpu::ops`).
//! - `gpu`: the wgpu context, the kernel wrappers (`gpu::kernels`) and the GPU backend.
//! - `options`: a run's options, typed (what a checkpoint records).
//! - `train`: the training loop.
//! - `metrics`: the training curves as CSV and as a plot.
//! - `art`: digits as text.
//!
//! The command line (`src/main.rs`, `src/cli/`: train, predict, eval, bench, serve) is built on
//! this library.

pub mod art;
pub mod backend;
pub mod checkpoint;
pub mod cpu;
pub mod data;
pub mod error;
pub mod gpu;
pub mod layout;
pub mod metrics;
pub mod model;
pub mod model_file;
pub mod optimizer;
pub mod options;
pub mod plot;
pub mod train;

pub use error::{Error, Result};
