// matmul_coop: matmul.wgsl's product on the adapter's cooperative matrices (tensor cores where
// the adapter has them), for `--matmul coop`. It is not a shader on its own: the host compiles
// it after matmul.wgsl, in one module, so it shares that file's parameters, bindings and helpers
// (`a_at`, `b_at`, `image_word`) and one bind group serves all three of matmul's kernels. The
// host also puts `enable wgpu_cooperative_matrix;` (and `enable f16;`) first, and fits three
// constants to the adapter (`gpu::coop::CoopConfig`): the tile (coop_mat8x8, S = 8, or
// coop_mat16x16, S = 16), the tiles' input type In (f16, or f32 where the adapter multiplies
// f32 tiles) and LANES, the adapter's subgroup size: a workgroup is one subgroup.
//
// A workgroup computes a COOP_BLOCK × COOP_BLOCK block of C as COOP_TILES × COOP_TILES accumulator tiles (f32). Step
// by step along the inner dimension it stages a COOP_BLOCK × S tile of A and an S × COOP_BLOCK tile of B in
// workgroup memory, converted to In, loads them as cooperative tiles and multiplies every tile
// of A's by every tile of B's. At the end each accumulator goes out through workgroup memory, so
// that edges, the bias, split-K slices and strided layouts are handled as in the other kernels.
// Inputs rounded to f16 round like TF32 (10 bits of mantissa); every sum is f32.

alias In = f16;
const S: u32 = 8u;
const LANES: u32 = 8u;
const COOP_TILES: u32 = 4u;
const COOP_BLOCK: u32 = COOP_TILES * S;

// coop_a[r · S + kk] = A(i0 + r, k0 + kk); coop_b[kk · COOP_BLOCK + c] = B(k0 + kk, j0 + c).
var<workgroup> coop_a: array<In, COOP_BLOCK * S>;
var<workgroup> coop_b: array<In, S * COOP_BLOCK>;
// One accumulator tile on its way out, row-major.
var<workgroup> coop_c: array<f32, S * S>;

fn stage_coop_a(lane: u32, i0: u32, k0: u32, k_end: u32) {
    for (var e = lane; e < COOP_BLOCK * S; e += LANES) {
        // Consecutive lanes read along A's contiguous dimension.
        var r = e / S;
        var kk = e % S;
        if (p.a_cs != 1u) {
            r = e % COOP_BLOCK;
            kk = e / COOP_BLOCK;
        }
        coop_a[r * S + kk] = In(a_at(i0 + r, k0 + kk, k_end));
    }
}

// Image operands arrive as packed words of four pixels: four consecutive inner indices of X, or
// four consecutive columns of Xᵀ. k0 is a multiple of S and the pixel count a multiple of 4, so
// a word is all in or all out.
fn stage_coop_b(lane: u32, k0: u32, j0: u32, k_end: u32) {
    switch p.b_source {
        case 1u: {
            // X (784, m): word w holds pixels k0 + q4 .. + 4 of sample j0 + c.
            for (var w = lane; w < (S / 4u) * COOP_BLOCK; w += LANES) {
                let c = w / (S / 4u);
                let q4 = (w % (S / 4u)) * 4u;
                var pixels = vec4<f32>();
                if (j0 + c < p.cols && k0 + q4 < k_end) {
                    pixels = image_word(j0 + c, k0 + q4);
                }
                for (var q = 0u; q < 4u; q++) {
                    coop_b[(q4 + q) * COOP_BLOCK + c] = In(pixels[q]);
                }
            }
        }
        case 2u: {
            // Xᵀ (m, 784): word w holds pixels j0 + c4 .. + 4 of sample k0 + kk.
            for (var w = lane; w < S * (COOP_BLOCK / 4u); w += LANES) {
                let kk = w / (COOP_BLOCK / 4u);
                let c4 = (w % (COOP_BLOCK / 4u)) * 4u;
                var pixels = vec4<f32>();
                if (k0 + kk < k_end && j0 + c4 < p.cols) {
                    pixels = image_word(k0 + kk, j0 + c4);
                }
                for (var q = 0u; q < 4u; q++) {
                    coop_b[kk * COOP_BLOCK + c4 + q] = In(pixels[q]);
                }
            }
        }
        default: {
            for (var e = lane; e < S * COOP_BLOCK; e += LANES) {
                var kk = e / COOP_BLOCK;
                var c = e % COOP_BLOCK;
                if (p.b_cs != 1u) {
                    kk = e % S;
                    c = e / S;
                }
                coop_b[kk * COOP_BLOCK + c] = In(b_at(k0 + kk, j0 + c, k_end));
            }
        }
    }
}

@compute @workgroup_size(LANES)
fn coop(@builtin(workgroup_id) group: vec3<u32>,
        @builtin(local_invocation_index) lane: u32) {
    let i0 = group.y * COOP_BLOCK;
    let j0 = group.x * COOP_BLOCK;
    let k_begin = group.z * p.inner_chunk;
    let k_end = min(k_begin + p.inner_chunk, p.inner);

    // acc[ti · COOP_TILES + tj] = C's tile (ti, tj) of this block
    var acc: array<coop_mat8x8<f32, C>, COOP_TILES * COOP_TILES>;
    var b_tiles: array<coop_mat8x8<In, B>, COOP_TILES>;
    for (var k0 = k_begin; k0 < k_end; k0 += S) {
        stage_coop_a(lane, i0, k0, k_end);
        stage_coop_b(lane, k0, j0, k_end);
        workgroupBarrier();
        for (var tj = 0u; tj < COOP_TILES; tj++) {
            b_tiles[tj] = coopLoadT<coop_mat8x8<In, B>>(&coop_b[tj * S], COOP_BLOCK);
        }
        for (var ti = 0u; ti < COOP_TILES; ti++) {
            let a_tile = coopLoadT<coop_mat8x8<In, A>>(&coop_a[ti * S * S], S);
            for (var tj = 0u; tj < COOP_TILES; tj++) {
                let t = ti * COOP_TILES + tj;
                acc[t] = coopMultiplyAdd(a_tile, b_tiles[tj], acc[t]);
            }
        }
        workgroupBarrier();
    }

    let slice = group.z * p.rows * p.cols;
    for (var t = 0u; t < COOP_TILES * COOP_TILES; t++) {
        coopStoreT(acc[t], &coop_c[0], S);
        workgroupBarrier();
        for (var e = lane; e < S * S; e += LANES) {
            let i = i0 + (t / COOP_TILES) * S + e / S;
            let j = j0 + (t % COOP_TILES) * S + e % S;
            if (i < p.rows && j < p.cols) {
                var value = coop_c[e];
                // Only slice 0 adds the bias, so that the slices' sum has it once.
                if (p.add_bias == 1u && group.z == 0u) {
                    value += bias[i];
                }
                c[slice + i * p.c_rs + j * p.c_cs] = value;
            }
        }
        workgroupBarrier();
    }
}
