//! A trainer for the classic "neural network from scratch" on MNIST (784 → hidden → 10,
//! softmax, gradient descent), on the GPU through WGSL compute shaders, checked against a
//! CPU reference.
//!
//! The layers (data → model → backends → training → CLI) and the map of the source tree
//! are in docs/ARCHITECTURE.md; the command line (`src/main.rs`, `src/cli/`) is built on
//! this library.

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
pub mod params;
pub mod plot;
pub mod train;

pub use error::{Error, Result};
