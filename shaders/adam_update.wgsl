// adam_update: M = β1·M + (1−β1)·dP, V = β2·V + (1−β2)·dP²,
// P -= α · (M·c1) / (sqrt(V·c2) + ε), elementwise.
//   P, dP, M, V: any shape, count elements (a layer's W or b and its two moments)
// c1 = 1/(1−β1ᵗ), c2 = 1/(1−β2ᵗ): the bias corrections of step t, computed on the host.

struct Params {
    count: u32,
    alpha: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    c1: f32,
    c2: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> param: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * 256u;
    if (i >= p.count) {
        return;
    }
    let g = grad[i];
    let mi = p.beta1 * m[i] + (1.0 - p.beta1) * g;
    let vi = p.beta2 * v[i] + (1.0 - p.beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    param[i] -= p.alpha * (mi * p.c1) / (sqrt(vi * p.c2) + p.eps);
}
