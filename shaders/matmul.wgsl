// matmul: C = A·B (+ bias), or with split-K the partial products of A·B.
//   A: (rows, inner), B: (inner, cols), C: (rows, cols), bias: (rows)
// Element (i, j) of a matrix lives at X[i * rs + j * cs]; the strides let this one kernel compute
// W·A, Wᵀ·dZ and dZ·Aᵀ without transposing anything in memory.
// B may also be the batch's images, read as bytes where they lie (b_source 1: X (784, m),
// b_source 2: Xᵀ (m, 784)); column j of X is image indices[index_offset + j], scaled by 1/255.
// Each thread computes a 4×4 block of C, reading 4×4 blocks of A and B per step of 4 along the
// inner dimension: each value it loads (and each image word it unpacks) serves four products.
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

const PIXELS: u32 = 784u;
// Threads per workgroup: 16 across C's columns, 4 down its rows; each owns a 4×4 block.
const GROUP_COLS: u32 = 16u;
const GROUP_ROWS: u32 = 4u;
const BLOCK: u32 = 4u;

// Four pixels of one image, starting at `pixel` (a multiple of 4: one packed word), in [0, 1].
fn image_word(sample: u32, pixel: u32) -> vec4<f32> {
    let word = images[(indices[p.index_offset + sample] * PIXELS + pixel) / 4u];
    return vec4<f32>(unpack4xU8(word)) * (1.0 / 255.0);
}

// A(i, k), zero outside A or past the end of this slice.
fn a_at(i: u32, k: u32, k_end: u32) -> f32 {
    if (i < p.rows && k < k_end) {
        return a[i * p.a_rs + k * p.a_cs];
    }
    return 0.0;
}

// B(k, j) from a matrix buffer, zero outside it.
fn b_at(k: u32, j: u32, k_end: u32) -> f32 {
    if (k < k_end && j < p.cols) {
        return b[k * p.b_rs + j * p.b_cs];
    }
    return 0.0;
}

// B's 4×4 block at (k, j): column q of the result holds row k + q of B, B(k + q, j .. j + 4).
// Image rows past the slice's end may hold any pixels: A is zero there, so they add nothing.
fn load_b_block(k: u32, j: u32, k_end: u32) -> mat4x4<f32> {
    switch p.b_source {
        case 1u: {
            // X (784, m): B(k .. k + 4, j + col) is one word of sample j + col.
            var words: array<vec4<f32>, 4>;
            for (var col = 0u; col < BLOCK; col++) {
                if (j + col < p.cols) {
                    words[col] = image_word(j + col, k);
                }
            }
            return transpose(mat4x4<f32>(words[0], words[1], words[2], words[3]));
        }
        case 2u: {
            // Xᵀ (m, 784): B(k + q, j .. j + 4) is one word of sample k + q.
            var rows: array<vec4<f32>, 4>;
            for (var q = 0u; q < BLOCK; q++) {
                if (k + q < k_end) {
                    rows[q] = image_word(k + q, j);
                }
            }
            return mat4x4<f32>(rows[0], rows[1], rows[2], rows[3]);
        }
        default: {
            var rows: array<vec4<f32>, 4>;
            for (var q = 0u; q < BLOCK; q++) {
                rows[q] = vec4<f32>(b_at(k + q, j, k_end), b_at(k + q, j + 1u, k_end),
                                    b_at(k + q, j + 2u, k_end), b_at(k + q, j + 3u, k_end));
            }
            return mat4x4<f32>(rows[0], rows[1], rows[2], rows[3]);
        }
    }
}

@compute @workgroup_size(16, 4)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.y * BLOCK;
    let j = gid.x * BLOCK;
    if (i >= p.rows || j >= p.cols) {
        return;
    }
    let k_begin = gid.z * p.inner_chunk;
    let k_end = min(k_begin + p.inner_chunk, p.inner);

    // acc[r] = C(i + r, j .. j + 4)
    var acc: array<vec4<f32>, 4>;
    for (var k = k_begin; k < k_end; k += BLOCK) {
        let b_block = load_b_block(k, j, k_end);
        for (var r = 0u; r < BLOCK; r++) {
            let a_row = vec4<f32>(a_at(i + r, k, k_end), a_at(i + r, k + 1u, k_end),
                                  a_at(i + r, k + 2u, k_end), a_at(i + r, k + 3u, k_end));
            acc[r] += b_block * a_row;
        }
    }

    let slice = gid.z * p.rows * p.cols;
    for (var r = 0u; r < BLOCK; r++) {
        for (var col = 0u; col < BLOCK; col++) {
            if (i + r < p.rows && j + col < p.cols) {
                var value = acc[r][col];
                if (p.add_bias == 1u) {
                    value += bias[i + r];
                }
                c[slice + (i + r) * p.c_rs + (j + col) * p.c_cs] = value;
            }
        }
    }
}
