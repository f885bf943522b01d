//! The integration tests, in one binary: a module per area (the files beside this one), so that
//! the shared helpers in `common` compile once and wgpu, axum and tokio link once.
//!
//! Run one area with its module name as the filter, e.g.
//! `cargo test --release --test integration kernels::`.

mod common;

mod accuracy;
mod augment;
mod bench_cli;
mod browser_train;
mod checkpoints;
mod cli;
mod cli_edges;
mod cpu_fast;
mod cpu_wide;
mod csv_shapes;
mod data_formats;
mod data_props;
mod data_sources;
mod gpu_faults;
mod gpu_fused;
mod house;
mod kernels;
mod large;
mod means;
mod model;
mod model_files;
mod onnx;
mod parity;
mod readme;
mod serve;
mod shaders;
mod stops;
mod training;
