//! The fast CPU path (`cpu::fused`) against the reference path (`CpuBackend::new_reference`):
//! started from the same weights and fed the same batches, both must agree on every step's
//! loss and accuracy, on the parameters after several steps, and on the predictions, at
//! batch sizes and layer widths that do not fit the kernels' tiles and blocks evenly.

use crate::common;

use std::sync::Arc;

use mnist_gpu::backend::Backend;
use mnist_gpu::cpu::fused::{FusedConfig, Isa, Simd};
use mnist_gpu::cpu::CpuBackend;
use mnist_gpu::data::pool::{ImagePool, List, ListSizes};
use mnist_gpu::model::{Activation, Init, Model};

/// The same bar as the GPU/CPU parity test: f32 sums in another order drift apart slowly.
const ATOL: f64 = 1e-4;
const RTOL: f64 = 1e-3;

fn pool(n: usize, seed: u64) -> Arc<ImagePool> {
    let d = common::random_dataset(n, seed);
    Arc::new(ImagePool {
        images: d.images,
        labels: d.labels.unwrap(),
    })
}

/// Trains a fast and a reference backend side by side on `n` random samples with batches of
/// `batch` (the last batch of a pass is shorter), checking the loss and accuracy each step,
/// the parameters every few steps, and the dev logits and predictions at the end.
fn check(hidden: &[usize], activation: Activation, n: usize, batch: usize, steps: usize) {
    check_with(hidden, activation, n, batch, steps, FusedConfig::default());
}

fn check_with(
    hidden: &[usize],
    activation: Activation,
    n: usize,
    batch: usize,
    steps: usize,
    config: FusedConfig,
) {
    let dev = 300;
    let pool = pool(n + dev, 11);
    let sizes = ListSizes {
        train: n,
        dev,
        test: 0,
    };
    // Uniform init gives large activations, so that the gradients are far from zero.
    let init = if activation == Activation::Elu {
        Init::Uniform
    } else {
        Init::He
    };
    let model = Model::new(hidden, activation, init, 5).unwrap();
    let mut fast = CpuBackend::with_config(&model, pool.clone(), sizes, batch, config).unwrap();
    let mut reference = CpuBackend::new_reference(&model, pool.clone(), sizes, batch).unwrap();
    // A shuffled train list, so that blocks gather images from all over the pool.
    let train: Vec<u32> = (0..n as u32).map(|i| (i * 7919) % n as u32).collect();
    let dev_list: Vec<u32> = (n as u32..(n + dev) as u32).collect();
    for backend in [&mut fast, &mut reference] {
        backend.set_list(List::Train, &train).unwrap();
        backend.set_list(List::Dev, &dev_list).unwrap();
    }
    let what =
        format!("{hidden:?} {activation:?} n {n} batch {batch} {config:?}, fast vs reference");
    let tolerance = (ATOL, RTOL);
    common::train_side_by_side(
        &what,
        &mut fast,
        &mut reference,
        n,
        batch,
        steps,
        0.05,
        tolerance,
    );
}

#[test]
fn default_network_at_awkward_batch_sizes() {
    for batch in [1, 7, 63, 65, 1000] {
        check(&[10], Activation::Relu, 1200, batch, 7);
    }
}

#[test]
fn default_network_full_batch_not_a_multiple_of_the_block() {
    check(&[10], Activation::Relu, 5003, 5003, 6);
}

#[test]
fn odd_hidden_width_relu_and_elu() {
    check(&[13], Activation::Relu, 700, 65, 7);
    check(&[13], Activation::Elu, 700, 63, 7);
}

#[test]
fn wide_hidden_layer() {
    check(&[256], Activation::Relu, 1100, 1000, 4);
    check(&[256], Activation::Elu, 600, 64, 4);
}

#[test]
fn two_hidden_layers() {
    check(&[10, 10], Activation::Relu, 1000, 1000, 7);
    check(&[33, 17], Activation::Elu, 800, 7, 7);
    check(&[64, 5], Activation::Relu, 2000, 2000, 5);
}

/// More parts than blocks, blocks of 16 that the batches (20, 63, 1) do not fill, and parts
/// of a single sample.
#[test]
fn more_threads_than_blocks() {
    let config = FusedConfig {
        block: 16,
        threads: 8,
        min_part: 1,
        ..FusedConfig::default()
    };
    for batch in [20, 63, 1] {
        check_with(&[10], Activation::Relu, 500, batch, 5, config);
    }
    check_with(&[13, 7], Activation::Elu, 500, 63, 5, config);
}

/// Each copy of the kernels (portable, AVX2, AVX-512; those this CPU lacks fall back to a
/// narrower one) against the reference, at widths that leave tails in every tile and strip:
/// 784 inputs (49 vectors of 16), hidden layers of 13, 33 and 17 units, blocks and batches
/// that the tiles of 2 and 4 samples do not divide.
#[test]
fn every_instruction_set_matches_the_reference() {
    for isa in [Isa::Portable, Isa::Avx2, Isa::Avx512] {
        eprintln!("{isa:?} runs as {:?}", Simd::detect(isa).isa());
        let config = FusedConfig {
            block: 23,
            simd: isa,
            ..FusedConfig::default()
        };
        check_with(&[13], Activation::Relu, 700, 65, 5, config);
        check_with(&[33, 17], Activation::Elu, 600, 7, 5, config);
        check_with(&[10], Activation::Relu, 1000, 1000, 4, config);
        let whole_blocks = FusedConfig {
            simd: isa,
            ..FusedConfig::default()
        };
        check_with(&[256], Activation::Relu, 600, 129, 3, whole_blocks);
    }
}

/// The gradient of one full-batch step, fast vs reference, read back through the update
/// `W₁ = W₀ − α·dW` with α = 1.
#[test]
fn one_step_gradients_agree() {
    for (hidden, activation) in [
        (&[10][..], Activation::Relu),
        (&[256][..], Activation::Elu),
        (&[13, 9][..], Activation::Relu),
    ] {
        let n = 1000;
        let pool = pool(n, 3);
        let sizes = ListSizes {
            train: n,
            dev: 0,
            test: 0,
        };
        let model = Model::new(hidden, activation, Init::He, 9).unwrap();
        let mut fast = CpuBackend::new(&model, pool.clone(), sizes, n).unwrap();
        let mut reference = CpuBackend::new_reference(&model, pool.clone(), sizes, n).unwrap();
        let all: Vec<u32> = (0..n as u32).collect();
        let mut grads = Vec::new();
        for backend in [&mut fast, &mut reference] {
            backend.set_list(List::Train, &all).unwrap();
            backend.train_step(0, n, 1.0).unwrap();
            let after = backend.model().unwrap();
            let dw: Vec<Vec<f32>> = (model.layers.iter().zip(&after.layers))
                .flat_map(|(before, after)| {
                    let d = |b: &[f32], a: &[f32]| b.iter().zip(a).map(|(b, a)| b - a).collect();
                    [d(&before.w, &after.w), d(&before.b, &after.b)]
                })
                .collect();
            grads.push(dw);
        }
        for (i, (f, r)) in grads[0].iter().zip(&grads[1]).enumerate() {
            let name = format!("{hidden:?} {activation:?}: gradient {i} (dW1, db1, dW2, …)");
            common::assert_close(&name, f, &common::to_f64(r), ATOL, RTOL);
        }
    }
}

/// The thread split depends on the batch size only, so repeated runs are bit-identical.
#[test]
fn fast_path_is_deterministic() {
    let run = || {
        let n = 3000;
        let pool = pool(n, 4);
        let sizes = ListSizes {
            train: n,
            dev: 0,
            test: 0,
        };
        let model = Model::new(&[10], Activation::Relu, Init::He, 2).unwrap();
        let mut fast = CpuBackend::new(&model, pool, sizes, n).unwrap();
        fast.set_list(List::Train, &(0..n as u32).collect::<Vec<_>>())
            .unwrap();
        for _ in 0..5 {
            fast.train_step(0, n, 0.5).unwrap();
        }
        (fast.model().unwrap(), fast.batch_stats().unwrap())
    };
    assert_eq!(run(), run());
}

/// Not a check: a driver for profiling one path by hand, e.g.
/// `valgrind --tool=callgrind target/release/deps/integration-… --ignored --exact cpu_fast::profile_steps`
/// with `PROFILE_BATCH` (default 1024), `PROFILE_STEPS` (default 20), `PROFILE_PATH`
/// (`fast` or `reference`). Prints samples per second.
#[test]
#[ignore]
fn profile_steps() {
    let var = |name: &str, default: usize| {
        std::env::var(name).map_or(default, |v| v.parse().expect("a number"))
    };
    let (batch, steps) = (var("PROFILE_BATCH", 1024), var("PROFILE_STEPS", 20));
    let reference = std::env::var("PROFILE_PATH").is_ok_and(|p| p == "reference");
    let n = batch.max(4096);
    let sizes = ListSizes {
        train: n,
        dev: 0,
        test: 0,
    };
    let model = Model::new(&[10], Activation::Relu, Init::He, 1).unwrap();
    let pool = pool(n, 1);
    let mut backend = if reference {
        CpuBackend::new_reference(&model, pool, sizes, batch).unwrap()
    } else {
        CpuBackend::new(&model, pool, sizes, batch).unwrap()
    };
    backend
        .set_list(List::Train, &(0..n as u32).collect::<Vec<_>>())
        .unwrap();
    let start = std::time::Instant::now();
    for step in 0..steps {
        let first = (step * batch) % (n - batch + 1);
        backend.train_step(first, batch, 0.1).unwrap();
    }
    let seconds = start.elapsed().as_secs_f64();
    eprintln!(
        "{} batch {batch}: {:.3} M samples/s",
        if reference { "reference" } else { "fast" },
        (steps * batch) as f64 / seconds / 1e6
    );
}
