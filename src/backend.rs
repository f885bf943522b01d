//! The seam between the training loop and the hardware.
//!
//! Both backends hold the same things (the images, index lists, the parameters, scratch
//! activations) and run the same operations with the same names: `matmul`, `activation`,
//! `softmax`, `output_grad`, `activation_grad`, `sum_columns`, `sgd_update` (see `cpu::ops`
//! and `shaders/`). The training loop only sees this trait.

use crate::error::{config, Result};
use crate::model::{Activation, Model};
use crate::optimizer::Optimizer;

/// All images a run touches (the training file's, then the test file's), as bytes, with labels.
/// Index lists select from it, so nothing is copied per batch.
#[derive(Debug, Clone, Default)]
pub struct ImagePool {
    /// n × 784 bytes, one image after another.
    pub images: Vec<u8>,
    /// n labels, 0..=9.
    pub labels: Vec<u8>,
}

/// The three index lists a backend holds, each a list of positions in the `ImagePool`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum List {
    /// The training samples, in this epoch's order.
    Train,
    Dev,
    Test,
}

/// How long each list is; fixed when a backend is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListSizes {
    pub train: usize,
    pub dev: usize,
    pub test: usize,
}

impl ListSizes {
    pub fn len(&self, list: List) -> usize {
        match list {
            List::Train => self.train,
            List::Dev => self.dev,
            List::Test => self.test,
        }
    }

    /// Where each list starts when the three are stored one after another.
    pub fn offset(&self, list: List) -> usize {
        match list {
            List::Train => 0,
            List::Dev => self.train,
            List::Test => self.train + self.dev,
        }
    }

    pub fn total(&self) -> usize {
        self.train + self.dev + self.test
    }
}

/// Loss and accuracy of the most recent training batch, measured in its forward pass
/// (before that step's update).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchStats {
    pub loss: f64,
    pub accuracy: f64,
}

/// Which kernels take the GPU's wide matrix products (`--matmul`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MatmulKind {
    /// Float32 throughout, on every adapter.
    Plain,
    /// The adapter's cooperative matrices (tensor cores) where it has them: inputs rounded
    /// to f16 (or kept f32 where the adapter multiplies f32 tiles), f32 sums; else plain.
    Coop,
}

/// Which of a backend's two implementations of the step runs (`--path`): the fused one (the
/// whole step in few passes over the batch, block by block), or the reference (one kernel per
/// operation over the whole batch, what the fused ones are checked against).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StepPath {
    Fused,
    Reference,
}

impl StepPath {
    pub fn name(self) -> &'static str {
        match self {
            StepPath::Fused => "fused",
            StepPath::Reference => "reference",
        }
    }
}

/// The optimizer's state (`--checkpoint`): Adam's step count, and per parameter tensor (W1,
/// b1, W2, …, in that order) its moments, each as long as the tensor: none for SGD, the
/// velocity for momentum, M then V for Adam.
#[derive(Debug, Clone, PartialEq)]
pub struct OptimizerState {
    pub steps: u64,
    pub tensors: Vec<Vec<Vec<f32>>>,
}

/// How many steps' statistics a backend keeps for `step_stats`: read them at least this often.
pub const STATS_KEPT: usize = 1024;

/// How far `--augment` moves one image: pixel (r, c) of the shifted image is pixel
/// (r − dy, c − dx) of the original, and 0 (background) where that falls outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Shift {
    pub dx: i8,
    pub dy: i8,
}

pub trait Backend: Send {
    /// What runs the math: "cpu", or the GPU adapter's name and type.
    fn device_name(&self) -> String;

    /// Stores an index list (positions in the image pool). `List::Train` is set again every
    /// epoch with a new order; its length must match `ListSizes`.
    fn set_list(&mut self, list: List, indices: &[u32]) -> Result<()>;

    /// One step of gradient descent on the training samples at positions
    /// `start .. start + len` of the train list: forward, backward, `W -= α·dW`, `b -= α·db`.
    fn train_step(&mut self, start: usize, len: usize, alpha: f32) -> Result<()>;

    /// `train_step` on shifted copies of the batch's images: image j moved by `shifts[j]`
    /// (`augment`, then the same step). The stored images are not changed.
    fn train_step_shifted(
        &mut self,
        start: usize,
        len: usize,
        alpha: f32,
        shifts: &[Shift],
    ) -> Result<()>;

    /// Which implementation of the step runs.
    fn path(&self) -> StepPath;

    /// Why the reference path runs where the fused one was not ruled out (`--path auto`).
    fn path_note(&self) -> Option<String> {
        None
    }

    /// Loss and accuracy of the last `train_step`'s batch (on the GPU, waits for it).
    fn batch_stats(&mut self) -> Result<BatchStats>;

    /// Loss and accuracy of every step since the last call, oldest first: of the last
    /// `STATS_KEPT` of them when there were more. On the GPU, each step writes its own and
    /// this reads them back at once, so steps need no host wait.
    fn step_stats(&mut self) -> Result<Vec<BatchStats>>;

    /// The output layer's logits `Z[L]: (10, n)` for every sample of a list, column-major.
    fn logits(&mut self, list: List) -> Result<Vec<f32>>;

    /// The logits `Z[L]: (10, n)` of `images` (n × 784 bytes), images that are not in the pool
    /// (`serve`'s requests).
    fn classify(&mut self, images: &[u8]) -> Result<Vec<f32>>;

    /// The current weights and biases.
    fn model(&mut self) -> Result<Model>;

    /// Replaces the weights and biases with `model`'s, which must have the same shape.
    fn set_model(&mut self, model: &Model) -> Result<()>;

    /// Chooses the update rule for the following steps (SGD until this is called) and starts
    /// its state afresh (velocities and moments at zero, Adam's step count at 0).
    fn set_optimizer(&mut self, optimizer: Optimizer) -> Result<()>;

    /// The update rule's state, to save.
    fn optimizer_state(&mut self) -> Result<OptimizerState>;

    /// Restores a state `optimizer_state` gave, for the same optimizer and shapes.
    fn set_optimizer_state(&mut self, state: &OptimizerState) -> Result<()>;
}

/// `state` must hold, per parameter tensor of a model of `shapes` (inputs, outputs per layer),
/// `moments` tensors of its length.
pub fn check_optimizer_state(
    shapes: &[(usize, usize)],
    moments: usize,
    state: &OptimizerState,
) -> Result<()> {
    let lengths: Vec<usize> = shapes
        .iter()
        .flat_map(|&(inputs, outputs)| [inputs * outputs, outputs])
        .collect();
    let fits = state.tensors.len() == lengths.len()
        && state
            .tensors
            .iter()
            .zip(&lengths)
            .all(|(t, &len)| t.len() == moments && t.iter().all(|m| m.len() == len));
    if fits {
        Ok(())
    } else {
        config(format!(
            "the optimizer state does not fit: {moments} moment(s) per tensor of lengths {lengths:?} expected"
        ))
    }
}

/// `new` must have the layer sizes (inputs, outputs) and the activation a backend was built
/// for.
pub fn check_same_shape(
    built_for: &[(usize, usize)],
    activation: Activation,
    new: &Model,
) -> Result<()> {
    let sizes: Vec<_> = new.layers.iter().map(|l| (l.inputs, l.outputs)).collect();
    if sizes != built_for || new.activation != activation {
        return config(format!(
            "the model has layers {sizes:?} ({}), but the backend was built for {built_for:?} ({})",
            new.activation.name(),
            activation.name()
        ));
    }
    Ok(())
}

/// Most samples a backend evaluates in one forward pass, when that is more than a training batch.
const EVAL_CHUNK: usize = 4096;

/// How many samples a backend's scratch space holds: the largest training batch, or an
/// evaluation chunk if that is larger, so that evaluating a list takes few passes.
pub fn forward_capacity(train_batch: usize, sizes: ListSizes) -> Result<usize> {
    if train_batch == 0 {
        return config("batch size must be at least 1");
    }
    Ok(train_batch.max(EVAL_CHUNK.min(sizes.dev.max(sizes.test))))
}

/// An index list must have the length it was built with and point inside the pool.
pub fn check_list(sizes: &ListSizes, list: List, indices: &[u32], pool_len: usize) -> Result<()> {
    if indices.len() != sizes.len(list) {
        return config(format!(
            "{list:?} list has {} indices, expected {}",
            indices.len(),
            sizes.len(list)
        ));
    }
    if let Some(&bad) = indices.iter().find(|&&i| i as usize >= pool_len) {
        return config(format!(
            "{list:?} list refers to image {bad}, but there are only {pool_len}"
        ));
    }
    Ok(())
}

/// Images to classify: whole 784-byte images, at least one.
pub fn check_images(images: &[u8]) -> Result<usize> {
    let n = images.len() / crate::data::PIXELS;
    if n == 0 || images.len() % crate::data::PIXELS != 0 {
        return config(format!(
            "{} bytes are not a whole number of 784-pixel images",
            images.len()
        ));
    }
    Ok(n)
}

/// One shift per image of the batch, each within the image.
pub fn check_shifts(shifts: &[Shift], len: usize) -> Result<()> {
    if shifts.len() != len {
        return config(format!(
            "{} shifts for a batch of {len} images",
            shifts.len()
        ));
    }
    let side = crate::data::IMAGE_SIDE as i8;
    if let Some(s) = shifts
        .iter()
        .find(|s| s.dx.abs() >= side || s.dy.abs() >= side)
    {
        return config(format!("shift {s:?} moves the image out of view"));
    }
    Ok(())
}

/// A batch must lie inside the train list and fit the scratch space.
pub fn check_batch(sizes: &ListSizes, capacity: usize, start: usize, len: usize) -> Result<()> {
    if len == 0 || len > capacity || start + len > sizes.train {
        return config(format!(
            "batch {start}..{} does not fit (train list {}, largest batch {capacity})",
            start + len,
            sizes.train
        ));
    }
    Ok(())
}
