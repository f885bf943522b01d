//! The command line's parts: `train` (the default command), `predict` and `eval`.

pub mod predict;
pub mod train;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, ValueEnum};

use mnist_gpu::backend::{Backend, ImagePool, ListSizes, StepPath};
use mnist_gpu::cpu::CpuBackend;
use mnist_gpu::error::{config, Result};
use mnist_gpu::gpu;
use mnist_gpu::model::Model;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// WGSL compute shaders through wgpu (a real GPU, or a software adapter such as lavapipe).
    Gpu,
    /// The CPU backend.
    Cpu,
}

/// Which implementation of the step runs (see `StepPath`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PathKind {
    /// The fused path where it covers the network (always on the CPU; on the GPU one or two
    /// hidden layers of at most 64 units), else the reference.
    Auto,
    /// The whole step block by block in few passes; an error where it does not cover the network.
    Fused,
    /// One kernel per operation over the whole batch: what the fused path is checked against.
    Reference,
}

impl PathKind {
    pub fn path(self) -> Option<StepPath> {
        match self {
            PathKind::Auto => None,
            PathKind::Fused => Some(StepPath::Fused),
            PathKind::Reference => Some(StepPath::Reference),
        }
    }
}

/// Where the math runs; shared by every command.
#[derive(Debug, Clone, Args)]
pub struct BackendArgs {
    /// Where the math runs.
    #[arg(long, value_enum, default_value_t = BackendKind::Gpu)]
    pub backend: BackendKind,

    /// Which implementation of the step runs.
    #[arg(long, value_enum, default_value_t = PathKind::Auto)]
    pub path: PathKind,

    /// GPU adapter to use: any part of its name, case-insensitive (see WGPU_ADAPTER_NAME).
    #[arg(long)]
    pub adapter: Option<String>,
}

impl BackendArgs {
    pub fn name(&self) -> &'static str {
        match self.backend {
            BackendKind::Cpu => "cpu",
            BackendKind::Gpu => "gpu",
        }
    }

    /// Builds the chosen backend holding `model` and the images of `pool`.
    pub fn open(
        &self,
        model: &Model,
        pool: Arc<ImagePool>,
        sizes: ListSizes,
        capacity: usize,
    ) -> Result<Box<dyn Backend>> {
        let path = self.path.path();
        Ok(match (self.backend, path) {
            (BackendKind::Cpu, Some(StepPath::Reference)) => {
                Box::new(CpuBackend::new_reference(model, pool, sizes, capacity)?)
            }
            (BackendKind::Cpu, _) => Box::new(CpuBackend::new(model, pool, sizes, capacity)?),
            (BackendKind::Gpu, _) => {
                gpu::open_backend(self.adapter.as_deref(), model, pool, sizes, capacity, path)?
            }
        })
    }
}

/// The embedded data's files, found from the source tree.
pub fn embedded(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/mnist")
        .join(name)
}

/// `0.9141` as `91.41%`, or `n/a`.
pub fn percent(a: Option<f64>) -> String {
    a.map_or("n/a".to_string(), |a| format!("{:.2}%", 100.0 * a))
}

/// An output file must be writable where it is asked for: find out before the work starts.
pub fn check_output(path: &Option<PathBuf>, option: &str, extensions: &[&str]) -> Result<()> {
    let Some(path) = path else { return Ok(()) };
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if !extensions.contains(&ext.to_lowercase().as_str()) {
        return config(format!(
            "{option} {}: the file name must end in .{}",
            path.display(),
            extensions.join(" or .")
        ));
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        if !dir.is_dir() {
            return config(format!(
                "{option} {}: directory {} does not exist",
                path.display(),
                dir.display()
            ));
        }
    }
    if path.is_dir() {
        return config(format!("{option} {}: is a directory", path.display()));
    }
    Ok(())
}
