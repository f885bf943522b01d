//! The numbers a progress line shows, computed on the device by the project's own kernels,
//! for an executor that runs no Rust (`serve`'s page): natively the training loop computes them
//! from what it reads back (`train::Window`, `model::loss_and_correct`); the page runs these
//! recordings instead, so that it holds no formula of its own.
//!
//! - the window: every read of the steps' statistics copies their (loss, correct) sums from the
//!   history ring into a buffer of the window's steps; at a progress line `sum_partials` adds
//!   them, scaled by 1/samples: the mean loss and accuracy since the last line;
//! - a list's score: `output_grad` over its logits (its per-sample loss and correct, from the
//!   labels through the index list), `sum_columns` and `sum_partials` scaled by 1/n;
//! - the probabilities of classified images: `softmax` over their logits.

use crate::backend::STATS_KEPT;
use crate::data::CLASSES;
use crate::error::{config, Result};
use crate::gpu::kernels::{column_chunks, Bound, Kernels, Recorder, Uniforms};
use crate::gpu::recording::{Buf, Region, Tape};
use crate::gpu::Data;

/// Which figure a region holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Figure {
    /// Mean (loss, accuracy) of the steps since the last progress line.
    Window,
    /// (loss, accuracy) of the dev list, and of the test list.
    Dev,
    Test,
}

/// A list's scoring: its per-sample stats and their mean.
struct Score {
    grad: Bound,
    columns: Bound,
    sum: Bound,
    out: Buf,
}

pub struct Figures {
    uniforms: Uniforms,
    /// (loss, correct) sums of the window's steps, two floats a step, for `window_steps` steps.
    window: Buf,
    window_steps: usize,
    /// Steps copied in, and their samples.
    filled: usize,
    samples: usize,
    window_mean: Bound,
    window_out: Buf,
    dev: Score,
    test: Score,
    /// softmax of the logits of classified images.
    probabilities: Buf,
    softmax: Bound,
}

impl Figures {
    /// Buffers and bindings for windows of up to `window_steps` steps and lists of up to
    /// `list` samples, whose logits are in `logits` (and the probabilities of up to `list`
    /// classified images).
    pub fn new(
        tape: &mut Tape,
        k: &Kernels,
        data: Data,
        logits: Buf,
        list: usize,
        window_steps: usize,
    ) -> Result<Figures> {
        let mut uniforms = Uniforms::new(tape, 8)?;
        let u = &mut uniforms;
        let window = tape.storage("the window's steps' sums", 8 * window_steps.max(1) as u64)?;
        let window_out = tape.storage("the window's mean", 8)?;
        let window_mean = k.sum_partials.bind(tape, u, &[window, window_out]);
        let dz = tape.storage("scored list's dZ (unused)", 4 * (CLASSES * list) as u64)?;
        let stats = tape.storage("scored list's loss and correct", 8 * list as u64)?;
        let partials =
            tape.storage("scored list's partial sums", 8 * column_chunks(list) as u64)?;
        let mut score = |tape: &mut Tape, what: &str| -> Result<Score> {
            let out = tape.storage(what, 8)?;
            // A is read only for dZ, which scoring leaves unused: the logits stand in.
            let buffers = [logits, logits, data.labels, data.indices, dz, stats];
            Ok(Score {
                grad: k.output_grad.bind(tape, u, &buffers),
                columns: k.sum_columns.bind(tape, u, &[stats, partials]),
                sum: k.sum_partials.bind(tape, u, &[partials, out]),
                out,
            })
        };
        let dev = score(tape, "the dev list's score")?;
        let test = score(tape, "the test list's score")?;
        let probabilities = tape.storage("probabilities", 4 * (CLASSES * list) as u64)?;
        let softmax = k.softmax.bind(tape, u, &[logits, probabilities]);
        Ok(Figures {
            uniforms,
            window,
            window_steps,
            filled: 0,
            samples: 0,
            window_mean,
            window_out,
            dev,
            test,
            probabilities,
            softmax,
        })
    }

    /// Copies the sums of the last `count` of `recorded` steps from the history ring into the
    /// window (`batch`: each ring slot's batch size), and submits.
    pub fn copy_steps(
        &mut self,
        tape: &mut Tape,
        history: Buf,
        (recorded, count): (usize, usize),
        batch: &[usize],
    ) -> Result<()> {
        if count == 0 {
            return Ok(());
        }
        if self.filled + count > self.window_steps {
            return config(format!(
                "the window between progress lines holds {} steps, not {}",
                self.window_steps,
                self.filled + count
            ));
        }
        let mut step = recorded - count;
        while step < recorded {
            let slot = step % STATS_KEPT;
            // Up to the ring's end at most.
            let n = (recorded - step).min(STATS_KEPT - slot);
            tape.copy(
                history,
                8 * slot as u64,
                self.window,
                8 * self.filled as u64,
                8 * n as u64,
            );
            self.samples += (slot..slot + n).map(|s| batch[s]).sum::<usize>();
            self.filled += n;
            step += n;
        }
        tape.submit();
        Ok(())
    }

    /// The window's mean into its figure, and the window emptied (nothing where it is empty).
    pub fn window_mean(&mut self, tape: &mut Tape, k: &Kernels) {
        if self.filled == 0 {
            return;
        }
        let mut rec = Recorder::new(tape, &mut self.uniforms);
        let scale = 1.0 / self.samples as f32;
        k.sum_partials(&mut rec, &self.window_mean, 2, self.filled as u32, scale);
        rec.submit();
        self.filled = 0;
        self.samples = 0;
    }

    /// The loss and accuracy of the `n` samples listed from position `first`, whose logits
    /// are in the logits buffer, into `figure` (Dev or Test).
    pub fn score(&mut self, tape: &mut Tape, k: &Kernels, figure: Figure, first: usize, n: usize) {
        if n == 0 {
            return;
        }
        let score = match figure {
            Figure::Test => &self.test,
            _ => &self.dev,
        };
        let mut rec = Recorder::new(tape, &mut self.uniforms);
        k.output_grad(&mut rec, &score.grad, CLASSES, n, first as u32);
        k.sum_columns(&mut rec, &score.columns, &score.sum, 2, n, 1.0 / n as f32);
        rec.submit();
    }

    /// The probabilities of `m` classified images, from their logits.
    pub fn probabilities(&mut self, tape: &mut Tape, k: &Kernels, m: usize) {
        let mut rec = Recorder::new(tape, &mut self.uniforms);
        k.softmax(&mut rec, &self.softmax, CLASSES, m);
        rec.submit();
    }

    /// Where a figure lies: two floats, (loss, accuracy).
    pub fn region(&self, figure: Figure) -> Region {
        let buffer = match figure {
            Figure::Window => self.window_out,
            Figure::Dev => self.dev.out,
            Figure::Test => self.test.out,
        };
        Region {
            buffer,
            offset: 0,
            bytes: 8,
        }
    }

    /// Where the probabilities of `m` classified images lie: (10, m).
    pub fn probabilities_region(&self, m: usize) -> Region {
        Region {
            buffer: self.probabilities,
            offset: 0,
            bytes: 4 * (CLASSES * m) as u64,
        }
    }
}
