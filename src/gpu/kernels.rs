//! One Rust wrapper per WGSL kernel in `shaders/`, named like the file and like its CPU twin
//! in `cpu::ops`. A wrapper takes the shapes, fills the kernel's uniform parameters and
//! records one dispatch (two for the split-K product and the column sums: their second pass is
//! `sum_partials`).
//!
//! Binding convention, in every shader: binding 0 is the kernel's uniform `Params`, bindings
//! 1, 2, … are its storage buffers in the order the shader declares them.

use bytemuck::{Pod, Zeroable};

use crate::error::Result;
use crate::gpu::coop::CoopConfig;
use crate::gpu::pipeline::{
    bind_group, bind_group_layout, buffer_entry, Binding, Pipeline, ShaderChecks,
};
use crate::gpu::profile::Timing;
use crate::gpu::shaders::{self, activation_code, source, ACTIVATION_CODES};
use crate::layout::Layout;
use crate::model::Activation;
use crate::optimizer::AdamParams;

/// Threads per workgroup of the one-thread-per-element kernels (as in the shaders).
const THREADS: u32 = 256;
/// The block of C one workgroup of matmul's narrow kernel (`main`) computes: 16×4 threads,
/// 4×4 each.
const MATMUL_COLS: usize = 64;
const MATMUL_ROWS: usize = 16;
/// The block of C one workgroup of matmul's `tiled` kernel computes: 16×16 threads, 8×8 each.
const MATMUL_TILE: usize = 128;
/// C's rows and columns from which matmul uses its `tiled` kernel: a whole tile each way. The
/// 10-unit layers stay on the narrow kernel, and so do products of a few tiles (a 512-unit
/// layer's 512 × 64 forward product at batch 64: 4 tiled workgroups, 32 narrow ones), where the
/// narrow kernel's many small workgroups keep more of the adapter busy (on lavapipe, the tiled
/// kernel from half a tile made batch 64 of 784-512-10 25% slower; see bench/NOTES.md).
const MATMUL_TILED_FROM: usize = MATMUL_TILE;
/// Columns each sum_columns workgroup adds (256 threads, 4 columns each).
const COLUMN_CHUNK: u32 = 1024;
/// Workgroups per grid dimension that every adapter allows.
const MAX_GROUPS: u32 = 65_535;
/// The split-K products' partial sums stay under this many floats (16 MiB).
const PARTIAL_FLOATS: usize = 1 << 22;
/// Each kernel's uniform parameters sit in their own 256-byte slot of one buffer
/// (256 is the default `min_uniform_buffer_offset_alignment`).
pub const UNIFORM_SLOT: u64 = 256;

pub struct Kernel {
    pub name: &'static str,
    pub pipeline: wgpu::ComputePipeline,
    /// The layout of its bind groups; the kernels of one shader share it, so that one bind
    /// group serves each of them.
    layout: wgpu::BindGroupLayout,
}

pub struct Kernels {
    /// matmul's narrow kernel; it also makes the bind groups of `matmul_tiled` and
    /// `matmul_coop`.
    pub matmul: Kernel,
    pub matmul_tiled: Kernel,
    /// The cooperative-matrix kernel, which takes the tiled kernel's products (`--matmul coop`
    /// on an adapter that has cooperative matrices), and its tiles.
    pub matmul_coop: Option<(Kernel, CoopConfig)>,
    pub activation: Kernel,
    pub activation_grad: Kernel,
    pub softmax: Kernel,
    pub output_grad: Kernel,
    pub sum_columns: Kernel,
    pub sum_partials: Kernel,
    pub sgd_update: Kernel,
    pub momentum_update: Kernel,
    pub adam_update: Kernel,
    pub augment: Kernel,
    pub warp: Kernel,
    /// `--split-k N`: the workgroups the tiled kernel's split-K products aim at, at most
    /// (None: about `TILED_GROUPS`, rounded up; see `splits_with`).
    pub split_groups: Option<usize>,
    /// `--forward-split-k N`: the forward products (`Z = W·A + b`) split their inner dimension
    /// into at most N slices (see `forward_splits_with`); None, as by default: never split.
    pub forward_split_k: Option<usize>,
}

/// A kernel's bind group with its buffers, made once when the backend is built.
pub struct Bound {
    bind_group: wgpu::BindGroup,
    slot: u64,
}

/// The uniform buffer holding every bound kernel's parameters, and its host copy.
pub struct Uniforms {
    pub buffer: wgpu::Buffer,
    pub host: Vec<u8>,
    next_slot: u64,
}

impl Uniforms {
    pub fn new(device: &wgpu::Device, slots: u64) -> Uniforms {
        let size = slots * UNIFORM_SLOT;
        Uniforms {
            buffer: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("kernel parameters"),
                size,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            host: vec![0; size as usize],
            next_slot: 0,
        }
    }
}

impl Kernel {
    /// The pipeline `spec` describes, named `name`, with its bind group layout.
    fn build(
        device: &wgpu::Device,
        checks: ShaderChecks,
        name: &'static str,
        spec: Pipeline,
    ) -> Result<Kernel> {
        let pipeline = spec.build(device, checks)?;
        let layout = match spec.layout {
            Some(layout) => layout.clone(),
            None => pipeline.get_bind_group_layout(0),
        };
        Ok(Kernel {
            name,
            pipeline,
            layout,
        })
    }

    /// Entry point `main` of shader `name`, with these override constants.
    fn main(
        device: &wgpu::Device,
        checks: ShaderChecks,
        name: &'static str,
        constants: &[(&str, f64)],
    ) -> Result<Kernel> {
        let what = format!("shader {name}.wgsl");
        let spec = Pipeline {
            constants,
            ..Pipeline::new(name, &what, source(name), "main")
        };
        Kernel::build(device, checks, name, spec)
    }

    /// Binds a new uniform slot and `buffers` (in the shader's binding order, from binding 1).
    pub fn bind(
        &self,
        device: &wgpu::Device,
        uniforms: &mut Uniforms,
        buffers: &[&wgpu::Buffer],
    ) -> Bound {
        let slot = uniforms.next_slot;
        uniforms.next_slot += 1;
        self.bind_slot(device, uniforms, slot, buffers)
    }

    /// Binds `buffers` reusing the uniform slot of `old`, which this binding replaces.
    pub fn rebind(
        &self,
        device: &wgpu::Device,
        uniforms: &Uniforms,
        old: &Bound,
        buffers: &[&wgpu::Buffer],
    ) -> Bound {
        self.bind_slot(device, uniforms, old.slot, buffers)
    }

    fn bind_slot(
        &self,
        device: &wgpu::Device,
        uniforms: &Uniforms,
        slot: u64,
        buffers: &[&wgpu::Buffer],
    ) -> Bound {
        assert!(
            slot * UNIFORM_SLOT < uniforms.buffer.size(),
            "too few uniform slots"
        );
        let params = Binding::range(0, &uniforms.buffer, slot * UNIFORM_SLOT, UNIFORM_SLOT);
        let mut bindings = vec![params];
        for (i, buffer) in buffers.iter().enumerate() {
            bindings.push(Binding::whole(i as u32 + 1, buffer));
        }
        let bind_group = bind_group(device, self.name, &self.layout, &bindings);
        Bound { bind_group, slot }
    }
}

impl Kernels {
    /// Every kernel's pipeline; matmul's cooperative one too where `coop` says how to fit it
    /// (the device must have its features); wgpu's runtime checks as `checks` says.
    pub fn new(
        device: &wgpu::Device,
        coop: Option<CoopConfig>,
        checks: ShaderChecks,
    ) -> Result<Kernels> {
        let k = |name: &'static str| Kernel::main(device, checks, name, &[]);
        let activations: Vec<_> = shaders::constants(&ACTIVATION_CODES).collect();
        let matmul_layout = matmul_layout(device);
        let matmul = |name: &'static str, file: &str, text: &str, entry: &str| {
            let what = format!("shader {file}.wgsl");
            let spec = Pipeline {
                layout: Some(&matmul_layout),
                ..Pipeline::new(name, &what, text, entry)
            };
            Kernel::build(device, checks, name, spec)
        };
        let matmul_coop = match coop {
            Some(config) => {
                let text = config.source();
                let kernel = matmul("matmul coop", "matmul_coop", &text, "coop")?;
                Some((kernel, config))
            }
            None => None,
        };
        Ok(Kernels {
            matmul: matmul("matmul", "matmul", source("matmul"), "main")?,
            matmul_tiled: matmul("matmul tiled", "matmul", source("matmul"), "tiled")?,
            matmul_coop,
            activation: Kernel::main(device, checks, "activation", &activations)?,
            activation_grad: Kernel::main(device, checks, "activation_grad", &activations)?,
            softmax: k("softmax")?,
            output_grad: k("output_grad")?,
            sum_columns: k("sum_columns")?,
            sum_partials: k("sum_partials")?,
            sgd_update: k("sgd_update")?,
            momentum_update: k("momentum_update")?,
            adam_update: k("adam_update")?,
            augment: k("augment")?,
            warp: k("warp")?,
            split_groups: None,
            forward_split_k: None,
        })
    }
}

/// The one layout of matmul's kernels (narrow, tiled, cooperative): its parameters, then A, B,
/// the images, their indices and the bias (read) and C (written).
fn matmul_layout(device: &wgpu::Device) -> wgpu::BindGroupLayout {
    use wgpu::BufferBindingType::{Storage, Uniform};
    let mut entries = vec![buffer_entry(0, Uniform, false)];
    entries
        .extend((1..=5).map(|binding| buffer_entry(binding, Storage { read_only: true }, false)));
    entries.push(buffer_entry(6, Storage { read_only: false }, false));
    bind_group_layout(device, "matmul bindings", &entries)
}

/// Records dispatches into one command encoder and one compute pass; `submit` uploads the
/// parameters they use (for the per-operation kernels, whose parameters sit in `Uniforms`) and
/// submits them all, without waiting. With a `Timing`, every dispatch gets a pass of its own
/// with timestamps at its start and end (`bench --profile`).
pub struct Recorder<'a> {
    encoder: wgpu::CommandEncoder,
    pass: Option<wgpu::ComputePass<'static>>,
    uniforms: Option<&'a mut Uniforms>,
    timing: Option<Timing>,
}

impl<'a> Recorder<'a> {
    pub fn new(device: &wgpu::Device, uniforms: &'a mut Uniforms, label: &str) -> Recorder<'a> {
        let mut rec = Recorder::without_uniforms(device, label);
        rec.uniforms = Some(uniforms);
        rec
    }

    /// A recorder for kernels that bring their own parameters (the fused step's slots).
    pub fn without_uniforms(device: &wgpu::Device, label: &str) -> Recorder<'a> {
        let encoder =
            device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) });
        Recorder {
            encoder,
            pass: None,
            uniforms: None,
            timing: None,
        }
    }

    /// Times each following dispatch with the profiler's queries.
    pub fn with_timing(mut self, timing: Option<Timing>) -> Recorder<'a> {
        self.timing = timing;
        self
    }

    fn dispatch<P: Pod>(&mut self, kernel: &Kernel, bound: &Bound, params: P, groups: [u32; 3]) {
        let uniforms = self
            .uniforms
            .as_mut()
            .expect("a recorder with uniforms for the per-operation kernels");
        let at = (bound.slot * UNIFORM_SLOT) as usize;
        let bytes = bytemuck::bytes_of(&params);
        uniforms.host[at..at + bytes.len()].copy_from_slice(bytes);
        self.run(
            kernel.name,
            &kernel.pipeline,
            &bound.bind_group,
            &[],
            groups,
        );
    }

    /// Records one dispatch of `pipeline` with `bind_group` at the given dynamic offsets.
    pub fn run(
        &mut self,
        label: &'static str,
        pipeline: &wgpu::ComputePipeline,
        bind_group: &wgpu::BindGroup,
        offsets: &[u32],
        groups: [u32; 3],
    ) {
        assert!(
            groups.iter().all(|&g| g <= MAX_GROUPS),
            "{label}: grid {groups:?} too large"
        );
        if groups.contains(&0) {
            return;
        }
        let timed = self.timing.as_mut().and_then(|t| t.next(label));
        if timed.is_some() {
            self.pass = None;
        }
        let encoder = &mut self.encoder;
        let pass = self.pass.get_or_insert_with(|| {
            encoder
                .begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("kernels"),
                    timestamp_writes: timed.as_ref().map(|(query_set, first)| {
                        wgpu::ComputePassTimestampWrites {
                            query_set,
                            beginning_of_pass_write_index: Some(*first),
                            end_of_pass_write_index: Some(first + 1),
                        }
                    }),
                })
                .forget_lifetime()
        });
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, bind_group, offsets);
        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        if timed.is_some() {
            self.pass = None;
        }
    }

    /// Copies bytes between buffers after the dispatches recorded so far.
    pub fn copy(
        &mut self,
        from: &wgpu::Buffer,
        from_offset: u64,
        to: &wgpu::Buffer,
        to_offset: u64,
        bytes: u64,
    ) {
        self.pass = None;
        self.encoder
            .copy_buffer_to_buffer(from, from_offset, to, to_offset, bytes);
    }

    /// Submits everything recorded; returns the submission and the timing of the timed
    /// dispatches, whose timestamps the profiler reads once the GPU is done.
    pub fn submit(mut self, queue: &wgpu::Queue) -> (wgpu::SubmissionIndex, Option<Timing>) {
        self.pass = None;
        if let Some(uniforms) = &self.uniforms {
            queue.write_buffer(&uniforms.buffer, 0, &uniforms.host);
        }
        if let Some(timing) = &self.timing {
            timing.resolve(&mut self.encoder);
        }
        let index = queue.submit([self.encoder.finish()]);
        (index, self.timing)
    }
}

/// A 2-D grid of 256-thread workgroups covering `count` elements (one dimension stops at
/// 65,535 workgroups).
pub fn grid(count: usize) -> [u32; 3] {
    let groups = count.div_ceil(THREADS as usize) as u32;
    let x = groups.clamp(1, MAX_GROUPS);
    [x.min(groups), groups.div_ceil(x), 1]
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct MatmulParams {
    rows: u32,
    cols: u32,
    inner: u32,
    inner_chunk: u32,
    a_rs: u32,
    a_cs: u32,
    b_rs: u32,
    b_cs: u32,
    c_rs: u32,
    c_cs: u32,
    b_source: u32,
    index_offset: u32,
    add_bias: u32,
    _pad: [u32; 3],
}

/// matmul's B operand: a matrix in a buffer, or the batch's images read as bytes.
#[derive(Clone, Copy, Debug)]
pub enum Operand {
    Matrix(Layout),
    /// X: (784, m), column j = image `indices[index_offset + j]`.
    Images {
        index_offset: u32,
        m: usize,
    },
    /// Xᵀ: (m, 784).
    ImagesT {
        index_offset: u32,
        m: usize,
    },
}

impl Operand {
    /// X: the m images listed at `indices[index_offset ..]`.
    pub fn images(index_offset: u32, m: usize) -> Operand {
        Operand::Images { index_offset, m }
    }

    /// Xᵀ of the same images.
    pub fn images_t(index_offset: u32, m: usize) -> Operand {
        Operand::ImagesT { index_offset, m }
    }

    fn shape(&self) -> (usize, usize) {
        match *self {
            Operand::Matrix(l) => (l.rows, l.cols),
            Operand::Images { m, .. } => (crate::data::PIXELS, m),
            Operand::ImagesT { m, .. } => (m, crate::data::PIXELS),
        }
    }
}

/// Whether matmul computes a (rows, cols) product with its `tiled` kernel.
pub fn matmul_is_tiled(rows: usize, cols: usize) -> bool {
    rows >= MATMUL_TILED_FROM && cols >= MATMUL_TILED_FROM
}

/// How many slices a (rows, cols) product over `inner` is split into. The narrow kernel's
/// workgroups are small: it splits whenever the inner dimension is a whole batch, into slices of
/// about 256. The tiled kernel's are large: it splits only until about `TILED_GROUPS` workgroups
/// share the work (enough to fill a large GPU), into slices of at least 512. Either way the
/// partial products stay small (at most `PARTIAL_FLOATS`). Never fewer for a larger `inner`, so
/// that scratch sized for the largest batch holds every batch's slices.
pub fn splits_for(rows: usize, cols: usize, inner: usize) -> u32 {
    splits_with(rows, cols, inner, None)
}

/// `splits_for`, the tiled kernel's products split into at most `groups` workgroups where
/// given (`--split-k`; a multiple of the GPU's multiprocessors gives whole waves), never more
/// than `splits_for` would (the scratch is sized by it).
pub fn splits_with(rows: usize, cols: usize, inner: usize, groups: Option<usize>) -> u32 {
    const INNER_PER_SPLIT: usize = 256;
    const TILED_INNER_PER_SPLIT: usize = 512;
    const TILED_GROUPS: usize = 512;
    let wanted = if matmul_is_tiled(rows, cols) {
        let tiles = rows.div_ceil(MATMUL_TILE) * cols.div_ceil(MATMUL_TILE);
        let by_groups = match groups {
            None => TILED_GROUPS.div_ceil(tiles),
            Some(groups) => (groups / tiles).clamp(1, TILED_GROUPS.div_ceil(tiles)),
        };
        inner.div_ceil(TILED_INNER_PER_SPLIT).min(by_groups)
    } else {
        inner.div_ceil(INNER_PER_SPLIT)
    };
    let room = (PARTIAL_FLOATS / (rows * cols).max(1)).max(1);
    wanted.min(room).clamp(1, MAX_GROUPS as usize) as u32
}

/// `--forward-split-k`: how many slices a forward product (rows, cols) over `inner` is split
/// into: `slices` where given, fewer where the partial products would pass `PARTIAL_FLOATS`
/// (at large batches the product has workgroups enough anyway) or a slice would hold fewer than
/// 8 inner indices (the tiled kernel's step); 1 (no split) for None, the default.
pub fn forward_splits_with(rows: usize, cols: usize, inner: usize, slices: Option<usize>) -> u32 {
    let Some(slices) = slices else { return 1 };
    let room = PARTIAL_FLOATS / (rows * cols).max(1);
    slices
        .min(room)
        .min(inner.div_ceil(8))
        .clamp(1, MAX_GROUPS as usize) as u32
}

/// The most floats a forward product's slices (`forward_splits_with`) take for any batch of
/// at most `cap`: (splits, rows, m) only where splits > 1, so at most `PARTIAL_FLOATS`.
pub fn forward_partial_floats(
    rows: usize,
    inner: usize,
    cap: usize,
    slices: Option<usize>,
) -> usize {
    match slices {
        Some(n) if n > 1 && inner > 8 => (n * rows * cap).min(PARTIAL_FLOATS),
        _ => 0,
    }
}

/// How many partial sums `sum_columns` leaves per row for a batch of m.
pub fn column_chunks(m: usize) -> u32 {
    (m as u32).div_ceil(COLUMN_CHUNK).max(1)
}

impl Kernels {
    /// How many slices a (rows, cols) product over `inner` is split into (`splits_with`, at
    /// `split_groups`).
    pub fn splits(&self, rows: usize, cols: usize, inner: usize) -> u32 {
        splits_with(rows, cols, inner, self.split_groups)
    }

    /// How many slices a forward product (rows, cols) over `inner` is split into
    /// (`forward_splits_with`, at `forward_split_k`).
    pub fn forward_splits(&self, rows: usize, cols: usize, inner: usize) -> u32 {
        forward_splits_with(rows, cols, inner, self.forward_split_k)
    }

    /// matmul: `C = A·B (+ bias)`, or with `splits > 1` the partial products of A·B in
    /// `splits` slices of C's bound buffer (add them with `sum_partials`), the bias (if any)
    /// in slice 0 only, so that their sum has it once. Bind it with
    /// `matmul`; wide products run on `matmul_tiled` (see `matmul_is_tiled`), or on
    /// `matmul_coop` where it is built.
    /// A: (rows, inner), B: (inner, cols), C: (rows, cols), bias: (rows).
    pub fn matmul(
        &self,
        rec: &mut Recorder,
        bound: &Bound,
        a: Layout,
        b: Operand,
        c: Layout,
        bias: bool,
        splits: u32,
    ) {
        let (inner, cols) = b.shape();
        assert_eq!(a.cols, inner, "matmul: inner dimensions differ");
        assert_eq!((a.rows, cols), (c.rows, c.cols), "matmul: output shape");
        let (b_rs, b_cs, b_source, index_offset) = match b {
            Operand::Matrix(l) => (l.rs, l.cs, 0, 0),
            Operand::Images { index_offset, .. } => (0, 0, 1, index_offset),
            Operand::ImagesT { index_offset, .. } => (0, 0, 2, index_offset),
        };
        let tiled = matmul_is_tiled(a.rows, cols);
        let coop = self.matmul_coop.as_ref().filter(|_| tiled);
        // Slices start on a step of the kernel (the narrow one's 4, the tiled one's 8, a
        // cooperative tile), so that a slice over X's pixels (b_source 1) starts on a packed
        // image word; for other operands the rounding is harmless.
        let step = match coop {
            Some((_, config)) => config.size,
            None if tiled => 8,
            None => 4,
        };
        let params = MatmulParams {
            rows: a.rows as u32,
            cols: cols as u32,
            inner: inner as u32,
            inner_chunk: (inner as u32)
                .div_ceil(splits)
                .next_multiple_of(step)
                .max(step),
            a_rs: a.rs as u32,
            a_cs: a.cs as u32,
            b_rs: b_rs as u32,
            b_cs: b_cs as u32,
            c_rs: c.rs as u32,
            c_cs: c.cs as u32,
            b_source,
            index_offset,
            add_bias: bias as u32,
            _pad: [0; 3],
        };
        let (kernel, block_rows, block_cols) = match coop {
            // A block of 4 × 4 tiles (COOP_TILES in matmul_coop.wgsl).
            Some((kernel, config)) => {
                let block = 4 * config.size as usize;
                (kernel, block, block)
            }
            None if tiled => (&self.matmul_tiled, MATMUL_TILE, MATMUL_TILE),
            None => (&self.matmul, MATMUL_ROWS, MATMUL_COLS),
        };
        let groups = [
            cols.div_ceil(block_cols) as u32,
            a.rows.div_ceil(block_rows) as u32,
            splits,
        ];
        rec.dispatch(kernel, bound, params, groups);
    }

    /// activation: `A = g(Z)`. Z, A: (units, m), count = units·m.
    pub fn activation(&self, rec: &mut Recorder, bound: &Bound, count: usize, act: Activation) {
        let params = [count as u32, activation_code(act).value, 0, 0];
        rec.dispatch(&self.activation, bound, params, grid(count));
    }

    /// activation_grad: `dZ = dA ⊙ g'(Z)`. dA, Z, dZ: (units, m), count = units·m.
    pub fn activation_grad(
        &self,
        rec: &mut Recorder,
        bound: &Bound,
        count: usize,
        act: Activation,
    ) {
        let params = [count as u32, activation_code(act).value, 0, 0];
        rec.dispatch(&self.activation_grad, bound, params, grid(count));
    }

    /// softmax: column softmax. Z, A: (rows, m).
    pub fn softmax(&self, rec: &mut Recorder, bound: &Bound, rows: usize, m: usize) {
        rec.dispatch(&self.softmax, bound, [rows as u32, m as u32, 0, 0], grid(m));
    }

    /// output_grad: `dZ = A − Y` and per-sample (loss, correct).
    /// A, Z, dZ: (rows, m); stats: (2, m); labels of images `indices[index_offset ..]`.
    pub fn output_grad(
        &self,
        rec: &mut Recorder,
        bound: &Bound,
        rows: usize,
        m: usize,
        index_offset: u32,
    ) {
        let params = [rows as u32, m as u32, index_offset, 0];
        rec.dispatch(&self.output_grad, bound, params, grid(m));
    }

    /// sum_columns: `out = scale · Σ_columns X`, X: (rows, m), out: (rows), in two passes:
    /// `sum_columns` leaves one partial sum per chunk of columns in the partials buffer,
    /// `sum_partials` (bound to read them) adds them.
    pub fn sum_columns(
        &self,
        rec: &mut Recorder,
        columns: &Bound,
        partials: &Bound,
        rows: usize,
        m: usize,
        scale: f32,
    ) {
        assert!(rows <= MAX_GROUPS as usize, "sum_columns: too many rows");
        let chunks = column_chunks(m);
        let params = [rows as u32, m as u32, COLUMN_CHUNK, 0];
        rec.dispatch(&self.sum_columns, columns, params, [chunks, rows as u32, 1]);
        self.sum_partials(rec, partials, rows, chunks, scale);
    }

    /// sum_partials: `out[i] = scale · Σ_s partials[s·len + i]`. partials: (parts, len).
    pub fn sum_partials(
        &self,
        rec: &mut Recorder,
        bound: &Bound,
        len: usize,
        parts: u32,
        scale: f32,
    ) {
        #[repr(C)]
        #[derive(Clone, Copy, Pod, Zeroable)]
        struct Params {
            len: u32,
            parts: u32,
            scale: f32,
            _pad: u32,
        }
        let params = Params {
            len: len as u32,
            parts,
            scale,
            _pad: 0,
        };
        rec.dispatch(&self.sum_partials, bound, params, grid(len));
    }

    /// sgd_update: `P -= α · dP`, count elements.
    pub fn sgd_update(&self, rec: &mut Recorder, bound: &Bound, count: usize, alpha: f32) {
        let params = [count as u32, alpha.to_bits(), 0, 0];
        rec.dispatch(&self.sgd_update, bound, params, grid(count));
    }

    /// momentum_update: `V = β·V + dP`, `P -= α·V`, count elements.
    pub fn momentum_update(
        &self,
        rec: &mut Recorder,
        bound: &Bound,
        count: usize,
        alpha: f32,
        beta: f32,
    ) {
        let params = [count as u32, alpha.to_bits(), beta.to_bits(), 0];
        rec.dispatch(&self.momentum_update, bound, params, grid(count));
    }

    /// adam_update: `M = β1·M + (1−β1)·dP`, `V = β2·V + (1−β2)·dP²`,
    /// `P -= α·(M·c1) / (sqrt(V·c2) + ε)`, count elements.
    pub fn adam_update(
        &self,
        rec: &mut Recorder,
        bound: &Bound,
        count: usize,
        alpha: f32,
        adam: AdamParams,
    ) {
        let params = [
            count as u32,
            alpha.to_bits(),
            adam.beta1.to_bits(),
            adam.beta2.to_bits(),
            adam.eps.to_bits(),
            adam.c1.to_bits(),
            adam.c2.to_bits(),
            0,
        ];
        rec.dispatch(&self.adam_update, bound, params, grid(count));
    }

    /// augment: shifted copies of the m images listed at `indices[index_offset ..]`, as
    /// bytes (196 words per image); shifts: (dx, dy) per image as two i32.
    pub fn augment(&self, rec: &mut Recorder, bound: &Bound, m: usize, index_offset: u32) {
        let words = m * crate::data::PIXELS / 4;
        let params = [m as u32, index_offset, 0, 0]; // shifts from the start of their buffer
        rec.dispatch(&self.augment, bound, params, grid(words));
    }

    /// warp: affine or elastic copies of the m images listed at `indices[index_offset ..]`,
    /// as bytes (196 words per image); warps: `shifted::WarpBuffer`'s records and fields.
    pub fn warp(&self, rec: &mut Recorder, bound: &Bound, m: usize, index_offset: u32) {
        let words = m * crate::data::PIXELS / 4;
        let params = [m as u32, index_offset, 0, 0]; // warps from the start of their buffer
        rec.dispatch(&self.warp, bound, params, grid(words));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_k_aims_at_whole_waves_when_asked() {
        // dW1 of 784-512-10 at full batch: 4 × 7 = 28 tiles; by default 10 slices (the
        // partial products' room), 280 workgroups: two waves of 132 and 16 more.
        assert_eq!(splits_for(512, 784, 60_000), 10);
        // Two waves of 132 multiprocessors: 9 slices (252); one wave: 4 (112).
        assert_eq!(splits_with(512, 784, 60_000, Some(264)), 9);
        assert_eq!(splits_with(512, 784, 60_000, Some(132)), 4);
        // Never more than by default (the scratch is sized so), never fewer than one slice.
        assert_eq!(splits_with(512, 784, 60_000, Some(100_000)), 10);
        assert_eq!(splits_with(512, 784, 60_000, Some(1)), 1);
        // The narrow kernel's products are not affected.
        assert_eq!(
            splits_with(10, 784, 60_000, Some(1)),
            splits_for(10, 784, 60_000)
        );
    }
}
