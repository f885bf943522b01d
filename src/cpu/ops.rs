//! The CPU twins of the WGSL kernels: one function per `shaders/<op>.wgsl`, same name, same
//! shapes, written to read like the math. They are the reference the GPU is tested against,
//! and they are what the CPU backend runs.

use crate::augment::{Affine, Warps, CENTER};
use crate::cpu::simd::{Isa, Simd};
use crate::data::pool::Shift;
use crate::data::{IMAGE_SIDE, PIXELS};
use crate::layout::{Mat, MatMut};
use crate::model::{Activation, PIXEL_SCALE};
use crate::optimizer::{adam_params, AdamParams, Optimizer};

/// Below this many multiply-adds a product runs on one thread: starting threads would cost
/// more than it saves (measured: a 784-256-10 step on a batch of 64 stays on one core).
const PARALLEL_WORK: usize = 1 << 24;

/// The number of cores, asked once.
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// `C = scale · A·B (+ bias)`, bias added to every column of row i.
/// A: (rows, inner), B: (inner, cols), C: (rows, cols), bias: (rows).
/// The product runs in `matrixmultiply`'s blocked sgemm, on all cores when it is large.
pub fn matmul(a: Mat, b: Mat, bias: Option<&[f32]>, scale: f32, c: MatMut) {
    let (la, lb, lc) = (a.layout, b.layout, c.layout);
    assert_eq!(la.cols, lb.rows, "matmul: inner dimensions differ");
    assert_eq!(
        (la.rows, lb.cols),
        (lc.rows, lc.cols),
        "matmul: output shape"
    );
    assert!(
        a.data.len() >= la.extent() && b.data.len() >= lb.extent() && c.data.len() >= lc.extent()
    );

    let beta = match bias {
        Some(bias) => {
            assert_eq!(bias.len(), lc.rows, "matmul: bias length");
            for i in 0..lc.rows {
                for j in 0..lc.cols {
                    c.data[i * lc.rs + j * lc.cs] = bias[i];
                }
            }
            1.0
        }
        None => 0.0,
    };
    if lc.rows == 0 || lc.cols == 0 {
        return;
    }
    // Large products are split by C's columns (the batch, or dW's inputs) over all cores;
    // each thread runs matrixmultiply's blocked sgemm on its own columns.
    let threads = if la.rows * la.cols * lc.cols >= PARALLEL_WORK {
        cores().min(lc.cols)
    } else {
        1
    };
    // Addresses, so the threads can share them; every thread writes different elements of C.
    let (a_at, b_at, c_at) = (
        a.data.as_ptr() as usize,
        b.data.as_ptr() as usize,
        c.data.as_mut_ptr() as usize,
    );
    let columns = move |first: usize, end: usize| {
        // Safety: the asserts above keep every index the strides reach inside the slices,
        // and the column ranges of different threads do not overlap.
        unsafe {
            matrixmultiply::sgemm(
                la.rows,
                la.cols,
                end - first,
                scale,
                a_at as *const f32,
                la.rs as isize,
                la.cs as isize,
                (b_at as *const f32).add(first * lb.cs),
                lb.rs as isize,
                lb.cs as isize,
                beta,
                (c_at as *mut f32).add(first * lc.cs),
                lc.rs as isize,
                lc.cs as isize,
            );
        }
    };
    std::thread::scope(|scope| {
        for t in 1..threads {
            scope.spawn(move || columns(lc.cols * t / threads, lc.cols * (t + 1) / threads));
        }
        columns(0, lc.cols / threads);
    });
}

/// The input matrix `X: (784, m)`, column j = image `indices[j]` scaled to [0, 1].
/// The GPU reads the bytes in place instead (matmul's image operand).
pub fn gather_images(images: &[u8], indices: &[u32], x: &mut [f32]) {
    for (column, &image) in x.chunks_exact_mut(PIXELS).zip(indices) {
        let start = image as usize * PIXELS;
        for (v, &byte) in column.iter_mut().zip(&images[start..start + PIXELS]) {
            *v = byte as f32 * PIXEL_SCALE;
        }
    }
}

/// augment: shifted copies of a batch's images, as bytes. Image j of `out` (784 bytes) is
/// image `indices[j]` moved by `shifts[j]`: `out(r, c) = image(r − dy, c − dx)`, 0 outside.
pub fn augment(images: &[u8], indices: &[u32], shifts: &[Shift], out: &mut [u8]) {
    const SIDE: isize = IMAGE_SIDE as isize;
    for ((shifted, &image), shift) in out.chunks_exact_mut(PIXELS).zip(indices).zip(shifts) {
        let source = &images[image as usize * PIXELS..][..PIXELS];
        for (p, pixel) in shifted.iter_mut().enumerate() {
            let r = (p / IMAGE_SIDE) as isize - shift.dy as isize;
            let c = (p % IMAGE_SIDE) as isize - shift.dx as isize;
            let inside = (0..SIDE).contains(&r) && (0..SIDE).contains(&c);
            *pixel = if inside {
                source[(r * SIDE + c) as usize]
            } else {
                0
            };
        }
    }
}

/// warp: distorted copies of a batch's images, as bytes (the math is in `crate::augment`).
/// Image j of `out` (784 bytes) is image `indices[j]` warped by `warps`' image j (its affine
/// map and, when elastic, its field, drawn from the batch's key as warp.wgsl draws them).
/// Images in parallel on rayon's pool (the pool the fused step's threads come from), a chunk
/// each, each chunk compiled for the CPU's widest vectors: neither changes a byte. (The field's
/// sums are fused multiply-adds, one instruction from AVX2 on; an x86 CPU without FMA computes
/// the same in software, far slower.)
pub fn warp(images: &[u8], indices: &[u32], warps: &Warps, out: &mut [u8]) {
    warp_with(Simd::detect(Isa::Avx512), images, indices, warps, out)
}

/// `warp` in the copy `simd` names.
pub fn warp_with(simd: Simd, images: &[u8], indices: &[u32], warps: &Warps, out: &mut [u8]) {
    use rayon::prelude::*;
    const CHUNK: usize = 8;
    let chunks = out[..PIXELS * indices.len()].par_chunks_mut(CHUNK * PIXELS);
    chunks.enumerate().for_each(|(chunk, out)| {
        let first = chunk * CHUNK;
        let batch = (images, &indices[first..], warps, first);
        match simd.isa() {
            // SAFETY: `Simd::detect` found the instruction set each copy is compiled for.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { warp_chunk_avx512(batch, out) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { warp_chunk_avx2(batch, out) },
            _ => warp_chunk(batch, out),
        }
    });
}

/// The pool, the chunk's list, the batch's warps and the chunk's first place in the batch.
type Chunk<'a> = (&'a [u8], &'a [u32], &'a Warps, usize);

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn warp_chunk_avx512(batch: Chunk, out: &mut [u8]) {
    warp_chunk(batch, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn warp_chunk_avx2(batch: Chunk, out: &mut [u8]) {
    warp_chunk(batch, out)
}

/// The chunk's images, one after another. (Rust fuses a multiply and an add only where told,
/// `mul_add`, which rounds once on every CPU, so the wider copies compute the same floats.)
#[inline(always)]
fn warp_chunk((images, indices, warps, first): Chunk, out: &mut [u8]) {
    let (mut noise, mut field) = ([0.0; 2 * PIXELS], [0.0; 2 * PIXELS]);
    let mut scratch = Scratch::new();
    for (i, warped) in out.chunks_exact_mut(PIXELS).enumerate() {
        let j = first + i;
        let source = &images[indices[i] as usize * PIXELS..][..PIXELS];
        // No closure here: it would be compiled without the copy's instruction set.
        let field = if warps.elastic() {
            warps.field_of(j, &mut noise, &mut field);
            Some(&field[..])
        } else {
            None
        };
        warp_image_in(&mut scratch, source, &warps.affine_of(j), field, warped);
    }
}

/// `warp_image`'s per-pixel scratch: each pixel's place in the frame and weights, and the
/// pixel pairs read there. Made once a chunk, not zeroed again for every image.
struct Scratch {
    at: [u32; PIXELS],
    wy: [f32; PIXELS],
    wx: [f32; PIXELS],
    pairs: [[u16; PIXELS]; 2],
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            at: [0; PIXELS],
            wy: [0.0; PIXELS],
            wx: [0.0; PIXELS],
            pairs: [[0; PIXELS]; 2],
        }
    }
}

/// Where a 28×28 image sits in `warp_image`'s frame of zeros: 2 pixels in from the top and
/// left of a 32×32 square, so that the four pixels around any clamped position lie inside.
const FRAME: usize = 32;
const MARGIN: usize = 2;

/// One image (784 bytes) warped by `affine` and `field` ((2, 784): dy, then dx; None for
/// none): output pixel (r, c) samples `(y, x) = A·(r − 13.5, c − 13.5) + 13.5 + t + d(r, c)`
/// bilinearly, 0 outside, rounded to a byte: ⌊v + ½⌋. The image is read from a frame of zeros
/// (a position beyond the frame is clamped to its edge, where all four neighbours are 0, as
/// they are outside the image), so that every pixel takes the same branch-free path.
pub fn warp_image(source: &[u8], affine: &Affine, field: Option<&[f32]>, warped: &mut [u8]) {
    warp_image_in(&mut Scratch::new(), source, affine, field, warped)
}

/// `warp_image` with its scratch given.
#[inline(always)]
fn warp_image_in(
    scratch: &mut Scratch,
    source: &[u8],
    affine: &Affine,
    field: Option<&[f32]>,
    warped: &mut [u8],
) {
    let mut frame = [0u8; FRAME * FRAME + FRAME + 2];
    for (row, pixels) in source.chunks_exact(IMAGE_SIDE).enumerate() {
        let at = (row + MARGIN) * FRAME + MARGIN;
        frame[at..at + IMAGE_SIDE].copy_from_slice(pixels);
    }
    // Three passes, so that the loads between two vectorised ones are plain loads
    // (`pairs_of`): the vector units' gathers are slower here than loads one by one.
    match field {
        Some(d) => positions::<true>(affine, d, scratch),
        None => positions::<false>(affine, &[], scratch),
    }
    let Scratch {
        wy, wx, at, pairs, ..
    } = scratch;
    pairs_of(&frame, at, pairs);
    for p in 0..PIXELS {
        let [top, bottom] = [pairs[0][p], pairs[1][p]];
        let (p00, p01) = ((top & 0xff) as f32, (top >> 8) as f32);
        let (p10, p11) = ((bottom & 0xff) as f32, (bottom >> 8) as f32);
        let top = (1.0 - wx[p]) * p00 + wx[p] * p01;
        let bottom = (1.0 - wx[p]) * p10 + wx[p] * p11;
        let sampled = (1.0 - wy[p]) * top + wy[p] * bottom;
        let byte = (sampled + 0.5).floor().max(0.0).min(255.0);
        // SAFETY: a whole number in 0..=255, never NaN (max and min drop it), as above.
        warped[p] = unsafe { byte.to_int_unchecked::<i32>() } as u8;
    }
}

/// Where each output pixel samples, `(y, x) = A·(r − 13.5, c − 13.5) + 13.5 + t (+ d(r, c)
/// with a field `d`, (2, 784))`: its place in the frame (clamped to the margin's zeros) and
/// its bilinear weights. Without a field nothing is added (y + 0 is y: the same bytes).
#[inline(always)]
fn positions<const FIELD: bool>(affine: &Affine, d: &[f32], scratch: &mut Scratch) {
    let (a, t) = (affine.a, affine.t);
    let lowest = -(MARGIN as f32);
    let highest = (IMAGE_SIDE + MARGIN - 2) as f32;
    for p in 0..PIXELS {
        let u = (p / IMAGE_SIDE) as f32 - CENTER;
        let v = (p % IMAGE_SIDE) as f32 - CENTER;
        let mut y = a[0] * u + a[1] * v + CENTER + t[0];
        let mut x = a[2] * u + a[3] * v + CENTER + t[1];
        if FIELD {
            y += d[p];
            x += d[PIXELS + p];
        }
        let (y0, x0) = (y.floor(), x.floor());
        (scratch.wy[p], scratch.wx[p]) = (y - y0, x - x0);
        let (r, c) = (
            y0.max(lowest).min(highest) + MARGIN as f32,
            x0.max(lowest).min(highest) + MARGIN as f32,
        );
        // SAFETY: max and min make r and c whole numbers in 0..=30, never NaN, which is what
        // `to_int_unchecked` needs (and vectorises, where `as` checks every lane).
        let (r, c): (i32, i32) = unsafe { (r.to_int_unchecked(), c.to_int_unchecked()) };
        scratch.at[p] = (r * FRAME as i32 + c) as u32;
    }
}

/// The two pixels side by side at each position `at` of the frame, and the two below them:
/// (left | right << 8) each. Never inlined into the wide copies, whose gathers would be slower
/// than these loads one by one.
#[inline(never)]
fn pairs_of(
    frame: &[u8; FRAME * FRAME + FRAME + 2],
    at: &[u32; PIXELS],
    pairs: &mut [[u16; PIXELS]; 2],
) {
    for (p, &at) in at.iter().enumerate() {
        // In the frame whatever the clamp (r, c ≤ 28 + 2, so at + FRAME + 1 < FRAME²); the
        // mask and the frame's slack make it plain without a check.
        let at = at as usize & (FRAME * FRAME - 1);
        let pair = |i: usize| u16::from_le_bytes([frame[i], frame[i + 1]]);
        pairs[0][p] = pair(at);
        pairs[1][p] = pair(at + FRAME);
    }
}

/// `A = g(Z)` elementwise. ELU: `z` if z > 0, else `e^z − 1`. (`#[inline(always)]`, as the
/// update rules: the wide engine applies it in its SIMD copies.)
#[inline(always)]
pub fn activation(z: &[f32], act: Activation, a: &mut [f32]) {
    for (a, &z) in a.iter_mut().zip(z) {
        *a = match act {
            Activation::Relu => z.max(0.0),
            Activation::Elu => {
                if z > 0.0 {
                    z
                } else {
                    z.exp() - 1.0
                }
            }
        };
    }
}

/// `dZ = dA ⊙ g'(Z)` elementwise.
#[inline(always)]
pub fn activation_grad(da: &[f32], z: &[f32], act: Activation, dz: &mut [f32]) {
    for ((dz, &da), &z) in dz.iter_mut().zip(da).zip(z) {
        let slope = match act {
            Activation::Relu => (z > 0.0) as u8 as f32,
            Activation::Elu => {
                if z > 0.0 {
                    1.0
                } else {
                    z.exp()
                }
            }
        };
        *dz = da * slope;
    }
}

/// Column softmax: `A[:, j] = exp(Z[:, j] − max) / Σ exp(Z[:, j] − max)`.
/// Z, A: (rows, m) column-major. Subtracting the column max keeps exp from overflowing.
pub fn softmax(z: &[f32], rows: usize, a: &mut [f32]) {
    for (zc, ac) in z.chunks_exact(rows).zip(a.chunks_exact_mut(rows)) {
        let max = zc.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let mut sum = 0.0;
        for (a, &z) in ac.iter_mut().zip(zc) {
            *a = (z - max).exp();
            sum += *a;
        }
        for a in ac.iter_mut() {
            *a /= sum;
        }
    }
}

/// The output layer's gradient `dZ = A − Y` (Y one-hot from the labels, never stored), and per
/// sample the cross-entropy loss `log Σ exp(z − max) − (z_label − max)` and whether the
/// prediction (first largest logit) is right.
/// A, Z, dZ: (rows, m) column-major; labels: (m); stats: (2, m) column-major, (loss, correct).
pub fn output_grad(
    a: &[f32],
    z: &[f32],
    labels: &[u8],
    rows: usize,
    dz: &mut [f32],
    stats: &mut [f32],
) {
    let columns = a
        .chunks_exact(rows)
        .zip(z.chunks_exact(rows))
        .zip(dz.chunks_exact_mut(rows));
    for (((ac, zc), dzc), (&label, st)) in columns.zip(labels.iter().zip(stats.chunks_exact_mut(2)))
    {
        let label = label as usize;
        let mut best = 0;
        let mut sum = 0.0;
        let max = zc.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        for r in 0..rows {
            dzc[r] = ac[r] - (r == label) as u8 as f32;
            sum += (zc[r] - max).exp();
            if zc[r] > zc[best] {
                best = r;
            }
        }
        st[0] = sum.ln() - (zc[label] - max);
        st[1] = (best == label) as u8 as f32;
    }
}

/// `out[r] = scale · Σ_j X[r, j]`: the sum over the batch, one per row (the bias gradient
/// `db = 1/m · Σ_columns dZ`, and the batch's total loss and correct count).
/// X: (rows, m) column-major; out: (rows).
pub fn sum_columns(x: &[f32], rows: usize, scale: f32, out: &mut [f32]) {
    out.fill(0.0);
    for column in x.chunks_exact(rows) {
        for (o, &v) in out.iter_mut().zip(column) {
            *o += v;
        }
    }
    for o in out.iter_mut() {
        *o *= scale;
    }
}

/// `out[i] = scale · Σ_s partials[s · len + i]`: adds the slices that a split-K product or a
/// chunked column sum leaves (the GPU's second reduction pass). Each slice is a column of a
/// (len, parts) matrix, so this is `sum_columns` again.
pub fn sum_partials(partials: &[f32], len: usize, scale: f32, out: &mut [f32]) {
    sum_columns(partials, len, scale, out)
}

/// One step's update rule with its constants, applied to a parameter tensor (or a piece of
/// one) with the same pieces of its optimizer state: what `CpuBackend` runs after the fast or
/// reference gradients, and the wide engine in the epilogue of its dW product. The rules'
/// functions below are `#[inline(always)]` so that the wide engine's SIMD copies compile
/// them with their own instruction set.
#[derive(Debug, Clone, Copy)]
pub struct Update {
    pub alpha: f32,
    pub rule: Rule,
}

#[derive(Debug, Clone, Copy)]
pub enum Rule {
    Sgd,
    Momentum { beta: f32 },
    Adam(AdamParams),
}

impl Update {
    /// The update of step `t` (t ≥ 1: Adam's bias corrections depend on it).
    pub fn new(optimizer: Optimizer, alpha: f32, t: u64) -> Update {
        let rule = match optimizer {
            Optimizer::Sgd => Rule::Sgd,
            Optimizer::Momentum { beta } => Rule::Momentum { beta },
            Optimizer::Adam { beta1, beta2, eps } => Rule::Adam(adam_params(beta1, beta2, eps, t)),
        };
        Update { alpha, rule }
    }

    /// `param` and `grad` of one length; `s0`, `s1` the state (momentum: [V, unused]; Adam:
    /// [M, V]) of that length, or empty where the rule keeps none.
    #[inline(always)]
    pub fn apply(&self, param: &mut [f32], grad: &[f32], s0: &mut [f32], s1: &mut [f32]) {
        match self.rule {
            Rule::Sgd => sgd_update(param, grad, self.alpha),
            Rule::Momentum { beta } => momentum_update(param, grad, s0, self.alpha, beta),
            Rule::Adam(adam) => adam_update(param, grad, s0, s1, self.alpha, adam),
        }
    }
}

/// The SGD update `P -= α · dP`.
#[inline(always)]
pub fn sgd_update(param: &mut [f32], grad: &[f32], alpha: f32) {
    for (p, &g) in param.iter_mut().zip(grad) {
        *p -= alpha * g;
    }
}

/// momentum_update: `V = β·V + dP`, `P -= α·V`. P, dP, V: any shape, same length.
#[inline(always)]
pub fn momentum_update(
    param: &mut [f32],
    grad: &[f32],
    velocity: &mut [f32],
    alpha: f32,
    beta: f32,
) {
    for ((p, &g), v) in param.iter_mut().zip(grad).zip(velocity) {
        *v = beta * *v + g;
        *p -= alpha * *v;
    }
}

/// adam_update: `M = β1·M + (1−β1)·dP`, `V = β2·V + (1−β2)·dP²`,
/// `P -= α · (M·c1) / (sqrt(V·c2) + ε)` with the bias corrections c1 = 1/(1−β1ᵗ), c2 = 1/(1−β2ᵗ)
/// (see `optimizer::adam_corrections`). P, dP, M, V: any shape, same length.
#[inline(always)]
pub fn adam_update(
    param: &mut [f32],
    grad: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    alpha: f32,
    adam: AdamParams,
) {
    let AdamParams {
        beta1,
        beta2,
        eps,
        c1,
        c2,
    } = adam;
    for (((p, &g), m), v) in param.iter_mut().zip(grad).zip(m).zip(v) {
        *m = beta1 * *m + (1.0 - beta1) * g;
        *v = beta2 * *v + (1.0 - beta2) * g * g;
        *p -= alpha * (*m * c1) / ((*v * c2).sqrt() + eps);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::augment::{Augment, Distortion};

    /// Every copy of `warp` this CPU runs (and the portable one) gives the same bytes, affine
    /// and elastic, for a batch that is not a whole number of chunks.
    #[test]
    fn every_copy_of_warp_gives_the_same_bytes() {
        let n = 21;
        let images: Vec<u8> = (0..n * PIXELS).map(|i| (i * 37 % 253) as u8).collect();
        let indices: Vec<u32> = (0..n as u32).rev().collect();
        let best = Simd::detect(Isa::Avx512);
        for augment in [
            Augment::Affine(Distortion::default()),
            Augment::Elastic(Distortion::default()),
        ] {
            let mut warps = Warps::new(&augment).expect("a warp");
            warps.for_batch(0x5eed_0000_0042, n);
            let mut want = vec![0u8; n * PIXELS];
            warp_with(
                Simd::detect(Isa::Portable),
                &images,
                &indices,
                &warps,
                &mut want,
            );
            for isa in [Isa::Avx2, Isa::Avx512]
                .into_iter()
                .filter(|&i| i <= best.isa())
            {
                let mut got = vec![0xAAu8; n * PIXELS];
                warp_with(Simd::detect(isa), &images, &indices, &warps, &mut got);
                let first = got.iter().zip(&want).position(|(g, w)| g != w);
                assert_eq!(
                    first,
                    None,
                    "{} in {isa:?}: first differing byte",
                    augment.name()
                );
            }
        }
    }
}
