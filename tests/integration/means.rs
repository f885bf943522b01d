//! Numbers that say what they mean: a progress line (and so `--metrics` and `--plot`) shows
//! the mean training loss and accuracy over its steps, weighted by batch length, not the last
//! (often short) batch; the mean survives a checkpoint written between two lines; the dev
//! loss is shown beside the dev accuracy; after early stopping `final_loss` is the kept
//! model's; the per-step hook (the progress bar's tick) runs after every step.

use crate::common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use mnist_gpu::backend::BatchStats;
use mnist_gpu::checkpoint::{self, Checkpointing, FileId};
use mnist_gpu::cpu::CpuBackend;
use mnist_gpu::data::pool::{List, Split};
use mnist_gpu::model::{Activation, Init, Model};
use mnist_gpu::options::{Every, RunOptions};
use mnist_gpu::train::{self, Ending, Progress, Report, RunState, Schedule, StepHook};

use crate::common::output::{assert_success, json_summary, run_in, stdout};

/// 300 training samples: batches of 64 leave a last batch of 44.
fn split() -> Split {
    Split::new(&common::random_dataset(400, 5), None, 100, 2).unwrap()
}

fn cpu(split: &Split, schedule: &Schedule) -> CpuBackend {
    let model = Model::new(&[16], Activation::Relu, Init::He, 1).unwrap();
    let capacity = schedule.capacity(split.train.len());
    CpuBackend::new(&model, split.pool.clone(), split.sizes(), capacity).unwrap()
}

fn run(split: &Split, schedule: &Schedule) -> Report {
    let mut backend = cpu(split, schedule);
    train::train(&mut backend, split, schedule, &mut |_| {}).unwrap()
}

/// The batch length of step `step` (from 1) of `schedule` over `n` samples.
fn batch_len(schedule: &Schedule, n: usize, step: usize) -> usize {
    match schedule.batch_size {
        None => n,
        Some(b) => {
            let per_epoch = n.div_ceil(b);
            let position = (step - 1) % per_epoch;
            b.min(n - position * b)
        }
    }
}

/// Each line of a run logged every `every` steps against the mean, computed here, of the
/// same run's steps logged one by one.
fn check_means(schedule: Schedule, every: usize) {
    let split = split();
    let n = split.train.len();
    let each = run(
        &split,
        &Schedule {
            log_every: 1,
            ..schedule.clone()
        },
    );
    let steps: Vec<BatchStats> = each.history.iter().map(|p| p.batch).collect();
    let logged = run(
        &split,
        &Schedule {
            log_every: every,
            ..schedule.clone()
        },
    );
    assert_eq!(each.steps, logged.steps);
    let mut from = 0;
    for line in &logged.history {
        let (mut loss, mut correct, mut samples) = (0.0, 0.0, 0usize);
        for step in from + 1..=line.step {
            let len = batch_len(&schedule, n, step);
            loss += steps[step - 1].loss * len as f64;
            correct += steps[step - 1].accuracy * len as f64;
            samples += len;
        }
        let (loss, accuracy) = (loss / samples as f64, correct / samples as f64);
        let what = format!("every {every}: the line at step {}", line.step);
        assert!(
            (line.batch.loss - loss).abs() <= 1e-12 * loss,
            "{what}: loss {} but the mean of steps {}..={} is {loss}",
            line.batch.loss,
            from + 1,
            line.step
        );
        assert!(
            (line.batch.accuracy - accuracy).abs() <= 1e-12,
            "{what}: accuracy {} but the mean is {accuracy}",
            line.batch.accuracy
        );
        from = line.step;
    }
}

#[test]
fn mini_batch_lines_show_the_mean_of_their_steps() {
    let schedule = Schedule {
        batch_size: Some(64),
        epochs: 3,
        alpha: 0.1,
        ..Schedule::default()
    };
    // Once an epoch (5 steps, the last of 44 samples), and across epochs' ends.
    check_means(schedule.clone(), 5);
    check_means(schedule, 4);
}

#[test]
fn full_batch_lines_show_the_mean_of_their_iterations() {
    let schedule = Schedule {
        iterations: 10,
        alpha: 0.3,
        ..Schedule::default()
    };
    check_means(schedule, 4);
}

/// A checkpoint written between two lines holds the sums of the steps since the last line:
/// the run resumed from it shows the same lines, bit for bit.
#[test]
fn a_checkpoint_between_lines_resumes_the_same_means() {
    let split = split();
    let dir = tempfile::tempdir().unwrap();
    let (path, copy) = (
        dir.path().join("c.safetensors"),
        dir.path().join("copy.safetensors"),
    );
    let schedule = Schedule {
        batch_size: Some(64),
        epochs: 3,
        alpha: 0.1,
        log_every: 5,
        ..Schedule::default()
    };
    let mut checkpointing = Checkpointing {
        path: path.clone(),
        options: RunOptions {
            checkpoint_every: Some(Every::Steps(3)),
            ..RunOptions::default()
        },
        train_file: FileId::of_bytes("random", &[&split.pool.images]),
    };
    // At the line of step 5 the file is the checkpoint after step 3, two steps into the line.
    let mut on_progress = |p: &Progress| {
        if p.step == 5 {
            std::fs::copy(&path, &copy).unwrap();
        }
    };
    let mut whole_backend = cpu(&split, &schedule);
    let whole = train::train_from(
        &mut whole_backend,
        &split,
        &schedule,
        RunState::start(&split, &schedule),
        None,
        &mut on_progress,
        Some(&mut checkpointing),
    )
    .unwrap();
    let saved = checkpoint::load(&copy).unwrap();
    assert_eq!(saved.state.step, 3);
    assert_eq!(
        saved.state.window.samples,
        3 * 64,
        "the sums of steps 1 to 3"
    );
    let mut resumed_backend =
        CpuBackend::new(&saved.model, split.pool.clone(), split.sizes(), 64).unwrap();
    let resumed = train::train_from(
        &mut resumed_backend,
        &split,
        &schedule,
        saved.state,
        Some(&saved.optimizer),
        &mut |_| {},
        None,
    )
    .unwrap();
    let bits = |r: &Report| {
        let lines = r.history.iter().map(|p| (p.step, p.batch.loss.to_bits()));
        lines.collect::<Vec<_>>()
    };
    assert_eq!(bits(&resumed), bits(&whole));
}

#[test]
fn after_early_stopping_final_loss_is_the_kept_models() {
    let split = split();
    // Random labels: the dev loss soon rises while the training loss keeps falling.
    let schedule = Schedule {
        batch_size: Some(30),
        epochs: 200,
        alpha: 0.2,
        patience: Some(3),
        log_every: 10,
        ..Schedule::default()
    };
    let report = run(&split, &schedule);
    let Ending::EarlyStopped { best_step } = report.ending else {
        panic!("ran to the end: {:?}", report.ending);
    };
    let best = report.history.iter().find(|p| p.step == best_step).unwrap();
    let last = report.history.last().unwrap();
    assert_ne!(
        best.batch.loss, last.batch.loss,
        "the test needs two losses"
    );
    assert_eq!(report.final_loss, best.batch.loss);
    assert_eq!(report.dev_loss, best.dev_loss);
    assert_eq!(report.dev_accuracy, best.dev_accuracy);
}

#[test]
fn the_step_hook_runs_after_every_step() {
    let split = split();
    let ticks = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let counted = ticks.clone();
    let schedule = Schedule {
        batch_size: Some(64),
        epochs: 3,
        alpha: 0.1,
        interrupt: Some(stop),
        on_step: Some(StepHook(Arc::new(move |step, steps| {
            assert_eq!(steps, 15);
            // Steps come one at a time, in order.
            assert_eq!(counted.fetch_add(1, Ordering::SeqCst) + 1, step);
        }))),
        ..Schedule::default()
    };
    let report = run(&split, &schedule);
    assert_eq!(report.steps, 15);
    assert_eq!(ticks.load(Ordering::SeqCst), 15);
}

/// Through the binary: the CSV's header names its means, the progress line shows the dev loss,
/// and `--json`'s `final_loss` is the kept model's line's.
#[test]
fn the_binary_reports_means_the_dev_loss_and_the_kept_loss() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    mnist_gpu::data::write_csv(&common::random_dataset(400, 5), &d.join("t.csv"), true).unwrap();
    let out = run_in(
        d,
        &[
            "--train",
            "t.csv",
            "--test",
            "none",
            "--dev-size",
            "100",
            "--backend",
            "cpu",
            "--batch-size",
            "30",
            "--epochs",
            "200",
            "--alpha",
            "0.2",
            "--patience",
            "3",
            "--log-every",
            "10",
            "--metrics",
            "m.csv",
            "--json",
        ],
    );
    assert_success(&out);
    let text = std::fs::read_to_string(d.join("m.csv")).unwrap();
    let mut rows = text.lines();
    assert_eq!(
        rows.next().unwrap(),
        "step,epoch,alpha,train_loss_mean,train_accuracy_mean,dev_loss,dev_accuracy,\
         samples_per_second"
    );
    let printed = stdout(&out);
    let line = printed.lines().find(|l| l.contains("step ")).unwrap();
    assert!(
        line.contains("train loss ") && line.contains("dev loss ") && line.contains("dev acc "),
        "{line}"
    );
    let best: usize = printed
        .split("keeping step ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no early stop in {printed}"));
    let row: Vec<&str> = rows
        .map(|r| r.split(',').collect::<Vec<_>>())
        .find(|r| r[0] == best.to_string())
        .unwrap();
    let kept: f64 = row[3].parse().unwrap();
    let summary = json_summary(&out);
    assert_eq!(summary["final_loss"].as_f64(), Some(kept), "{summary}");
    assert_eq!(
        summary["dev_loss"].as_f64(),
        row[5].parse().ok(),
        "{summary}"
    );
}

/// The numbers of a progress line as the GPU backend computes them on the device for `serve`'s
/// page (`gpu::figures`: the window's mean from the history ring, the dev list's loss and
/// accuracy from its logits), read back natively at each line, against the line the loop made
/// from what it read back: on the fused and the per-operation engines, mini-batch with a short
/// last batch and progress lines across epochs, and full batch.
#[test]
fn the_pages_figures_on_the_device_are_the_loops_numbers() {
    use mnist_gpu::gpu::GpuBackend;
    let ctx = Arc::new(common::gpu());
    let split = split();
    for (hidden, path, batch, every) in [
        (16, mnist_gpu::backend::StepPath::Fused, Some(64), 3),
        (16, mnist_gpu::backend::StepPath::Reference, Some(64), 7),
        (80, mnist_gpu::backend::StepPath::Reference, None, 2),
    ] {
        let schedule = Schedule {
            batch_size: batch,
            iterations: 6,
            epochs: 4,
            alpha: 0.1,
            log_every: every,
            ..Schedule::default()
        };
        let model = Model::new(&[hidden], Activation::Relu, Init::He, 1).unwrap();
        let capacity = schedule.capacity(split.train.len());
        let sizes = split.sizes();
        let mut gpu = GpuBackend::with_path(
            ctx.clone(),
            &model,
            &split.pool,
            sizes,
            capacity,
            Some(path),
        )
        .unwrap();
        gpu.keep_figures(every).unwrap();
        let mut watching = Figures {
            gpu,
            seen: Vec::new(),
        };
        let report = train::train(&mut watching, &split, &schedule, &mut |_| {}).unwrap();
        let what = format!("784-{hidden}-10 {path:?}, batch {batch:?}, a line every {every}");
        // The dev list is scored at every line, and once more at the end.
        assert_eq!(watching.seen.len(), report.history.len() + 1, "{what}");
        for (line, (window, dev)) in report.history.iter().zip(&watching.seen) {
            let want = [
                line.batch.loss,
                line.batch.accuracy,
                line.dev_loss.unwrap(),
                line.dev_accuracy.unwrap(),
            ];
            let got = [window[0], window[1], dev[0], dev[1]];
            for (name, (g, w)) in ["loss", "accuracy", "dev loss", "dev accuracy"]
                .iter()
                .zip(got.iter().zip(want))
            {
                assert!(
                    (*g as f64 - w).abs() <= 1e-5 + 1e-4 * w.abs(),
                    "{what}: step {}'s {name} is {g} on the device, {w} in the loop",
                    line.step
                );
            }
        }
    }
}

/// The GPU backend, its figures read after each dev evaluation (a progress line's last
/// reading, after the window's mean).
struct Figures {
    gpu: mnist_gpu::gpu::GpuBackend,
    seen: Vec<(Vec<f32>, Vec<f32>)>,
}

impl mnist_gpu::backend::Backend for Figures {
    fn device_name(&self) -> String {
        self.gpu.device_name()
    }
    fn set_list(&mut self, list: List, indices: &[u32]) -> mnist_gpu::Result<()> {
        self.gpu.set_list(list, indices)
    }
    fn train_step(&mut self, start: usize, len: usize, alpha: f32) -> mnist_gpu::Result<()> {
        self.gpu.train_step(start, len, alpha)
    }
    fn train_step_shifted(
        &mut self,
        start: usize,
        len: usize,
        alpha: f32,
        shifts: &[mnist_gpu::data::pool::Shift],
    ) -> mnist_gpu::Result<()> {
        self.gpu.train_step_shifted(start, len, alpha, shifts)
    }
    fn train_step_warped(
        &mut self,
        start: usize,
        len: usize,
        alpha: f32,
        warps: &mnist_gpu::augment::Warps,
    ) -> mnist_gpu::Result<()> {
        self.gpu.train_step_warped(start, len, alpha, warps)
    }
    fn path(&self) -> mnist_gpu::backend::StepPath {
        self.gpu.path()
    }
    fn batch_stats(&mut self) -> mnist_gpu::Result<BatchStats> {
        self.gpu.batch_stats()
    }
    fn step_stats(&mut self) -> mnist_gpu::Result<Vec<BatchStats>> {
        self.gpu.step_stats()
    }
    fn request_stats(&mut self) -> mnist_gpu::Result<()> {
        self.gpu.request_stats()
    }
    fn ready_stats(&mut self) -> mnist_gpu::Result<Option<Vec<BatchStats>>> {
        self.gpu.ready_stats()
    }
    fn logits(&mut self, list: List) -> mnist_gpu::Result<Vec<f32>> {
        let logits = self.gpu.logits(list)?;
        if list == List::Dev {
            let window = self
                .gpu
                .read_figure(mnist_gpu::gpu::figures::Figure::Window)?;
            let dev = self.gpu.read_figure(mnist_gpu::gpu::figures::Figure::Dev)?;
            self.seen.push((window, dev));
        }
        Ok(logits)
    }
    fn classify(&mut self, images: &[u8]) -> mnist_gpu::Result<Vec<f32>> {
        self.gpu.classify(images)
    }
    fn model(&mut self) -> mnist_gpu::Result<Model> {
        self.gpu.model()
    }
    fn set_model(&mut self, model: &Model) -> mnist_gpu::Result<()> {
        self.gpu.set_model(model)
    }
    fn set_optimizer(&mut self, o: mnist_gpu::optimizer::Optimizer) -> mnist_gpu::Result<()> {
        self.gpu.set_optimizer(o)
    }
    fn optimizer_state(&mut self) -> mnist_gpu::Result<mnist_gpu::optimizer::OptimizerState> {
        self.gpu.optimizer_state()
    }
    fn set_optimizer_state(
        &mut self,
        s: &mnist_gpu::optimizer::OptimizerState,
    ) -> mnist_gpu::Result<()> {
        self.gpu.set_optimizer_state(s)
    }
}
