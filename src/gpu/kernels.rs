//! One Rust wrapper per WGSL kernel in `shaders/`, named like the file and like its CPU twin
//! in `cpu::ops`. A wrapper takes the shapes, fills the kernel's uniform parameters and
//! records one dispatch (two for the split-K product and the column sums: their second pass is
//! `sum_partials`) into a recording (`recording.rs`), which an executor carries out.
//!
//! Binding convention, in every shader: binding 0 is the kernel's uniform `Params`, bindings
//! 1, 2, … are its storage buffers in the order the shader declares them, those it reads before
//! those it writes (`KERNELS` says how many of each; tests/integration/shaders.rs checks that
//! against the WGSL).

use bytemuck::{Pod, Zeroable};

use crate::error::Result;
use crate::gpu::coop::CoopConfig;
use crate::gpu::recording::{
    Access, BindLayout, Buf, Entry, Group, Pipe, PipelineSpec, Source, Tape, Usage, MAX_GROUPS,
};
use crate::gpu::shaders::{self, activation_code, ACTIVATION_CODES};
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
/// The split-K products' partial sums stay under this many floats (16 MiB).
const PARTIAL_FLOATS: usize = 1 << 22;
/// Each kernel's uniform parameters sit in their own 256-byte slot of one buffer
/// (256 is the default `min_uniform_buffer_offset_alignment`).
pub const UNIFORM_SLOT: u64 = 256;

/// Every one-kernel shader: (name, storage buffers it reads, storage buffers it writes). Its
/// bindings are the uniform `Params` at 0, then the read ones, then the written ones.
pub const KERNELS: [(&str, usize, usize); 12] = [
    ("matmul", 5, 1),
    ("activation", 1, 1),
    ("activation_grad", 2, 1),
    ("softmax", 1, 1),
    ("output_grad", 4, 2),
    ("sum_columns", 1, 1),
    ("sum_partials", 1, 1),
    ("sgd_update", 1, 1),
    ("momentum_update", 1, 2),
    ("adam_update", 1, 3),
    ("augment", 3, 1),
    ("warp", 3, 1),
];

/// The layout of kernel `name`'s bindings (`KERNELS`).
pub fn kernel_bindings(name: &str) -> Vec<(u32, Access)> {
    let &(_, reads, writes) = KERNELS
        .iter()
        .find(|k| k.0 == name)
        .expect("a kernel of KERNELS");
    let mut entries = vec![(0, Access::Uniform)];
    let accesses =
        std::iter::repeat_n(Access::Read, reads).chain(std::iter::repeat_n(Access::Write, writes));
    entries.extend(accesses.enumerate().map(|(i, a)| (i as u32 + 1, a)));
    entries
}

/// The one layout of matmul's kernels (narrow, tiled, cooperative): its parameters, then A, B,
/// the images, their indices and the bias (read) and C (written).
pub const MATMUL_BINDINGS: [(u32, Access); 7] = [
    (0, Access::Uniform),
    (1, Access::Read),
    (2, Access::Read),
    (3, Access::Read),
    (4, Access::Read),
    (5, Access::Read),
    (6, Access::Write),
];

/// How the per-operation kernels are chosen and split on an adapter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelConfig {
    /// The cooperative-matrix kernel's tiles (`--matmul coop` on an adapter that has them), which
    /// takes the tiled kernel's products.
    pub coop: Option<CoopConfig>,
    /// `--split-k N`: the workgroups the tiled kernel's split-K products aim at, at most
    /// (None: about `TILED_GROUPS`, rounded up; see `splits_with`).
    pub split_groups: Option<usize>,
    /// `--forward-split-k N`: the forward products (`Z = W·A + b`) split their inner dimension
    /// into at most N slices (see `forward_splits_with`); None, as by default: never split.
    pub forward_split_k: Option<usize>,
}

impl KernelConfig {
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
}

/// The pipeline of matmul's cooperative kernel fitted to `config`.
pub fn coop_spec(config: CoopConfig, layout: BindLayout) -> PipelineSpec {
    PipelineSpec {
        label: "matmul coop",
        source: Source::Coop(config),
        entry: "coop",
        layout,
        constants: Vec::new(),
        zero_workgroup_memory: true,
    }
}

/// A kernel's pipeline in a recording, and the layout of its bind groups (the kernels of one
/// shader share it, so that one bind group serves each of them).
pub struct Kernel {
    pub name: &'static str,
    pub pipeline: Pipe,
    layout: BindLayout,
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
    /// As `KernelConfig` says.
    pub split_groups: Option<usize>,
    pub forward_split_k: Option<usize>,
}

/// A kernel's bind group with its buffers and its uniform slot.
pub struct Bound {
    group: Group,
    slot: u64,
}

/// The uniform buffer holding every bound kernel's parameters, and its host copy, written
/// whole before each submit.
pub struct Uniforms {
    pub buffer: Buf,
    pub host: Vec<u8>,
    next_slot: u64,
}

impl Uniforms {
    pub fn new(tape: &mut Tape, slots: u64) -> Result<Uniforms> {
        let size = slots * UNIFORM_SLOT;
        Ok(Uniforms {
            buffer: tape.buffer("kernel parameters", size, Usage::Uniform)?,
            host: vec![0; size as usize],
            next_slot: 0,
        })
    }
}

impl Kernel {
    /// Entry point `entry` of shader `name`, with these override constants and layout.
    fn declare(
        tape: &mut Tape,
        label: &'static str,
        source: Source,
        entry: &'static str,
        layout: BindLayout,
        constants: Vec<(&'static str, f64)>,
    ) -> Kernel {
        let pipeline = tape.pipeline(PipelineSpec {
            label,
            source,
            entry,
            layout,
            constants,
            zero_workgroup_memory: true,
        });
        Kernel {
            name: label,
            pipeline,
            layout,
        }
    }

    /// Entry point `main` of shader `name`, with these override constants.
    pub fn main(
        tape: &mut Tape,
        name: &'static str,
        constants: Vec<(&'static str, f64)>,
    ) -> Kernel {
        let layout = tape.layout(name, &kernel_bindings(name));
        Kernel::declare(tape, name, Source::Shader(name), "main", layout, constants)
    }

    /// Binds a new uniform slot and `buffers` (in the shader's binding order, from binding 1).
    pub fn bind(&self, tape: &mut Tape, uniforms: &mut Uniforms, buffers: &[Buf]) -> Bound {
        let slot = uniforms.next_slot;
        uniforms.next_slot += 1;
        self.bind_slot(tape, uniforms, slot, buffers)
    }

    /// Binds `buffers` reusing the uniform slot of `old`, which this binding replaces.
    pub fn rebind(
        &self,
        tape: &mut Tape,
        uniforms: &Uniforms,
        old: &Bound,
        buffers: &[Buf],
    ) -> Bound {
        self.bind_slot(tape, uniforms, old.slot, buffers)
    }

    fn bind_slot(&self, tape: &mut Tape, uniforms: &Uniforms, slot: u64, buffers: &[Buf]) -> Bound {
        assert!(
            (slot * UNIFORM_SLOT) < uniforms.host.len() as u64,
            "too few uniform slots"
        );
        let mut entries = vec![Entry::range(
            0,
            uniforms.buffer,
            slot * UNIFORM_SLOT,
            UNIFORM_SLOT,
        )];
        for (i, &buffer) in buffers.iter().enumerate() {
            entries.push(Entry::whole(i as u32 + 1, buffer));
        }
        let group = tape.group(self.name, self.layout, entries);
        Bound { group, slot }
    }
}

impl Kernels {
    /// Every kernel's pipeline, into `tape`; matmul's cooperative one too where `config` says
    /// how to fit it.
    pub fn declare(tape: &mut Tape, config: &KernelConfig) -> Kernels {
        let activations: Vec<_> = shaders::constants(&ACTIVATION_CODES).collect();
        let matmul_layout = tape.layout("matmul bindings", &MATMUL_BINDINGS);
        let matmul = |tape: &mut Tape, label: &'static str, entry: &'static str| {
            Kernel::declare(
                tape,
                label,
                Source::Shader("matmul"),
                entry,
                matmul_layout,
                Vec::new(),
            )
        };
        let matmul_coop = config.coop.map(|coop| {
            let pipeline = tape.pipeline(coop_spec(coop, matmul_layout));
            let kernel = Kernel {
                name: "matmul coop",
                pipeline,
                layout: matmul_layout,
            };
            (kernel, coop)
        });
        Kernels {
            matmul: matmul(tape, "matmul", "main"),
            matmul_tiled: matmul(tape, "matmul tiled", "tiled"),
            matmul_coop,
            activation: Kernel::main(tape, "activation", activations.clone()),
            activation_grad: Kernel::main(tape, "activation_grad", activations),
            softmax: Kernel::main(tape, "softmax", Vec::new()),
            output_grad: Kernel::main(tape, "output_grad", Vec::new()),
            sum_columns: Kernel::main(tape, "sum_columns", Vec::new()),
            sum_partials: Kernel::main(tape, "sum_partials", Vec::new()),
            sgd_update: Kernel::main(tape, "sgd_update", Vec::new()),
            momentum_update: Kernel::main(tape, "momentum_update", Vec::new()),
            adam_update: Kernel::main(tape, "adam_update", Vec::new()),
            augment: Kernel::main(tape, "augment", Vec::new()),
            warp: Kernel::main(tape, "warp", Vec::new()),
            split_groups: config.split_groups,
            forward_split_k: config.forward_split_k,
        }
    }
}

/// Records dispatches into a recording; `submit` writes the parameters they use (for the
/// per-operation kernels, whose parameters sit in `Uniforms`) and ends the submit.
pub struct Recorder<'a> {
    tape: &'a mut Tape,
    uniforms: Option<&'a mut Uniforms>,
}

impl<'a> Recorder<'a> {
    pub fn new(tape: &'a mut Tape, uniforms: &'a mut Uniforms) -> Recorder<'a> {
        Recorder {
            tape,
            uniforms: Some(uniforms),
        }
    }

    /// A recorder for kernels that bring their own parameters (the fused step's slots).
    pub fn without_uniforms(tape: &'a mut Tape) -> Recorder<'a> {
        Recorder {
            tape,
            uniforms: None,
        }
    }

    fn dispatch<P: Pod>(&mut self, kernel: &Kernel, bound: &Bound, params: P, groups: [u32; 3]) {
        let uniforms = self
            .uniforms
            .as_mut()
            .expect("a recorder with uniforms for the per-operation kernels");
        let at = (bound.slot * UNIFORM_SLOT) as usize;
        let bytes = bytemuck::bytes_of(&params);
        uniforms.host[at..at + bytes.len()].copy_from_slice(bytes);
        self.run(kernel.name, kernel.pipeline, bound.group, None, groups);
    }

    /// Records one dispatch of `pipeline` with `group` at the dynamic offset `offset` (if its
    /// layout has one), as `Tape::dispatch` records it.
    pub fn run(
        &mut self,
        label: &'static str,
        pipeline: Pipe,
        group: Group,
        offset: Option<u32>,
        groups: [u32; 3],
    ) {
        self.tape.dispatch(label, pipeline, group, offset, groups);
    }

    /// Copies bytes between buffers after the dispatches recorded so far.
    pub fn copy(&mut self, from: Buf, from_offset: u64, to: Buf, to_offset: u64, bytes: u64) {
        self.tape.copy(from, from_offset, to, to_offset, bytes);
    }

    /// The recording, for writes of the caller's own.
    pub fn tape(&mut self) -> &mut Tape {
        self.tape
    }

    /// Writes the parameters (if any) and ends the submit.
    pub fn submit(self) {
        if let Some(uniforms) = self.uniforms {
            let host = uniforms.host.clone();
            self.tape.write_values(uniforms.buffer, 0, &host);
        }
        self.tape.submit();
    }
}

/// warp.wgsl's workgroups for m images: one each, over two dimensions where there are many.
pub fn warp_grid(m: usize) -> [u32; 3] {
    grid(m * THREADS as usize)
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
    /// as bytes (196 words per image), each drawn from the key in `copies::WarpBuffer`'s
    /// record; a workgroup per image (`warp_grid`).
    pub fn warp(&self, rec: &mut Recorder, bound: &Bound, m: usize, index_offset: u32) {
        let params = [m as u32, index_offset, 0, 0]; // the record at the buffer's start
        rec.dispatch(&self.warp, bound, params, warp_grid(m));
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
