// matmul: C = A·B (+ bias), or with split-K the partial products of A·B.
//   A: (rows, inner), B: (inner, cols), C: (rows, cols), bias: (rows)
// Element (i, j) of a matrix lives at X[i * rs + j * cs]; the strides let this one kernel compute
// W·A, Wᵀ·dZ and dZ·Aᵀ without transposing anything in memory.
// B may also be the batch's images, read as bytes where they lie (b_source 1: X (784, m),
// b_source 2: Xᵀ (m, 784)); column j of X is image indices[index_offset + j], scaled by 1/255.
// Split-K: workgroup z sums inner indices [z·inner_chunk, (z+1)·inner_chunk) and writes its
// partial product to slice z of C (rows·cols floats each); sum_partials then adds the slices.
// This keeps a product over 60,000 samples spread over many workgroups. With a bias, only slice 0
// adds it (so the slices' sum has it once): a split forward product Z = W·A + b
// (`--forward-split-k`) needs no separate bias step.
//
// Two entry points, one product, the same bindings; the host picks one from C's shape:
// - `main`, for narrow products (a 10-unit layer): each thread computes a 4×4 block of C straight
//   from global memory, a workgroup a 16 × 64 block. Each value it loads (and each image word it
//   unpacks) serves four products.
// - `tiled`, for wide ones (hidden layers of hundreds of units): a workgroup computes a 128 × 128
//   block of C. Step by step along the inner dimension, its 256 threads stage a 128 × 8 tile of A
//   and an 8 × 128 tile of B in workgroup memory (8 KiB: under every adapter's 16 KiB), then each
//   thread multiplies its 8 rows by its 8 columns from there: every value it reads from
//   workgroup memory serves eight products, every value loaded from global memory 128.

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
// `main`: threads per workgroup 16 across C's columns, 4 down its rows; each owns a 4×4 block.
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
                if (p.add_bias == 1u && gid.z == 0u) {
                    value += bias[i + r];
                }
                c[slice + (i + r) * p.c_rs + (j + col) * p.c_cs] = value;
            }
        }
    }
}

// `tiled`: a workgroup's block of C is TILE × TILE, stepped along the inner dimension TILE_K at
// a time. Its 16 × 16 threads each own 8 rows and 8 columns of the block: rows ty·4 .. ty·4 + 4
// and 64 + ty·4 .. 64 + ty·4 + 4, columns likewise from tx, so that neighbouring threads read
// neighbouring vec4s of the tiles.
const TILE: u32 = 128u;
const TILE_K: u32 = 8u;
const TILE_VEC4S: u32 = 32u; // TILE / 4: one row of a staged tile, as vec4s

// a_tile[k · 32 + i / 4][i % 4] = A(i0 + i, k0 + k); b_tile[k · 32 + j / 4][j % 4] = B(k0 + k, j0 + j).
var<workgroup> a_tile: array<vec4<f32>, 256>;
var<workgroup> b_tile: array<vec4<f32>, 256>;

// Stages A's 128 × 8 tile at (i0, k0): one vec4 (four rows at one k) per thread, consecutive
// threads reading along whichever of A's dimensions is contiguous in memory.
fn stage_a(t: u32, i0: u32, k0: u32, k_end: u32) {
    var i = (t / TILE_K) * 4u;
    var k = t % TILE_K;
    if (p.a_cs != 1u) {
        i = (t % TILE_VEC4S) * 4u;
        k = t / TILE_VEC4S;
    }
    a_tile[k * TILE_VEC4S + i / 4u] = vec4<f32>(
        a_at(i0 + i, k0 + k, k_end), a_at(i0 + i + 1u, k0 + k, k_end),
        a_at(i0 + i + 2u, k0 + k, k_end), a_at(i0 + i + 3u, k0 + k, k_end));
}

// Stages B's 8 × 128 tile at (k0, j0), one vec4 (four columns at one k) per thread. Image
// operands arrive as packed words of four pixels: four consecutive columns of Xᵀ, a word per
// thread; or four consecutive inner indices of X, where a quarter of the threads each read
// four samples' words and transpose them. k0 is a multiple of 8 and the pixel count a multiple
// of 4, so a word is all in or all out.
fn stage_b(t: u32, k0: u32, j0: u32, k_end: u32) {
    switch p.b_source {
        case 1u: {
            // X (784, m): thread t < 64 reads pixels k0 + 4w .. + 4 of samples j0 + j .. + 4.
            if (t < 2u * TILE_VEC4S) {
                let j = (t / 2u) * 4u;
                let w = t % 2u;
                var words: array<vec4<f32>, 4>;
                for (var q = 0u; q < 4u; q++) {
                    if (j0 + j + q < p.cols && k0 + 4u * w < k_end) {
                        words[q] = image_word(j0 + j + q, k0 + 4u * w);
                    }
                }
                let pixels = transpose(mat4x4<f32>(words[0], words[1], words[2], words[3]));
                for (var q = 0u; q < 4u; q++) {
                    b_tile[(4u * w + q) * TILE_VEC4S + j / 4u] = pixels[q];
                }
            }
        }
        case 2u: {
            // Xᵀ (m, 784): thread t reads pixels j0 + 4w .. + 4 of sample k0 + k.
            let k = t / TILE_VEC4S;
            let w = t % TILE_VEC4S;
            var pixels = vec4<f32>();
            if (k0 + k < k_end && j0 + 4u * w < p.cols) {
                pixels = image_word(k0 + k, j0 + 4u * w);
            }
            b_tile[k * TILE_VEC4S + w] = pixels;
        }
        default: {
            var j = (t % TILE_VEC4S) * 4u;
            var k = t / TILE_VEC4S;
            if (p.b_cs != 1u) {
                j = (t / TILE_K) * 4u;
                k = t % TILE_K;
            }
            b_tile[k * TILE_VEC4S + j / 4u] = vec4<f32>(
                b_at(k0 + k, j0 + j, k_end), b_at(k0 + k, j0 + j + 1u, k_end),
                b_at(k0 + k, j0 + j + 2u, k_end), b_at(k0 + k, j0 + j + 3u, k_end));
        }
    }
}

@compute @workgroup_size(16, 16)
fn tiled(@builtin(workgroup_id) group: vec3<u32>,
         @builtin(local_invocation_id) local: vec3<u32>) {
    let t = local.y * 16u + local.x;
    let i0 = group.y * TILE;
    let j0 = group.x * TILE;
    let k_begin = group.z * p.inner_chunk;
    let k_end = min(k_begin + p.inner_chunk, p.inner);

    // acc[2r + v] = C(row r, columns v): row r < 4 is i0 + ty·4 + r, row r ≥ 4 is
    // i0 + 64 + ty·4 + r − 4; columns v = 0 are j0 + tx·4 .. + 4, v = 1 are j0 + 64 + tx·4 .. + 4.
    var acc: array<vec4<f32>, 16>;
    for (var k0 = k_begin; k0 < k_end; k0 += TILE_K) {
        stage_a(t, i0, k0, k_end);
        stage_b(t, k0, j0, k_end);
        workgroupBarrier();
        for (var k = 0u; k < TILE_K; k++) {
            let a_lo = a_tile[k * TILE_VEC4S + local.y];
            let a_hi = a_tile[k * TILE_VEC4S + 16u + local.y];
            let b_lo = b_tile[k * TILE_VEC4S + local.x];
            let b_hi = b_tile[k * TILE_VEC4S + 16u + local.x];
            // Written out, so that acc stays in registers on every compiler.
            acc[0] += a_lo.x * b_lo;
            acc[1] += a_lo.x * b_hi;
            acc[2] += a_lo.y * b_lo;
            acc[3] += a_lo.y * b_hi;
            acc[4] += a_lo.z * b_lo;
            acc[5] += a_lo.z * b_hi;
            acc[6] += a_lo.w * b_lo;
            acc[7] += a_lo.w * b_hi;
            acc[8] += a_hi.x * b_lo;
            acc[9] += a_hi.x * b_hi;
            acc[10] += a_hi.y * b_lo;
            acc[11] += a_hi.y * b_hi;
            acc[12] += a_hi.z * b_lo;
            acc[13] += a_hi.z * b_hi;
            acc[14] += a_hi.w * b_lo;
            acc[15] += a_hi.w * b_hi;
        }
        workgroupBarrier();
    }

    let slice = group.z * p.rows * p.cols;
    for (var r = 0u; r < 8u; r++) {
        let i = i0 + (r / 4u) * 64u + local.y * 4u + r % 4u;
        for (var v = 0u; v < 2u; v++) {
            for (var col = 0u; col < 4u; col++) {
                let j = j0 + v * 64u + local.x * 4u + col;
                if (i < p.rows && j < p.cols) {
                    var value = acc[2u * r + v][col];
                    if (p.add_bias == 1u && group.z == 0u) {
                        value += bias[i];
                    }
                    c[slice + i * p.c_rs + j * p.c_cs] = value;
                }
            }
        }
    }
}
