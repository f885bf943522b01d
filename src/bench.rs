//! `mnist-gpu bench`: training throughput (samples per second) per backend and batch size,
//! on synthetic data of MNIST's shape, as a table, a JSON array and optionally a log-log plot.
//!
//! Each measurement builds a fresh backend, warms it up, sizes its timed runs from the
//! warm-up's speed, and reports the median of a few runs. GPU runs end with `batch_stats()`,
//! a read-back that waits for the GPU, inside the timed region: `train_step` only records (and
//! now and then submits). With `--profile`, each GPU measurement is followed by profiled steps
//! whose kernels are timed on the GPU with timestamp queries, where the adapter has them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::{json, Value};

use crate::backend::{Backend, StepPath};
use crate::cpu::CpuBackend;
use crate::data::pool::{ImagePool, List, ListSizes};
use crate::data::{CLASSES, PIXELS};
use crate::error::{config, Error, Result};
use crate::gpu::context::AutoChoice;
use crate::gpu::fused::{self, Tiling};
use crate::gpu::MatmulKind;
use crate::gpu::{GpuBackend, GpuContext};
use crate::model::{Activation, Init, Model};
use crate::plot;

/// Warm-up after the first step: at least one more step and this long.
const WARM_UP: Duration = Duration::from_millis(200);
/// Each timed run lasts about this long (at least one step), so timer noise is small.
const RUN: Duration = Duration::from_millis(250);
/// Timed runs per measurement; fewer when single steps are slow (see `MEASUREMENT`).
const RUNS: usize = 5;
const MIN_RUNS: usize = 3;
/// Rough cap on the timed runs of one measurement, so that a full batch on a software
/// adapter (seconds per step) does not make the default run take minutes.
const MEASUREMENT: Duration = Duration::from_secs(6);
/// Learning rate of the timed steps: small, so random data never drives the weights to
/// NaN or infinity (whose arithmetic can be slower and would distort the timing).
const ALPHA: f32 = 0.01;

/// `--path`: which implementation of the step is timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PathChoice {
    Auto,
    Fused,
    Reference,
}

impl PathChoice {
    fn path(self) -> Option<StepPath> {
        match self {
            PathChoice::Auto => None,
            PathChoice::Fused => Some(StepPath::Fused),
            PathChoice::Reference => Some(StepPath::Reference),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Which {
    /// The CPU, then the GPU if there is a hardware adapter (else a note saying why not).
    Auto,
    Cpu,
    Gpu,
    /// The CPU, then the GPU if an adapter opens, a software one too (else a note, and the
    /// CPU alone).
    Both,
}

/// A batch size: a number of samples, or `full` (every sample, the tutorials' full-batch
/// gradient descent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchSize {
    Samples(usize),
    Full,
}

impl BatchSize {
    fn resolve(self, samples: usize) -> usize {
        match self {
            BatchSize::Samples(b) => b,
            BatchSize::Full => samples,
        }
    }
}

fn parse_batch_size(s: &str) -> std::result::Result<BatchSize, String> {
    match s.trim() {
        "full" => Ok(BatchSize::Full),
        n => match n.parse::<usize>() {
            Ok(0) => Err("a batch size must be at least 1".into()),
            Ok(b) => Ok(BatchSize::Samples(b)),
            Err(_) => Err(format!("{n:?} is neither a number nor `full`")),
        },
    }
}

/// Measures training throughput on synthetic data (random pixels and labels, seeded):
/// samples per second, the median of several timed runs after a warm-up.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchOptions {
    /// Which backends to measure.
    #[arg(long, value_enum, default_value_t = Which::Auto)]
    pub backend: Which,

    /// Batch sizes, comma-separated; `full` is every sample (full-batch gradient descent).
    #[arg(long, value_delimiter = ',', value_parser = parse_batch_size,
          default_value = "64,256,1024,8192,full")]
    pub batch_sizes: Vec<BatchSize>,

    /// Synthetic training samples.
    #[arg(long, default_value_t = 60_000)]
    pub samples: usize,

    /// Hidden layer widths, comma-separated, as for training.
    #[arg(long, value_delimiter = ',', default_value = "10")]
    pub hidden: Vec<usize>,

    /// GPU adapter to use: any part of its name, case-insensitive.
    #[arg(long)]
    pub adapter: Option<String>,

    /// Which implementation of the step: `auto` (the fused one where it covers the network),
    /// `fused` or `reference`.
    #[arg(long, value_enum, default_value_t = PathChoice::Auto)]
    pub path: PathChoice,

    /// Which kernels take the GPU's wide matrix products: `plain` (float32) or `coop` (the
    /// adapter's cooperative matrices, where it has them).
    #[arg(long, value_enum, default_value_t = MatmulKind::Plain)]
    pub matmul: MatmulKind,

    /// After each GPU measurement, time every kernel on the GPU (timestamp queries, where the
    /// adapter has them) and print its time per step beside the wall-clock time per step.
    #[arg(long)]
    pub profile: bool,

    /// Tuning the fused GPU step: samples per block (8, 16, 32 or 64) [default: 32, or fewer
    /// where the adapter's workgroup memory is small].
    #[arg(long, value_name = "SAMPLES")]
    pub block: Option<usize>,

    /// Tuning the fused GPU step: most workgroups (partial gradient slices) per step.
    #[arg(long, value_name = "N")]
    pub max_groups: Option<usize>,

    /// Print the results as one JSON array, the last line of stdout.
    #[arg(long)]
    pub json: bool,

    /// Draw samples/s against batch size (log-log) into this .svg or .png file.
    #[arg(long)]
    pub plot: Option<PathBuf>,

    /// Results of other tools (a JSON array as printed by --json, e.g. by bench/peers/*.py)
    /// to show in the table, with our CPU's rate divided by theirs, and in the plot. Repeatable.
    #[arg(long = "compare", value_name = "FILE.json")]
    pub compare: Vec<PathBuf>,
}

/// One measured (or compared) throughput.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// "cpu", "gpu", or a peer's name such as "numpy".
    pub backend: String,
    /// What ran it: the CPU model, or the GPU adapter's description.
    pub adapter: String,
    pub software_adapter: bool,
    /// "fused" or "reference" for ours; empty for a peer.
    pub path: String,
    /// The fused GPU step's tiling, where it ran.
    pub tiling: Option<Tiling>,
    /// On the GPU, which kernels took the wide matrix products: "plain" or "coop".
    pub matmul: Option<String>,
    pub batch_size: usize,
    pub full_batch: bool,
    pub samples: usize,
    /// Training steps in each timed run.
    pub steps: usize,
    pub runs: usize,
    /// Median seconds of one timed run.
    pub seconds: f64,
    pub samples_per_second: f64,
    /// `--profile`: GPU time per step of each kernel, where the adapter has timestamps.
    pub profile: Option<Profile>,
}

/// GPU time per training step, kernel by kernel (`--profile`).
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub steps: usize,
    /// Per kernel: its name, GPU seconds per step and dispatches per step.
    pub kernels: Vec<(String, f64, f64)>,
}

impl Profile {
    fn gpu_seconds_per_step(&self) -> f64 {
        self.kernels.iter().map(|k| k.1).sum()
    }

    fn dispatches_per_step(&self) -> f64 {
        self.kernels.iter().map(|k| k.2).sum()
    }
}

impl Measurement {
    fn to_json(&self, hidden: &[usize]) -> Value {
        json!({
            "backend": self.backend,
            "adapter": self.adapter,
            "software_adapter": self.software_adapter,
            "path": self.path,
            "matmul": self.matmul,
            "block": self.tiling.map(|t| t.block),
            "max_groups": self.tiling.map(|t| t.max_groups),
            "batch_size": self.batch_size,
            "full_batch": self.full_batch,
            "samples": self.samples,
            "hidden": hidden,
            "steps": self.steps,
            "runs": self.runs,
            "seconds": self.seconds,
            "samples_per_second": self.samples_per_second,
            "profile": self.profile.as_ref().map(|p| json!({
                "steps": p.steps,
                "gpu_seconds_per_step": p.gpu_seconds_per_step(),
                "dispatches_per_step": p.dispatches_per_step(),
                "kernels": p.kernels.iter().map(|(name, seconds, dispatches)| json!({
                    "kernel": name,
                    "seconds_per_step": seconds,
                    "dispatches_per_step": dispatches,
                })).collect::<Vec<_>>(),
            })),
        })
    }

    /// Reads an entry of another tool's JSON array; only the fields the table and plot use.
    fn from_json(v: &Value, source: &Path) -> Result<Measurement> {
        let bad = |field: &str| {
            Error::Config(format!(
                "{}: an entry has no valid {field:?}: {v}",
                source.display()
            ))
        };
        let text = |field: &str| {
            v[field]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| bad(field))
        };
        let count = |field: &str| {
            v[field]
                .as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| bad(field))
        };
        let rate = v["samples_per_second"]
            .as_f64()
            .filter(|r| r.is_finite() && *r > 0.0)
            .ok_or_else(|| bad("samples_per_second"))?;
        Ok(Measurement {
            backend: text("backend")?,
            adapter: text("adapter").unwrap_or_default(),
            software_adapter: v["software_adapter"].as_bool().unwrap_or(false),
            path: v["path"].as_str().unwrap_or_default().to_string(),
            matmul: v["matmul"].as_str().map(str::to_string),
            tiling: None,
            batch_size: count("batch_size")?,
            full_batch: v["full_batch"].as_bool().unwrap_or(false),
            samples: count("samples")?,
            steps: count("steps").unwrap_or(0),
            runs: count("runs").unwrap_or(0),
            seconds: v["seconds"].as_f64().unwrap_or(f64::NAN),
            samples_per_second: rate,
            profile: None,
        })
    }

    /// The name in the table's first column and the plot's legend.
    fn label(&self) -> String {
        if self.software_adapter {
            format!("{} (software adapter)", self.backend)
        } else {
            self.backend.clone()
        }
    }
}

/// `samples` images of random bytes with random labels, the same for the same seed: the data
/// of `mnist-gpu bench` and of `benches/train_step.rs`. Throughput does not depend on the
/// pixel values, and needing no file keeps the benchmark runnable anywhere.
pub fn synthetic_pool(samples: usize, seed: u64) -> ImagePool {
    let mut rng = StdRng::seed_from_u64(seed);
    let images = (0..samples * PIXELS).map(|_| rng.random::<u8>()).collect();
    let labels = (0..samples)
        .map(|_| rng.random_range(0..CLASSES as u8))
        .collect();
    ImagePool { images, labels }
}

/// The CPU's model name (from /proc/cpuinfo where there is one) and how many threads we may use.
pub fn cpu_description() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, name)| name.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{model}, {threads} threads")
}

/// Consecutive batches over the train list, the last one of a pass shorter, as in training.
struct Batches {
    samples: usize,
    batch: usize,
    next: usize,
}

impl Batches {
    /// One step; returns how many samples it trained on.
    fn step(&mut self, backend: &mut dyn Backend) -> Result<usize> {
        let len = self.batch.min(self.samples - self.next);
        backend.train_step(self.next, len, ALPHA)?;
        self.next = if self.next + len >= self.samples {
            0
        } else {
            self.next + len
        };
        Ok(len)
    }
}

/// Times training steps on one backend: consecutive batches over the train list, a warm-up,
/// then the median of timed runs.
pub fn measure(backend: &mut dyn Backend, samples: usize, batch: usize) -> Result<Measurement> {
    let mut batches = Batches {
        samples,
        batch,
        next: 0,
    };
    let mut step = |backend: &mut dyn Backend| batches.step(backend);

    // The first step alone (pipelines, caches, thread pools), then steps for WARM_UP whose
    // speed sizes the timed runs.
    step(backend)?;
    backend.batch_stats()?;
    let started = Instant::now();
    let mut warm_steps = 0;
    while warm_steps == 0 || started.elapsed() < WARM_UP {
        step(backend)?;
        warm_steps += 1;
    }
    backend.batch_stats()?;
    let per_step = started.elapsed().as_secs_f64() / warm_steps as f64;

    let steps = ((RUN.as_secs_f64() / per_step).ceil() as usize).max(1);
    let run_seconds = per_step * steps as f64;
    let runs = ((MEASUREMENT.as_secs_f64() / run_seconds) as usize).clamp(MIN_RUNS, RUNS);
    let mut timed = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        let mut trained = 0;
        for _ in 0..steps {
            trained += step(backend)?;
        }
        // Waits for the GPU to finish the steps (a read-back); cheap on the CPU.
        let stats = backend.batch_stats()?;
        let seconds = started.elapsed().as_secs_f64();
        if !stats.loss.is_finite() {
            return Err(Error::Diverged(format!(
                "the benchmark's loss became {} at batch size {batch}",
                stats.loss
            )));
        }
        timed.push((trained as f64 / seconds.max(1e-9), seconds));
    }
    timed.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (rate, seconds) = timed[timed.len() / 2];
    Ok(Measurement {
        backend: String::new(),
        adapter: String::new(),
        software_adapter: false,
        path: backend.path().name().to_string(),
        matmul: None,
        tiling: None,
        batch_size: batch,
        full_batch: batch == samples,
        samples,
        steps,
        runs,
        seconds,
        samples_per_second: rate,
        profile: None,
    })
}

/// Times `steps` steps kernel by kernel on the GPU; None where the adapter has no timestamp
/// queries.
pub fn profile(
    gpu: &mut GpuBackend,
    samples: usize,
    batch: usize,
    steps: usize,
) -> Result<Option<Profile>> {
    if !gpu.start_profile()? {
        return Ok(None);
    }
    let mut batches = Batches {
        samples,
        batch,
        next: 0,
    };
    for _ in 0..steps {
        batches.step(gpu)?;
    }
    let Some((kernels, untimed)) = gpu.profile()? else {
        return Ok(None);
    };
    if untimed > 0 {
        return Err(Error::Gpu(format!(
            "--profile: {untimed} dispatches ran untimed (too many in one submit)"
        )));
    }
    let per_step = |v: f64| v / steps as f64;
    Ok(Some(Profile {
        steps,
        kernels: kernels
            .into_iter()
            .map(|(name, seconds, count)| {
                (name.to_string(), per_step(seconds), per_step(count as f64))
            })
            .collect(),
    }))
}

/// The profile as lines of text, beside the wall-clock time per step.
fn profile_text(m: &Measurement) -> String {
    let Some(p) = &m.profile else {
        return String::new();
    };
    let wall = m.seconds / m.steps as f64;
    let mut out = format!(
        "GPU time per step, batch {} ({} path, {} profiled steps; each dispatch timed in a pass of its own):\n",
        m.batch_size, m.path, p.steps
    );
    for (name, seconds, dispatches) in &p.kernels {
        out += &format!(
            "  {name:<20} {:>10.1} µs  {:>5.1}%  {dispatches:.0} per step\n",
            seconds * 1e6,
            100.0 * seconds / p.gpu_seconds_per_step()
        );
    }
    out += &format!(
        "  {:<20} {:>10.1} µs          {:.0} dispatches per step\n",
        "all kernels",
        p.gpu_seconds_per_step() * 1e6,
        p.dispatches_per_step()
    );
    out += &format!(
        "  {:<20} {:>10.1} µs per step (the timed runs)\n",
        "wall clock",
        wall * 1e6
    );
    out
}

/// Runs the benchmark and prints the table (and JSON, and the plot) as `options` ask.
pub fn run(options: &BenchOptions) -> Result<()> {
    let samples = options.samples;
    if samples == 0 {
        return config("--samples must be at least 1");
    }
    if options.batch_sizes.is_empty() {
        return config("--batch-sizes needs at least one size");
    }
    let batches: Vec<usize> = options
        .batch_sizes
        .iter()
        .map(|b| b.resolve(samples))
        .collect();
    if let Some(&b) = batches.iter().find(|&&b| b > samples) {
        return config(format!(
            "--batch-sizes: {b} is larger than the {samples} samples (--samples)"
        ));
    }
    if let Some(path) = &options.plot {
        plot::format(path)?;
    }
    // Read the other tools' results first, so a bad file fails before minutes of timing.
    let mut peers = Vec::new();
    for path in &options.compare {
        peers.extend(read_results(path)?);
    }
    let model = Model::new(&options.hidden, Activation::Relu, Init::He, 1)?;

    // The GPU context first too: an unknown adapter is an error before any timing.
    let (adapter, coop) = (
        options.adapter.as_deref(),
        options.matmul == MatmulKind::Coop,
    );
    let gpu = match options.backend {
        Which::Cpu => None,
        Which::Gpu => Some(Arc::new(GpuContext::new(adapter, coop)?)),
        Which::Auto => match GpuContext::auto(adapter, coop)? {
            AutoChoice::Gpu(ctx) => Some(Arc::new(ctx)),
            AutoChoice::Cpu { why, software } => {
                let anyway = if software {
                    "; --backend gpu or both measures it anyway"
                } else {
                    ""
                };
                eprintln!("note: {why}: measuring the CPU alone{anyway}");
                None
            }
        },
        Which::Both => match GpuContext::new(adapter, coop) {
            Ok(ctx) => Some(Arc::new(ctx)),
            Err(e) => {
                eprintln!("note: GPU left out ({e})");
                None
            }
        },
    };
    if let Some(note) = gpu.as_ref().and_then(|ctx| ctx.coop_note()) {
        eprintln!("{note}");
    }
    let pool = Arc::new(synthetic_pool(samples, 1));
    let sizes = ListSizes {
        train: samples,
        dev: 0,
        test: 0,
    };
    let order: Vec<u32> = (0..samples as u32).collect();
    let cpu_name = cpu_description();

    let network = format!(
        "784-{}-10",
        options
            .hidden
            .iter()
            .map(|h| h.to_string())
            .collect::<Vec<_>>()
            .join("-")
    );
    println!(
        "mnist-gpu bench: {network} (ReLU, softmax), {samples} synthetic samples; \
         samples/s = median of timed runs after a warm-up"
    );
    let mut results = Vec::new();
    let with_cpu = options.backend != Which::Gpu;
    let path = options.path.path();
    // --block and --max-groups set the fused GPU step's tiling, starting from this device's.
    let tiling = match (&gpu, options.block, options.max_groups) {
        (_, None, None) => None,
        (Some(ctx), block, max_groups) => {
            if path == Some(StepPath::Reference) {
                return config(
                    "--block and --max-groups tune the fused path, not --path reference",
                );
            }
            let default = fused::tiling_for(ctx, &model);
            let tiling = Tiling {
                block: block.unwrap_or(default.block),
                max_groups: max_groups.unwrap_or(default.max_groups),
            };
            if tiling.max_groups == 0 {
                return config("--max-groups must be at least 1");
            }
            if let Some(why) = fused::unsupported(ctx, &model, tiling) {
                return config(format!("--block {}: {why}", tiling.block));
            }
            Some(tiling)
        }
        (None, ..) => {
            return config("--block and --max-groups tune the GPU's fused step: use --backend gpu")
        }
    };
    let report = |m: &Measurement| {
        eprintln!(
            "  {} batch {}: {:.0} samples/s ({} path)",
            m.backend, m.batch_size, m.samples_per_second, m.path
        )
    };
    for &batch in &batches {
        if with_cpu {
            let mut cpu = match path {
                Some(StepPath::Reference) => {
                    CpuBackend::new_reference(&model, pool.clone(), sizes, batch)?
                }
                _ => CpuBackend::new(&model, pool.clone(), sizes, batch)?,
            };
            cpu.set_list(List::Train, &order)?;
            let mut m = measure(&mut cpu, samples, batch)?;
            (m.backend, m.adapter) = ("cpu".into(), cpu_name.clone());
            report(&m);
            results.push(m);
        }
        if let Some(ctx) = &gpu {
            let mut gpu = match tiling {
                Some(tiling) => {
                    GpuBackend::with_tiling(ctx.clone(), &model, &pool, sizes, batch, tiling)?
                }
                None => GpuBackend::with_path(ctx.clone(), &model, &pool, sizes, batch, path)?,
            };
            gpu.set_list(List::Train, &order)?;
            let mut m = measure(&mut gpu, samples, batch)?;
            (m.backend, m.adapter) = ("gpu".into(), ctx.describe());
            m.software_adapter = ctx.is_software();
            m.tiling = gpu.tiling();
            m.matmul = Some(ctx.matmul().to_string());
            report(&m);
            if options.profile {
                m.profile = profile(&mut gpu, samples, batch, m.steps.clamp(10, 1000))?;
            }
            results.push(m);
        }
    }

    println!();
    print!("{}", table(&results, &peers));
    if let (Some(ctx), true) = (&gpu, options.profile) {
        if results.iter().any(|m| m.profile.is_some()) {
            for m in &results {
                print!("{}", profile_text(m));
            }
        } else {
            println!(
                "profile: {} has no timestamp queries (wgpu's TIMESTAMP_QUERY), so no GPU time per kernel",
                ctx.describe()
            );
        }
    }
    if let Some(ctx) = gpu.as_ref().filter(|c| c.is_software()) {
        println!(
            "note: \"gpu\" ran on {}: a software rasterizer on the CPU cores, not a GPU",
            ctx.describe()
        );
    }
    if let Some(path) = &options.plot {
        let title = format!("mnist-gpu training throughput, {network}, {samples} samples");
        let mut all = results.clone();
        all.extend(peers.iter().cloned());
        plot(path, &all, &title, &cpu_name)?;
        println!("plot written to {}", path.display());
    }
    if options.json {
        let array: Vec<Value> = results.iter().map(|m| m.to_json(&options.hidden)).collect();
        println!("{}", Value::Array(array));
    }
    Ok(())
}

/// A JSON array of results, as `--json` prints it (the last line holding a `[` is used, so a
/// whole saved stdout works too).
pub fn read_results(path: &Path) -> Result<Vec<Measurement>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('['))
        .ok_or_else(|| Error::Config(format!("{}: no JSON array in it", path.display())))?;
    let value: Value = serde_json::from_str(line)
        .map_err(|e| Error::Config(format!("{}: not a JSON array: {e}", path.display())))?;
    let entries = value
        .as_array()
        .ok_or_else(|| Error::Config(format!("{}: not a JSON array", path.display())))?;
    entries
        .iter()
        .map(|v| Measurement::from_json(v, path))
        .collect()
}

/// The results as a text table, batch size by batch size, with our CPU's rate divided by
/// each row's where both were measured at that batch size.
pub fn table(results: &[Measurement], peers: &[Measurement]) -> String {
    let mut rows: Vec<&Measurement> = results.iter().chain(peers).collect();
    // Stable: within a batch size, ours first in the order measured, then the peers.
    rows.sort_by_key(|m| m.batch_size);
    let width = rows
        .iter()
        .map(|m| m.label().len())
        .max()
        .unwrap_or(0)
        .max(7);
    let mut out = format!(
        "{:<width$}  {:>9}  {:>12}  {:>12}  {:>10}  adapter\n",
        "backend", "path", "batch", "samples/s", "cpu ÷ this"
    );
    for m in rows {
        let ours = results
            .iter()
            .find(|r| r.backend == "cpu" && r.batch_size == m.batch_size);
        let ratio = ours.map_or("".into(), |c| {
            format!("{:.2}×", c.samples_per_second / m.samples_per_second)
        });
        let batch = if m.full_batch {
            format!("full {}", m.batch_size)
        } else {
            m.batch_size.to_string()
        };
        out += &format!(
            "{:<width$}  {:>9}  {:>12}  {:>12.0}  {:>10}  {}\n",
            m.label(),
            m.path,
            batch,
            m.samples_per_second,
            ratio,
            m.adapter
        );
    }
    out
}

/// Draws samples/s against batch size, log-log, one line per backend.
pub fn plot(path: &Path, results: &[Measurement], title: &str, machine: &str) -> Result<()> {
    use plotters::prelude::*;
    let failed = |e: String| plot::failed(path, e);
    plot::register_font(path)?;
    let size = (900, 560);
    match plot::format(path)? {
        plot::Format::Svg => draw(
            SVGBackend::new(path, size).into_drawing_area(),
            results,
            title,
            machine,
        ),
        plot::Format::Png => draw(
            BitMapBackend::new(path, size).into_drawing_area(),
            results,
            title,
            machine,
        ),
    }
    .map_err(failed)
}

fn draw<DB: plotters::prelude::DrawingBackend>(
    root: plotters::drawing::DrawingArea<DB, plotters::coord::Shift>,
    results: &[Measurement],
    title: &str,
    machine: &str,
) -> std::result::Result<(), String> {
    use plotters::prelude::*;
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;

    // One series per label, in order of first appearance, points sorted by batch size.
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for m in results {
        let point = (m.batch_size as f64, m.samples_per_second);
        // Ours named as ours, next to the peers' "numpy", "pytorch-cpu".
        let label = match m.backend.as_str() {
            "cpu" | "gpu" => format!("mnist-gpu {}", m.label()),
            _ => m.label(),
        };
        match series.iter_mut().find(|(l, _)| *l == label) {
            Some((_, points)) => points.push(point),
            None => series.push((label, vec![point])),
        }
    }
    for (_, points) in &mut series {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let all = || series.iter().flat_map(|(_, p)| p.iter());
    let (x_min, x_max) = all().fold((f64::MAX, 1.0f64), |(lo, hi), p| (lo.min(p.0), hi.max(p.0)));
    let (y_min, y_max) = all().fold((f64::MAX, 1.0f64), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
    if series.is_empty() {
        return Err("nothing to plot".into());
    }

    let software = results.iter().any(|m| m.software_adapter);
    let mut notes = vec![format!("machine: {machine}")];
    if software {
        notes.push(
            "\"gpu (software adapter)\" is lavapipe, a software rasterizer running on the same CPU cores: not a GPU"
                .to_string(),
        );
    }
    let height = root.dim_in_pixel().1;
    let (chart_area, note_area) = root.split_vertically(height - 22 * notes.len() as u32 - 8);
    let mut chart = ChartBuilder::on(&chart_area)
        .caption(title, ("sans-serif", 22))
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(78)
        .build_cartesian_2d(
            (x_min / 1.5..x_max * 1.5).log_scale(),
            // A decade of room below the lowest line for the legend.
            (y_min / 10.0..y_max * 2.0).log_scale(),
        )
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("batch size (samples per step)")
        .y_desc("training samples per second")
        .x_label_formatter(&|x| sparse(*x))
        .y_label_formatter(&|y| sparse(*y))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(e)?;
    // Colours that stay apart on white (plotters' palette starts with a pale yellow).
    const COLORS: [RGBColor; 6] = [
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(148, 103, 189),
        RGBColor(60, 60, 60),
    ];
    for (i, (label, points)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(e)?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))
            .map_err(e)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()
        .map_err(e)?;
    for (i, note) in notes.iter().enumerate() {
        note_area
            .draw_text(
                note,
                &("sans-serif", 15).into_font().color(&BLACK),
                (16, 22 * i as i32),
            )
            .map_err(e)?;
    }
    root.present().map_err(e)?;
    Ok(())
}

/// A log axis's label: only at 1, 2 and 5 times a power of ten, so that labels on a short
/// range do not run into each other.
fn sparse(v: f64) -> String {
    let mantissa = v / 10f64.powf(v.log10().floor());
    if [1.0, 2.0, 5.0, 10.0]
        .iter()
        .any(|m| (mantissa - m).abs() < 1e-6)
    {
        short(v)
    } else {
        String::new()
    }
}

/// 1500 → "1.5K", 2000000 → "2M": axis labels that fit.
fn short(v: f64) -> String {
    let (value, unit) = match v.abs() {
        a if a >= 1e6 => (v / 1e6, "M"),
        a if a >= 1e3 => (v / 1e3, "K"),
        _ => (v, ""),
    };
    let digits = if value.fract().abs() < 1e-9 || value.abs() >= 10.0 {
        0
    } else {
        1
    };
    format!("{value:.digits$}{unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_sizes_parse() {
        assert_eq!(parse_batch_size("full"), Ok(BatchSize::Full));
        assert_eq!(parse_batch_size("64"), Ok(BatchSize::Samples(64)));
        assert!(parse_batch_size("0").is_err());
        assert!(parse_batch_size("x").is_err());
    }

    #[test]
    fn short_labels() {
        assert_eq!(short(64.0), "64");
        assert_eq!(short(1500.0), "1.5K");
        assert_eq!(short(60_000.0), "60K");
        assert_eq!(short(2_000_000.0), "2M");
        assert_eq!(sparse(2000.0), "2K");
        assert_eq!(sparse(700.0), "");
    }
}
