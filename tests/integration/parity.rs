//! End to end: the GPU backend and the CPU backend, started from the same weights, train the
//! same network on the same real digits; the weights, biases and loss curve must agree at
//! every checked step, and the final dev predictions on at least 99.5% of the dev set. Every
//! case runs on both GPU paths: the fused step and the per-operation reference.

use crate::common;

use std::sync::Arc;

use mnist_gpu::augment::Augment;
use mnist_gpu::backend::{Backend, BatchStats, StepPath};
use mnist_gpu::cpu::CpuBackend;
use mnist_gpu::data::pool::List;
use mnist_gpu::data::pool::Split;
use mnist_gpu::gpu::pipeline::ShaderChecks;
use mnist_gpu::gpu::{GpuBackend, GpuContext};
use mnist_gpu::model::{argmax_columns, Activation, Init, Model};
use mnist_gpu::optimizer::{Optimizer, OptimizerKind};

/// Parameters agree within `atol + rtol·|cpu|`, element by element.
fn assert_models_close(step: usize, gpu: &Model, cpu: &Model, atol: f64, rtol: f64) {
    common::assert_models_close(&format!("step {step}"), gpu, cpu, atol, rtol);
}

/// The GPU backend on `path`, which it must run.
fn gpu_on(
    ctx: Arc<GpuContext>,
    model: &Model,
    split: &Split,
    capacity: usize,
    path: StepPath,
) -> GpuBackend {
    let gpu = GpuBackend::with_path(ctx, model, &split.pool, split.sizes(), capacity, Some(path))
        .unwrap();
    assert_eq!(gpu.path(), path);
    gpu
}

/// How far the GPU may drift from the CPU: each batch loss within `1e-4 + loss·|cpu|`, the
/// batch accuracy within `flips` samples, the parameters (every 5 steps) within
/// `atol + rtol·|cpu|`, and the predictions agreeing on a share `agree` of the images.
#[derive(Clone, Copy)]
struct Tolerance {
    loss: f64,
    flips: f64,
    atol: f64,
    rtol: f64,
    agree: f64,
}

/// float32 throughout: sums in a different order drift apart slowly over the steps.
const FLOAT32: Tolerance = Tolerance {
    loss: 1e-3,
    flips: 2.0,
    atol: 1e-4,
    rtol: 1e-3,
    agree: 0.995,
};

/// Products of inputs rounded to 10 bits of mantissa (`--matmul coop`): a sample near a tie
/// flips, and the rounding's 10⁻³ of each product compounds step by step. About five times
/// the most measured on lavapipe's f16 tiles (784-130-10, SGD, within 12 steps of 128 and
/// 5 of the full batch): loss 1.1·10⁻⁴ of itself, 4 flips, parameters 3.5·(10⁻⁴ + 10⁻²·|w|),
/// 98.3% of predictions.
const ROUNDED_INPUTS: Tolerance = Tolerance {
    loss: 1e-3,
    flips: 6.0,
    atol: 5e-4,
    rtol: 5e-2,
    agree: 0.98,
};

/// Trains both backends for `steps` steps of `batch` samples (None: full batch), comparing
/// the batch loss every step and the parameters every 5 steps.
fn check_parity(
    ctx: &Arc<GpuContext>,
    hidden: &[usize],
    activation: Activation,
    batch: Option<usize>,
    steps: usize,
    optimizer: Optimizer,
) {
    for path in [StepPath::Fused, StepPath::Reference] {
        check_parity_on(
            ctx, hidden, activation, batch, steps, optimizer, path, FLOAT32,
        );
    }
}

#[allow(clippy::too_many_arguments)]
fn check_parity_on(
    ctx: &Arc<GpuContext>,
    hidden: &[usize],
    activation: Activation,
    batch: Option<usize>,
    steps: usize,
    optimizer: Optimizer,
    path: StepPath,
    tol: Tolerance,
) {
    let split = common::small_split();
    let model = Model::new(hidden, activation, Init::He, 3).unwrap();
    let n = split.train.len();
    let capacity = batch.unwrap_or(n);
    let mut cpu = CpuBackend::new(&model, split.pool.clone(), split.sizes(), capacity).unwrap();
    let mut gpu = gpu_on(ctx.clone(), &model, &split, capacity, path);
    let alpha = match (optimizer, batch) {
        (Optimizer::Adam { .. }, _) => 0.002,
        (_, Some(_)) => 0.1,
        (_, None) => 0.5,
    };
    let what = format!(
        "{} path: {hidden:?} {activation:?} batch {batch:?} {}",
        path.name(),
        optimizer.name()
    );
    for backend in [&mut cpu as &mut dyn Backend, &mut gpu] {
        backend.set_optimizer(optimizer).unwrap();
        backend.set_list(List::Train, &split.train).unwrap();
        backend.set_list(List::Dev, &split.dev).unwrap();
        backend.set_list(List::Test, &split.test).unwrap();
    }
    for step in 0..steps {
        // Mini-batches walk the list; the last batch of a pass is shorter (1200 = 9·128 + 48).
        let (start, len) = match batch {
            None => (0, n),
            Some(b) => {
                let start = (step * b) % n.next_multiple_of(b);
                (start, b.min(n - start))
            }
        };
        cpu.train_step(start, len, alpha).unwrap();
        gpu.train_step(start, len, alpha).unwrap();
        let (c, g) = (cpu.batch_stats().unwrap(), gpu.batch_stats().unwrap());
        assert!(
            (c.loss - g.loss).abs() <= 1e-4 + tol.loss * c.loss.abs(),
            "{what}: step {step}: batch loss GPU {} vs CPU {}",
            g.loss,
            c.loss
        );
        assert!(
            (c.accuracy - g.accuracy).abs() <= tol.flips / len as f64,
            "{what}: step {step}: accuracy {} vs {}",
            g.accuracy,
            c.accuracy
        );
        if step % 5 == 4 || step == steps - 1 {
            assert_models_close(
                step,
                &gpu.model().unwrap(),
                &cpu.model().unwrap(),
                tol.atol,
                tol.rtol,
            );
        }
    }
    let dev_cpu = argmax_columns(&cpu.logits(List::Dev).unwrap());
    let dev_gpu = argmax_columns(&gpu.logits(List::Dev).unwrap());
    let agree = dev_cpu.iter().zip(&dev_gpu).filter(|(a, b)| a == b).count();
    assert!(
        agree as f64 >= tol.agree * dev_cpu.len() as f64,
        "{what}: predictions agree on only {agree} of {} dev images",
        dev_cpu.len()
    );
    let test_cpu = argmax_columns(&cpu.logits(List::Test).unwrap());
    let test_gpu = argmax_columns(&gpu.logits(List::Test).unwrap());
    let agree = test_cpu
        .iter()
        .zip(&test_gpu)
        .filter(|(a, b)| a == b)
        .count();
    assert!(
        agree as f64 >= tol.agree * test_cpu.len() as f64,
        "{what}: test predictions agree on {agree}"
    );
}

fn ctx() -> Arc<GpuContext> {
    Arc::new(common::gpu())
}

#[test]
fn full_batch_one_hidden_layer_relu() {
    check_parity(&ctx(), &[10], Activation::Relu, None, 30, Optimizer::Sgd);
}

#[test]
fn full_batch_two_hidden_layers_elu() {
    check_parity(&ctx(), &[10, 10], Activation::Elu, None, 30, Optimizer::Sgd);
}

#[test]
fn mini_batch_one_hidden_layer_elu() {
    check_parity(
        &ctx(),
        &[33],
        Activation::Elu,
        Some(128),
        30,
        Optimizer::Sgd,
    );
}

#[test]
fn mini_batch_two_hidden_layers_relu() {
    check_parity(
        &ctx(),
        &[64, 17],
        Activation::Relu,
        Some(100),
        30,
        Optimizer::Sgd,
    );
}

#[test]
fn mini_batch_momentum() {
    let momentum = Optimizer::with_defaults(OptimizerKind::Momentum);
    check_parity(&ctx(), &[33], Activation::Relu, Some(128), 30, momentum);
}

#[test]
fn mini_batch_adam_two_hidden_layers() {
    let adam = Optimizer::with_defaults(OptimizerKind::Adam);
    check_parity(&ctx(), &[64, 17], Activation::Elu, Some(100), 30, adam);
}

/// A layer wider than the fused step covers runs on the reference path only, where its
/// products take matmul's tiled kernel (the short last batch of 48 its narrow one).
#[test]
fn wide_layer_on_the_reference_path() {
    let ctx = ctx();
    let adam = Optimizer::with_defaults(OptimizerKind::Adam);
    for batch in [None, Some(128)] {
        check_parity_on(
            &ctx,
            &[130],
            Activation::Relu,
            batch,
            12,
            adam,
            StepPath::Reference,
            FLOAT32,
        );
    }
}

/// `--split-k`: the same wide layer, full batch, with its dW products split for fewer
/// workgroups than by default: 2 slices instead of 3 (28 workgroups), and 1.
#[test]
fn wide_layer_with_split_k_for_whole_waves() {
    for (groups, splits) in [(28, 2), (1, 1)] {
        let mut ctx = common::gpu();
        assert_eq!(ctx.kernels.splits(130, 784, 1200), 3);
        ctx.kernels.split_groups = Some(groups);
        assert_eq!(ctx.kernels.splits(130, 784, 1200), splits);
        let adam = Optimizer::with_defaults(OptimizerKind::Adam);
        check_parity_on(
            &Arc::new(ctx),
            &[130],
            Activation::Relu,
            None,
            12,
            adam,
            StepPath::Reference,
            FLOAT32,
        );
    }
}

/// `--forward-split-k`: the wide layer's forward products (W1·X over 784 pixels, W2·A1 over
/// 130 units) as split-K, the bias added by slice 0 only, full batch and mini-batches of 128
/// (the short last batch of 48 on the narrow kernel); and a second wide layer, whose product
/// reads A1 rather than the images. 3 slices of 784 are uneven (264, 264, 256).
#[test]
fn wide_layers_with_forward_split_k() {
    let cases: [(&[usize], Option<usize>, usize); 3] = [
        (&[130], None, 3),
        (&[130], Some(128), 4),
        (&[130, 130], Some(128), 5),
    ];
    for (hidden, batch, slices) in cases {
        let mut ctx = common::gpu();
        assert_eq!(ctx.kernels.forward_splits(130, 1200, 784), 1, "default");
        ctx.kernels.forward_split_k = Some(slices);
        let m = batch.unwrap_or(1200);
        assert_eq!(ctx.kernels.forward_splits(130, m, 784) as usize, slices);
        assert_eq!(ctx.kernels.forward_splits(10, 48, 130) as usize, slices);
        let adam = Optimizer::with_defaults(OptimizerKind::Adam);
        check_parity_on(
            &Arc::new(ctx),
            hidden,
            Activation::Relu,
            batch,
            12,
            adam,
            StepPath::Reference,
            FLOAT32,
        );
    }
}

/// `--matmul coop`: the same wide layer with its products (W1·X, dZ1·Xᵀ) on the adapter's
/// cooperative matrices, inputs rounded to 10 bits of mantissa (f16 or TF32), sums in f32.
/// Where the adapter has none (the lavapipe of CI), the plain kernels are what runs, and the
/// test says the cooperative path was not exercised.
#[test]
fn wide_layer_on_cooperative_matrices() {
    let Some(ctx) = common::coop_gpu("training on cooperative matrices") else {
        return;
    };
    let ctx = Arc::new(ctx);
    // SGD: Adam's steps of α·sign(g) for the parameters whose gradient is near 0 turn the
    // rounding of g into steps of the full size. Fewer full-batch steps: at α = 0.5 they are
    // large ones, and any difference grows fast.
    for (batch, steps) in [(None, 5), (Some(128), 12)] {
        check_parity_on(
            &ctx,
            &[130],
            Activation::Relu,
            batch,
            steps,
            Optimizer::Sgd,
            StepPath::Reference,
            ROUNDED_INPUTS,
        );
    }
}

#[test]
fn full_batch_adam() {
    let adam = Optimizer::with_defaults(OptimizerKind::Adam);
    check_parity(&ctx(), &[10], Activation::Relu, None, 30, adam);
}

/// The training loop with --augment on both backends: the same seeded shifts, so the same
/// losses at every step and the same final parameters.
#[test]
fn augmented_training_matches() {
    for path in [StepPath::Fused, StepPath::Reference] {
        augmented_training_matches_on(path);
    }
}

fn augmented_training_matches_on(path: StepPath) {
    use mnist_gpu::train::{self, Schedule};
    let split = common::small_split();
    let model = Model::new(&[20], Activation::Relu, Init::He, 4).unwrap();
    let schedule = Schedule {
        batch_size: Some(100),
        epochs: 2,
        alpha: 0.05,
        optimizer: Optimizer::with_defaults(OptimizerKind::Momentum),
        augment: Augment::Shift,
        log_every: 1,
        ..Schedule::default()
    };
    let capacity = schedule.capacity(split.train.len());
    let mut cpu = CpuBackend::new(&model, split.pool.clone(), split.sizes(), capacity).unwrap();
    let mut gpu = gpu_on(ctx(), &model, &split, capacity, path);
    let c = train::train(&mut cpu, &split, &schedule, &mut |_| {}).unwrap();
    let g = train::train(&mut gpu, &split, &schedule, &mut |_| {}).unwrap();
    assert_eq!(c.history.len(), 24);
    for (pc, pg) in c.history.iter().zip(&g.history) {
        let (lc, lg) = (pc.batch.loss, pg.batch.loss);
        assert!(
            (lc - lg).abs() <= 1e-4 + 1e-3 * lc.abs(),
            "{} path: step {}: batch loss GPU {lg} vs CPU {lc}",
            path.name(),
            pc.step
        );
    }
    let final_step = c.steps;
    assert_models_close(
        final_step,
        &gpu.model().unwrap(),
        &cpu.model().unwrap(),
        1e-4,
        1e-3,
    );

    // The shifts matter: without them the same run ends elsewhere.
    let plain = Schedule {
        augment: Augment::Off,
        ..schedule.clone()
    };
    let mut unshifted =
        CpuBackend::new(&model, split.pool.clone(), split.sizes(), capacity).unwrap();
    let u = train::train(&mut unshifted, &split, &plain, &mut |_| {}).unwrap();
    assert!(unshifted.model().unwrap() != cpu.model().unwrap());
    assert_ne!(u.history[5].batch.loss, c.history[5].batch.loss);
}

/// The parity cases again, with wgpu's shader runtime checks on (`MNIST_GPU_SHADER_CHECKS=1`):
/// one full-batch and one mini-batch run, each on both paths. (The wide layer's tiled products
/// and the shifts are checked in both modes in kernels.rs, at less cost.)
#[test]
fn with_shader_checks_on() {
    common::with_shader_checks(|| {
        assert_eq!(ctx().shader_checks, ShaderChecks::On);
        full_batch_one_hidden_layer_relu();
        mini_batch_two_hidden_layers_relu();
    });
}

/// `request_stats` / `ready_stats` (the reads between progress lines, which do not wait) give
/// the very values the waiting `step_stats` gives, in order, on both paths; and a waiting read
/// while one is on its way gives that one's steps first.
#[test]
fn stats_read_without_waiting_match_the_waiting_read() {
    let split = common::small_split();
    let model = Model::new(&[12], Activation::Relu, Init::He, 5).unwrap();
    for path in [StepPath::Fused, StepPath::Reference] {
        let mut backends: Vec<GpuBackend> = (0..3)
            .map(|_| gpu_on(ctx(), &model, &split, 50, path))
            .collect();
        let steps = |gpu: &mut GpuBackend, from: usize, count: usize| {
            for s in from..from + count {
                gpu.train_step(s * 50 % 1150, 50, 0.1).unwrap();
            }
        };
        let mut reads: Vec<Vec<BatchStats>> = Vec::new();
        for (i, gpu) in backends.iter_mut().enumerate() {
            gpu.set_list(List::Train, &split.train).unwrap();
            steps(gpu, 0, 7);
            let mut stats = match i {
                // Waiting reads.
                0 => gpu.step_stats().unwrap(),
                // A read that does not wait, polled until it is back.
                1 => {
                    gpu.request_stats().unwrap();
                    steps(gpu, 7, 1);
                    let started = std::time::Instant::now();
                    loop {
                        if let Some(stats) = gpu.ready_stats().unwrap() {
                            break stats;
                        }
                        assert!(
                            started.elapsed().as_secs() < 120,
                            "the read never came back"
                        );
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                }
                // One that does not wait, overtaken by a waiting one.
                _ => {
                    gpu.request_stats().unwrap();
                    Vec::new()
                }
            };
            if i != 1 {
                steps(gpu, 7, 1);
            }
            steps(gpu, 8, 4);
            stats.extend(gpu.step_stats().unwrap());
            assert!(gpu.ready_stats().unwrap().is_none(), "nothing is asked for");
            reads.push(stats);
        }
        let name = path.name();
        assert_eq!(reads[0].len(), 12, "{name}");
        for (i, read) in reads.iter().enumerate().skip(1) {
            let same = read.iter().zip(&reads[0]).all(|(a, b)| {
                a.loss.to_bits() == b.loss.to_bits() && a.accuracy.to_bits() == b.accuracy.to_bits()
            });
            assert!(
                same && read.len() == 12,
                "{name} path, reading {i}: {read:?} vs {:?}",
                reads[0]
            );
        }
        let models: Vec<Model> = backends.iter_mut().map(|g| g.model().unwrap()).collect();
        assert!(models[1] == models[0] && models[2] == models[0], "{name}");
    }
}

/// The training loop's checks between progress lines, which do not wait on the GPU: the same
/// losses, progress and final model as a run whose every read waits (a line every step), and
/// a diverging run stops naming the same first bad step.
#[test]
fn checks_between_progress_lines_change_nothing() {
    use mnist_gpu::train::{self, Schedule};
    let split = common::small_split();
    let model = Model::new(&[10], Activation::Relu, Init::He, 6).unwrap();
    // 1,200 samples in batches of 4: 300 steps an epoch, checks at steps 200, 400, 600.
    let schedule = Schedule {
        batch_size: Some(4),
        epochs: 2,
        alpha: 0.05,
        log_every: 1,
        ..Schedule::default()
    };
    let rare = Schedule {
        log_every: 600,
        ..schedule.clone()
    };
    for path in [StepPath::Fused, StepPath::Reference] {
        let mut every = gpu_on(ctx(), &model, &split, 4, path);
        let mut checks = gpu_on(ctx(), &model, &split, 4, path);
        let e = train::train(&mut every, &split, &schedule, &mut |_| {}).unwrap();
        let c = train::train(&mut checks, &split, &rare, &mut |_| {}).unwrap();
        let name = path.name();
        assert_eq!(c.history.len(), 1, "{name}");
        let mean = e.history.iter().map(|p| p.batch.loss).sum::<f64>() / 600.0;
        let last = c.history[0].batch.loss;
        assert!(
            (mean - last).abs() <= 1e-12 * mean,
            "{name}: {last} vs {mean}"
        );
        assert_eq!(c.history[0].dev_loss, e.history[599].dev_loss, "{name}");
        assert!(checks.model().unwrap() == every.model().unwrap(), "{name}");

        // α = 10 diverges within the first steps; the check at step 200 finds the step.
        let wild = |s: &Schedule| Schedule {
            alpha: 10.0,
            epochs: 1,
            ..s.clone()
        };
        let mut every = gpu_on(ctx(), &model, &split, 4, path);
        let mut checks = gpu_on(ctx(), &model, &split, 4, path);
        let e = train::train(&mut every, &split, &wild(&schedule), &mut |_| {}).unwrap_err();
        let c = train::train(&mut checks, &split, &wild(&rare), &mut |_| {}).unwrap_err();
        let by_step =
            |e: &mnist_gpu::error::Error| e.to_string().split(':').next().unwrap().to_string();
        assert!(by_step(&e).starts_with("training diverged by step"), "{e}");
        assert_eq!(by_step(&c), by_step(&e), "{name}: {c} vs {e}");
        // Noticed once the read is back: after the check at step 200, at most a submit later.
        let noticed: usize = c
            .to_string()
            .split("noticed after step ")
            .nth(1)
            .unwrap()
            .trim_end_matches(|ch: char| !ch.is_ascii_digit())
            .parse()
            .unwrap();
        assert!(
            (200..=train::DIVERGENCE_NOTICED_WITHIN).contains(&noticed),
            "{name}: {c}"
        );
    }
}
