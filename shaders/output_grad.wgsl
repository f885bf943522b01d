// output_grad: dZ = A − Y for the output layer, one thread per sample (column), with Y one-hot
// from the labels (never stored), and per sample the cross-entropy loss and whether the
// prediction is right.
//   A, Z, dZ: (rows, m), column-major; labels: one per image; stats: (2, m), (loss, correct)
// Loss: log Σ exp(z − max) − (z_label − max), from the logits so it stays finite.
// Prediction: the first largest logit.

struct Params {
    rows: u32,
    m: u32,
    index_offset: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> z: array<f32>;
@group(0) @binding(3) var<storage, read> labels: array<u32>;
@group(0) @binding(4) var<storage, read> indices: array<u32>;
@group(0) @binding(5) var<storage, read_write> dz: array<f32>;
@group(0) @binding(6) var<storage, read_write> stats: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let j = gid.x + gid.y * groups.x * 256u;
    if (j >= p.m) {
        return;
    }
    let label = labels[indices[p.index_offset + j]];
    let first = j * p.rows;
    var best = 0u;
    var max_z = z[first];
    for (var r = 1u; r < p.rows; r++) {
        if (z[first + r] > max_z) {
            max_z = z[first + r];
            best = r;
        }
    }
    var sum = 0.0;
    for (var r = 0u; r < p.rows; r++) {
        dz[first + r] = a[first + r] - select(0.0, 1.0, r == label);
        sum += exp(z[first + r] - max_z);
    }
    stats[2u * j] = log(sum) - (z[first + label] - max_z);
    stats[2u * j + 1u] = select(0.0, 1.0, best == label);
}
