//! The CPU's reference path: the training step written with the twins in `ops`, one call per
//! kernel over the whole batch, in the same order the GPU's reference path records them. It is
//! what the GPU kernels and the fast path (`fused`) are checked against, so it stays plain.

use super::ops;
use crate::data::pool::ImagePool;
use crate::data::{CLASSES, PIXELS};
use crate::layout::{Mat, MatMut};
use crate::model::Model;

/// The whole-batch scratch, allocated once for batches of up to `capacity` samples.
/// Per layer l: `Z[l]`, `A[l]`, `dZ[l]`: (units, capacity), column-major.
pub struct Reference {
    /// `X: (784, capacity)`: the batch's images scaled to 0..1.
    x: Vec<f32>,
    z: Vec<Vec<f32>>,
    a: Vec<Vec<f32>>,
    dz: Vec<Vec<f32>>,
    /// `dA[l-1] = W[l]ᵀ·dZ[l]`, before the activation's derivative: (widest hidden, capacity).
    da: Vec<f32>,
    labels: Vec<u8>,
}

impl Reference {
    /// Scratch for `model`'s layers and batches of up to `capacity` samples.
    pub fn new(model: &Model, capacity: usize) -> Reference {
        let per_layer = || -> Vec<Vec<f32>> {
            model
                .layers
                .iter()
                .map(|l| vec![0.0; l.outputs * capacity])
                .collect()
        };
        Reference {
            x: vec![0.0; PIXELS * capacity],
            z: per_layer(),
            a: per_layer(),
            dz: per_layer(),
            da: vec![0.0; model.widest() * capacity],
            labels: vec![0; capacity],
        }
    }

    /// The averaged gradients of the batch `indices` (positions in `pool`), as `fused`'s:
    /// `dw[l] = 1/m · dZ[l]·A[l-1]ᵀ`: (units, inputs) row-major, `db[l] = 1/m · Σ dZ[l]`:
    /// (units), and per sample `stats`: (2, m) column-major, (loss, correct).
    pub fn gradients(
        &mut self,
        model: &Model,
        pool: &ImagePool,
        indices: &[u32],
        dw: &mut [Vec<f32>],
        db: &mut [Vec<f32>],
        stats: &mut [f32],
    ) {
        self.forward(model, &pool.images, indices);
        self.backward(model, &pool.labels, indices, dw, db, stats);
    }

    /// The output layer's `Z[L]: (CLASSES, m)` for the images `indices` lists in `images`.
    pub fn logits(&mut self, model: &Model, images: &[u8], indices: &[u32], logits: &mut [f32]) {
        self.forward(model, images, indices);
        let last = model.layers.len() - 1;
        logits.copy_from_slice(&self.z[last][..CLASSES * indices.len()]);
    }

    /// Forward pass over the images `batch` lists in `images` (784 bytes each):
    /// `Z[l] = W[l]·A[l-1] + b[l]`, `A[l] = g(Z[l])`, and softmax on the last layer.
    fn forward(&mut self, model: &Model, images: &[u8], batch: &[u32]) {
        let m = batch.len();
        ops::gather_images(images, batch, &mut self.x[..PIXELS * m]);
        let last = model.layers.len() - 1;
        for (l, layer) in model.layers.iter().enumerate() {
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
                ops::activation(z, model.activation, a);
            } else {
                ops::softmax(z, units, a);
            }
        }
    }

    /// Backward pass over the batch of the last `forward` (its labels from `labels`), leaving
    /// dW[l] and db[l], and each sample's (loss, correct) in `stats`.
    fn backward(
        &mut self,
        model: &Model,
        labels: &[u8],
        batch: &[u32],
        dw: &mut [Vec<f32>],
        db: &mut [Vec<f32>],
        stats: &mut [f32],
    ) {
        let m = batch.len();
        for (label, &image) in self.labels.iter_mut().zip(batch) {
            *label = labels[image as usize];
        }
        let last = model.layers.len() - 1;
        ops::output_grad(
            &self.a[last][..CLASSES * m],
            &self.z[last][..CLASSES * m],
            &self.labels[..m],
            CLASSES,
            &mut self.dz[last][..CLASSES * m],
            &mut stats[..2 * m],
        );
        let inv_m = 1.0 / m as f32;
        for l in (0..=last).rev() {
            let layer = &model.layers[l];
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
                MatMut::row_major(&mut dw[l], units, inputs),
            );
            // db[l] = 1/m · Σ_columns dZ[l]: (units)
            ops::sum_columns(dz, units, inv_m, &mut db[l]);
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
                    model.activation,
                    &mut lower[l - 1][..inputs * m],
                );
            }
        }
    }
}
