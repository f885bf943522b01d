//! A trainer for the classic "neural network from scratch" on MNIST (784 → hidden → 10,
//! softmax, gradient descent), on the GPU through WGSL compute shaders, checked against a
//! CPU reference.
//!
//! Layers, each importing only from those below it (docs/ARCHITECTURE.md):
//!
//! - `data`: reading IDX and CSV files into bytes; `data::pool`: the image pool, the index
//!   lists, the dev split and the shifts that both backends and the training loop share;
//!   `augment`: the affine and elastic warps, drawn for both backends.
//! - `model`: the network's parameters and their layout; `model_file`: saving and loading them;
//!   `onnx`: writing them as an ONNX graph for other runtimes.
//! - `layout`: where a matrix's elements lie, for both backends' products.
//! - `optimizer`: the update rules (SGD, momentum, Adam), their constants and state.
//! - `backend`: the trait both backends implement (a whole training step).
//! - `cpu`: the CPU backend (a reference and a fused engine) and the CPU twin of every kernel
//!   (`cpu::ops`).
//! - `gpu`: the wgpu context, the pipeline builder, the kernel wrappers (`gpu::kernels`) and
//!   the GPU backend (a reference and a fused engine). Neither backend imports the other.
//! - `options`: a run's options, typed (what the command line parses into and a checkpoint
//!   records).
//! - `train`: the training loop; `checkpoint`: the whole run's state in one file, written from
//!   the loop's checkpoint hook.
//! - `metrics`: the training curves as CSV and as a plot.
//! - `art`: digits as text.
//!
//! The command line (`src/main.rs`, `src/cli/`: train, predict, eval, export, bench, serve) is
//! built on this library.

pub mod art;
pub mod augment;
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
pub mod onnx;
pub mod optimizer;
pub mod options;
pub mod plot;
pub mod train;

pub use error::{Error, Result};
