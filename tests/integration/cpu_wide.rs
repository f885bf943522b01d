//! The CPU's wide engine (`cpu::wide`): its three products on their own against f64, with
//! every output starting as NaN (an element a kernel forgets stays NaN and fails, and the
//! worst element is named), on every instruction set's copy and split over threads; and the
//! whole engine against the reference path (`CpuBackend::new_reference`) for 1, 2 and 3 hidden
//! layers, widths that fill no tile evenly, short last batches, batches of several blocks
//! (split into parts), and every optimizer (whose update the engine fuses into dW).

use crate::common;

use std::sync::Arc;

use mnist_gpu::backend::Backend;
use mnist_gpu::cpu::fused::{FusedConfig, Isa, Simd};
use mnist_gpu::cpu::wide::{self, Run};
use mnist_gpu::cpu::CpuBackend;
use mnist_gpu::data::pool::{ImagePool, List, ListSizes};
use mnist_gpu::model::{Activation, Init, Model};
use mnist_gpu::optimizer::{Optimizer, OptimizerKind};

/// The instruction sets to run (`Neon` is `Portable` off aarch64; those this CPU lacks fall
/// back to a narrower copy).
const ISAS: [Isa; 4] = [Isa::Portable, Isa::Neon, Isa::Avx2, Isa::Avx512];

/// (units, inputs, samples): every tile, strip and padding left ragged somewhere.
const SHAPES: [(usize, usize, usize); 7] = [
    (1, 784, 1),
    (7, 33, 17),
    (33, 7, 64),
    (13, 1600, 5),
    (800, 784, 64),
    (2049, 33, 48),
    (10, 2049, 23),
];

/// `g(z)` and `g'(z)` in f64.
fn act(z: f64, activation: Activation) -> (f64, f64) {
    match activation {
        Activation::Relu => (z.max(0.0), (z > 0.0) as u8 as f64),
        Activation::Elu if z > 0.0 => (z, 1.0),
        Activation::Elu => (z.exp() - 1.0, z.exp()),
    }
}

/// The bound for a sum of `depth` f32 products: relative to the sum of their magnitudes.
fn rtol(depth: usize) -> f64 {
    (depth + 2) as f64 * 2f64.powi(-23)
}

fn nan(len: usize) -> Vec<f32> {
    vec![f32::NAN; len]
}

/// Column j < n of a (rows, nb) feature-major buffer, as one list per row.
fn real(v: &[f32], rows: usize, nb: usize, n: usize) -> Vec<f32> {
    (0..rows)
        .flat_map(|r| v[r * nb..r * nb + n].to_vec())
        .collect()
}

fn check_forward(on: Run, (units, inputs, n): (usize, usize, usize), activation: Activation) {
    let nb = n.next_multiple_of(16);
    let ld_t = units.next_multiple_of(16);
    let w = common::random_floats(units * inputs, 0.5, 1);
    let b = common::random_floats(units, 0.5, 2);
    let mut a = common::random_floats(inputs * nb, 1.0, 3);
    for row in a.chunks_exact_mut(nb) {
        row[n..].fill(0.0); // the engine's padding samples are zeros
    }
    let (mut z, mut a_out, mut a_t) = (nan(units * nb), nan(units * nb), nan(nb * ld_t));
    let hidden = Some((&mut a_out[..], &mut a_t[..], ld_t));
    wide::forward_product(
        on,
        (&w, &b, inputs),
        &a,
        (n, nb),
        &mut z,
        hidden,
        activation,
    );
    let (mut want_z, mut want_a, mut scale) = (vec![], vec![], vec![]);
    for i in 0..units {
        for j in 0..n {
            let terms = (0..inputs).map(|k| w[i * inputs + k] as f64 * a[k * nb + j] as f64);
            let (sum, size) = terms.fold((0.0, 0.0), |(s, m), t| (s + t, m + t.abs()));
            let zv = sum + b[i] as f64;
            want_z.push(zv);
            want_a.push(act(zv, activation).0);
            scale.push(size + (b[i] as f64).abs());
        }
    }
    let what = format!("forward {units}x{inputs}, {n} samples, {activation:?}, {on:?}");
    let tol = rtol(inputs);
    let got_z = real(&z, units, nb, n);
    common::assert_close_scaled(&format!("{what}: Z"), &got_z, &want_z, &scale, 1e-6, tol);
    let got_a = real(&a_out, units, nb, n);
    common::assert_close_scaled(&format!("{what}: A"), &got_a, &want_a, &scale, 1e-6, tol);
    // A_t row j holds sample j's activations: compare it unit-major like A.
    let got_t: Vec<f32> = (0..units)
        .flat_map(|i| (0..n).map(|j| a_t[j * ld_t + i]).collect::<Vec<_>>())
        .collect();
    common::assert_close_scaled(&format!("{what}: A_t"), &got_t, &want_a, &scale, 1e-6, tol);
}

fn check_input_grad(on: Run, (units, inputs, n): (usize, usize, usize), activation: Activation) {
    let nb = n.next_multiple_of(16);
    let w = common::random_floats(units * inputs, 0.5, 4);
    let dz = common::random_floats(units * nb, 1.0, 5);
    let z_below = common::random_floats(inputs * nb, 1.0, 6);
    let mut dz_below = nan(inputs * nb);
    wide::input_grad_product(
        on,
        (&w, units, inputs),
        (&dz, nb),
        &z_below,
        &mut dz_below,
        activation,
    );
    let (mut want, mut scale) = (vec![], vec![]);
    for k in 0..inputs {
        for j in 0..n {
            let terms = (0..units).map(|i| w[i * inputs + k] as f64 * dz[i * nb + j] as f64);
            let (sum, size) = terms.fold((0.0, 0.0), |(s, m), t| (s + t, m + t.abs()));
            let slope = act(z_below[k * nb + j] as f64, activation).1;
            want.push(sum * slope);
            scale.push(size * slope.abs());
        }
    }
    let what = format!("dA {units}x{inputs}, {n} samples, {activation:?}, {on:?}");
    let got = real(&dz_below, inputs, nb, n);
    common::assert_close_scaled(
        &what,
        &got,
        &want,
        &scale,
        1e-6,
        rtol(units) + 2f64.powi(-21),
    );
}

fn check_weight_grad(on: Run, (units, inputs, n): (usize, usize, usize)) {
    let nb = n.next_multiple_of(16);
    let ld = inputs.next_multiple_of(16);
    let dz = common::random_floats(units * nb, 1.0, 7);
    let mut a_t = common::random_floats(n * ld, 1.0, 8);
    for row in a_t.chunks_exact_mut(ld) {
        row[inputs..].fill(0.0); // the engine's padding features are zeros
    }
    // Once from zero (the sums start NaN-poisoned), then added onto those sums.
    let (mut sums, mut db) = (nan(units * ld), nan(units));
    for first in [true, false] {
        let before = sums.clone();
        let db_before = db.clone();
        wide::weight_grad_product(
            on,
            (&dz, nb, n),
            (&a_t, ld, inputs),
            &mut sums,
            &mut db,
            first,
        );
        let (mut want, mut scale, mut got) = (vec![], vec![], vec![]);
        for i in 0..units {
            for k in 0..inputs {
                let terms = (0..n).map(|j| dz[i * nb + j] as f64 * a_t[j * ld + k] as f64);
                let (sum, size) = terms.fold((0.0, 0.0), |(s, m), t| (s + t, m + t.abs()));
                let start = if first {
                    0.0
                } else {
                    before[i * ld + k] as f64
                };
                want.push(start + sum);
                scale.push(start.abs() + size);
                got.push(sums[i * ld + k]);
            }
        }
        let what = format!("dW {units}x{inputs}, {n} samples, first {first}, {on:?}");
        common::assert_close_scaled(&what, &got, &want, &scale, 1e-6, rtol(n));
        let want_db: Vec<f64> = (0..units)
            .map(|i| {
                let start = if first { 0.0 } else { db_before[i] as f64 };
                start + (0..n).map(|j| dz[i * nb + j] as f64).sum::<f64>()
            })
            .collect();
        let db_scale: Vec<f64> = (0..units)
            .map(|i| (0..n).map(|j| (dz[i * nb + j] as f64).abs()).sum::<f64>() + 1.0)
            .collect();
        common::assert_close_scaled(
            &format!("{what}: db"),
            &db,
            &want_db,
            &db_scale,
            1e-6,
            rtol(n),
        );
    }
}

#[test]
fn products_match_f64_on_every_instruction_set_and_split() {
    for isa in ISAS {
        let simd = Simd::detect(isa);
        eprintln!("{isa:?} runs as {:?}", simd.isa());
        for threads in [1, 3] {
            let on = Run { simd, threads };
            for (s, &shape) in SHAPES.iter().enumerate() {
                let activation = if s % 2 == 0 {
                    Activation::Relu
                } else {
                    Activation::Elu
                };
                check_forward(on, shape, activation);
                check_input_grad(on, shape, activation);
                check_weight_grad(on, shape);
            }
        }
    }
}

fn pool(n: usize, seed: u64) -> Arc<ImagePool> {
    let d = common::random_dataset(n, seed);
    Arc::new(ImagePool {
        images: d.images,
        labels: d.labels.unwrap(),
    })
}

/// The wide engine (forced on, whatever the width) against the reference, trained side by
/// side with `optimizer` on `n` random samples in batches of `batch`.
fn check(hidden: &[usize], n: usize, batch: usize, optimizer: OptimizerKind, config: FusedConfig) {
    let dev = 200;
    let pool = pool(n + dev, 11);
    let sizes = ListSizes {
        train: n,
        dev,
        test: 0,
    };
    let model = Model::new(hidden, Activation::Relu, Init::He, 5).unwrap();
    let config = FusedConfig {
        wide: Some(true),
        ..config
    };
    let mut fast = CpuBackend::with_config(&model, pool.clone(), sizes, batch, config).unwrap();
    let mut reference = CpuBackend::new_reference(&model, pool.clone(), sizes, batch).unwrap();
    let train: Vec<u32> = (0..n as u32).map(|i| (i * 7919) % n as u32).collect();
    let dev_list: Vec<u32> = (n as u32..(n + dev) as u32).collect();
    for backend in [&mut fast, &mut reference] {
        backend.set_list(List::Train, &train).unwrap();
        backend.set_list(List::Dev, &dev_list).unwrap();
        backend
            .set_optimizer(Optimizer::with_defaults(optimizer))
            .unwrap();
    }
    let alpha = if optimizer == OptimizerKind::Adam {
        0.002
    } else {
        0.05
    };
    let what =
        format!("{hidden:?} n {n} batch {batch} {optimizer:?} {config:?}, wide vs reference");
    let steps = n.div_ceil(batch) + 1;
    common::train_side_by_side(
        &what,
        &mut fast,
        &mut reference,
        n,
        batch,
        steps,
        alpha,
        (1e-4, 1e-3),
    );
}

/// One, two and three hidden layers, at the widths of the issue (1, 7, 33, 800, 1600,
/// 2049), each optimizer; passes with a short last batch (150 = 64 + 64 + 22).
#[test]
fn wide_engine_matches_the_reference() {
    use OptimizerKind::*;
    let config = FusedConfig::default();
    check(&[1], 150, 64, Sgd, config);
    check(&[7], 150, 64, Adam, config);
    check(&[33], 150, 64, Momentum, config);
    check(&[800], 150, 64, Adam, config);
    check(&[1600], 100, 64, Sgd, config);
    check(&[2049], 100, 64, Momentum, config);
    check(&[33, 7], 150, 64, Adam, config);
    check(&[800, 33], 100, 64, Sgd, config);
    check(&[7, 33, 1], 150, 64, Momentum, config);
    check(&[64, 48, 40], 150, 50, Adam, config);
}

/// Batches of several blocks: into one part's sums (fewer blocks than `PART_BLOCKS` per
/// thread) and into parts, one per thread, reduced and updated in one pass; on each
/// instruction set.
#[test]
fn batches_of_many_blocks_and_parts() {
    use OptimizerKind::*;
    for isa in ISAS {
        let config = FusedConfig {
            wide_block: 16,
            threads: 3,
            simd: isa,
            ..FusedConfig::default()
        };
        check(&[33], 300, 50, Adam, config); // 4 blocks of 12–13: one part
        check(&[33, 7], 300, 300, Momentum, config); // 19 blocks: 3 parts
        check(&[800], 290, 290, Sgd, config); // a short last batch too
        check(&[7, 33, 1], 250, 200, Adam, config);
    }
}

/// Bit-identical runs: the same batches twice, and, for batches of one block, on 1 thread
/// or 5 (every element is summed in the same order however the rows are split).
#[test]
fn wide_engine_is_deterministic_and_independent_of_the_thread_count() {
    let run = |threads: usize, batch: usize| {
        let n = 600;
        let sizes = ListSizes {
            train: n,
            dev: 0,
            test: 0,
        };
        let model = Model::new(&[200, 40], Activation::Elu, Init::He, 2).unwrap();
        let config = FusedConfig {
            threads,
            ..FusedConfig::default()
        };
        let mut cpu = CpuBackend::with_config(&model, pool(n, 4), sizes, batch, config).unwrap();
        cpu.set_list(List::Train, &(0..n as u32).collect::<Vec<_>>())
            .unwrap();
        cpu.set_optimizer(Optimizer::with_defaults(OptimizerKind::Adam))
            .unwrap();
        for step in 0..6 {
            cpu.train_step((step * batch) % n, batch.min(n - (step * batch) % n), 0.001)
                .unwrap();
        }
        (cpu.model().unwrap(), cpu.batch_stats().unwrap())
    };
    assert!(run(1, 64) == run(5, 64), "batch 64 on 1 vs 5 threads");
    assert!(run(2, 600) == run(2, 600), "full batch, run twice");
}

/// `CpuBackend::new` runs the wide engine from `WIDE_UNITS` units in a hidden layer on.
#[test]
fn the_engine_is_chosen_by_width() {
    let config = FusedConfig::default();
    let model = |hidden: &[usize]| Model::new(hidden, Activation::Relu, Init::He, 1).unwrap();
    assert!(!wide::suits(&model(&[10]), &config));
    assert!(!wide::suits(&model(&[wide::WIDE_UNITS - 1, 10]), &config));
    assert!(wide::suits(&model(&[wide::WIDE_UNITS]), &config));
    assert!(wide::suits(&model(&[10, 1600]), &config));
}
