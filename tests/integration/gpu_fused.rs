//! The fused GPU step (`gpu::fused`, shaders/fused.wgsl) against an f64 reference of one step,
//! and against the GPU's per-operation path (the reference) over many steps: every tiling
//! (blocks of 8 to 64 samples, one to over a hundred workgroups per step), batches and layer widths
//! that fit none of them evenly, one and two hidden layers, ReLU and ELU, every optimizer, runs
//! of steps submitted together, and the choice between the two paths.

use crate::common;

use std::sync::{Arc, OnceLock};

use mnist_gpu::backend::{Backend, BatchStats, StepPath, STATS_KEPT};
use mnist_gpu::cpu::CpuBackend;
use mnist_gpu::data::pool::{ImagePool, List, ListSizes};
use mnist_gpu::data::{CLASSES, PIXELS};
use mnist_gpu::gpu::fused::{FusedVariant, Tiling};
use mnist_gpu::gpu::pipeline::ShaderChecks;
use mnist_gpu::gpu::{GpuBackend, GpuContext};
use mnist_gpu::model::{argmax_columns, Activation, Init, Model};
use mnist_gpu::optimizer::{Optimizer, OptimizerKind};
use serde_json::Value;

/// The GPU/CPU parity bar: f32 sums in another order drift apart slowly.
const ATOL: f64 = 1e-4;
const RTOL: f64 = 1e-3;

/// The context of this thread's mode (`common::with_shader_checks`), built once per mode.
fn ctx() -> Arc<GpuContext> {
    static CTX: OnceLock<Arc<GpuContext>> = OnceLock::new();
    static CHECKED: OnceLock<Arc<GpuContext>> = OnceLock::new();
    let ctx = match common::shader_checks() {
        ShaderChecks::Off => &CTX,
        ShaderChecks::On => &CHECKED,
    };
    ctx.get_or_init(|| Arc::new(common::gpu())).clone()
}

fn pool(n: usize, seed: u64) -> Arc<ImagePool> {
    let d = common::random_dataset(n, seed);
    Arc::new(ImagePool {
        images: d.images,
        labels: d.labels.unwrap(),
    })
}

fn assert_models_close(what: &str, got: &Model, want: &Model) {
    common::assert_models_close(what, got, want, ATOL, RTOL);
}

/// Every step's statistics of two runs over the same batches.
fn assert_steps_close(what: &str, got: &[BatchStats], want: &[BatchStats], samples: &[usize]) {
    assert_eq!(
        (got.len(), samples.len()),
        (want.len(), want.len()),
        "{what}: steps"
    );
    for (step, ((&g, &w), &m)) in got.iter().zip(want).zip(samples).enumerate() {
        common::assert_stats_close(&format!("{what}: step {step}"), g, w, m, (ATOL, RTOL, 1.0));
    }
}

/// One step's gradients in f64, written from the math (samples as columns, X = bytes / 255):
/// per layer dW (units, inputs) row-major and db, and the mean loss and accuracy.
fn reference_gradients(
    model: &Model,
    pool: &ImagePool,
    batch: &[u32],
) -> (Vec<(Vec<f64>, Vec<f64>)>, f64, f64) {
    let g = |z: f64| match model.activation {
        Activation::Relu => z.max(0.0),
        Activation::Elu if z > 0.0 => z,
        Activation::Elu => z.exp_m1(),
    };
    let slope = |z: f64| match model.activation {
        Activation::Relu => (z > 0.0) as u8 as f64,
        Activation::Elu if z > 0.0 => 1.0,
        Activation::Elu => z.exp(),
    };
    let m = batch.len() as f64;
    let mut grads: Vec<(Vec<f64>, Vec<f64>)> = model
        .layers
        .iter()
        .map(|l| (vec![0.0; l.w.len()], vec![0.0; l.outputs]))
        .collect();
    let (mut loss, mut correct) = (0.0, 0.0);
    for &image in batch {
        let x: Vec<f64> = pool.images[image as usize * PIXELS..][..PIXELS]
            .iter()
            .map(|&b| b as f64 / 255.0)
            .collect();
        // a[0] = X, z[l], a[l] = g(z[l]) for hidden layers.
        let mut a = vec![x];
        let mut z = Vec::new();
        for (l, layer) in model.layers.iter().enumerate() {
            let zl: Vec<f64> = (0..layer.outputs)
                .map(|i| {
                    let row = &layer.w[i * layer.inputs..][..layer.inputs];
                    let dot: f64 = row.iter().zip(&a[l]).map(|(&w, &x)| w as f64 * x).sum();
                    layer.b[i] as f64 + dot
                })
                .collect();
            a.push(zl.iter().map(|&v| g(v)).collect());
            z.push(zl);
        }
        let logits = z.last().unwrap();
        let label = pool.labels[image as usize] as usize;
        let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = logits.iter().map(|&v| (v - max).exp()).sum();
        loss += sum.ln() - (logits[label] - max);
        let best = (0..CLASSES).fold(0, |b, c| if logits[c] > logits[b] { c } else { b });
        correct += (best == label) as u8 as f64;
        // dZ[L] = softmax − Y, then back through the layers.
        let mut dz: Vec<f64> = (0..CLASSES)
            .map(|c| (logits[c] - max).exp() / sum - (c == label) as u8 as f64)
            .collect();
        for l in (0..model.layers.len()).rev() {
            let layer = &model.layers[l];
            let (dw, db) = &mut grads[l];
            for i in 0..layer.outputs {
                db[i] += dz[i] / m;
                for k in 0..layer.inputs {
                    dw[i * layer.inputs + k] += dz[i] * a[l][k] / m;
                }
            }
            if l > 0 {
                dz = (0..layer.inputs)
                    .map(|k| {
                        let back: f64 = (0..layer.outputs)
                            .map(|i| layer.w[i * layer.inputs + k] as f64 * dz[i])
                            .sum();
                        back * slope(z[l - 1][k])
                    })
                    .collect();
            }
        }
    }
    (grads, loss / m, correct / m)
}

/// One full-batch SGD step with α = 1 on the fused path: W₁ = W₀ − dW, so dW = W₀ − W₁
/// (exact to f32's resolution of W, about 1e-8 here) against the f64 reference. Tolerance:
/// the gradients are means over hundreds of samples of products summed in f32.
fn check_one_step(hidden: &[usize], activation: Activation, n: usize, tiling: Tiling) {
    let pool = pool(n, 21);
    let sizes = ListSizes {
        train: n,
        dev: 0,
        test: 0,
    };
    let init = if activation == Activation::Elu {
        Init::Uniform
    } else {
        Init::He
    };
    let model = Model::new(hidden, activation, init, 8).unwrap();
    let mut gpu = GpuBackend::with_tiling(ctx(), &model, &pool, sizes, n, tiling).unwrap();
    assert_eq!(gpu.path(), StepPath::Fused);
    // A scrambled list: the workgroups gather images from all over the pool.
    let batch: Vec<u32> = (0..n as u32).map(|i| (i * 7919) % n as u32).collect();
    gpu.set_list(List::Train, &batch).unwrap();
    gpu.train_step(0, n, 1.0).unwrap();
    let after = gpu.model().unwrap();
    let stats = gpu.batch_stats().unwrap();
    let (want, loss, accuracy) = reference_gradients(&model, &pool, &batch);
    let what = format!("{hidden:?} {activation:?} n {n} {tiling:?}");
    for (l, ((before, after), (dw, db))) in model
        .layers
        .iter()
        .zip(&after.layers)
        .zip(&want)
        .enumerate()
    {
        let step = |b: &[f32], a: &[f32]| -> Vec<f32> {
            b.iter()
                .zip(a)
                .map(|(&b, &a)| (b as f64 - a as f64) as f32)
                .collect()
        };
        let name = format!("{what}: dW{}", l + 1);
        common::assert_close(&name, &step(&before.w, &after.w), dw, 1e-6, 1e-3);
        let name = format!("{what}: db{}", l + 1);
        common::assert_close(&name, &step(&before.b, &after.b), db, 1e-6, 1e-3);
    }
    assert!(
        (stats.loss - loss).abs() <= 1e-5 * loss,
        "{what}: loss {} vs {loss}",
        stats.loss
    );
    assert_eq!(stats.accuracy, accuracy, "{what}: accuracy");
}

#[test]
fn one_step_matches_f64_in_every_tiling() {
    for block in [8, 16, 32, 64] {
        for max_groups in [1, 3, 512] {
            let tiling = Tiling {
                block,
                max_groups,
                ..Tiling::default()
            };
            check_one_step(&[10], Activation::Relu, 301, tiling);
        }
    }
    // 126 workgroups: `update` adds the slices with eight threads per parameter vec4.
    let many = Tiling {
        block: 8,
        max_groups: 512,
        ..Tiling::default()
    };
    check_one_step(&[10], Activation::Relu, 1003, many);
}

#[test]
fn one_step_matches_f64_at_every_width() {
    let tiling = Tiling::default();
    check_one_step(&[1], Activation::Relu, 97, tiling);
    check_one_step(&[7], Activation::Elu, 130, tiling);
    check_one_step(&[21], Activation::Relu, 65, tiling);
    check_one_step(
        &[64],
        Activation::Elu,
        100,
        Tiling {
            block: 16,
            max_groups: 3,
            ..Tiling::default()
        },
    );
    check_one_step(&[33, 17], Activation::Elu, 77, tiling);
    check_one_step(
        &[64, 64],
        Activation::Relu,
        40,
        Tiling {
            block: 8,
            max_groups: 2,
            ..Tiling::default()
        },
    );
    check_one_step(&[5, 3], Activation::Relu, 33, tiling);
}

/// Trains the fused and the reference GPU paths side by side on `n` random samples in batches
/// of `batch` (the last of a pass shorter): every step's loss and accuracy, the parameters
/// every few steps, the dev logits at the end.
fn check_paths(
    hidden: &[usize],
    activation: Activation,
    optimizer: Optimizer,
    n: usize,
    batch: usize,
    steps: usize,
    tiling: Tiling,
) {
    let dev = 150;
    let pool = pool(n + dev, 11);
    let sizes = ListSizes {
        train: n,
        dev,
        test: 0,
    };
    let model = Model::new(hidden, activation, Init::He, 5).unwrap();
    if let Some(why) = mnist_gpu::gpu::fused::unsupported(&ctx(), &model, tiling) {
        // An adapter with less workgroup memory: the tiling must be refused, not run.
        let refused = GpuBackend::with_tiling(ctx(), &model, &pool, sizes, batch, tiling);
        assert!(refused.is_err(), "{hidden:?} {tiling:?} ran although {why}");
        eprintln!("not exercised on this adapter: {hidden:?} {tiling:?} ({why})");
        return;
    }
    let mut fused = GpuBackend::with_tiling(ctx(), &model, &pool, sizes, batch, tiling).unwrap();
    let mut reference = GpuBackend::with_path(
        ctx(),
        &model,
        &pool,
        sizes,
        batch,
        Some(StepPath::Reference),
    )
    .unwrap();
    assert_eq!(
        (fused.path(), reference.path()),
        (StepPath::Fused, StepPath::Reference)
    );
    let train: Vec<u32> = (0..n as u32).map(|i| (i * 7919) % n as u32).collect();
    let dev_list: Vec<u32> = (n as u32..(n + dev) as u32).collect();
    for backend in [&mut fused, &mut reference] {
        backend.set_optimizer(optimizer).unwrap();
        backend.set_list(List::Train, &train).unwrap();
        backend.set_list(List::Dev, &dev_list).unwrap();
    }
    let what = format!(
        "{hidden:?} {activation:?} {} n {n} batch {batch} {tiling:?}, fused vs reference",
        optimizer.name()
    );
    let alpha = match optimizer {
        Optimizer::Adam { .. } => 0.002,
        _ => 0.05,
    };
    let tolerance = (ATOL, RTOL);
    common::train_side_by_side(
        &what,
        &mut fused,
        &mut reference,
        n,
        batch,
        steps,
        alpha,
        tolerance,
    );
}

#[test]
fn matches_the_reference_path_at_awkward_batch_sizes() {
    let sgd = Optimizer::Sgd;
    for batch in [1, 7, 63, 65, 1000] {
        check_paths(
            &[10],
            Activation::Relu,
            sgd,
            1200,
            batch,
            6,
            Tiling::default(),
        );
    }
    // Full batch, not a multiple of the block, over workgroups of several blocks each.
    let few_groups = Tiling {
        block: 16,
        max_groups: 7,
        ..Tiling::default()
    };
    check_paths(&[10], Activation::Relu, sgd, 1003, 1003, 5, few_groups);
}

#[test]
fn matches_the_reference_path_at_every_width_and_activation() {
    let sgd = Optimizer::Sgd;
    let t = Tiling::default();
    check_paths(&[13], Activation::Elu, sgd, 700, 65, 6, t);
    check_paths(&[64], Activation::Relu, sgd, 600, 129, 5, t);
    check_paths(
        &[33, 17],
        Activation::Elu,
        sgd,
        500,
        63,
        6,
        Tiling {
            block: 8,
            max_groups: 5,
            ..Tiling::default()
        },
    );
    check_paths(
        &[64, 5],
        Activation::Relu,
        sgd,
        800,
        800,
        4,
        Tiling {
            block: 64,
            max_groups: 512,
            ..Tiling::default()
        },
    );
}

#[test]
fn matches_the_reference_path_with_every_optimizer() {
    let momentum = Optimizer::with_defaults(OptimizerKind::Momentum);
    let adam = Optimizer::with_defaults(OptimizerKind::Adam);
    let t = Tiling::default();
    check_paths(&[10], Activation::Relu, momentum, 600, 100, 12, t);
    check_paths(&[10], Activation::Relu, adam, 600, 600, 12, t);
    check_paths(
        &[20, 11],
        Activation::Elu,
        adam,
        500,
        64,
        12,
        Tiling {
            block: 16,
            max_groups: 3,
            ..Tiling::default()
        },
    );
}

/// Each candidate variant of the fused step alone, then all of them together (`bench --fused`).
fn variants() -> Vec<FusedVariant> {
    let mut each: Vec<FusedVariant> = FusedVariant::NAMES
        .iter()
        .map(|name| FusedVariant::parse(name).unwrap())
        .collect();
    each.push(FusedVariant::all());
    each
}

fn tiling_with(block: usize, max_groups: usize, variant: FusedVariant) -> Tiling {
    Tiling {
        block,
        max_groups,
        variant,
    }
}

/// Every variant's one step against f64: a full batch with a short last block (65 in blocks of
/// 32, several blocks per workgroup), dW1 kept in registers (H1 ≤ 16) and not (21, 64), a
/// batch of 1, two hidden layers, ELU, and 126 slices (`update`'s 32 lanes with four sums).
#[test]
fn every_variant_matches_f64_in_one_step() {
    for v in variants() {
        check_one_step(&[10], Activation::Relu, 65, tiling_with(32, 1, v));
        check_one_step(&[10], Activation::Relu, 1003, tiling_with(8, 512, v));
        check_one_step(&[21], Activation::Elu, 33, tiling_with(16, 2, v));
        check_one_step(&[64], Activation::Relu, 1, tiling_with(8, 512, v));
        check_one_step(&[7, 5], Activation::Elu, 77, tiling_with(16, 512, v));
        check_one_step(&[16, 64], Activation::Relu, 40, tiling_with(64, 512, v));
    }
}

/// Every variant against the reference path over several steps: batches of 1, 7, 33, 65 and a
/// full batch that ends in a short block, one and two hidden layers, ReLU and ELU, every
/// optimizer.
#[test]
fn every_variant_matches_the_reference_path() {
    let sgd = Optimizer::Sgd;
    let momentum = Optimizer::with_defaults(OptimizerKind::Momentum);
    let adam = Optimizer::with_defaults(OptimizerKind::Adam);
    for v in variants() {
        let t = tiling_with(32, 512, v);
        for batch in [1, 7, 33, 65] {
            check_paths(&[10], Activation::Relu, sgd, 400, batch, 4, t);
        }
        check_paths(
            &[10],
            Activation::Relu,
            sgd,
            1003,
            1003,
            3,
            tiling_with(8, 512, v),
        );
        check_paths(&[13], Activation::Elu, momentum, 300, 65, 5, t);
        check_paths(
            &[20, 11],
            Activation::Elu,
            adam,
            300,
            33,
            5,
            tiling_with(16, 3, v),
        );
        check_paths(&[33, 17], Activation::Relu, adam, 300, 300, 4, t);
    }
}

/// With every switch off (the default), the pipelines take the constants they always did: the
/// default tiling runs exactly what `GpuBackend::new` runs, bit for bit over a few steps.
#[test]
fn the_default_variant_is_the_default_kernel() {
    assert_eq!(Tiling::default().variant, FusedVariant::default());
    let n = 320;
    let pool = pool(n, 13);
    let sizes = ListSizes {
        train: n,
        dev: 0,
        test: 0,
    };
    let model = Model::new(&[10], Activation::Relu, Init::He, 6).unwrap();
    let mut plain = GpuBackend::new(ctx(), &model, &pool, sizes, 64).unwrap();
    let tiling = plain.tiling().expect("the fused path");
    assert_eq!(tiling.variant, FusedVariant::default());
    let mut tiled = GpuBackend::with_tiling(ctx(), &model, &pool, sizes, 64, tiling).unwrap();
    let mut all = GpuBackend::with_tiling(
        ctx(),
        &model,
        &pool,
        sizes,
        64,
        Tiling {
            variant: FusedVariant::all(),
            ..tiling
        },
    )
    .unwrap();
    for backend in [&mut plain, &mut tiled, &mut all] {
        backend
            .set_list(List::Train, &(0..n as u32).collect::<Vec<_>>())
            .unwrap();
        for step in 0..5 {
            backend.train_step(step * 64, 64, 0.05).unwrap();
        }
    }
    assert_eq!(plain.model().unwrap(), tiled.model().unwrap());
    // And a variant does change the order of some sums (else this test could not tell).
    assert_ne!(plain.model().unwrap(), all.model().unwrap());
}

/// With `--augment` the step reads shifted copies in batch order, and `early-labels` must take
/// each label from the index list all the same: every switch on, shifted steps, against the CPU.
#[test]
fn every_variant_trains_on_shifted_copies() {
    use mnist_gpu::data::pool::Shift;
    let n = 300;
    let pool = pool(n, 14);
    let sizes = ListSizes {
        train: n,
        dev: 0,
        test: 0,
    };
    let model = Model::new(&[10, 6], Activation::Elu, Init::He, 3).unwrap();
    let all = tiling_with(16, 512, FusedVariant::all());
    let mut gpu = GpuBackend::with_tiling(ctx(), &model, &pool, sizes, 70, all).unwrap();
    let mut cpu = CpuBackend::new(&model, pool.clone(), sizes, 70).unwrap();
    // A scrambled list, so that batch order and pool order differ.
    let list: Vec<u32> = (0..n as u32).map(|i| (i * 7919) % n as u32).collect();
    let lens: Vec<usize> = (0..8).map(|step| 33 + 5 * step).collect();
    let mut stats = Vec::new();
    for backend in [&mut gpu as &mut dyn Backend, &mut cpu] {
        backend.set_list(List::Train, &list).unwrap();
        for (step, &len) in lens.iter().enumerate() {
            let shifts: Vec<Shift> = (0..len as i32)
                .map(|k| Shift {
                    dx: (k % 5 - 2) as _,
                    dy: ((k + step as i32) % 3 - 1) as _,
                })
                .collect();
            backend
                .train_step_shifted(step * 20, len, 0.05, &shifts)
                .unwrap();
        }
        stats.push(backend.step_stats().unwrap());
    }
    assert_steps_close(
        "shifted, all switches, GPU vs CPU",
        &stats[0],
        &stats[1],
        &lens,
    );
    assert_models_close(
        "after 8 shifted steps, all switches",
        &gpu.model().unwrap(),
        &cpu.model().unwrap(),
    );
}

/// `bench --fused` and `--block auto`: the switches named in the header and in each JSON entry,
/// each batch size's block; a misspelt switch is one line that lists the valid ones.
#[test]
fn bench_runs_the_variants_and_names_them() {
    use crate::bench_cli::{bench, json_array};
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--backend",
        "gpu",
        "--samples",
        "2048",
        "--batch-sizes",
        "64,full",
        "--block",
        "auto",
        "--fused",
        "tree-sums,fast-bytes",
        "--json",
    ];
    let out = bench(dir.path(), &args);
    let entries = json_array(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let header = "fused step: block auto (from the batch size), at most 512 workgroups, \
                  variants: tree-sums,fast-bytes";
    assert!(stdout.contains(header), "{stdout}");
    let got: Vec<(Value, Value)> = entries
        .iter()
        .map(|e| (e["block"].clone(), e["fused"].clone()))
        .collect();
    let switches = serde_json::json!(["tree-sums", "fast-bytes"]);
    assert_eq!(
        got,
        vec![(8.into(), switches.clone()), (16.into(), switches)]
    );
    let out = bench(dir.path(), &["--backend", "gpu", "--fused", "tree-sum"]);
    let line = common::output::assert_one_line_error(&out);
    assert!(
        line.contains("\"tree-sum\"") && line.contains("wide-update"),
        "{line}"
    );
}

/// Steps recorded into shared submits with no read in between (up to 64 a submit), across
/// epochs (a new list each), against the CPU: every step's statistics and the final model.
#[test]
fn runs_of_steps_without_reads_match_the_cpu() {
    let n = 500;
    let batch = 37;
    let pool = pool(n, 5);
    let sizes = ListSizes {
        train: n,
        dev: 0,
        test: 0,
    };
    let model = Model::new(&[12], Activation::Relu, Init::He, 2).unwrap();
    let mut gpu = GpuBackend::new(ctx(), &model, &pool, sizes, batch).unwrap();
    let mut cpu = CpuBackend::new(&model, pool.clone(), sizes, batch).unwrap();
    let adam = Optimizer::with_defaults(OptimizerKind::Adam);
    let mut stats: Vec<Vec<BatchStats>> = Vec::new();
    for backend in [&mut gpu as &mut dyn Backend, &mut cpu] {
        backend.set_optimizer(adam).unwrap();
        let mut all = Vec::new();
        for epoch in 0..10u32 {
            let order: Vec<u32> = (0..n as u32)
                .map(|i| (i * (2 * epoch + 1) + epoch) % n as u32)
                .collect();
            backend.set_list(List::Train, &order).unwrap();
            for start in (0..n).step_by(batch) {
                backend
                    .train_step(start, batch.min(n - start), 0.003)
                    .unwrap();
            }
        }
        all.extend(backend.step_stats().unwrap());
        stats.push(all);
    }
    let per_epoch: Vec<usize> = (0..n).step_by(batch).map(|s| batch.min(n - s)).collect();
    let samples = per_epoch.repeat(10);
    assert_steps_close("GPU vs CPU", &stats[0], &stats[1], &samples);
    assert_models_close(
        "after 140 steps",
        &gpu.model().unwrap(),
        &cpu.model().unwrap(),
    );
    assert!(gpu.step_stats().unwrap().is_empty(), "read twice");
}

/// `--augment` over runs of steps with no read in between: each step's shifts in a region of
/// their own, and a submit when the regions run out (13 of them at a capacity of 20,000).
#[test]
fn shifted_runs_of_steps_match_the_cpu() {
    use mnist_gpu::data::pool::Shift;
    use rand::{rngs::StdRng, Rng, SeedableRng};
    let n = 600;
    let pool = pool(n, 9);
    let sizes = ListSizes {
        train: n,
        dev: 0,
        test: 0,
    };
    let capacity = 20_000;
    let model = Model::new(&[10], Activation::Relu, Init::He, 3).unwrap();
    let mut gpu = GpuBackend::new(ctx(), &model, &pool, sizes, capacity).unwrap();
    let mut cpu = CpuBackend::new(&model, pool.clone(), sizes, capacity).unwrap();
    let mut stats = Vec::new();
    for backend in [&mut gpu as &mut dyn Backend, &mut cpu] {
        backend
            .set_list(List::Train, &(0..n as u32).collect::<Vec<_>>())
            .unwrap();
        let mut rng = StdRng::seed_from_u64(4);
        for step in 0..60 {
            let len = 23 + step % 7;
            let shifts: Vec<Shift> = (0..len)
                .map(|_| Shift {
                    dx: rng.random_range(-2..=2),
                    dy: rng.random_range(-2..=2),
                })
                .collect();
            let start = (step * 29) % (n - len);
            backend
                .train_step_shifted(start, len, 0.05, &shifts)
                .unwrap();
        }
        stats.push(backend.step_stats().unwrap());
    }
    let samples: Vec<usize> = (0..60).map(|step| 23 + step % 7).collect();
    assert_steps_close("shifted, GPU vs CPU", &stats[0], &stats[1], &samples);
    assert_models_close(
        "after 60 shifted steps",
        &gpu.model().unwrap(),
        &cpu.model().unwrap(),
    );
}

/// The statistics of the last STATS_KEPT steps survive; older unread ones are dropped.
#[test]
fn step_stats_keep_the_latest_steps() {
    let n = 40;
    let pool = pool(n, 6);
    let sizes = ListSizes {
        train: n,
        dev: 0,
        test: 0,
    };
    let model = Model::new(&[3], Activation::Relu, Init::He, 2).unwrap();
    let mut gpu = GpuBackend::new(ctx(), &model, &pool, sizes, 8).unwrap();
    let mut cpu = CpuBackend::new(&model, pool.clone(), sizes, 8).unwrap();
    let steps = STATS_KEPT + 37;
    let mut got = Vec::new();
    for backend in [&mut gpu as &mut dyn Backend, &mut cpu] {
        backend
            .set_list(List::Train, &(0..n as u32).collect::<Vec<_>>())
            .unwrap();
        for step in 0..steps {
            backend.train_step((step * 8) % n, 8, 0.01).unwrap();
        }
        got.push(backend.step_stats().unwrap());
    }
    assert_eq!(got[0].len(), STATS_KEPT);
    assert_steps_close("the last steps", &got[0], &got[1], &[8; STATS_KEPT]);
}

/// `set_model` then `logits` and `model` on the fused path: what was set is what is read, and
/// the logits are the CPU's.
#[test]
fn set_model_and_logits() {
    let n = 300;
    let pool = pool(n, 7);
    let sizes = ListSizes {
        train: 10,
        dev: 0,
        test: n - 10,
    };
    let model = Model::new(&[9, 6], Activation::Elu, Init::He, 1).unwrap();
    let other = Model::new(&[9, 6], Activation::Elu, Init::Uniform, 2).unwrap();
    let mut gpu = GpuBackend::new(ctx(), &model, &pool, sizes, 10).unwrap();
    assert_eq!(gpu.path(), StepPath::Fused);
    gpu.set_model(&other).unwrap();
    assert_eq!(gpu.model().unwrap(), other);
    let mut cpu = CpuBackend::new(&other, pool.clone(), sizes, 10).unwrap();
    let test: Vec<u32> = (10..n as u32).collect();
    gpu.set_list(List::Test, &test).unwrap();
    cpu.set_list(List::Test, &test).unwrap();
    let (g, c) = (
        gpu.logits(List::Test).unwrap(),
        cpu.logits(List::Test).unwrap(),
    );
    common::assert_close("test logits", &g, &common::to_f64(&c), ATOL, RTOL);
    assert_eq!(argmax_columns(&g).len(), n - 10);
}

/// Where the fused path does not cover the network, the reference path runs and says why;
/// asked for by name, the fused path is refused with the reason.
#[test]
fn the_path_is_chosen_and_named() {
    let pool = pool(100, 8);
    let sizes = ListSizes {
        train: 100,
        dev: 0,
        test: 0,
    };
    for hidden in [&[10][..], &[64, 64], &[1]] {
        let model = Model::new(hidden, Activation::Relu, Init::He, 1).unwrap();
        let gpu = GpuBackend::new(ctx(), &model, &pool, sizes, 50).unwrap();
        assert_eq!(gpu.path(), StepPath::Fused, "{hidden:?}");
        assert_eq!(gpu.path_note(), None);
    }
    for hidden in [&[65][..], &[10, 10, 10], &[10, 100]] {
        let model = Model::new(hidden, Activation::Relu, Init::He, 1).unwrap();
        let gpu = GpuBackend::new(ctx(), &model, &pool, sizes, 50).unwrap();
        assert_eq!(gpu.path(), StepPath::Reference, "{hidden:?}");
        let note = gpu.path_note().expect("a reason");
        assert!(note.contains("64 units"), "{note}");
        let refused = GpuBackend::with_path(ctx(), &model, &pool, sizes, 50, Some(StepPath::Fused));
        let message = refused.err().expect("refused").to_string();
        assert!(message.contains("--path reference"), "{message}");
    }
    let model = Model::new(&[10], Activation::Relu, Init::He, 1).unwrap();
    let asked =
        GpuBackend::with_path(ctx(), &model, &pool, sizes, 50, Some(StepPath::Reference)).unwrap();
    assert_eq!(
        (asked.path(), asked.path_note()),
        (StepPath::Reference, None)
    );
}

/// `classify` (images not in the pool, as `serve` gets them) gives the logits `logits` gives for
/// the same images in the pool, on every backend and path, over more images than one pass holds.
#[test]
fn classify_matches_the_logits_of_a_list() {
    let n = 5000;
    let pool = pool(n, 12);
    let sizes = ListSizes {
        train: 10,
        dev: 0,
        test: n - 10,
    };
    let model = Model::new(&[11], Activation::Elu, Init::He, 4).unwrap();
    let test: Vec<u32> = (10..n as u32).collect();
    let images = &pool.images[10 * mnist_gpu::data::PIXELS..];
    let cpu = || CpuBackend::new(&model, pool.clone(), sizes, 10);
    let backends: Vec<(&str, Box<dyn Backend>)> = vec![
        ("cpu", Box::new(cpu().unwrap())),
        (
            "cpu reference",
            Box::new(CpuBackend::new_reference(&model, pool.clone(), sizes, 10).unwrap()),
        ),
        (
            "gpu fused",
            Box::new(
                GpuBackend::with_path(ctx(), &model, &pool, sizes, 10, Some(StepPath::Fused))
                    .unwrap(),
            ),
        ),
        (
            "gpu reference",
            Box::new(
                GpuBackend::with_path(ctx(), &model, &pool, sizes, 10, Some(StepPath::Reference))
                    .unwrap(),
            ),
        ),
    ];
    let mut listed_cpu = cpu().unwrap();
    listed_cpu.set_list(List::Test, &test).unwrap();
    let want = listed_cpu.logits(List::Test).unwrap();
    for (name, mut backend) in backends {
        let got = backend.classify(images).unwrap();
        common::assert_close(name, &got, &common::to_f64(&want), ATOL, RTOL);
        backend.set_list(List::Test, &test).unwrap();
        let listed = backend.logits(List::Test).unwrap();
        common::assert_close(
            &format!("{name}: the list"),
            &listed,
            &common::to_f64(&got),
            ATOL,
            RTOL,
        );
    }
    assert!(
        cpu().unwrap().classify(&images[..100]).is_err(),
        "a part of an image"
    );
}

/// The fused step's tests against f64 and the reference path again, with wgpu's shader runtime
/// checks on (`MNIST_GPU_SHADER_CHECKS=1`): the switch back builds a working step.
#[test]
fn with_shader_checks_on() {
    common::with_shader_checks(|| {
        one_step_matches_f64_in_every_tiling();
        matches_the_reference_path_at_awkward_batch_sizes();
        runs_of_steps_without_reads_match_the_cpu();
        shifted_runs_of_steps_match_the_cpu();
        assert_eq!(ctx().shader_checks, ShaderChecks::On);
    });
}
