//! The training loop's controls on both backends: divergence caught within a few steps,
//! early stopping that keeps the best model, and a stop from outside (Ctrl-C's flag).

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use mnist_gpu::backend::Backend;
use mnist_gpu::cpu::CpuBackend;
use mnist_gpu::data::pool::Split;
use mnist_gpu::gpu::GpuBackend;
use mnist_gpu::model::{Activation, Init, Model};
use mnist_gpu::train::{self, Ending, Schedule, DIVERGENCE_NOTICED_WITHIN};
use mnist_gpu::Error;

fn split() -> Split {
    Split::new(&common::random_dataset(400, 5), None, 100, 2).unwrap()
}

/// Both backends, built for `schedule` on `split`.
fn backends(split: &Split, schedule: &Schedule) -> Vec<Box<dyn Backend>> {
    let model = Model::new(&[16], Activation::Relu, Init::He, 1).unwrap();
    let capacity = schedule.capacity(split.train.len());
    let ctx = Arc::new(common::gpu());
    vec![
        Box::new(CpuBackend::new(&model, split.pool.clone(), split.sizes(), capacity).unwrap()),
        Box::new(GpuBackend::new(ctx, &model, &split.pool, split.sizes(), capacity).unwrap()),
    ]
}

#[test]
fn divergence_stops_the_run_and_names_the_first_bad_step() {
    let split = split();
    // α = 10⁶ with rarely logged progress: every step's loss is still checked, at least every
    // DIVERGENCE_CHECK_EVERY steps (on the GPU taken up to one submit later, without a drain),
    // and the message names the first bad one.
    let schedule = Schedule {
        iterations: 1000,
        alpha: 1e6,
        log_every: 1000,
        ..Schedule::default()
    };
    for mut backend in backends(&split, &schedule) {
        let name = backend.device_name();
        let err = match train::train(backend.as_mut(), &split, &schedule, &mut |_| {}) {
            Err(e) => e,
            Ok(r) => panic!("{name}: a run with α = 1e6 finished: {r:?}"),
        };
        assert!(matches!(err, Error::Diverged(_)), "{name}: {err}");
        let message = err.to_string();
        assert!(message.contains("--alpha"), "{name}: {message}");
        let number_after = |words: &str, end: char| -> usize {
            message
                .split(words)
                .nth(1)
                .and_then(|rest| rest.split(end).next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{name}: no {words:?} in {message:?}"))
        };
        let step = number_after("by step ", ':');
        let noticed = number_after("noticed after step ", ')');
        assert!(step <= 10, "{name}: the first bad step named is {step}");
        assert!(
            step <= noticed && noticed <= DIVERGENCE_NOTICED_WITHIN,
            "{name}: noticed only after step {noticed}"
        );
    }
}

#[test]
fn patience_stops_early_and_keeps_the_best_model() {
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
    for mut backend in backends(&split, &schedule) {
        let name = backend.device_name();
        let report = train::train(backend.as_mut(), &split, &schedule, &mut |_| {}).unwrap();
        let Ending::EarlyStopped { best_step } = report.ending else {
            panic!("{name}: ran to the end: {:?}", report.ending);
        };
        let planned = 200 * 10;
        assert!(report.steps < planned, "{name}: {} steps", report.steps);
        // Three evaluations without improvement after the best one, then the stop.
        assert_eq!(report.steps, best_step + 3 * 10, "{name}");
        let best = report.history.iter().find(|p| p.step == best_step).unwrap();
        let dev_losses: Vec<f64> = report.history.iter().map(|p| p.dev_loss.unwrap()).collect();
        assert!(
            dev_losses.iter().all(|&l| l >= best.dev_loss.unwrap()),
            "{name}: {dev_losses:?}"
        );
        // The model kept is the best one: its dev accuracy is the one measured then.
        assert_eq!(report.dev_accuracy, best.dev_accuracy, "{name}");
    }
}

#[test]
fn a_stop_from_outside_ends_after_the_current_step() {
    let split = split();
    let stop = Arc::new(AtomicBool::new(false));
    let schedule = Schedule {
        batch_size: Some(30),
        epochs: 50,
        alpha: 0.1,
        log_every: 1,
        interrupt: Some(stop.clone()),
        ..Schedule::default()
    };
    for mut backend in backends(&split, &schedule) {
        stop.store(false, Ordering::SeqCst);
        let report = train::train(backend.as_mut(), &split, &schedule, &mut |p| {
            if p.step == 7 {
                stop.store(true, Ordering::SeqCst);
            }
        })
        .unwrap();
        assert_eq!(report.ending, Ending::Interrupted);
        assert_eq!(report.steps, 7);
        assert_eq!(report.history.len(), 7);
        assert!(report.dev_accuracy.is_some());
    }
}

#[test]
fn bad_schedules_are_refused() {
    let split = split();
    let cases = [
        (
            Schedule {
                lr_decay: 0.0,
                ..Schedule::default()
            },
            "--lr-decay",
        ),
        (
            Schedule {
                lr_decay: 1.5,
                ..Schedule::default()
            },
            "--lr-decay",
        ),
        (
            Schedule {
                lr_decay: f32::NAN,
                ..Schedule::default()
            },
            "--lr-decay",
        ),
        (
            Schedule {
                patience: Some(0),
                ..Schedule::default()
            },
            "--patience",
        ),
    ];
    for (schedule, option) in cases {
        let err = schedule.validate(split.train.len()).unwrap_err();
        assert!(err.to_string().contains(option), "{err}");
    }
    // Early stopping watches the dev loss: no dev set, no early stopping.
    let no_dev = Split::new(&common::random_dataset(100, 5), None, 0, 2).unwrap();
    let schedule = Schedule {
        patience: Some(2),
        ..Schedule::default()
    };
    let model = Model::new(&[8], Activation::Relu, Init::He, 1).unwrap();
    let mut cpu = CpuBackend::new(&model, no_dev.pool.clone(), no_dev.sizes(), 100).unwrap();
    let err = train::train(&mut cpu, &no_dev, &schedule, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("--dev-size"), "{err}");
}
