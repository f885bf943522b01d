// momentum_update: V = β·V + dP, P -= α·V, elementwise.
//   P, dP, V: any shape, count elements (a layer's W or b and its velocity)

struct Params {
    count: u32,
    alpha: f32,
    beta: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> param: array<f32>;
@group(0) @binding(3) var<storage, read_write> velocity: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * 256u;
    if (i >= p.count) {
        return;
    }
    let v = p.beta * velocity[i] + grad[i];
    velocity[i] = v;
    param[i] -= p.alpha * v;
}
