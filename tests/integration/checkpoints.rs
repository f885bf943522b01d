//! Checkpoints that resume exactly: a run stopped (mid-epoch, or at an epoch's end) and resumed
//! from its checkpoint ends bit-identical to the same run never stopped, on the CPU for every
//! optimizer, full batch and mini-batch, with `--augment` and `--lr-decay`; within the parity
//! tolerances on the GPU. Through the binary: a process killed with SIGKILL while writing
//! checkpoints always leaves one that resumes; damaged checkpoints and contradicting options
//! are refused in one line each.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use mnist_gpu::backend::{Backend, StepPath};
use mnist_gpu::checkpoint::{self, Checkpointing, FileId};
use mnist_gpu::cpu::CpuBackend;
use mnist_gpu::data::pool::Split;
use mnist_gpu::gpu::GpuBackend;
use mnist_gpu::model::{Activation, Init, Model};
use mnist_gpu::optimizer::{Optimizer, OptimizerKind};
use mnist_gpu::options::{Every, RunOptions};
use mnist_gpu::train::{self, Progress, Report, RunState, Schedule};
use serde_json::json;

use crate::common::output::{
    assert_one_line_error, assert_prints, assert_success, command, describe, json_summary, run_in,
    stdout,
};

fn split() -> Split {
    Split::new(&common::random_dataset(450, 3), None, 50, 5).unwrap()
}

/// Which backend a run trains on.
#[derive(Clone, Copy, Debug, PartialEq)]
enum On {
    Cpu,
    Gpu,
}

fn backend(on: On, model: &Model, split: &Split, schedule: &Schedule) -> Box<dyn Backend> {
    let capacity = schedule.capacity(split.train.len());
    match on {
        On::Cpu => {
            Box::new(CpuBackend::new(model, split.pool.clone(), split.sizes(), capacity).unwrap())
        }
        On::Gpu => {
            let ctx = Arc::new(common::gpu());
            let gpu = GpuBackend::with_path(ctx, model, &split.pool, split.sizes(), capacity, None);
            let gpu = gpu.unwrap();
            assert_eq!(gpu.path(), StepPath::Fused);
            Box::new(gpu)
        }
    }
}

/// The run of `schedule` from the start, stopped after step `stop_after` if given (as Ctrl-C
/// stops it), with a checkpoint at `path` every `every`.
fn run(
    on: On,
    model: &Model,
    split: &Split,
    schedule: &Schedule,
    path: &Path,
    every: Every,
    stop_after: Option<usize>,
) -> (Report, Model) {
    let stop = Arc::new(AtomicBool::new(false));
    let schedule = Schedule {
        interrupt: Some(stop.clone()),
        ..schedule.clone()
    };
    let mut checkpointing = checkpointing(path, &schedule, every, split);
    let mut backend = backend(on, model, split, &schedule);
    let mut on_progress = |p: &Progress| {
        if Some(p.step) == stop_after {
            stop.store(true, Ordering::Relaxed);
        }
    };
    let report = train::train_from(
        backend.as_mut(),
        split,
        &schedule,
        RunState::start(split, &schedule),
        None,
        &mut on_progress,
        Some(&mut checkpointing),
    )
    .unwrap();
    (report, backend.model().unwrap())
}

/// Checkpoints of `schedule`'s run to `path` every `every`.
fn checkpointing(path: &Path, schedule: &Schedule, every: Every, split: &Split) -> Checkpointing {
    Checkpointing {
        path: path.to_path_buf(),
        options: RunOptions {
            optimizer: schedule.optimizer.kind(),
            checkpoint_every: Some(every),
            ..RunOptions::default()
        },
        train_file: FileId::of_bytes("random", &[&split.pool.images]),
    }
}

/// Stops the run after `stop_after` steps, resumes it from its checkpoint on a fresh backend,
/// and compares with the run never stopped.
fn check_resume(on: On, schedule: Schedule, stop_after: usize) {
    let split = split();
    let model = Model::new(&[12], Activation::Relu, Init::He, 2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let whole_path = dir.path().join("whole.safetensors");
    let part_path = dir.path().join("part.safetensors");
    let schedule = Schedule {
        log_every: 1,
        ..schedule
    };
    let what = format!("{on:?} {schedule:?} stopped after {stop_after}");
    let (whole, whole_model) = run(
        on,
        &model,
        &split,
        &schedule,
        &whole_path,
        Every::Steps(1000),
        None,
    );
    if schedule.patience.is_some() {
        let stopped = matches!(whole.ending, train::Ending::EarlyStopped { .. });
        assert!(
            stopped && whole.steps > stop_after,
            "{what}: {:?} at {}",
            whole.ending,
            whole.steps
        );
    }
    let (part, _) = run(
        on,
        &model,
        &split,
        &schedule,
        &part_path,
        Every::Steps(1000),
        Some(stop_after),
    );
    assert_eq!(part.steps, stop_after, "{what}: the stopped run");

    let saved = checkpoint::load(&part_path).unwrap();
    assert_eq!(saved.state.step, stop_after, "{what}");
    let mut resumed_backend = backend(on, &saved.model, &split, &schedule);
    let resumed = train::train_from(
        resumed_backend.as_mut(),
        &split,
        &schedule,
        saved.state,
        Some(&saved.optimizer),
        &mut |_| {},
        None,
    )
    .unwrap();
    let resumed_model = resumed_backend.model().unwrap();
    assert_eq!(resumed.steps, whole.steps, "{what}");
    let losses = |r: &Report| r.history.iter().map(|p| p.batch.loss).collect::<Vec<_>>();
    match on {
        On::Cpu => {
            assert!(
                resumed_model == whole_model,
                "{what}: the resumed model differs"
            );
            assert_eq!(
                losses(&resumed),
                losses(&whole),
                "{what}: the loss curves differ"
            );
        }
        On::Gpu => {
            common::assert_models_close(&what, &resumed_model, &whole_model, 1e-4, 1e-3);
            for (r, w) in losses(&resumed).iter().zip(losses(&whole)) {
                assert!((r - w).abs() <= 1e-4 + 1e-3 * w, "{what}: loss {r} vs {w}");
            }
        }
    }
    // The last checkpoint holds the end of the run.
    let end = checkpoint::load(&whole_path).unwrap();
    assert_eq!(end.state.step, whole.steps, "{what}");
    assert!(
        end.model == whole_model,
        "{what}: the last checkpoint's model"
    );
}

fn mini_batch(optimizer: OptimizerKind) -> Schedule {
    Schedule {
        batch_size: Some(64),
        epochs: 3,
        alpha: if optimizer == OptimizerKind::Adam {
            0.003
        } else {
            0.05
        },
        optimizer: Optimizer::with_defaults(optimizer),
        lr_decay: 0.8,
        augment: mnist_gpu::augment::Augment::Shift,
        ..Schedule::default()
    }
}

fn full_batch(optimizer: OptimizerKind) -> Schedule {
    Schedule {
        iterations: 12,
        alpha: if optimizer == OptimizerKind::Adam {
            0.003
        } else {
            0.3
        },
        optimizer: Optimizer::with_defaults(optimizer),
        lr_decay: 0.95,
        ..Schedule::default()
    }
}

/// The checkpoints a run writes as it goes (every few steps, or at every epoch's end, α decayed)
/// resume too: the file as it was after step `written` is copied while the run goes on, and the
/// run resumed from that copy ends where the run itself ends.
fn check_periodic(schedule: Schedule, every: Every, written: usize) {
    check_periodic_with(&[12], schedule, every, written);
}

/// `check_periodic` for a network of hidden layers `hidden`.
fn check_periodic_with(hidden: &[usize], schedule: Schedule, every: Every, written: usize) {
    let split = split();
    let model = Model::new(hidden, Activation::Relu, Init::He, 2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (path, copy) = (
        dir.path().join("c.safetensors"),
        dir.path().join("copy.safetensors"),
    );
    let schedule = Schedule {
        log_every: 1,
        ..schedule
    };
    let mut checkpointing = checkpointing(&path, &schedule, every, &split);
    let what = format!("{hidden:?} {schedule:?} {every:?}, the checkpoint after step {written}");
    let mut cpu = backend(On::Cpu, &model, &split, &schedule);
    // A progress line comes before its step's checkpoint: at step written + 1 the file is the
    // one written after step `written`.
    let mut on_progress = |p: &Progress| {
        if p.step == written + 1 {
            std::fs::copy(&path, &copy).unwrap();
        }
    };
    let whole = train::train_from(
        cpu.as_mut(),
        &split,
        &schedule,
        RunState::start(&split, &schedule),
        None,
        &mut on_progress,
        Some(&mut checkpointing),
    )
    .unwrap();
    let saved = checkpoint::load(&copy).unwrap();
    assert_eq!(saved.state.step, written, "{what}");
    let mut resumed = backend(On::Cpu, &saved.model, &split, &schedule);
    let report = train::train_from(
        resumed.as_mut(),
        &split,
        &schedule,
        saved.state,
        Some(&saved.optimizer),
        &mut |_| {},
        None,
    )
    .unwrap();
    assert_eq!(report.steps, whole.steps, "{what}");
    assert!(
        resumed.model().unwrap() == cpu.model().unwrap(),
        "{what}: the resumed model differs"
    );
}

#[test]
fn checkpoints_written_along_the_way_resume_bit_identical() {
    check_periodic(mini_batch(OptimizerKind::Adam), Every::Steps(3), 6);
    check_periodic(mini_batch(OptimizerKind::Momentum), Every::Epoch, 7);
    check_periodic(full_batch(OptimizerKind::Adam), Every::Epoch, 4);
}

/// The same on the CPU's wide engine (hidden layers of `cpu::wide::WIDE_UNITS` units or more),
/// whose update runs inside its dW product: mini-batches of one block, and full batches of
/// several blocks, split into parts.
#[test]
fn wide_cpu_checkpoints_resume_bit_identical() {
    check_periodic_with(&[128], mini_batch(OptimizerKind::Adam), Every::Steps(3), 6);
    check_periodic_with(
        &[33, 130],
        mini_batch(OptimizerKind::Momentum),
        Every::Epoch,
        7,
    );
    check_periodic_with(&[128], full_batch(OptimizerKind::Adam), Every::Epoch, 4);
}

/// 400 training samples in batches of 64: 7 steps an epoch, the last of 16.
#[test]
fn cpu_resumes_bit_identical_with_every_optimizer() {
    for kind in [
        OptimizerKind::Sgd,
        OptimizerKind::Momentum,
        OptimizerKind::Adam,
    ] {
        check_resume(On::Cpu, mini_batch(kind), 10); // mid-epoch
        check_resume(On::Cpu, mini_batch(kind), 14); // at the end of the second epoch
        check_resume(On::Cpu, full_batch(kind), 5);
    }
}

#[test]
fn gpu_resumes_within_the_parity_tolerance() {
    check_resume(On::Gpu, mini_batch(OptimizerKind::Adam), 10);
    check_resume(On::Gpu, mini_batch(OptimizerKind::Momentum), 7);
    check_resume(On::Gpu, full_batch(OptimizerKind::Sgd), 5);
}

/// Early stopping's state travels too: the best model so far and the evaluations since. (On
/// random labels the dev loss soon rises, so the run stops early after a few steps.)
#[test]
fn early_stopping_resumes_bit_identical() {
    let schedule = Schedule {
        patience: Some(4),
        epochs: 40,
        ..mini_batch(OptimizerKind::Momentum)
    };
    check_resume(On::Cpu, schedule, 3);
}

// ---------------------------------------------------------------------------------------------
// Through the binary
// ---------------------------------------------------------------------------------------------

/// A small training set in `dir`: 300 labelled images as CSV.
fn train_file(dir: &Path) -> PathBuf {
    let path = dir.join("train.csv");
    mnist_gpu::data::write_csv(&common::random_dataset(300, 1), &path, true).unwrap();
    path
}

const RUN: [&str; 12] = [
    "--backend",
    "cpu",
    "--test",
    "none",
    "--dev-size",
    "40",
    "--batch-size",
    "20",
    "--optimizer",
    "adam",
    "--alpha",
    "0.002",
];

/// The run in `dir` with `extra` options, on `train.csv`.
fn train(dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["--train", "train.csv"];
    args.extend(RUN);
    args.extend(extra);
    run_in(dir, &args)
}

fn partials(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".partial"))
        .collect()
}

/// SIGKILL at random moments while a checkpoint is written after every step: whatever the
/// moment, the file is a whole checkpoint that loads and resumes; a clean run afterwards
/// leaves no temporary file behind.
#[test]
fn a_killed_run_leaves_a_checkpoint_that_resumes() {
    use rand::{rngs::StdRng, Rng, SeedableRng};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    train_file(d);
    let ckpt = d.join("c.safetensors");
    let mut rng = StdRng::seed_from_u64(11);
    let mut killed_with_a_checkpoint = 0;
    for round in 0..12 {
        let mut args = vec!["--train", "train.csv"];
        args.extend(RUN);
        args.extend([
            "--epochs",
            "1000",
            "--checkpoint",
            "c.safetensors",
            "--checkpoint-every",
            "1",
        ]);
        if ckpt.exists() {
            args.extend(["--resume", "c.safetensors"]);
        }
        let mut child = command(d, &args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(rng.random_range(150..700)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if !ckpt.exists() {
            assert!(
                round < 3,
                "round {round}: still no checkpoint after SIGKILL"
            );
            continue;
        }
        let saved = checkpoint::load(&ckpt).unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert!(saved.state.step > 0, "round {round}");
        killed_with_a_checkpoint += 1;
    }
    assert!(
        killed_with_a_checkpoint >= 8,
        "{killed_with_a_checkpoint} rounds left a checkpoint"
    );
    // Resumed to the end of the next epoch but one (260 samples in batches of 20: 13 steps an
    // epoch): the run completes, leaves nothing half-written behind, and ends with the model of
    // the same run never killed.
    let step = checkpoint::load(&ckpt).unwrap().state.step;
    let epochs = (step / 13 + 2).to_string();
    let out = train(
        d,
        &[
            "--resume",
            "c.safetensors",
            "--epochs",
            &epochs,
            "--save",
            "resumed.safetensors",
            "--json",
        ],
    );
    assert_success(&out);
    assert_eq!(
        json_summary(&out)["steps"],
        13 * (step / 13 + 2),
        "{}",
        describe(&out)
    );
    assert!(partials(d).is_empty(), "left behind: {:?}", partials(d));
    assert_success(&train(
        d,
        &["--epochs", &epochs, "--save", "whole.safetensors"],
    ));
    let read = |name: &str| mnist_gpu::model_file::load(&d.join(name)).unwrap().model;
    assert!(
        read("resumed.safetensors") == read("whole.safetensors"),
        "killed {killed_with_a_checkpoint} times, the run ended elsewhere"
    );
}

/// Ctrl-C (SIGINT) with `--checkpoint` on the default run (the embedded digits): the message
/// says how to continue, and `--resume FILE` alone — every option left out — continues to the
/// run's end, with the model of the same run never stopped.
#[test]
fn ctrl_c_then_resume_with_every_option_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = [
        "--backend",
        "cpu",
        "--hidden",
        "128",
        "--batch-size",
        "300",
        "--epochs",
        "6",
        "--optimizer",
        "adam",
        "--alpha",
        "0.002",
        "--lr-decay",
        "0.9",
    ];
    assert_success(&run_in(
        d,
        &[&run[..], &["--save", "whole.safetensors"]].concat(),
    ));
    let child = command(
        d,
        &[
            &run[..],
            &["--checkpoint", "c.safetensors", "--checkpoint-every", "8"],
        ]
        .concat(),
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let started = std::time::Instant::now();
    while !d.join("c.safetensors").exists() {
        assert!(started.elapsed().as_secs() < 60, "no checkpoint written");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--resume c.safetensors continues after step"),
        "{stderr}"
    );
    let stopped = checkpoint::load(&d.join("c.safetensors"))
        .unwrap()
        .state
        .step;
    assert!(stopped < 180, "the run was not stopped: {stopped} steps");

    let out = run_in(
        d,
        &[
            "--resume",
            "c.safetensors",
            "--save",
            "resumed.safetensors",
            "--json",
        ],
    );
    assert_success(&out);
    let v = json_summary(&out);
    assert_eq!(
        (
            v["steps"].clone(),
            v["epochs"].clone(),
            v["optimizer"].clone()
        ),
        (180.into(), 6.into(), "adam".into()),
        "{v}"
    );
    assert_eq!(
        v["train"],
        "embedded:data/mnist/train-10k-images-idx3-ubyte.gz"
    );
    assert_eq!(v["test_samples"], 10_000);
    let text = stdout(&out);
    assert!(
        text.contains(&format!("resuming c.safetensors after step {stopped}")),
        "{text}"
    );
    assert!(
        text.contains("checkpoints go on in c.safetensors"),
        "{text}"
    );
    let read = |name: &str| mnist_gpu::model_file::load(&d.join(name)).unwrap().model;
    assert!(
        read("resumed.safetensors") == read("whole.safetensors"),
        "the resumed run ended elsewhere"
    );
    // The checkpoint went on to the run's end; resumed again, there is nothing left to do.
    assert_eq!(
        checkpoint::load(&d.join("c.safetensors"))
            .unwrap()
            .state
            .step,
        180
    );
    let out = run_in(d, &["--resume", "c.safetensors"]);
    assert_prints(&out, "its run has ended");
}

/// A run resumed through the binary, from a checkpoint written at Ctrl-C's stand-in (a run
/// with fewer epochs), ends with the same model as the run never stopped; `eval` and
/// `predict` read a checkpoint as a model.
#[test]
fn the_binary_resumes_and_a_checkpoint_is_a_model() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    train_file(d);
    let whole = ["--epochs", "3", "--augment", "--lr-decay", "0.9"];
    assert_success(&train(
        d,
        &[&whole[..], &["--save", "whole.safetensors"]].concat(),
    ));
    let part = [
        "--epochs",
        "2",
        "--augment",
        "--lr-decay",
        "0.9",
        "--checkpoint",
        "c.safetensors",
    ];
    assert_success(&train(d, &part));
    // The options left out are the checkpoint's; more epochs and another log interval may change.
    let out = run_in(
        d,
        &[
            "--backend",
            "cpu",
            "--resume",
            "c.safetensors",
            "--train",
            "train.csv",
            "--epochs",
            "3",
            "--log-every",
            "7",
            "--save",
            "resumed.safetensors",
            "--json",
        ],
    );
    assert_prints(
        &out,
        "resuming c.safetensors after step 26: at step 27 of 39",
    );
    let v = json_summary(&out);
    assert_eq!(
        (
            v["steps"].clone(),
            v["optimizer"].clone(),
            v["augment"].clone()
        ),
        (39.into(), "adam".into(), true.into())
    );
    let read = |name: &str| mnist_gpu::model_file::load(&d.join(name)).unwrap().model;
    assert!(
        read("resumed.safetensors") == read("whole.safetensors"),
        "the resumed run ended elsewhere"
    );
    for command in [
        &["eval", "--model", "c.safetensors", "--data", "train.csv"][..],
        &["predict", "--model", "c.safetensors", "--data", "train.csv"],
    ] {
        let mut args = command.to_vec();
        args.extend(["--backend", "cpu"]);
        assert_success(&run_in(d, &args));
    }
    // A model file resumes its weights only, and says so.
    let out = train(d, &["--epochs", "1", "--resume", "whole.safetensors"]);
    assert_prints(
        &out,
        "holds weights only: the optimizer and the schedule start afresh",
    );
}

/// Options that contradict the checkpoint's run are refused, each in one line naming it; a
/// different training file too.
#[test]
fn contradicting_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    train_file(d);
    assert_success(&train(
        d,
        &[
            "--epochs",
            "1",
            "--lr-decay",
            "0.9",
            "--patience",
            "5",
            "--checkpoint",
            "c.safetensors",
        ],
    ));
    let full = [
        "--backend",
        "cpu",
        "--train",
        "train.csv",
        "--dev-size",
        "40",
        "--iterations",
        "3",
        "--checkpoint",
        "f.safetensors",
    ];
    assert_success(&run_in(d, &full));
    let resume = ["--resume", "c.safetensors", "--backend", "cpu"];
    for (extra, says) in [
        (
            &["--optimizer", "sgd"][..],
            "the checkpoint's run has --optimizer adam, this run asks for sgd",
        ),
        (
            &["--batch-size", "30"],
            "--batch-size 20, this run asks for 30",
        ),
        (
            &["--alpha", "0.01"],
            "--alpha 0.002, this run asks for 0.01",
        ),
        (
            &["--lr-decay", "0.8"],
            "--lr-decay 0.9, this run asks for 0.8",
        ),
        (&["--seed", "9"], "--seed"),
        (&["--dev-size", "10"], "--dev-size 40"),
        (&["--augment"], "--augment off, this run asks for shift"),
        (&["--patience", "2"], "--patience 5"),
        // Early stopping counts evaluations, one every --log-every steps.
        (&["--log-every", "3"], "--log-every"),
        (&["--hidden", "20"], "hidden layers"),
        (&["--activation", "elu"], "activation"),
        (&["--init", "uniform"], "--init"),
        (
            &["--iterations", "5"],
            "mini-batch: say how long with --epochs",
        ),
    ] {
        let line = assert_one_line_error(&run_in(d, &[&resume[..], extra].concat()));
        assert!(line.contains(says), "{extra:?}: {line}");
        assert!(
            line.contains("c.safetensors") || line.contains("--init"),
            "{extra:?}: {line}"
        );
    }
    let line = assert_one_line_error(&run_in(d, &["--resume", "f.safetensors", "--epochs", "2"]));
    assert!(
        line.contains("full-batch: say how long with --iterations"),
        "{line}"
    );
    mnist_gpu::data::write_csv(&common::random_dataset(300, 2), &d.join("other.csv"), true)
        .unwrap();
    let line = assert_one_line_error(&run_in(
        d,
        &[&resume[..], &["--train", "other.csv"]].concat(),
    ));
    assert!(
        line.contains("other.csv") && line.contains("--train"),
        "{line}"
    );
    // The same options, said again, are no contradiction.
    let mut same = resume.to_vec();
    same.extend(&RUN[2..]);
    same.extend(["--train", "train.csv", "--epochs", "2"]);
    assert_success(&run_in(d, &same));
    // A resumed run writes on to its checkpoint: --checkpoint-every alone changes how often.
    let out = run_in(
        d,
        &[&resume[..], &["--epochs", "3", "--checkpoint-every", "5"]].concat(),
    );
    assert_prints(&out, "checkpoints go on in c.safetensors");
    let line = assert_one_line_error(&run_in(
        d,
        &["--iterations", "1", "--checkpoint-every", "5"],
    ));
    assert!(
        line.contains("--checkpoint-every needs --checkpoint"),
        "{line}"
    );
}

/// Damaged checkpoints are refused with one line each, naming the file and what is wrong.
#[test]
fn damaged_checkpoints_are_refused() {
    use safetensors::SafeTensors;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    train_file(d);
    assert_success(&train(
        d,
        &["--epochs", "1", "--checkpoint", "c.safetensors"],
    ));
    let good = std::fs::read(d.join("c.safetensors")).unwrap();
    let tensors = SafeTensors::deserialize(&good).unwrap();
    let (_, header) = SafeTensors::read_metadata(&good).unwrap();
    let metadata = header.metadata().clone().unwrap();
    // Rewrites the checkpoint with its tensors but `drop`, and `edit` applied to the metadata.
    let same_sample = vec![0u8; 4 * tensors.tensor("order").unwrap().shape()[0]];
    let rewrite =
        |name: &str, drop: &str, edit: &dyn Fn(&mut std::collections::HashMap<String, String>)| {
            let mut meta = metadata.clone();
            edit(&mut meta);
            let mut kept: Vec<(String, safetensors::tensor::TensorView)> = tensors
                .tensors()
                .into_iter()
                .filter(|(n, _)| n != drop && !(drop == "order" && n == "order"))
                .collect();
            if drop == "order" {
                // Every sample the first one: not the training set.
                let shape = tensors.tensor("order").unwrap().shape().to_vec();
                let view = safetensors::tensor::TensorView::new(
                    safetensors::Dtype::U32,
                    shape,
                    &same_sample,
                );
                kept.push(("order".into(), view.unwrap()));
            }
            std::fs::write(
                d.join(name),
                safetensors::serialize(kept, Some(meta)).unwrap(),
            )
            .unwrap();
        };
    // Edits the run's state in the `checkpoint` metadata.
    fn state(
        m: &mut std::collections::HashMap<String, String>,
        edit: impl Fn(&mut serde_json::Value),
    ) {
        let mut run: serde_json::Value = serde_json::from_str(&m["checkpoint"]).unwrap();
        edit(&mut run);
        m.insert("checkpoint".into(), run.to_string());
    }
    std::fs::write(d.join("truncated.safetensors"), &good[..good.len() / 2]).unwrap();
    rewrite("hash.safetensors", "", &|m| {
        state(m, |r| r["train_file"]["sha256"] = json!("abc"))
    });
    rewrite("alpha.safetensors", "", &|m| {
        state(m, |r| r["state"]["alpha_bits"] = json!(f32::NAN.to_bits()))
    });
    rewrite("position.safetensors", "", &|m| {
        state(m, |r| r["state"]["position"] = json!(999))
    });
    rewrite("order.safetensors", "order", &|_| {});
    rewrite("version.safetensors", "", &|m| {
        m.insert("format".into(), "mnist-gpu checkpoint 9".into());
    });
    rewrite("missing.safetensors", "optimizer.W1.m", &|_| {});
    rewrite("garbled.safetensors", "", &|m| {
        m.insert("checkpoint".into(), "{\"version\": 1, \"options".into());
    });
    rewrite("no_state.safetensors", "", &|m| {
        m.remove("checkpoint");
    });
    for (file, says) in [
        ("truncated.safetensors", "safetensors"),
        ("version.safetensors", "checkpoint 9"),
        ("missing.safetensors", "optimizer.W1.m"),
        ("garbled.safetensors", "not valid JSON"),
        ("no_state.safetensors", "missing"),
        ("hash.safetensors", "train_file.sha256"),
        ("alpha.safetensors", "alpha_bits"),
        ("position.safetensors", "past the epoch's 13 steps"),
        ("order.safetensors", "not of the training set's samples"),
    ] {
        let line = assert_one_line_error(&run_in(
            d,
            &["--resume", file, "--backend", "cpu", "--train", "train.csv"],
        ));
        assert!(line.contains(file) && line.contains(says), "{file}: {line}");
    }
}
