//! GPU faults become errors that say what happened and what to try, never a panic from inside
//! wgpu: a lost device, a buffer over the adapter's limit.

use crate::common;

use std::sync::Arc;

use mnist_gpu::backend::Backend;
use mnist_gpu::data::pool::List;
use mnist_gpu::data::pool::Split;
use mnist_gpu::gpu::GpuBackend;
use mnist_gpu::model::{Activation, Init, Model};
use mnist_gpu::Error;

#[test]
fn a_lost_device_is_an_error_that_suggests_the_cpu() {
    let split = Split::new(&common::random_dataset(200, 3), None, 50, 1).unwrap();
    let model = Model::new(&[16], Activation::Relu, Init::He, 1).unwrap();
    let ctx = Arc::new(common::gpu());
    let mut gpu = GpuBackend::new(ctx.clone(), &model, &split.pool, split.sizes(), 50).unwrap();
    gpu.set_list(List::Train, &split.train).unwrap();
    gpu.train_step(0, 50, 0.1).unwrap();
    gpu.batch_stats().unwrap();

    // What a driver reset or an unplugged GPU looks like to wgpu.
    ctx.device.destroy();
    let outcome = gpu
        .train_step(0, 50, 0.1)
        .and_then(|()| gpu.batch_stats().map(|_| ()));
    let err = outcome.expect_err("a step on a destroyed device succeeded");
    assert!(matches!(err, Error::Gpu(_)), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("lost"), "{message}");
    assert!(message.contains("--backend cpu"), "{message}");
    assert!(!message.contains('\n'), "{message}");
}

#[test]
fn a_buffer_over_the_limit_is_refused_with_what_to_shrink() {
    let split = Split::new(&common::random_dataset(100, 3), None, 10, 1).unwrap();
    // dZ of a 20,000-unit layer for 2,000 samples: 160 MB, over the 128 MiB binding limit.
    let model = Model::new(&[20_000], Activation::Relu, Init::He, 1).unwrap();
    let ctx = Arc::new(common::gpu());
    let err = match GpuBackend::new(ctx, &model, &split.pool, split.sizes(), 2000) {
        Err(e) => e,
        Ok(_) => panic!("a 160 MB buffer was accepted"),
    };
    let message = err.to_string();
    assert!(message.contains("MiB"), "{message}");
    assert!(message.contains("--batch-size"), "{message}");
    assert!(message.contains("--backend cpu"), "{message}");
}
