//! The GPU backend: the training step in WGSL compute shaders. Two engines, as on the CPU:
//! - fused (`fused.rs`, shaders/fused.wgsl), the twin of `cpu/fused.rs`: the whole step in two
//!   dispatches, runs of steps recorded into one submit. It covers one or two hidden layers of
//!   up to 64 units, and runs wherever it covers the network unless `--path reference` is asked.
//! - reference (`reference.rs`): one kernel per operation (`kernels.rs`), the twin of the CPU's
//!   reference path, one submit per step. It runs every other network, and is what the fused
//!   path is checked against.
//!
//! Neither touches a device: both record the GPU work as data (`recording.rs`: buffers,
//! pipelines, bind groups, writes, dispatches, copies, submits), which an executor carries out:
//! natively wgpu (`native.rs`), in `serve`'s page the browser's WebGPU (the worker, fed by
//! `cli/serve/plan.rs`). `GpuBackend` owns the recording and its executor and hands every
//! call's commands over at once.
//!
//! Both engines read the images, labels and index lists uploaded here, and write each step's
//! (loss, correct) into its slot of a ring (`History`) that is read back only when asked for
//! (progress lines), so no step waits for the host. The images stay on the GPU as bytes (four
//! to a u32) for the whole run; a batch is a range of the index list, so no image is uploaded
//! after the start. For an executor that runs no Rust, `figures.rs` records the progress lines'
//! numbers on the device too.
//!
//! Pipelines are built the one way `pipeline.rs` has, from the sources in `shaders.rs`, which
//! also defines the codes the shaders know by name (the activation, the optimizer);
//! `context.rs` opens the device and caches pipelines and layouts by their description;
//! `copies.rs` holds the `--augment` buffers both engines keep.

pub mod context;
pub mod coop;
pub mod copies;
pub mod figures;
pub mod fused;
pub mod kernels;
pub mod native;
pub mod pipeline;
pub mod profile;
pub mod recording;
pub mod reference;
pub mod shaders;
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
use crate::params::ParamLayout;
pub use context::GpuContext;
use copies::Copies;
use figures::{Figure, Figures};
use fused::{Fused, Tiling};
use kernels::{KernelConfig, Kernels};
use native::Native;
use recording::{Buf, Data as Bytes, Executor, Inputs, Limits, PoolData, Region, Session, Wait};
use reference::Reference;

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
#[derive(Clone, Copy)]
pub struct Data {
    pub images: Buf,
    pub labels: Buf,
    pub indices: Buf,
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

/// What a recording is made for, where no device is at hand: the adapter's limits and how its
/// per-operation kernels are chosen.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub limits: Limits,
    pub kernels: KernelConfig,
}

/// Each step's (loss, correct) summed over its batch, written by the step itself into slot
/// `step % STATS_KEPT` of a GPU buffer, and read back only when asked.
struct History {
    buffer: Buf,
    /// Steps recorded in all, and how many of the latest have not been read.
    recorded: usize,
    unread: usize,
    /// The batch size of the step in each slot.
    batch: Vec<usize>,
}

/// Stats asked for without waiting: how many of the steps recorded then, with their slots'
/// batch sizes then.
struct Requested {
    recorded: usize,
    count: usize,
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

    fn region(&self) -> Region {
        Region {
            buffer: self.buffer,
            offset: 0,
            bytes: 8 * STATS_KEPT as u64,
        }
    }
}

pub struct GpuBackend {
    session: Session,
    sizes: ListSizes,
    pool_len: usize,
    capacity: usize,
    shapes: Vec<(usize, usize)>,
    activation: Activation,
    data: Data,
    history: History,
    /// The logits of a whole list, gathered chunk by chunk before one read.
    eval_logits: Buf,
    engine: Engine,
    /// The per-operation kernels, declared where the reference engine or the figures use them.
    kernels: Option<Kernels>,
    /// The progress lines' numbers on the device, for an executor that runs no Rust.
    figures: Option<Figures>,
    /// Why the reference path runs where the fused one was not asked against.
    note: Option<String>,
    /// Steps taken with this optimizer (Adam's t).
    steps: u64,
    optimizer: Optimizer,
    /// The stats `request_stats` asked for, on their way back.
    reading: Option<Requested>,
    kernel_config: KernelConfig,
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
        let target = Target {
            limits: ctx.limits(),
            kernels: ctx.kernels,
        };
        let exec = Box::new(Native::new(ctx));
        Self::recording(target, exec, model, pool, sizes, capacity, path)
    }

    /// The backend recording for `exec`, on an adapter `target` describes: the same engines
    /// and choices as natively (`with_path`), carried out by whatever `exec` is (the page's
    /// plan, say).
    pub fn recording(
        target: Target,
        exec: Box<dyn Executor>,
        model: &Model,
        pool: &ImagePool,
        sizes: ListSizes,
        capacity: usize,
        path: Option<StepPath>,
    ) -> Result<Self> {
        let storage = target.limits.workgroup_storage;
        let tiling = fused::tiling_with(model, storage);
        let why_not = fused::unsupported_with(model, tiling, storage);
        let engine = match (path, why_not) {
            (Some(StepPath::Reference), _) => Err(None),
            (Some(StepPath::Fused), Some(why)) => {
                return config(format!("--path fused: {why}; use --path reference"))
            }
            (None, Some(why)) => Err(Some(why)),
            (_, None) => Ok(tiling),
        };
        let session = Session::new(target.limits, exec);
        Self::build(session, target, model, pool, sizes, capacity, engine)
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
        let target = Target {
            limits: ctx.limits(),
            kernels: ctx.kernels,
        };
        let session = Session::new(target.limits, Box::new(Native::new(ctx)));
        Self::build(session, target, model, pool, sizes, capacity, Ok(tiling))
    }

    /// `engine`: the fused path's tiling, or why the reference path runs (None: it was asked for).
    fn build(
        mut session: Session,
        target: Target,
        model: &Model,
        pool: &ImagePool,
        sizes: ListSizes,
        capacity: usize,
        engine: std::result::Result<Tiling, Option<String>>,
    ) -> Result<Self> {
        let cap = forward_capacity(capacity, sizes)?;
        let labels: Vec<u32> = pool.labels.iter().map(|&l| l as u32).collect();
        let tape = &mut session.tape;
        let images = Bytes::Pool(PoolData::Images);
        let data = Data {
            images: tape.upload("images", images, pool.images.len() as u64)?,
            labels: tape.upload(
                "labels",
                Bytes::Pool(PoolData::Labels),
                4 * labels.len() as u64,
            )?,
            indices: tape.storage("index lists", 4 * sizes.total() as u64)?,
        };
        let history = History {
            buffer: tape.storage("loss and correct per step", 8 * STATS_KEPT as u64)?,
            recorded: 0,
            unread: 0,
            batch: vec![0; STATS_KEPT],
        };
        let eval_logits = tape.storage(
            "logits of a list",
            4 * (CLASSES * sizes.dev.max(sizes.test).max(cap)) as u64,
        )?;
        let (engine, kernels, note) = match engine {
            Ok(tiling) => {
                let outputs = (history.buffer, eval_logits);
                let f = Fused::new(tape, model, data, cap, outputs, tiling)?;
                (Engine::Fused(f), None, None)
            }
            Err(note) => {
                let kernels = Kernels::declare(tape, &target.kernels);
                let r = Reference::new(tape, &kernels, model, data, cap)?;
                (Engine::Reference(r), Some(kernels), note)
            }
        };
        let inputs = Inputs {
            images: &pool.images,
            labels: &labels,
            input: &[],
        };
        session.run_with(inputs)?;
        Ok(GpuBackend {
            session,
            sizes,
            pool_len: pool.labels.len(),
            capacity: cap,
            shapes: crate::params::shapes(model),
            activation: model.activation,
            data,
            history,
            eval_logits,
            engine,
            kernels,
            figures: None,
            kernel_config: target.kernels,
            note,
            steps: 0,
            optimizer: Optimizer::Sgd,
            reading: None,
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
        self.session.exec.start_profile()
    }

    /// Per kernel since `start_profile`: its name, GPU seconds and dispatches (waits for the
    /// GPU); and how many dispatches went untimed.
    #[allow(clippy::type_complexity)]
    pub fn profile(&mut self) -> Result<Option<(Vec<(&'static str, f64, usize)>, usize)>> {
        self.flush()?;
        self.session.exec.profile()
    }

    /// Submits the steps recorded and not yet submitted, before a wait for the GPU (the next
    /// run of steps per submit starts small, so that the idle GPU gets work soon).
    fn flush(&mut self) -> Result<()> {
        self.submit(true)
    }

    /// Submits the steps recorded and not yet submitted; `restart`: the runs of steps per
    /// submit start small again (after a wait), else keep growing (nothing waits).
    fn submit(&mut self, restart: bool) -> Result<()> {
        let tape = &mut self.session.tape;
        match &mut self.engine {
            Engine::Fused(f) if restart => f.flush(tape),
            Engine::Fused(f) => f.submit(tape),
            Engine::Reference(_) => {}
        }
        self.session.run()
    }

    fn step(&mut self, start: usize, len: usize, alpha: f32, copies: Option<Copies>) -> Result<()> {
        let args = StepArgs {
            first: (self.sizes.offset(List::Train) + start) as u32,
            m: len,
            alpha,
            t: self.steps + 1,
            history: self.history.slot(),
        };
        self.session.exec.step(len);
        let tape = &mut self.session.tape;
        match &mut self.engine {
            Engine::Fused(f) => f.step(tape, &args, copies)?,
            Engine::Reference(r) => r.step(
                tape,
                kernels(&self.kernels),
                &args,
                copies,
                self.history.buffer,
            )?,
        }
        // Counted once recorded: a step that failed to record is not in the history.
        self.steps += 1;
        self.history.record(len);
        self.session.run()
    }

    /// The stats of the last `count` recorded steps, oldest first (waits for the GPU).
    fn read_history(&mut self, count: usize) -> Result<Vec<BatchStats>> {
        let region = self.history.region();
        let sums = self.session.read_regions(&[region])?;
        let h = &self.history;
        Ok(stats::stats_of(&sums, &h.batch, h.recorded, count))
    }

    /// The stats asked for without waiting, from the ring's bytes read back.
    fn requested_stats(requested: Requested, bytes: &[u8]) -> Vec<BatchStats> {
        let sums: Vec<f32> = bytemuck::pod_collect_to_vec(bytes);
        let Requested {
            recorded,
            count,
            batch,
        } = requested;
        stats::stats_of(&sums, &batch, recorded, count)
    }
}

/// The per-operation kernels of a backend whose reference engine (or figures) declared them.
fn kernels(k: &Option<Kernels>) -> &Kernels {
    k.as_ref()
        .expect("the kernels are declared with the reference engine and the figures")
}

/// The page's view of a backend: where it reads what a progress point shows.
impl GpuBackend {
    /// From now on, records the progress lines' numbers on the device too (`figures.rs`), for
    /// windows of up to `window_steps` steps between progress lines.
    pub fn keep_figures(&mut self, window_steps: usize) -> Result<()> {
        let tape = &mut self.session.tape;
        let k = self
            .kernels
            .get_or_insert_with(|| Kernels::declare(tape, &self.kernel_config));
        let list = self.sizes.dev.max(self.sizes.test).max(self.capacity);
        let figures = Figures::new(tape, k, self.data, self.eval_logits, list, window_steps)?;
        self.figures = Some(figures);
        self.session.run()
    }

    /// Where a figure lies (with `keep_figures`).
    pub fn figure_region(&self, figure: Figure) -> Option<Region> {
        self.figures.as_ref().map(|f| f.region(figure))
    }

    /// A figure's two floats, (loss, accuracy), read back (with `keep_figures`; waits).
    pub fn read_figure(&mut self, figure: Figure) -> Result<Vec<f32>> {
        let Some(region) = self.figure_region(figure) else {
            return config("no figures are kept: call keep_figures first");
        };
        self.flush()?;
        self.session.read_regions(&[region])
    }

    /// Where the probabilities of `m` classified images lie (with `keep_figures`).
    pub fn probabilities_region(&self, m: usize) -> Option<Region> {
        self.figures.as_ref().map(|f| f.probabilities_region(m))
    }

    /// Where the weights lie: W1, b1, W2, … read one after another (the dense layout).
    pub fn model_regions(&self) -> Vec<Region> {
        match &self.engine {
            Engine::Fused(f) => f.model_regions(),
            Engine::Reference(r) => r.model_regions(),
        }
    }

    /// Where the optimizer's moments lie: per tensor, per moment, one after another.
    pub fn moment_regions(&self) -> Vec<Region> {
        match &self.engine {
            Engine::Fused(f) => f.moment_regions(),
            Engine::Reference(r) => r.moment_regions(),
        }
    }

    /// With figures: copies the unread steps' sums into the window.
    fn copy_unread(&mut self) -> Result<()> {
        let Some(figures) = &mut self.figures else {
            return Ok(());
        };
        let h = &self.history;
        let tape = &mut self.session.tape;
        figures.copy_steps(tape, h.buffer, (h.recorded, h.unread), &h.batch)?;
        self.session.run()
    }
}

impl Backend for GpuBackend {
    fn device_name(&self) -> String {
        self.session.exec.describe()
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
        let buffer = self.data.indices;
        self.session.tape.write_values(buffer, offset, indices);
        self.session.run()
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
        Ok(self.read_history(1)?[0])
    }

    fn step_stats(&mut self) -> Result<Vec<BatchStats>> {
        self.flush()?;
        self.copy_unread()?;
        if let Some(figures) = &mut self.figures {
            figures.window_mean(&mut self.session.tape, kernels(&self.kernels));
            self.session.run()?;
        }
        let mut stats = match self.reading.take() {
            Some(requested) => {
                let bytes = self.session.exec.poll(Wait::Yes)?.unwrap_or_default();
                Self::requested_stats(requested, &bytes)
            }
            None => Vec::new(),
        };
        let unread = self.history.unread;
        stats.extend(self.read_history(unread)?);
        self.history.unread = 0;
        Ok(stats)
    }

    fn request_stats(&mut self) -> Result<()> {
        if self.reading.is_some() || self.history.unread == 0 {
            return Ok(());
        }
        // The copy follows the steps: those still recorded go first, and no wait follows.
        self.submit(false)?;
        self.copy_unread()?;
        self.session.exec.request(self.history.region())?;
        self.reading = Some(Requested {
            recorded: self.history.recorded,
            count: self.history.unread,
            batch: self.history.batch.clone(),
        });
        self.history.unread = 0;
        Ok(())
    }

    fn ready_stats(&mut self) -> Result<Option<Vec<BatchStats>>> {
        if self.reading.is_none() {
            return Ok(None);
        }
        let Some(bytes) = self.session.exec.poll(Wait::IfDue)? else {
            return Ok(None);
        };
        let requested = self.reading.take().expect("checked above");
        Ok(Some(Self::requested_stats(requested, &bytes)))
    }

    fn logits(&mut self, list: List) -> Result<Vec<f32>> {
        let (first, n) = (self.sizes.offset(list), self.sizes.len(list));
        let tape = &mut self.session.tape;
        match &mut self.engine {
            Engine::Fused(f) => f.logits(tape, first, n),
            Engine::Reference(r) => {
                r.logits(tape, kernels(&self.kernels), first, n, self.eval_logits)
            }
        }
        self.flush()?;
        if let Some(figures) = &mut self.figures {
            let figure = if list == List::Test {
                Figure::Test
            } else {
                Figure::Dev
            };
            let tape = &mut self.session.tape;
            figures.score(tape, kernels(&self.kernels), figure, first, n);
            self.session.run()?;
        }
        self.session.read(self.eval_logits, CLASSES * n)
    }

    fn classify(&mut self, images: &[u8]) -> Result<Vec<f32>> {
        let n = check_images(images)?;
        let mut logits = Vec::with_capacity(CLASSES * n);
        for chunk in images.chunks(PIXELS * self.capacity) {
            // The chunk's write lands before anything not yet submitted.
            self.flush()?;
            let m = chunk.len() / PIXELS;
            let tape = &mut self.session.tape;
            match &mut self.engine {
                Engine::Fused(f) => f.classify(tape, m)?,
                Engine::Reference(r) => {
                    r.classify(tape, kernels(&self.kernels), m, self.eval_logits)?
                }
            }
            if let Engine::Fused(f) = &mut self.engine {
                f.flush(&mut self.session.tape);
            }
            if let Some(figures) = &mut self.figures {
                figures.probabilities(&mut self.session.tape, kernels(&self.kernels), m);
            }
            let inputs = Inputs {
                input: chunk,
                ..Inputs::default()
            };
            self.session.run_with(inputs)?;
            logits.extend(self.session.read(self.eval_logits, CLASSES * m)?);
        }
        Ok(logits)
    }

    fn model(&mut self) -> Result<Model> {
        self.flush()?;
        let regions = match &self.engine {
            Engine::Fused(f) => f.model_regions(),
            Engine::Reference(r) => r.model_regions(),
        };
        let flat = self.session.read_regions(&regions)?;
        Ok(ParamLayout::aligned(&self.shapes, 1).unpack(&flat, self.activation))
    }

    fn set_model(&mut self, model: &Model) -> Result<()> {
        // The shapes are known here: no need to read the weights back.
        check_same_shape(&self.shapes, self.activation, model)?;
        self.flush()?;
        let tape = &mut self.session.tape;
        match &mut self.engine {
            Engine::Fused(f) => f.set_model(tape, model),
            Engine::Reference(r) => r.set_model(tape, model),
        }
        self.session.run()
    }

    fn optimizer_state(&mut self) -> Result<OptimizerState> {
        self.flush()?;
        let regions = match &self.engine {
            Engine::Fused(f) => f.moment_regions(),
            Engine::Reference(r) => r.moment_regions(),
        };
        let flat = self.session.read_regions(&regions)?;
        let moments = self.optimizer.state_tensors();
        let tensors = crate::params::moments_of(&self.shapes, moments, &flat);
        Ok(OptimizerState {
            steps: self.steps,
            tensors,
        })
    }

    fn set_optimizer_state(&mut self, state: &OptimizerState) -> Result<()> {
        check_optimizer_state(&self.shapes, self.optimizer.state_tensors(), state)?;
        self.flush()?;
        let tape = &mut self.session.tape;
        match &self.engine {
            Engine::Fused(f) => f.set_optimizer_state(tape, &state.tensors),
            Engine::Reference(r) => r.set_optimizer_state(tape, &state.tensors),
        }
        self.steps = state.steps;
        self.session.run()
    }

    fn set_optimizer(&mut self, optimizer: Optimizer) -> Result<()> {
        self.flush()?;
        self.steps = 0;
        self.optimizer = optimizer;
        let tape = &mut self.session.tape;
        match &mut self.engine {
            Engine::Fused(f) => f.set_optimizer(tape, optimizer)?,
            Engine::Reference(r) => r.set_optimizer(tape, kernels(&self.kernels), optimizer)?,
        }
        self.session.run()
    }
}
