//! Where a network's parameters lie in one flat list of f32, in the two layouts the project
//! uses: packed (each tensor on a vec4 boundary, each row of W padded to whole vec4s, so the
//! fused GPU step reads four floats at a time; its partial slices and the optimizer's state
//! are laid out the same way) and dense (W1, b1, W2, b2, … one after another, no padding: what
//! `serve`'s page sends and receives). Neutral: the GPU's fused engine packs with it, the page's
//! checks and checkpoints unpack with it.

use crate::model::{Activation, Layer, Model};

/// Where W[l] and b[l] lie, in floats. Padding is 0 and stays 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamLayout {
    pub layers: Vec<TensorsAt>,
    /// Floats in all (a multiple of the alignment).
    pub floats: usize,
}

/// One layer's place in the flat list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TensorsAt {
    pub inputs: usize,
    pub outputs: usize,
    /// W starts here; row i at `w + i · row`.
    pub w: usize,
    pub row: usize,
    pub b: usize,
}

/// Each layer's (inputs, outputs).
pub fn shapes(model: &Model) -> Vec<(usize, usize)> {
    model.layers.iter().map(|l| (l.inputs, l.outputs)).collect()
}

/// The optimizer's moments per tensor (W1, b1, W2, …), `moments` each, from `flat`: every
/// tensor's moments one after another, each dense (as `OptimizerState::tensors` holds them).
pub fn moments_of(shapes: &[(usize, usize)], moments: usize, flat: &[f32]) -> Vec<Vec<Vec<f32>>> {
    let lens = shapes
        .iter()
        .flat_map(|&(inputs, outputs)| [inputs * outputs, outputs]);
    let mut at = 0;
    lens.map(|len| {
        (0..moments)
            .map(|_| {
                at += len;
                flat[at - len..at].to_vec()
            })
            .collect()
    })
    .collect()
}

impl ParamLayout {
    /// The fused GPU step's layout of `model`'s parameters.
    pub fn packed(model: &Model) -> ParamLayout {
        ParamLayout::aligned(&shapes(model), 4)
    }

    /// The dense layout: the tensors one after another.
    pub fn dense(model: &Model) -> ParamLayout {
        ParamLayout::aligned(&shapes(model), 1)
    }

    /// Layers of `shapes` (inputs, outputs), each tensor and each row of W starting on a
    /// multiple of `align` floats.
    pub fn aligned(shapes: &[(usize, usize)], align: usize) -> ParamLayout {
        let mut floats = 0;
        let mut take = |n: usize| {
            let start = floats;
            floats += n.next_multiple_of(align);
            start
        };
        let layers = shapes
            .iter()
            .map(|&(inputs, outputs)| {
                let row = inputs.next_multiple_of(align);
                TensorsAt {
                    inputs,
                    outputs,
                    w: take(outputs * row),
                    row,
                    b: take(outputs),
                }
            })
            .collect();
        ParamLayout { layers, floats }
    }

    /// The model's W and b, laid out; padding is 0.
    pub fn pack(&self, model: &Model) -> Vec<f32> {
        let tensors: Vec<&[f32]> = model
            .layers
            .iter()
            .flat_map(|l| [&l.w[..], &l.b[..]])
            .collect();
        self.pack_tensors(&tensors)
    }

    /// Tensors W1, b1, W2, b2, … (or anything of their lengths, such as their moments), laid
    /// out; padding is 0.
    pub fn pack_tensors(&self, tensors: &[&[f32]]) -> Vec<f32> {
        let mut flat = vec![0.0; self.floats];
        for (at, pair) in self.layers.iter().zip(tensors.chunks(2)) {
            for (i, row) in pair[0].chunks_exact(at.inputs.max(1)).enumerate() {
                flat[at.w + i * at.row..][..at.inputs].copy_from_slice(row);
            }
            flat[at.b..at.b + at.outputs].copy_from_slice(pair[1]);
        }
        flat
    }

    /// The tensors W1, b1, W2, b2, … of a laid-out list.
    pub fn tensors(&self, flat: &[f32]) -> Vec<Vec<f32>> {
        self.layers
            .iter()
            .flat_map(|at| {
                let w = (0..at.outputs)
                    .flat_map(|i| &flat[at.w + i * at.row..][..at.inputs])
                    .copied()
                    .collect();
                [w, flat[at.b..at.b + at.outputs].to_vec()]
            })
            .collect()
    }

    pub fn unpack(&self, flat: &[f32], activation: Activation) -> Model {
        let mut tensors = self.tensors(flat).into_iter();
        let layers = self
            .layers
            .iter()
            .map(|at| Layer {
                inputs: at.inputs,
                outputs: at.outputs,
                w: tensors.next().expect("W per layer"),
                b: tensors.next().expect("b per layer"),
            })
            .collect();
        Model { layers, activation }
    }

    /// Tensor `t` (W1, b1, W2, …) as runs of floats (start, length), in order: read one after
    /// another, the runs of every tensor give the dense layout. Adjacent runs are merged.
    pub fn runs(&self, t: usize) -> Vec<(usize, usize)> {
        let at = &self.layers[t / 2];
        let mut runs: Vec<(usize, usize)> = Vec::new();
        let mut push = |start: usize, len: usize| match runs.last_mut() {
            Some(last) if last.0 + last.1 == start => last.1 += len,
            _ => runs.push((start, len)),
        };
        if t.is_multiple_of(2) {
            for i in 0..at.outputs {
                push(at.w + i * at.row, at.inputs);
            }
        } else {
            push(at.b, at.outputs);
        }
        runs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Init;

    #[test]
    fn packed_puts_every_tensor_on_a_vec4_and_round_trips() {
        let model = Model::new(&[7, 5], Activation::Elu, Init::He, 3).unwrap();
        let layout = ParamLayout::packed(&model);
        for t in &layout.layers {
            assert_eq!((t.w % 4, t.b % 4, t.row % 4), (0, 0, 0));
            assert!(t.row >= t.inputs && t.w + t.outputs * t.row <= t.b);
        }
        assert_eq!(layout.floats % 4, 0);
        assert_eq!(layout.unpack(&layout.pack(&model), model.activation), model);
    }

    #[test]
    fn the_runs_of_a_packed_layout_read_in_order_are_the_dense_layout() {
        let model = Model::new(&[7, 5], Activation::Relu, Init::Uniform, 4).unwrap();
        let (packed, dense) = (ParamLayout::packed(&model), ParamLayout::dense(&model));
        let flat = packed.pack(&model);
        let read: Vec<f32> = (0..2 * packed.layers.len())
            .flat_map(|t| packed.runs(t))
            .flat_map(|(start, len)| flat[start..start + len].to_vec())
            .collect();
        assert_eq!(read, dense.pack(&model));
        assert_eq!(dense.floats, read.len());
        // W1's rows (784 floats) are whole vec4s: one run.
        assert_eq!(packed.runs(0).len(), 1);
        assert_eq!(dense.unpack(&read, model.activation), model);
    }
}
