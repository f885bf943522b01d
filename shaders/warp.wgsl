// warp: affine or elastic copies of a batch's images, as packed bytes (the math is in
// src/augment.rs; the CPU twin is cpu::ops::warp).
//   images: the pool, 784 bytes (196 u32 words) per image
//   warps, from warp_offset: (8, m) records [a00, a01, a10, a11, ty, tx, elastic, 0], then,
//   when elastic ≠ 0, (2, 784) field values (dy, then dx) per image
//   out: (m images), 196 words each; image j is image indices[index_offset + j] sampled at
//   (y, x) = A·(r − 13.5, c − 13.5) + 13.5 + t + d(r, c), bilinearly, 0 outside, rounded to a
//   byte: ⌊v + ½⌋.
// The fused step (fused.wgsl) runs this kernel with its own step slots, whose first three
// fields are these.
// One thread per output word (four pixels).

struct Params {
    m: u32,
    index_offset: u32,
    warp_offset: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> images: array<u32>;
@group(0) @binding(2) var<storage, read> indices: array<u32>;
@group(0) @binding(3) var<storage, read> warps: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<u32>;

const SIDE: i32 = 28;
const PIXELS: u32 = 784u;
const WORDS: u32 = 196u;
const CENTER: f32 = 13.5;
const RECORD: u32 = 8u;

// The byte at (r, c) of the image starting at word `source`, as a float; 0 outside.
fn pixel(source: u32, r: i32, c: i32) -> f32 {
    if (r < 0 || r >= SIDE || c < 0 || c >= SIDE) {
        return 0.0;
    }
    let at = u32(r * SIDE + c);
    return f32((images[source + at / 4u] >> (8u * (at % 4u))) & 0xffu);
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * 256u;
    if (i >= p.m * WORDS) {
        return;
    }
    let j = i / WORDS;
    let source = indices[p.index_offset + j] * WORDS;
    let w = p.warp_offset + RECORD * j;
    let elastic = warps[w + 6u] != 0.0;
    let field = p.warp_offset + RECORD * p.m + 2u * PIXELS * j;
    var word = 0u;
    for (var k = 0u; k < 4u; k++) {
        let at = (i % WORDS) * 4u + k;
        let u = f32(at / 28u) - CENTER;
        let v = f32(at % 28u) - CENTER;
        var d = vec2<f32>(0.0, 0.0);
        if (elastic) {
            d = vec2<f32>(warps[field + at], warps[field + PIXELS + at]);
        }
        let y = warps[w] * u + warps[w + 1u] * v + CENTER + warps[w + 4u] + d.x;
        let x = warps[w + 2u] * u + warps[w + 3u] * v + CENTER + warps[w + 5u] + d.y;
        let y0 = floor(y);
        let x0 = floor(x);
        let wy = y - y0;
        let wx = x - x0;
        let r = i32(y0);
        let c = i32(x0);
        let top = (1.0 - wx) * pixel(source, r, c) + wx * pixel(source, r, c + 1);
        let bottom = (1.0 - wx) * pixel(source, r + 1, c) + wx * pixel(source, r + 1, c + 1);
        let sampled = (1.0 - wy) * top + wy * bottom;
        let byte = u32(clamp(floor(sampled + 0.5), 0.0, 255.0));
        word |= byte << (8u * k);
    }
    out[i] = word;
}
