//! The seam between the training loop and the hardware: the `Backend` trait, the checks every
//! backend makes of what it is given, and the two names a run chooses between (`StepPath`).
//!
//! The vocabulary both sides of the seam speak lives in neutral files that every backend
//! imports and no backend owns: the images and index lists (`data::pool`), the matrix layout
//! (`layout`), the network (`model`), the update rules and their state (`optimizer`). Neither
//! backend imports the other.
//!
//! ## Design
//! The seam is a whole training step (`train_step`), not an operation (`matmul`,
//! `softmax`, …). Each backend runs the same operations with the same names (`cpu::ops`,
//! `shaders/`, `gpu::kernels`), but the training loop never calls them: it asks for a step
//! and reads statistics back. That is what lets a backend run a fused path behind the trait
//! (the CPU's block-by-block step, the GPU's few-dispatch step) that no sequence of
//! per-operation calls could express, and lets the GPU record many steps before it waits.
//! The per-operation path stays beside each fused one as its reference (`StepPath`).
//! State crosses the seam only where a run needs it: the model and the optimizer's moments
//! (to save and resume), and the logits (to evaluate and classify).

use crate::augment::Warps;
use crate::data::pool::{List, ListSizes, Shift};
use crate::error::{config, Result};
use crate::model::{Activation, Model};
use crate::optimizer::{Optimizer, OptimizerState};

/// Loss and accuracy of the most recent training batch, measured in its forward pass
/// (before that step's update).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchStats {
    pub loss: f64,
    pub accuracy: f64,
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

/// How many steps' statistics a backend keeps for `step_stats`: read them at least this often.
pub const STATS_KEPT: usize = 1024;

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

    /// `train_step` on warped copies of the batch's images: image j warped by `warps`' j-th
    /// affine map and field (`warp`, then the same step). The stored images are not changed.
    fn train_step_warped(
        &mut self,
        start: usize,
        len: usize,
        alpha: f32,
        warps: &Warps,
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

    /// Starts reading the statistics of every step since the last read without waiting for
    /// them (a check between progress lines that must not stall the GPU); `ready_stats` gives
    /// them. The CPU has them at once.
    fn request_stats(&mut self) -> Result<()> {
        Ok(())
    }

    /// The statistics `request_stats` asked for, oldest first, once they are back; None while
    /// the GPU has not reached them. It waits only once more steps are queued behind them (on
    /// the GPU: the next submit), so the GPU never idles for it. A `step_stats` call before
    /// they are back gives them, followed by the later steps'.
    fn ready_stats(&mut self) -> Result<Option<Vec<BatchStats>>> {
        self.step_stats().map(Some)
    }

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

/// Warps keyed for this batch's length, every strength finite, the taps an odd number of at
/// most 57 (a radius of at most 28 pixels).
pub fn check_warps(warps: &Warps, len: usize) -> Result<()> {
    if warps.len != len {
        return config(format!(
            "warps keyed for {} images for a batch of {len}",
            warps.len
        ));
    }
    let taps = warps.taps.len();
    let room = crate::augment::RECORD_WORDS - crate::augment::RECORD_HEADER;
    if taps > room.min(2 * crate::data::IMAGE_SIDE + 1) || (taps != 0 && taps % 2 == 0) {
        return config(format!("{taps} taps for the elastic field's blur"));
    }
    let numbers = warps.strengths.iter().chain(&warps.taps);
    if numbers.chain([&warps.gain]).any(|v| !v.is_finite()) {
        return config("a warp holds a number that is not finite");
    }
    // A scale of 1 or more could draw s = 0: a map of infinities.
    let [rotation, scale, shear, translation] = warps.strengths;
    let within = (0.0..1.0).contains(&scale) && rotation <= std::f32::consts::PI;
    if !within || [rotation, shear, translation].iter().any(|v| *v < 0.0) {
        return config(format!("warp strengths {:?} out of range", warps.strengths));
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
