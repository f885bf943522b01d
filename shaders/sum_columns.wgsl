// sum_columns: partial sums over the batch, one per row and chunk of columns.
//   X: (rows, m), column-major; partials: (chunks, rows), partials[chunk * rows + r]
// Workgroup (chunk, r) adds columns [chunk·chunk_len, (chunk+1)·chunk_len) of row r: its 256
// threads each sum a strided share, then a tree reduction in workgroup memory combines them.
// sum_partials adds the chunks (and scales by 1/m for the bias gradient db = 1/m · Σ dZ).

struct Params {
    rows: u32,
    m: u32,
    chunk_len: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> partials: array<f32>;

const THREADS: u32 = 256u;
var<workgroup> scratch: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let row = wg.y;
    let begin = wg.x * p.chunk_len;
    let end = min(begin + p.chunk_len, p.m);
    var s = 0.0;
    for (var col = begin + t; col < end; col += THREADS) {
        s += x[col * p.rows + row];
    }
    scratch[t] = s;
    workgroupBarrier();
    for (var half = THREADS / 2u; half > 0u; half /= 2u) {
        if (t < half) {
            scratch[t] += scratch[t + half];
        }
        workgroupBarrier();
    }
    if (t == 0u) {
        partials[wg.x * p.rows + row] = scratch[0];
    }
}
