//! Shared by the GPU tests: the GPU context, seeded random data and the tolerance check.

pub mod browser;
pub mod output;

/// The README's most accurate run (784-512-10, Adam, augmented): the accuracy bar's and the
/// model the page's browser test draws for.
pub const BEST_RUN: &[&str] = &[
    "--hidden",
    "512",
    "--optimizer",
    "adam",
    "--alpha",
    "0.002",
    "--batch-size",
    "64",
    "--epochs",
    "40",
    "--lr-decay",
    "0.9",
    "--augment",
];

use mnist_gpu::backend::{Backend, BatchStats};
use mnist_gpu::data::pool::List;
use mnist_gpu::data::{Dataset, CLASSES, PIXELS};
use mnist_gpu::gpu::pipeline::ShaderChecks;
use mnist_gpu::gpu::GpuContext;
use mnist_gpu::model::argmax_columns;
use mnist_gpu::model::Model;
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::cell::Cell;

thread_local! {
    /// Set by `with_shader_checks` for the test running on this thread.
    static CHECKS: Cell<Option<ShaderChecks>> = const { Cell::new(None) };
}

/// Runs `f` (a test's body) with wgpu's shader runtime checks on in every context `gpu()`
/// builds on this thread: the kernel, fused and parity tests run once in each mode.
pub fn with_shader_checks(f: impl FnOnce()) {
    CHECKS.set(Some(ShaderChecks::On));
    f();
    CHECKS.set(None);
}

/// The mode of the contexts `gpu()` builds here: `with_shader_checks`'s, else
/// `MNIST_GPU_SHADER_CHECKS`'s (off unless it says 1).
pub fn shader_checks() -> ShaderChecks {
    CHECKS
        .get()
        .unwrap_or_else(|| ShaderChecks::from_env().expect("MNIST_GPU_SHADER_CHECKS is 0 or 1"))
}

/// The machine's GPU adapter (a real GPU, or lavapipe), shader checks as `shader_checks()`
/// says. A GPU test never passes without one.
pub fn gpu() -> GpuContext {
    match GpuContext::with_checks(None, false, shader_checks()) {
        Ok(ctx) => ctx,
        Err(e) => panic!(
            "no usable GPU adapter ({e}). GPU tests need one: install a Vulkan driver, e.g. \
             `apt-get install -y mesa-vulkan-drivers libvulkan1` (as root or with sudo; ./test.sh does it) \
             for the lavapipe software adapter"
        ),
    }
}

pub fn random_floats(n: usize, scale: f32, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| (rng.random::<f32>() * 2.0 - 1.0) * scale)
        .collect()
}

pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random::<u8>()).collect()
}

/// Checks `|got − want| ≤ atol + rtol·|want|` everywhere (NaN fails); on failure names the
/// worst element and both values.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) {
    let scale: Vec<f64> = want.iter().map(|w| w.abs()).collect();
    assert_close_scaled(what, got, want, &scale, atol, rtol);
}

/// Checks `|got − want| ≤ atol + rtol·scale` element by element (NaN fails): for sums whose
/// error grows with the sum of the terms' magnitudes, not with the result's.
pub fn assert_close_scaled(
    what: &str,
    got: &[f32],
    want: &[f64],
    scale: &[f64],
    atol: f64,
    rtol: f64,
) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst: Option<(usize, f64)> = None;
    for (i, ((&g, &w), &s)) in got.iter().zip(want).zip(scale).enumerate() {
        let excess = (g as f64 - w).abs() - (atol + rtol * s);
        let excess = if excess.is_nan() {
            f64::INFINITY
        } else {
            excess
        };
        if excess > 0.0 && worst.is_none_or(|(_, e)| excess > e) {
            worst = Some((i, excess));
        }
    }
    if let Some((i, _)) = worst {
        panic!(
            "{what}: element {i} is {} but the reference is {} (atol {atol}, rtol {rtol} of {})",
            got[i], want[i], scale[i]
        );
    }
}

pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Every W and b of `got` within `atol + rtol·|want|` of `want`'s.
pub fn assert_models_close(what: &str, got: &Model, want: &Model, atol: f64, rtol: f64) {
    for (l, (g, w)) in got.layers.iter().zip(&want.layers).enumerate() {
        assert_close(
            &format!("{what}: W{}", l + 1),
            &g.w,
            &to_f64(&w.w),
            atol,
            rtol,
        );
        assert_close(
            &format!("{what}: b{}", l + 1),
            &g.b,
            &to_f64(&w.b),
            atol,
            rtol,
        );
    }
}

/// Two runs' statistics of the same step over `samples`: the loss within
/// `atol + rtol·|want|`, the accuracy within `samples_apart` samples (a prediction whose two
/// largest logits are within rounding may go either way).
pub fn assert_stats_close(
    what: &str,
    got: BatchStats,
    want: BatchStats,
    samples: usize,
    (atol, rtol, samples_apart): (f64, f64, f64),
) {
    assert!(
        (got.loss - want.loss).abs() <= atol + rtol * want.loss.abs(),
        "{what}: batch loss {} vs {}",
        got.loss,
        want.loss
    );
    assert!(
        (got.accuracy - want.accuracy).abs() <= samples_apart / samples as f64 + 1e-12,
        "{what}: accuracy {} vs {}",
        got.accuracy,
        want.accuracy
    );
}

/// Trains two backends (`got` against `want`) side by side on the first `n` train positions,
/// which the lists already hold, in batches of `batch` (the last of a pass shorter): every
/// step's loss and accuracy, the parameters every third step and after the last, and at the
/// end the dev logits and predictions (all but one agree), within `atol + rtol·|want|`.
#[allow(clippy::too_many_arguments)]
pub fn train_side_by_side(
    what: &str,
    got: &mut dyn Backend,
    want: &mut dyn Backend,
    n: usize,
    batch: usize,
    steps: usize,
    alpha: f32,
    (atol, rtol): (f64, f64),
) {
    for step in 0..steps {
        let start = (step * batch) % n.next_multiple_of(batch);
        let len = batch.min(n - start);
        got.train_step(start, len, alpha).unwrap();
        want.train_step(start, len, alpha).unwrap();
        let (g, w) = (got.batch_stats().unwrap(), want.batch_stats().unwrap());
        let name = format!("{what}: step {step}");
        assert_stats_close(&name, g, w, len, (atol, rtol, 1.0));
        if step % 3 == 2 || step == steps - 1 {
            assert_models_close(
                &name,
                &got.model().unwrap(),
                &want.model().unwrap(),
                atol,
                rtol,
            );
        }
    }
    let (g, w) = (
        got.logits(List::Dev).unwrap(),
        want.logits(List::Dev).unwrap(),
    );
    assert_close(&format!("{what}: dev logits"), &g, &to_f64(&w), atol, rtol);
    let (pg, pw) = (argmax_columns(&g), argmax_columns(&w));
    let agree = pg.iter().zip(&pw).filter(|(a, b)| a == b).count();
    assert!(
        agree + 1 >= pg.len(),
        "{what}: predictions agree on only {agree} of {} dev images",
        pg.len()
    );
}

/// `n` labeled images of random bytes.
pub fn random_dataset(n: usize, seed: u64) -> Dataset {
    let mut rng = StdRng::seed_from_u64(seed);
    Dataset {
        images: (0..n * PIXELS).map(|_| rng.random::<u8>()).collect(),
        labels: Some((0..n).map(|_| rng.random_range(0..CLASSES as u8)).collect()),
        source: format!("random({n}, {seed})"),
    }
}

/// The machine's adapter opened for `--matmul coop`, where it has cooperative matrices. Where
/// it has none, asserts that the plain kernels are what runs, says on stderr that `what` was not
/// exercised (and why), and gives None.
pub fn coop_gpu(what: &str) -> Option<GpuContext> {
    let ctx = GpuContext::new(None, true).expect("the adapter opens");
    match (&ctx.kernels.coop, &ctx.coop_refused) {
        (Some(config), _) => {
            eprintln!("{what} on {}: {}", ctx.describe(), config.describe());
            Some(ctx)
        }
        (None, why) => {
            assert_eq!(ctx.matmul(), "plain");
            let why = why.as_deref().expect("a reason for running plain");
            tell(&format!(
                "NOT EXERCISED: {what} ({why}); the plain kernels ran"
            ));
            None
        }
    }
}

/// A line on the test run's own stderr, past libtest's capture, so that it shows when the
/// test passes: for what a test could not exercise on this machine.
pub fn tell(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// 1,500 real training digits (300 held out as dev) and 500 test digits.
pub fn small_split() -> mnist_gpu::data::pool::Split {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    let train = mnist_gpu::data::load(&dir.join("train-10k-images-idx3-ubyte.gz")).unwrap();
    let test = mnist_gpu::data::load(&dir.join("t10k-images-idx3-ubyte.gz")).unwrap();
    let first = |n: usize| (0..n).collect::<Vec<_>>();
    mnist_gpu::data::pool::Split::new(
        &train.subset(&first(1500)),
        Some(&test.subset(&first(500))),
        300,
        7,
    )
    .unwrap()
}
