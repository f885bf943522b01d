//! The fast CPU step for wide networks (a hidden layer of `WIDE_UNITS` units or more): the same
//! math as the reference path, with each layer's three products run by register-tiled
//! kernels at the core's peak, the bias, activation, derivative, softmax and the optimizer's
//! update applied as the products' tiles are stored, and each product split across threads.
//!
//! # Why another engine
//! `fused` splits a batch's samples over threads, each with its own gradient sums, and works
//! out every layer with dot products along the inputs. That suits 784-10-10, where the step
//! is mostly reading images. At 784-1600-10 a step is ~2.5 M multiply-adds per sample: the
//! products are all that counts, a batch of 64 ran on one thread (one part), and every part
//! carried a 5 MB copy of dW that a reduction and the update then read again.
//!
//! # Layouts
//! Each block of samples keeps its activations twice over where a product needs it:
//! - feature-major `(features, nb)`: one row per unit, the block's samples contiguous, padded
//!   to `nb` (a multiple of `PAD`) with samples of zeros that no gradient reads: Z, A, dZ, and
//!   the images as `x`;
//! - sample-major `(samples, features)`: one row per sample (the reference's column-major
//!   layout): the images as `x_t` and each hidden layer's `a_t`, rows padded to `PAD`.
//!
//! # Products
//! All three are one micro-kernel (`tile`): `C[r, :] += Σ_d B[r, d] · X[d, :]` for a tile of
//! `MR` rows of C and `NV` vectors of its columns, held in registers: per step d it loads the
//! `NV` vectors of row d of X and broadcasts `MR` numbers of B (6 × 4 = 24 of AVX-512's 32
//! registers; 10 loads per 24 multiply-adds). No operand is packed: B is read through strides.
//! - forward `Z = W·A + b`: B = W (rows: units), X = A feature-major, d over inputs;
//!   stored as `Z`, `A = g(Z)` (both layouts);
//! - `dA = Wᵀ·dZ`: B = Wᵀ (W read down its columns), X = dZ feature-major, d over units;
//!   stored as `dZ[l-1] = dA ⊙ g'(Z[l-1])`;
//! - `dW = dZ·Aᵀ`: B = dZ, X = A sample-major, d over samples; added to the batch's sums, or
//!   in its last block handed straight to the update (`ops::Update`), so that dW of a batch
//!   that fits one block never reaches memory and each parameter and its optimizer state are
//!   read and written once per step.
//!
//! # Threads
//! A batch of one block (up to `FusedConfig::wide_block` samples, 64) splits each product's
//! output rows over threads in whole tiles (`Wide::tasks`): as many as the work pays for
//! (`TASK_WORK` multiply-adds each), at most `FusedConfig::threads`, on rayon's pool. Every
//! element is summed in the same order however the rows are split, so such a step gives the
//! same bits on any number of threads. A batch of at least `PART_BLOCKS` blocks per thread
//! (a full batch) instead runs one part of consecutive blocks per thread, each with its own
//! sums and the products on one thread, and `reduce_update` then adds the parts in order and
//! updates: fewer meetings between threads than one per product and block. The split depends
//! only on the batch size and the thread count, so runs stay bit-identical.
//!
//! # SIMD
//! The kernels are generic over a `Vector` (AVX-512: 16 floats, AVX2 + FMA: 8, NEON: 4, and a
//! portable array of 8 that the tests run everywhere) and compiled once per instruction set
//! (`kernels!`); `Simd::detect` picks the copy. The NEON copy is the same generic code over
//! four intrinsics; it is compiled only on aarch64.

use std::ops::Range;

use rayon::prelude::*;

use super::fused::FusedConfig;
use super::ops::Update;
use super::simd::{Isa, Simd};
use crate::data::pool::ImagePool;
use crate::data::{CLASSES, PIXELS};
use crate::model::{Activation, Model};

/// Feature-major buffers round their samples, and sample-major rows their features, up to a
/// multiple of this: whole vectors for every instruction set.
const PAD: usize = 16;
/// The widest tile in floats (AVX-512's 4 vectors of 16).
const WIDEST: usize = 64;
/// Fewest multiply-adds worth handing to another thread (~15 µs on one core).
const TASK_WORK: usize = 1 << 21;
/// From this many units in a hidden layer on, `CpuBackend` runs this engine rather than
/// `fused` (measured: bench/NOTES.md, "Wide layers").
pub const WIDE_UNITS: usize = 128;

/// Whether `config` (or, by default, the network's width) asks for this engine.
pub fn suits(model: &Model, config: &FusedConfig) -> bool {
    config.wide.unwrap_or_else(|| {
        let hidden = &model.layers[..model.layers.len() - 1];
        hidden.iter().any(|l| l.outputs >= WIDE_UNITS)
    })
}

/// One layer's scratch. Feature-major buffers are (units, nb); sample-major ones (nb, ld_t).
struct Layer {
    /// Z and dZ, feature-major.
    z: Vec<f32>,
    dz: Vec<f32>,
    /// A hidden layer's A = g(Z), feature-major and sample-major (rows padded to `ld_t`,
    /// the padding zero); empty for the output layer.
    a: Vec<f32>,
    a_t: Vec<f32>,
    ld_t: usize,
    /// The sums of dW (units, inputs padded to `PAD`) and db over a batch's blocks so far;
    /// empty when every batch fits one block.
    dw: Vec<f32>,
    db: Vec<f32>,
}

/// The scratch of one range of a batch's samples, worked through block by block.
struct Part {
    /// Samples in the block of the last `forward`.
    n: usize,
    /// The block's images: sample-major (block, 784), and feature-major (784, nb).
    x_t: Vec<f32>,
    x: Vec<f32>,
    layers: Vec<Layer>,
    labels: Vec<u8>,
}

/// The engine: its configuration and one `Part` per thread.
pub struct Wide {
    block: usize,
    /// `block` rounded up to `PAD`: the row length of the feature-major buffers.
    nb: usize,
    threads: usize,
    kernels: Kernels,
    /// Part 0 takes batches of one block (its products split over the threads) and
    /// evaluation; a batch of at least `PART_BLOCKS` blocks per thread is split into parts,
    /// one per thread, each with its own sums.
    parts: Vec<Part>,
}

/// Fewest blocks per part before a batch is split into parts (measured: bench/NOTES.md).
const PART_BLOCKS: usize = 4;

/// A layer's parameters as the tasks reach them. Written only through a batch's last block
/// (`Sums::last`), and then only when they come from a `&mut Model`.
#[derive(Clone, Copy)]
struct Params {
    w: Out,
    b: Out,
    /// W's and b's two state tensors: (pointer, length).
    state: [[(Out, usize); 2]; 2],
}

impl Part {
    fn new(model: &Model, nb: usize, sums: bool) -> Part {
        let last = model.layers.len() - 1;
        let layers = model.layers.iter().enumerate().map(|(l, layer)| {
            let (units, inputs) = (layer.outputs, layer.inputs);
            let hidden = l < last;
            let ld_t = units.next_multiple_of(PAD);
            let sums = |len: usize| vec![0.0; if sums { len } else { 0 }];
            Layer {
                z: vec![0.0; units * nb],
                dz: vec![0.0; units * nb],
                a: vec![0.0; if hidden { units * nb } else { 0 }],
                a_t: vec![0.0; if hidden { nb * ld_t } else { 0 }],
                ld_t,
                dw: sums(units * inputs.next_multiple_of(PAD)),
                db: sums(units),
            }
        });
        Part {
            n: 0,
            x_t: vec![0.0; nb * PIXELS],
            x: vec![0.0; PIXELS * nb],
            layers: layers.collect(),
            labels: vec![0; nb],
        }
    }
}

impl Wide {
    /// Scratch for `model` and batches of up to `capacity` samples, split into blocks of at
    /// most `config.wide_block`.
    pub fn new(model: &Model, capacity: usize, config: FusedConfig) -> Wide {
        let block = config.wide_block.clamp(1, capacity.max(1));
        let nb = block.next_multiple_of(PAD);
        let threads = config.threads.max(1);
        let blocks = capacity.div_ceil(block);
        // Part p only runs when a batch has PART_BLOCKS · (p + 1) blocks or more.
        let parts = (blocks / PART_BLOCKS).clamp(1, threads);
        Wide {
            block,
            nb,
            threads,
            kernels: Kernels::new(Simd::detect(config.simd)),
            parts: (0..parts)
                .map(|_| Part::new(model, nb, blocks > 1))
                .collect(),
        }
    }

    /// The instruction set the kernels run with.
    pub fn isa(&self) -> Isa {
        self.kernels.isa
    }

    /// One training step on the batch `indices` (positions in `pool`): the gradients, and
    /// `update` applied to every parameter with its optimizer state (`state`: per tensor W1,
    /// b1, W2, …, [V, unused] for momentum, [M, V] for Adam, empty for SGD). Per sample
    /// `stats`: (2, m) column-major, (loss, correct), from the forward pass before the update.
    pub fn train(
        &mut self,
        model: &mut Model,
        pool: &ImagePool,
        indices: &[u32],
        update: Update,
        state: &mut [[Vec<f32>; 2]],
        stats: &mut [f32],
    ) {
        let m = indices.len();
        let blocks = m.div_ceil(self.block);
        let parts = (blocks / PART_BLOCKS).clamp(1, self.parts.len());
        let scale = 1.0 / m as f32;
        if parts > 1 {
            self.train_parts(model, pool, indices, parts, stats);
            return self.reduce_update(model, parts, update, scale, state);
        }
        let (kernels, threads) = (self.kernels, self.threads);
        let part = &mut self.parts[0];
        for b in 0..blocks {
            let range = m * b / blocks..m * (b + 1) / blocks;
            let stats = &mut stats[2 * range.start..2 * range.end];
            part.forward_and_output(kernels, threads, model, pool, &indices[range], stats);
            let sums = Sums {
                first: b == 0,
                last: (b + 1 == blocks).then_some((update, scale)),
            };
            // The parameters (and state) are written only in the last block, after every
            // read of them in this step (`backward` reads W through `params` too).
            let params = match sums.last {
                Some(_) => params_mut(model, state),
                None => params_read(model),
            };
            part.backward(kernels, threads, model, &params, sums);
        }
    }

    /// A batch of many blocks: `parts` contiguous ranges of blocks, one per thread, each
    /// adding its blocks' dW and db into its own sums (the products on one thread each).
    fn train_parts(
        &mut self,
        model: &Model,
        pool: &ImagePool,
        indices: &[u32],
        parts: usize,
        stats: &mut [f32],
    ) {
        let (m, kernels) = (indices.len(), self.kernels);
        let blocks = m.div_ceil(self.block);
        let params = params_read(model);
        // Each part with its blocks' statistics.
        let mut jobs = Vec::with_capacity(parts);
        let mut rest = stats;
        for (p, part) in self.parts[..parts].iter_mut().enumerate() {
            let span = blocks * p / parts..blocks * (p + 1) / parts;
            let first = m * span.start / blocks;
            let end = m * span.end / blocks;
            let (mine, others) = std::mem::take(&mut rest).split_at_mut(2 * (end - first));
            rest = others;
            jobs.push((part, span, first, mine));
        }
        jobs.into_par_iter().for_each(|(part, span, first, stats)| {
            for b in span.clone() {
                let range = m * b / blocks..m * (b + 1) / blocks;
                let at = 2 * (range.start - first);
                let stats = &mut stats[at..at + 2 * range.len()];
                part.forward_and_output(kernels, 1, model, pool, &indices[range], stats);
                let sums = Sums {
                    first: b == span.start,
                    last: None,
                };
                part.backward(kernels, 1, model, &params, sums);
            }
        });
    }

    /// After `train_parts`: each parameter gets `update` with the gradient `scale · Σ_parts`
    /// of its sums (added in part order), in one pass over it and its state.
    fn reduce_update(
        &mut self,
        model: &mut Model,
        parts: usize,
        update: Update,
        scale: f32,
        state: &mut [[Vec<f32>; 2]],
    ) {
        let params = params_mut(model, state);
        for (l, layer) in model.layers.iter().enumerate() {
            let (units, inputs) = (layer.outputs, layer.inputs);
            let ld = inputs.next_multiple_of(PAD);
            let sums: Vec<(*const f32, *const f32)> = self.parts[..parts]
                .iter()
                .map(|p| (p.layers[l].dw.as_ptr(), p.layers[l].db.as_ptr()))
                .collect();
            let args = ReduceArgs {
                sums,
                ld,
                inputs,
                params: params[l],
                update,
                scale,
            };
            let tasks = Self::tasks(self.threads, &self.kernels, units, units * inputs * 8);
            // SAFETY: the sums are (units, ld) and (units) in every part; the parameters and
            // state come from `&mut` and the tasks write disjoint rows.
            run(tasks, units, self.kernels.mr, |rows| unsafe {
                reduce_update_rows(&args, rows)
            });
        }
    }

    /// The output layer's `Z[L]: (CLASSES, m)` column-major for the samples `indices`.
    pub fn logits(&mut self, model: &Model, images: &[u8], indices: &[u32], logits: &mut [f32]) {
        let last = model.layers.len() - 1;
        let (kernels, threads, nb) = (self.kernels, self.threads, self.nb);
        let part = &mut self.parts[0];
        for (chunk, out) in indices
            .chunks(self.block)
            .zip(logits.chunks_mut(CLASSES * self.block))
        {
            part.forward(kernels, threads, model, images, chunk);
            let z = &part.layers[last].z;
            for (j, column) in out.chunks_exact_mut(CLASSES).enumerate() {
                for (c, v) in column.iter_mut().enumerate() {
                    *v = z[c * nb + j];
                }
            }
        }
    }

    /// Tasks for a product of `rows` output rows and `work` multiply-adds in all.
    fn tasks(threads: usize, kernels: &Kernels, rows: usize, work: usize) -> usize {
        (work / TASK_WORK)
            .clamp(1, threads)
            .min(rows.div_ceil(kernels.mr))
    }
}

/// The layers' parameters and their optimizer state (per tensor W1, b1, W2, …; none before
/// an optimizer is set) as `Params`, to be written by a batch's last block or `reduce_update`.
fn params_mut(model: &mut Model, state: &mut [[Vec<f32>; 2]]) -> Vec<Params> {
    let tensors = state
        .iter_mut()
        .map(|[s0, s1]| [s0, s1].map(|s| (Out(s.as_mut_ptr()), s.len())));
    let layers = model
        .layers
        .iter_mut()
        .map(|l| (Out(l.w.as_mut_ptr()), Out(l.b.as_mut_ptr())));
    params(layers, tensors)
}

/// The layers' parameters as `Params` that are only read (blocks before a batch's last, and
/// the parts: `Sums::last` is None there). The pointers are mutable for the type alone.
fn params_read(model: &Model) -> Vec<Params> {
    let layers = model
        .layers
        .iter()
        .map(|l| (Out(l.w.as_ptr().cast_mut()), Out(l.b.as_ptr().cast_mut())));
    params(layers, std::iter::empty())
}

fn params(
    layers: impl ExactSizeIterator<Item = (Out, Out)>,
    tensors: impl Iterator<Item = [(Out, usize); 2]>,
) -> Vec<Params> {
    let mut tensors: Vec<_> = tensors.collect();
    tensors.resize(2 * layers.len(), [(Out(std::ptr::null_mut()), 0); 2]);
    layers
        .zip(tensors.chunks_exact(2))
        .map(|((w, b), state)| Params {
            w,
            b,
            state: [state[0], state[1]],
        })
        .collect()
}

impl Part {
    /// The block `indices` forward, then the output layer: each sample's (loss, correct)
    /// into `stats` (2, n) and `dZ[L]`.
    fn forward_and_output(
        &mut self,
        kernels: Kernels,
        threads: usize,
        model: &Model,
        pool: &ImagePool,
        indices: &[u32],
        stats: &mut [f32],
    ) {
        let n = indices.len();
        self.forward(kernels, threads, model, &pool.images, indices);
        for (label, &image) in self.labels.iter_mut().zip(indices) {
            *label = pool.labels[image as usize];
        }
        let nb = self.x.len() / PIXELS;
        let output = &mut self.layers[model.layers.len() - 1];
        softmax_output_grad(&output.z, nb, &self.labels[..n], &mut output.dz, stats);
    }

    /// The block `indices` through every layer: `Z[l] = W[l]·A[l-1] + b[l]`, and for the
    /// hidden layers `A[l] = g(Z[l])` in both layouts.
    fn forward(
        &mut self,
        kernels: Kernels,
        threads: usize,
        model: &Model,
        images: &[u8],
        indices: &[u32],
    ) {
        let (n, nb) = (indices.len(), self.x.len() / PIXELS);
        self.n = n;
        super::fused::gather_block(images, indices, &mut self.x_t[..n * PIXELS], kernels.simd);
        // SAFETY: `kernels` runs on this CPU.
        unsafe { (kernels.transpose)(&self.x_t, PIXELS, n, nb, &mut self.x) };
        let last = model.layers.len() - 1;
        for (l, layer) in model.layers.iter().enumerate() {
            let (below, this) = self.layers.split_at_mut(l);
            let input = if l == 0 { &self.x } else { &below[l - 1].a };
            let out = &mut this[0];
            let args = ForwardArgs {
                w: layer.w.as_ptr(),
                b: layer.b.as_ptr(),
                inputs: layer.inputs,
                x: input.as_ptr(),
                nb,
                z: Out(out.z.as_mut_ptr()),
                hidden: (l < last).then_some((Out(out.a.as_mut_ptr()), Out(out.a_t.as_mut_ptr()))),
                ld_t: out.ld_t,
                activation: model.activation,
            };
            let tasks = Wide::tasks(threads, &kernels, layer.outputs, layer.w.len() * n);
            // SAFETY: `kernels` runs on this CPU (`Kernels::new`), the pointers cover the
            // shapes in `args` (buffers sized in `new`), and the tasks write disjoint rows.
            run(tasks, layer.outputs, kernels.mr, |rows| unsafe {
                (kernels.forward)(&args, rows)
            });
        }
    }

    /// From `dZ[L]` down: for each layer, `dZ[l-1] = W[l]ᵀ·dZ[l] ⊙ g'(Z[l-1])` (before W[l]
    /// changes), then dW[l], db[l] into the sums or, in a batch's last block, the update.
    fn backward(
        &mut self,
        kernels: Kernels,
        threads: usize,
        model: &Model,
        params: &[Params],
        sums: Sums,
    ) {
        let (n, nb) = (self.n, self.x.len() / PIXELS);
        for l in (0..model.layers.len()).rev() {
            let (units, inputs) = (model.layers[l].outputs, model.layers[l].inputs);
            let (below, this) = self.layers.split_at_mut(l);
            let this = &mut this[0];
            if l > 0 {
                let args = InputGradArgs {
                    w: params[l].w.0,
                    units,
                    inputs,
                    dz: this.dz.as_ptr(),
                    nb,
                    z_below: below[l - 1].z.as_ptr(),
                    dz_below: Out(below[l - 1].dz.as_mut_ptr()),
                    activation: model.activation,
                };
                let tasks = Wide::tasks(threads, &kernels, inputs, units * inputs * n);
                // SAFETY: as in `forward`.
                run(tasks, inputs, kernels.mr, |rows| unsafe {
                    (kernels.input_grad)(&args, rows)
                });
            }
            let (x_t, ld_x) = if l == 0 {
                (self.x_t.as_ptr(), PIXELS)
            } else {
                (below[l - 1].a_t.as_ptr(), below[l - 1].ld_t)
            };
            let args = WeightGradArgs {
                dz: this.dz.as_ptr(),
                nb,
                n,
                x_t,
                ld_x,
                inputs,
                sums: Out(this.dw.as_mut_ptr()),
                ld_sums: inputs.next_multiple_of(PAD),
                db: Out(this.db.as_mut_ptr()),
                w: params[l].w,
                b: params[l].b,
                state: params[l].state,
                mode: sums,
            };
            let tasks = Wide::tasks(threads, &kernels, units, units * inputs * n);
            // SAFETY: as in `forward`; the state tensors are as long as their parameters
            // whenever `update` reads them (`CpuBackend::set_optimizer`).
            run(tasks, units, kernels.mr, |rows| unsafe {
                (kernels.weight_grad)(&args, rows)
            });
        }
    }
}

/// Where a block's dW and db go: `first`: the sums start from zero; `last`: the batch ends
/// here, so the update gets `(Σ + this block's) · 1/m` (its second field) instead of the sums.
#[derive(Clone, Copy)]
struct Sums {
    first: bool,
    last: Option<(Update, f32)>,
}

/// A pointer the tasks of one product write through, each to its own rows.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: `Out` is only shared between the tasks of one product (`run`), which write
// disjoint elements, and lives no longer than the buffer it points into.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

/// Runs `job(rows)` over `0..rows` split into `tasks` ranges of whole `mr`-row tiles: here
/// when there is one, else on rayon's pool.
fn run(tasks: usize, rows: usize, mr: usize, job: impl Fn(Range<usize>) + Sync) {
    let per = rows.div_ceil(mr).div_ceil(tasks.max(1)) * mr;
    if tasks <= 1 {
        return job(0..rows);
    }
    (0..tasks).into_par_iter().for_each(|t| {
        let range = (t * per).min(rows)..((t + 1) * per).min(rows);
        if !range.is_empty() {
            job(range);
        }
    });
}

// ---------------------------------------------------------------------------------------------
// The products' tasks: each computes the output rows `rows` of one product, tile by tile, and
// stores each tile through its epilogue. Pointers, because the tasks of one product share the
// output buffers (each writing its own rows).
// ---------------------------------------------------------------------------------------------

/// `Z = W·A + b` and, for a hidden layer, `A = g(Z)`. W: (units, inputs) row-major; b: (units);
/// x = A[l-1]: (inputs, nb) feature-major; Z, A: (units, nb) feature-major; A_t: (nb, ld_t).
struct ForwardArgs {
    w: *const f32,
    b: *const f32,
    inputs: usize,
    x: *const f32,
    nb: usize,
    z: Out,
    /// A and A_t, for a hidden layer.
    hidden: Option<(Out, Out)>,
    ld_t: usize,
    activation: Activation,
}

/// `dZ[l-1] = W[l]ᵀ·dZ[l] ⊙ g'(Z[l-1])`. W: (units, inputs) row-major; dZ[l]: (units, nb),
/// Z[l-1], dZ[l-1]: (inputs, nb), all feature-major.
struct InputGradArgs {
    w: *const f32,
    units: usize,
    inputs: usize,
    dz: *const f32,
    nb: usize,
    z_below: *const f32,
    dz_below: Out,
    activation: Activation,
}

/// `dW = dZ·Aᵀ` and `db = Σ_samples dZ` of a block's n samples, into the sums or the update.
/// dZ: (units, nb) feature-major; x_t = A[l-1]: (n, ld_x) sample-major, ld_x ≥ inputs padded
/// to `PAD` (the padding zero); sums: (units, ld_sums) and db: (units); W: (units, inputs)
/// row-major, b: (units); state: W's then b's two state tensors, (pointer, length).
struct WeightGradArgs {
    dz: *const f32,
    nb: usize,
    n: usize,
    x_t: *const f32,
    ld_x: usize,
    inputs: usize,
    sums: Out,
    ld_sums: usize,
    db: Out,
    w: Out,
    b: Out,
    state: [[(Out, usize); 2]; 2],
    mode: Sums,
}

// SAFETY (all three): the arguments of one product are shared by its tasks, which read the
// inputs and write disjoint rows of the outputs, all within `run`'s call.
unsafe impl Sync for ForwardArgs {}
unsafe impl Sync for InputGradArgs {}
unsafe impl Sync for WeightGradArgs {}

/// A mutable slice of `len` floats at `at` past `p`; empty when `len` is 0.
///
/// # Safety
/// `p + at .. p + at + len` lies in one buffer that nothing else reads or writes meanwhile.
#[inline(always)]
unsafe fn slice<'a>(p: Out, at: usize, len: usize) -> &'a mut [f32] {
    if len == 0 {
        return &mut [];
    }
    std::slice::from_raw_parts_mut(p.0.add(at), len)
}

#[inline(always)]
unsafe fn forward_task<V: Vector, const MR: usize, const NV: usize>(
    args: &ForwardArgs,
    rows: Range<usize>,
) {
    let p = Operands {
        b: args.w,
        rs: args.inputs,
        cs: 1,
        x: args.x,
        ldx: args.nb,
        depth: args.inputs,
    };
    tiles::<V, MR, NV>(p, rows, args.nb, None, &mut |i, j, width, out| {
        for (r, out) in out.iter().enumerate() {
            let (unit, at) = (i + r, (i + r) * args.nb + j);
            let bias = *args.b.add(unit);
            let z = slice(args.z, at, width);
            for (z, &sum) in z.iter_mut().zip(out) {
                *z = sum + bias;
            }
            if let Some((a, a_t)) = args.hidden {
                let a = slice(a, at, width);
                super::ops::activation(z, args.activation, a);
                for (s, &v) in a.iter().enumerate() {
                    *a_t.0.add((j + s) * args.ld_t + unit) = v;
                }
            }
        }
    });
}

#[inline(always)]
unsafe fn input_grad_task<V: Vector, const MR: usize, const NV: usize>(
    args: &InputGradArgs,
    rows: Range<usize>,
) {
    // Output rows are inputs k; B[r, d] = W[d, k + r], read down W's columns.
    let p = Operands {
        b: args.w,
        rs: 1,
        cs: args.inputs,
        x: args.dz,
        ldx: args.nb,
        depth: args.units,
    };
    tiles::<V, MR, NV>(p, rows, args.nb, None, &mut |k, j, width, out| {
        for (r, da) in out.iter().enumerate() {
            let at = (k + r) * args.nb + j;
            let z = std::slice::from_raw_parts(args.z_below.add(at), width);
            let dz = slice(args.dz_below, at, width);
            super::ops::activation_grad(&da[..width], z, args.activation, dz);
        }
    });
}

#[inline(always)]
unsafe fn weight_grad_task<V: Vector, const MR: usize, const NV: usize>(
    args: &WeightGradArgs,
    rows: Range<usize>,
) {
    // Output rows are units i, columns inputs k (padded); the sum runs over the n samples.
    let p = Operands {
        b: args.dz,
        rs: args.nb,
        cs: 1,
        x: args.x_t,
        ldx: args.ld_x,
        depth: args.n,
    };
    let start = (!args.mode.first).then_some((args.sums.0 as *const f32, args.ld_sums));
    let [w_state, b_state] = args.state;
    let columns = args.inputs.next_multiple_of(PAD);
    tiles_by_columns::<V, MR, NV>(p, rows.clone(), columns, start, &mut |i, k, width, out| {
        for (r, sums) in out.iter().enumerate() {
            let unit = i + r;
            match args.mode.last {
                None => {
                    slice(args.sums, unit * args.ld_sums + k, width).copy_from_slice(&sums[..width])
                }
                Some((update, scale)) => {
                    let valid = width.min(args.inputs - k);
                    let mut g = [0.0f32; WIDEST];
                    for (g, &sum) in g.iter_mut().zip(&sums[..valid]) {
                        *g = sum * scale;
                    }
                    let at = unit * args.inputs + k;
                    let [s0, s1] = w_state.map(|(s, len)| slice(s, at, valid.min(len)));
                    update.apply(slice(args.w, at, valid), &g[..valid], s0, s1);
                }
            }
        }
    });
    for unit in rows {
        let dz = std::slice::from_raw_parts(args.dz.add(unit * args.nb), args.n);
        let block: f32 = dz.iter().sum();
        let sum = if args.mode.first {
            block
        } else {
            *args.db.0.add(unit) + block
        };
        match args.mode.last {
            None => *args.db.0.add(unit) = sum,
            Some((update, scale)) => {
                let [s0, s1] = b_state.map(|(s, len)| slice(s, unit, len.min(1)));
                update.apply(slice(args.b, unit, 1), &[sum * scale], s0, s1);
            }
        }
    }
}

/// A batch's dW and db as the parts left them: per part, sums (units, ld) and db (units);
/// the layer's parameters and state, the update and its 1/m.
struct ReduceArgs {
    sums: Vec<(*const f32, *const f32)>,
    ld: usize,
    inputs: usize,
    params: Params,
    update: Update,
    scale: f32,
}

// SAFETY: as for the products' arguments.
unsafe impl Sync for ReduceArgs {}

/// For the units `rows`: `update` with `g = scale · Σ_parts sums`, added in part order, a
/// strip of `WIDEST` inputs at a time.
///
/// # Safety
/// The pointers in `args` cover the shapes it names, and no other task touches these rows.
unsafe fn reduce_update_rows(args: &ReduceArgs, rows: Range<usize>) {
    let [w_state, b_state] = args.params.state;
    let mut g = [0.0f32; WIDEST];
    for unit in rows {
        for k in (0..args.inputs).step_by(WIDEST) {
            let width = WIDEST.min(args.inputs - k);
            let at = unit * args.ld + k;
            for (c, g) in g[..width].iter_mut().enumerate() {
                let sum = args
                    .sums
                    .iter()
                    .fold(0.0, |s, &(dw, _)| s + *dw.add(at + c));
                *g = sum * args.scale;
            }
            let p = unit * args.inputs + k;
            let [s0, s1] = w_state.map(|(s, len)| slice(s, p, width.min(len)));
            args.update
                .apply(slice(args.params.w, p, width), &g[..width], s0, s1);
        }
        let sum = args.sums.iter().fold(0.0, |s, &(_, db)| s + *db.add(unit));
        let [s0, s1] = b_state.map(|(s, len)| slice(s, unit, len.min(1)));
        args.update
            .apply(slice(args.params.b, unit, 1), &[sum * args.scale], s0, s1);
    }
}

// ---------------------------------------------------------------------------------------------
// The micro-kernel and the loops around it.
// ---------------------------------------------------------------------------------------------

/// The operands of `C = B·X`: B (rows, depth) with strides `rs`, `cs`; X (depth, cols)
/// row-major with row stride `ldx`.
#[derive(Clone, Copy)]
struct Operands {
    b: *const f32,
    rs: usize,
    cs: usize,
    x: *const f32,
    ldx: usize,
    depth: usize,
}

/// The tiles of output rows `rows`, columns `0..cols` (a multiple of the vector width): `MR`
/// rows at a time (single rows for the rest), in strips of `NV` vectors (single vectors for
/// the rest). Each tile's sums start from zero, or from `start` (pointer, row stride), and
/// go to `store(first row, first column, width, rows of sums)`.
#[inline(always)]
unsafe fn tiles<V: Vector, const MR: usize, const NV: usize>(
    p: Operands,
    rows: Range<usize>,
    cols: usize,
    start: Option<(*const f32, usize)>,
    store: &mut impl FnMut(usize, usize, usize, &[[f32; WIDEST]]),
) {
    let mut i = rows.start;
    while i < rows.end {
        if rows.end - i >= MR {
            strips::<V, MR, NV>(p, i, cols, start, store);
            i += MR;
        } else {
            strips::<V, 1, NV>(p, i, cols, start, store);
            i += 1;
        }
    }
}

/// As `tiles`, with the strips of columns outside and the rows inside: for dW, whose strip of
/// X (the block's samples × NV vectors of inputs) then stays in L1 for every row tile.
#[inline(always)]
unsafe fn tiles_by_columns<V: Vector, const MR: usize, const NV: usize>(
    p: Operands,
    rows: Range<usize>,
    cols: usize,
    start: Option<(*const f32, usize)>,
    store: &mut impl FnMut(usize, usize, usize, &[[f32; WIDEST]]),
) {
    let mut j = 0;
    while j < cols {
        let wide = j + NV * V::LANES <= cols;
        let mut i = rows.start;
        while i < rows.end {
            let whole = rows.end - i >= MR;
            match (whole, wide) {
                (true, true) => one_tile::<V, MR, NV>(p, i, j, start, store),
                (true, false) => one_tile::<V, MR, 1>(p, i, j, start, store),
                (false, true) => one_tile::<V, 1, NV>(p, i, j, start, store),
                (false, false) => one_tile::<V, 1, 1>(p, i, j, start, store),
            }
            i += if whole { MR } else { 1 };
        }
        j += if wide { NV * V::LANES } else { V::LANES };
    }
}

/// Row tile i: its strips of NV vectors, then of one vector.
#[inline(always)]
unsafe fn strips<V: Vector, const R: usize, const NV: usize>(
    p: Operands,
    i: usize,
    cols: usize,
    start: Option<(*const f32, usize)>,
    store: &mut impl FnMut(usize, usize, usize, &[[f32; WIDEST]]),
) {
    let mut j = 0;
    while j + NV * V::LANES <= cols {
        one_tile::<V, R, NV>(p, i, j, start, store);
        j += NV * V::LANES;
    }
    while j < cols {
        one_tile::<V, R, 1>(p, i, j, start, store);
        j += V::LANES;
    }
}

#[inline(always)]
unsafe fn one_tile<V: Vector, const R: usize, const NV: usize>(
    p: Operands,
    i: usize,
    j: usize,
    start: Option<(*const f32, usize)>,
    store: &mut impl FnMut(usize, usize, usize, &[[f32; WIDEST]]),
) {
    let mut sums = [[V::zero(); NV]; R];
    if let Some((c, ld)) = start {
        for (r, sums) in sums.iter_mut().enumerate() {
            for (v, sum) in sums.iter_mut().enumerate() {
                *sum = V::load(c.add((i + r) * ld + j + v * V::LANES));
            }
        }
    }
    let sums = tile::<V, R, NV>(
        p.b.add(i * p.rs),
        p.rs,
        p.cs,
        p.x.add(j),
        p.ldx,
        p.depth,
        sums,
    );
    let mut out = [[0.0f32; WIDEST]; R];
    for (out, sums) in out.iter_mut().zip(&sums) {
        for (v, sum) in sums.iter().enumerate() {
            sum.store(out.as_mut_ptr().add(v * V::LANES));
        }
    }
    store(i, j, NV * V::LANES, &out[..]);
}

/// The micro-kernel: `sums[r][v] += Σ_{d < depth} B[r, d] · X[d, v-th vector]`, with
/// `B[r, d] = b[r·rs + d·cs]` and X's rows `ldx` apart. Per d: NV loads, R broadcasts, R × NV
/// multiply-adds, all sums in registers. Each sum is one chain of multiply-adds over d in
/// order, whatever R and NV are, so a split into tiles never changes a result.
#[inline(always)]
unsafe fn tile<V: Vector, const R: usize, const NV: usize>(
    b: *const f32,
    rs: usize,
    cs: usize,
    x: *const f32,
    ldx: usize,
    depth: usize,
    mut sums: [[V; NV]; R],
) -> [[V; NV]; R] {
    for d in 0..depth {
        let xs: [V; NV] = std::array::from_fn(|v| V::load(x.add(d * ldx + v * V::LANES)));
        for (r, sums) in sums.iter_mut().enumerate() {
            let g = V::splat(*b.add(r * rs + d * cs));
            for (sum, &x) in sums.iter_mut().zip(&xs) {
                *sum = g.mul_add(x, *sum);
            }
        }
    }
    sums
}

/// `steps` rounds of `R × NV` independent multiply-add chains (as many as a tile's sums) on
/// registers alone: the instruction set's peak. Returns a sum so that nothing is optimised
/// away.
#[inline(always)]
unsafe fn fma_chains<V: Vector, const R: usize, const NV: usize>(steps: usize) -> f32 {
    let mut sums = [[V::splat(1.0); NV]; R];
    let (a, b) = (V::splat(0.999_999), V::splat(1e-7));
    for _ in 0..steps {
        for sums in sums.iter_mut() {
            for sum in sums.iter_mut() {
                *sum = sum.mul_add(a, b);
            }
        }
    }
    let mut total = 0.0;
    let mut lanes = [0.0f32; WIDEST];
    for sum in sums.iter().flatten() {
        sum.store(lanes.as_mut_ptr());
        total += lanes[0];
    }
    total
}

/// `out = inᵀ`: in (n, cols) row-major → out (cols, nb) row-major, columns n..nb zero. In
/// tiles of 16 × 16, so that both sides stay in L1 (a row at a time read 64 lines of `in`
/// for each row of `out`: a quarter of a 784-10-… step's time at 128 units).
#[inline(always)]
fn transpose(input: &[f32], cols: usize, n: usize, nb: usize, out: &mut [f32]) {
    const T: usize = 16;
    for j0 in (0..n).step_by(T) {
        let rows = &input[j0 * cols..(j0 + T.min(n - j0)) * cols];
        for k0 in (0..cols).step_by(T) {
            let k1 = (k0 + T).min(cols);
            for (k, out) in out.chunks_exact_mut(nb).enumerate().take(k1).skip(k0) {
                let out = &mut out[j0..j0 + rows.len() / cols];
                for (o, row) in out.iter_mut().zip(rows.chunks_exact(cols)) {
                    *o = row[k];
                }
            }
        }
    }
    for row in out.chunks_exact_mut(nb).take(cols) {
        row[n..].fill(0.0);
    }
}

/// The output layer on the block's n samples: `dZ = softmax(Z) − Y`, each sample's loss and
/// whether it is right (`fused::softmax_output_grad`, one sample at a time), and dZ's padding
/// samples zero. Z, dZ: (CLASSES, nb) feature-major; labels: (n); stats: (2, n).
fn softmax_output_grad(z: &[f32], nb: usize, labels: &[u8], dz: &mut [f32], stats: &mut [f32]) {
    let n = labels.len();
    for (j, (label, stats)) in labels.chunks(1).zip(stats.chunks_exact_mut(2)).enumerate() {
        let column: [f32; CLASSES] = std::array::from_fn(|c| z[c * nb + j]);
        let mut grad = [0.0f32; CLASSES];
        super::fused::softmax_output_grad(&column, label, &mut grad, stats);
        for (c, &g) in grad.iter().enumerate() {
            dz[c * nb + j] = g;
        }
    }
    for row in dz.chunks_exact_mut(nb).take(CLASSES) {
        row[n..].fill(0.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Vectors and the copies of the kernels per instruction set.
// ---------------------------------------------------------------------------------------------

/// A vector of `LANES` floats in registers. Every method is unsafe: it may only run inside
/// code compiled for, and run on, a CPU with its instruction set (`Kernels::new`); `load` and
/// `store` also need `LANES` readable or writable floats at the pointer.
trait Vector: Copy {
    const LANES: usize;
    unsafe fn zero() -> Self;
    unsafe fn splat(x: f32) -> Self;
    unsafe fn load(p: *const f32) -> Self;
    unsafe fn store(self, p: *mut f32);
    /// `self · b + c`, fused where the instruction set has it.
    unsafe fn mul_add(self, b: Self, c: Self) -> Self;
}

/// The portable vector: 8 floats in an array, `a * b + c` without fused multiply-add (which
/// would be a slow library call without hardware FMA).
#[derive(Clone, Copy)]
struct Portable([f32; 8]);

impl Vector for Portable {
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn zero() -> Self {
        Portable([0.0; 8])
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        Portable([x; 8])
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Portable(std::ptr::read_unaligned(p as *const [f32; 8]))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        std::ptr::write_unaligned(p as *mut [f32; 8], self.0)
    }
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        Portable(std::array::from_fn(|l| self.0[l] * b.0[l] + c.0[l]))
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Vector;
    use std::arch::x86_64::*;

    /// AVX-512F: 16 floats.
    #[derive(Clone, Copy)]
    pub struct Avx512(__m512);

    impl Vector for Avx512 {
        const LANES: usize = 16;
        #[inline(always)]
        unsafe fn zero() -> Self {
            Avx512(_mm512_setzero_ps())
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            Avx512(_mm512_set1_ps(x))
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            Avx512(_mm512_loadu_ps(p))
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            _mm512_storeu_ps(p, self.0)
        }
        #[inline(always)]
        unsafe fn mul_add(self, b: Self, c: Self) -> Self {
            Avx512(_mm512_fmadd_ps(self.0, b.0, c.0))
        }
    }

    /// AVX2 + FMA: 8 floats.
    #[derive(Clone, Copy)]
    pub struct Avx2(__m256);

    impl Vector for Avx2 {
        const LANES: usize = 8;
        #[inline(always)]
        unsafe fn zero() -> Self {
            Avx2(_mm256_setzero_ps())
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            Avx2(_mm256_set1_ps(x))
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            Avx2(_mm256_loadu_ps(p))
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            _mm256_storeu_ps(p, self.0)
        }
        #[inline(always)]
        unsafe fn mul_add(self, b: Self, c: Self) -> Self {
            Avx2(_mm256_fmadd_ps(self.0, b.0, c.0))
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod arm {
    use super::Vector;
    use std::arch::aarch64::*;

    /// NEON: 4 floats (not run by this project's tests, which run on x86-64: it is the same
    /// generic kernels as the others over these four intrinsics).
    #[derive(Clone, Copy)]
    pub struct Neon(float32x4_t);

    impl Vector for Neon {
        const LANES: usize = 4;
        #[inline(always)]
        unsafe fn zero() -> Self {
            Neon(vdupq_n_f32(0.0))
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            Neon(vdupq_n_f32(x))
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            Neon(vld1q_f32(p))
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            vst1q_f32(p, self.0)
        }
        #[inline(always)]
        unsafe fn mul_add(self, b: Self, c: Self) -> Self {
            // vfmaq_f32(c, a, b) = c + a·b, one rounding.
            Neon(vfmaq_f32(c.0, self.0, b.0))
        }
    }
}

/// A task: the rows `rows` of one product.
type Task<A> = unsafe fn(&A, Range<usize>);

/// The copy of the kernels that runs, with its tile height (rows per tile).
#[derive(Clone, Copy)]
struct Kernels {
    isa: Isa,
    /// Rows per tile, vectors per tile, floats per vector.
    mr: usize,
    nv: usize,
    lanes: usize,
    forward: Task<ForwardArgs>,
    input_grad: Task<InputGradArgs>,
    weight_grad: Task<WeightGradArgs>,
    /// `fma_chains` for `peak_gflops`.
    peak: unsafe fn(usize) -> f32,
    transpose: unsafe fn(&[f32], usize, usize, usize, &mut [f32]),
    /// The instruction set as the other kernels (`fused::gather_block`) take it.
    simd: Simd,
}

/// A module `$name` with the three tasks compiled for `$vector` (with the attributes given,
/// e.g. its target features) and tiles of `$mr` rows × `$nv` vectors, and its `KERNELS`.
macro_rules! kernels {
    ($name:ident, $isa:expr, $vector:ty, $mr:literal, $nv:literal $(, #[$attr:meta])*) => {
        mod $name {
            use super::*;

            $(#[$attr])*
            unsafe fn forward(args: &ForwardArgs, rows: Range<usize>) {
                forward_task::<$vector, $mr, $nv>(args, rows)
            }

            $(#[$attr])*
            unsafe fn input_grad(args: &InputGradArgs, rows: Range<usize>) {
                input_grad_task::<$vector, $mr, $nv>(args, rows)
            }

            $(#[$attr])*
            unsafe fn weight_grad(args: &WeightGradArgs, rows: Range<usize>) {
                weight_grad_task::<$vector, $mr, $nv>(args, rows)
            }

            $(#[$attr])*
            unsafe fn peak(steps: usize) -> f32 {
                fma_chains::<$vector, $mr, $nv>(steps)
            }

            $(#[$attr])*
            unsafe fn transpose(input: &[f32], cols: usize, n: usize, nb: usize, out: &mut [f32]) {
                super::transpose(input, cols, n, nb, out)
            }

            pub fn kernels(simd: Simd) -> Kernels {
                Kernels {
                isa: $isa,
                mr: $mr,
                nv: $nv,
                lanes: <$vector as Vector>::LANES,
                forward,
                input_grad,
                weight_grad,
                peak,
                transpose,
                simd,
                }
            }
        }
    };
}

// Tiles: AVX-512 6 × 4 vectors (24 of 32 registers hold sums), AVX2 6 × 2 (12 of 16), NEON
// 6 × 4 (24 of 32), portable 4 × 2.
kernels!(portable, Isa::Portable, Portable, 4, 2);
#[cfg(target_arch = "x86_64")]
kernels!(avx2, Isa::Avx2, x86::Avx2, 6, 2, #[target_feature(enable = "avx2,fma")]);
#[cfg(target_arch = "x86_64")]
kernels!(avx512, Isa::Avx512, x86::Avx512, 6, 4, #[target_feature(enable = "avx512f,avx2,fma")]);
#[cfg(target_arch = "aarch64")]
kernels!(neon, Isa::Neon, arm::Neon, 6, 4, #[target_feature(enable = "neon")]);

impl Kernels {
    /// The copy for `simd`'s instruction set: holding a `Simd` proves the CPU runs it, which
    /// is what makes calling these `unsafe` tasks sound.
    fn new(simd: Simd) -> Kernels {
        match simd.isa() {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => avx512::kernels(simd),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => avx2::kernels(simd),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => neon::kernels(simd),
            _ => portable::kernels(simd),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Timing (`mnist-gpu bench --products`): the machine's peak and each product on its own.
// ---------------------------------------------------------------------------------------------

/// GFLOP/s (2 per multiply-add) of `threads` threads each running the kernels' independent
/// multiply-add chains on registers alone: the FP32 peak of this machine for the instruction
/// set `simd` names (the roofline's ceiling). The best of short runs over about `seconds`,
/// so that other programs on a shared machine weigh little.
pub fn peak_gflops(simd: Simd, threads: usize, seconds: f64) -> f64 {
    let kernels = Kernels::new(simd);
    let (chains, threads) = (kernels.mr * kernels.nv, threads.max(1));
    let steps = 1 << 14;
    let best = best_of(seconds, || {
        std::thread::scope(|scope| {
            for _ in 0..threads {
                // SAFETY: `kernels` runs on this CPU (`Kernels::new`).
                scope.spawn(|| std::hint::black_box(unsafe { (kernels.peak)(steps) }));
            }
        });
    });
    (2 * chains * kernels.lanes * steps * threads) as f64 / best / 1e9
}

// ---------------------------------------------------------------------------------------------
// The three products on their own, with checked shapes: for the tests (against f64) and for
// `time_products`. Each runs as the engine runs it: tiles, epilogue, threads.
// ---------------------------------------------------------------------------------------------

/// How to run a product on its own: the instruction set (capped by the CPU) and threads.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    pub simd: Simd,
    pub threads: usize,
}

impl Run {
    fn go<A: Sync>(self, task: Task<A>, args: &A, rows: usize, work: usize) {
        let kernels = Kernels::new(self.simd);
        let tasks = Wide::tasks(self.threads.max(1), &kernels, rows, work);
        // SAFETY: `kernels` runs on this CPU; the callers check that `args` fits its buffers.
        run(tasks, rows, kernels.mr, |r| unsafe { task(args, r) });
    }

    fn kernels(self) -> Kernels {
        Kernels::new(self.simd)
    }
}

/// `Z = W·A + b` and, with `hidden = Some((A_out, A_t, ld_t))`, `A_out = g(Z)` and its
/// sample-major copy. W: (units, inputs) row-major; b: (units); A: (inputs, nb) and Z, A_out:
/// (units, nb) feature-major, n ≤ nb samples, nb a multiple of 16; A_t: (nb, ld_t) with
/// ld_t ≥ units.
#[allow(clippy::too_many_arguments)]
pub fn forward_product(
    run_on: Run,
    (w, b, inputs): (&[f32], &[f32], usize),
    a: &[f32],
    (n, nb): (usize, usize),
    z: &mut [f32],
    hidden: Option<(&mut [f32], &mut [f32], usize)>,
    activation: Activation,
) {
    let units = b.len();
    assert!(nb % PAD == 0 && n <= nb && w.len() == units * inputs && a.len() >= inputs * nb);
    assert!(z.len() >= units * nb);
    let (hidden, ld_t) = match hidden {
        Some((a_out, a_t, ld_t)) => {
            assert!(a_out.len() >= units * nb && ld_t >= units && a_t.len() >= nb * ld_t);
            (Some((Out(a_out.as_mut_ptr()), Out(a_t.as_mut_ptr()))), ld_t)
        }
        None => (None, 0),
    };
    let args = ForwardArgs {
        w: w.as_ptr(),
        b: b.as_ptr(),
        inputs,
        x: a.as_ptr(),
        nb,
        z: Out(z.as_mut_ptr()),
        hidden,
        ld_t,
        activation,
    };
    run_on.go(run_on.kernels().forward, &args, units, units * inputs * n);
}

/// `dZ_below = Wᵀ·dZ ⊙ g'(Z_below)`. W: (units, inputs) row-major; dZ: (units, nb); Z_below,
/// dZ_below: (inputs, nb), feature-major, nb a multiple of 16.
pub fn input_grad_product(
    run_on: Run,
    (w, units, inputs): (&[f32], usize, usize),
    (dz, nb): (&[f32], usize),
    z_below: &[f32],
    dz_below: &mut [f32],
    activation: Activation,
) {
    assert!(nb % PAD == 0 && w.len() == units * inputs && dz.len() >= units * nb);
    assert!(z_below.len() >= inputs * nb && dz_below.len() >= inputs * nb);
    let args = InputGradArgs {
        w: w.as_ptr(),
        units,
        inputs,
        dz: dz.as_ptr(),
        nb,
        z_below: z_below.as_ptr(),
        dz_below: Out(dz_below.as_mut_ptr()),
        activation,
    };
    run_on.go(
        run_on.kernels().input_grad,
        &args,
        inputs,
        units * inputs * nb,
    );
}

/// `sums (+)= dZ·Aᵀ` and `db (+)= Σ_samples dZ` over n samples (`first`: the sums start from
/// zero). dZ: (units, nb) feature-major; A_t: (n, ld) sample-major with ld ≥ inputs padded
/// to 16 and that padding zero; sums: (units, ld) row-major; db: (units).
#[allow(clippy::too_many_arguments)]
pub fn weight_grad_product(
    run_on: Run,
    (dz, nb, n): (&[f32], usize, usize),
    (a_t, ld, inputs): (&[f32], usize, usize),
    sums: &mut [f32],
    db: &mut [f32],
    first: bool,
) {
    let units = db.len();
    assert!(nb % PAD == 0 && n <= nb && dz.len() >= units * nb);
    assert!(ld >= inputs.next_multiple_of(PAD) && a_t.len() >= n * ld && sums.len() >= units * ld);
    let none = [(Out(std::ptr::null_mut()), 0); 2];
    let args = WeightGradArgs {
        dz: dz.as_ptr(),
        nb,
        n,
        x_t: a_t.as_ptr(),
        ld_x: ld,
        inputs,
        sums: Out(sums.as_mut_ptr()),
        ld_sums: ld,
        db: Out(db.as_mut_ptr()),
        w: Out(std::ptr::null_mut()),
        b: Out(std::ptr::null_mut()),
        state: [none, none],
        mode: Sums { first, last: None },
    };
    run_on.go(
        run_on.kernels().weight_grad,
        &args,
        units,
        units * inputs * n,
    );
}

/// One layer's three products, timed on their own: GFLOP/s (2 per multiply-add).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProductRates {
    /// `Z = W·A + b`, with the activation.
    pub forward: f64,
    /// `dA = Wᵀ·dZ`, with the activation's derivative.
    pub input_grad: f64,
    /// `dW = dZ·Aᵀ` and db, into the sums.
    pub weight_grad: f64,
}

/// The products of a hidden layer of `units` × `inputs` on a block of `n` samples, as the
/// engine runs them with `config` (threads, instruction set), each the best of short runs
/// over about `seconds`.
pub fn time_products(
    units: usize,
    inputs: usize,
    n: usize,
    config: FusedConfig,
    seconds: f64,
) -> ProductRates {
    let nb = n.next_multiple_of(PAD);
    let (ld_in, ld_out) = (inputs.next_multiple_of(PAD), units.next_multiple_of(PAD));
    let on = Run {
        simd: Simd::detect(config.simd),
        threads: config.threads,
    };
    let fill = |len: usize, k: usize| -> Vec<f32> {
        (0..len)
            .map(|i| ((i * k) % 17) as f32 * 0.01 - 0.08)
            .collect()
    };
    let (w, b) = (fill(units * inputs, 7), fill(units, 3));
    let (x, x_t, dz) = (
        fill(inputs * nb, 5),
        fill(nb * ld_in, 11),
        fill(units * nb, 13),
    );
    let (mut z, mut a, mut a_t) = (
        vec![0.0; units * nb],
        vec![0.0; units * nb],
        vec![0.0; nb * ld_out],
    );
    let (z_below, mut dz_below) = (fill(inputs * nb, 2), vec![0.0; inputs * nb]);
    let (mut sums, mut db) = (vec![0.0; units * ld_in], vec![0.0; units]);
    let flops = 2.0 * (units * inputs * n) as f64 / 1e9;
    let relu = Activation::Relu;
    let forward = best_of(seconds, || {
        let hidden = Some((&mut a[..], &mut a_t[..], ld_out));
        forward_product(on, (&w, &b, inputs), &x, (n, nb), &mut z, hidden, relu)
    });
    let input_grad = best_of(seconds, || {
        input_grad_product(
            on,
            (&w, units, inputs),
            (&dz, nb),
            &z_below,
            &mut dz_below,
            relu,
        )
    });
    let weight_grad = best_of(seconds, || {
        weight_grad_product(
            on,
            (&dz, nb, n),
            (&x_t, ld_in, inputs),
            &mut sums,
            &mut db,
            true,
        )
    });
    ProductRates {
        forward: flops / forward,
        input_grad: flops / input_grad,
        weight_grad: flops / weight_grad,
    }
}

/// The shortest time of one call of `f`, over runs of a few milliseconds each for about
/// `seconds` in all, after one warm-up call: on a machine shared with other work, the runs
/// that no other program interrupted.
fn best_of(seconds: f64, mut f: impl FnMut()) -> f64 {
    let start = std::time::Instant::now();
    f();
    let once = start.elapsed().as_secs_f64().max(1e-7);
    let calls = ((2e-3 / once) as usize).max(1);
    let mut best = f64::INFINITY;
    let start = std::time::Instant::now();
    while start.elapsed().as_secs_f64() < seconds || best == f64::INFINITY {
        let run = std::time::Instant::now();
        for _ in 0..calls {
            f();
        }
        best = best.min(run.elapsed().as_secs_f64() / calls as f64);
    }
    best
}
