//! The CPU backend. Two engines compute the same step's gradients, as on the GPU:
//! - `reference::Reference` (`CpuBackend::new_reference`): the training step written with the
//!   twins in `ops`, one call per kernel over the whole batch, in the same order the GPU backend
//!   records them. It is what the GPU kernels and the fast path are checked against.
//! - `fused::Fused` (`CpuBackend::new`, the default for narrow networks): the whole step block
//!   by block of samples, on all cores.
//! - `wide::Wide` (`CpuBackend::new` where a hidden layer has `wide::WIDE_UNITS` or more): each
//!   layer's products at the core's peak, split over the cores, with the update fused into
//!   the dW product.
//!
//! The first two leave the averaged gradients in `dw`, `db` and the per-sample stats in
//! `stats`, and the update (`ops::Update`) follows; the wide engine applies the same update
//! itself. The batch stats that follow are shared.

pub mod fused;
pub mod ops;
pub mod reference;
pub mod simd;
pub mod wide;

use std::sync::Arc;

use crate::augment::Warps;
use crate::backend::{
    check_batch, check_images, check_list, check_same_shape, check_shifts, check_warps,
    forward_capacity, Backend, BatchStats, StepPath, STATS_KEPT,
};
use crate::data::pool::{ImagePool, List, ListSizes, Shift};
use crate::data::{CLASSES, PIXELS};
use crate::error::Result;
use crate::model::Model;
use crate::optimizer::{check_optimizer_state, Optimizer, OptimizerState};
use ops::Update;

pub struct CpuBackend {
    pool: Arc<ImagePool>,
    sizes: ListSizes,
    /// The three index lists one after another: train (this epoch's order), dev, test.
    indices: Vec<u32>,
    model: Model,
    /// The most samples one forward pass holds; longer lists are evaluated in chunks.
    capacity: usize,
    /// The path that computes the gradients, with its own scratch.
    engine: Engine,
    /// The averaged gradients of the last batch, per layer: dW: (outputs, inputs) row-major,
    /// db: (outputs).
    dw: Vec<Vec<f32>>,
    db: Vec<Vec<f32>>,
    /// Per sample of the last batch: (loss, correct).
    stats: Vec<f32>,
    last: Option<BatchStats>,
    /// The stats of the steps `step_stats` has not returned yet (the last STATS_KEPT).
    unread: std::collections::VecDeque<BatchStats>,
    optimizer: Optimizer,
    /// Steps taken with this optimizer (Adam's t).
    steps: u64,
    /// The optimizer's state per parameter tensor (W1, b1, W2, …): [V, unused] for momentum,
    /// [M, V] for Adam, empty for SGD.
    state: Vec<[Vec<f32>; 2]>,
    /// `--augment`: the batch's shifted or warped images (784 bytes each), their labels, and
    /// the list 0, 1, 2, … that reads them in order; empty until the first such step.
    shifted: ImagePool,
    identity: Vec<u32>,
}

impl CpuBackend {
    /// The fast backend. `capacity` is the largest batch `train_step` will be given; longer
    /// lists are evaluated in chunks.
    pub fn new(
        model: &Model,
        pool: Arc<ImagePool>,
        sizes: ListSizes,
        capacity: usize,
    ) -> Result<Self> {
        Self::with_config(model, pool, sizes, capacity, fused::FusedConfig::default())
    }

    /// The fast backend with its batch split chosen by hand (tests, benchmarks).
    pub fn with_config(
        model: &Model,
        pool: Arc<ImagePool>,
        sizes: ListSizes,
        capacity: usize,
        config: fused::FusedConfig,
    ) -> Result<Self> {
        Self::build(model, pool, sizes, capacity, Some(config))
    }

    /// The backend on `path`, as `GpuBackend::with_path`: None or `Fused` is the fast engine
    /// (it covers every network), `Reference` the reference one.
    pub fn with_path(
        model: &Model,
        pool: Arc<ImagePool>,
        sizes: ListSizes,
        capacity: usize,
        path: Option<StepPath>,
    ) -> Result<Self> {
        match path {
            Some(StepPath::Reference) => Self::new_reference(model, pool, sizes, capacity),
            None | Some(StepPath::Fused) => Self::new(model, pool, sizes, capacity),
        }
    }

    /// The reference backend: whole-batch `ops` calls, the twin of the GPU backend.
    pub fn new_reference(
        model: &Model,
        pool: Arc<ImagePool>,
        sizes: ListSizes,
        capacity: usize,
    ) -> Result<Self> {
        Self::build(model, pool, sizes, capacity, None)
    }

    fn build(
        model: &Model,
        pool: Arc<ImagePool>,
        sizes: ListSizes,
        capacity: usize,
        config: Option<fused::FusedConfig>,
    ) -> Result<Self> {
        let capacity = forward_capacity(capacity, sizes)?;
        let engine = match config {
            Some(config) if wide::suits(model, &config) => {
                Engine::Wide(wide::Wide::new(model, capacity, config))
            }
            Some(config) => Engine::Fused(fused::Fused::new(model, capacity, config)),
            None => Engine::Reference(reference::Reference::new(model, capacity)),
        };
        // The wide engine keeps no averaged gradients.
        let keeps_gradients = !matches!(engine, Engine::Wide(_));
        let gradients = |len: usize| vec![0.0; if keeps_gradients { len } else { 0 }];
        Ok(CpuBackend {
            pool,
            sizes,
            indices: vec![0; sizes.total()],
            model: model.clone(),
            capacity,
            engine,
            dw: model.layers.iter().map(|l| gradients(l.w.len())).collect(),
            db: model.layers.iter().map(|l| gradients(l.b.len())).collect(),
            stats: vec![0.0; 2 * capacity],
            last: None,
            unread: Default::default(),
            optimizer: Optimizer::Sgd,
            steps: 0,
            state: Vec::new(),
            shifted: ImagePool::default(),
            identity: Vec::new(),
        })
    }

    /// One training step on the images `batch` lists in `pool`: the gradients (fast path or
    /// reference) and the update (the wide engine does both), the batch statistics.
    fn step(&mut self, pool: &ImagePool, batch: &[u32], alpha: f32) {
        let len = batch.len();
        self.steps += 1;
        let update = Update::new(self.optimizer, alpha, self.steps);
        let stats = &mut self.stats[..2 * len];
        let (model, dw, db) = (&mut self.model, &mut self.dw, &mut self.db);
        match &mut self.engine {
            Engine::Wide(wide) => wide.train(model, pool, batch, update, &mut self.state, stats),
            Engine::Fused(fused) => {
                fused.gradients(model, pool, batch, dw, db, stats);
                self.update(update);
            }
            Engine::Reference(reference) => {
                reference.gradients(model, pool, batch, dw, db, stats);
                self.update(update);
            }
        }
        let mut totals = [0.0f32; 2];
        ops::sum_columns(&self.stats[..2 * len], 2, 1.0, &mut totals);
        let stats = BatchStats {
            loss: totals[0] as f64 / len as f64,
            accuracy: totals[1] as f64 / len as f64,
        };
        self.last = Some(stats);
        if self.unread.len() == STATS_KEPT {
            self.unread.pop_front();
        }
        self.unread.push_back(stats);
    }

    /// One training step on copies of the batch at `start .. start + len` of the train list:
    /// `copy(pool images, batch indices, out)` writes them ((len, 784) bytes: shifted or
    /// warped), then `step` trains on them in order.
    fn step_on_copies(
        &mut self,
        start: usize,
        len: usize,
        alpha: f32,
        copy: impl FnOnce(&[u8], &[u32], &mut [u8]),
    ) {
        // Made on first use, so runs without --augment don't carry them.
        let mut copies = std::mem::take(&mut self.shifted);
        if copies.labels.is_empty() {
            copies.images = vec![0; PIXELS * self.capacity];
            copies.labels = vec![0; self.capacity];
            self.identity = (0..self.capacity as u32).collect();
        }
        let first = self.sizes.offset(List::Train) + start;
        let batch = &self.indices[first..first + len];
        copy(&self.pool.images, batch, &mut copies.images[..PIXELS * len]);
        for (label, &image) in copies.labels.iter_mut().zip(batch) {
            *label = self.pool.labels[image as usize];
        }
        let identity = std::mem::take(&mut self.identity);
        self.step(&copies, &identity[..len], alpha);
        (self.shifted, self.identity) = (copies, identity);
    }

    /// Applies `update` to every parameter tensor with the gradients in dW, db.
    fn update(&mut self, update: Update) {
        let grads = self.dw.iter().zip(&self.db).flat_map(|(dw, db)| [dw, db]);
        let params = self
            .model
            .layers
            .iter_mut()
            .flat_map(|layer| [&mut layer.w, &mut layer.b]);
        let mut state = self.state.iter_mut();
        for (param, grad) in params.zip(grads) {
            match state.next() {
                Some([s0, s1]) => update.apply(param, grad, s0, s1),
                // No optimizer set yet: SGD, which keeps no state.
                None => update.apply(param, grad, &mut [], &mut []),
            }
        }
    }
}

impl Backend for CpuBackend {
    fn device_name(&self) -> String {
        "cpu".to_string()
    }

    fn set_list(&mut self, list: List, indices: &[u32]) -> Result<()> {
        check_list(&self.sizes, list, indices, self.pool.labels.len())?;
        let start = self.sizes.offset(list);
        self.indices[start..start + indices.len()].copy_from_slice(indices);
        Ok(())
    }

    fn train_step(&mut self, start: usize, len: usize, alpha: f32) -> Result<()> {
        check_batch(&self.sizes, self.capacity, start, len)?;
        let first = self.sizes.offset(List::Train) + start;
        // `step` borrows self mutably: lend it the pool and the index list (no copies).
        let (pool, indices) = (self.pool.clone(), std::mem::take(&mut self.indices));
        self.step(&pool, &indices[first..first + len], alpha);
        self.indices = indices;
        Ok(())
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
        self.step_on_copies(start, len, alpha, |images, batch, out| {
            ops::augment(images, batch, shifts, out)
        });
        Ok(())
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
        self.step_on_copies(start, len, alpha, |images, batch, out| {
            ops::warp(images, batch, warps, out)
        });
        Ok(())
    }

    fn path(&self) -> StepPath {
        match self.engine {
            Engine::Fused(_) | Engine::Wide(_) => StepPath::Fused,
            Engine::Reference(_) => StepPath::Reference,
        }
    }

    fn batch_stats(&mut self) -> Result<BatchStats> {
        self.last
            .ok_or_else(|| crate::error::Error::Config("no training step has run yet".into()))
    }

    fn step_stats(&mut self) -> Result<Vec<BatchStats>> {
        Ok(self.unread.drain(..).collect())
    }

    fn logits(&mut self, list: List) -> Result<Vec<f32>> {
        let (offset, n) = (self.sizes.offset(list), self.sizes.len(list));
        let indices = &self.indices[offset..offset + n];
        let mut logits = vec![0.0; CLASSES * n];
        self.engine.logits_in_chunks(
            &self.model,
            &self.pool.images,
            indices,
            self.capacity,
            &mut logits,
        );
        Ok(logits)
    }

    fn classify(&mut self, images: &[u8]) -> Result<Vec<f32>> {
        let n = check_images(images)?;
        let identity: Vec<u32> = (0..n as u32).collect();
        let mut logits = vec![0.0; CLASSES * n];
        self.engine
            .logits_in_chunks(&self.model, images, &identity, self.capacity, &mut logits);
        Ok(logits)
    }

    fn model(&mut self) -> Result<Model> {
        Ok(self.model.clone())
    }

    fn set_model(&mut self, model: &Model) -> Result<()> {
        let sizes: Vec<_> = self
            .model
            .layers
            .iter()
            .map(|l| (l.inputs, l.outputs))
            .collect();
        check_same_shape(&sizes, self.model.activation, model)?;
        self.model = model.clone();
        Ok(())
    }

    fn set_optimizer(&mut self, optimizer: Optimizer) -> Result<()> {
        let n = optimizer.state_tensors();
        let zeros = |len: usize, k: usize| vec![0.0; if n >= k { len } else { 0 }];
        self.state = self
            .model
            .layers
            .iter()
            .flat_map(|l| [l.w.len(), l.b.len()])
            .map(|len| [zeros(len, 1), zeros(len, 2)])
            .collect();
        self.optimizer = optimizer;
        self.steps = 0;
        Ok(())
    }

    fn optimizer_state(&mut self) -> Result<OptimizerState> {
        let n = self.optimizer.state_tensors();
        Ok(OptimizerState {
            steps: self.steps,
            tensors: self.state.iter().map(|s| s[..n].to_vec()).collect(),
        })
    }

    fn set_optimizer_state(&mut self, state: &OptimizerState) -> Result<()> {
        let shapes: Vec<_> = self
            .model
            .layers
            .iter()
            .map(|l| (l.inputs, l.outputs))
            .collect();
        let n = self.optimizer.state_tensors();
        check_optimizer_state(&shapes, n, state)?;
        for (mine, saved) in self.state.iter_mut().zip(&state.tensors) {
            for (m, s) in mine.iter_mut().zip(saved) {
                m.clone_from(s);
            }
        }
        self.steps = state.steps;
        Ok(())
    }
}

/// The engines of the CPU step, each with the scratch only it uses.
enum Engine {
    Fused(fused::Fused),
    Wide(wide::Wide),
    Reference(reference::Reference),
}

impl Engine {
    /// The logits `Z[L]: (CLASSES, n)` of the images `indices` lists in `images` (784 bytes
    /// each), `capacity` samples at a time.
    fn logits_in_chunks(
        &mut self,
        model: &Model,
        images: &[u8],
        indices: &[u32],
        capacity: usize,
        logits: &mut [f32],
    ) {
        for (chunk, out) in indices
            .chunks(capacity)
            .zip(logits.chunks_mut(CLASSES * capacity))
        {
            match self {
                Engine::Fused(fused) => fused.logits(model, images, chunk, out),
                Engine::Wide(wide) => wide.logits(model, images, chunk, out),
                Engine::Reference(reference) => reference.logits(model, images, chunk, out),
            }
        }
    }
}
