//! `mnist-gpu bench`: training throughput (samples per second) per backend and batch size,
//! on synthetic data of MNIST's shape, as a table, a JSON array and optionally a log-log plot.
//!
//! Each measurement builds a fresh backend, warms it up, sizes its timed runs from the
//! warm-up's speed, and reports the median of a few runs. GPU runs end with `batch_stats()`,
//! a read-back that waits for the GPU, inside the timed region: `train_step` only records (and
//! now and then submits). With `--profile`, each GPU measurement is followed by profiled steps
//! whose kernels are timed on the GPU with timestamp queries, where the adapter has them.
//!
//! This file measures; `report` turns the measurements into the table, the JSON and the plot.

mod report;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::builder::PossibleValue;
use clap::ValueEnum;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha12Rng;

use super::{BackendKind, PathKind};
use mnist_gpu::augment::{Augment, Distortion, Warps};
use mnist_gpu::backend::{Backend, StepPath};
use mnist_gpu::cpu::fused::{FusedConfig, Simd};
use mnist_gpu::cpu::{wide, CpuBackend};
use mnist_gpu::data::pool::{draw_shifts, synthetic_pool, ImagePool, List, ListSizes, Shift};
use mnist_gpu::error::{config, Error, Result};
use mnist_gpu::gpu::context::AutoChoice;
use mnist_gpu::gpu::coop::CoopTile;
use mnist_gpu::gpu::fused::{self, FusedVariant, Tiling};
use mnist_gpu::gpu::pipeline::{ShaderChecks, SHADER_CHECKS_VAR};
use mnist_gpu::gpu::MatmulKind;
use mnist_gpu::gpu::{GpuBackend, GpuContext};
use mnist_gpu::model::{Activation, Init, Model};
use mnist_gpu::optimizer::{Optimizer, OptimizerKind};
use mnist_gpu::plot;

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

/// `--backend`: one of the command line's backends, or `both`. Bench's `auto` measures the
/// CPU too, beside a hardware GPU, since the point is to compare them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchBackend {
    One(BackendKind),
    /// The CPU, then the GPU if an adapter opens, a software one too.
    Both,
}

impl ValueEnum for BenchBackend {
    fn value_variants<'a>() -> &'a [Self] {
        &[
            BenchBackend::One(BackendKind::Auto),
            BenchBackend::One(BackendKind::Cpu),
            BenchBackend::One(BackendKind::Gpu),
            BenchBackend::Both,
        ]
    }

    /// The values as `--help` lists them; `cpu` and `gpu` need no words.
    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            BenchBackend::One(BackendKind::Auto) => PossibleValue::new("auto").help(
                "The CPU, then the GPU if there is a hardware adapter (else a note saying why not)",
            ),
            BenchBackend::One(kind) => PossibleValue::new(kind.name()),
            BenchBackend::Both => PossibleValue::new("both").help(
                "The CPU, then the GPU if an adapter opens, a software one too (else a note, \
                 and the CPU alone)",
            ),
        })
    }
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

/// `--block`: samples per block, or chosen from each batch size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    Samples(usize),
    Auto,
}

fn parse_block(s: &str) -> std::result::Result<Block, String> {
    match s.trim() {
        "auto" => Ok(Block::Auto),
        n => n
            .parse()
            .map(Block::Samples)
            .map_err(|_| format!("{n:?} is neither a number nor `auto`")),
    }
}

/// Measures training throughput on synthetic data (random pixels and labels, seeded):
/// samples per second, the median of several timed runs after a warm-up.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchOptions {
    /// Which backends to measure.
    #[arg(long, value_enum, default_value_t = BenchBackend::One(BackendKind::Auto))]
    pub backend: BenchBackend,

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

    /// Which implementation of the step is timed.
    #[arg(long, value_enum, default_value_t = PathKind::Auto)]
    pub path: PathKind,

    /// Which kernels take the GPU's wide matrix products: `plain` (float32) or `coop` (the
    /// adapter's cooperative matrices, where it has them).
    #[arg(long, value_enum, default_value_t = MatmulKind::Plain)]
    pub matmul: MatmulKind,

    /// With `--matmul coop`, which cooperative tiles come first where the adapter offers
    /// both: `f32` inputs (8×8 on NVIDIA) or `f16` inputs (16×16 on NVIDIA).
    #[arg(long, value_enum, default_value_t = CoopTile::F32)]
    pub coop_tile: CoopTile,

    /// Wide layers (per-operation path): the tiled kernel's split-K products (dW) use at most
    /// N workgroups; a multiple of the GPU's multiprocessors (132 on an H100) gives whole
    /// waves [default: about 512, rounded up].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub split_k: Option<u32>,

    /// Wide path (per-operation engine): each layer's forward product Z = W·A + b runs as
    /// split-K, its inner dimension in at most N slices (fewer where the slices would pass 16
    /// MiB, as at large batches), summed into Z, the bias added by the first slice
    /// [default: not split].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub forward_split_k: Option<u32>,

    /// After each GPU measurement, time every kernel on the GPU (timestamp queries, where the
    /// adapter has them) and print its time per step beside the wall-clock time per step.
    #[arg(long)]
    pub profile: bool,

    /// Tuning the fused GPU step: samples per block (8, 16, 32 or 64), or `auto`: chosen from
    /// each batch size (smaller blocks for small batches) [default: 32, or fewer where the
    /// adapter's workgroup memory is small].
    #[arg(long, value_name = "SAMPLES", value_parser = parse_block)]
    pub block: Option<Block>,

    /// Tuning the fused GPU step: its candidate variants, comma-separated: dw1-spread,
    /// early-labels, tree-sums, fast-bytes, wide-update, or all (none: today's kernel).
    #[arg(long, value_name = "SWITCHES", value_parser = FusedVariant::parse)]
    pub fused: Option<FusedVariant>,

    /// Tuning the fused GPU step: most workgroups (partial gradient slices) per step.
    #[arg(long, value_name = "N")]
    pub max_groups: Option<usize>,

    /// Time the steps with this augmentation on (`--augment` alone: shift), drawn per step as
    /// in training; the note on stderr says which.
    #[arg(long, value_enum, value_name = "KIND", num_args = 0..=1, default_missing_value = "shift")]
    pub augment: Option<super::train_args::AugmentKind>,

    /// The update rule of the timed steps (its usual constants).
    #[arg(long, value_enum, default_value_t = OptimizerKind::Sgd)]
    pub optimizer: OptimizerKind,

    /// Instead of training steps, time the CPU's wide products on their own, per layer of
    /// the network and batch size (one block of up to 256 samples), on one thread and on all,
    /// beside this machine's measured FP32 peak: the roofline (bench/NOTES.md).
    #[arg(long)]
    pub products: bool,

    /// Print the results as one JSON array, the last line of stdout.
    #[arg(long)]
    pub json: bool,

    /// Print the GPU adapter as one JSON object (name, driver, type, cooperative-matrix
    /// tiles, shader checks) instead of measuring: the header of bench/gpu_table.py's report.
    #[arg(long)]
    pub adapter_info: bool,

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
    /// With `--matmul coop`, the cooperative tile that ran ("cooperative 16×16 tiles of f16,
    /// f32 sums").
    pub coop_tile: Option<String>,
    /// On the GPU, `--split-k`: the split-K products' most workgroups (None: the default).
    pub split_k: Option<usize>,
    /// On the GPU, `--forward-split-k`: the forward products' most slices (None: not split).
    pub forward_split_k: Option<usize>,
    /// On the GPU, whether wgpu's shader runtime checks were on ("on", "off").
    pub shader_checks: Option<String>,
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
    /// With `--augment`, the host's time drawing the shifts or warps of the timed steps, per
    /// image (the warps themselves are made by the backend, in its step).
    pub augment_host_us: Option<f64>,
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

/// The CPU's model name (from /proc/cpuinfo where there is one) and how many threads we may use.
fn cpu_description() -> String {
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

/// Consecutive batches over the train list, the last one of a pass shorter, as in training;
/// with `--augment`, its shifts or warps drawn for every step as training draws them.
struct Batches {
    samples: usize,
    batch: usize,
    next: usize,
    augment: Augment,
    rng: ChaCha12Rng,
    shifts: Vec<Shift>,
    warps: Option<Warps>,
    /// Time spent drawing shifts or warps, and the images they were drawn for.
    drawing: std::time::Duration,
    drawn: usize,
}

impl Batches {
    fn new(samples: usize, batch: usize, augment: Augment) -> Batches {
        Batches {
            samples,
            batch,
            next: 0,
            augment,
            rng: ChaCha12Rng::seed_from_u64(3),
            shifts: Vec::new(),
            warps: Warps::new(&augment),
            drawing: std::time::Duration::ZERO,
            drawn: 0,
        }
    }

    /// One step; returns how many samples it trained on.
    fn step(&mut self, backend: &mut dyn Backend) -> Result<usize> {
        let len = self.batch.min(self.samples - self.next);
        let drawing = Instant::now();
        match self.augment {
            Augment::Off => backend.train_step(self.next, len, ALPHA)?,
            Augment::Shift => {
                draw_shifts(&mut self.rng, len, &mut self.shifts);
                self.drawing += drawing.elapsed();
                backend.train_step_shifted(self.next, len, ALPHA, &self.shifts)?;
            }
            Augment::Affine(_) | Augment::Elastic(_) => {
                // A key a step: nothing per image is drawn here.
                let warps = self.warps.as_mut().expect("made for a warped run");
                warps.for_batch(self.rng.next_u64(), len);
                self.drawing += drawing.elapsed();
                backend.train_step_warped(self.next, len, ALPHA, warps)?;
            }
        }
        self.drawn += len;
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
fn measure(
    backend: &mut dyn Backend,
    samples: usize,
    batch: usize,
    augment: Augment,
) -> Result<Measurement> {
    let mut batches = Batches::new(samples, batch, augment);
    let step = |batches: &mut Batches, backend: &mut dyn Backend| batches.step(backend);

    // The first step alone (pipelines, caches, thread pools), then steps for WARM_UP whose
    // speed sizes the timed runs.
    step(&mut batches, backend)?;
    backend.batch_stats()?;
    let started = Instant::now();
    let mut warm_steps = 0;
    while warm_steps == 0 || started.elapsed() < WARM_UP {
        step(&mut batches, backend)?;
        warm_steps += 1;
    }
    backend.batch_stats()?;
    let per_step = started.elapsed().as_secs_f64() / warm_steps as f64;

    let steps = ((RUN.as_secs_f64() / per_step).ceil() as usize).max(1);
    let run_seconds = per_step * steps as f64;
    let runs = ((MEASUREMENT.as_secs_f64() / run_seconds) as usize).clamp(MIN_RUNS, RUNS);
    let mut timed = Vec::with_capacity(runs);
    (batches.drawing, batches.drawn) = (std::time::Duration::ZERO, 0);
    for _ in 0..runs {
        let started = Instant::now();
        let mut trained = 0;
        for _ in 0..steps {
            trained += step(&mut batches, backend)?;
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
    let augment_host_us = (augment != Augment::Off)
        .then(|| batches.drawing.as_secs_f64() * 1e6 / batches.drawn.max(1) as f64);
    Ok(Measurement {
        backend: String::new(),
        adapter: String::new(),
        software_adapter: false,
        path: backend.path().name().to_string(),
        matmul: None,
        shader_checks: None,
        coop_tile: None,
        split_k: None,
        forward_split_k: None,
        tiling: None,
        batch_size: batch,
        full_batch: batch == samples,
        samples,
        steps,
        runs,
        seconds,
        samples_per_second: rate,
        augment_host_us,
        profile: None,
    })
}

/// Times `steps` steps kernel by kernel on the GPU; None where the adapter has no timestamp
/// queries.
fn profile(
    gpu: &mut GpuBackend,
    samples: usize,
    batch: usize,
    steps: usize,
) -> Result<Option<Profile>> {
    if !gpu.start_profile()? {
        return Ok(None);
    }
    let mut batches = Batches::new(samples, batch, Augment::Off);
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

/// Runs the benchmark and prints the table (and JSON, and the plot) as `options` ask.
pub fn run(options: &BenchOptions) -> Result<()> {
    if options.adapter_info {
        return print_adapter(open_gpu(options)?.as_deref());
    }
    let batches = batch_sizes(options)?;
    // Read the other tools' results first, so a bad file fails before minutes of timing.
    let peers = report::read_peers(&options.compare)?;
    let model = Model::new(&options.hidden, Activation::Relu, Init::He, 1)?;
    // The GPU context first too: an unknown adapter is an error before any timing.
    let gpu = open_gpu(options)?;
    let samples = options.samples;
    let network = network_name(&options.hidden);
    if options.products {
        return products(options, &model, &batches);
    }
    println!(
        "mnist-gpu bench: {network} (ReLU, softmax), {samples} synthetic samples, {}; \
         samples/s = median of timed runs after a warm-up",
        options.optimizer.name()
    );
    if let Some(ctx) = &gpu {
        println!(
            "GPU: {}; shader runtime checks {} ({SHADER_CHECKS_VAR}=1 turns them on); \
             wide products: {}",
            ctx.describe(),
            ctx.shader_checks.name(),
            coop_tile(ctx).unwrap_or_else(|| "plain float32 kernels".into())
        );
        if let Some(n) = ctx.kernels.forward_split_k {
            println!(
                "wide path: forward products split-K into at most {n} slices (--forward-split-k)"
            );
        }
    }
    let tiling = tiling(options, gpu.as_deref(), &model)?;
    if let Some(t) = tiling {
        let block = match options.block {
            Some(Block::Auto) => "auto (from the batch size)".to_string(),
            _ => t.block.to_string(),
        };
        println!(
            "fused step: block {block}, at most {} workgroups, variants: {}",
            t.max_groups,
            t.variant.describe()
        );
    }
    let bench = Bench {
        auto_block: options.block == Some(Block::Auto),
        model,
        pool: Arc::new(synthetic_pool(samples, 1)),
        samples,
        order: (0..samples as u32).collect(),
        path: options.path.path(),
        gpu,
        tiling,
        profile: options.profile,
        cpu_name: cpu_description(),
        augment: bench_augment(options),
        optimizer: Optimizer::with_defaults(options.optimizer),
    };
    if bench.augment != Augment::Off {
        eprintln!(
            "note: every timed step draws and applies --augment {} (default strengths)",
            bench.augment.name()
        );
    }
    let with_cpu = options.backend != BenchBackend::One(BackendKind::Gpu);
    let results = bench.measure_all(&batches, with_cpu)?;
    report::print(
        options,
        &results,
        &peers,
        bench.gpu.as_deref(),
        &network,
        &bench.cpu_name,
    )
}

/// `--products`: each layer's three products (as the CPU's wide engine runs them on a block
/// of samples) timed on their own, on one thread and on all, beside the measured FP32 peak.
fn products(options: &BenchOptions, model: &Model, batches: &[usize]) -> Result<()> {
    let all = FusedConfig::default();
    let one = FusedConfig { threads: 1, ..all };
    let simd = Simd::detect(all.simd);
    let peak = [1, all.threads].map(|threads| wide::peak_gflops(simd, threads, 0.5));
    println!(
        "mnist-gpu bench --products: {} on {}; FP32 peak ({:?} multiply-add chains): \
         {:.1} GFLOP/s on 1 thread, {:.1} on {}",
        network_name(&options.hidden),
        cpu_description(),
        simd.isa(),
        peak[0],
        peak[1],
        all.threads
    );
    println!(
        "{:>11} {:>7}  {:<10} {:>16} {:>16}",
        "layer",
        "samples",
        "product",
        "1 thread",
        format!("{} threads", all.threads)
    );
    let mut rows = Vec::new();
    for layer in &model.layers {
        for &batch in batches {
            let n = batch.min(all.wide_block);
            let rates = [one, all]
                .map(|config| wide::time_products(layer.outputs, layer.inputs, n, config, 0.3));
            let names = ["forward", "input_grad", "weight_grad"];
            for (p, name) in names.iter().enumerate() {
                let gflops = rates.map(|r| [r.forward, r.input_grad, r.weight_grad][p]);
                let cell =
                    |t: usize| format!("{:.1} ({:.0}%)", gflops[t], 100.0 * gflops[t] / peak[t]);
                let shape = format!("{}x{}", layer.outputs, layer.inputs);
                println!(
                    "{shape:>11} {n:>7}  {name:<10} {:>16} {:>16}",
                    cell(0),
                    cell(1)
                );
                rows.push(serde_json::json!({
                    "units": layer.outputs, "inputs": layer.inputs, "samples": n,
                    "product": name, "gflops": gflops, "threads": [1, all.threads],
                    "peak_gflops": peak,
                }));
            }
        }
    }
    if options.json {
        println!("{}", serde_json::Value::Array(rows));
    }
    Ok(())
}

/// The cooperative tile matmul's wide products run on, if they do.
fn coop_tile(ctx: &GpuContext) -> Option<String> {
    ctx.kernels.coop.as_ref().map(|c| c.describe())
}

/// `--adapter-info`: the adapter that opened, as one JSON object.
fn print_adapter(gpu: Option<&GpuContext>) -> Result<()> {
    let Some(ctx) = gpu else {
        return config("--adapter-info: no GPU adapter opened (see the note above)");
    };
    let info = &ctx.info;
    let value = serde_json::json!({
        "adapter": ctx.describe(),
        "name": info.name,
        "backend": format!("{:?}", info.backend),
        "device_type": format!("{:?}", info.device_type),
        "software_adapter": ctx.is_software(),
        "driver": info.driver,
        "driver_info": info.driver_info,
        "vendor": info.vendor,
        "device": info.device,
        "subgroup_sizes": [info.subgroup_min_size, info.subgroup_max_size],
        "cooperative_matrices": ctx.coop_offered,
        "matmul": ctx.matmul(),
        "coop_tile": coop_tile(ctx),
        "shader_checks": ctx.shader_checks.name(),
        "timestamp_queries": ctx.device.features().contains(wgpu::Features::TIMESTAMP_QUERY),
    });
    println!("{value}");
    Ok(())
}

/// `--batch-sizes` in samples, once `--samples`, the sizes and the plot's file name are known
/// to make sense.
fn batch_sizes(options: &BenchOptions) -> Result<Vec<usize>> {
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
    Ok(batches)
}

/// The GPU `--backend` asks for, if any: `auto` only a hardware adapter (with a note where
/// there is none), `both` any adapter that opens (with a note where none does).
fn open_gpu(options: &BenchOptions) -> Result<Option<Arc<GpuContext>>> {
    let adapter = options.adapter.as_deref();
    let coop = (options.matmul == MatmulKind::Coop).then_some(options.coop_tile);
    let open = || GpuContext::open_with(adapter, coop, ShaderChecks::from_env()?);
    let ctx = match options.backend {
        BenchBackend::One(BackendKind::Cpu) => None,
        BenchBackend::One(BackendKind::Gpu) => Some(open()?),
        BenchBackend::One(BackendKind::Auto) => match GpuContext::auto_with(adapter, coop)? {
            AutoChoice::Gpu(ctx) => Some(ctx),
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
        BenchBackend::Both => match open() {
            Ok(ctx) => Some(ctx),
            Err(e) => {
                eprintln!("note: GPU left out ({e})");
                None
            }
        },
    };
    if let Some(note) = ctx.as_ref().and_then(|ctx| ctx.coop_note()) {
        eprintln!("{note}");
    }
    Ok(ctx.map(|mut ctx| {
        ctx.kernels.split_groups = options.split_k.map(|n| n as usize);
        ctx.kernels.forward_split_k = options.forward_split_k.map(|n| n as usize);
        Arc::new(ctx)
    }))
}

/// `--block`, `--max-groups` and `--fused`: the fused GPU step's tiling and variant, starting
/// from this device's; None where none is given. (`--block auto`: this device's block here,
/// each batch's in `Bench::on_gpu`.)
fn tiling(
    options: &BenchOptions,
    gpu: Option<&GpuContext>,
    model: &Model,
) -> Result<Option<Tiling>> {
    let (block, max_groups) = (options.block, options.max_groups);
    if (block, max_groups, options.fused) == (None, None, None) {
        return Ok(None);
    }
    let Some(ctx) = gpu else {
        return config(
            "--block, --max-groups and --fused tune the GPU's fused step: use --backend gpu",
        );
    };
    if options.path == PathKind::Reference {
        return config(
            "--block, --max-groups and --fused tune the fused path, not --path reference",
        );
    }
    let default = fused::tiling_for(ctx, model);
    let tiling = Tiling {
        block: match block {
            Some(Block::Samples(b)) => b,
            _ => default.block,
        },
        max_groups: max_groups.unwrap_or(default.max_groups),
        variant: options.fused.unwrap_or_default(),
    };
    if tiling.max_groups == 0 {
        return config("--max-groups must be at least 1");
    }
    if let Some(why) = fused::unsupported(ctx, model, tiling) {
        return config(format!("--block {}: {why}", tiling.block));
    }
    Ok(Some(tiling))
}

/// "784-10-10": the network's layer widths.
fn network_name(hidden: &[usize]) -> String {
    let hidden: Vec<String> = hidden.iter().map(|h| h.to_string()).collect();
    format!("784-{}-10", hidden.join("-"))
}

/// What every measurement shares: the network, the data, and where and how it runs.
struct Bench {
    model: Model,
    pool: Arc<ImagePool>,
    samples: usize,
    /// The train list: every sample, in order.
    order: Vec<u32>,
    /// `--path`: None lets each backend choose.
    path: Option<StepPath>,
    gpu: Option<Arc<GpuContext>>,
    tiling: Option<Tiling>,
    /// `--block auto`: each batch size's block (`fused::block_for_batch`).
    auto_block: bool,
    profile: bool,
    cpu_name: String,
    /// `--augment`, with the default strengths.
    augment: Augment,
    /// `--optimizer`, with its usual constants.
    optimizer: Optimizer,
}

/// `--augment` as the steps take it.
fn bench_augment(options: &BenchOptions) -> Augment {
    use super::train_args::AugmentKind;
    match options.augment {
        None | Some(AugmentKind::Off) => Augment::Off,
        Some(AugmentKind::Shift) => Augment::Shift,
        Some(AugmentKind::Affine) => Augment::Affine(Distortion::default()),
        Some(AugmentKind::Elastic) => Augment::Elastic(Distortion::default()),
    }
}

impl Bench {
    /// Each batch size on the CPU (unless left out), then on the GPU where one opened.
    fn measure_all(&self, batches: &[usize], with_cpu: bool) -> Result<Vec<Measurement>> {
        let mut results = Vec::new();
        for &batch in batches {
            if with_cpu {
                results.push(self.on_cpu(batch)?);
            }
            if let Some(ctx) = &self.gpu {
                results.push(self.on_gpu(ctx, batch)?);
            }
        }
        Ok(results)
    }

    fn sizes(&self) -> ListSizes {
        ListSizes {
            train: self.samples,
            dev: 0,
            test: 0,
        }
    }

    fn on_cpu(&self, batch: usize) -> Result<Measurement> {
        let (model, pool) = (&self.model, self.pool.clone());
        let mut cpu = CpuBackend::with_path(model, pool, self.sizes(), batch, self.path)?;
        cpu.set_list(List::Train, &self.order)?;
        cpu.set_optimizer(self.optimizer)?;
        let mut m = measure(&mut cpu, self.samples, batch, self.augment)?;
        m.backend = BackendKind::Cpu.name().into();
        m.adapter = self.cpu_name.clone();
        progress(&m);
        Ok(m)
    }

    fn on_gpu(&self, ctx: &Arc<GpuContext>, batch: usize) -> Result<Measurement> {
        let (model, pool, sizes) = (&self.model, &self.pool, self.sizes());
        let mut gpu = match self.tiling {
            Some(tiling) => {
                let tiling = if self.auto_block {
                    Tiling {
                        block: fused::block_for_batch(batch, tiling.block),
                        ..tiling
                    }
                } else {
                    tiling
                };
                GpuBackend::with_tiling(ctx.clone(), model, pool, sizes, batch, tiling)?
            }
            None => GpuBackend::with_path(ctx.clone(), model, pool, sizes, batch, self.path)?,
        };
        gpu.set_list(List::Train, &self.order)?;
        gpu.set_optimizer(self.optimizer)?;
        let mut m = measure(&mut gpu, self.samples, batch, self.augment)?;
        m.backend = BackendKind::Gpu.name().into();
        m.adapter = ctx.describe();
        m.software_adapter = ctx.is_software();
        m.tiling = gpu.tiling();
        m.matmul = Some(ctx.matmul().to_string());
        m.shader_checks = Some(ctx.shader_checks.name().to_string());
        m.coop_tile = coop_tile(ctx);
        m.split_k = ctx.kernels.split_groups;
        m.forward_split_k = ctx.kernels.forward_split_k;
        progress(&m);
        if self.profile {
            m.profile = profile(&mut gpu, self.samples, batch, m.steps.clamp(10, 1000))?;
        }
        Ok(m)
    }
}

/// A line on stderr as each measurement ends, so that a long run shows it is moving.
fn progress(m: &Measurement) {
    let drawing = m
        .augment_host_us
        .map(|us| format!(", {us:.3} µs of host drawing per image"))
        .unwrap_or_default();
    eprintln!(
        "  {} batch {}: {:.0} samples/s ({} path{drawing})",
        m.backend, m.batch_size, m.samples_per_second, m.path
    );
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
}
