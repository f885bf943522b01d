//! The training loop: full-batch gradient descent (the tutorials' mode) or mini-batch SGD,
//! progress lines, and the final report. Each step is next batch → step → observe (the loss
//! checked; a progress line, early stopping and a checkpoint when due). Checkpointing is a hook
//! the caller supplies (`Checkpointer`, which `checkpoint::Checkpointing` is), like the
//! progress callback. The dev split and the shifts it trains on come from `data::pool`.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rand::{seq::SliceRandom, RngCore, SeedableRng};
use rand_chacha::ChaCha12Rng;

use crate::augment::{Augment, Warps};
use crate::backend::{Backend, BatchStats};
use crate::data::pool::{draw_shifts, List, Shift, Split};
use crate::data::CLASSES;
use crate::error::{config, Error, Result};
use crate::model::{argmax_columns, confidence_columns, loss_and_correct, Model};
use crate::optimizer::{Optimizer, OptimizerState};
use crate::options::{steps_per_epoch, RunOptions, EPOCHS, ITERATIONS, LOG_EVERY};

/// How to train.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// None: full-batch gradient descent for `iterations` steps. Some(B): mini-batch SGD with
    /// batches of B, reshuffled every epoch, for `epochs` epochs.
    pub batch_size: Option<usize>,
    pub iterations: usize,
    pub epochs: usize,
    pub alpha: f32,
    pub optimizer: Optimizer,
    /// α is multiplied by this after every epoch (in full-batch mode, every iteration).
    pub lr_decay: f32,
    /// Early stopping: stop when the dev loss has not improved for this many evaluations
    /// (one every `log_every` steps), and keep the best model.
    pub patience: Option<usize>,
    /// How training images are distorted, drawn per batch: shifted by up to `MAX_SHIFT`
    /// pixels each way, or warped (`crate::augment`).
    pub augment: Augment,
    /// Print a progress line every this many steps (and after the last).
    pub log_every: usize,
    pub seed: u64,
    /// Set from outside (Ctrl-C) to stop after the current step.
    pub interrupt: Option<Arc<AtomicBool>>,
    /// Told after every step (a progress bar's tick).
    pub on_step: Option<StepHook>,
}

/// Called after every step with the steps done and the steps in all. It must be cheap: it
/// runs between steps, and nothing is read back from the device for it.
#[derive(Clone)]
pub struct StepHook(pub Arc<dyn Fn(usize, usize) + Send + Sync>);

impl std::fmt::Debug for StepHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StepHook")
    }
}

impl Default for Schedule {
    /// The tutorials' run: 500 full-batch steps of plain gradient descent.
    fn default() -> Schedule {
        Schedule {
            batch_size: None,
            iterations: ITERATIONS,
            epochs: EPOCHS,
            alpha: 0.3,
            optimizer: Optimizer::Sgd,
            lr_decay: 1.0,
            patience: None,
            augment: Augment::Off,
            log_every: LOG_EVERY,
            seed: 1,
            interrupt: None,
            on_step: None,
        }
    }
}

/// Every step's loss is checked, when the steps' statistics are read back: at every progress
/// line, and at least this often, so that a diverging run stops soon even when progress is
/// logged rarely. Between progress lines the read does not drain the GPU: there the
/// statistics are copied after the steps submitted so far and taken when they are back, at
/// the latest once the next run of steps (at most 64 on the fused path, one on the reference
/// path) is submitted behind them. The message names the first step whose loss was bad, and
/// the step after which it was noticed (within `DIVERGENCE_NOTICED_WITHIN` steps).
pub const DIVERGENCE_CHECK_EVERY: usize = 200;

/// The most steps after which a bad loss is noticed: a check's interval, and one submit of
/// steps on the GPU's fused path after it.
pub const DIVERGENCE_NOTICED_WITHIN: usize = DIVERGENCE_CHECK_EVERY + 64;

/// A mean cross-entropy above this means the network is confidently wrong about almost every
/// image (a fresh network starts near ln 10 ≈ 2.3): α is far too large. Such a run's weights
/// may well stay finite, with the ReLUs dead and 10% accuracy, so NaN alone is not the test.
pub const DIVERGED_LOSS: f64 = 50.0;

impl Schedule {
    /// The run `options` describe over a training set of `train_len` samples: its defaults
    /// worked out (`RunOptions::resolved`: the length, the progress lines), α and its decay as
    /// the run uses them (f32), the optimizer with its usual constants; no interrupt. The
    /// command line, checkpoints and `serve`'s page all take their run from here.
    pub fn of(options: &RunOptions, train_len: usize) -> Schedule {
        let options = options.clone().resolved(train_len);
        Schedule {
            batch_size: options.batch_size,
            // Only the mode's length is read (`length`).
            iterations: options.iterations.unwrap_or(ITERATIONS),
            epochs: options.epochs.unwrap_or(EPOCHS),
            alpha: options.alpha as f32,
            optimizer: Optimizer::with_defaults(options.optimizer),
            lr_decay: options.lr_decay as f32,
            patience: options.patience,
            augment: options.augment,
            log_every: options.log_every.unwrap_or(LOG_EVERY),
            seed: options.seed,
            interrupt: None,
            on_step: None,
        }
    }

    /// Epochs and steps an epoch over `train_len` samples (full batch: one step an epoch,
    /// `iterations` epochs).
    pub fn length(&self, train_len: usize) -> (usize, usize) {
        match self.batch_size {
            None => (self.iterations, 1),
            Some(_) => (self.epochs, steps_per_epoch(self.batch_size, train_len)),
        }
    }

    /// The epoch step `step` (counted from 1) is in, over `train_len` samples; None in
    /// full-batch mode.
    pub fn epoch_of(&self, step: usize, train_len: usize) -> Option<usize> {
        let per_epoch = self.length(train_len).1;
        self.batch_size.map(|_| step.div_ceil(per_epoch.max(1)))
    }

    /// The largest batch a step will see, for sizing a backend's scratch space.
    pub fn capacity(&self, train_len: usize) -> usize {
        self.batch_size.unwrap_or(train_len).min(train_len).max(1)
    }

    pub fn validate(&self, train_len: usize) -> Result<()> {
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return config(format!(
                "--alpha must be a positive finite number, got {}",
                self.alpha
            ));
        }
        if !(self.lr_decay.is_finite() && self.lr_decay > 0.0 && self.lr_decay <= 1.0) {
            return config(format!(
                "--lr-decay must be in (0, 1], got {}",
                self.lr_decay
            ));
        }
        if let Some(b) = self.batch_size {
            if b == 0 {
                return config("--batch-size must be at least 1");
            }
            if b > train_len {
                return config(format!(
                    "--batch-size {b} is larger than the {train_len} training samples"
                ));
            }
            if self.epochs == 0 {
                return config("--epochs must be at least 1");
            }
        } else if self.iterations == 0 {
            return config("--iterations must be at least 1");
        }
        if self.log_every == 0 {
            return config("--log-every must be at least 1");
        }
        if let Some(problem) = self.augment.problem() {
            return config(problem);
        }
        if self.patience == Some(0) {
            return config("--patience must be at least 1");
        }
        Ok(())
    }
}

/// One progress line.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub step: usize,
    pub steps: usize,
    pub epoch: Option<usize>,
    /// The training batches since the previous line (this line's steps): their mean loss and
    /// accuracy, weighted by batch length, each measured in its step's forward pass (before
    /// that step's update). In full-batch mode, the mean over the iterations since that line.
    pub batch: BatchStats,
    pub dev_accuracy: Option<f64>,
    pub dev_loss: Option<f64>,
    /// The learning rate this step used.
    pub alpha: f32,
    /// Training samples per second so far.
    pub samples_per_second: f64,
}

/// Why training ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// All steps ran.
    Finished,
    /// The dev loss stopped improving; the model is the one from `best_step`.
    EarlyStopped { best_step: usize },
    /// Stopped from outside (Ctrl-C) after `step` finished steps.
    Interrupted,
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct Report {
    /// Steps taken (fewer than planned when stopped early or interrupted).
    pub steps: usize,
    pub ending: Ending,
    pub seconds: f64,
    pub train_samples_per_second: f64,
    /// The training loss of the kept model's progress line (`Progress::batch`): the last
    /// line's, or after early stopping the line of the step whose model was kept.
    pub final_loss: f64,
    /// The kept model's dev and test numbers, evaluated at the end.
    pub dev_accuracy: Option<f64>,
    pub dev_loss: Option<f64>,
    pub dev_predictions: Vec<u8>,
    /// The softmax probability of each dev prediction.
    pub dev_confidence: Vec<f64>,
    pub test_accuracy: Option<f64>,
    pub test_loss: Option<f64>,
    /// Every progress line, in order.
    pub history: Vec<Progress>,
    /// The step of the last checkpoint written, with `--checkpoint`.
    pub checkpointed: Option<usize>,
}

/// How the model does on one list.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub accuracy: f64,
    /// Mean cross-entropy.
    pub loss: f64,
    pub predictions: Vec<u8>,
    /// The softmax probability of each prediction.
    pub confidence: Vec<f64>,
}

/// Accuracy, mean loss and predictions of a list (None for an empty list).
pub fn evaluate(
    backend: &mut dyn Backend,
    split: &Split,
    list: List,
) -> Result<Option<Evaluation>> {
    let labels = split.labels(list);
    if labels.is_empty() {
        return Ok(None);
    }
    let logits = backend.logits(list)?;
    debug_assert_eq!(logits.len(), CLASSES * labels.len());
    let (loss, correct) = loss_and_correct(&logits, &labels);
    Ok(Some(Evaluation {
        accuracy: correct as f64 / labels.len() as f64,
        loss,
        predictions: argmax_columns(&logits),
        confidence: confidence_columns(&logits),
    }))
}

/// Where a run stands between two steps: everything beside the model and the optimizer's
/// state that the following steps depend on. A checkpoint saves it (`checkpoint.rs`), and a run
/// resumed from one continues exactly as if it had never stopped.
#[derive(Debug, Clone)]
pub struct RunState {
    /// Steps done in all; the epoch in progress (from 0; in full-batch mode every iteration is
    /// an epoch) and the steps done in it.
    pub step: usize,
    pub epoch: usize,
    pub position: usize,
    /// The learning rate of the next step.
    pub alpha: f32,
    /// This epoch's order of the training samples (positions in the image pool).
    pub order: Vec<u32>,
    /// The random streams: the epochs' shuffles, and `--augment`'s (its shifts or warps).
    pub shuffle: ChaCha12Rng,
    pub augment: ChaCha12Rng,
    /// Early stopping: the best dev loss so far, its step and model, and evaluations since.
    pub best: Option<(f64, usize, Model)>,
    pub since_best: usize,
    /// Set when the run stopped early (at the step of its best model): nothing follows.
    pub stopped_early: Option<usize>,
    /// Every progress line so far.
    pub history: Vec<Progress>,
    /// The steps since the last progress line, whose mean the next one reports.
    pub window: Window,
}

/// Sums over the steps since the last progress line: each step's loss and accuracy times its
/// batch length, and the lengths, so that the mean weighs every sample alike.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Window {
    pub loss: f64,
    pub correct: f64,
    pub samples: usize,
}

impl Window {
    /// One more step: its statistics, on a batch of `len` samples.
    pub fn add(&mut self, stats: BatchStats, len: usize) {
        self.loss += stats.loss * len as f64;
        self.correct += stats.accuracy * len as f64;
        self.samples += len;
    }

    /// The mean loss and accuracy per sample, and the window emptied (None if it was empty).
    pub fn take_mean(&mut self) -> Option<BatchStats> {
        let Window {
            loss,
            correct,
            samples,
        } = std::mem::take(self);
        let n = samples as f64;
        (samples > 0).then(|| BatchStats {
            loss: loss / n,
            accuracy: correct / n,
        })
    }
}

impl RunState {
    /// The state before the first step.
    pub fn start(split: &Split, schedule: &Schedule) -> RunState {
        RunState {
            step: 0,
            epoch: 0,
            position: 0,
            alpha: schedule.alpha,
            order: split.train.clone(),
            // Streams apart from the dev split's, which uses `seed` itself.
            shuffle: ChaCha12Rng::seed_from_u64(schedule.seed.wrapping_add(1)),
            augment: ChaCha12Rng::seed_from_u64(schedule.seed.wrapping_add(2)),
            best: None,
            since_best: 0,
            stopped_early: None,
            history: Vec::new(),
            window: Window::default(),
        }
    }
}

/// Trains `backend` (already holding the model) on `split`, calling `on_progress` every
/// `log_every` steps.
pub fn train(
    backend: &mut dyn Backend,
    split: &Split,
    schedule: &Schedule,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<Report> {
    train_from(
        backend,
        split,
        schedule,
        RunState::start(split, schedule),
        None,
        on_progress,
        None,
    )
}

/// Where the run's state goes as it trains (`--checkpoint`): a hook of the loop, beside the
/// progress callback. Before it hands the state over after a step, the loop reads that step's
/// statistics, so a diverged run stops before its state is saved.
pub trait Checkpointer {
    /// Whether the state after step `step` (counted from 1) is wanted.
    fn due_after_step(&self, step: usize) -> bool;
    /// Whether the state at the end of every epoch is wanted.
    fn due_at_epoch_end(&self) -> bool;
    /// Saves `state` with the backend's model and optimizer state.
    fn save(&mut self, backend: &mut dyn Backend, state: &RunState) -> Result<()>;
}

/// `train` from `state`: from the start, or where a checkpoint left a run. With `optimizer`
/// (a checkpoint's), the backend's optimizer continues from that state instead of afresh.
/// With `checkpointer`, the whole state is handed to it every so often, and at the end.
pub fn train_from(
    backend: &mut dyn Backend,
    split: &Split,
    schedule: &Schedule,
    mut state: RunState,
    optimizer: Option<&OptimizerState>,
    on_progress: &mut dyn FnMut(&Progress),
    checkpointer: Option<&mut dyn Checkpointer>,
) -> Result<Report> {
    prepare(backend, split, schedule, &state, optimizer)?;
    let mut run = Run::new(backend, split, schedule, on_progress, checkpointer);
    let mut ending = match state.stopped_early {
        Some(best_step) => Ending::EarlyStopped { best_step },
        None => Ending::Finished,
    };
    'epochs: while state.epoch < run.epochs && state.stopped_early.is_none() {
        while state.position < run.steps_per_epoch {
            if run.interrupted() {
                ending = Ending::Interrupted;
                break 'epochs;
            }
            run.step(&mut state)?;
            if let Some(stop) = run.observe(&mut state)? {
                ending = stop;
                break 'epochs;
            }
        }
        run.end_epoch(&mut state)?;
    }
    run.finish(state, ending)
}

/// Checks that `state` fits the training set and hands the backend the optimizer (and its
/// state, when resuming) and the dev and test lists.
fn prepare(
    backend: &mut dyn Backend,
    split: &Split,
    schedule: &Schedule,
    state: &RunState,
    optimizer: Option<&OptimizerState>,
) -> Result<()> {
    let n = split.train.len();
    schedule.validate(n)?;
    if schedule.patience.is_some() && split.dev.is_empty() {
        return config("--patience watches the dev loss, so it needs --dev-size of at least 1");
    }
    if state.order.len() != n {
        return config(format!(
            "the run's order holds {} samples, but the training set {n}",
            state.order.len()
        ));
    }
    backend.set_optimizer(schedule.optimizer)?;
    if let Some(saved) = optimizer {
        backend.set_optimizer_state(saved)?;
    }
    // Statistics of earlier steps are not this run's.
    backend.step_stats()?;
    backend.set_list(List::Dev, &split.dev)?;
    backend.set_list(List::Test, &split.test)
}

/// The loop at work: what it trains with, and what it counts as it goes.
struct Run<'a, 'c> {
    backend: &'a mut dyn Backend,
    split: &'a Split,
    schedule: &'a Schedule,
    on_progress: &'a mut dyn FnMut(&Progress),
    checkpointer: Option<&'a mut (dyn Checkpointer + 'c)>,
    /// The largest batch, the run's length (epochs of steps) and the steps in all.
    batch: usize,
    epochs: usize,
    steps_per_epoch: usize,
    steps: usize,
    /// This batch's shifts (`--augment`), or its warps (`--augment affine|elastic`).
    shifts: Vec<Shift>,
    warps: Option<Warps>,
    /// This session's samples and start, for the throughput.
    samples: usize,
    started: Instant,
    /// The step of the last checkpoint written.
    checkpointed: Option<usize>,
    /// A resumed run starts with the list of its epoch; a fresh one shuffles it first.
    list_set: bool,
    /// The batch lengths of the steps whose statistics are not read yet, oldest first.
    unread: Vec<usize>,
    /// The statistics asked for without waiting (`Backend::request_stats`), not back yet: the
    /// step they end with and their batch lengths.
    requested: Option<(usize, Vec<usize>)>,
}

impl<'a, 'c> Run<'a, 'c> {
    fn new(
        backend: &'a mut dyn Backend,
        split: &'a Split,
        schedule: &'a Schedule,
        on_progress: &'a mut dyn FnMut(&Progress),
        checkpointer: Option<&'a mut (dyn Checkpointer + 'c)>,
    ) -> Run<'a, 'c> {
        let n = split.train.len();
        let batch = schedule.capacity(n);
        let (epochs, steps_per_epoch) = schedule.length(n);
        Run {
            backend,
            split,
            schedule,
            on_progress,
            checkpointer,
            batch,
            epochs,
            steps_per_epoch,
            steps: epochs * steps_per_epoch,
            shifts: Vec::with_capacity(batch),
            warps: Warps::new(&schedule.augment),
            samples: 0,
            started: Instant::now(),
            checkpointed: None,
            list_set: false,
            unread: Vec::new(),
            requested: None,
        }
    }

    /// Whether the run was stopped from outside (Ctrl-C).
    fn interrupted(&self) -> bool {
        self.schedule
            .interrupt
            .as_ref()
            .is_some_and(|stop| stop.load(Ordering::Relaxed))
    }

    /// The next batch, and one step on it.
    fn step(&mut self, state: &mut RunState) -> Result<()> {
        // A mini-batch epoch's order is drawn with its first step, so that a checkpoint holds
        // either an epoch not begun or the order it began with.
        if state.position == 0 && self.schedule.batch_size.is_some() {
            state.order.shuffle(&mut state.shuffle);
            self.list_set = false;
        }
        if !self.list_set {
            self.backend.set_list(List::Train, &state.order)?;
            self.list_set = true;
        }
        let (n, s) = (self.split.train.len(), state.position);
        let (start, len) = match self.schedule.batch_size {
            None => (0, n),
            Some(_) => (s * self.batch, self.batch.min(n - s * self.batch)),
        };
        match self.schedule.augment {
            Augment::Off => self.backend.train_step(start, len, state.alpha)?,
            Augment::Shift => {
                draw_shifts(&mut state.augment, len, &mut self.shifts);
                let shifts = &self.shifts;
                self.backend
                    .train_step_shifted(start, len, state.alpha, shifts)?;
            }
            Augment::Affine(_) | Augment::Elastic(_) => {
                let warps = self.warps.as_mut().expect("made for a warped run");
                // The step's key: one draw of the stream a step, whatever the batch's size.
                warps.for_batch(state.augment.next_u64(), len);
                self.backend
                    .train_step_warped(start, len, state.alpha, warps)?;
            }
        }
        self.samples += len;
        self.unread.push(len);
        state.step += 1;
        state.position += 1;
        if let Some(StepHook(tick)) = &self.schedule.on_step {
            tick(state.step, self.steps);
        }
        Ok(())
    }

    /// After a step: the loss checked, a progress line (with early stopping's count) and a
    /// checkpoint when they are due. Some(ending) when the run stops early.
    fn observe(&mut self, state: &mut RunState) -> Result<Option<Ending>> {
        let step = state.step;
        let log = step.is_multiple_of(self.schedule.log_every) || step == self.steps;
        let save = self
            .checkpointer
            .as_ref()
            .is_some_and(|c| c.due_after_step(step));
        if !log && !save {
            if step.is_multiple_of(DIVERGENCE_CHECK_EVERY) && self.requested.is_none() {
                self.backend.request_stats()?;
                self.requested = Some((step, std::mem::take(&mut self.unread)));
            }
            if self.requested.is_some() {
                self.take_ready_stats(state)?;
            }
            return Ok(None);
        }
        self.read_stats(state)?;
        if log {
            let Some(mean) = state.window.take_mean() else {
                return Err(Error::Config(format!("no statistics for step {step}")));
            };
            let dev = self.progress(state, mean)?;
            if let Some(stop) = self.early_stop(state, dev)? {
                return Ok(Some(stop));
            }
        }
        if save {
            self.checkpoint(state)?;
        }
        Ok(None)
    }

    /// Reads the statistics of the steps since the last read: each loss checked, each added
    /// to the window of the next progress line.
    /// (Those asked for without waiting come first.)
    fn read_stats(&mut self, state: &mut RunState) -> Result<()> {
        let stats = self.backend.step_stats()?;
        let mut lens = self.requested.take().map(|r| r.1).unwrap_or_default();
        lens.append(&mut self.unread);
        add_stats(state, &stats, &lens, state.step, state.step)
    }

    /// The statistics asked for without waiting, if they are back.
    fn take_ready_stats(&mut self, state: &mut RunState) -> Result<()> {
        let Some(stats) = self.backend.ready_stats()? else {
            return Ok(());
        };
        let (last, lens) = self.requested.take().unwrap_or_default();
        add_stats(state, &stats, &lens, last, state.step)
    }

    /// Evaluates the dev set and reports a progress line; returns the dev evaluation.
    fn progress(&mut self, state: &mut RunState, stats: BatchStats) -> Result<Option<Evaluation>> {
        let dev = evaluate(self.backend, self.split, List::Dev)?;
        let seconds = self.started.elapsed().as_secs_f64().max(1e-9);
        let progress = Progress {
            step: state.step,
            steps: self.steps,
            epoch: self.schedule.batch_size.map(|_| state.epoch + 1),
            batch: stats,
            dev_accuracy: dev.as_ref().map(|d| d.accuracy),
            dev_loss: dev.as_ref().map(|d| d.loss),
            alpha: state.alpha,
            samples_per_second: self.samples as f64 / seconds,
        };
        state.history.push(progress);
        (self.on_progress)(&progress);
        Ok(dev)
    }

    /// Early stopping: keeps the best model so far; after `patience` evaluations without a
    /// better dev loss, the backend goes back to it and the run stops.
    fn early_stop(
        &mut self,
        state: &mut RunState,
        dev: Option<Evaluation>,
    ) -> Result<Option<Ending>> {
        let (Some(patience), Some(dev)) = (self.schedule.patience, dev) else {
            return Ok(None);
        };
        if state.best.as_ref().is_none_or(|b| dev.loss < b.0) {
            state.best = Some((dev.loss, state.step, self.backend.model()?));
            state.since_best = 0;
            return Ok(None);
        }
        state.since_best += 1;
        if state.since_best < patience {
            return Ok(None);
        }
        let (_, best_step, model) = state.best.take().expect("a best model");
        self.backend.set_model(&model)?;
        state.stopped_early = Some(best_step);
        Ok(Some(Ending::EarlyStopped { best_step }))
    }

    /// Hands the state to the checkpointer, if any, after reading the steps' statistics (a
    /// diverged run is not saved; the window it holds is whole). One that cannot be written (a
    /// full disk) leaves the previous one and a warning: the run goes on.
    fn checkpoint(&mut self, state: &mut RunState) -> Result<()> {
        if self.checkpointer.is_none() {
            return Ok(());
        }
        if !self.unread.is_empty() || self.requested.is_some() {
            self.read_stats(state)?;
        }
        let Some(checkpointer) = self.checkpointer.as_deref_mut() else {
            return Ok(());
        };
        match checkpointer.save(&mut *self.backend, state) {
            Ok(()) => self.checkpointed = Some(state.step),
            // Written, not eprintln!: stderr may be a pipe whose reader is gone.
            Err(e) => {
                let _ = writeln!(
                    std::io::stderr(),
                    "warning: no checkpoint after step {}: {e}; the run goes on",
                    state.step
                );
            }
        }
        Ok(())
    }

    /// The end of an epoch: α decays, and the checkpoint at every epoch's end is written.
    fn end_epoch(&mut self, state: &mut RunState) -> Result<()> {
        state.alpha *= self.schedule.lr_decay;
        state.epoch += 1;
        state.position = 0;
        if self
            .checkpointer
            .as_ref()
            .is_some_and(|c| c.due_at_epoch_end())
        {
            self.checkpoint(state)?;
        }
        Ok(())
    }

    /// The last checkpoint (a Ctrl-C, the last step, or the early stop) and the report.
    fn finish(mut self, mut state: RunState, ending: Ending) -> Result<Report> {
        let seconds = self.started.elapsed().as_secs_f64();
        let model = self.backend.model()?;
        if !model.is_finite() {
            return Err(diverged(state.step, "the weights are no longer finite"));
        }
        self.checkpoint(&mut state)?;
        let dev = evaluate(self.backend, self.split, List::Dev)?;
        let test = evaluate(self.backend, self.split, List::Test)?;
        let dev_accuracy = dev.as_ref().map(|d| d.accuracy);
        let dev_loss = dev.as_ref().map(|d| d.loss);
        let (dev_predictions, dev_confidence) = dev
            .map(|d| (d.predictions, d.confidence))
            .unwrap_or_default();
        Ok(Report {
            steps: state.step,
            ending,
            seconds,
            train_samples_per_second: self.samples as f64 / seconds.max(1e-9),
            final_loss: kept_loss(&state.history, ending),
            dev_accuracy,
            dev_loss,
            dev_predictions,
            dev_confidence,
            test_accuracy: test.as_ref().map(|t| t.accuracy),
            test_loss: test.map(|t| t.loss),
            history: state.history,
            checkpointed: self.checkpointed,
        })
    }
}

/// The training loss of the kept model's line: the last, or after early stopping the best
/// step's (early stopping keeps models only at progress lines).
fn kept_loss(history: &[Progress], ending: Ending) -> f64 {
    let line = match ending {
        Ending::EarlyStopped { best_step } => history.iter().rfind(|p| p.step == best_step),
        _ => history.last(),
    };
    line.map_or(f64::NAN, |p| p.batch.loss)
}

/// Checks and adds to the window `stats`, those of the steps ending with step `last` (of
/// `lens` samples each), read after step `noticed`.
fn add_stats(
    state: &mut RunState,
    stats: &[BatchStats],
    lens: &[usize],
    last: usize,
    noticed: usize,
) -> Result<()> {
    // The backend keeps the last STATS_KEPT; reads come more often than that.
    let lens = &lens[lens.len().saturating_sub(stats.len())..];
    for (i, (&s, &len)) in stats.iter().zip(lens).enumerate() {
        check_loss(s.loss, last + 1 + i - stats.len(), noticed)?;
        state.window.add(s, len);
    }
    Ok(())
}

fn check_loss(loss: f64, step: usize, noticed: usize) -> Result<()> {
    if loss.is_finite() && loss <= DIVERGED_LOSS {
        Ok(())
    } else {
        let what = format!("the batch loss is {loss:.4e} (noticed after step {noticed})");
        Err(diverged(step, &what))
    }
}

fn diverged(step: usize, what: &str) -> Error {
    Error::Diverged(format!(
        "training diverged by step {step}: {what}; try a smaller --alpha"
    ))
}
