// augment: shifted copies of a batch's images, as packed bytes.
//   images: the pool, 784 bytes (196 u32 words) per image
//   out: (m images), 196 words each; image j is image indices[index_offset + j] moved by
//   (dx, dy) = shifts[shift_offset + 2j], shifts[shift_offset + 2j + 1]:
//   out(r, c) = image(r − dy, c − dx), 0 outside.
// The fused step (fused.wgsl) runs this kernel with its own step slots, whose first three
// fields are these.
// One thread per output word (four pixels).

struct Params {
    m: u32,
    index_offset: u32,
    shift_offset: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> images: array<u32>;
@group(0) @binding(2) var<storage, read> indices: array<u32>;
@group(0) @binding(3) var<storage, read> shifts: array<i32>;
@group(0) @binding(4) var<storage, read_write> out: array<u32>;

const SIDE: i32 = 28;
const WORDS: u32 = 196u;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * 256u;
    if (i >= p.m * WORDS) {
        return;
    }
    let j = i / WORDS;
    let source = indices[p.index_offset + j] * WORDS;
    let dx = shifts[p.shift_offset + 2u * j];
    let dy = shifts[p.shift_offset + 2u * j + 1u];
    var word = 0u;
    for (var k = 0u; k < 4u; k++) {
        let pixel = i32((i % WORDS) * 4u + k);
        let r = pixel / SIDE - dy;
        let c = pixel % SIDE - dx;
        if (r >= 0 && r < SIDE && c >= 0 && c < SIDE) {
            let at = u32(r * SIDE + c);
            let byte = (images[source + at / 4u] >> (8u * (at % 4u))) & 0xffu;
            word |= byte << (8u * k);
        }
    }
    out[i] = word;
}
