//! Shared by the GPU tests: the GPU context, seeded random data and the tolerance check.
#![allow(dead_code)]

pub mod output;

use mnist_gpu::data::{Dataset, CLASSES, PIXELS};
use mnist_gpu::gpu::GpuContext;
use rand::{rngs::StdRng, Rng, SeedableRng};

/// The machine's GPU adapter (a real GPU, or lavapipe). A GPU test never passes without one.
pub fn gpu() -> GpuContext {
    match GpuContext::new(None) {
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
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst: Option<(usize, f64)> = None;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let excess = (g as f64 - w).abs() - (atol + rtol * w.abs());
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
            "{what}: element {i} is {} but the reference is {} (atol {atol}, rtol {rtol})",
            got[i], want[i]
        );
    }
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
