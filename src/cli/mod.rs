//! The command line's parts: `train` (the default command), `predict` and `eval`, `export`,
//! `bench` and `serve`; and what they share: the choice of backend and path, and opening it.

pub mod bench;
pub mod export;
pub mod predict;
pub mod resume;
pub mod serve;
pub mod stop;
pub mod train;
pub mod train_args;
pub mod usage_error;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, ValueEnum};

use mnist_gpu::backend::{Backend, StepPath};
use mnist_gpu::cpu::CpuBackend;
use mnist_gpu::data::pool::{ImagePool, ListSizes};
use mnist_gpu::error::{config, Error, Result};
use mnist_gpu::gpu::context::AutoChoice;
use mnist_gpu::gpu::MatmulKind;
use mnist_gpu::gpu::{GpuBackend, GpuContext};
use mnist_gpu::model::Model;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// A hardware GPU when there is one, else the CPU (with a line saying why).
    Auto,
    /// WGSL compute shaders through wgpu, on the best adapter (a real GPU, or a software
    /// adapter such as lavapipe).
    Gpu,
    /// The CPU backend.
    Cpu,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Auto => "auto",
            BackendKind::Gpu => "gpu",
            BackendKind::Cpu => "cpu",
        }
    }
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
    /// Where the math runs: `auto` is a hardware GPU when there is one, else the CPU.
    #[arg(long, value_enum, default_value_t = BackendKind::Auto)]
    pub backend: BackendKind,

    /// Which implementation of the step runs.
    #[arg(long, value_enum, default_value_t = PathKind::Auto)]
    pub path: PathKind,

    /// GPU adapter to use: any part of its name, case-insensitive (see WGPU_ADAPTER_NAME).
    #[arg(long)]
    pub adapter: Option<String>,

    /// Which kernels take the GPU's wide matrix products: `plain` (float32) or `coop` (the
    /// adapter's cooperative matrices where it has them: f16 inputs, f32 sums).
    #[arg(long, value_enum, default_value_t = MatmulKind::Plain)]
    pub matmul: MatmulKind,
}

/// The lines reading a dataset calls for: its reader's notes (how a folder's classes were
/// numbered), and how many pictures had a light background and were inverted.
pub fn data_notes(loaded: &mnist_gpu::data::Loaded) -> Vec<String> {
    let mut lines: Vec<String> = loaded.notes.iter().map(|n| format!("note: {n}")).collect();
    if let Some((count, first)) = loaded.inverted() {
        let total = loaded.pictures.len();
        lines.push(if total == 1 {
            format!("note: {first} has a light background: it was inverted, ink light on dark as MNIST's")
        } else {
            format!(
                "note: {count} of {total} pictures had a light background and were inverted, ink \
                 light on dark as MNIST's (the first: {first})"
            )
        });
    }
    lines
}

/// A backend, which one it is ("cpu" or "gpu"), and why.
pub struct Opened {
    pub backend: Box<dyn Backend>,
    pub name: &'static str,
    /// Why this backend runs: `--backend cpu`, or what `--backend auto` found.
    pub reason: String,
    /// Set when `--backend auto` chose the CPU: why, for a line that says so.
    pub fallback: Option<Fallback>,
    /// On the GPU, which kernels take the wide matrix products ("plain" or "coop"), and the
    /// line saying why `--matmul coop` was asked but the plain ones run.
    pub matmul: Option<&'static str>,
    pub matmul_note: Option<String>,
}

impl Opened {
    /// The lines to print before the work starts: why the CPU runs, why the plain matmul does.
    pub fn notes(&self, doing: &str) -> Vec<String> {
        let fallback = self.fallback.as_ref().map(|f| f.note(doing));
        fallback
            .into_iter()
            .chain(self.matmul_note.clone())
            .collect()
    }
}

/// Why `--backend auto` runs on the CPU.
pub struct Fallback {
    why: String,
    /// A software adapter is there, which `--backend gpu` would use.
    software: bool,
}

impl Fallback {
    /// The line that says so: `doing` (say, "training") on the CPU, and why.
    pub fn note(&self, doing: &str) -> String {
        let anyway = if self.software {
            "; --backend gpu uses it anyway"
        } else {
            ""
        };
        format!("note: {}: {doing} on the CPU{anyway}", self.why)
    }
}

impl BackendArgs {
    /// Builds the chosen backend holding `model` and the images of `pool`.
    pub fn open(
        &self,
        model: &Model,
        pool: Arc<ImagePool>,
        sizes: ListSizes,
        capacity: usize,
    ) -> Result<Opened> {
        let path = self.path.path();
        let cpu = |reason: String, fallback: Option<Fallback>| -> Result<Opened> {
            let backend = CpuBackend::with_path(model, pool.clone(), sizes, capacity, path)?;
            Ok(Opened {
                backend: Box::new(backend),
                name: "cpu",
                reason,
                fallback,
                matmul: None,
                matmul_note: self.gpu_only_note(),
            })
        };
        let gpu = |ctx: GpuContext, reason: String| -> Result<Opened> {
            let (matmul, matmul_note) = (Some(ctx.matmul()), ctx.coop_note());
            let ctx = Arc::new(ctx);
            let backend = GpuBackend::with_path(ctx, model, &pool, sizes, capacity, path)?;
            Ok(Opened {
                backend: Box::new(backend),
                name: "gpu",
                reason,
                fallback: None,
                matmul,
                matmul_note,
            })
        };
        let (adapter, coop) = (self.adapter.as_deref(), self.matmul == MatmulKind::Coop);
        match self.backend {
            BackendKind::Cpu => cpu("--backend cpu".into(), None),
            BackendKind::Gpu => gpu(GpuContext::new(adapter, coop)?, "--backend gpu".into()),
            BackendKind::Auto => match GpuContext::auto(adapter, coop)? {
                AutoChoice::Gpu(ctx) => {
                    let reason = format!("a GPU adapter: {}", ctx.describe());
                    gpu(ctx, reason)
                }
                AutoChoice::Cpu { why, software } => {
                    cpu(why.clone(), Some(Fallback { why, software }))
                }
            },
        }
    }
}

impl BackendArgs {
    /// On the CPU, the line saying that the GPU's options given are not used, rather than
    /// ignoring them silently: with `--backend auto` the user may not know the CPU runs.
    fn gpu_only_note(&self) -> Option<String> {
        let adapter = self
            .adapter
            .as_ref()
            .map(|name| format!("--adapter {name}"));
        let matmul = (self.matmul != MatmulKind::Plain).then_some("--matmul coop".to_string());
        let given: Vec<String> = adapter.into_iter().chain(matmul).collect();
        let are = match given.len() {
            0 => return None,
            1 => "is",
            _ => "are",
        };
        Some(format!(
            "note: {} {are} for a GPU and not used: the CPU runs",
            given.join(" and ")
        ))
    }
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
    // Found now, not when the run's work is to be saved: a file made (and removed) there.
    let dir = dir.unwrap_or(Path::new("."));
    let probe = dir.join(format!(".mnist-gpu-probe.{}", std::process::id()));
    let made = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe);
    match made {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
        }
        Err(e) => {
            return config(format!(
                "{option} {}: cannot write a file in {}: {e}",
                path.display(),
                dir.display()
            ))
        }
    }
    Ok(())
}

/// Whether two output paths name one file (which need not exist; its folder does).
pub fn same_file(a: &Path, b: &Path) -> bool {
    let full = |p: &Path| {
        let dir = p.parent().filter(|d| !d.as_os_str().is_empty());
        let dir = dir.unwrap_or(Path::new(".")).canonicalize().ok()?;
        Some(dir.join(p.file_name()?))
    };
    match (full(a), full(b)) {
        (Some(a), Some(b)) => a == b,
        _ => a == b,
    }
}

/// A lock on an output file, so that a second process writing it is refused rather than
/// replacing its work: `flock` on `.NAME.lock` beside it, which the kernel releases when the
/// process ends, however it ends. The lock file is removed when the run is done with it.
pub struct OutputLock {
    path: PathBuf,
    _file: std::fs::File,
}

impl OutputLock {
    pub fn take(path: &Path, option: &str) -> Result<OutputLock> {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let lock = path.with_file_name(format!(".{name}.lock"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock)
            .map_err(|e| {
                Error::Config(format!("{option} {}: cannot lock it: {e}", path.display()))
            })?;
        #[cfg(unix)]
        {
            use std::os::unix::io::AsRawFd;
            // SAFETY: flock on a descriptor this function owns.
            let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if locked != 0 {
                return config(format!(
                    "{option} {}: another mnist-gpu run is writing it (it holds {}); wait for \
                     it to end, or choose another path",
                    path.display(),
                    lock.display()
                ));
            }
        }
        Ok(OutputLock {
            path: lock,
            _file: file,
        })
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        // Removed while still held: a run starting now makes a new one.
        let _ = std::fs::remove_file(&self.path);
    }
}
