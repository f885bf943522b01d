//! Each WGSL kernel against a float64 reference and its CPU twin, on seeded random inputs, at
//! sizes that are not multiples of the workgroup sizes. Outputs start as NaN, so an element a
//! kernel forgets to write fails. Runs on whatever adapter the machine has (lavapipe in CI).

use crate::common;

use std::sync::OnceLock;

use std::sync::Arc;

use crate::common::{assert_close, assert_close_scaled, random_bytes, random_floats};
use mnist_gpu::cpu::ops;
use mnist_gpu::data::PIXELS;
use mnist_gpu::gpu::kernels::{
    forward_partial_floats, forward_splits_with, matmul_is_tiled, splits_for, Bound, Kernel,
    Kernels, Operand, Recorder, Uniforms,
};
use mnist_gpu::gpu::native::Workbench;
use mnist_gpu::gpu::pipeline::ShaderChecks;
use mnist_gpu::gpu::recording::Buf;
use mnist_gpu::gpu::GpuContext;
use mnist_gpu::layout::{Layout, Mat, MatMut};
use mnist_gpu::model::Activation;

/// The context of this thread's mode (`common::with_shader_checks`), built once per mode.
fn ctx() -> &'static Arc<GpuContext> {
    static CTX: OnceLock<Arc<GpuContext>> = OnceLock::new();
    static CHECKED: OnceLock<Arc<GpuContext>> = OnceLock::new();
    match common::shader_checks() {
        ShaderChecks::Off => CTX.get_or_init(|| Arc::new(common::gpu())),
        ShaderChecks::On => CHECKED.get_or_init(|| Arc::new(common::gpu())),
    }
}

/// The kernels of this thread's context, run at once.
fn bench() -> Workbench {
    Workbench::new(ctx().clone())
}

/// An output buffer full of NaN.
fn poisoned(w: &mut Workbench, n: usize) -> Buf {
    w.floats(&vec![f32::NAN; n])
}

/// Binds the kernel `which` picks to `buffers` (in its shader's binding order), records what
/// `record` does with it, and submits.
fn run_kernel(
    w: &mut Workbench,
    which: impl Fn(&Kernels) -> &Kernel,
    buffers: &[Buf],
    record: impl FnOnce(&Kernels, &mut Recorder, &Bound),
) {
    let mut u = Uniforms::new(&mut w.tape, 1).unwrap();
    let bound = which(&w.kernels).bind(&mut w.tape, &mut u, buffers);
    let mut rec = Recorder::new(&mut w.tape, &mut u);
    record(&w.kernels, &mut rec, &bound);
    rec.submit();
}

fn element(data: &[f32], l: Layout, i: usize, j: usize) -> f64 {
    data[i * l.rs + j * l.cs] as f64
}

/// The B operand of a matmul test.
enum B {
    Matrix(Vec<f32>, Layout),
    /// X (784, m) or its transpose, images picked by `indices[offset ..]`.
    Images {
        images: Vec<u8>,
        indices: Vec<u32>,
        offset: usize,
        m: usize,
        transposed: bool,
    },
}

impl B {
    /// B as f32 values in a layout, the way the CPU twin sees it.
    fn dense(&self) -> (Vec<f32>, Layout) {
        match self {
            B::Matrix(data, l) => (data.clone(), *l),
            B::Images {
                images,
                indices,
                offset,
                m,
                transposed,
            } => {
                let mut x = vec![0.0; PIXELS * m];
                ops::gather_images(images, &indices[*offset..offset + m], &mut x);
                let l = Layout::col_major(PIXELS, *m);
                (x, if *transposed { l.t() } else { l })
            }
        }
    }
}

/// `C = A·B (+ bias)` on `ctx`'s kernels with `splits` slices, against f64 and against
/// `ops::matmul`. Where the kernels include the cooperative one, its products
/// (the tiled kernel's shapes) are held to the bound of inputs rounded to 10 bits of mantissa
/// (f16, or TF32 where an adapter rounds f32 tiles so) and summed in f32: each product's error
/// within 2⁻¹⁰ of its magnitude, each addition's within 2⁻²⁴ of the running sum, so
/// `|C − C_f64| ≤ 10⁻⁶ + (2⁻¹⁰ + inner·2⁻²⁴)·(|A|·|B| + |bias|)`. Every other product keeps the
/// plain kernels' tolerance.
#[allow(clippy::too_many_arguments)]
fn check_matmul(
    ctx: &Arc<GpuContext>,
    what: &str,
    a: &[f32],
    la: Layout,
    b: B,
    lc: Layout,
    bias: Option<&[f32]>,
    splits: u32,
) {
    let (b_dense, lb) = b.dense();
    let (rows, inner, cols) = (la.rows, la.cols, lb.cols);
    let mut want = vec![0.0f64; rows * cols];
    // Σ_k |A(i, k)·B(k, j)| + |bias(i)|: what the rounding of the terms scales with.
    let mut magnitude = vec![0.0f64; rows * cols];
    for i in 0..rows {
        for j in 0..cols {
            let terms = (0..inner).map(|k| element(a, la, i, k) * element(&b_dense, lb, k, j));
            let (dot, abs) = terms.fold((0.0, 0.0), |(s, m), t| (s + t, m + t.abs()));
            let bias = bias.map_or(0.0, |b| b[i] as f64);
            want[i * lc.rs + j * lc.cs] = dot + bias;
            magnitude[i * lc.rs + j * lc.cs] = abs + bias.abs();
        }
    }
    let atol = 1e-6 * inner as f64 + 1e-6;
    let mut w = Workbench::new(ctx.clone());

    let mut cpu = vec![f32::NAN; rows * cols];
    ops::matmul(
        Mat {
            data: a,
            layout: la,
        },
        Mat {
            data: &b_dense,
            layout: lb,
        },
        bias,
        1.0,
        MatMut {
            data: &mut cpu,
            layout: lc,
        },
    );
    assert_close(&format!("{what}: CPU twin"), &cpu, &want, atol, 1e-5);

    let (b_buf, images, indices, operand) = match &b {
        B::Matrix(data, l) => (
            w.floats(data),
            vec![0u8; 4],
            vec![0u32],
            Operand::Matrix(*l),
        ),
        B::Images {
            images,
            indices,
            offset,
            m,
            transposed,
        } => {
            let index_offset = *offset as u32;
            let op = if *transposed {
                Operand::ImagesT {
                    index_offset,
                    m: *m,
                }
            } else {
                Operand::Images {
                    index_offset,
                    m: *m,
                }
            };
            (w.floats(&[0.0]), images.clone(), indices.clone(), op)
        }
    };
    let a_buf = w.floats(a);
    let images = w.upload("images", &images);
    let indices = w.upload("indices", bytemuck::cast_slice(&indices));
    let bias_buf = w.floats(bias.unwrap_or(&[0.0]));
    let partials = poisoned(&mut w, splits as usize * rows * cols);
    let c = poisoned(&mut w, rows * cols);
    let (k, tape) = (&w.kernels, &mut w.tape);
    let mut u = Uniforms::new(tape, 2).unwrap();
    let buffers = [a_buf, b_buf, images, indices, bias_buf, partials];
    let product = k.matmul.bind(tape, &mut u, &buffers);
    let sum = k.sum_partials.bind(tape, &mut u, &[partials, c]);
    let mut rec = Recorder::new(tape, &mut u);
    k.matmul(&mut rec, &product, la, operand, lc, bias.is_some(), splits);
    k.sum_partials(&mut rec, &sum, rows * cols, splits, 1.0);
    rec.submit();
    let coop = w.kernels.matmul_coop.is_some();
    let got = w.read(c, rows * cols);
    if coop && matmul_is_tiled(rows, cols) {
        let rtol = 2f64.powi(-10) + inner as f64 * 2f64.powi(-24);
        let what = format!("{what}: GPU, cooperative matrices");
        assert_close_scaled(&what, &got, &want, &magnitude, 1e-6, rtol);
    } else {
        assert_close(&format!("{what}: GPU"), &got, &want, atol, 1e-5);
    }
}

/// Asserts that a test's (rows, cols) products run on both of matmul's kernels.
fn assert_both_kernels(what: &str, outputs: &[(usize, usize)]) {
    let tiled = outputs
        .iter()
        .filter(|&&(r, c)| matmul_is_tiled(r, c))
        .count();
    assert!(
        tiled > 0 && tiled < outputs.len(),
        "{what}: the sizes must exercise both the narrow and the tiled kernel ({tiled} of {} tiled)",
        outputs.len()
    );
}

#[test]
fn matmul_w_a_plus_bias() {
    matmul_w_a_plus_bias_on(ctx());
}

fn matmul_w_a_plus_bias_on(ctx: &Arc<GpuContext>) {
    let sizes = [
        (1, 1, 1),
        (7, 63, 65),
        (65, 7, 63),
        (10, 257, 1000),
        (33, 100, 17),
        (128, 1, 128),
        (129, 63, 1000),
        (1000, 7, 129),
        (130, 5003, 257),
    ];
    assert_both_kernels("W·A + b", &sizes.map(|(r, _, c)| (r, c)));
    for (seed, &(rows, inner, cols)) in sizes.iter().enumerate() {
        let seed = seed as u64;
        let w = random_floats(rows * inner, 1.0, seed);
        let a = random_floats(inner * cols, 1.0, seed + 100);
        let bias = random_floats(rows, 1.0, seed + 200);
        check_matmul(
            ctx,
            &format!("W·A + b {rows}x{inner}x{cols}"),
            &w,
            Layout::row_major(rows, inner),
            B::Matrix(a, Layout::col_major(inner, cols)),
            Layout::col_major(rows, cols),
            Some(&bias),
            1,
        );
    }
}

#[test]
fn matmul_w_a_plus_bias_split_k() {
    matmul_w_a_plus_bias_split_k_on(ctx());
}

fn matmul_w_a_plus_bias_split_k_on(ctx: &Arc<GpuContext>) {
    // `--forward-split-k`: Z (rows, cols) = W·A + b with the inner dimension in slices, the
    // bias added by slice 0 only; A a matrix, then the images (784 pixels: slices start on a
    // packed word). 7 slices of 63, each rounded up to the kernel's step (4 or 8), leave the last
    // ones empty: they add nothing.
    let sizes = [(7, 63, 65), (10, 130, 48), (129, 63, 1000), (130, 784, 129)];
    assert_both_kernels("W·A + b, split-K", &sizes.map(|(r, _, c)| (r, c)));
    for (seed, &(rows, inner, cols)) in sizes.iter().enumerate() {
        let seed = seed as u64 + 300;
        let w = random_floats(rows * inner, 1.0, seed);
        let a = random_floats(inner * cols, 1.0, seed + 100);
        let bias = random_floats(rows, 1.0, seed + 200);
        for splits in [2, 3, 7] {
            check_matmul(
                ctx,
                &format!("W·A + b {rows}x{inner}x{cols}, {splits} splits"),
                &w,
                Layout::row_major(rows, inner),
                B::Matrix(a.clone(), Layout::col_major(inner, cols)),
                Layout::col_major(rows, cols),
                Some(&bias),
                splits,
            );
        }
    }
    for &(units, m) in &[(10, 100), (130, 257)] {
        let w = random_floats(units * PIXELS, 0.1, 17);
        let bias = random_floats(units, 1.0, 18);
        for splits in [3, 4] {
            check_matmul(
                ctx,
                &format!("W·X + b {units}x{m}, {splits} splits"),
                &w,
                Layout::row_major(units, PIXELS),
                image_operand(m, false, 19),
                Layout::col_major(units, m),
                Some(&bias),
                splits,
            );
        }
    }
}

#[test]
fn forward_split_k_slices_fit_the_scratch_sized_for_the_largest_batch() {
    // The reference path sizes its partials for the forward products' slices at its largest
    // batch (`forward_partial_floats`): every smaller batch's slices must fit too; by default
    // nothing is split.
    for (rows, inner) in [(10, 784), (10, 130), (130, 784), (512, 784), (512, 512)] {
        for slices in [None, Some(1), Some(4), Some(100)] {
            for cap in [48, 1200, 8192, 60_000] {
                let room = forward_partial_floats(rows, inner, cap, slices);
                for m in (1..=cap).step_by(97).chain([cap]) {
                    let splits = forward_splits_with(rows, m, inner, slices) as usize;
                    assert!(
                        splits == 1 || splits * rows * m <= room,
                        "({rows}, {inner}) at {slices:?}: {splits} slices at batch {m} \
                         pass the {room} floats sized for {cap}"
                    );
                }
            }
            assert_eq!(forward_splits_with(rows, 1024, inner, None), 1);
        }
    }
    assert_eq!(forward_splits_with(512, 1024, 784, Some(4)), 4);
    assert_eq!(
        forward_splits_with(512, 8192, 784, Some(4)),
        1,
        "16 MiB of slices"
    );
}

#[test]
fn matmul_wt_dz() {
    matmul_wt_dz_on(ctx());
}

fn matmul_wt_dz_on(ctx: &Arc<GpuContext>) {
    // dA (inputs, m) = Wᵀ·dZ with W: (units, inputs) read transposed in place.
    let sizes = [
        (1, 1, 1),
        (10, 63, 65),
        (7, 100, 1000),
        (65, 7, 3),
        (10, 1000, 129),
        (63, 129, 5003),
    ];
    assert_both_kernels("Wᵀ·dZ", &sizes.map(|(_, inputs, m)| (inputs, m)));
    for &(units, inputs, m) in &sizes {
        let w = random_floats(units * inputs, 1.0, 3);
        let dz = random_floats(units * m, 1.0, 4);
        check_matmul(
            ctx,
            &format!("Wᵀ·dZ {units}x{inputs}x{m}"),
            &w,
            Layout::row_major(units, inputs).t(),
            B::Matrix(dz, Layout::col_major(units, m)),
            Layout::col_major(inputs, m),
            None,
            1,
        );
    }
}

#[test]
fn matmul_dz_at_split_k() {
    matmul_dz_at_split_k_on(ctx());
}

fn matmul_dz_at_split_k_on(ctx: &Arc<GpuContext>) {
    // dW (units, inputs) = dZ·Aᵀ, summed over the batch in slices.
    let sizes = [
        (1, 1, 1),
        (10, 63, 65),
        (7, 65, 1000),
        (10, 256, 5003),
        (129, 1000, 63),
        (130, 65, 5003),
    ];
    assert_both_kernels("dZ·Aᵀ", &sizes.map(|(units, inputs, _)| (units, inputs)));
    for &(units, inputs, m) in &sizes {
        let dz = random_floats(units * m, 1.0, 5);
        let a = random_floats(inputs * m, 1.0, 6);
        for splits in [1, 3, splits_for(units, inputs, m)] {
            check_matmul(
                ctx,
                &format!("dZ·Aᵀ {units}x{m}x{inputs}, {splits} splits"),
                &dz,
                Layout::col_major(units, m),
                B::Matrix(a.clone(), Layout::col_major(inputs, m).t()),
                Layout::row_major(units, inputs),
                None,
                splits,
            );
        }
    }
}

fn image_operand(m: usize, transposed: bool, seed: u64) -> B {
    let count = m + 5;
    let images = random_bytes(count * PIXELS, seed);
    // A shuffled list, read from offset 3, so index handling is tested too.
    let mut indices: Vec<u32> = (0..count as u32).rev().collect();
    indices.rotate_left(seed as usize % count);
    B::Images {
        images,
        indices,
        offset: 3,
        m: m.min(count - 3),
        transposed,
    }
}

#[test]
fn matmul_w_x_from_image_bytes() {
    matmul_w_x_from_image_bytes_on(ctx());
}

fn matmul_w_x_from_image_bytes_on(ctx: &Arc<GpuContext>) {
    // The last is the forward pass of a 512-unit layer over a large batch.
    let sizes = [
        (1, 1),
        (10, 7),
        (7, 65),
        (10, 1000),
        (33, 63),
        (129, 1000),
        (512, 2003),
    ];
    assert_both_kernels("W·X + b", &sizes);
    for &(units, m) in &sizes {
        let w = random_floats(units * PIXELS, 0.1, 7);
        let bias = random_floats(units, 1.0, 8);
        check_matmul(
            ctx,
            &format!("W·X + b {units}x{m}"),
            &w,
            Layout::row_major(units, PIXELS),
            image_operand(m, false, 9),
            Layout::col_major(units, m),
            Some(&bias),
            1,
        );
    }
}

#[test]
fn matmul_dz_xt_from_image_bytes_split_k() {
    matmul_dz_xt_from_image_bytes_split_k_on(ctx());
}

fn matmul_dz_xt_from_image_bytes_split_k_on(ctx: &Arc<GpuContext>) {
    let sizes = [
        (1, 1),
        (10, 7),
        (7, 65),
        (10, 1000),
        (13, 5003),
        (129, 63),
        (512, 1000),
    ];
    assert_both_kernels("dZ·Xᵀ", &sizes.map(|(units, _)| (units, PIXELS)));
    for &(units, m) in &sizes {
        let dz = random_floats(units * m, 1.0, 10);
        for splits in [1, 3, splits_for(units, PIXELS, m)] {
            check_matmul(
                ctx,
                &format!("dZ·Xᵀ {units}x{m}, {splits} splits"),
                &dz,
                Layout::col_major(units, m),
                image_operand(m, true, 11),
                Layout::row_major(units, PIXELS),
                None,
                splits,
            );
        }
    }
}

/// Sizes for the one-thread-per-element kernels; the last needs a 2-D grid (over 65,535 × 256).
const COUNTS: [usize; 6] = [1, 7, 63, 65, 1000, 100_003];

fn act_reference(z: f64, act: Activation) -> (f64, f64) {
    match act {
        Activation::Relu => (z.max(0.0), if z > 0.0 { 1.0 } else { 0.0 }),
        Activation::Elu => {
            if z > 0.0 {
                (z, 1.0)
            } else {
                (z.exp() - 1.0, z.exp())
            }
        }
    }
}

fn check_activation(count: usize, act: Activation) {
    let mut w = bench();
    let z = random_floats(count, 5.0, count as u64);
    let want: Vec<f64> = z.iter().map(|&v| act_reference(v as f64, act).0).collect();
    let mut cpu = vec![f32::NAN; count];
    ops::activation(&z, act, &mut cpu);
    assert_close("activation: CPU twin", &cpu, &want, 1e-6, 1e-6);

    let (zb, ab) = (w.floats(&z), poisoned(&mut w, count));
    run_kernel(
        &mut w,
        |k| &k.activation,
        &[zb, ab],
        |k, rec, bound| k.activation(rec, bound, count, act),
    );
    assert_close(
        &format!("activation {act:?} x{count}"),
        &w.read(ab, count),
        &want,
        1e-6,
        1e-6,
    );
}

#[test]
fn activation_relu_and_elu() {
    for count in COUNTS {
        check_activation(count, Activation::Relu);
        check_activation(count, Activation::Elu);
    }
}

#[test]
fn activation_over_a_two_dimensional_grid() {
    // More than 65,535 workgroups of 256: the grid needs a second dimension.
    check_activation(65_535 * 256 + 1_001, Activation::Relu);
}

#[test]
fn activation_grad_relu_and_elu() {
    let mut w = bench();
    for count in COUNTS {
        for act in [Activation::Relu, Activation::Elu] {
            let da = random_floats(count, 1.0, 20);
            let z = random_floats(count, 5.0, 21);
            let want: Vec<f64> = da
                .iter()
                .zip(&z)
                .map(|(&d, &v)| d as f64 * act_reference(v as f64, act).1)
                .collect();
            let mut cpu = vec![f32::NAN; count];
            ops::activation_grad(&da, &z, act, &mut cpu);
            assert_close("activation_grad: CPU twin", &cpu, &want, 1e-6, 1e-6);

            let (dab, zb, dzb) = (w.floats(&da), w.floats(&z), poisoned(&mut w, count));
            run_kernel(
                &mut w,
                |k| &k.activation_grad,
                &[dab, zb, dzb],
                |k, rec, bound| k.activation_grad(rec, bound, count, act),
            );
            assert_close(
                &format!("activation_grad {act:?} x{count}"),
                &w.read(dzb, count),
                &want,
                1e-6,
                1e-6,
            );
        }
    }
}

fn softmax_reference(z: &[f32], rows: usize) -> Vec<f64> {
    let mut out = Vec::new();
    for column in z.chunks(rows) {
        let max = column
            .iter()
            .fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let sum: f64 = column.iter().map(|&v| (v as f64 - max).exp()).sum();
        out.extend(column.iter().map(|&v| (v as f64 - max).exp() / sum));
    }
    out
}

fn check_softmax(rows: usize, m: usize, scale: f32) {
    let mut w = bench();
    let z = random_floats(rows * m, scale, m as u64);
    let want = softmax_reference(&z, rows);
    let mut cpu = vec![f32::NAN; rows * m];
    ops::softmax(&z, rows, &mut cpu);
    assert_close("softmax: CPU twin", &cpu, &want, 1e-6, 1e-4);

    let (zb, ab) = (w.floats(&z), poisoned(&mut w, rows * m));
    run_kernel(
        &mut w,
        |k| &k.softmax,
        &[zb, ab],
        |k, rec, bound| k.softmax(rec, bound, rows, m),
    );
    let got = w.read(ab, rows * m);
    assert!(
        got.iter().all(|v| v.is_finite()),
        "softmax {rows}x{m}: a NaN or Inf"
    );
    assert_close(
        &format!("softmax {rows}x{m} (logits up to {scale})"),
        &got,
        &want,
        1e-6,
        1e-4,
    );
}

#[test]
fn softmax_columns() {
    for m in [1, 7, 63, 65, 1000] {
        check_softmax(10, m, 5.0);
    }
    check_softmax(3, 257, 5.0);
}

#[test]
fn softmax_with_huge_logits() {
    // Logits near ±1000 overflow exp() unless the column max is subtracted.
    check_softmax(10, 65, 1000.0);
}

#[test]
fn output_grad_from_labels() {
    let mut w = bench();
    let rows = 10;
    for m in [1, 7, 65, 1000] {
        let images = m + 4;
        let labels: Vec<u8> = random_bytes(images, 30).iter().map(|b| b % 10).collect();
        let indices: Vec<u32> = (0..images as u32).rev().collect();
        let offset = 2;
        let batch: Vec<u8> = indices[offset..offset + m]
            .iter()
            .map(|&i| labels[i as usize])
            .collect();
        let z = random_floats(rows * m, 8.0, 31);
        let mut a = vec![0.0; rows * m];
        ops::softmax(&z, rows, &mut a);

        let mut want_dz = Vec::new();
        let mut want_stats = Vec::new();
        for (j, &label) in batch.iter().enumerate() {
            let (zc, ac) = (&z[j * rows..][..rows], &a[j * rows..][..rows]);
            want_dz.extend((0..rows).map(|r| ac[r] as f64 - (r == label as usize) as u8 as f64));
            let max = zc.iter().fold(f64::NEG_INFINITY, |mx, &v| mx.max(v as f64));
            let lse = zc.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max;
            let best = (0..rows).fold(0, |b, r| if zc[r] > zc[b] { r } else { b });
            want_stats.push(lse - zc[label as usize] as f64);
            want_stats.push((best == label as usize) as u8 as f64);
        }
        let (mut cpu_dz, mut cpu_stats) = (vec![f32::NAN; rows * m], vec![f32::NAN; 2 * m]);
        ops::output_grad(&a, &z, &batch, rows, &mut cpu_dz, &mut cpu_stats);
        assert_close("output_grad dZ: CPU twin", &cpu_dz, &want_dz, 1e-6, 1e-5);
        assert_close(
            "output_grad stats: CPU twin",
            &cpu_stats,
            &want_stats,
            1e-5,
            1e-5,
        );

        let label_words: Vec<u32> = labels.iter().map(|&l| l as u32).collect();
        let (ab, zb) = (w.floats(&a), w.floats(&z));
        let lb = w.upload("labels", bytemuck::cast_slice(&label_words));
        let ib = w.upload("indices", bytemuck::cast_slice(&indices));
        let (dzb, sb) = (poisoned(&mut w, rows * m), poisoned(&mut w, 2 * m));
        let buffers = [ab, zb, lb, ib, dzb, sb];
        run_kernel(
            &mut w,
            |k| &k.output_grad,
            &buffers,
            |k, rec, bound| k.output_grad(rec, bound, rows, m, offset as u32),
        );
        assert_close(
            &format!("output_grad dZ x{m}"),
            &w.read(dzb, rows * m),
            &want_dz,
            1e-6,
            1e-5,
        );
        assert_close(
            &format!("output_grad stats x{m}"),
            &w.read(sb, 2 * m),
            &want_stats,
            1e-5,
            1e-5,
        );
    }
}

#[test]
fn sum_columns_over_the_batch() {
    let mut w = bench();
    for rows in [1, 2, 7, 10] {
        for m in [1, 7, 63, 65, 1000, 5003] {
            let x = random_floats(rows * m, 1.0, (rows * m) as u64);
            let scale = 1.0 / m as f32;
            let want: Vec<f64> = (0..rows)
                .map(|r| (0..m).map(|j| x[j * rows + r] as f64).sum::<f64>() * scale as f64)
                .collect();
            let mut cpu = vec![f32::NAN; rows];
            ops::sum_columns(&x, rows, scale, &mut cpu);
            assert_close("sum_columns: CPU twin", &cpu, &want, 1e-6, 1e-5);

            let chunks = mnist_gpu::gpu::kernels::column_chunks(m) as usize;
            let xb = w.floats(&x);
            let (partials, out) = (poisoned(&mut w, chunks * rows), poisoned(&mut w, rows));
            let (k, tape) = (&w.kernels, &mut w.tape);
            let mut u = Uniforms::new(tape, 2).unwrap();
            let columns = k.sum_columns.bind(tape, &mut u, &[xb, partials]);
            let sum = k.sum_partials.bind(tape, &mut u, &[partials, out]);
            let mut rec = Recorder::new(tape, &mut u);
            k.sum_columns(&mut rec, &columns, &sum, rows, m, scale);
            rec.submit();
            assert_close(
                &format!("sum_columns {rows}x{m}"),
                &w.read(out, rows),
                &want,
                1e-6,
                1e-5,
            );
        }
    }
}

#[test]
fn sum_partials_adds_slices() {
    let mut w = bench();
    for (len, parts) in [(1, 1), (63, 5), (1000, 7), (7850, 36)] {
        let partials = random_floats(len * parts, 1.0, 40);
        let want: Vec<f64> = (0..len)
            .map(|i| {
                0.5 * (0..parts)
                    .map(|s| partials[s * len + i] as f64)
                    .sum::<f64>()
            })
            .collect();
        let mut cpu = vec![f32::NAN; len];
        ops::sum_partials(&partials, len, 0.5, &mut cpu);
        assert_close("sum_partials: CPU twin", &cpu, &want, 1e-6, 1e-5);

        let (pb, out) = (w.floats(&partials), poisoned(&mut w, len));
        run_kernel(
            &mut w,
            |k| &k.sum_partials,
            &[pb, out],
            |k, rec, bound| k.sum_partials(rec, bound, len, parts as u32, 0.5),
        );
        assert_close(
            &format!("sum_partials {len}x{parts}"),
            &w.read(out, len),
            &want,
            1e-6,
            1e-5,
        );
    }
}

#[test]
fn sgd_update_steps_against_the_gradient() {
    let mut w = bench();
    for count in [1, 7, 65, 1000, 7850] {
        let param = random_floats(count, 1.0, 50);
        let grad = random_floats(count, 1.0, 51);
        let alpha = 0.37f32;
        let want: Vec<f64> = param
            .iter()
            .zip(&grad)
            .map(|(&p, &g)| p as f64 - alpha as f64 * g as f64)
            .collect();
        let mut cpu = param.clone();
        ops::sgd_update(&mut cpu, &grad, alpha);
        assert_close("sgd_update: CPU twin", &cpu, &want, 1e-6, 1e-6);

        let (gb, pb) = (w.floats(&grad), w.floats(&param));
        run_kernel(
            &mut w,
            |k| &k.sgd_update,
            &[gb, pb],
            |k, rec, bound| k.sgd_update(rec, bound, count, alpha),
        );
        assert_close(
            &format!("sgd_update x{count}"),
            &w.read(pb, count),
            &want,
            1e-6,
            1e-6,
        );
    }
}

#[test]
fn momentum_update_keeps_a_velocity() {
    let mut w = bench();
    let (alpha, beta) = (0.37f32, 0.9f32);
    for count in [1, 7, 65, 1000, 7850] {
        let param = random_floats(count, 1.0, 60);
        let grad = random_floats(count, 1.0, 61);
        let velocity = random_floats(count, 1.0, 62);
        // f64 reference: V = β·V + dP, P -= α·V
        let want_v: Vec<f64> = velocity
            .iter()
            .zip(&grad)
            .map(|(&v, &g)| beta as f64 * v as f64 + g as f64)
            .collect();
        let want_p: Vec<f64> = param
            .iter()
            .zip(&want_v)
            .map(|(&p, &v)| p as f64 - alpha as f64 * v)
            .collect();
        let (mut cpu_p, mut cpu_v) = (param.clone(), velocity.clone());
        ops::momentum_update(&mut cpu_p, &grad, &mut cpu_v, alpha, beta);
        assert_close("momentum_update: CPU twin V", &cpu_v, &want_v, 1e-6, 1e-6);
        assert_close("momentum_update: CPU twin P", &cpu_p, &want_p, 1e-6, 1e-6);

        let (gb, pb, vb) = (w.floats(&grad), w.floats(&param), w.floats(&velocity));
        run_kernel(
            &mut w,
            |k| &k.momentum_update,
            &[gb, pb, vb],
            |k, rec, bound| k.momentum_update(rec, bound, count, alpha, beta),
        );
        let what = format!("momentum_update x{count}");
        assert_close(
            &format!("{what} V"),
            &w.read(vb, count),
            &want_v,
            1e-6,
            1e-6,
        );
        assert_close(
            &format!("{what} P"),
            &w.read(pb, count),
            &want_p,
            1e-6,
            1e-6,
        );
    }
}

#[test]
fn adam_update_with_bias_correction() {
    let mut w = bench();
    let alpha = 0.01f32;
    let (beta1, beta2, eps) = (0.9f32, 0.999f32, 1e-8f32);
    for (count, t) in [(1, 1), (7, 2), (65, 10), (1000, 1), (7850, 300)] {
        let (c1, c2) = mnist_gpu::optimizer::adam_corrections(beta1, beta2, t);
        let adam = mnist_gpu::optimizer::AdamParams {
            beta1,
            beta2,
            eps,
            c1,
            c2,
        };
        let param = random_floats(count, 1.0, 70);
        let grad = random_floats(count, 1.0, 71);
        let m = random_floats(count, 0.1, 72);
        // The second moment is a running mean of squares: never negative.
        let v: Vec<f32> = random_floats(count, 0.1, 73)
            .iter()
            .map(|x| x * x)
            .collect();
        let (b1, b2) = (beta1 as f64, beta2 as f64);
        let (c1_64, c2_64) = (
            1.0 / (1.0 - b1.powi(t as i32)),
            1.0 / (1.0 - b2.powi(t as i32)),
        );
        let mut want_m = Vec::new();
        let mut want_v = Vec::new();
        let mut want_p = Vec::new();
        for i in 0..count {
            let g = grad[i] as f64;
            let mi = b1 * m[i] as f64 + (1.0 - b1) * g;
            let vi = b2 * v[i] as f64 + (1.0 - b2) * g * g;
            want_m.push(mi);
            want_v.push(vi);
            want_p.push(
                param[i] as f64 - alpha as f64 * mi * c1_64 / ((vi * c2_64).sqrt() + eps as f64),
            );
        }
        let (mut cpu_p, mut cpu_m, mut cpu_v) = (param.clone(), m.clone(), v.clone());
        ops::adam_update(&mut cpu_p, &grad, &mut cpu_m, &mut cpu_v, alpha, adam);
        let what = format!("adam_update x{count} t={t}");
        assert_close(&format!("{what}: CPU twin M"), &cpu_m, &want_m, 1e-6, 1e-5);
        assert_close(&format!("{what}: CPU twin V"), &cpu_v, &want_v, 1e-7, 1e-5);
        assert_close(&format!("{what}: CPU twin P"), &cpu_p, &want_p, 1e-6, 1e-5);

        let (gb, pb) = (w.floats(&grad), w.floats(&param));
        let (mb, vb) = (w.floats(&m), w.floats(&v));
        run_kernel(
            &mut w,
            |k| &k.adam_update,
            &[gb, pb, mb, vb],
            |k, rec, bound| k.adam_update(rec, bound, count, alpha, adam),
        );
        assert_close(
            &format!("{what} M"),
            &w.read(mb, count),
            &want_m,
            1e-6,
            1e-5,
        );
        assert_close(
            &format!("{what} V"),
            &w.read(vb, count),
            &want_v,
            1e-7,
            1e-5,
        );
        assert_close(
            &format!("{what} P"),
            &w.read(pb, count),
            &want_p,
            1e-6,
            1e-5,
        );
    }
}

#[test]
fn augment_shifts_images_as_bytes() {
    use mnist_gpu::data::pool::Shift;
    use mnist_gpu::data::IMAGE_SIDE;
    let mut w = bench();
    for (m, seed) in [(1, 80), (7, 81), (65, 82), (300, 83)] {
        let count = m + 4;
        let images = random_bytes(count * PIXELS, seed);
        let indices: Vec<u32> = (0..count as u32).rev().collect();
        let offset = 2;
        let batch = &indices[offset..offset + m];
        // Every small shift, and some that move all but one row or column out of view.
        let choices = [-2i8, -1, 0, 1, 2, 27, -27];
        let shifts: Vec<Shift> = (0..m)
            .map(|j| Shift {
                dx: choices[j % 7],
                dy: choices[(j / 7 + j) % 7],
            })
            .collect();
        // Reference: move every source pixel to where the shift puts it.
        let side = IMAGE_SIDE as i32;
        let mut want = vec![0u8; m * PIXELS];
        for (j, (&image, s)) in batch.iter().zip(&shifts).enumerate() {
            for r in 0..side {
                for c in 0..side {
                    let (to_r, to_c) = (r + s.dy as i32, c + s.dx as i32);
                    if (0..side).contains(&to_r) && (0..side).contains(&to_c) {
                        want[j * PIXELS + (to_r * side + to_c) as usize] =
                            images[image as usize * PIXELS + (r * side + c) as usize];
                    }
                }
            }
        }
        let mut cpu = vec![1u8; m * PIXELS];
        ops::augment(&images, batch, &shifts, &mut cpu);
        assert!(cpu == want, "augment: CPU twin, batch of {m}");

        let pairs: Vec<i32> = shifts
            .iter()
            .flat_map(|s| [s.dx as i32, s.dy as i32])
            .collect();
        let image_buffer = w.upload("images", &images);
        let index_buffer = w.upload("indices", bytemuck::cast_slice(&indices));
        let shift_buffer = w.upload("shifts", bytemuck::cast_slice(&pairs));
        let out = w.upload("out", &vec![0xAAu8; m * PIXELS]);
        run_kernel(
            &mut w,
            |k| &k.augment,
            &[image_buffer, index_buffer, shift_buffer, out],
            |k, rec, bound| k.augment(rec, bound, m, offset as u32),
        );
        let got = w.read_bytes(out, (m * PIXELS) as u64);
        if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
            panic!(
                "augment x{m}: byte {i} (image {}, pixel {}) is {} but the reference is {}",
                i / PIXELS,
                i % PIXELS,
                got[i],
                want[i]
            );
        }
    }
}

#[test]
fn split_k_slices_fit_the_scratch_sized_for_the_largest_batch() {
    // The reference path sizes its partial products for its largest batch: a smaller batch
    // must never split into more slices.
    for (rows, cols) in [
        (10, 784),
        (10, 64),
        (64, 784),
        (512, 784),
        (10, 512),
        (1000, 1000),
    ] {
        let mut last = 0;
        for m in (1..=60_000).step_by(97) {
            let splits = splits_for(rows, cols, m);
            assert!(
                splits >= last,
                "({rows}, {cols}): {splits} slices at batch {m}, fewer than {last} below it"
            );
            last = splits;
        }
        assert!(
            last > 1,
            "({rows}, {cols}): a 60,000-sample product is not split"
        );
    }
}

/// `--matmul coop`: where the adapter has cooperative matrices, the six matmul tests above on
/// its kernels (the wide products on the cooperative kernel, with split-K; the narrow ones
/// still on the plain kernel) against f64 within the bound `check_matmul` states. Where it has
/// none (the lavapipe of CI), the plain kernels are what runs, and the test says the
/// cooperative kernel was not exercised.
#[test]
fn matmul_coop_where_the_adapter_has_cooperative_matrices() {
    let Some(ctx) = common::coop_gpu("the cooperative-matrix kernel") else {
        return;
    };
    let ctx = Arc::new(ctx);
    matmul_w_a_plus_bias_on(&ctx);
    matmul_wt_dz_on(&ctx);
    matmul_dz_at_split_k_on(&ctx);
    matmul_w_a_plus_bias_split_k_on(&ctx);
    matmul_w_x_from_image_bytes_on(&ctx);
    matmul_dz_xt_from_image_bytes_split_k_on(&ctx);
}

/// Every kernel test above again, with wgpu's shader runtime checks on (what
/// `MNIST_GPU_SHADER_CHECKS=1` gives): the switch back for diagnosis builds working kernels,
/// and both modes compute the same. (The cooperative one opens its own context; it follows
/// the variable.)
#[test]
fn every_kernel_with_shader_checks_on() {
    common::with_shader_checks(|| {
        matmul_w_a_plus_bias();
        matmul_wt_dz();
        matmul_dz_at_split_k();
        matmul_w_a_plus_bias_split_k();
        matmul_w_x_from_image_bytes();
        matmul_dz_xt_from_image_bytes_split_k();
        activation_relu_and_elu();
        activation_over_a_two_dimensional_grid();
        activation_grad_relu_and_elu();
        softmax_columns();
        softmax_with_huge_logits();
        output_grad_from_labels();
        sum_columns_over_the_batch();
        sum_partials_adds_slices();
        sgd_update_steps_against_the_gradient();
        momentum_update_keeps_a_velocity();
        adam_update_with_bias_correction();
        augment_shifts_images_as_bytes();
        split_k_slices_fit_the_scratch_sized_for_the_largest_batch();
        forward_split_k_slices_fit_the_scratch_sized_for_the_largest_batch();
        assert_eq!(ctx().shader_checks, ShaderChecks::On);
    });
    assert_eq!(ctx().shader_checks, common::shader_checks());
}
