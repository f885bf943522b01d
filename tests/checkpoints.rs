//! Checkpoints that resume exactly: a run stopped (mid-epoch, or at an epoch's end) and resumed
//! from its checkpoint ends bit-identical to the same run never stopped, on the CPU for every
//! optimizer, full batch and mini-batch, with `--augment` and `--lr-decay`; within the parity
//! tolerances on the GPU. Through the binary: a process killed with SIGKILL while writing
//! checkpoints always leaves one that resumes; damaged checkpoints and contradicting options
//! are refused in one line each.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use mnist_gpu::backend::{Backend, StepPath};
use mnist_gpu::checkpoint::{self, Checkpointing, Every, FileId};
use mnist_gpu::cpu::CpuBackend;
use mnist_gpu::gpu::GpuBackend;
use mnist_gpu::model::{Activation, Init, Model};
use mnist_gpu::optimizer::{Optimizer, OptimizerKind};
use mnist_gpu::train::{self, Progress, Report, Schedule, Split};
use serde_json::json;

use common::output::{
    assert_one_line_error, assert_success, command, describe, json_summary, run_in, stdout,
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
        checkpoint: Some(Checkpointing {
            path: path.to_path_buf(),
            every,
            options: json!({"optimizer": schedule.optimizer.name()}),
            train_file: FileId::of_bytes("random", &[&split.pool.images]),
        }),
        ..schedule.clone()
    };
    let mut backend = backend(on, model, split, &schedule);
    let mut on_progress = |p: &Progress| {
        if Some(p.step) == stop_after {
            stop.store(true, Ordering::Relaxed);
        }
    };
    let report = train::train(backend.as_mut(), split, &schedule, &mut on_progress).unwrap();
    (report, backend.model().unwrap())
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
        augment: true,
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
    // epoch): the run completes, and leaves nothing half-written behind.
    let step = checkpoint::load(&ckpt).unwrap().state.step;
    let epochs = (step / 13 + 2).to_string();
    let out = train(
        d,
        &[
            "--resume",
            "c.safetensors",
            "--epochs",
            &epochs,
            "--checkpoint",
            "c.safetensors",
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
    assert_success(&out);
    assert!(
        stdout(&out).contains("resuming c.safetensors at step 26"),
        "{}",
        describe(&out)
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
    assert_success(&out);
    assert!(
        stdout(&out).contains("holds weights only: the optimizer and the schedule start afresh"),
        "{}",
        describe(&out)
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
        &["--epochs", "1", "--checkpoint", "c.safetensors"],
    ));
    let resume = ["--resume", "c.safetensors", "--backend", "cpu"];
    for (extra, named) in [
        (&["--optimizer", "sgd"][..], "--optimizer"),
        (&["--batch-size", "30"], "--batch-size"),
        (&["--alpha", "0.01"], "--alpha"),
        (&["--seed", "9"], "--seed"),
        (&["--dev-size", "10"], "--dev-size"),
        (&["--augment"], "--augment"),
        (&["--hidden", "20"], "hidden layers"),
    ] {
        let line = assert_one_line_error(&run_in(d, &[&resume[..], extra].concat()));
        assert!(
            line.contains(named) && line.contains("c.safetensors"),
            "{extra:?}: {line}"
        );
    }
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
    let rewrite =
        |name: &str, drop: &str, edit: &dyn Fn(&mut std::collections::HashMap<String, String>)| {
            let mut meta = metadata.clone();
            edit(&mut meta);
            let kept: Vec<(String, safetensors::tensor::TensorView)> = tensors
                .tensors()
                .into_iter()
                .filter(|(n, _)| n != drop)
                .collect();
            std::fs::write(
                d.join(name),
                safetensors::serialize(kept, Some(meta)).unwrap(),
            )
            .unwrap();
        };
    std::fs::write(d.join("truncated.safetensors"), &good[..good.len() / 2]).unwrap();
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
    ] {
        let line = assert_one_line_error(&run_in(d, &["--resume", file, "--backend", "cpu"]));
        assert!(line.contains(file) && line.contains(says), "{file}: {line}");
    }
}
