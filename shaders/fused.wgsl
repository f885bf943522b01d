// fused: the training step of a 784-H1(-H2)-10 network in two dispatches, the GPU twin of
// src/cpu/fused.rs. The per-operation kernels beside this file stay the reference it is checked
// against (tests/integration/gpu_fused.rs, parity.rs).
//
// gradients: workgroup g takes samples [g·per_group, (g+1)·per_group) of the batch and runs them
//   block by block (BLOCK samples): forward, softmax, dZ = A − Y, backward, with every activation
//   in workgroup memory. It adds the block's dW, db (sums over samples, not yet divided by m)
//   and (loss, correct) into its own slice of `partials`: each image's bytes are read from
//   memory once per step, and no two workgroups write the same place.
// update: dP = scale · Σ_slices partials (scale = 1/m), then the optimizer, four parameters per
//   thread; the step's (loss, correct) go to its slot of the history.
// logits: the forward pass alone, writing Z[L] (10 per sample), for evaluation.
//
// Layout. Samples are columns, one sample's column contiguous, as everywhere in this project; in
// workgroup memory a sample's units are padded to whole vec4s. W[l] is (units, inputs)
// row-major with each row padded to whole vec4s (W1's 784 need none), so rows are read four
// floats at a time; all parameters live in one buffer, each tensor on a vec4 boundary, and the
// partial slices and the optimizer's state are laid out the same way (src/gpu/fused.rs,
// `ParamLayout`). Padding stays 0 throughout. Images are bytes: 49 vec4<u32> of 16 pixels each.
//
// Reads of the parameters go through `param4`: from a 64 KiB uniform view of the buffer when
// they all fit in it (784-H-10 networks up to H = 20), else from storage. Uniform reads that
// the threads of a warp make together are served at once from the constant cache, and software
// adapters (llvmpipe) read uniform buffers far faster than storage ones.
//
// The network's shape is fixed when the pipeline is built (the overrides below); what changes
// per step (the batch, α, Adam's corrections) comes from `step`, a 256-byte slot per step
// chosen with a dynamic offset, so that many steps are recorded into one submit.
//
// Candidate variants. Each is a bool override, off by default: the kernel as it was measured
// stays the default until a GPU has measured them (`bench --fused`, bench/NOTES.md). Each
// computes the same sums; only the order of some f32 additions changes.
// - DW1_SPREAD: dW1 by words, not quads. A thread owns one word (4 pixels) of every image for
//   up to 16 units, so it converts each byte once per sample (today: once per vec4 of units,
//   3× at H1 = 10), and the 196 words fill seven of the eight warps (today's 147 quad × unit
//   items fill five, two of them on one of a Hopper SM's four schedulers).
// - EARLY_LABELS: each sample's label is loaded with its image index, before the forward
//   pass, so the load's latency hides behind it; today indices → labels is a chain of two
//   dependent loads after the forward pass, on the way to the backward pass.
// - TREE_SUMS: the block's (loss, correct) and the bias gradients db added by a tree in
//   workgroup memory over many threads, instead of thread 0's loop over the block's samples
//   and one thread per vec4 of units (3 at H1 = 10) looping over them; more barriers, shorter
//   chains.
// - FAST_BYTES: byte → float as bitcast(0x4b000000 | b) − 2²³ (2²³ + b is exact in f32): an
//   OR and a subtraction instead of an integer → float conversion, which some GPUs issue at a
//   quarter of the FMA rate.
// - WIDE_UPDATE: `update` gives each parameter vec4 32 threads (not 8) when a step has more
//   than 32 slices, each keeping four independent sums, so that more loads are in flight and a
//   full batch's reduction spreads over ~250 workgroups instead of 63.
// The block (BLOCK) is the host's choice; `bench --block auto` picks it from the batch.

const QUADS: u32 = 49u;         // an image's vec4<u32>s, 16 pixels each
const CLASSES: u32 = 10u;
const OUT_V4: u32 = 3u;         // the 10 classes in vec4s
const THREADS: u32 = 256u;
const UNIFORM_VEC4S: u32 = 4096u;  // the uniform view: 64 KiB

// The codes of the activations and the optimizers, handed over by the host (src/gpu/shaders.rs);
// the defaults are the same.
override RELU: u32 = 0u;
override ELU: u32 = 1u;
override SGD: u32 = 0u;
override MOMENTUM: u32 = 1u;
override ADAM: u32 = 2u;

override H1: u32 = 10u;         // first hidden layer's units, at most 64
override H2: u32 = 0u;          // second hidden layer's units, at most 64; 0: none
override ACT: u32 = RELU;       // the activation: RELU, or ELU (α = 1)
override BLOCK: u32 = 32u;      // samples per block: 8, 16, 32 or 64
override SLICES: u32 = THREADS / BLOCK;  // threads per sample in the per-sample phases
override LAYERS: u32 = select(2u, 3u, H2 > 0u);
override V1: u32 = (H1 + 3u) / 4u;       // vec4s of a sample's units, per layer
override V2: u32 = (H2 + 3u) / 4u;
// Where W[l] and b[l] start in the parameters, in vec4s; the host lays them out.
override W1_AT: u32 = 0u;
override B1_AT: u32 = 1960u;
override W2_AT: u32 = 1963u;
override B2_AT: u32 = 1993u;
override W3_AT: u32 = 0u;
override B3_AT: u32 = 0u;
override PARAM_VEC4S: u32 = 1996u;      // the parameters, padding included
override SLICE_VEC4S: u32 = 1997u;      // one partial slice: the gradients, then (loss, correct)
override PARAMS_IN_UNIFORM: bool = true;
override Z_VEC4S: u32 = (V1 + V2 + OUT_V4) * BLOCK;
// The candidate variants (the header says what each does); false: the kernel as measured.
override DW1_SPREAD: bool = false;
override EARLY_LABELS: bool = false;
override TREE_SUMS: bool = false;
override FAST_BYTES: bool = false;
override WIDE_UPDATE: bool = false;

// One step's values (its slot of the step buffer). augment.wgsl reads the first three.
struct Step {
    m: u32,             // samples in the batch
    first: u32,         // position of the batch's first sample in the index list
    copies_at: u32,     // where this step's shifts or warp record starts (augment, warp)
    copied: u32,        // 1: `images` holds the batch's copies (shifted or warped), in order
    per_group: u32,     // samples per workgroup (the last may have fewer)
    groups: u32,        // workgroups of `gradients`, so partial slices for `update`
    history: u32,       // this step's slot in the history
    out: u32,           // logits: column of the first sample in `logits_out`
    alpha: f32,
    scale: f32,         // 1/m
    c1: f32,            // Adam's bias corrections 1/(1−β1ᵗ), 1/(1−β2ᵗ)
    c2: f32,
    beta1: f32,         // Adam's β1, or momentum's β
    beta2: f32,
    eps: f32,
    optimizer: u32,     // SGD, MOMENTUM or ADAM
    lanes: u32,         // update: threads that add the slices of one parameter vec4 (1 or 8)
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> step: Step;
// gradients and logits:
@group(0) @binding(1) var<storage, read> images: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> indices: array<u32>;
@group(0) @binding(3) var<storage, read> labels: array<u32>;
@group(0) @binding(4) var<storage, read> params: array<vec4<f32>>;
@group(0) @binding(5) var<uniform> params_view: array<vec4<f32>, UNIFORM_VEC4S>;
@group(0) @binding(6) var<storage, read_write> partials: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> logits_out: array<f32>;
// update:
@group(0) @binding(8) var<storage, read_write> new_params: array<vec4<f32>>;
@group(0) @binding(9) var<storage, read> summed: array<vec4<f32>>;
// The optimizer's state: V (momentum), or M then V (Adam), PARAM_VEC4S each.
@group(0) @binding(10) var<storage, read_write> state: array<vec4<f32>>;
// (loss, correct) per step slot.
@group(0) @binding(11) var<storage, read_write> history: array<vec2<f32>>;

// The block's activations: Z[l] of sample s is z[Z_at(l) + s·V(l) ..], V(l) vec4s.
var<workgroup> z: array<vec4<f32>, Z_VEC4S>;
// Partial sums of Z1 from each slice of the pixels, one vec4 of units at a time.
var<workgroup> slice_sums: array<vec4<f32>, THREADS>;
// Per sample: where its image starts (in vec4<u32>s), and its (loss, correct).
var<workgroup> image_at: array<u32, BLOCK>;
var<workgroup> sample_stats: array<vec2<f32>, BLOCK>;
// EARLY_LABELS: each sample's label, loaded with its image index.
var<workgroup> block_labels: array<u32, BLOCK>;

struct Dense {
    inputs: u32,    // in vec4s
    units: u32,
    v: u32,         // the units in vec4s
    w: u32,         // W[l] in the parameters (vec4s); row i starts at w + i·inputs
    b: u32,         // b[l] in the parameters (vec4s)
    z: u32,         // Z[l] in workgroup memory
}

fn layer(l: u32) -> Dense {
    switch l {
        case 1u: { return Dense(4u * QUADS, H1, V1, W1_AT, B1_AT, 0u); }
        case 2u: {
            if (H2 > 0u) {
                return Dense(V1, H2, V2, W2_AT, B2_AT, V1 * BLOCK);
            }
            return Dense(V1, CLASSES, OUT_V4, W2_AT, B2_AT, V1 * BLOCK);
        }
        default: { return Dense(V2, CLASSES, OUT_V4, W3_AT, B3_AT, (V1 + V2) * BLOCK); }
    }
}

// Four parameters from vec4 `at` of the parameters.
fn param4(at: u32) -> vec4<f32> {
    if (PARAMS_IN_UNIFORM) {
        return params_view[at];
    }
    return params[at];
}

// g(z): ReLU, or ELU with α = 1 (min() keeps exp finite on the branch not taken). g(0) = 0,
// so the padding stays 0.
fn act(v: vec4<f32>) -> vec4<f32> {
    if (ACT == RELU) {
        return max(v, vec4<f32>(0.0));
    }
    return select(exp(min(v, vec4<f32>(0.0))) - 1.0, v, v > vec4<f32>(0.0));
}

// g'(z)
fn act_slope(v: vec4<f32>) -> vec4<f32> {
    if (ACT == RELU) {
        return select(vec4<f32>(0.0), vec4<f32>(1.0), v > vec4<f32>(0.0));
    }
    return select(exp(min(v, vec4<f32>(0.0))), vec4<f32>(1.0), v > vec4<f32>(0.0));
}

// Four pixel bytes as floats 0–255.
fn bytes4(word: u32) -> vec4<f32> {
    if (FAST_BYTES) {
        // 2²³ + b as an f32 holds b in its low mantissa bits: or-ing the byte into 2²³'s bits
        // and subtracting 2²³ is exact for 0–255, with no integer → float conversion.
        return bitcast<vec4<f32>>(unpack4xU8(word) | vec4<u32>(0x4b000000u)) - 8388608.0;
    }
    return vec4<f32>(unpack4xU8(word));
}

// Sixteen pixels (quad q) of block sample s, as values 0–255; the 1/255 is applied to the sums.
fn pixels(s: u32, q: u32) -> mat4x4<f32> {
    let words = images[image_at[s] + q];
    return mat4x4<f32>(bytes4(words.x), bytes4(words.y), bytes4(words.z), bytes4(words.w));
}

// Four pixels (word w, pixels 4w .. 4w + 4) of block sample s, as values 0–255.
fn word_pixels(s: u32, w: u32) -> vec4<f32> {
    return bytes4(images[image_at[s] + w / 4u][w % 4u]);
}

// Forward pass of the n samples at batch positions [first, first + n), leaving Z[l] of every
// layer in workgroup memory. Thread t works on sample j = t % BLOCK, in slice s = t / BLOCK.
// `labelled`: a training step's block, whose labels EARLY_LABELS loads here.
fn forward(first: u32, n: u32, t: u32, labelled: bool) {
    let j = t % BLOCK;
    let s = t / BLOCK;
    if (t < n) {
        var image = first + t;
        if (step.copied == 0u) {
            image = indices[step.first + image];
        }
        image_at[t] = image * QUADS;
        if (EARLY_LABELS && labelled) {
            // The copies are in batch order; the label is still the listed image's.
            var listed = image;
            if (step.copied != 0u) {
                listed = indices[step.first + first + t];
            }
            block_labels[t] = labels[listed];
        }
    }
    workgroupBarrier();

    // Z1 = W1·X + b1 from the image bytes: slice s sums quads s, s + SLICES, … of sample j, for
    // 16 units at a time (all of them up to H1 = 16); then the slices' sums are added, one vec4
    // of units at a time.
    for (var chunk = 0u; chunk < V1; chunk += 4u) {
        var acc = array<vec4<f32>, 4>();
        if (j < n) {
            for (var q = s; q < QUADS; q += SLICES) {
                let x = pixels(j, q);
                for (var u = 0u; u < 16u; u++) {
                    let i = 4u * chunk + u;
                    if (i < H1) {
                        let row = W1_AT + i * QUADS * 4u + 4u * q;
                        acc[u / 4u][u % 4u] += dot(param4(row), x[0]) + dot(param4(row + 1u), x[1])
                            + dot(param4(row + 2u), x[2]) + dot(param4(row + 3u), x[3]);
                    }
                }
            }
        }
        for (var v = 0u; v < min(4u, V1 - chunk); v++) {
            slice_sums[t] = acc[v];
            workgroupBarrier();
            if (t < n) {
                var sum = slice_sums[t];
                for (var r = 1u; r < SLICES; r++) {
                    sum += slice_sums[r * BLOCK + t];
                }
                z[t * V1 + chunk + v] = sum * (1.0 / 255.0) + param4(B1_AT + chunk + v);
            }
            workgroupBarrier();
        }
    }

    // Z[l] = W[l]·g(Z[l-1]) + b[l], from workgroup memory: thread t takes vec4s s, s + SLICES,
    // … of sample j's units (the padding stays 0).
    for (var l = 2u; l <= LAYERS; l++) {
        let cur = layer(l);
        let prev = layer(l - 1u);
        if (j < n) {
            for (var v = s; v < cur.v; v += SLICES) {
                var out = param4(cur.b + v);
                for (var u = 0u; u < 4u; u++) {
                    let i = 4u * v + u;
                    if (i < cur.units) {
                        for (var k = 0u; k < cur.inputs; k++) {
                            out[u] += dot(param4(cur.w + i * cur.inputs + k), act(z[prev.z + j * prev.v + k]));
                        }
                    }
                }
                z[cur.z + j * cur.v + v] = out;
            }
        }
        workgroupBarrier();
    }
}

// dZ[L] = softmax(Z[L]) − Y over Z[L], and each sample's loss
// log Σ exp(z − max) − (z_label − max) and whether its first largest logit is the label.
fn output_grad(first: u32, n: u32, t: u32) {
    if (t >= n) {
        if (TREE_SUMS && t < BLOCK) {
            sample_stats[t] = vec2<f32>(0.0);  // the tree adds all BLOCK entries
        }
        return;
    }
    let at = layer(LAYERS).z + t * OUT_V4;
    var zs = array<f32, CLASSES>();
    for (var c = 0u; c < CLASSES; c++) {
        zs[c] = z[at + c / 4u][c % 4u];
    }
    var label: u32;
    if (EARLY_LABELS) {
        label = block_labels[t];
    } else {
        label = labels[indices[step.first + first + t]];
    }
    var best = 0u;
    for (var c = 1u; c < CLASSES; c++) {
        if (zs[c] > zs[best]) {
            best = c;
        }
    }
    let max_z = zs[best];
    var sum = 0.0;
    for (var c = 0u; c < CLASSES; c++) {
        sum += exp(zs[c] - max_z);
    }
    sample_stats[t] = vec2<f32>(log(sum) - (zs[label] - max_z), select(0.0, 1.0, best == label));
    var dz = array<vec4<f32>, OUT_V4>();
    for (var c = 0u; c < CLASSES; c++) {
        dz[c / 4u][c % 4u] = exp(zs[c] - max_z) / sum - select(0.0, 1.0, c == label);
    }
    for (var v = 0u; v < OUT_V4; v++) {
        z[at + v] = dz[v];
    }
}

// Adds `g` to vec4 `at` of this workgroup's slice; the first block of a range writes it.
fn accumulate(slice: u32, at: u32, g: vec4<f32>, fresh: bool) {
    if (fresh) {
        partials[slice + at] = g;
    } else {
        partials[slice + at] += g;
    }
}

// dW[l] += dZ[l]·g(Z[l-1])ᵀ: (units, inputs), db[l] += Σ_samples dZ[l], for l ≥ 2: each
// thread owns vec4s (unit i, inputs 4v .. 4v + 4) of the gradient.
fn dense_grads(cur: Dense, prev: Dense, n: u32, t: u32, slice: u32, fresh: bool) {
    for (var e = t; e < cur.units * cur.inputs; e += THREADS) {
        let i = e / cur.inputs;
        let v = e % cur.inputs;
        var g = vec4<f32>(0.0);
        for (var s = 0u; s < n; s++) {
            g += z[cur.z + s * cur.v + i / 4u][i % 4u] * act(z[prev.z + s * prev.v + v]);
        }
        accumulate(slice, cur.w + e, g, fresh);
    }
    bias_grads(cur, n, t, slice, fresh);
}

// db[l] += Σ_samples dZ[l]
fn bias_grads(cur: Dense, n: u32, t: u32, slice: u32, fresh: bool) {
    if (TREE_SUMS) {
        bias_tree(cur, n, t, slice, fresh);
        return;
    }
    for (var v = t; v < cur.v; v += THREADS) {
        var g = vec4<f32>(0.0);
        for (var s = 0u; s < n; s++) {
            g += z[cur.z + s * cur.v + v];
        }
        accumulate(slice, cur.b + v, g, fresh);
    }
}

// TREE_SUMS: db[l] += Σ_samples dZ[l] with `lanes` threads per vec4 v of units: each adds
// every lanes-th sample, then the lanes' sums are halved log2(lanes) times in workgroup memory
// (slice_sums, free during the backward pass). Called by every thread (it has barriers).
fn bias_tree(cur: Dense, n: u32, t: u32, slice: u32, fresh: bool) {
    let lanes = tree_lanes(cur.v);
    let v = t / lanes;
    let lane = t % lanes;
    var g = vec4<f32>(0.0);
    if (v < cur.v) {
        for (var s = lane; s < n; s += lanes) {
            g += z[cur.z + s * cur.v + v];
        }
    }
    slice_sums[t] = g;
    workgroupBarrier();
    for (var half = lanes / 2u; half > 0u; half /= 2u) {
        if (lane < half) {
            slice_sums[t] += slice_sums[t + half];
        }
        workgroupBarrier();
    }
    if (lane == 0u && v < cur.v) {
        accumulate(slice, cur.b + v, slice_sums[t], fresh);
    }
}

// Threads per vec4 of units in `bias_tree`: the largest power of two with `v` groups of them
// in the workgroup, at most BLOCK (a sample each).
fn tree_lanes(v: u32) -> u32 {
    var lanes = BLOCK;
    while (lanes * v > THREADS) {
        lanes /= 2u;
    }
    return lanes;
}

// TREE_SUMS: the block's (loss, correct), Σ sample_stats by halving (entries past n are 0);
// thread 0 gets it. Called by every thread (it has barriers).
fn block_stats(t: u32) -> vec2<f32> {
    for (var half = BLOCK / 2u; half > 0u; half /= 2u) {
        if (t < half) {
            sample_stats[t] += sample_stats[t + half];
        }
        workgroupBarrier();
    }
    return sample_stats[0];
}

// dZ[l-1] = W[l]ᵀ·dZ[l] ⊙ g'(Z[l-1]): (inputs, n), written over Z[l-1]. Thread t takes vec4s
// s, s + SLICES, … of sample j's inputs.
fn input_grad(cur: Dense, prev: Dense, n: u32, t: u32) {
    let j = t % BLOCK;
    if (j >= n) {
        return;
    }
    for (var v = t / BLOCK; v < prev.v; v += SLICES) {
        var sum = vec4<f32>(0.0);
        for (var i = 0u; i < cur.units; i++) {
            sum += param4(cur.w + i * cur.inputs + v) * z[cur.z + j * cur.v + i / 4u][i % 4u];
        }
        let at = prev.z + j * prev.v + v;
        z[at] = sum * act_slope(z[at]);
    }
}

// dW1 += dZ1·Xᵀ / 255 from the image bytes: a thread owns 16 pixels (quad q) of every image
// for four units (vec4 c of dZ1), and reads each once per sample for all 64 products. When
// every thread owns at most one such item (H1 ≤ 20), its sums stay in registers (`dw1`) across
// the blocks of the workgroup's range and are written once at the end (`write_dw1`); else each
// block adds them into the slice.
// DW1_SPREAD's items are words × chunks of 16 units instead (`first_layer_grads_spread`).
const WORDS: u32 = 4u * QUADS;  // an image's u32s, 4 pixels each
override CHUNKS1: u32 = (V1 + 3u) / 4u;
override DW1_ITEMS: u32 = select(QUADS * V1, WORDS * CHUNKS1, DW1_SPREAD);
override DW1_IN_REGISTERS: bool = DW1_ITEMS <= THREADS;

fn first_layer_grads(n: u32, t: u32, slice: u32, fresh: bool, dw1: ptr<function, array<mat4x4<f32>, 4>>) {
    if (DW1_SPREAD) {
        first_layer_grads_spread(n, t, slice, fresh, dw1);
        return;
    }
    for (var item = t; item < QUADS * V1; item += THREADS) {
        let q = item % QUADS;
        let c = item / QUADS;
        var acc = array<mat4x4<f32>, 4>();   // acc[u][p]: unit 4c + u, pixels 16q + 4p ..
        if (DW1_IN_REGISTERS) {
            acc = *dw1;
        }
        for (var s = 0u; s < n; s++) {
            let x = pixels(s, q);
            let dz = z[s * V1 + c];
            for (var u = 0u; u < 4u; u++) {
                acc[u] += dz[u] * x;
            }
        }
        if (DW1_IN_REGISTERS) {
            *dw1 = acc;
        } else {
            add_dw1(slice, q, c, &acc, fresh);
        }
    }
    bias_grads(layer(1u), n, t, slice, fresh);
}

// Adds (or writes) one item's sums to dW1 in the slice, scaled by 1/255.
fn add_dw1(slice: u32, q: u32, c: u32, acc: ptr<function, array<mat4x4<f32>, 4>>, fresh: bool) {
    for (var u = 0u; u < 4u; u++) {
        let i = 4u * c + u;
        if (i < H1) {
            for (var p = 0u; p < 4u; p++) {
                let at = W1_AT + i * QUADS * 4u + 4u * q + p;
                accumulate(slice, at, (*acc)[u][p] * (1.0 / 255.0), fresh);
            }
        }
    }
}

// DW1_SPREAD: a thread owns word w (pixels 4w .. 4w + 4) of every image for the unit vec4s
// 4·chunk .. 4·chunk + 4 (all of them up to H1 = 16), and converts the word's bytes once per
// sample for all their products. The 196 words fill seven warps rather than five.
fn first_layer_grads_spread(n: u32, t: u32, slice: u32, fresh: bool, dw1: ptr<function, array<mat4x4<f32>, 4>>) {
    for (var item = t; item < DW1_ITEMS; item += THREADS) {
        let w = item % WORDS;
        let chunk = item / WORDS;
        var acc: array<mat4x4<f32>, 4>;      // acc[c][p]: units 4(4·chunk + c) .., pixel 4w + p
        if (DW1_IN_REGISTERS) {
            acc = *dw1;
        }
        for (var s = 0u; s < n; s++) {
            let x = word_pixels(s, w);
            for (var c = 0u; c < 4u; c++) {
                let v = 4u * chunk + c;
                if (v < V1) {
                    let dz = z[s * V1 + v];
                    acc[c] += mat4x4<f32>(dz * x[0], dz * x[1], dz * x[2], dz * x[3]);
                }
            }
        }
        if (DW1_IN_REGISTERS) {
            *dw1 = acc;
        } else {
            add_dw1_spread(slice, w, chunk, &acc, fresh);
        }
    }
    bias_grads(layer(1u), n, t, slice, fresh);
}

// Adds (or writes) one DW1_SPREAD item's sums to dW1 in the slice, scaled by 1/255: row i's
// vec4 w holds pixels 4w .. 4w + 4, row u of acc[c] transposed.
fn add_dw1_spread(slice: u32, w: u32, chunk: u32, acc: ptr<function, array<mat4x4<f32>, 4>>, fresh: bool) {
    for (var c = 0u; c < 4u; c++) {
        let per_unit = transpose((*acc)[c]);
        for (var u = 0u; u < 4u; u++) {
            let i = 16u * chunk + 4u * c + u;
            if (i < H1) {
                accumulate(slice, W1_AT + i * WORDS + w, per_unit[u] * (1.0 / 255.0), fresh);
            }
        }
    }
}

@compute @workgroup_size(THREADS)
fn gradients(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let slice = group.x * SLICE_VEC4S;
    let begin = group.x * step.per_group;
    let end = min(begin + step.per_group, step.m);
    var stats = vec2<f32>(0.0);     // thread 0's running (loss, correct)
    var dw1: array<mat4x4<f32>, 4>;
    for (var first = begin; first < end; first += BLOCK) {
        let n = min(BLOCK, end - first);
        let fresh = first == begin;
        forward(first, n, t, true);
        output_grad(first, n, t);
        workgroupBarrier();
        if (TREE_SUMS) {
            let block = block_stats(t);
            if (t == 0u) {
                stats += block;
            }
        } else if (t == 0u) {
            for (var s = 0u; s < n; s++) {
                stats += sample_stats[s];
            }
        }
        for (var l = LAYERS; l >= 2u; l--) {
            dense_grads(layer(l), layer(l - 1u), n, t, slice, fresh);
            workgroupBarrier();
            input_grad(layer(l), layer(l - 1u), n, t);
            workgroupBarrier();
        }
        first_layer_grads(n, t, slice, fresh, &dw1);
        // The next block's forward pass overwrites z and image_at.
        workgroupBarrier();
    }
    if (DW1_IN_REGISTERS && t < DW1_ITEMS) {
        if (DW1_SPREAD) {
            add_dw1_spread(slice, t % WORDS, t / WORDS, &dw1, true);
        } else {
            add_dw1(slice, t % QUADS, t / QUADS, &dw1, true);
        }
    }
    if (t == 0u) {
        partials[slice + PARAM_VEC4S] = vec4<f32>(stats, 0.0, 0.0);
    }
}

@compute @workgroup_size(THREADS)
fn logits(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let first = group.x * BLOCK;
    let n = min(BLOCK, step.m - first);
    forward(first, n, t, false);
    if (t < n) {
        let at = layer(LAYERS).z + t * OUT_V4;
        let column = step.out + first + t;
        for (var c = 0u; c < CLASSES; c++) {
            logits_out[column * CLASSES + c] = z[at + c / 4u][c % 4u];
        }
    }
}

// update: each of `step.lanes` threads adds every lanes-th slice of a parameter vec4 e (one
// thread when there are few slices; 8 when there are many, so that a full batch's hundreds of
// slices are read by enough threads; 32 with WIDE_UPDATE), then the first adds the lanes' sums
// in order and applies the optimizer. e = PARAM_VEC4S is the (loss, correct) of the step.
var<workgroup> lane_sums: array<vec4<f32>, THREADS>;

@compute @workgroup_size(THREADS)
fn update(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let lanes = step.lanes;
    let per_group = THREADS / lanes;
    let e = group.x * per_group + t % per_group;
    let lane = t / per_group;
    var sum = vec4<f32>(0.0);
    if (e <= PARAM_VEC4S) {
        if (WIDE_UPDATE) {
            sum = lane_sum(e, lane, lanes);
        } else {
            for (var g = lane; g < step.groups; g += lanes) {
                sum += summed[g * SLICE_VEC4S + e];
            }
        }
    }
    if (lanes > 1u) {
        lane_sums[t] = sum;
        workgroupBarrier();
    }
    if (lane != 0u || e > PARAM_VEC4S) {
        return;
    }
    for (var l = 1u; l < lanes; l++) {
        sum += lane_sums[t + l * per_group];
    }
    if (e == PARAM_VEC4S) {
        history[step.history] = sum.xy;
        return;
    }
    apply(e, step.scale * sum);
}

// WIDE_UPDATE: slices lane, lane + lanes, … of parameter vec4 e, into four independent sums
// (four loads in flight, not one chain of adds), then added pairwise.
fn lane_sum(e: u32, lane: u32, lanes: u32) -> vec4<f32> {
    var part: array<vec4<f32>, 4>;
    var g = lane;
    for (; g + 3u * lanes < step.groups; g += 4u * lanes) {
        for (var k = 0u; k < 4u; k++) {
            part[k] += summed[(g + k * lanes) * SLICE_VEC4S + e];
        }
    }
    for (; g < step.groups; g += lanes) {
        part[0] += summed[g * SLICE_VEC4S + e];
    }
    return (part[0] + part[1]) + (part[2] + part[3]);
}

// The optimizer's step on parameter vec4 e, whose gradient is `grad`.
fn apply(e: u32, grad: vec4<f32>) {
    // An if-chain, not a switch: a switch's cases must be constants, and the codes are overrides.
    if (step.optimizer == MOMENTUM) {
        // momentum: V = β·V + dP, P -= α·V
        let v = step.beta1 * state[e] + grad;
        state[e] = v;
        new_params[e] -= step.alpha * v;
    } else if (step.optimizer == ADAM) {
        // Adam: M = β1·M + (1−β1)·dP, V = β2·V + (1−β2)·dP², P -= α·(M·c1) / (sqrt(V·c2) + ε)
        let m = step.beta1 * state[e] + (1.0 - step.beta1) * grad;
        let v = step.beta2 * state[PARAM_VEC4S + e] + (1.0 - step.beta2) * grad * grad;
        state[e] = m;
        state[PARAM_VEC4S + e] = v;
        new_params[e] -= step.alpha * (m * step.c1) / (sqrt(v * step.c2) + step.eps);
    } else {
        // SGD: P -= α·dP
        new_params[e] -= step.alpha * grad;
    }
}
