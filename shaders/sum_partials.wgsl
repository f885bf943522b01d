// sum_partials: out[i] = scale · Σ_s partials[s·len + i], the second pass of a split-K product
// or a chunked column sum. One thread per output; the number of slices is kept small.
//   partials: (parts, len); out: (len)

struct Params {
    len: u32,
    parts: u32,
    scale: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> partials: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * 256u;
    if (i >= p.len) {
        return;
    }
    var s = 0.0;
    for (var part = 0u; part < p.parts; part++) {
        s += partials[part * p.len + i];
    }
    out[i] = p.scale * s;
}
