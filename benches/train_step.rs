//! Training throughput by batch size: one step (forward, backward, update) of the 784-10-10
//! network per backend, on synthetic data of MNIST's shape, reported in samples per second.
//! GPU timings wait for the GPU to finish (a read of the batch loss after the steps).

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mnist_gpu::backend::{Backend, ImagePool, List, ListSizes};
use mnist_gpu::cpu::CpuBackend;
use mnist_gpu::gpu::{GpuBackend, GpuContext};
use mnist_gpu::model::{Activation, Init, Model};

const SAMPLES: usize = 10_000;

/// The same synthetic data as `mnist-gpu bench`.
fn pool() -> Arc<ImagePool> {
    Arc::new(mnist_gpu::bench::synthetic_pool(SAMPLES, 1))
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
    let gpu = GpuContext::new(None).map(Arc::new);
    if let Err(e) = &gpu {
        eprintln!("GPU benchmarks left out: {e}");
    }
    let mut group = c.benchmark_group("train_step");
    group.sample_size(10);
    for batch in [64, 1024, SAMPLES] {
        group.throughput(Throughput::Elements(batch as u64));
        let mut backends: Vec<(String, Box<dyn Backend>)> = vec![(
            "cpu".into(),
            Box::new(CpuBackend::new(&model, pool.clone(), sizes, batch).unwrap()),
        )];
        if let Ok(ctx) = &gpu {
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

criterion_group!(benches, bench_steps);
criterion_main!(benches);
