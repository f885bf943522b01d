// matmul: C = A·B (+ bias), or with split-K the partial products of A·B.
//   A: (rows, inner), B: (inner, cols), C: (rows, cols), bias: (rows)
// Element (i, j) of a matrix lives at X[i * rs + j * cs]; the strides let this one kernel compute
// W·A, Wᵀ·dZ and dZ·Aᵀ without transposing anything in memory.
// B may also be the batch's images, read as bytes where they lie (b_source 1: X (784, m),
// b_source 2: Xᵀ (m, 784)); column j of X is image indices[index_offset + j], scaled by 1/255.
// Split-K: workgroup z sums inner indices [z·inner_chunk, (z+1)·inner_chunk) and writes its
// partial product to slice z of C (rows·cols floats each); sum_partials then adds the slices.
// This keeps a product over 60,000 samples spread over many workgroups.

struct Params {
    rows: u32,
    cols: u32,
    inner: u32,
    inner_chunk: u32,
    a_rs: u32,
    a_cs: u32,
    b_rs: u32,
    b_cs: u32,
    c_rs: u32,
    c_cs: u32,
    b_source: u32,
    index_offset: u32,
    add_bias: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> images: array<u32>;
@group(0) @binding(4) var<storage, read> indices: array<u32>;
@group(0) @binding(5) var<storage, read> bias: array<f32>;
@group(0) @binding(6) var<storage, read_write> c: array<f32>;

const TILE: u32 = 16u;
const PIXELS: u32 = 784u;
var<workgroup> a_tile: array<array<f32, 16>, 16>;
var<workgroup> b_tile: array<array<f32, 16>, 16>;

// Pixel `pixel` of the batch's sample `sample`, four bytes packed in each u32.
fn image_pixel(pixel: u32, sample: u32) -> f32 {
    let byte = indices[p.index_offset + sample] * PIXELS + pixel;
    let word = images[byte / 4u];
    return f32((word >> (8u * (byte % 4u))) & 0xffu) * (1.0 / 255.0);
}

fn load_b(k: u32, j: u32) -> f32 {
    switch p.b_source {
        case 1u: { return image_pixel(k, j); }
        case 2u: { return image_pixel(j, k); }
        default: { return b[k * p.b_rs + j * p.b_cs]; }
    }
}

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = wg.y * TILE + lid.y;
    let j = wg.x * TILE + lid.x;
    let k_begin = wg.z * p.inner_chunk;
    let k_end = min(k_begin + p.inner_chunk, p.inner);

    var sum = 0.0;
    for (var k0 = k_begin; k0 < k_end; k0 += TILE) {
        // Each thread brings one element of A's tile and one of B's; zero outside the matrix.
        let ka = k0 + lid.x;
        var av = 0.0;
        if (i < p.rows && ka < k_end) {
            av = a[i * p.a_rs + ka * p.a_cs];
        }
        a_tile[lid.y][lid.x] = av;
        let kb = k0 + lid.y;
        var bv = 0.0;
        if (kb < k_end && j < p.cols) {
            bv = load_b(kb, j);
        }
        b_tile[lid.y][lid.x] = bv;
        workgroupBarrier();
        for (var t = 0u; t < TILE; t++) {
            sum += a_tile[lid.y][t] * b_tile[t][lid.x];
        }
        workgroupBarrier();
    }

    if (i < p.rows && j < p.cols) {
        if (p.add_bias == 1u) {
            sum += bias[i];
        }
        c[wg.z * p.rows * p.cols + i * p.c_rs + j * p.c_cs] = sum;
    }
}
