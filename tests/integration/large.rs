//! A 60,000-image training set (MNIST's full size) fits the GPU under wgpu's default limits,
//! as bytes, and trains full-batch over all of it on both GPU paths; the GPU agrees with the
//! CPU.

use crate::common;

use std::sync::Arc;

use mnist_gpu::backend::{Backend, StepPath};
use mnist_gpu::cpu::CpuBackend;
use mnist_gpu::data::pool::{ImagePool, List, ListSizes};
use mnist_gpu::data::PIXELS;
use mnist_gpu::gpu::GpuBackend;
use mnist_gpu::model::{Activation, Init, Model};

#[test]
fn full_batch_over_60000_images_on_the_gpu() {
    for path in [StepPath::Fused, StepPath::Reference] {
        full_batch_on(path);
    }
}

fn full_batch_on(path: StepPath) {
    let n = 60_000;
    let images = common::random_bytes(n * PIXELS, 1);
    let labels = common::random_bytes(n, 2).iter().map(|b| b % 10).collect();
    let pool = Arc::new(ImagePool { images, labels });
    let sizes = ListSizes {
        train: n,
        dev: 0,
        test: 0,
    };
    let model = Model::new(&[10], Activation::Relu, Init::He, 1).unwrap();
    let ctx = Arc::new(common::gpu());
    let mut gpu = GpuBackend::with_path(ctx, &model, &pool, sizes, n, Some(path))
        .expect("60,000 images fit the default limits");
    let mut cpu = CpuBackend::new(&model, pool.clone(), sizes, n).unwrap();
    let order: Vec<u32> = (0..n as u32).collect();
    for backend in [&mut gpu as &mut dyn Backend, &mut cpu] {
        backend.set_list(List::Train, &order).unwrap();
        backend.train_step(0, n, 0.3).unwrap();
        backend.train_step(0, n, 0.3).unwrap();
    }
    let (g, c) = (gpu.batch_stats().unwrap(), cpu.batch_stats().unwrap());
    assert!(
        g.loss.is_finite() && (g.loss - c.loss).abs() <= 1e-4 * c.loss,
        "{} path: loss GPU {} vs CPU {}",
        path.name(),
        g.loss,
        c.loss
    );
    let (gm, cm) = (gpu.model().unwrap(), cpu.model().unwrap());
    let want: Vec<f64> = cm.layers[0].w.iter().map(|&v| v as f64).collect();
    let what = format!("{} path: W1 after two steps", path.name());
    common::assert_close(&what, &gm.layers[0].w, &want, 1e-5, 1e-3);
}
