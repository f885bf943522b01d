// activation_grad: dZ = dA ⊙ g'(Z), elementwise.
//   dA, Z, dZ: (units, m), count = units·m
// act RELU: g' = 1 if z > 0 else 0. act ELU (α = 1): g' = 1 if z > 0 else e^z.

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
@group(0) @binding(1) var<storage, read> da: array<f32>;
@group(0) @binding(2) var<storage, read> z: array<f32>;
@group(0) @binding(3) var<storage, read_write> dz: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * 256u;
    if (i >= p.count) {
        return;
    }
    let v = z[i];
    var slope = select(0.0, 1.0, v > 0.0);
    if (p.act == ELU) {
        slope = select(exp(min(v, 0.0)), 1.0, v > 0.0);
    }
    dz[i] = da[i] * slope;
}
