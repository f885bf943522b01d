//! The CPU backend. Two paths compute the same step:
//! - the reference (`CpuBackend::new_reference`): the training step written with the twins in
//!   `ops`, one call per kernel over the whole batch, in the same order the GPU backend
//!   records them. It is what the GPU kernels and the fast path are checked against.
//! - the fast path (`CpuBackend::new`, the default): `fused`, which runs the whole step block
//!   by block of samples, on all cores.
//!
//! Both leave the averaged gradients in `dw`, `db` and the per-sample stats in `stats`; the
//! update and the batch stats that follow are shared.

pub mod fused;
pub mod ops;

use std::sync::Arc;

use crate::backend::{
    check_batch, check_list, check_same_shape, check_shifts, forward_capacity, Backend, BatchStats,
    ImagePool, List, ListSizes, OptimizerState, Shift, StepPath, STATS_KEPT,
};
use crate::backend::{check_images, check_optimizer_state};
use crate::data::{CLASSES, PIXELS};
use crate::error::Result;
use crate::model::Model;
use crate::optimizer::{adam_params, Optimizer};
use ops::{Act, Mat, MatMut};

pub struct CpuBackend {
    pool: Arc<ImagePool>,
    sizes: ListSizes,
    /// The three index lists one after another: train (this epoch's order), dev, test.
    indices: Vec<u32>,
    model: Model,
    /// The most samples one forward pass holds; longer lists are evaluated in chunks.
    capacity: usize,
    /// The fast path's scratch; `None` for the reference backend.
    fused: Option<fused::Fused>,
    // The reference path's scratch, allocated once (empty when the fast path is used).
    // Per layer l: Z[l], A[l], dZ[l]: (units, capacity), column-major.
    x: Vec<f32>,
    z: Vec<Vec<f32>>,
    a: Vec<Vec<f32>>,
    dz: Vec<Vec<f32>>,
    /// dA[l-1] = W[l]ᵀ·dZ[l], before the activation's derivative: (widest hidden, capacity).
    da: Vec<f32>,
    dw: Vec<Vec<f32>>,
    db: Vec<Vec<f32>>,
    labels: Vec<u8>,
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
    /// `--augment`: the batch's shifted images (784 bytes each), their labels, and the list
    /// 0, 1, 2, … that reads them in order; empty until the first shifted step.
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
        let fused = config.map(|config| fused::Fused::new(model, capacity, config));
        // Only the reference path uses the whole-batch scratch.
        let batch = if fused.is_some() { 0 } else { capacity };
        let per_layer = |f: &dyn Fn(usize) -> usize| -> Vec<Vec<f32>> {
            model
                .layers
                .iter()
                .map(|l| vec![0.0; f(l.outputs)])
                .collect()
        };
        let widest = model.widest();
        Ok(CpuBackend {
            pool,
            sizes,
            indices: vec![0; sizes.total()],
            model: model.clone(),
            capacity,
            fused,
            x: vec![0.0; PIXELS * batch],
            z: per_layer(&|units| units * batch),
            a: per_layer(&|units| units * batch),
            dz: per_layer(&|units| units * batch),
            da: vec![0.0; widest * batch],
            dw: model.layers.iter().map(|l| vec![0.0; l.w.len()]).collect(),
            db: model.layers.iter().map(|l| vec![0.0; l.b.len()]).collect(),
            labels: vec![0; batch],
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

    /// Forward pass over the images `batch` lists in `pool`:
    /// `Z[l] = W[l]·A[l-1] + b[l]`, `A[l] = g(Z[l])`, and softmax on the last layer.
    fn forward(&mut self, pool: &ImagePool, batch: &[u32]) {
        let act = Act::from(self.model.activation);
        let m = batch.len();
        ops::gather_images(&pool.images, batch, &mut self.x[..PIXELS * m]);
        let last = self.model.layers.len() - 1;
        for (l, layer) in self.model.layers.iter().enumerate() {
            let (units, inputs) = (layer.outputs, layer.inputs);
            let input = if l == 0 { &self.x } else { &self.a[l - 1] };
            let z = &mut self.z[l][..units * m];
            ops::matmul(
                Mat::row_major(&layer.w, units, inputs),
                Mat::col_major(input, inputs, m),
                Some(&layer.b),
                1.0,
                MatMut::col_major(z, units, m),
            );
            let a = &mut self.a[l][..units * m];
            if l < last {
                ops::activation(z, act, a);
            } else {
                ops::softmax(z, units, a);
            }
        }
    }

    /// Backward pass over the batch of the last `forward`, leaving dW[l] and db[l].
    fn backward(&mut self, pool: &ImagePool, batch: &[u32]) {
        let act = Act::from(self.model.activation);
        let m = batch.len();
        for (label, &image) in self.labels.iter_mut().zip(batch) {
            *label = pool.labels[image as usize];
        }
        let last = self.model.layers.len() - 1;
        ops::output_grad(
            &self.a[last][..CLASSES * m],
            &self.z[last][..CLASSES * m],
            &self.labels[..m],
            CLASSES,
            &mut self.dz[last][..CLASSES * m],
            &mut self.stats[..2 * m],
        );
        let inv_m = 1.0 / m as f32;
        for l in (0..=last).rev() {
            let layer = &self.model.layers[l];
            let (units, inputs) = (layer.outputs, layer.inputs);
            let input = if l == 0 { &self.x } else { &self.a[l - 1] };
            let (lower, upper) = self.dz.split_at_mut(l);
            let dz = &upper[0][..units * m];
            // dW[l] = 1/m · dZ[l]·A[l-1]ᵀ: (units, inputs)
            ops::matmul(
                Mat::col_major(dz, units, m),
                Mat::col_major(input, inputs, m).t(),
                None,
                inv_m,
                MatMut::row_major(&mut self.dw[l], units, inputs),
            );
            // db[l] = 1/m · Σ_columns dZ[l]: (units)
            ops::sum_columns(dz, units, inv_m, &mut self.db[l]);
            if l > 0 {
                // dZ[l-1] = W[l]ᵀ·dZ[l] ⊙ g'(Z[l-1]): (inputs, m)
                let da = &mut self.da[..inputs * m];
                ops::matmul(
                    Mat::row_major(&layer.w, units, inputs).t(),
                    Mat::col_major(dz, units, m),
                    None,
                    1.0,
                    MatMut::col_major(da, inputs, m),
                );
                ops::activation_grad(
                    da,
                    &self.z[l - 1][..inputs * m],
                    act,
                    &mut lower[l - 1][..inputs * m],
                );
            }
        }
    }
}

impl CpuBackend {
    /// One training step on the images `batch` lists in `pool`: the gradients (fast path or
    /// reference), the update, the batch statistics.
    fn step(&mut self, pool: &ImagePool, batch: &[u32], alpha: f32) {
        let len = batch.len();
        match &mut self.fused {
            Some(fused) => fused.gradients(
                &self.model,
                pool,
                batch,
                &mut self.dw,
                &mut self.db,
                &mut self.stats[..2 * len],
            ),
            None => {
                self.forward(pool, batch);
                self.backward(pool, batch);
            }
        }
        self.update(alpha);
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

    /// Applies the optimizer to every parameter tensor with the gradients in dW, db.
    fn update(&mut self, alpha: f32) {
        self.steps += 1;
        let grads = self.dw.iter().zip(&self.db).flat_map(|(dw, db)| [dw, db]);
        let params = self
            .model
            .layers
            .iter_mut()
            .flat_map(|layer| [&mut layer.w, &mut layer.b]);
        let mut state = self.state.iter_mut();
        for (param, grad) in params.zip(grads) {
            match self.optimizer {
                Optimizer::Sgd => ops::sgd_update(param, grad, alpha),
                Optimizer::Momentum { beta } => {
                    let [v, _] = state.next().expect("state per tensor");
                    ops::momentum_update(param, grad, v, alpha, beta);
                }
                Optimizer::Adam { beta1, beta2, eps } => {
                    let [m, v] = state.next().expect("state per tensor");
                    let adam = adam_params(beta1, beta2, eps, self.steps);
                    ops::adam_update(param, grad, m, v, alpha, adam);
                }
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
        // Made on first use, so runs without --augment don't carry them.
        let mut shifted = std::mem::take(&mut self.shifted);
        if shifted.labels.is_empty() {
            shifted.images = vec![0; PIXELS * self.capacity];
            shifted.labels = vec![0; self.capacity];
            self.identity = (0..self.capacity as u32).collect();
        }
        let first = self.sizes.offset(List::Train) + start;
        let batch = &self.indices[first..first + len];
        ops::augment(
            &self.pool.images,
            batch,
            shifts,
            &mut shifted.images[..PIXELS * len],
        );
        for (label, &image) in shifted.labels.iter_mut().zip(batch) {
            *label = self.pool.labels[image as usize];
        }
        let identity = std::mem::take(&mut self.identity);
        self.step(&shifted, &identity[..len], alpha);
        (self.shifted, self.identity) = (shifted, identity);
        Ok(())
    }

    fn path(&self) -> StepPath {
        match self.fused {
            Some(_) => StepPath::Fused,
            None => StepPath::Reference,
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
        let last = self.model.layers.len() - 1;
        let mut logits = Vec::with_capacity(CLASSES * n);
        for start in (0..n).step_by(self.capacity) {
            let m = self.capacity.min(n - start);
            match &mut self.fused {
                Some(fused) => {
                    logits.resize(CLASSES * (start + m), 0.0);
                    let indices = &self.indices[offset + start..offset + start + m];
                    let out = &mut logits[CLASSES * start..];
                    fused.logits(&self.model, &self.pool.images, indices, out);
                }
                None => {
                    let (pool, indices) = (self.pool.clone(), std::mem::take(&mut self.indices));
                    self.forward(&pool, &indices[offset + start..offset + start + m]);
                    self.indices = indices;
                    logits.extend_from_slice(&self.z[last][..CLASSES * m]);
                }
            }
        }
        Ok(logits)
    }

    fn classify(&mut self, images: &[u8]) -> Result<Vec<f32>> {
        let n = check_images(images)?;
        let identity: Vec<u32> = (0..n as u32).collect();
        let mut logits = vec![0.0; CLASSES * n];
        let pool = ImagePool {
            images: if self.fused.is_some() {
                Vec::new()
            } else {
                images.to_vec()
            },
            labels: vec![0; n],
        };
        for start in (0..n).step_by(self.capacity) {
            let batch = &identity[start..n.min(start + self.capacity)];
            let out = &mut logits[CLASSES * start..CLASSES * (start + batch.len())];
            match &mut self.fused {
                Some(fused) => fused.logits(&self.model, images, batch, out),
                None => {
                    self.forward(&pool, batch);
                    let last = self.model.layers.len() - 1;
                    out.copy_from_slice(&self.z[last][..out.len()]);
                }
            }
        }
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
