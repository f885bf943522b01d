//! Training throughput by batch size: one step (forward, backward, update) of the 784-10-10
//! network per backend, on 60,000 synthetic samples of MNIST's shape, reported in samples per
//! second. `cpu` is the fast path (`cpu::fused`), `cpu-reference` the whole-batch `ops` path.
//! GPU timings wait for the GPU to finish (a read of the batch loss after the steps).
//!
//! The `cpu_matmul` group times the first layer's two products on their own, fast kernel vs
//! the reference `ops::matmul`: `Z1 = W1·X` and `dW1 = dZ1·Xᵀ`, on 1,024 samples.
//!
//! The `train_step_wide` group times wider networks (784-128-10, 784-512-10, 784-1600-10) on
//! the CPU: `cpu` is the wide engine (`cpu::wide`) that `CpuBackend::new` picks for them,
//! `cpu-narrow-engine` the block-by-block engine (`cpu::fused`) that ran them before.
//!
//! Sample counts and times are kept small so that `cargo bench` finishes in a few minutes on
//! two cores; filter with e.g. `cargo bench -- train_step/cpu`.

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mnist_gpu::backend::Backend;
use mnist_gpu::cpu::ops;
use mnist_gpu::cpu::{fused, CpuBackend};
use mnist_gpu::data::pool::{synthetic_pool, ImagePool, List, ListSizes};
use mnist_gpu::data::PIXELS;
use mnist_gpu::gpu::{GpuBackend, GpuContext};
use mnist_gpu::layout::{Mat, MatMut};
use mnist_gpu::model::{Activation, Init, Model};
use mnist_gpu::optimizer::{Optimizer, OptimizerKind};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SAMPLES: usize = 60_000;

/// The same synthetic data as `mnist-gpu bench`.
fn pool() -> Arc<ImagePool> {
    Arc::new(synthetic_pool(SAMPLES, 1))
}

fn bench_steps(c: &mut Criterion) {
    let pool = pool();
    let sizes = ListSizes {
        train: SAMPLES,
        dev: 0,
        test: 0,
    };
    let model = Model::new(&[10], Activation::Relu, Init::He, 1).unwrap();
    let order: Vec<u32> = (0..SAMPLES as u32).collect();
    let gpu = GpuContext::new(None, false).map(Arc::new);
    if let Err(e) = &gpu {
        eprintln!("GPU benchmarks left out: {e}");
    }
    let mut group = c.benchmark_group("train_step");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for batch in [64, 256, 1024, 8192, SAMPLES] {
        group.throughput(Throughput::Elements(batch as u64));
        let mut backends: Vec<(String, Box<dyn Backend>)> = vec![
            (
                "cpu".into(),
                Box::new(CpuBackend::new(&model, pool.clone(), sizes, batch).unwrap()),
            ),
            (
                "cpu-reference".into(),
                Box::new(CpuBackend::new_reference(&model, pool.clone(), sizes, batch).unwrap()),
            ),
        ];
        // The GPU keeps its earlier batch sizes: a full 60k batch on a software adapter
        // would take most of the run.
        if let (Ok(ctx), true) = (&gpu, batch <= 8192) {
            let name = if ctx.is_software() {
                "gpu-software-adapter"
            } else {
                "gpu"
            };
            backends.push((
                name.into(),
                Box::new(GpuBackend::new(ctx.clone(), &model, &pool, sizes, batch).unwrap()),
            ));
        }
        for (name, mut backend) in backends {
            backend.set_list(List::Train, &order).unwrap();
            group.bench_function(BenchmarkId::new(name, batch), |b| {
                b.iter_custom(|iters| {
                    let start = std::time::Instant::now();
                    for i in 0..iters as usize {
                        let first = (i * batch) % (SAMPLES - batch + 1);
                        backend.train_step(first, batch, 0.1).unwrap();
                    }
                    backend.batch_stats().unwrap();
                    start.elapsed()
                })
            });
        }
    }
    group.finish();
}

/// The first layer's products on `M` samples, single-threaded: the fast kernels run block by
/// block as the fast path calls them, the reference is one `ops::matmul` over all samples.
fn bench_matmul(c: &mut Criterion) {
    const M: usize = 1024;
    const BLOCK: usize = 64;
    const HIDDEN: usize = 10;
    let mut rng = StdRng::seed_from_u64(2);
    let mut random = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random::<f32>() - 0.5).collect() };
    let (w1, b1, x, dz1) = (
        random(HIDDEN * PIXELS),
        random(HIDDEN),
        random(PIXELS * M),
        random(HIDDEN * M),
    );
    let mut z1 = vec![0.0; HIDDEN * M];
    let mut dw1 = vec![0.0; HIDDEN * PIXELS];
    let simd = fused::Simd::detect(fused::Isa::Avx512);

    let mut group = c.benchmark_group("cpu_matmul");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .throughput(Throughput::Elements(M as u64));
    group.bench_function("forward_W1X/fast", |b| {
        b.iter(|| {
            for j in (0..M).step_by(BLOCK) {
                fused::dense_forward(
                    &w1,
                    &b1,
                    PIXELS,
                    &x[j * PIXELS..(j + BLOCK) * PIXELS],
                    BLOCK,
                    &mut z1[j * HIDDEN..(j + BLOCK) * HIDDEN],
                    simd,
                );
            }
        })
    });
    group.bench_function("forward_W1X/reference", |b| {
        b.iter(|| {
            ops::matmul(
                Mat::row_major(&w1, HIDDEN, PIXELS),
                Mat::col_major(&x, PIXELS, M),
                Some(&b1),
                1.0,
                MatMut::col_major(&mut z1, HIDDEN, M),
            )
        })
    });
    group.bench_function("grad_dZ1Xt/fast", |b| {
        b.iter(|| {
            dw1.fill(0.0);
            for j in (0..M).step_by(BLOCK) {
                fused::accumulate_outer(
                    &dz1[j * HIDDEN..(j + BLOCK) * HIDDEN],
                    HIDDEN,
                    &x[j * PIXELS..(j + BLOCK) * PIXELS],
                    PIXELS,
                    &mut dw1,
                    simd,
                );
            }
        })
    });
    group.bench_function("grad_dZ1Xt/reference", |b| {
        b.iter(|| {
            ops::matmul(
                Mat::col_major(&dz1, HIDDEN, M),
                Mat::col_major(&x, PIXELS, M).t(),
                None,
                1.0,
                MatMut::row_major(&mut dw1, HIDDEN, PIXELS),
            )
        })
    });
    group.finish();
}

/// Wide networks on the CPU: the wide engine against the narrow one, Adam at batch 64 and
/// SGD at batch 1024.
fn bench_wide(c: &mut Criterion) {
    const N: usize = 4096;
    let pool = Arc::new(synthetic_pool(N, 1));
    let sizes = ListSizes {
        train: N,
        dev: 0,
        test: 0,
    };
    let order: Vec<u32> = (0..N as u32).collect();
    let mut group = c.benchmark_group("train_step_wide");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for hidden in [128, 512, 1600] {
        let model = Model::new(&[hidden], Activation::Relu, Init::He, 1).unwrap();
        for (batch, optimizer) in [(64, OptimizerKind::Adam), (1024, OptimizerKind::Sgd)] {
            group.throughput(Throughput::Elements(batch as u64));
            for (name, wide) in [("cpu", None), ("cpu-narrow-engine", Some(false))] {
                let config = fused::FusedConfig {
                    wide,
                    ..fused::FusedConfig::default()
                };
                let mut cpu =
                    CpuBackend::with_config(&model, pool.clone(), sizes, batch, config).unwrap();
                cpu.set_list(List::Train, &order).unwrap();
                cpu.set_optimizer(Optimizer::with_defaults(optimizer))
                    .unwrap();
                let id = BenchmarkId::new(format!("{name}/784-{hidden}-10"), batch);
                group.bench_function(id, |b| {
                    b.iter_custom(|iters| {
                        let start = std::time::Instant::now();
                        for i in 0..iters as usize {
                            let first = (i * batch) % (N - batch + 1);
                            cpu.train_step(first, batch, 0.001).unwrap();
                        }
                        start.elapsed()
                    })
                });
            }
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // Criterion's HTML plots need fonts installed on the machine, which a bare one lacks:
    // the numbers it prints are what count.
    config = Criterion::default().without_plots();
    targets = bench_steps, bench_matmul, bench_wide
}
criterion_main!(benches);
