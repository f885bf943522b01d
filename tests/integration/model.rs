//! The model and the CPU backend: backpropagation agrees with finite differences, training is
//! reproducible from the seed, initialisation has the documented distributions, training on
//! real digits learns, bad configurations are refused, and the CPU twins in `cpu::ops` compute
//! what their documentation says on cases small enough to check by hand.


use crate::common::random_dataset;
use std::path::Path;
use std::sync::Arc;

use rand::{rngs::StdRng, Rng, SeedableRng};

use mnist_gpu::backend::Backend;
use mnist_gpu::cpu::ops;
use mnist_gpu::cpu::CpuBackend;
use mnist_gpu::data::pool::Split;
use mnist_gpu::data::pool::{ImagePool, List, ListSizes};
use mnist_gpu::data::{self, Dataset, CLASSES, PIXELS};
use mnist_gpu::layout::{Mat, MatMut};
use mnist_gpu::model::{loss_and_correct, Activation, Init, Model};
use mnist_gpu::train::{self, Progress, Report, Schedule};

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// `n` images of uniformly random bytes with random labels: every pixel is non-zero almost
/// surely, so every first-layer weight has a gradient worth checking.

fn random_pool(n: usize, seed: u64) -> Arc<ImagePool> {
    let d = random_dataset(n, seed);
    Arc::new(ImagePool {
        images: d.images,
        labels: d.labels.unwrap(),
    })
}

fn no_progress() -> impl FnMut(&Progress) {
    |_: &Progress| {}
}

fn mnist_path(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/mnist")
        .join(name)
}

// ---------------------------------------------------------------------------------------------
// Gradient check
// ---------------------------------------------------------------------------------------------

const GRAD_SAMPLES: usize = 12;

/// A backend over the `GRAD_SAMPLES` images of `pool` whose Train and Dev lists are the same
/// samples in the same order, so one full-batch step's gradient is the gradient of the Dev loss.
fn grad_backend(model: &Model, pool: &Arc<ImagePool>) -> CpuBackend {
    let sizes = ListSizes {
        train: GRAD_SAMPLES,
        dev: GRAD_SAMPLES,
        test: 0,
    };
    let mut backend = CpuBackend::new(model, pool.clone(), sizes, GRAD_SAMPLES).unwrap();
    let all: Vec<u32> = (0..GRAD_SAMPLES as u32).collect();
    backend.set_list(List::Train, &all).unwrap();
    backend.set_list(List::Dev, &all).unwrap();
    backend
}

/// The mean cross-entropy over the samples, for this model.
fn loss_of(model: &Model, pool: &Arc<ImagePool>) -> f64 {
    let mut backend = grad_backend(model, pool);
    let logits = backend.logits(List::Dev).unwrap();
    loss_and_correct(&logits, &pool.labels[..GRAD_SAMPLES]).0
}

/// An independent forward pass in f64, written from the model's documented layout
/// (`w[i * inputs + j]`, X = bytes / 255): the pre-activations `Z[l]` of every layer, one
/// `Vec` per sample.
fn reference_forward(model: &Model, pool: &ImagePool, samples: usize) -> Vec<Vec<Vec<f64>>> {
    let mut zs = vec![Vec::new(); model.layers.len()];
    for s in 0..samples {
        let mut input: Vec<f64> = pool.images[s * PIXELS..(s + 1) * PIXELS]
            .iter()
            .map(|&b| b as f64 / 255.0)
            .collect();
        for (l, layer) in model.layers.iter().enumerate() {
            let z: Vec<f64> = (0..layer.outputs)
                .map(|i| {
                    let row = &layer.w[i * layer.inputs..(i + 1) * layer.inputs];
                    layer.b[i] as f64
                        + row
                            .iter()
                            .zip(&input)
                            .map(|(&w, &x)| w as f64 * x)
                            .sum::<f64>()
                })
                .collect();
            input = z
                .iter()
                .map(|&z| match model.activation {
                    Activation::Relu => z.max(0.0),
                    Activation::Elu if z > 0.0 => z,
                    Activation::Elu => z.exp_m1(),
                })
                .collect();
            zs[l].push(z);
        }
    }
    zs
}

#[derive(Clone, Copy)]
enum Param {
    W(usize, usize),
    B(usize, usize),
}

fn param_mut(model: &mut Model, p: Param) -> &mut f32 {
    match p {
        Param::W(l, i) => &mut model.layers[l].w[i],
        Param::B(l, i) => &mut model.layers[l].b[i],
    }
}

/// Compares one gradient-descent step of the CPU backend (α = 1, so the change of each parameter
/// is its gradient) with central finite differences of the loss, on ~30 weights per layer and
/// every bias.
fn gradient_check(hidden: &[usize], activation: Activation, seed: u64) {
    // Tolerances. The logits are f32, so the loss (≈ 2.3 here) carries a rounding error of
    // about 1e-7 relative, ~3e-7 absolute; divided by 2·eps = 2e-3 that is up to ~1.5e-4 of
    // noise in each finite difference (over 200 seeds the largest error seen was 1.3e-4). The
    // truncation error of a central difference is O(eps²) ≈ 1e-6, and the backprop side is
    // exact to f32 rounding. So atol = 1e-3 and rtol = 1e-2 for the larger gradients. A wrong factor (1/m, a missing activation derivative, a
    // transposed product) makes errors of the size of the gradients themselves, 1e-2 and up.
    const EPS: f32 = 1e-3;
    const ATOL: f64 = 1e-3;
    const RTOL: f64 = 1e-2;

    let mut model = Model::new(hidden, activation, Init::He, seed).unwrap();
    // He init leaves the biases at exactly 0. Then a sample whose ReLU outputs into a layer are
    // all 0 (not rare with 5-7 units) has pre-activations exactly at ReLU's kink, where a
    // central difference measures half a slope. Small random biases avoid that, and also check
    // that the bias reaches the forward pass.
    let mut rng = StdRng::seed_from_u64(seed ^ 0xb1a5);
    for layer in &mut model.layers {
        for b in &mut layer.b {
            *b = rng.random_range(-0.1..0.1);
        }
    }
    let pool = random_pool(GRAD_SAMPLES, seed ^ 0xda7a);

    // The backend's logits agree with an f64 forward pass. Tolerance: f32 dot products of
    // length ≤ 784 with terms of size ≤ ~0.1 and logits of size ~1: 1e-4 absolute is ~100× the
    // expected rounding, far below what a layout mistake (a transposed W) would produce.
    let reference = reference_forward(&model, &pool, GRAD_SAMPLES);
    let logits = grad_backend(&model, &pool).logits(List::Dev).unwrap();
    let last = reference.len() - 1;
    for (s, z) in reference[last].iter().enumerate() {
        for (k, &want) in z.iter().enumerate() {
            let got = logits[s * CLASSES + k] as f64;
            assert!(
                (got - want).abs() < 1e-4,
                "sample {s} logit {k}: {got} vs f64 reference {want}"
            );
        }
    }
    // ReLU's kink: a perturbation of EPS moves a first-layer pre-activation by at most EPS
    // (pixels are ≤ 1), and later ones by at most EPS times the weights on the way (a few at
    // most here), so with every hidden |z| above 10·EPS no finite difference crosses the kink.
    // This is a precondition of the seed, not of the code: if it fails, pick another seed.
    let nearest = reference[..last]
        .iter()
        .flatten()
        .flatten()
        .fold(f64::INFINITY, |m, &z| m.min(z.abs()));
    if activation == Activation::Relu {
        assert!(
            nearest > 10.0 * EPS as f64,
            "seed {seed} puts a hidden pre-activation at {nearest:e}, near ReLU's kink: choose another seed"
        );
    }

    // Backprop: dP = P_before − P_after with α = 1.
    let mut backend = grad_backend(&model, &pool);
    let before = backend.model().unwrap();
    assert_eq!(before, model, "a new backend holds the model it was given");
    let logits_before = backend.logits(List::Dev).unwrap();
    backend.train_step(0, GRAD_SAMPLES, 1.0).unwrap();
    let after = backend.model().unwrap();
    assert_ne!(before, after, "a training step changed nothing");

    // The batch stats are measured in the step's forward pass, before its update: they must
    // match the loss of the logits before the step (f32 per-sample sums vs f64: 1e-5 relative).
    let stats = backend.batch_stats().unwrap();
    let (loss, correct) = loss_and_correct(&logits_before, &pool.labels[..GRAD_SAMPLES]);
    assert!(
        (stats.loss - loss).abs() <= 1e-5 * loss.abs(),
        "batch loss {} but the loss of the logits is {loss}",
        stats.loss
    );
    assert_eq!(stats.accuracy, correct as f64 / GRAD_SAMPLES as f64);

    let mut params = Vec::new();
    for (l, layer) in model.layers.iter().enumerate() {
        for _ in 0..30 {
            params.push(Param::W(l, rng.random_range(0..layer.w.len())));
        }
        for i in 0..layer.b.len() {
            params.push(Param::B(l, i));
        }
    }

    let mut failures = Vec::new();
    let mut worst = 0.0f64;
    let mut nonzero = 0;
    for &p in &params {
        let mut plus = model.clone();
        let mut minus = model.clone();
        let x = *param_mut(&mut plus, p);
        *param_mut(&mut plus, p) = x + EPS;
        *param_mut(&mut minus, p) = x - EPS;
        // The step actually taken in f32, not the nominal 2·eps.
        let h = (*param_mut(&mut plus, p) as f64) - (*param_mut(&mut minus, p) as f64);
        let reference = (loss_of(&plus, &pool) - loss_of(&minus, &pool)) / h;

        let backprop = match p {
            Param::W(l, i) => before.layers[l].w[i] as f64 - after.layers[l].w[i] as f64,
            Param::B(l, i) => before.layers[l].b[i] as f64 - after.layers[l].b[i] as f64,
        };
        if reference.abs() > 10.0 * ATOL {
            nonzero += 1;
        }
        let ratio = (backprop - reference).abs() / (ATOL + RTOL * reference.abs());
        worst = worst.max(ratio);
        if !(ratio <= 1.0) {
            let name = match p {
                Param::W(l, i) => format!("W[{l}][{i}]"),
                Param::B(l, i) => format!("b[{l}][{i}]"),
            };
            failures.push(format!(
                "{name}: backprop {backprop:.6e}, finite difference {reference:.6e}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "hidden {hidden:?} {activation:?} seed {seed}: {} of {} gradients disagree (atol {ATOL}, rtol {RTOL}):\n{}",
        failures.len(),
        params.len(),
        failures.join("\n")
    );
    // The check must not pass merely because the gradients are all tiny.
    assert!(
        nonzero >= params.len() / 4,
        "only {nonzero} of {} gradients are clearly non-zero; the check would be vacuous",
        params.len()
    );
    eprintln!(
        "gradient check {hidden:?} {activation:?}: {} parameters, worst error {worst:.3} of the tolerance",
        params.len()
    );
}

#[test]
fn gradients_match_finite_differences_elu_two_layers() {
    gradient_check(&[7, 5], Activation::Elu, 11);
}

#[test]
fn gradients_match_finite_differences_elu_one_layer() {
    gradient_check(&[6], Activation::Elu, 12);
}

// ReLU has a kink at 0: a finite difference is wrong when a perturbation moves some
// pre-activation across 0. About one seed in ten puts a hidden pre-activation within EPS of 0
// (checked: the failing units were exactly those), so these seeds are chosen to keep every
// hidden |z| above 10·EPS, which `gradient_check` asserts before comparing. The ELU checks
// above have no such caveat.
#[test]
fn gradients_match_finite_differences_relu_two_layers() {
    gradient_check(&[7, 5], Activation::Relu, 21);
}

#[test]
fn gradients_match_finite_differences_relu_one_layer() {
    gradient_check(&[6], Activation::Relu, 22);
}

// ---------------------------------------------------------------------------------------------
// Reproducibility and initialisation
// ---------------------------------------------------------------------------------------------

fn train_small(schedule: &Schedule, model_seed: u64) -> (Model, Report) {
    let dataset = random_dataset(200, 7);
    let split = Split::new(&dataset, None, 40, 3).unwrap();
    let model = Model::new(&[16, 8], Activation::Relu, Init::He, model_seed).unwrap();
    let mut backend = CpuBackend::new(
        &model,
        split.pool.clone(),
        split.sizes(),
        schedule.capacity(split.train.len()),
    )
    .unwrap();
    let report = train::train(&mut backend, &split, schedule, &mut no_progress()).unwrap();
    (backend.model().unwrap(), report)
}

fn mini_batch(seed: u64) -> Schedule {
    Schedule {
        batch_size: Some(32),
        iterations: 0,
        epochs: 3,
        alpha: 0.1,
        log_every: 1000,
        seed,
        ..Schedule::default()
    }
}

#[test]
fn same_seed_gives_bit_identical_training() {
    let (first, report1) = train_small(&mini_batch(5), 5);
    let (second, report2) = train_small(&mini_batch(5), 5);
    assert!(first.is_finite());
    assert!(
        first == second,
        "two runs with the same seed ended with different parameters"
    );
    assert_eq!(report1.final_loss.to_bits(), report2.final_loss.to_bits());
    assert_eq!(report1.dev_predictions, report2.dev_predictions);
    // 160 training samples in batches of 32, 3 epochs.
    assert_eq!(report1.steps, 3 * 5);

    // Training moved the parameters away from the initial model.
    let initial = Model::new(&[16, 8], Activation::Relu, Init::He, 5).unwrap();
    assert!(first != initial, "training did not change the parameters");

    // Full-batch mode too.
    let full = Schedule {
        batch_size: None,
        iterations: 5,
        ..mini_batch(5)
    };
    assert!(train_small(&full, 5).0 == train_small(&full, 5).0);
}

#[test]
fn different_seed_gives_different_training() {
    // Same initial model, same split; only the schedule's seed (the batch order) differs.
    let (a, _) = train_small(&mini_batch(5), 5);
    let (b, _) = train_small(&mini_batch(6), 5);
    assert!(a != b, "the schedule's seed did not change the batch order");
    // Different initial model, same schedule.
    let (c, _) = train_small(&mini_batch(5), 6);
    assert!(a != c, "the model seed did not change the result");
}

#[test]
fn model_new_is_seeded() {
    for init in [Init::He, Init::Uniform] {
        let a = Model::new(&[12, 7], Activation::Elu, init, 42).unwrap();
        let b = Model::new(&[12, 7], Activation::Elu, init, 42).unwrap();
        let c = Model::new(&[12, 7], Activation::Elu, init, 43).unwrap();
        assert!(a == b, "{init:?}: same seed, different models");
        assert!(
            a.layers[0].w != c.layers[0].w,
            "{init:?}: different seeds, same first layer"
        );
        assert!(
            a.layers[2].w != c.layers[2].w,
            "{init:?}: different seeds, same last layer"
        );
        assert_eq!(a.hidden(), vec![12, 7]);
        assert_eq!(a.activation, Activation::Elu);
        let shapes: Vec<_> = a
            .layers
            .iter()
            .map(|l| (l.inputs, l.outputs, l.w.len(), l.b.len()))
            .collect();
        assert_eq!(
            shapes,
            vec![
                (PIXELS, 12, PIXELS * 12, 12),
                (12, 7, 12 * 7, 7),
                (7, CLASSES, 7 * CLASSES, CLASSES)
            ]
        );
    }
}

fn mean_std(v: &[f32]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

#[test]
fn he_init_has_the_right_spread() {
    let model = Model::new(&[256], Activation::Relu, Init::He, 9).unwrap();
    for layer in &model.layers {
        let want = (2.0 / layer.inputs as f64).sqrt();
        let (mean, std) = mean_std(&layer.w);
        // 200,704 (first layer) or 2,560 (second) samples: the sample std is within ~1.4%
        // (3 standard errors at n = 2,560) of the truth, so 10% only fails for a wrong formula.
        assert!(
            (std / want - 1.0).abs() < 0.1,
            "{}→{}: std {std}, want {want}",
            layer.inputs,
            layer.outputs
        );
        // The mean's standard error is want/sqrt(n); 5 of them.
        assert!(
            mean.abs() < 5.0 * want / (layer.w.len() as f64).sqrt(),
            "mean {mean}"
        );
        assert!(
            layer.b.iter().all(|&b| b == 0.0),
            "He init starts biases at 0"
        );
    }
}

#[test]
fn uniform_init_lies_in_half_open_interval() {
    let model = Model::new(&[256, 32], Activation::Relu, Init::Uniform, 9).unwrap();
    let all: Vec<f32> = model
        .layers
        .iter()
        .flat_map(|l| l.w.iter().chain(&l.b).copied())
        .collect();
    assert!(
        all.iter().all(|&v| (-0.5..0.5).contains(&v)),
        "a value outside [-0.5, 0.5)"
    );
    // Uniform[-0.5, 0.5): std 1/sqrt(12) ≈ 0.2887; with 200k+ values the extremes get close to
    // the ends and the std is within a few percent.
    let (mean, std) = mean_std(&all);
    assert!(mean.abs() < 0.01, "mean {mean}");
    assert!((std - 12f64.sqrt().recip()).abs() < 0.01, "std {std}");
    let min = all.iter().copied().fold(f32::INFINITY, f32::min);
    let max = all.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    assert!(
        min < -0.49 && max > 0.49,
        "range [{min}, {max}] does not span [-0.5, 0.5)"
    );
    // Biases are drawn too, not left at 0.
    assert!(model.layers.iter().all(|l| l.b.iter().any(|&b| b != 0.0)));
}

// ---------------------------------------------------------------------------------------------
// Learning on real digits
// ---------------------------------------------------------------------------------------------

#[test]
fn loss_decreases_on_real_digits() {
    let dataset = data::load(&mnist_path("train-10k-images-idx3-ubyte.gz")).unwrap();
    let dataset = dataset.subset(&(0..3000).collect::<Vec<_>>());
    let split = Split::new(&dataset, None, 500, 1).unwrap();
    assert_eq!(
        split.sizes(),
        ListSizes {
            train: 2500,
            dev: 500,
            test: 0
        }
    );
    let schedule = Schedule {
        batch_size: None,
        iterations: 60,
        epochs: 1,
        alpha: 0.5,
        log_every: 1,
        seed: 1,
        ..Schedule::default()
    };
    let model = Model::new(&[32], Activation::Relu, Init::He, 1).unwrap();
    let mut backend = CpuBackend::new(
        &model,
        split.pool.clone(),
        split.sizes(),
        schedule.capacity(split.train.len()),
    )
    .unwrap();
    let mut seen = 0;
    let report = train::train(&mut backend, &split, &schedule, &mut |p: &Progress| {
        seen += 1;
        assert_eq!(p.step, seen);
        assert_eq!(p.steps, 60);
        assert_eq!(p.epoch, None);
    })
    .unwrap();
    assert_eq!(seen, 60);
    assert_eq!(report.history.len(), 60);
    let first = report.history[0].batch.loss;
    let last = report.history[59].batch.loss;
    assert_eq!(last, report.final_loss);
    // The first loss is measured before any update: about ln 10 ≈ 2.3 for a fresh network.
    assert!(first > 1.0, "first loss {first}");
    assert!(last < 0.5 * first, "loss went from {first} to {last}");
    let dev = report.dev_accuracy.unwrap();
    assert!(dev > 0.8, "dev accuracy {dev}");
    assert_eq!(report.test_accuracy, None);
    assert_eq!(report.dev_predictions.len(), 500);
    eprintln!("loss {first:.4} → {last:.4}, dev accuracy {dev:.4}");
}

// ---------------------------------------------------------------------------------------------
// Bad configurations
// ---------------------------------------------------------------------------------------------

#[test]
fn model_new_rejects_empty_or_zero_widths() {
    assert!(Model::new(&[], Activation::Relu, Init::He, 1).is_err());
    assert!(Model::new(&[10, 0], Activation::Relu, Init::He, 1).is_err());
    assert!(Model::new(&[0], Activation::Elu, Init::Uniform, 1).is_err());
    assert!(Model::new(&[10, 3], Activation::Relu, Init::He, 1).is_ok());
}

#[test]
fn schedule_validate_rejects_bad_values() {
    let full = Schedule {
        batch_size: None,
        iterations: 10,
        epochs: 1,
        alpha: 0.5,
        log_every: 1,
        seed: 1,
        ..Schedule::default()
    };
    let batch = Schedule {
        batch_size: Some(10),
        ..full.clone()
    };
    assert!(full.validate(100).is_ok());
    assert!(batch.validate(100).is_ok());
    assert!(
        batch.validate(10).is_ok(),
        "a batch as large as the train set is fine"
    );
    for alpha in [0.0, -0.0, -1.0, f32::NAN, f32::INFINITY] {
        for s in [&full, &batch] {
            let s = Schedule { alpha, ..s.clone() };
            assert!(s.validate(100).is_err(), "alpha {alpha} accepted");
        }
    }
    assert!(Schedule {
        batch_size: Some(0),
        ..full.clone()
    }
    .validate(100)
    .is_err());
    assert!(Schedule {
        batch_size: Some(101),
        ..full.clone()
    }
    .validate(100)
    .is_err());
    assert!(Schedule {
        iterations: 0,
        ..full.clone()
    }
    .validate(100)
    .is_err());
    assert!(Schedule {
        epochs: 0,
        ..batch.clone()
    }
    .validate(100)
    .is_err());
    assert!(Schedule {
        log_every: 0,
        ..full.clone()
    }
    .validate(100)
    .is_err());
    let err = Schedule {
        alpha: f32::NAN,
        ..full.clone()
    }
    .validate(100)
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("alpha"),
        "message does not name the option: {err}"
    );
}

#[test]
fn split_rejects_dev_set_as_large_as_the_data() {
    let dataset = random_dataset(20, 1);
    assert!(Split::new(&dataset, None, 20, 1).is_err());
    assert!(Split::new(&dataset, None, 25, 1).is_err());
    let split = Split::new(&dataset, None, 19, 1).unwrap();
    assert_eq!(
        split.sizes(),
        ListSizes {
            train: 1,
            dev: 19,
            test: 0
        }
    );
    // Train and dev partition the training file.
    let mut all: Vec<u32> = split.train.iter().chain(&split.dev).copied().collect();
    all.sort();
    assert_eq!(all, (0..20).collect::<Vec<u32>>());
    // Unlabeled training data is refused.
    let unlabeled = Dataset {
        labels: None,
        ..dataset
    };
    assert!(Split::new(&unlabeled, None, 5, 1).is_err());
}

// ---------------------------------------------------------------------------------------------
// The CPU twins, by hand
// ---------------------------------------------------------------------------------------------

#[test]
fn matmul_with_views_and_bias() {
    // A = [1 2 3; 4 5 6] (2×3), B = [7 8; 9 10; 11 12] (3×2):
    // A·B = [1·7+2·9+3·11, 1·8+2·10+3·12; 4·7+5·9+6·11, 4·8+5·10+6·12] = [58 64; 139 154].
    let ab = [[58.0f32, 64.0], [139.0, 154.0]];
    let bias = [0.5f32, -1.0];
    let scale = 2.0f32;
    let want = |i: usize, j: usize| scale * ab[i][j] + bias[i];

    // A stored column by column; B as the transpose of its row-major transpose Bᵀ = [7 9 11; 8 10 12].
    let a_cols = [1.0f32, 4.0, 2.0, 5.0, 3.0, 6.0];
    let bt_rows = [7.0f32, 9.0, 11.0, 8.0, 10.0, 12.0];
    // Output column-major, prefilled with garbage that the bias must overwrite.
    let mut c = [f32::NAN; 4];
    ops::matmul(
        Mat::col_major(&a_cols, 2, 3),
        Mat::row_major(&bt_rows, 2, 3).t(),
        Some(&bias),
        scale,
        MatMut::col_major(&mut c, 2, 2),
    );
    assert_eq!(c, [want(0, 0), want(1, 0), want(0, 1), want(1, 1)]);

    // A as the transpose of Aᵀ (row-major 3×2 = A's columns), B row-major, C row-major.
    let at_rows = a_cols; // Aᵀ row-major is A column-major.
    let b_rows = [7.0f32, 8.0, 9.0, 10.0, 11.0, 12.0];
    let mut c = [f32::NAN; 4];
    ops::matmul(
        Mat::row_major(&at_rows, 3, 2).t(),
        Mat::row_major(&b_rows, 3, 2),
        Some(&bias),
        scale,
        MatMut::row_major(&mut c, 2, 2),
    );
    assert_eq!(c, [want(0, 0), want(0, 1), want(1, 0), want(1, 1)]);

    // No bias: the old contents of C (here NaN) must not leak into the result.
    let mut c = [f32::NAN; 4];
    ops::matmul(
        Mat::row_major(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3),
        Mat::row_major(&b_rows, 3, 2),
        None,
        1.0,
        MatMut::row_major(&mut c, 2, 2),
    );
    assert_eq!(c, [58.0, 64.0, 139.0, 154.0]);

    // (AᵀA) through two views of the same buffer: a Gram matrix, symmetric.
    let mut g = [0.0f32; 9];
    ops::matmul(
        Mat::col_major(&a_cols, 2, 3).t(),
        Mat::col_major(&a_cols, 2, 3),
        None,
        1.0,
        MatMut::row_major(&mut g, 3, 3),
    );
    // Column k of A is (a_cols[2k], a_cols[2k+1]).
    for i in 0..3 {
        for j in 0..3 {
            let dot = a_cols[2 * i] * a_cols[2 * j] + a_cols[2 * i + 1] * a_cols[2 * j + 1];
            assert_eq!(g[i * 3 + j], dot, "AᵀA[{i}][{j}]");
        }
    }
}

#[test]
fn softmax_is_stable_on_huge_logits() {
    // Two columns of 3: huge logits, then ordinary ones.
    let z = [1000.0f32, -1000.0, 999.0, 0.0, 1.0, 2.0];
    let mut a = [f32::NAN; 6];
    ops::softmax(&z, 3, &mut a);
    assert!(a.iter().all(|v| v.is_finite()), "{a:?}");
    for column in a.chunks(3) {
        let sum: f32 = column.iter().sum();
        // Three f32 terms below 1: a few ulps.
        assert!((sum - 1.0).abs() < 1e-6, "column sums to {sum}");
    }
    // exp(z − max) / Σ: [1, e^-2000, e^-1] / (1 + e^-1), computed in f64.
    let e1 = (-1.0f64).exp();
    let want = [1.0 / (1.0 + e1), 0.0, e1 / (1.0 + e1)];
    for (got, want) in a[..3].iter().zip(want) {
        // f32 relative rounding, a few ulps.
        assert!((*got as f64 - want).abs() < 1e-6, "{got} vs {want}");
    }
    let sum: f64 = (0..3).map(|k| (k as f64).exp()).sum();
    for k in 0..3 {
        let want = (k as f64).exp() / sum;
        assert!(
            (a[3 + k] as f64 - want).abs() < 1e-6,
            "{} vs {want}",
            a[3 + k]
        );
    }
}

#[test]
fn output_grad_is_a_minus_one_hot() {
    // Three samples of 3 classes. The last has a tie for the largest logit: the first wins.
    let z = [1.0f32, 2.0, 3.0, 0.5, -1.0, 0.0, 5.0, 1.0, 5.0];
    let labels = [0u8, 0, 0];
    let mut a = [0.0f32; 9];
    ops::softmax(&z, 3, &mut a);
    let mut dz = [f32::NAN; 9];
    let mut stats = [f32::NAN; 6];
    ops::output_grad(&a, &z, &labels, 3, &mut dz, &mut stats);
    for j in 0..3 {
        for r in 0..3 {
            let onehot = if r == labels[j] as usize { 1.0 } else { 0.0 };
            assert_eq!(dz[j * 3 + r], a[j * 3 + r] - onehot, "sample {j} row {r}");
        }
        // Cross-entropy −ln softmax(z)[label], in f64; f32 logsumexp of small values: 1e-6.
        let zc: Vec<f64> = z[j * 3..j * 3 + 3].iter().map(|&v| v as f64).collect();
        let lse = zc.iter().map(|v| v.exp()).sum::<f64>().ln();
        let want = lse - zc[labels[j] as usize];
        assert!(
            (stats[2 * j] as f64 - want).abs() < 1e-6,
            "loss {} vs {want}",
            stats[2 * j]
        );
    }
    // Predictions: 2 (wrong), 0 (right), 0 by the tie rule (right).
    assert_eq!([stats[1], stats[3], stats[5]], [0.0, 1.0, 1.0]);
    // Same rule and same loss as the model's f64 helper.
    let (loss, correct) = {
        let mut z10 = vec![-100.0f32; 30];
        for j in 0..3 {
            z10[j * 10..j * 10 + 3].copy_from_slice(&z[j * 3..j * 3 + 3]);
        }
        loss_and_correct(&z10, &labels)
    };
    assert_eq!(correct, 2);
    let mean = (stats[0] + stats[2] + stats[4]) as f64 / 3.0;
    // e^-100 terms change the f64 loss by < 1e-40; f32 rounding: 1e-6.
    assert!((loss - mean).abs() < 1e-6, "{loss} vs {mean}");
}

#[test]
fn sum_columns_and_sum_partials() {
    // X (2×3) column-major: columns (1,2), (3,4), (5,6); row sums 9 and 12.
    let x = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
    let mut out = [f32::NAN; 2];
    ops::sum_columns(&x, 2, 0.5, &mut out);
    assert_eq!(out, [4.5, 6.0]);
    let mut out = [7.0f32; 3];
    ops::sum_columns(&x, 3, 1.0, &mut out);
    // As a 3×2 matrix: columns (1,2,3), (4,5,6).
    assert_eq!(out, [5.0, 7.0, 9.0]);
    let mut out = [f32::NAN; 3];
    ops::sum_partials(&x, 3, 2.0, &mut out);
    assert_eq!(out, [10.0, 14.0, 18.0]);
}

#[test]
fn activations_and_their_slopes() {
    let z = [-2.0f32, 0.0, 3.0];
    let da = [2.0f32, 3.0, 5.0];
    let mut a = [f32::NAN; 3];
    let mut dz = [f32::NAN; 3];

    ops::activation(&z, Activation::Relu, &mut a);
    assert_eq!(a, [0.0, 0.0, 3.0]);
    ops::activation_grad(&da, &z, Activation::Relu, &mut dz);
    // ReLU'(0) is taken as 0 (the unit is off).
    assert_eq!(dz, [0.0, 0.0, 5.0]);

    ops::activation(&z, Activation::Elu, &mut a);
    let e = (-2.0f32).exp();
    assert_eq!(a, [e - 1.0, 0.0, 3.0]);
    ops::activation_grad(&da, &z, Activation::Elu, &mut dz);
    // ELU (α = 1) has slope e^z below 0 and 1 above, so 1 at 0 from either side.
    assert_eq!(dz, [2.0 * e, 3.0, 5.0]);
    assert!(dz.iter().all(|v| v.is_finite()));

    // ELU's slope is continuous: check against a central difference just below 0 in f64.
    for z0 in [-0.5f32, -0.01] {
        let mut a2 = [0.0f32; 2];
        let h = 1e-2f32;
        ops::activation(&[z0 - h, z0 + h], Activation::Elu, &mut a2);
        let fd = (a2[1] - a2[0]) / (2.0 * h);
        let mut slope = [0.0f32];
        ops::activation_grad(&[1.0], &[z0], Activation::Elu, &mut slope);
        // Truncation error h²/6·e^z ≈ 2e-5, plus f32 cancellation ≈ 1e-5.
        assert!((fd - slope[0]).abs() < 1e-4, "z {z0}: {fd} vs {}", slope[0]);
    }
}

#[test]
fn sgd_update_and_gather_images() {
    let mut p = [1.0f32, -2.0, 0.5];
    ops::sgd_update(&mut p, &[2.0, 4.0, -1.0], 0.25);
    assert_eq!(p, [0.5, -3.0, 0.75]);

    let images: Vec<u8> = (0..3 * PIXELS).map(|i| (i % 251) as u8).collect();
    let mut x = vec![f32::NAN; 2 * PIXELS];
    ops::gather_images(&images, &[2, 0], &mut x);
    for k in 0..PIXELS {
        // Scaled to [0, 1]; multiplying by 1/255 may differ from dividing by 255 by an ulp.
        assert!((x[k] - images[2 * PIXELS + k] as f32 / 255.0).abs() <= 1e-7);
        assert!((x[PIXELS + k] - images[k] as f32 / 255.0).abs() <= 1e-7);
    }
}
