//! The GPU backend: the training step in WGSL compute shaders, through wgpu. Two paths, as on
//! the CPU:
//! - fused (`fused.rs`, shaders/fused.wgsl), the twin of `cpu/fused.rs`: the whole step in two
//!   dispatches, runs of steps recorded into one submit. It covers one or two hidden layers of
//!   up to 64 units, and runs wherever it covers the network unless `--path reference` is asked.
//! - reference (`reference.rs`): one kernel per operation, the twin of the CPU's reference
//!   path, one submit per step. It runs every other network, and is what the fused path is
//!   checked against.
//!
//! Both read the images, labels and index lists uploaded here, and write each step's
//! (loss, correct) into its slot of a ring (`History`) that is read back only when asked for
//! (progress lines), so no step waits for the host. The images stay on the GPU as bytes (four
//! to a u32) for the whole run; a batch is a range of the index list, so no image is uploaded
//! after the start.
//!
//! Both paths build their pipelines and bind groups the one way `pipeline.rs` has, from the
//! sources in `shaders.rs`, which also defines the codes the shaders know by name (the
//! activation, the optimizer). `context.rs` opens the device and builds the per-operation
//! kernels (`kernels.rs`, matmul's cooperative one with `coop.rs`); `shifted.rs` holds the
//! `--augment` buffers both paths keep.

pub mod context;
pub mod coop;
pub mod fused;
pub mod kernels;
pub mod pipeline;
pub mod plan;
pub mod profile;
pub mod reference;
pub mod shaders;
pub mod shifted;
pub mod stats;

use std::sync::Arc;

use crate::augment::Warps;
use crate::backend::check_images;
use crate::backend::{
    check_batch, check_list, check_same_shape, check_shifts, check_warps, forward_capacity,
    Backend, BatchStats, StepPath, STATS_KEPT,
};
use crate::data::pool::{ImagePool, List, ListSizes, Shift};
use crate::data::{CLASSES, PIXELS};
use crate::error::{config, Error, Result};
use crate::model::{Activation, Model};
use crate::optimizer::check_optimizer_state;
use crate::optimizer::Optimizer;
use crate::optimizer::OptimizerState;
pub use context::GpuContext;
use fused::{Fused, Tiling};
use profile::{Profiler, Timing};
use reference::Reference;
use shifted::Copies;
use stats::StatsRead;

/// Which kernels take the GPU's wide matrix products (`--matmul`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MatmulKind {
    /// Float32 throughout, on every adapter.
    Plain,
    /// The adapter's cooperative matrices (tensor cores) where it has them: inputs rounded
    /// to f16 (or kept f32 where the adapter multiplies f32 tiles), f32 sums; else plain.
    Coop,
}

/// The data every path binds: the pool's images as bytes (784 per image, so whole u32 words),
/// a u32 label per image, and the three index lists one after another.
#[derive(Clone)]
pub struct Data {
    pub images: wgpu::Buffer,
    pub labels: wgpu::Buffer,
    pub indices: wgpu::Buffer,
}

/// What a path needs to record one training step.
pub struct StepArgs {
    /// The batch: `m` samples listed from position `first` of the index lists.
    pub first: u32,
    pub m: usize,
    pub alpha: f32,
    /// Steps taken with this optimizer, this one included (Adam's t).
    pub t: u64,
    /// The slot of the history this step writes its (loss, correct) to.
    pub history: u32,
}

enum Engine {
    Fused(Fused),
    Reference(Reference),
}

/// Each step's (loss, correct) summed over its batch, written by the step itself into slot
/// `step % STATS_KEPT` of a GPU buffer, and read back only when asked.
struct History {
    buffer: wgpu::Buffer,
    /// Steps recorded in all, and how many of the latest have not been read.
    recorded: usize,
    unread: usize,
    /// The batch size of the step in each slot.
    batch: Vec<usize>,
}

impl History {
    /// The slot the next step writes.
    fn slot(&self) -> u32 {
        (self.recorded % STATS_KEPT) as u32
    }

    /// Counts the step that writes `slot()`, over `m` samples.
    fn record(&mut self, m: usize) {
        self.batch[self.recorded % STATS_KEPT] = m;
        self.recorded += 1;
        self.unread = (self.unread + 1).min(STATS_KEPT);
    }

    /// The stats of the last `count` recorded steps, oldest first (waits for the GPU).
    fn read(&self, ctx: &GpuContext, count: usize) -> Result<Vec<BatchStats>> {
        let sums = ctx.read(&self.buffer, 2 * STATS_KEPT)?;
        Ok(stats::stats_of(&sums, &self.batch, self.recorded, count))
    }

    /// Starts reading the unread steps' stats without waiting; they count as read.
    fn request(&mut self, ctx: &GpuContext) -> StatsRead {
        let read = StatsRead::start(ctx, &self.buffer, self.recorded, self.unread, &self.batch);
        self.unread = 0;
        read
    }
}

pub struct GpuBackend {
    ctx: Arc<GpuContext>,
    sizes: ListSizes,
    pool_len: usize,
    capacity: usize,
    shapes: Vec<(usize, usize)>,
    activation: Activation,
    data: Data,
    history: History,
    /// The logits of a whole list, gathered chunk by chunk before one read.
    eval_logits: wgpu::Buffer,
    engine: Engine,
    /// Why the reference path runs where the fused one was not asked against.
    note: Option<String>,
    /// Steps taken with this optimizer (Adam's t).
    steps: u64,
    optimizer: Optimizer,
    profiler: Option<Profiler>,
    /// The stats `request_stats` asked for, on their way back.
    reading: Option<StatsRead>,
}

impl GpuBackend {
    /// The fused path where it covers the network, else the reference. `capacity` is the
    /// largest batch `train_step` will be given.
    pub fn new(
        ctx: Arc<GpuContext>,
        model: &Model,
        pool: &ImagePool,
        sizes: ListSizes,
        capacity: usize,
    ) -> Result<Self> {
        Self::with_path(ctx, model, pool, sizes, capacity, None)
    }

    /// `path` (None: the fused path where it covers the network, else the reference).
    pub fn with_path(
        ctx: Arc<GpuContext>,
        model: &Model,
        pool: &ImagePool,
        sizes: ListSizes,
        capacity: usize,
        path: Option<StepPath>,
    ) -> Result<Self> {
        let tiling = fused::tiling_for(&ctx, model);
        let why_not = fused::unsupported(&ctx, model, tiling);
        let engine = match (path, why_not) {
            (Some(StepPath::Reference), _) => Err(None),
            (Some(StepPath::Fused), Some(why)) => {
                return config(format!("--path fused: {why}; use --path reference"))
            }
            (None, Some(why)) => Err(Some(why)),
            (_, None) => Ok(tiling),
        };
        Self::build(ctx, model, pool, sizes, capacity, engine)
    }

    /// The fused path split as `tiling` says (tests, benchmarks).
    pub fn with_tiling(
        ctx: Arc<GpuContext>,
        model: &Model,
        pool: &ImagePool,
        sizes: ListSizes,
        capacity: usize,
        tiling: Tiling,
    ) -> Result<Self> {
        Self::build(ctx, model, pool, sizes, capacity, Ok(tiling))
    }

    /// `engine`: the fused path's tiling, or why the reference path runs (None: it was asked for).
    fn build(
        ctx: Arc<GpuContext>,
        model: &Model,
        pool: &ImagePool,
        sizes: ListSizes,
        capacity: usize,
        engine: std::result::Result<Tiling, Option<String>>,
    ) -> Result<Self> {
        let cap = forward_capacity(capacity, sizes)?;
        let labels: Vec<u32> = pool.labels.iter().map(|&l| l as u32).collect();
        let data = Data {
            images: ctx.upload("images", &pool.images)?,
            labels: ctx.upload("labels", bytemuck::cast_slice(&labels))?,
            indices: ctx.storage("index lists", 4 * sizes.total() as u64)?,
        };
        let history = History {
            buffer: ctx.storage("loss and correct per step", 8 * STATS_KEPT as u64)?,
            recorded: 0,
            unread: 0,
            batch: vec![0; STATS_KEPT],
        };
        let eval_logits = ctx.storage(
            "logits of a list",
            4 * (CLASSES * sizes.dev.max(sizes.test).max(cap)) as u64,
        )?;
        let (engine, note) = match engine {
            Ok(tiling) => {
                let f = Fused::new(
                    &ctx,
                    model,
                    &data,
                    cap,
                    &history.buffer,
                    &eval_logits,
                    tiling,
                )?;
                (Engine::Fused(f), None)
            }
            Err(note) => (
                Engine::Reference(Reference::new(&ctx, model, &data, cap)?),
                note,
            ),
        };
        ctx.check()?;
        Ok(GpuBackend {
            sizes,
            pool_len: pool.labels.len(),
            capacity: cap,
            shapes: model.layers.iter().map(|l| (l.inputs, l.outputs)).collect(),
            activation: model.activation,
            data,
            history,
            eval_logits,
            engine,
            note,
            steps: 0,
            optimizer: Optimizer::Sgd,
            profiler: None,
            reading: None,
            ctx,
        })
    }

    /// The fused path's tiling, if it runs.
    pub fn tiling(&self) -> Option<Tiling> {
        match &self.engine {
            Engine::Fused(f) => Some(f.tiling()),
            Engine::Reference(_) => None,
        }
    }

    /// Times every following dispatch on the GPU (`profile` gives the totals); false where
    /// the adapter has no timestamp queries.
    pub fn start_profile(&mut self) -> Result<bool> {
        self.flush()?;
        self.profiler = Profiler::new(&self.ctx);
        Ok(self.profiler.is_some())
    }

    /// Per kernel since `start_profile`: its name, GPU seconds and dispatches (waits for the
    /// GPU); and how many dispatches went untimed.
    pub fn profile(&mut self) -> Result<Option<(Vec<(&'static str, f64, usize)>, usize)>> {
        self.flush()?;
        Ok(self
            .profiler
            .as_ref()
            .map(|p| (p.kernels().to_vec(), p.untimed())))
    }

    /// Submits the steps recorded and not yet submitted, before a wait for the GPU (the next
    /// run of steps per submit starts small, so that the idle GPU gets work soon).
    fn flush(&mut self) -> Result<()> {
        self.submit(true)
    }

    /// Submits the steps recorded and not yet submitted; `restart`: the runs of steps per
    /// submit start small again (after a wait), else keep growing (nothing waits).
    fn submit(&mut self, restart: bool) -> Result<()> {
        let timings = match &mut self.engine {
            Engine::Fused(f) if restart => {
                f.flush(&self.ctx)?;
                f.take_timings()
            }
            Engine::Fused(f) => {
                f.submit(&self.ctx)?;
                f.take_timings()
            }
            Engine::Reference(_) => Vec::new(),
        };
        self.collect(timings)
    }

    /// Hands the submitted dispatches' timings to the profiler (waiting for them).
    fn collect(&mut self, timings: Vec<Timing>) -> Result<()> {
        if let Some(profiler) = &mut self.profiler {
            for timing in timings {
                profiler.collect(&self.ctx, timing)?;
            }
        }
        Ok(())
    }

    fn step(&mut self, start: usize, len: usize, alpha: f32, copies: Option<Copies>) -> Result<()> {
        let args = StepArgs {
            first: (self.sizes.offset(List::Train) + start) as u32,
            m: len,
            alpha,
            t: self.steps + 1,
            history: self.history.slot(),
        };
        let timings = match &mut self.engine {
            Engine::Fused(f) => {
                f.step(&self.ctx, &args, copies, self.profiler.as_ref())?;
                f.take_timings()
            }
            Engine::Reference(r) => {
                let timing = self.profiler.as_ref().map(Profiler::timing);
                let timing = r.step(&self.ctx, &args, copies, &self.history.buffer, timing)?;
                timing.into_iter().collect()
            }
        };
        // Counted once recorded: a step that failed to record is not in the history.
        self.steps += 1;
        self.history.record(len);
        self.collect(timings)
    }
}

impl Backend for GpuBackend {
    fn device_name(&self) -> String {
        self.ctx.describe()
    }

    fn path(&self) -> StepPath {
        match self.engine {
            Engine::Fused(_) => StepPath::Fused,
            Engine::Reference(_) => StepPath::Reference,
        }
    }

    fn path_note(&self) -> Option<String> {
        self.note.clone()
    }

    fn set_list(&mut self, list: List, indices: &[u32]) -> Result<()> {
        check_list(&self.sizes, list, indices, self.pool_len)?;
        // The write lands before anything not yet submitted: submit the steps that read the
        // old list first (nothing waits, so their runs keep growing).
        self.submit(false)?;
        let offset = 4 * self.sizes.offset(list) as u64;
        self.ctx
            .queue
            .write_buffer(&self.data.indices, offset, bytemuck::cast_slice(indices));
        Ok(())
    }

    fn train_step(&mut self, start: usize, len: usize, alpha: f32) -> Result<()> {
        check_batch(&self.sizes, self.capacity, start, len)?;
        self.step(start, len, alpha, None)
    }

    fn train_step_shifted(
        &mut self,
        start: usize,
        len: usize,
        alpha: f32,
        shifts: &[Shift],
    ) -> Result<()> {
        check_batch(&self.sizes, self.capacity, start, len)?;
        check_shifts(shifts, len)?;
        self.step(start, len, alpha, Some(Copies::Shifts(shifts)))
    }

    fn train_step_warped(
        &mut self,
        start: usize,
        len: usize,
        alpha: f32,
        warps: &Warps,
    ) -> Result<()> {
        check_batch(&self.sizes, self.capacity, start, len)?;
        check_warps(warps, len)?;
        self.step(start, len, alpha, Some(Copies::Warps(warps)))
    }

    fn batch_stats(&mut self) -> Result<BatchStats> {
        if self.history.recorded == 0 {
            return Err(Error::Config("no training step has run yet".into()));
        }
        self.flush()?;
        Ok(self.history.read(&self.ctx, 1)?[0])
    }

    fn step_stats(&mut self) -> Result<Vec<BatchStats>> {
        self.flush()?;
        let mut stats = match self.reading.take() {
            Some(read) => read.poll(&self.ctx, true)?.expect("waited for"),
            None => Vec::new(),
        };
        stats.extend(self.history.read(&self.ctx, self.history.unread)?);
        self.history.unread = 0;
        Ok(stats)
    }

    fn request_stats(&mut self) -> Result<()> {
        if self.reading.is_some() || self.history.unread == 0 {
            return Ok(());
        }
        // The copy follows the steps: those still recorded go first, and no wait follows.
        self.submit(false)?;
        self.reading = Some(self.history.request(&self.ctx));
        Ok(())
    }

    fn ready_stats(&mut self) -> Result<Option<Vec<BatchStats>>> {
        let Some(read) = &self.reading else {
            return Ok(None);
        };
        let stats = read.poll(&self.ctx, read.due(&self.ctx))?;
        if stats.is_some() {
            self.reading = None;
        }
        Ok(stats)
    }

    fn logits(&mut self, list: List) -> Result<Vec<f32>> {
        let (first, n) = (self.sizes.offset(list), self.sizes.len(list));
        match &mut self.engine {
            Engine::Fused(f) => f.logits(&self.ctx, first, n)?,
            Engine::Reference(r) => r.logits(&self.ctx, first, n, &self.eval_logits)?,
        }
        self.flush()?;
        self.ctx.read(&self.eval_logits, CLASSES * n)
    }

    fn classify(&mut self, images: &[u8]) -> Result<Vec<f32>> {
        let n = check_images(images)?;
        let mut logits = Vec::with_capacity(CLASSES * n);
        for chunk in images.chunks(PIXELS * self.capacity) {
            // The chunk's write lands before anything not yet submitted.
            self.flush()?;
            match &mut self.engine {
                Engine::Fused(f) => f.classify(&self.ctx, chunk)?,
                Engine::Reference(r) => r.classify(&self.ctx, chunk, &self.eval_logits)?,
            }
            self.flush()?;
            logits.extend(
                self.ctx
                    .read(&self.eval_logits, CLASSES * chunk.len() / PIXELS)?,
            );
        }
        Ok(logits)
    }

    fn model(&mut self) -> Result<Model> {
        self.flush()?;
        match &self.engine {
            Engine::Fused(f) => f.model(&self.ctx),
            Engine::Reference(r) => r.model(&self.ctx),
        }
    }

    fn set_model(&mut self, model: &Model) -> Result<()> {
        // The shapes are known here: no need to read the weights back.
        check_same_shape(&self.shapes, self.activation, model)?;
        self.flush()?;
        match &mut self.engine {
            Engine::Fused(f) => f.set_model(&self.ctx, model),
            Engine::Reference(r) => r.set_model(&self.ctx, model),
        }
        Ok(())
    }

    fn optimizer_state(&mut self) -> Result<OptimizerState> {
        self.flush()?;
        let tensors = match &self.engine {
            Engine::Fused(f) => f.optimizer_state(&self.ctx)?,
            Engine::Reference(r) => r.optimizer_state(&self.ctx)?,
        };
        Ok(OptimizerState {
            steps: self.steps,
            tensors,
        })
    }

    fn set_optimizer_state(&mut self, state: &OptimizerState) -> Result<()> {
        check_optimizer_state(&self.shapes, self.optimizer.state_tensors(), state)?;
        self.flush()?;
        match &self.engine {
            Engine::Fused(f) => f.set_optimizer_state(&self.ctx, &state.tensors),
            Engine::Reference(r) => r.set_optimizer_state(&self.ctx, &state.tensors),
        }
        self.steps = state.steps;
        Ok(())
    }

    fn set_optimizer(&mut self, optimizer: Optimizer) -> Result<()> {
        self.flush()?;
        self.steps = 0;
        self.optimizer = optimizer;
        match &mut self.engine {
            Engine::Fused(f) => f.set_optimizer(&self.ctx, optimizer),
            Engine::Reference(r) => r.set_optimizer(&self.ctx, optimizer),
        }
    }
}
