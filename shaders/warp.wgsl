// warp: affine or elastic copies of a batch's images, as packed bytes, each image's warp drawn
// here from the step's key (the math is in src/augment.rs; the CPU twin is cpu::ops::warp,
// with augment::Warps::affine_of and field_of).
//   images: the pool, 784 bytes (196 u32 words) per image
//   warps, from warp_offset: the step's record (augment::Warps::record, 16 + 2R + 1 words in a
//   region of 80): key (2), elastic, radius R, rotation, scale, shear, translation, gain (f32
//   bits), padding to 16, then the 2R + 1 taps (f32 bits)
//   out: (m images), 196 words each; image j is image indices[index_offset + j] sampled at
//   (y, x) = A·(r − 13.5, c − 13.5) + 13.5 + t + d(r, c), bilinearly, 0 outside, rounded to a
//   byte: ⌊v + ½⌋.
// Image j's random numbers: pcg4d(key, j, block), four per block: θ, s, h, ty in block 0, tx
// in block 1, the field's noise (dy's 784, then dx's) from block 2, in runs of 8 blocks
// (augment::Warps::field_of). Integers only, so the GPU
// draws the bits the CPU draws; sin and cos are polynomials written out as augment::sin_cos.
// The field: the noise smoothed along rows, then columns (two 1-D passes, tap by tap in
// order, s ← fma(k, x, s), as the CPU sums them), times the gain.
// The fused step (fused.wgsl) runs this kernel with its own step slots, whose first three
// fields are these.
// One workgroup per image: its noise and row pass in workgroup memory (12.5 KiB), then one
// thread per output word (four pixels).
// Versions (bench/NOTES.md, "Augmentation where it is used"):
//   w1  one thread per output word, each image's affine record and field (6 KiB) drawn on the
//       host and uploaded every step
//   w2  (this) a workgroup per image drawing its own warp from the step's key

struct Params {
    m: u32,
    index_offset: u32,
    warp_offset: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> images: array<u32>;
@group(0) @binding(2) var<storage, read> indices: array<u32>;
@group(0) @binding(3) var<storage, read> warps: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<u32>;

const SIDE: i32 = 28;
const PIXELS: u32 = 784u;
const WORDS: u32 = 196u;
const CENTER: f32 = 13.5;
const HEADER: u32 = 16u;
const FIELD_BLOCK: u32 = 2u;
const THREADS: u32 = 256u;

// The image's noise (dy's, then dx's), then its rows smoothed; the taps (offsets −R..=R) and
// the image's affine map (A, then ty, tx), each read or computed once for the workgroup.
var<workgroup> noise: array<f32, 1568>;
var<workgroup> rows: array<f32, 1568>;
var<workgroup> kernel: array<f32, 57>;
var<workgroup> map: array<f32, 6>;

// Four draws from (key, image, block): pcg4d (Jarzynski and Olano 2020), as augment::draws.
fn draws(key: vec2<u32>, image: u32, block: u32) -> vec4<u32> {
    var v = vec4<u32>(key.x, key.y, image, block) * 1664525u + 1013904223u;
    v.x += v.y * v.w;
    v.y += v.z * v.x;
    v.z += v.x * v.y;
    v.w += v.y * v.z;
    v ^= v >> vec4<u32>(16u);
    v.x += v.y * v.w;
    v.y += v.z * v.x;
    v.z += v.x * v.y;
    v.w += v.y * v.z;
    return v;
}

// A draw as a uniform number in [−1, 1): its top 24 bits, exactly.
fn symmetric(x: vec4<u32>) -> vec4<f32> {
    return vec4<f32>(x >> vec4<u32>(8u)) * (1.0 / 8388608.0) - 1.0;
}

// (sin θ, cos θ) as augment::sin_cos computes them.
fn sin_cos(theta: f32) -> vec2<f32> {
    let q = floor(theta * 0.63661975 + 0.5);
    let r = theta - q * 1.5707964;
    let r2 = r * r;
    let s = r + r * r2 * (-0.16666667 + r2 * (0.008333334 + r2 * (-0.0001984127 + r2 * (2.7557319e-6 + r2 * -2.5052108e-8))));
    let c = 1.0 + r2 * (-0.5 + r2 * (0.041666668 + r2 * (-0.0013888889 + r2 * (2.4801588e-5 + r2 * -2.7557319e-7))));
    switch (i32(q) & 3) {
        case 0: { return vec2<f32>(s, c); }
        case 1: { return vec2<f32>(c, -s); }
        case 2: { return vec2<f32>(-s, -c); }
        default: { return vec2<f32>(-c, s); }
    }
}

fn word_f32(at: u32) -> f32 {
    return bitcast<f32>(warps[at]);
}

// The byte at (r, c) of the image starting at word `source`, as a float; 0 outside.
fn pixel(source: u32, r: i32, c: i32) -> f32 {
    if (r < 0 || r >= SIDE || c < 0 || c >= SIDE) {
        return 0.0;
    }
    let at = u32(r * SIDE + c);
    return f32((images[source + at / 4u] >> (8u * (at % 4u))) & 0xffu);
}

@compute @workgroup_size(256)
fn main(
    @builtin(local_invocation_index) t: u32,
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    // The same for the whole workgroup, so the barriers below stay in uniform control flow.
    let j = group.x + group.y * groups.x;
    if (j >= p.m) {
        return;
    }
    let w = p.warp_offset;
    let key = vec2<u32>(warps[w], warps[w + 1u]);
    let elastic = warps[w + 2u] != 0u;
    let radius = i32(warps[w + 3u]);
    if (t <= 2u * u32(radius)) {
        kernel[t] = word_f32(w + HEADER + t);
    }
    if (t == 0u) {
        let first = symmetric(draws(key, j, 0u));
        let theta = word_f32(w + 4u) * first.x;
        let s = 1.0 + word_f32(w + 5u) * first.y;
        let h = word_f32(w + 6u) * first.z;
        let sc = sin_cos(theta);
        map[0] = (sc.y - sc.x * h) / s;
        map[1] = -sc.x / s;
        map[2] = (sc.x + sc.y * h) / s;
        map[3] = sc.y / s;
        map[4] = word_f32(w + 7u) * first.w;
        map[5] = word_f32(w + 7u) * symmetric(draws(key, j, 1u)).x;
    }
    if (elastic) {
        for (var b = t; b < 2u * PIXELS / 4u; b += THREADS) {
            // Run b / 8's word w of block b % 8 is noise value 32·(b / 8) + 8w + b % 8.
            let u = symmetric(draws(key, j, FIELD_BLOCK + b));
            let at = 32u * (b / 8u) + b % 8u;
            noise[at] = u.x;
            noise[at + 8u] = u.y;
            noise[at + 16u] = u.z;
            noise[at + 24u] = u.w;
        }
    }
    workgroupBarrier();
    if (elastic) {
        // Along each row: element c gathers c + o.
        for (var i = t; i < 2u * PIXELS; i += THREADS) {
            let c = i32(i % 28u);
            let first = i - u32(c);
            var sum = 0.0;
            // Every tap, the same count for every thread: one outside adds 0·x, which leaves
            // the sum as it was.
            for (var o = -radius; o <= radius; o++) {
                let at = c + o;
                let k = select(0.0, kernel[o + radius], at >= 0 && at < SIDE);
                sum = fma(k, noise[first + u32(clamp(at, 0, SIDE - 1))], sum);
            }
            rows[i] = sum;
        }
    }
    workgroupBarrier();
    if (t >= WORDS) {
        return;
    }
    let a = vec4<f32>(map[0], map[1], map[2], map[3]);
    let ty = map[4];
    let tx = map[5];
    let gain = word_f32(w + 8u);

    let source = indices[p.index_offset + j] * WORDS;
    var word = 0u;
    for (var k = 0u; k < 4u; k++) {
        let at = t * 4u + k;
        let r = i32(at / 28u);
        let c = at % 28u;
        let u = f32(r) - CENTER;
        let v = f32(c) - CENTER;
        var d = vec2<f32>(0.0, 0.0);
        if (elastic) {
            // Along each column: row r gathers row r + o.
            for (var o = -radius; o <= radius; o++) {
                let at = r + o;
                let k = select(0.0, kernel[o + radius], at >= 0 && at < SIDE);
                let below = u32(clamp(at, 0, SIDE - 1)) * 28u + c;
                d = fma(vec2<f32>(k), vec2<f32>(rows[below], rows[PIXELS + below]), d);
            }
            d *= gain;
        }
        let y = a.x * u + a.y * v + CENTER + ty + d.x;
        let x = a.z * u + a.w * v + CENTER + tx + d.y;
        let y0 = floor(y);
        let x0 = floor(x);
        let wy = y - y0;
        let wx = x - x0;
        let pr = i32(y0);
        let pc = i32(x0);
        let top = (1.0 - wx) * pixel(source, pr, pc) + wx * pixel(source, pr, pc + 1);
        let bottom = (1.0 - wx) * pixel(source, pr + 1, pc) + wx * pixel(source, pr + 1, pc + 1);
        let sampled = (1.0 - wy) * top + wy * bottom;
        let byte = u32(clamp(floor(sampled + 0.5), 0.0, 255.0));
        word |= byte << (8u * k);
    }
    out[t + WORDS * j] = word;
}
