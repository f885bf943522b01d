//! The CPU backend: the training step written with the twins in `ops`, one call per kernel,
//! in the same order the GPU backend records them.

pub mod ops;

use std::sync::Arc;

use crate::backend::{
    check_batch, check_list, check_same_shape, check_shifts, forward_capacity, Backend, BatchStats,
    ImagePool, List, ListSizes, Shift,
};
use crate::data::{CLASSES, PIXELS};
use crate::error::Result;
use crate::model::Model;
use crate::optimizer::{adam_corrections, Optimizer};
use ops::{Act, AdamParams, Mat, MatMut};

pub struct CpuBackend {
    pool: Arc<ImagePool>,
    sizes: ListSizes,
    /// The three index lists one after another: train (this epoch's order), dev, test.
    indices: Vec<u32>,
    model: Model,
    /// The most samples one forward pass holds; longer lists are evaluated in chunks.
    capacity: usize,
    // Scratch, allocated once. Per layer l: Z[l], A[l], dZ[l]: (units, capacity), column-major.
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
    optimizer: Optimizer,
    /// Steps taken with this optimizer (Adam's t).
    steps: u64,
    /// The optimizer's state per parameter tensor (W1, b1, W2, …): [V, unused] for momentum,
    /// [M, V] for Adam, empty for SGD.
    state: Vec<[Vec<f32>; 2]>,
    /// `--augment`: the batch's shifted images (784 bytes each) and the list 0, 1, 2, … that
    /// reads them in order; empty until the first shifted step.
    shifted: Vec<u8>,
    identity: Vec<u32>,
}

impl CpuBackend {
    /// `capacity` is the largest batch `train_step` will be given; longer lists are evaluated
    /// in chunks.
    pub fn new(
        model: &Model,
        pool: Arc<ImagePool>,
        sizes: ListSizes,
        capacity: usize,
    ) -> Result<Self> {
        let capacity = forward_capacity(capacity, sizes)?;
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
            x: vec![0.0; PIXELS * capacity],
            z: per_layer(&|units| units * capacity),
            a: per_layer(&|units| units * capacity),
            dz: per_layer(&|units| units * capacity),
            da: vec![0.0; widest * capacity],
            dw: model.layers.iter().map(|l| vec![0.0; l.w.len()]).collect(),
            db: model.layers.iter().map(|l| vec![0.0; l.b.len()]).collect(),
            labels: vec![0; capacity],
            stats: vec![0.0; 2 * capacity],
            last: None,
            optimizer: Optimizer::Sgd,
            steps: 0,
            state: Vec::new(),
            shifted: Vec::new(),
            identity: Vec::new(),
        })
    }

    /// Forward pass over the `m` samples listed at `indices[first..first + m]`.
    fn forward(&mut self, first: usize, m: usize) {
        ops::gather_images(
            &self.pool.images,
            &self.indices[first..first + m],
            &mut self.x[..PIXELS * m],
        );
        self.forward_x(m);
    }

    /// Forward pass over the m samples in X:
    /// `Z[l] = W[l]·A[l-1] + b[l]`, `A[l] = g(Z[l])`, and softmax on the last layer.
    fn forward_x(&mut self, m: usize) {
        let act = Act::from(self.model.activation);
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
    fn backward(&mut self, first: usize, m: usize) {
        let act = Act::from(self.model.activation);
        for (label, &image) in self.labels.iter_mut().zip(&self.indices[first..first + m]) {
            *label = self.pool.labels[image as usize];
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

    /// The rest of a step once the forward pass has run: backward, update, batch statistics.
    fn finish_step(&mut self, start: usize, len: usize, alpha: f32) {
        self.backward(start, len);
        self.update(alpha);
        let mut totals = [0.0f32; 2];
        ops::sum_columns(&self.stats[..2 * len], 2, 1.0, &mut totals);
        self.last = Some(BatchStats {
            loss: totals[0] as f64 / len as f64,
            accuracy: totals[1] as f64 / len as f64,
        });
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
                    let (c1, c2) = adam_corrections(beta1, beta2, self.steps);
                    let adam = AdamParams {
                        beta1,
                        beta2,
                        eps,
                        c1,
                        c2,
                    };
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
        self.forward(start, len);
        self.finish_step(start, len, alpha);
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
        if self.shifted.is_empty() {
            self.shifted = vec![0; PIXELS * self.capacity];
            self.identity = (0..self.capacity as u32).collect();
        }
        let first = self.sizes.offset(List::Train) + start;
        ops::augment(
            &self.pool.images,
            &self.indices[first..first + len],
            shifts,
            &mut self.shifted[..PIXELS * len],
        );
        ops::gather_images(
            &self.shifted,
            &self.identity[..len],
            &mut self.x[..PIXELS * len],
        );
        self.forward_x(len);
        self.finish_step(start, len, alpha);
        Ok(())
    }

    fn batch_stats(&mut self) -> Result<BatchStats> {
        self.last
            .ok_or_else(|| crate::error::Error::Config("no training step has run yet".into()))
    }

    fn logits(&mut self, list: List) -> Result<Vec<f32>> {
        let (offset, n) = (self.sizes.offset(list), self.sizes.len(list));
        let last = self.model.layers.len() - 1;
        let mut logits = Vec::with_capacity(CLASSES * n);
        for start in (0..n).step_by(self.capacity) {
            let m = self.capacity.min(n - start);
            self.forward(offset + start, m);
            logits.extend_from_slice(&self.z[last][..CLASSES * m]);
        }
        Ok(logits)
    }

    fn model(&mut self) -> Result<Model> {
        Ok(self.model.clone())
    }

    fn set_model(&mut self, model: &Model) -> Result<()> {
        check_same_shape(&self.model, model)?;
        self.model = model.clone();
        Ok(())
    }

    fn set_optimizer(&mut self, optimizer: Optimizer) -> Result<()> {
        let tensors = self
            .model
            .layers
            .iter()
            .flat_map(|l| [l.w.len(), l.b.len()]);
        let n = optimizer.state_tensors();
        self.state = tensors
            .map(|len| {
                [
                    vec![0.0; if n >= 1 { len } else { 0 }],
                    vec![0.0; if n >= 2 { len } else { 0 }],
                ]
            })
            .collect();
        self.optimizer = optimizer;
        self.steps = 0;
        Ok(())
    }
}
