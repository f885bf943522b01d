// activation: A = g(Z), elementwise.
//   Z, A: (units, m), count = units·m
// act RELU: max(z, 0). act ELU (α = 1): z if z > 0 else e^z − 1.

// The activations' codes, handed over by the host (src/gpu/shaders.rs); the defaults are the same.
override RELU: u32 = 0u;
override ELU: u32 = 1u;

struct Params {
    count: u32,
    act: u32,   // RELU or ELU
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> z: array<f32>;
@group(0) @binding(2) var<storage, read_write> a: array<f32>;

// A 2-D grid of 256-thread workgroups, since one dimension stops at 65,535 workgroups.
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * 256u;
    if (i >= p.count) {
        return;
    }
    let v = z[i];
    if (p.act == RELU) {
        a[i] = max(v, 0.0);
    } else {
        // min() keeps exp finite on the branch that is not taken.
        a[i] = select(exp(min(v, 0.0)) - 1.0, v, v > 0.0);
    }
}
