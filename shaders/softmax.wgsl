// softmax: A[:, j] = exp(Z[:, j] − max) / Σ exp(Z[:, j] − max), one thread per column.
//   Z, A: (rows, m), column-major (a sample's column is contiguous)
// Subtracting the column's max keeps exp from overflowing, even for logits near ±1000.

struct Params {
    rows: u32,
    m: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> z: array<f32>;
@group(0) @binding(2) var<storage, read_write> a: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let j = gid.x + gid.y * groups.x * 256u;
    if (j >= p.m) {
        return;
    }
    let first = j * p.rows;
    var max_z = z[first];
    for (var r = 1u; r < p.rows; r++) {
        max_z = max(max_z, z[first + r]);
    }
    var sum = 0.0;
    for (var r = 0u; r < p.rows; r++) {
        let e = exp(z[first + r] - max_z);
        a[first + r] = e;
        sum += e;
    }
    for (var r = 0u; r < p.rows; r++) {
        a[first + r] = a[first + r] / sum;
    }
}
