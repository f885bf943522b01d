//! The fast CPU training step: the same math as the reference path in `cpu/mod.rs` (one `ops`
//! call per kernel over the whole batch), reorganised so that every sample is read from memory
//! once and worked on while it is in cache. It runs the narrow networks (784-10-10); from
//! `wide::WIDE_UNITS` units in a hidden layer on, `CpuBackend` runs `cpu::wide` instead, whose
//! products are tiled for the arithmetic rather than for the memory.
//!
//! # Why the reference is slow
//! The reference writes `X: (784, m)` as f32 (3,136 bytes per sample, where the image is 784
//! bytes), then runs one whole-batch product after another: `Z1 = W1·X` reads all of `X`,
//! and `dW1 = dZ1·Xᵀ` reads it all again, long after it has left the caches. For 784-10-10
//! the arithmetic per sample is only about 16,000 multiply-adds, so the time goes to memory.
//!
//! # Blocking
//! A batch of `m` samples is split into `parts` contiguous ranges, one per thread, and each
//! range into blocks of `block` samples (64 by default; the last block of a range may be
//! shorter). Per block of `n` samples, with `L` layers and `A[0] = X`:
//!
//! 1. `X: (784, n)`: the block's image bytes scaled by 1/255 (200 KiB of f32 at n = 64: it
//!    stays in the core's L2 cache for the rest of the block).
//! 2. Forward: `Z[l] = W[l]·A[l-1] + b[l]`, and `A[l] = g(Z[l])` for the hidden layers.
//! 3. `dZ[L] = softmax(Z[L]) − Y`, with each sample's loss and whether its prediction is
//!    right (`softmax_output_grad`; evaluation stops at `Z[L]`).
//! 4. Backward, `l = L … 1`: `dW[l] += dZ[l]·A[l-1]ᵀ`, `db[l] += Σ_samples dZ[l]`, and for
//!    `l > 1`: `dZ[l-1] = (W[l]ᵀ·dZ[l]) ⊙ g'(Z[l-1])`.
//!
//! Every part adds into its own `dW`, `db` (allocated once, like all scratch here). When all
//! blocks are done, `dW = 1/m · Σ_parts dW_part`, summed in part order. How the batch is split
//! depends only on `m` and the configuration, never on timing, so the same seed gives
//! bit-identical results run to run.
//!
//! # Kernels
//! Two products do nearly all the work; both walk contiguous memory:
//! - `dense_forward`: `Z[i, j] = Σ_k W[i, k]·A[k, j]`. Row i of `W` (row-major) and column j of
//!   `A` (column-major) are both contiguous along k, so this is a dot product. A tile of
//!   `R` units × `S` samples keeps `R·S` vectors of partial sums in registers: per step along
//!   k it loads `R + S` vectors and does `R·S` vector multiply-adds (5 × 2: 7 loads for 10).
//! - `accumulate_outer`: `dW[i, k] += Σ_j dZ[i, j]·A[k, j]`. A strip of `V` vectors of k for
//!   `R` units stays in registers while the block's samples go by: per sample it loads `V`
//!   vectors of `A` and `R` numbers of `dZ` for `R·V` multiply-adds.
//!
//! The third product, `dA[k, j] = Σ_i W[i, k]·dZ[i, j]`, only runs between hidden layers
//! (nobody needs `dX`), and is a plain loop.
//!
//! # SIMD
//! The default x86-64 target only promises SSE2 (4 floats, no fused multiply-add), so every
//! kernel is compiled three times (`dispatch!`): a portable copy, a copy with AVX2 and FMA,
//! and a copy with AVX-512F as well; `Fused::new` picks the widest the CPU reports
//! (`Simd::detect`, capped by `FusedConfig::simd`). The gather, the narrow-layer loops and
//! `backward_input` are plain loops that the compiler vectorizes in the wider copies. The two
//! tiles that do nearly all the arithmetic are written with intrinsics (modules `avx2` and
//! `avx512`): written as plain loops over `[f32; 8]` the compiler spilled their sums to
//! memory (see bench/NOTES.md, v1). With AVX-512 the tiles are 16 lanes wide and larger
//! (5 units × 4 samples in `dense_forward`, 5 units × 64 inputs in `accumulate_outer`),
//! which its 32 registers hold. The portable copy uses `a * b + c`: `f32::mul_add` without
//! hardware FMA would be a slow library call.
//!
//! `accumulate_outer` gives the same bits in the AVX2 and AVX-512 copies (every element is
//! one chain of fused multiply-adds over the samples in order); `dense_forward` adds a dot
//! product's lanes in another order, so the copies differ in the last bits. On one machine
//! the same copy runs every time, so runs stay bit-identical.

use rayon::prelude::*;

use crate::data::pool::ImagePool;
use crate::data::{CLASSES, PIXELS};
use crate::model::{Model, PIXEL_SCALE};

use super::ops;
// Where the rest of the crate has always found them.
pub use super::simd::{Isa, Simd};

/// Floats per vector register with AVX2 (256 bits).
const LANES: usize = 8;

/// How the fast path splits a batch. The defaults suit the 784-10-10 network on a few cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FusedConfig {
    /// Samples per block: the unit of work that stays in cache.
    pub block: usize,
    /// The most parts (each with its own gradient accumulators) a batch is split into.
    /// Rayon runs the parts on its thread pool.
    pub threads: usize,
    /// Fewest samples per part: below this, waking another thread costs more than it saves.
    pub min_part: usize,
    /// The widest instruction set the kernels may use (capped by what the CPU reports): lower
    /// it to test or time the narrower copies.
    pub simd: Isa,
    /// Which engine `CpuBackend` runs: `Some(true)` the wide one (`cpu::wide`), `Some(false)`
    /// this one, `None` the wide one where a hidden layer has `wide::WIDE_UNITS` or more.
    pub wide: Option<bool>,
    /// The wide engine's samples per block (a batch longer than this is split into blocks of
    /// about equal length).
    pub wide_block: usize,
}

impl Default for FusedConfig {
    fn default() -> Self {
        FusedConfig {
            block: 64,
            threads: rayon::current_num_threads(),
            min_part: 64,
            simd: Isa::Avx512,
            wide: None,
            wide_block: 64,
        }
    }
}

/// One thread's scratch: a block's activations and the part's gradient sums.
struct Part {
    /// X: (784, block), column-major.
    x: Vec<f32>,
    /// Per layer l: Z[l], A[l], dZ[l]: (units, block), column-major.
    z: Vec<Vec<f32>>,
    a: Vec<Vec<f32>>,
    dz: Vec<Vec<f32>>,
    /// dA[l-1] = W[l]ᵀ·dZ[l]: (widest hidden, block).
    da: Vec<f32>,
    labels: Vec<u8>,
    /// This part's Σ dZ[l]·A[l-1]ᵀ: (units, inputs) row-major, and Σ dZ[l]: (units).
    dw: Vec<Vec<f32>>,
    db: Vec<Vec<f32>>,
    /// Per sample of this part's range: (loss, correct) when training, or the logits
    /// (CLASSES per sample) when evaluating. (max(2, CLASSES), capacity) column-major.
    out: Vec<f32>,
}

impl Part {
    fn new(model: &Model, block: usize, capacity: usize) -> Part {
        let per_layer = |len: &dyn Fn(usize, usize) -> usize| -> Vec<Vec<f32>> {
            model
                .layers
                .iter()
                .map(|l| vec![0.0; len(l.outputs, l.inputs)])
                .collect()
        };
        Part {
            x: vec![0.0; PIXELS * block],
            z: per_layer(&|units, _| units * block),
            a: per_layer(&|units, _| units * block),
            dz: per_layer(&|units, _| units * block),
            da: vec![0.0; model.widest() * block],
            labels: vec![0; block],
            dw: per_layer(&|units, inputs| units * inputs),
            db: per_layer(&|units, _| units),
            out: vec![0.0; CLASSES.max(2) * capacity],
        }
    }
}

/// The fast path's scratch and configuration; `CpuBackend` holds one unless it was built as
/// the reference.
pub struct Fused {
    config: FusedConfig,
    parts: Vec<Part>,
    /// The copy of the kernels that runs: `config.simd`, capped by what the CPU reports.
    simd: Simd,
}

impl Fused {
    /// Scratch for batches of up to `capacity` samples of `model`'s shape.
    pub fn new(model: &Model, capacity: usize, config: FusedConfig) -> Fused {
        let config = FusedConfig {
            block: config.block.max(1),
            threads: config.threads.max(1),
            min_part: config.min_part.max(1),
            ..config
        };
        // Part p only runs when a batch is split into more than p parts, so its range is at
        // most 1/(p+1) of the largest batch, rounded up.
        Fused {
            parts: (0..config.threads)
                .map(|p| Part::new(model, config.block, capacity.div_ceil(p + 1)))
                .collect(),
            config,
            simd: Simd::detect(config.simd),
        }
    }

    /// How many parts a batch of `m` samples is split into: depends on `m` only.
    fn parts_for(&self, m: usize) -> usize {
        m.div_ceil(self.config.min_part)
            .clamp(1, self.config.threads)
            .min(m)
    }

    /// The averaged gradients of the batch `indices` (positions in the pool):
    /// `dw[l] = 1/m · dZ[l]·A[l-1]ᵀ`: (units, inputs) row-major, `db[l] = 1/m · Σ dZ[l]`:
    /// (units), and per sample `stats`: (2, m) column-major, (loss, correct).
    pub fn gradients(
        &mut self,
        model: &Model,
        pool: &ImagePool,
        indices: &[u32],
        dw: &mut [Vec<f32>],
        db: &mut [Vec<f32>],
        stats: &mut [f32],
    ) {
        let m = indices.len();
        let parts = self.parts_for(m);
        let (block, simd) = (self.config.block, self.simd);
        let job = |p: usize, part: &mut Part| {
            for g in part.dw.iter_mut().chain(part.db.iter_mut()) {
                g.fill(0.0);
            }
            let range = m * p / parts..m * (p + 1) / parts;
            for first in range.clone().step_by(block) {
                let n = block.min(range.end - first);
                let at = first - range.start;
                train_block(
                    model,
                    &pool.images,
                    &pool.labels,
                    &indices[first..first + n],
                    part,
                    at,
                    simd,
                );
            }
        };
        self.run(parts, job);

        // Reduce in part order, then average: the order never depends on timing.
        let used = &self.parts[..parts];
        let inv_m = 1.0 / m as f32;
        for (l, (dw, db)) in dw.iter_mut().zip(db.iter_mut()).enumerate() {
            average(dw, used.iter().map(|part| &part.dw[l][..]), inv_m);
            average(db, used.iter().map(|part| &part.db[l][..]), inv_m);
        }
        for p in 0..parts {
            let range = m * p / parts..m * (p + 1) / parts;
            stats[2 * range.start..2 * range.end]
                .copy_from_slice(&self.parts[p].out[..2 * range.len()]);
        }
    }

    /// The output layer's `Z[L]: (CLASSES, m)` for the samples `indices`, into `logits`.
    pub fn logits(&mut self, model: &Model, images: &[u8], indices: &[u32], logits: &mut [f32]) {
        let m = indices.len();
        let parts = self.parts_for(m);
        let (block, simd) = (self.config.block, self.simd);
        let job = |p: usize, part: &mut Part| {
            let range = m * p / parts..m * (p + 1) / parts;
            for first in range.clone().step_by(block) {
                let n = block.min(range.end - first);
                forward_block(model, images, &indices[first..first + n], part, simd);
                let at = CLASSES * (first - range.start);
                let last = model.layers.len() - 1;
                part.out[at..at + CLASSES * n].copy_from_slice(&part.z[last][..CLASSES * n]);
            }
        };
        self.run(parts, job);
        for p in 0..parts {
            let range = m * p / parts..m * (p + 1) / parts;
            logits[CLASSES * range.start..CLASSES * range.end]
                .copy_from_slice(&self.parts[p].out[..CLASSES * range.len()]);
        }
    }

    /// Runs `job(p, part p)` for the first `parts` parts: on this thread when there is one,
    /// else on rayon's pool (which starts its threads once, not per step).
    fn run(&mut self, parts: usize, job: impl Fn(usize, &mut Part) + Sync) {
        if parts == 1 {
            job(0, &mut self.parts[0]);
        } else {
            self.parts[..parts]
                .par_iter_mut()
                .enumerate()
                .for_each(|(p, part)| job(p, part));
        }
    }
}

/// `out = scale · Σ sums`, added in the order given. One pass over `out` per part (the
/// scale goes with the last part's pass): at batch 64 the step is short enough that a
/// separate copy or scaling pass over dW shows.
fn average<'a>(out: &mut [f32], mut sums: impl ExactSizeIterator<Item = &'a [f32]>, scale: f32) {
    let others = sums.len().checked_sub(1).expect("at least one part");
    let first = sums.next().expect("at least one part");
    if others == 0 {
        for (o, &v) in out.iter_mut().zip(first) {
            *o = v * scale;
        }
        return;
    }
    out.copy_from_slice(first);
    for (p, sum) in sums.enumerate() {
        if p + 1 < others {
            for (o, &v) in out.iter_mut().zip(sum) {
                *o += v;
            }
        } else {
            for (o, &v) in out.iter_mut().zip(sum) {
                *o = (*o + v) * scale;
            }
        }
    }
}

/// Forward and backward over one block: the samples `indices` (n ≤ block), adding to the
/// part's dW, db and writing each sample's (loss, correct) at `part.out[2 * at ..]`.
fn train_block(
    model: &Model,
    images: &[u8],
    labels: &[u8],
    indices: &[u32],
    part: &mut Part,
    at: usize,
    simd: Simd,
) {
    let n = indices.len();
    forward_block(model, images, indices, part, simd);
    for (label, &image) in part.labels.iter_mut().zip(indices) {
        *label = labels[image as usize];
    }
    let last = model.layers.len() - 1;
    // dZ[L] = softmax(Z[L]) − Y: (CLASSES, n), with each sample's loss and correctness.
    softmax_output_grad(
        &part.z[last][..CLASSES * n],
        &part.labels[..n],
        &mut part.dz[last][..CLASSES * n],
        &mut part.out[2 * at..2 * (at + n)],
    );
    backward_block(model, n, part, simd);
}

/// The block's forward pass for the samples `indices`: `Z[l]` for every layer and `A[l]` for
/// the hidden ones (the output layer's softmax is left to `softmax_output_grad`, which
/// evaluation does not need).
fn forward_block(model: &Model, images: &[u8], indices: &[u32], part: &mut Part, simd: Simd) {
    let n = indices.len();
    let act = model.activation;
    // X: (784, n)
    gather_block(images, indices, &mut part.x[..PIXELS * n], simd);
    let last = model.layers.len() - 1;
    for (l, layer) in model.layers.iter().enumerate() {
        let units = layer.outputs;
        let (before, this) = part.a.split_at_mut(l);
        let input = if l == 0 { &part.x } else { &before[l - 1] };
        let z = &mut part.z[l][..units * n];
        // Z[l] = W[l]·A[l-1] + b[l]: (units, n)
        dense_forward(&layer.w, &layer.b, layer.inputs, input, n, z, simd);
        if l < last {
            ops::activation(z, act, &mut this[0][..units * n]);
        }
    }
}

/// The output layer, one sample (column) at a time: `A = softmax(Z)` and `dZ = A − Y`, the
/// loss `log Σ exp(z − max) − (z_label − max)` and whether the first largest logit is the
/// label. The same arithmetic as `ops::softmax` then `ops::output_grad`, with one `exp` per
/// class instead of two. Z, dZ: (CLASSES, n) column-major; labels: (n); stats: (2, n).
pub(super) fn softmax_output_grad(z: &[f32], labels: &[u8], dz: &mut [f32], stats: &mut [f32]) {
    let columns = z.chunks_exact(CLASSES).zip(dz.chunks_exact_mut(CLASSES));
    for ((z, dz), (&label, stats)) in columns.zip(labels.iter().zip(stats.chunks_exact_mut(2))) {
        let label = label as usize;
        let max = z.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let mut sum = 0.0;
        let mut best = 0;
        for (class, (e, &v)) in dz.iter_mut().zip(z).enumerate() {
            *e = (v - max).exp();
            sum += *e;
            if v > z[best] {
                best = class;
            }
        }
        for (class, g) in dz.iter_mut().enumerate() {
            *g = *g / sum - (class == label) as u8 as f32;
        }
        stats[0] = sum.ln() - (z[label] - max);
        stats[1] = (best == label) as u8 as f32;
    }
}

/// The block's backward pass from `dZ[L]`: adds `dZ[l]·A[l-1]ᵀ` and `Σ dZ[l]` to the part's
/// sums, and carries `dZ` down through the hidden layers.
fn backward_block(model: &Model, n: usize, part: &mut Part, simd: Simd) {
    let act = model.activation;
    for l in (0..model.layers.len()).rev() {
        let layer = &model.layers[l];
        let (units, inputs) = (layer.outputs, layer.inputs);
        let input = if l == 0 { &part.x } else { &part.a[l - 1] };
        let (lower, upper) = part.dz.split_at_mut(l);
        let dz = &upper[0][..units * n];
        // dW[l] += dZ[l]·A[l-1]ᵀ: (units, inputs)
        accumulate_outer(
            dz,
            units,
            &input[..inputs * n],
            inputs,
            &mut part.dw[l],
            simd,
        );
        // db[l] += Σ_samples dZ[l]: (units)
        for column in dz.chunks_exact(units) {
            for (b, &g) in part.db[l].iter_mut().zip(column) {
                *b += g;
            }
        }
        if l > 0 {
            // dA[l-1] = W[l]ᵀ·dZ[l]: (inputs, n), then dZ[l-1] = dA[l-1] ⊙ g'(Z[l-1]).
            let da = &mut part.da[..inputs * n];
            backward_input(&layer.w, units, dz, da, simd);
            ops::activation_grad(
                da,
                &part.z[l - 1][..inputs * n],
                act,
                &mut lower[l - 1][..inputs * n],
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Kernels. Each entry point (public, so that the benchmarks can time them on their own) runs
// the copy compiled for `simd`'s instruction set; the generic bodies are `#[inline(always)]`
// so that they are compiled into each copy. Their const parameter `L` is the instruction set
// (`PORTABLE`, `AVX2`, `AVX512`): const generics cannot take an enum on stable Rust.
// ---------------------------------------------------------------------------------------------

const PORTABLE: u8 = Isa::Portable as u8;
const AVX2: u8 = Isa::Avx2 as u8;
const AVX512: u8 = Isa::Avx512 as u8;

/// Generates `$name(args…, simd)`, which calls `$generic::<AVX512>` compiled with AVX-512F,
/// AVX2 and FMA, `$generic::<AVX2>` compiled with AVX2 and FMA, or the portable
/// `$generic::<PORTABLE>`, as `simd` says.
macro_rules! dispatch {
    ($(#[$doc:meta])* fn $name:ident / $avx2:ident / $avx512:ident
        => $generic:ident($($arg:ident: $ty:ty),*)) => {
        $(#[$doc])*
        pub fn $name($($arg: $ty,)* simd: Simd) {
            #[cfg(target_arch = "x86_64")]
            match simd.isa() {
                // SAFETY: a `Simd` only names an instruction set that the CPU reported
                // (`Simd::detect`), and each copy is compiled for exactly that set.
                Isa::Avx512 => return unsafe { $avx512($($arg),*) },
                // SAFETY: as above.
                Isa::Avx2 => return unsafe { $avx2($($arg),*) },
                Isa::Neon | Isa::Portable => {}
            }
            let _ = simd;
            $generic::<PORTABLE>($($arg),*)
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        fn $avx2($($arg: $ty),*) {
            $generic::<AVX2>($($arg),*)
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f,avx2,fma")]
        fn $avx512($($arg: $ty),*) {
            $generic::<AVX512>($($arg),*)
        }
    };
}

dispatch! {
    /// `X[:, j] = image indices[j] / 255`, as `ops::gather_images`. X: (784, n) column-major.
    /// Compiled for AVX2 this loop converts 8 bytes per instruction.
    fn gather_block / gather_block_avx2 / gather_block_avx512 =>
        gather_block_generic(images: &[u8], indices: &[u32], x: &mut [f32])
}

#[inline(always)]
fn gather_block_generic<const L: u8>(images: &[u8], indices: &[u32], x: &mut [f32]) {
    for (column, &image) in x.chunks_exact_mut(PIXELS).zip(indices) {
        let bytes = &images[image as usize * PIXELS..][..PIXELS];
        for (v, &byte) in column.iter_mut().zip(bytes) {
            *v = byte as f32 * PIXEL_SCALE;
        }
    }
}

dispatch! {
    /// `Z = W·A + b`. W: (units, inputs) row-major; b: (units); A: (inputs, n) column-major;
    /// Z: (units, n) column-major, units = b.len().
    fn dense_forward / dense_forward_avx2 / dense_forward_avx512 =>
        dense_forward_generic(w: &[f32], b: &[f32], inputs: usize, a: &[f32], n: usize, z: &mut [f32])
}

dispatch! {
    /// `dW += dZ·Aᵀ`. dZ: (units, n) column-major; A: (inputs, n) column-major;
    /// dW: (units, inputs) row-major.
    fn accumulate_outer / accumulate_outer_avx2 / accumulate_outer_avx512 =>
        accumulate_outer_generic(dz: &[f32], units: usize, a: &[f32], inputs: usize, dw: &mut [f32])
}

dispatch! {
    /// `dA = Wᵀ·dZ`. W: (units, inputs) row-major; dZ: (units, n) column-major;
    /// dA: (inputs, n) column-major.
    fn backward_input / backward_input_avx2 / backward_input_avx512 =>
        backward_input_generic(w: &[f32], units: usize, dz: &[f32], da: &mut [f32])
}

/// Floats per vector register in the copy for instruction set `level`.
const fn lanes(level: u8) -> usize {
    if level == AVX512 {
        16
    } else {
        LANES
    }
}

/// Units per tile in both products, and samples per tile in `dense_forward`: 5 × 2 = 10
/// registers of sums, which with the operands fits AVX2's 16 vector registers.
const TILE_UNITS: usize = 5;
const TILE_SAMPLES: usize = 2;
/// Samples per `dense_forward` tile with AVX-512: 5 × 4 = 20 of its 32 registers hold sums,
/// and per vector of k the tile loads 9 vectors for 20 multiply-adds (7 for 10 with AVX2).
const TILE_SAMPLES_AVX512: usize = 4;
/// Vectors of k per strip in `accumulate_outer`: 5 units × 2 vectors = 10 registers of sums
/// (AVX2 and portable), 5 × 4 = 20 with AVX-512.
const STRIP_VECTORS: usize = 2;
const STRIP_VECTORS_AVX512: usize = 4;

#[inline(always)]
fn dense_forward_generic<const L: u8>(
    w: &[f32],
    b: &[f32],
    inputs: usize,
    a: &[f32],
    n: usize,
    z: &mut [f32],
) {
    // W: (units, inputs) row-major; A: (inputs, n) col-major; Z: (units, n) col-major.
    let units = b.len();
    if inputs < 2 * LANES {
        // A narrow layer (the 10 × 10 output layer of 784-10-10): a dot product this short
        // costs more to set up and add up in vector registers than to do one by one.
        for (z, a) in z
            .chunks_exact_mut(units)
            .zip(a.chunks_exact(inputs))
            .take(n)
        {
            for ((z, row), &b) in z.iter_mut().zip(w.chunks_exact(inputs)).zip(b) {
                let dot = row
                    .iter()
                    .zip(a)
                    .fold(0.0, |d, (&w, &x)| madd::<L>(w, x, d));
                *z = b + dot;
            }
        }
        return;
    }
    if L == AVX512 {
        dense_tiles::<TILE_UNITS, TILE_SAMPLES_AVX512, L>(w, b, inputs, a, n, z);
    } else {
        dense_tiles::<TILE_UNITS, TILE_SAMPLES, L>(w, b, inputs, a, n, z);
    }
}

/// `Z = W·A + b` (shapes as in `dense_forward`) in tiles of R units × S samples, so that each
/// loaded vector of W or A feeds several multiply-adds.
#[inline(always)]
fn dense_tiles<const R: usize, const S: usize, const L: u8>(
    w: &[f32],
    b: &[f32],
    inputs: usize,
    a: &[f32],
    n: usize,
    z: &mut [f32],
) {
    let units = b.len();
    // Z[i.., j..] = b[i..] + dots, for a tile of R units and S samples.
    let mut store = |dots: &[&[f32]], i: usize, j: usize| {
        for (r, dots) in dots.iter().enumerate() {
            for (s, &dot) in dots.iter().enumerate() {
                z[(j + s) * units + i + r] = b[i + r] + dot;
            }
        }
    };
    // Whole tiles of units, then the leftover units one at a time; the same for samples.
    let mut i = 0;
    while i < units {
        let whole_units = units - i >= R;
        let mut j = 0;
        while j < n {
            let whole_samples = n - j >= S;
            match (whole_units, whole_samples) {
                (true, true) => {
                    let d = dot_tile::<R, S, L>(w, a, inputs, i, j);
                    store(&d.each_ref().map(|d| &d[..]), i, j);
                }
                (true, false) => {
                    let d = dot_tile::<R, 1, L>(w, a, inputs, i, j);
                    store(&d.each_ref().map(|d| &d[..]), i, j);
                }
                (false, true) => {
                    let d = dot_tile::<1, S, L>(w, a, inputs, i, j);
                    store(&d.each_ref().map(|d| &d[..]), i, j);
                }
                (false, false) => {
                    let d = dot_tile::<1, 1, L>(w, a, inputs, i, j);
                    store(&d.each_ref().map(|d| &d[..]), i, j);
                }
            }
            j += if whole_samples { S } else { 1 };
        }
        i += if whole_units { R } else { 1 };
    }
}

/// `dots[r][s] = W[i + r, :]·A[:, j + s]`: R rows of W against S columns of A, both of
/// length k. W: (·, k) row-major; A: (k, ·) column-major.
#[inline(always)]
fn dot_tile<const R: usize, const S: usize, const L: u8>(
    w: &[f32],
    a: &[f32],
    k: usize,
    i: usize,
    j: usize,
) -> [[f32; S]; R] {
    #[cfg(target_arch = "x86_64")]
    if L == AVX512 {
        // SAFETY: L = AVX512 only inside the copies `dispatch!` compiles for CPUs with
        // AVX-512F, AVX2 and FMA.
        return unsafe { avx512::dot_tile(w, a, k, i, j) };
    } else if L == AVX2 {
        // SAFETY: L = AVX2 only inside the copies `dispatch!` compiles for CPUs with AVX2
        // and FMA.
        return unsafe { avx2::dot_tile(w, a, k, i, j) };
    }
    // Portable: LANES partial sums per pair, added up in lane order like the AVX2 tile.
    let mut dots = [[0.0f32; S]; R];
    for (r, dots) in dots.iter_mut().enumerate() {
        let row = &w[(i + r) * k..][..k];
        for (s, dot) in dots.iter_mut().enumerate() {
            let column = &a[(j + s) * k..][..k];
            let mut sums = [0.0f32; LANES];
            let (rows, row_tail) = row.as_chunks::<LANES>();
            let (columns, column_tail) = column.as_chunks::<LANES>();
            for (wv, av) in rows.iter().zip(columns) {
                for l in 0..LANES {
                    sums[l] += wv[l] * av[l];
                }
            }
            *dot = sums.iter().sum::<f32>();
            for (&wv, &av) in row_tail.iter().zip(column_tail) {
                *dot += wv * av;
            }
        }
    }
    dots
}

#[inline(always)]
fn accumulate_outer_generic<const L: u8>(
    dz: &[f32],
    units: usize,
    a: &[f32],
    inputs: usize,
    dw: &mut [f32],
) {
    // dZ: (units, n) col-major; A: (inputs, n) col-major; dW: (units, inputs) row-major.
    let n = dz.len() / units;
    // Wide strips of k, then strips of one vector, then what is left one column at a time.
    // Every element of dW sums over j in order (one fused multiply-add per sample in the
    // AVX2 and AVX-512 copies), so the split does not change the result.
    let k = if L == AVX512 {
        outer_strips::<STRIP_VECTORS_AVX512, L>(dz, units, a, inputs, n, 0, dw)
    } else {
        outer_strips::<STRIP_VECTORS, L>(dz, units, a, inputs, n, 0, dw)
    };
    let rest = outer_strips::<1, L>(dz, units, a, inputs, n, k, dw);
    // The last columns of dW (all of them for layers narrower than a vector): sample by
    // sample, each row of dW gets dZ[i, j] times A's column, a loop along contiguous memory
    // that the compiler vectorizes.
    if rest < inputs {
        for (column, g) in a.chunks_exact(inputs).zip(dz.chunks_exact(units)) {
            for (row, &g) in dw.chunks_exact_mut(inputs).zip(g) {
                for (d, &x) in row[rest..].iter_mut().zip(&column[rest..]) {
                    *d = madd::<L>(g, x, *d);
                }
            }
        }
    }
}

/// `dW[:, k..] += dZ·A[k.., :]ᵀ` in strips of V vectors of k from column `from` on, as many
/// whole strips as fit; returns the first column not done. Strips of k outside, units
/// inside: a strip of the block's A (n × V vectors) comes from L2 once and from L1 for the
/// other unit tiles.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn outer_strips<const V: usize, const L: u8>(
    dz: &[f32],
    units: usize,
    a: &[f32],
    inputs: usize,
    n: usize,
    from: usize,
    dw: &mut [f32],
) -> usize {
    let width = V * lanes(L);
    let mut k = from;
    while k + width <= inputs {
        let mut i = 0;
        while i < units {
            if units - i >= TILE_UNITS {
                outer_tile::<TILE_UNITS, V, L>(dz, units, i, a, inputs, k, n, dw);
                i += TILE_UNITS;
            } else {
                outer_tile::<1, V, L>(dz, units, i, a, inputs, k, n, dw);
                i += 1;
            }
        }
        k += width;
    }
    k
}

/// `dW[i + r, k .. k + w] += Σ_j dZ[i + r, j]·A[k .. k + w, j]` for R units, where w is V
/// vectors: the strip of dW stays in registers while the n samples go by.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn outer_tile<const R: usize, const V: usize, const L: u8>(
    dz: &[f32],
    units: usize,
    i: usize,
    a: &[f32],
    inputs: usize,
    k: usize,
    n: usize,
    dw: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if L == AVX512 {
        // SAFETY: as in `dot_tile`.
        return unsafe { avx512::outer_tile::<R, V>(dz, units, i, a, inputs, k, n, dw) };
    } else if L == AVX2 {
        // SAFETY: as in `dot_tile`.
        return unsafe { avx2::outer_tile::<R, V>(dz, units, i, a, inputs, k, n, dw) };
    }
    let width = V * lanes(L);
    for r in 0..R {
        let sums = &mut dw[(i + r) * inputs + k..][..width];
        for j in 0..n {
            let g = dz[j * units + i + r];
            for (sum, &x) in sums.iter_mut().zip(&a[j * inputs + k..][..width]) {
                *sum += g * x;
            }
        }
    }
}

#[inline(always)]
fn backward_input_generic<const L: u8>(w: &[f32], units: usize, dz: &[f32], da: &mut [f32]) {
    // W: (units, inputs) row-major; dZ: (units, n) col-major; dA: (inputs, n) col-major.
    let inputs = w.len() / units;
    for (da, dz) in da.chunks_exact_mut(inputs).zip(dz.chunks_exact(units)) {
        // dA[:, j] = Σ_i dZ[i, j]·W[i, :]: a loop with no reduction, which the compiler
        // vectorizes on its own.
        da.fill(0.0);
        for (row, &g) in w.chunks_exact(inputs).zip(dz) {
            for (d, &wv) in da.iter_mut().zip(row) {
                *d = madd::<L>(g, wv, *d);
            }
        }
    }
}

/// `a·b + c`, fused (one rounding, one instruction) in the AVX2 and AVX-512 copies.
/// Elsewhere it is `a * b + c`: `mul_add` without hardware FMA would be a slow library call.
#[inline(always)]
fn madd<const L: u8>(a: f32, b: f32, c: f32) -> f32 {
    if L >= AVX2 {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// The two tiles written with AVX2 + FMA intrinsics: the compiler did not keep the portable
/// tiles' sums in vector registers (it spilled them and used 4-wide instructions), and these
/// two loops are nearly all of a step's arithmetic. `__m256` holds 8 floats;
/// `_mm256_fmadd_ps(a, b, c)` is `a·b + c` with one rounding. Everything here is compiled for
/// AVX2 and FMA and may only run on a CPU that has them (`Simd::detect`).
#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)] // r, s, v index several arrays at once, as in the math
mod avx2 {
    use super::LANES;
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn load(v: &[f32; LANES]) -> __m256 {
        // SAFETY: `v` is 8 readable floats, and `loadu` takes any alignment.
        unsafe { _mm256_loadu_ps(v.as_ptr()) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn store(v: &mut [f32; LANES], x: __m256) {
        // SAFETY: `v` is 8 writable floats, and `storeu` takes any alignment.
        unsafe { _mm256_storeu_ps(v.as_mut_ptr(), x) }
    }

    /// See `super::dot_tile`. R × S registers of sums; per 8 values of k, R + S loads and
    /// R × S multiply-adds.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub fn dot_tile<const R: usize, const S: usize>(
        w: &[f32],
        a: &[f32],
        k: usize,
        i: usize,
        j: usize,
    ) -> [[f32; S]; R] {
        let rows: [&[f32]; R] = std::array::from_fn(|r| &w[(i + r) * k..][..k]);
        let columns: [&[f32]; S] = std::array::from_fn(|s| &a[(j + s) * k..][..k]);
        let vectors = k / LANES;
        // The loop reads through pointers: with slice indexing the compiler kept a bounds
        // check per load, as many instructions again as the arithmetic.
        let row_at = rows.map(|row| row.as_ptr());
        let column_at = columns.map(|column| column.as_ptr());
        // SAFETY (both loads): c < vectors, so c·8 + 8 ≤ k, the length of every row and column.
        let load = |at: *const f32, c: usize| unsafe { _mm256_loadu_ps(at.add(c * LANES)) };
        let mut sums = [[_mm256_setzero_ps(); S]; R];
        for c in 0..vectors {
            let x: [__m256; S] = std::array::from_fn(|s| load(column_at[s], c));
            for r in 0..R {
                let wv = load(row_at[r], c);
                for s in 0..S {
                    sums[r][s] = _mm256_fmadd_ps(wv, x[s], sums[r][s]);
                }
            }
        }
        let mut dots = [[0.0f32; S]; R];
        for r in 0..R {
            for s in 0..S {
                // The lanes in order, then the last k % 8 products.
                let mut lanes = [0.0f32; LANES];
                store(&mut lanes, sums[r][s]);
                let mut dot = lanes.iter().sum::<f32>();
                for c in vectors * LANES..k {
                    dot = rows[r][c].mul_add(columns[s][c], dot);
                }
                dots[r][s] = dot;
            }
        }
        dots
    }

    /// See `super::outer_tile`. R × V registers of sums; per sample, V loads and R
    /// broadcasts for R × V multiply-adds.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub fn outer_tile<const R: usize, const V: usize>(
        dz: &[f32],
        units: usize,
        i: usize,
        a: &[f32],
        inputs: usize,
        k: usize,
        n: usize,
        dw: &mut [f32],
    ) {
        let width = V * LANES;
        let vector =
            |s: &[f32], v: usize| -> __m256 { load(s[v * LANES..][..LANES].try_into().unwrap()) };
        let mut sums: [[__m256; V]; R] = std::array::from_fn(|r| {
            let row = &dw[(i + r) * inputs + k..][..width];
            std::array::from_fn(|v| vector(row, v))
        });
        // Bounds, checked once here so that the loop need not (see `dot_tile`): the last
        // sample's strip of A and dZ entries lie inside the slices.
        if n == 0 {
            return;
        }
        assert!((n - 1) * inputs + k + width <= a.len() && (n - 1) * units + i + R <= dz.len());
        let (a_at, dz_at) = (a.as_ptr(), dz.as_ptr());
        for j in 0..n {
            // SAFETY: j < n, so by the assert every read below is inside `a` or `dz`.
            let x: [__m256; V] = std::array::from_fn(|v| unsafe {
                _mm256_loadu_ps(a_at.add(j * inputs + k + v * LANES))
            });
            for r in 0..R {
                // SAFETY: as above.
                let g = _mm256_set1_ps(unsafe { *dz_at.add(j * units + i + r) });
                for v in 0..V {
                    sums[r][v] = _mm256_fmadd_ps(g, x[v], sums[r][v]);
                }
            }
        }
        for (r, sums) in sums.iter().enumerate() {
            let row = &mut dw[(i + r) * inputs + k..][..width];
            for (out, &sum) in row.chunks_exact_mut(LANES).zip(sums) {
                store(out.try_into().unwrap(), sum);
            }
        }
    }
}

/// The same two tiles with AVX-512F: `__m512` holds 16 floats, so each loop runs half as many
/// iterations as with AVX2, and its 32 registers hold larger tiles (5 × 4 sums in `dot_tile`,
/// 5 units × 4 vectors in `outer_tile`). Everything here is compiled for AVX-512F, AVX2 and
/// FMA and may only run on a CPU that has them (`Simd::detect`).
#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)] // r, s, v index several arrays at once, as in the math
mod avx512 {
    use std::arch::x86_64::*;

    /// Floats per `__m512`.
    const LANES: usize = 16;

    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn load(v: &[f32; LANES]) -> __m512 {
        // SAFETY: `v` is 16 readable floats, and `loadu` takes any alignment.
        unsafe { _mm512_loadu_ps(v.as_ptr()) }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn store(v: &mut [f32; LANES], x: __m512) {
        // SAFETY: `v` is 16 writable floats, and `storeu` takes any alignment.
        unsafe { _mm512_storeu_ps(v.as_mut_ptr(), x) }
    }

    /// See `super::dot_tile`. R × S registers of sums; per 16 values of k, R + S loads and
    /// R × S multiply-adds. The 16 lanes are added up pairwise (`_mm512_reduce_add_ps`), in
    /// a fixed order.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub fn dot_tile<const R: usize, const S: usize>(
        w: &[f32],
        a: &[f32],
        k: usize,
        i: usize,
        j: usize,
    ) -> [[f32; S]; R] {
        let rows: [&[f32]; R] = std::array::from_fn(|r| &w[(i + r) * k..][..k]);
        let columns: [&[f32]; S] = std::array::from_fn(|s| &a[(j + s) * k..][..k]);
        let vectors = k / LANES;
        // Loads through pointers, as in `avx2::dot_tile`: no bounds check per load.
        let row_at = rows.map(|row| row.as_ptr());
        let column_at = columns.map(|column| column.as_ptr());
        // SAFETY (both loads): c < vectors, so c·16 + 16 ≤ k, the length of every row and
        // column.
        let load = |at: *const f32, c: usize| unsafe { _mm512_loadu_ps(at.add(c * LANES)) };
        let mut sums = [[_mm512_setzero_ps(); S]; R];
        for c in 0..vectors {
            let x: [__m512; S] = std::array::from_fn(|s| load(column_at[s], c));
            for r in 0..R {
                let wv = load(row_at[r], c);
                for s in 0..S {
                    sums[r][s] = _mm512_fmadd_ps(wv, x[s], sums[r][s]);
                }
            }
        }
        let mut dots = [[0.0f32; S]; R];
        for r in 0..R {
            for s in 0..S {
                // The lanes, then the last k % 16 products.
                let mut dot = _mm512_reduce_add_ps(sums[r][s]);
                for c in vectors * LANES..k {
                    dot = rows[r][c].mul_add(columns[s][c], dot);
                }
                dots[r][s] = dot;
            }
        }
        dots
    }

    /// See `super::outer_tile`. R × V registers of sums; per sample, V loads and R
    /// broadcasts for R × V multiply-adds.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub fn outer_tile<const R: usize, const V: usize>(
        dz: &[f32],
        units: usize,
        i: usize,
        a: &[f32],
        inputs: usize,
        k: usize,
        n: usize,
        dw: &mut [f32],
    ) {
        let width = V * LANES;
        let vector =
            |s: &[f32], v: usize| -> __m512 { load(s[v * LANES..][..LANES].try_into().unwrap()) };
        let mut sums: [[__m512; V]; R] = std::array::from_fn(|r| {
            let row = &dw[(i + r) * inputs + k..][..width];
            std::array::from_fn(|v| vector(row, v))
        });
        // Bounds, checked once here so that the loop need not (see `avx2::dot_tile`).
        if n == 0 {
            return;
        }
        assert!((n - 1) * inputs + k + width <= a.len() && (n - 1) * units + i + R <= dz.len());
        let (a_at, dz_at) = (a.as_ptr(), dz.as_ptr());
        for j in 0..n {
            // SAFETY: j < n, so by the assert every read below is inside `a` or `dz`.
            let x: [__m512; V] = std::array::from_fn(|v| unsafe {
                _mm512_loadu_ps(a_at.add(j * inputs + k + v * LANES))
            });
            for r in 0..R {
                // SAFETY: as above.
                let g = _mm512_set1_ps(unsafe { *dz_at.add(j * units + i + r) });
                for v in 0..V {
                    sums[r][v] = _mm512_fmadd_ps(g, x[v], sums[r][v]);
                }
            }
        }
        for (r, sums) in sums.iter().enumerate() {
            let row = &mut dw[(i + r) * inputs + k..][..width];
            for (out, &sum) in row.chunks_exact_mut(LANES).zip(sums) {
                store(out.try_into().unwrap(), sum);
            }
        }
    }
}
