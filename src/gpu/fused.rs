//! The GPU's fast path (shaders/fused.wgsl), the twin of `cpu/fused.rs`: a training step in two
//! dispatches (three with `--augment`) instead of one per operation.
//!
//! - `gradients`: workgroup g takes a contiguous share of the batch and runs it block by block
//!   (`block` samples): the forward pass, softmax, `dZ = A − Y` and the backward pass, with the
//!   block's activations in workgroup memory, adding its dW, db and (loss, correct) into a
//!   slice of `partials` of its own. Each image's bytes are read from memory once per step.
//! - `update`: `dP = 1/m · Σ_slices partials`, then the optimizer, four parameters per thread;
//!   the step's (loss, correct) go to its slot of the history.
//! - `logits`: the forward pass alone, for evaluation.
//!
//! Each step's values (its batch, α, Adam's corrections) go into a 256-byte slot of one
//! uniform buffer, which its dispatches pick with a dynamic offset. So a run of steps is
//! recorded into one command buffer and submitted at once, with no host wait between them
//! (`SLOTS` at most, starting small after every wait so the GPU is soon busy again).
//!
//! All parameters live in one buffer (`params::ParamLayout::packed`), so that the update is one
//! dispatch over all of them. The network's shape is fixed when the pipelines are built (WGSL overrides).
//! Covered: one or two hidden layers of at most 64 units (`unsupported` says why not); the
//! backend runs the per-operation kernels (`reference.rs`) for the rest.

use bytemuck::{Pod, Zeroable};

use crate::data::PIXELS;
use crate::error::{Error, Result};
use crate::gpu::copies::{copies_buffer, Copies, ShiftBuffer, WarpBuffer};
use crate::gpu::kernels::{grid, warp_grid, Recorder};
use crate::gpu::recording::{Access, BindLayout, Buf, Data as Bytes, Entry, Group, Pipe};
use crate::gpu::recording::{PipelineSpec, Region, Source, Tape, Usage};
use crate::gpu::shaders::{self, activation_code, optimizer_code};
use crate::gpu::shaders::{ACTIVATION_CODES, OPTIMIZER_CODES};
use crate::gpu::{Data, GpuContext, StepArgs};
use crate::model::Model;
use crate::optimizer::{adam_corrections, Optimizer};
use crate::params::ParamLayout;

/// The widest hidden layer the fused step takes: its threads hold up to 16 units each, with at
/// least 4 threads per sample.
pub const MAX_HIDDEN: usize = 64;
/// The most hidden layers the fused step takes.
pub const MAX_HIDDEN_LAYERS: usize = 2;
/// Threads per workgroup (as in the shader).
pub(crate) const THREADS: usize = 256;
/// `update` gives each parameter vec4 this many threads when a step has more partial slices
/// than that (one otherwise); `WIDE_UPDATE_LANES` with `FusedVariant::wide_update`.
pub(crate) const REDUCE_LANES: usize = 8;
pub(crate) const WIDE_UPDATE_LANES: usize = 32;
/// The uniform view of the parameters (as in the shader): 64 KiB, the default limit of a
/// uniform binding. When all the parameters fit in it, the kernels read them from it.
pub(crate) const UNIFORM_BYTES: u64 = 65_536;
/// Steps (and evaluation chunks) recorded into one submit at most: one uniform slot each.
pub(crate) const SLOTS: usize = 64;
pub(crate) const SLOT_BYTES: u64 = 256;
/// The partial slices of one step stay under this many floats (64 MiB).
pub(crate) const PARTIAL_FLOATS: usize = 1 << 24;
/// With `--augment`, the shifts uploaded for one submit stay under this many images.
pub(crate) const SHIFTS_PER_SUBMIT: usize = 1 << 18;
/// How the fused step splits a batch, and which of its candidate variants it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tiling {
    /// Samples per block: 8, 16, 32 or 64 (256 threads, so 32, 16, 8 or 4 per sample). The
    /// block's activations must fit the adapter's workgroup memory.
    pub block: usize,
    /// Most workgroups, so partial slices, per step: more keep a large GPU busy, fewer keep
    /// the slices that `update` adds small.
    pub max_groups: usize,
    pub variant: FusedVariant,
}

impl Default for Tiling {
    fn default() -> Tiling {
        Tiling {
            block: 32,
            max_groups: 512,
            variant: FusedVariant::default(),
        }
    }
}

/// The fused step's candidate improvements (issue 22), each a switch that is off by default
/// until a GPU has measured it (`bench --fused`); shaders/fused.wgsl's header says what each
/// does and why it might pay. Each computes the same sums, some in another order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FusedVariant {
    /// dW1 by words (4 pixels) rather than quads: each byte converted once, on 7 warps not 5.
    pub dw1_spread: bool,
    /// Each sample's label loaded with its image index, before the forward pass.
    pub early_labels: bool,
    /// The block's (loss, correct) and db added by trees rather than by a few threads' loops.
    pub tree_sums: bool,
    /// byte → float by a bit trick rather than an integer → float conversion.
    pub fast_bytes: bool,
    /// `update` with 32 threads per parameter vec4, four independent sums each.
    pub wide_update: bool,
}

impl FusedVariant {
    /// Every switch's name (as `bench --fused` spells it), in a fixed order.
    pub const NAMES: [&'static str; 5] = [
        "dw1-spread",
        "early-labels",
        "tree-sums",
        "fast-bytes",
        "wide-update",
    ];

    /// Every switch on.
    pub fn all() -> FusedVariant {
        FusedVariant {
            dw1_spread: true,
            early_labels: true,
            tree_sums: true,
            fast_bytes: true,
            wide_update: true,
        }
    }

    /// Each switch: its name, its override constant in fused.wgsl, whether it is on.
    fn switches(&self) -> [(&'static str, &'static str, bool); 5] {
        let on = [
            self.dw1_spread,
            self.early_labels,
            self.tree_sums,
            self.fast_bytes,
            self.wide_update,
        ];
        let constants = [
            "DW1_SPREAD",
            "EARLY_LABELS",
            "TREE_SUMS",
            "FAST_BYTES",
            "WIDE_UPDATE",
        ];
        std::array::from_fn(|k| (Self::NAMES[k], constants[k], on[k]))
    }

    /// The names of the switches that are on (none: the default kernel).
    pub fn names(&self) -> Vec<&'static str> {
        self.switches()
            .iter()
            .filter(|s| s.2)
            .map(|s| s.0)
            .collect()
    }

    /// "none", "all", or the names of those on, comma-separated.
    pub fn describe(&self) -> String {
        match self.names().len() {
            0 => "none".into(),
            5 => "all".into(),
            _ => self.names().join(","),
        }
    }

    /// A comma-separated list of switch names, `all` or `none`; the error names the unknown
    /// one and lists the valid ones.
    pub fn parse(list: &str) -> std::result::Result<FusedVariant, String> {
        let mut v = FusedVariant::default();
        for name in list.split(',').map(str::trim) {
            match name {
                "none" => {}
                "all" => v = FusedVariant::all(),
                _ => match Self::NAMES.iter().position(|&n| n == name) {
                    Some(0) => v.dw1_spread = true,
                    Some(1) => v.early_labels = true,
                    Some(2) => v.tree_sums = true,
                    Some(3) => v.fast_bytes = true,
                    Some(_) => v.wide_update = true,
                    None => {
                        return Err(format!(
                            "{name:?} is not a switch of the fused step: all, none, or some of {}",
                            Self::NAMES.join(", ")
                        ))
                    }
                },
            }
        }
        Ok(v)
    }

    /// The override constants of the switches that are on: none for the default, so that
    /// its pipelines are built from exactly the constants they were before the switches.
    pub fn constants(&self) -> Vec<(&'static str, f64)> {
        self.switches()
            .iter()
            .filter(|s| s.2)
            .map(|s| (s.1, 1.0))
            .collect()
    }
}

/// Blocks of this many workgroups or more keep a large GPU's SMs busy (Hopper has 132);
/// `block_for_batch` picks smaller blocks for batches that would give fewer.
const AUTO_GROUPS: usize = 128;

/// `bench --block auto`: the largest block, at most `largest`, that splits `m` samples into at
/// least AUTO_GROUPS workgroups; 8 where none does (small batches: 8 workgroups at 64).
pub fn block_for_batch(m: usize, largest: usize) -> usize {
    [64, 32, 16, 8]
        .into_iter()
        .filter(|&b| b <= largest)
        .find(|&b| m.div_ceil(b) >= AUTO_GROUPS)
        .unwrap_or(8)
}

/// Workgroup memory `gradients` needs for blocks of `tiling.block` samples: Z of every layer
/// (each padded to vec4s), the slices' partial sums of Z1, and per sample where its image
/// starts, its (loss, correct), and with `early_labels` its label.
fn workgroup_bytes(model: &Model, tiling: Tiling) -> usize {
    let (block, labels) = (tiling.block, tiling.variant.early_labels);
    let vec4s: usize = model.layers.iter().map(|l| l.outputs.div_ceil(4)).sum();
    16 * block * vec4s + 16 * THREADS + 12 * block + if labels { 4 * block } else { 0 }
}

/// `tiling` with no more workgroups than keep the partial slices (of `slice_vec4s` vec4s)
/// under `PARTIAL_FLOATS`.
pub(crate) fn within_partials(tiling: Tiling, slice_vec4s: usize) -> Tiling {
    Tiling {
        max_groups: tiling
            .max_groups
            .clamp(1, (PARTIAL_FLOATS / (4 * slice_vec4s)).max(1)),
        ..tiling
    }
}

/// Why the fused step cannot run `model` in blocks of `tiling.block` on this device; None
/// when it can.
pub fn unsupported(ctx: &GpuContext, model: &Model, tiling: Tiling) -> Option<String> {
    let have = ctx.device.limits().max_compute_workgroup_storage_size as usize;
    unsupported_with(model, tiling, have)
}

/// `unsupported` on an adapter with `have` bytes of workgroup memory (a browser's, for the
/// `serve` page's plan).
pub(crate) fn unsupported_with(model: &Model, tiling: Tiling, have: usize) -> Option<String> {
    let hidden = model.hidden();
    if !(1..=MAX_HIDDEN_LAYERS).contains(&hidden.len()) || hidden.iter().any(|&h| h > MAX_HIDDEN) {
        return Some(format!(
            "the fused GPU step covers one or two hidden layers of at most {MAX_HIDDEN} units, \
             not {hidden:?}"
        ));
    }
    if ![8, 16, 32, 64].contains(&tiling.block) {
        return Some(format!(
            "the fused GPU step takes blocks of 8, 16, 32 or 64 samples, not {}",
            tiling.block
        ));
    }
    let need = workgroup_bytes(model, tiling);
    if need > have {
        return Some(format!(
            "blocks of {} samples need {need} bytes of workgroup memory; the adapter has {have}",
            tiling.block
        ));
    }
    None
}

/// The tiling the fused step uses on this device: blocks of 32 samples, or fewer where the
/// adapter's workgroup memory does not hold their activations.
pub fn tiling_for(ctx: &GpuContext, model: &Model) -> Tiling {
    let have = ctx.device.limits().max_compute_workgroup_storage_size as usize;
    tiling_with(model, have)
}

/// `tiling_for` on an adapter with `have` bytes of workgroup memory.
pub(crate) fn tiling_with(model: &Model, have: usize) -> Tiling {
    let default = Tiling::default();
    [32, 16, 8]
        .into_iter()
        .map(|block| Tiling { block, ..default })
        .find(|&t| unsupported_with(model, t, have).is_none())
        .unwrap_or(default)
}

/// One step's values, in its uniform slot (as `Step` in fused.wgsl; `augment` reads the
/// first three).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
pub(crate) struct Step {
    pub(crate) m: u32,
    pub(crate) first: u32,
    /// Where this step's shifts or warps start in their buffer (augment's and warp's).
    pub(crate) copies_at: u32,
    /// 1: the step reads the batch's copies (shifted or warped), not the pool.
    pub(crate) copied: u32,
    pub(crate) per_group: u32,
    pub(crate) groups: u32,
    pub(crate) history: u32,
    pub(crate) out: u32,
    pub(crate) alpha: f32,
    pub(crate) scale: f32,
    pub(crate) c1: f32,
    pub(crate) c2: f32,
    pub(crate) beta1: f32,
    pub(crate) beta2: f32,
    pub(crate) eps: f32,
    pub(crate) optimizer: u32,
    pub(crate) lanes: u32,
    pub(crate) _pad: [u32; 3],
}

impl Step {
    /// A training step over the batch of `args`, split as `tiling` says, updating with
    /// `optimizer` (reading the pool: `copied` 0).
    pub(crate) fn train(args: &StepArgs, tiling: Tiling, optimizer: Optimizer) -> Step {
        let m = args.m;
        let (groups, per_group) = split(m, tiling);
        let (beta1, beta2, eps) = match optimizer {
            Optimizer::Sgd => (0.0, 0.0, 0.0),
            Optimizer::Momentum { beta } => (beta, 0.0, 0.0),
            Optimizer::Adam { beta1, beta2, eps } => (beta1, beta2, eps),
        };
        let (c1, c2) = match optimizer {
            Optimizer::Adam { beta1, beta2, .. } => adam_corrections(beta1, beta2, args.t),
            _ => (1.0, 1.0),
        };
        let lanes = if tiling.variant.wide_update && groups > WIDE_UPDATE_LANES {
            WIDE_UPDATE_LANES
        } else if groups > REDUCE_LANES {
            REDUCE_LANES
        } else {
            1
        };
        Step {
            m: m as u32,
            first: args.first,
            per_group: per_group as u32,
            groups: groups as u32,
            lanes: lanes as u32,
            history: args.history,
            alpha: args.alpha,
            scale: 1.0 / m as f32,
            c1,
            c2,
            beta1,
            beta2,
            eps,
            optimizer: optimizer_code(optimizer).value,
            ..Step::default()
        }
    }
}

/// The workgroups of `update` over parameters of `param_vec4s` vec4s (and the (loss, correct)
/// vec4), `lanes` threads each.
pub(crate) fn update_groups(param_vec4s: usize, lanes: u32) -> u32 {
    (param_vec4s + 1).div_ceil(THREADS / lanes as usize) as u32
}

/// The workgroups of a step over `m` samples: as many as blocks, at most `max_groups`, each
/// given `per_group` samples (none left empty). Returns (groups, per_group).
pub fn split(m: usize, tiling: Tiling) -> (usize, usize) {
    let groups = m.div_ceil(tiling.block).clamp(1, tiling.max_groups.max(1));
    let per_group = m.div_ceil(groups);
    (m.div_ceil(per_group), per_group)
}

struct Pipelines {
    gradients: Pipe,
    logits: Pipe,
    update: Pipe,
    /// augment.wgsl, reading its parameters from the step's slot.
    augment: Pipe,
    /// warp.wgsl, likewise (with augment's bindings).
    warp: Pipe,
}

/// `--augment affine|elastic`'s warps and warp's bindings (writing into `Copied`'s copies),
/// made on the first warped step.
struct Warped {
    /// One record of warps per step of a submit (a key and strengths each, so every slot has
    /// one).
    batch: WarpBuffer,
    /// Regions used by the steps recorded since the last submit.
    used: usize,
    warp: Group,
}

/// A batch's copies (shifted, warped, or `classify`'s images), the shifts, and the bindings
/// that use them: made on the first shifted or warped step (or `classify`).
struct Copied {
    images: Buf,
    /// One region of shifts per step of a submit.
    shifts: ShiftBuffer,
    /// Regions used by the steps recorded since the last submit.
    used: usize,
    /// augment, writing the shifted copies; the step's kernels, reading the copies.
    augment: Group,
    train: Group,
}

/// The fused step's buffers.
#[derive(Clone, Copy)]
struct Buffers {
    data: Data,
    /// Each step's (loss, correct), in its slot of the history; the logits of `logits` and
    /// `classify`.
    history: Buf,
    logits_out: Buf,
    /// W and b of every layer, laid out as `ParamLayout::packed` says.
    params: Buf,
    /// One slice per workgroup of a step: its gradients, then its (loss, correct).
    partials: Buf,
    /// The optimizer's state (V, or M then V).
    state: Buf,
    /// The uniform slots of the steps of a submit.
    slots: Buf,
}

pub struct Fused {
    layout: ParamLayout,
    tiling: Tiling,
    capacity: usize,
    /// vec4s of the parameters (a partial slice holds their gradients, then its (loss, correct)).
    param_vec4s: usize,
    pipelines: Pipelines,
    layouts: Layouts,
    buffers: Buffers,
    optimizer: Optimizer,
    host_slots: Vec<u8>,
    /// `gradients` and `logits` on the pool's images; `update`.
    pool: Group,
    update: Group,
    copied: Option<Copied>,
    warped: Option<Warped>,
    /// Whether steps are recorded and not yet submitted, the slots they use, and how many to
    /// record before the next submit (doubling up to SLOTS, back to 1 after every wait).
    pending: bool,
    used: usize,
    limit: usize,
}

/// The bindings of `gradients` and `logits`, of `update`, and of `augment` (and `warp`).
pub(crate) const FORWARD_BINDINGS: [(u32, Access); 8] = [
    (0, Access::Slot),
    (1, Access::Read),    // images
    (2, Access::Read),    // index lists
    (3, Access::Read),    // labels
    (4, Access::Read),    // parameters
    (5, Access::Uniform), // parameters' uniform view
    (6, Access::Write),   // partial slices
    (7, Access::Write),   // logits
];
pub(crate) const UPDATE_BINDINGS: [(u32, Access); 5] = [
    (0, Access::Slot),
    (8, Access::Write),  // parameters
    (9, Access::Read),   // partial slices
    (10, Access::Write), // optimizer state
    (11, Access::Write), // history
];
pub(crate) const AUGMENT_BINDINGS: [(u32, Access); 5] = [
    (0, Access::Slot),
    (1, Access::Read),  // images
    (2, Access::Read),  // index lists
    (3, Access::Read),  // shifts (warp: the warps)
    (4, Access::Write), // the batch's copies
];

/// The layouts of `FORWARD_BINDINGS`, `UPDATE_BINDINGS` and `AUGMENT_BINDINGS`.
struct Layouts {
    forward: BindLayout,
    update: BindLayout,
    augment: BindLayout,
}

impl Layouts {
    fn new(tape: &mut Tape) -> Layouts {
        Layouts {
            forward: tape.layout("fused gradients and logits", &FORWARD_BINDINGS),
            update: tape.layout("fused update", &UPDATE_BINDINGS),
            augment: tape.layout("augment (fused step)", &AUGMENT_BINDINGS),
        }
    }
}

/// A bind group of `layout`: a step's slot of `slots` at binding 0, then `entries`.
fn slot_group(
    tape: &mut Tape,
    label: &'static str,
    layout: BindLayout,
    slots: Buf,
    entries: &[Entry],
) -> Group {
    let slot = Entry::range(0, slots, 0, std::mem::size_of::<Step>() as u64);
    tape.group(label, layout, [&[slot], entries].concat())
}

/// `gradients` and `logits` reading `images` (the pool's, or the batch's copies).
fn forward_group(tape: &mut Tape, layouts: &Layouts, b: &Buffers, images: Buf) -> Group {
    slot_group(
        tape,
        "fused gradients and logits",
        layouts.forward,
        b.slots,
        &[
            Entry::whole(1, images),
            Entry::whole(2, b.data.indices),
            Entry::whole(3, b.data.labels),
            Entry::whole(4, b.params),
            Entry::range(5, b.params, 0, UNIFORM_BYTES),
            Entry::whole(6, b.partials),
            Entry::whole(7, b.logits_out),
        ],
    )
}

fn update_group(tape: &mut Tape, layouts: &Layouts, b: &Buffers) -> Group {
    slot_group(
        tape,
        "fused update",
        layouts.update,
        b.slots,
        &[
            Entry::whole(8, b.params),
            Entry::whole(9, b.partials),
            Entry::whole(10, b.state),
            Entry::whole(11, b.history),
        ],
    )
}

/// The parameter buffer, holding `model` laid out as `layout` says: at least the uniform
/// view's 64 KiB, which binds its start.
fn upload_params(tape: &mut Tape, layout: &ParamLayout, model: &Model) -> Result<Buf> {
    let bytes = (4 * layout.floats as u64).max(UNIFORM_BYTES);
    let params = tape.buffer("parameters", bytes, Usage::StorageUniform)?;
    tape.write_values(params, 0, &layout.pack(model));
    Ok(params)
}

impl Fused {
    /// Uploads `model` into one parameter buffer and declares the pipelines for its shape.
    /// `history` receives each step's (loss, correct); `logits_out` the logits of `logits`.
    pub fn new(
        tape: &mut Tape,
        model: &Model,
        data: Data,
        capacity: usize,
        (history, logits_out): (Buf, Buf),
        tiling: Tiling,
    ) -> Result<Fused> {
        if let Some(why) = unsupported_with(model, tiling, tape.limits().workgroup_storage) {
            return Err(Error::Config(why));
        }
        let layout = ParamLayout::packed(model);
        let param_vec4s = layout.floats / 4;
        let slice_vec4s = param_vec4s + 1;
        let tiling = within_partials(tiling, slice_vec4s);
        let layouts = Layouts::new(tape);
        let pipelines = Pipelines::new(tape, model, &layout, tiling, &layouts);
        let buffers = Buffers {
            data,
            history,
            logits_out,
            params: upload_params(tape, &layout, model)?,
            partials: tape.storage(
                "partial gradients",
                16 * (tiling.max_groups * slice_vec4s) as u64,
            )?,
            state: tape.storage("optimizer state (none)", 16)?,
            slots: tape.buffer("step slots", SLOTS as u64 * SLOT_BYTES, Usage::Uniform)?,
        };
        let mut fused = Fused {
            pool: forward_group(tape, &layouts, &buffers, data.images),
            update: update_group(tape, &layouts, &buffers),
            layout,
            tiling,
            capacity,
            param_vec4s,
            pipelines,
            layouts,
            buffers,
            optimizer: Optimizer::Sgd,
            host_slots: vec![0; SLOTS * SLOT_BYTES as usize],
            copied: None,
            warped: None,
            pending: false,
            used: 0,
            limit: 1,
        };
        fused.set_optimizer(tape, Optimizer::Sgd)?;
        Ok(fused)
    }

    pub fn tiling(&self) -> Tiling {
        self.tiling
    }

    fn make_copied(&self, tape: &mut Tape) -> Result<Copied> {
        let cap = self.capacity;
        let regions = (SHIFTS_PER_SUBMIT / cap).clamp(1, SLOTS);
        let images = copies_buffer(tape, cap)?;
        let shifts = ShiftBuffer::new(tape, cap, regions, "shifts of a submit's steps")?;
        let b = &self.buffers;
        let augment = slot_group(
            tape,
            "augment (fused step)",
            self.layouts.augment,
            b.slots,
            &[
                Entry::whole(1, b.data.images),
                Entry::whole(2, b.data.indices),
                Entry::whole(3, shifts.shifts),
                Entry::whole(4, images),
            ],
        );
        let train = forward_group(tape, &self.layouts, b, images);
        Ok(Copied {
            images,
            shifts,
            used: 0,
            augment,
            train,
        })
    }

    /// The warps' buffer and warp's bindings, writing into the copies (made first).
    fn make_warped(&mut self, tape: &mut Tape) -> Result<Warped> {
        if self.copied.is_none() {
            self.copied = Some(self.make_copied(tape)?);
        }
        let batch = WarpBuffer::new(tape, SLOTS)?;
        let (b, s) = (&self.buffers, self.copied.as_ref().expect("made above"));
        let warp = slot_group(
            tape,
            "warp (fused step)",
            self.layouts.augment,
            b.slots,
            &[
                Entry::whole(1, b.data.images),
                Entry::whole(2, b.data.indices),
                Entry::whole(3, batch.warps),
                Entry::whole(4, s.images),
            ],
        );
        Ok(Warped {
            batch,
            used: 0,
            warp,
        })
    }

    /// Uploads a step's shifts or warps into a region of their own (the write lands at the
    /// next submit, before the steps recorded with it, and no other pending step uses the
    /// region), making their buffers on first use; returns the region's start.
    fn upload(&mut self, tape: &mut Tape, copies: Copies) -> Result<u32> {
        if matches!(copies, Copies::Warps(_)) && self.warped.is_none() {
            self.warped = Some(self.make_warped(tape)?);
        }
        if self.copied.is_none() {
            self.copied = Some(self.make_copied(tape)?);
        }
        self.make_room(tape, Some(copies));
        Ok(match copies {
            Copies::Shifts(shifts) => {
                let s = self.copied.as_mut().expect("made above");
                s.used += 1;
                s.shifts.write(tape, s.used - 1, shifts)
            }
            Copies::Warps(warps) => {
                let w = self.warped.as_mut().expect("made above");
                w.used += 1;
                w.batch.write(tape, w.used - 1, warps)
            }
        })
    }

    /// Takes the next slot for `step`; returns the slot's dynamic offset. (`make_room` first.)
    fn slot(&mut self, step: Step) -> u32 {
        if !self.pending {
            self.pending = true;
            self.used = 0;
        }
        assert!(self.used < SLOTS, "make_room() before slot()");
        let at = self.used * SLOT_BYTES as usize;
        self.host_slots[at..at + std::mem::size_of::<Step>()]
            .copy_from_slice(bytemuck::bytes_of(&step));
        self.used += 1;
        at as u32
    }

    /// Submits what is recorded if it leaves no slot (or, for a step on `copies`, no region of
    /// shifts or warps) for one more step.
    fn make_room(&mut self, tape: &mut Tape, copies: Option<Copies>) {
        let no_region = match copies {
            None => false,
            Some(Copies::Shifts(_)) => {
                (self.copied.as_ref()).is_some_and(|s| s.used == s.shifts.regions)
            }
            Some(Copies::Warps(_)) => {
                (self.warped.as_ref()).is_some_and(|w| w.used == w.batch.regions)
            }
        };
        if self.used == SLOTS || no_region {
            self.submit(tape);
        }
    }

    /// Records one training step; submits when enough are recorded.
    pub fn step(&mut self, tape: &mut Tape, args: &StepArgs, copies: Option<Copies>) -> Result<()> {
        let mut step = Step::train(args, self.tiling, self.optimizer);
        match copies {
            Some(copies) => {
                step.copied = 1;
                step.copies_at = self.upload(tape, copies)?;
            }
            None => self.make_room(tape, None),
        }
        let offset = self.slot(step);
        let warped = matches!(copies, Some(Copies::Warps(_)));
        self.record_step(tape, &step, offset, warped);
        if self.used >= self.limit {
            self.limit = (2 * self.limit).min(SLOTS);
            self.submit(tape);
        }
        Ok(())
    }

    /// Records the dispatches of `step`, whose values are in the slot at `offset`: augment
    /// (for a shifted step) or warp (`warped`) making the copies, gradients, update.
    fn record_step(&mut self, tape: &mut Tape, step: &Step, offset: u32, warped: bool) {
        let mut rec = Recorder::without_uniforms(tape);
        let p = &self.pipelines;
        let words = step.m as usize * PIXELS / 4;
        let images = match (&self.copied, &self.warped, step.copied) {
            (Some(s), Some(w), 1) if warped => {
                rec.run(
                    "warp",
                    p.warp,
                    w.warp,
                    Some(offset),
                    warp_grid(step.m as usize),
                );
                s.train
            }
            (Some(s), _, 1) => {
                rec.run("augment", p.augment, s.augment, Some(offset), grid(words));
                s.train
            }
            _ => self.pool,
        };
        let groups = [step.groups, 1, 1];
        rec.run("fused gradients", p.gradients, images, Some(offset), groups);
        let reduce = update_groups(self.param_vec4s, step.lanes);
        rec.run(
            "fused update",
            p.update,
            self.update,
            Some(offset),
            [reduce, 1, 1],
        );
    }

    /// Submits what is recorded (nothing if nothing is); the next run of steps starts small.
    pub fn flush(&mut self, tape: &mut Tape) {
        self.limit = 1;
        self.submit(tape);
    }

    /// Submits what is recorded, the runs of steps per submit growing on (nothing waits):
    /// the slots of its steps are written first.
    pub fn submit(&mut self, tape: &mut Tape) {
        if !self.pending {
            return;
        }
        self.pending = false;
        let bytes = self.used * SLOT_BYTES as usize;
        tape.write(
            self.buffers.slots,
            0,
            Bytes::Bytes(self.host_slots[..bytes].to_vec()),
        );
        tape.submit();
        self.used = 0;
        if let Some(s) = &mut self.copied {
            s.used = 0;
        }
        if let Some(w) = &mut self.warped {
            w.used = 0;
        }
    }

    /// Records the logits of the `n` samples listed from position `first` into `logits_out`:
    /// (10, n). Call `flush` (then read) to get them.
    pub fn logits(&mut self, tape: &mut Tape, first: usize, n: usize) {
        for start in (0..n).step_by(self.capacity) {
            self.make_room(tape, None);
            let m = self.capacity.min(n - start);
            let step = Step {
                m: m as u32,
                first: (first + start) as u32,
                out: start as u32,
                ..Step::default()
            };
            let offset = self.slot(step);
            let groups = m.div_ceil(self.tiling.block) as u32;
            let pipeline = self.pipelines.logits;
            Recorder::without_uniforms(tape).run(
                "fused logits",
                pipeline,
                self.pool,
                Some(offset),
                [groups, 1, 1],
            );
        }
    }

    /// Records the logits of `m` images (at most `capacity` of them, not in the pool: the
    /// recording's input) into `logits_out` (call `flush` first, and again before reading).
    pub fn classify(&mut self, tape: &mut Tape, m: usize) -> Result<()> {
        if self.copied.is_none() {
            self.copied = Some(self.make_copied(tape)?);
        }
        let s = self.copied.as_ref().expect("made above");
        tape.write(s.images, 0, Bytes::Input);
        let train = s.train;
        self.make_room(tape, None);
        let step = Step {
            m: m as u32,
            copied: 1,
            ..Step::default()
        };
        let offset = self.slot(step);
        let groups = m.div_ceil(self.tiling.block) as u32;
        let pipeline = self.pipelines.logits;
        Recorder::without_uniforms(tape).run(
            "fused logits",
            pipeline,
            train,
            Some(offset),
            [groups, 1, 1],
        );
        Ok(())
    }

    /// The runs of `t`'s floats (tensor t of W1, b1, W2, …) in a buffer laid out as the
    /// parameters, from byte `base`.
    fn tensor_regions(&self, buffer: Buf, base: u64, t: usize) -> Vec<Region> {
        self.layout
            .runs(t)
            .into_iter()
            .map(|(start, len)| Region {
                buffer,
                offset: base + 4 * start as u64,
                bytes: 4 * len as u64,
            })
            .collect()
    }

    /// Where W1, b1, W2, … lie: read in order, the dense layout.
    pub fn model_regions(&self) -> Vec<Region> {
        (0..2 * self.layout.layers.len())
            .flat_map(|t| self.tensor_regions(self.buffers.params, 0, t))
            .collect()
    }

    /// Writes `model`'s weights (call `flush` first: the write lands before anything not yet
    /// submitted).
    pub fn set_model(&self, tape: &mut Tape, model: &Model) {
        tape.write_values(self.buffers.params, 0, &self.layout.pack(model));
    }

    /// Where the optimizer's moments lie: per tensor (W1, b1, W2, …), per moment, in order.
    pub fn moment_regions(&self) -> Vec<Region> {
        let moments = self.optimizer.state_tensors();
        let moment_bytes = 4 * self.layout.floats as u64;
        (0..2 * self.layout.layers.len())
            .flat_map(|t| {
                (0..moments).flat_map(move |k| {
                    self.tensor_regions(self.buffers.state, k as u64 * moment_bytes, t)
                })
            })
            .collect()
    }

    /// Writes the optimizer's moments, per tensor as `moment_regions` lists them (call
    /// `flush` first).
    pub fn set_optimizer_state(&self, tape: &mut Tape, tensors: &[Vec<Vec<f32>>]) {
        for k in 0..self.optimizer.state_tensors() {
            let moment: Vec<&[f32]> = tensors.iter().map(|t| &t[k][..]).collect();
            let flat = self.layout.pack_tensors(&moment);
            let at = 4 * (k * self.layout.floats) as u64;
            tape.write_values(self.buffers.state, at, &flat);
        }
    }

    /// Fresh (zeroed) state for `optimizer` (call `flush` first).
    pub fn set_optimizer(&mut self, tape: &mut Tape, optimizer: Optimizer) -> Result<()> {
        let vec4s = optimizer.state_tensors().max(1) * self.param_vec4s;
        self.buffers.state =
            tape.storage(&format!("{} state", optimizer.name()), 16 * vec4s as u64)?;
        self.optimizer = optimizer;
        self.update = update_group(tape, &self.layouts, &self.buffers);
        Ok(())
    }
}

impl Pipelines {
    /// The fused step's pipelines for `model`'s shape, its parameters laid out as `layout`,
    /// its batches split as `tiling` says.
    fn new(
        tape: &mut Tape,
        model: &Model,
        layout: &ParamLayout,
        tiling: Tiling,
        layouts: &Layouts,
    ) -> Pipelines {
        let mut constants = shape_constants(model, layout, tiling);
        constants.extend(tiling.variant.constants());
        constants.extend(shaders::constants(&ACTIVATION_CODES));
        constants.extend(shaders::constants(&OPTIMIZER_CODES));
        let mut make = |label: &'static str, shader: &'static str, layout, constants: &[_]| {
            tape.pipeline(PipelineSpec {
                label,
                source: Source::Shader(shader),
                entry: if shader == "fused" { label } else { "main" },
                layout,
                constants: constants.to_vec(),
                // Every kernel here writes its workgroup memory before reading it.
                zero_workgroup_memory: false,
            })
        };
        Pipelines {
            gradients: make("gradients", "fused", layouts.forward, &constants),
            logits: make("logits", "fused", layouts.forward, &constants),
            update: make("update", "fused", layouts.update, &constants),
            augment: make("augment", "augment", layouts.augment, &[]),
            warp: make("warp", "warp", layouts.augment, &[]),
        }
    }
}

/// The override constants that fix the network's shape in fused.wgsl: the hidden layers, the
/// activation, the block, where each tensor starts in the parameters, their size, and whether
/// they all fit the uniform view.
pub(crate) fn shape_constants(
    model: &Model,
    layout: &ParamLayout,
    tiling: Tiling,
) -> Vec<(&'static str, f64)> {
    let hidden = model.hidden();
    // Where W[l] and b[l] start, in vec4s (0 for a layer the network does not have).
    let at = |l: usize, bias: bool| {
        layout
            .layers
            .get(l)
            .map_or(0.0, |t| (if bias { t.b } else { t.w } / 4) as f64)
    };
    let param_vec4s = layout.floats / 4;
    vec![
        ("H1", hidden[0] as f64),
        ("H2", hidden.get(1).copied().unwrap_or(0) as f64),
        ("ACT", activation_code(model.activation).value as f64),
        ("BLOCK", tiling.block as f64),
        ("W1_AT", at(0, false)),
        ("B1_AT", at(0, true)),
        ("W2_AT", at(1, false)),
        ("B2_AT", at(1, true)),
        ("W3_AT", at(2, false)),
        ("B3_AT", at(2, true)),
        ("PARAM_VEC4S", param_vec4s as f64),
        ("SLICE_VEC4S", (param_vec4s + 1) as f64),
        (
            "PARAMS_IN_UNIFORM",
            (4 * layout.floats as u64 <= UNIFORM_BYTES) as u8 as f64,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_parse_name_and_default_to_no_constants() {
        assert_eq!(FusedVariant::default().constants(), vec![]);
        assert_eq!(FusedVariant::parse("none"), Ok(FusedVariant::default()));
        let all = FusedVariant::parse("all").unwrap();
        assert_eq!((all, all.describe()), (FusedVariant::all(), "all".into()));
        assert_eq!(all.constants().len(), 5);
        for (k, name) in FusedVariant::NAMES.iter().enumerate() {
            let one = FusedVariant::parse(name).unwrap();
            assert_eq!(one.names(), vec![*name]);
            assert_eq!(one.constants(), vec![(all.constants()[k].0, 1.0)]);
        }
        let two = FusedVariant::parse("tree-sums, fast-bytes").unwrap();
        assert_eq!(two.describe(), "tree-sums,fast-bytes");
        let err = FusedVariant::parse("tree-sum").unwrap_err();
        assert!(
            err.contains("\"tree-sum\"") && err.contains("wide-update"),
            "{err}"
        );
    }

    #[test]
    fn auto_block_gives_small_batches_more_workgroups() {
        assert_eq!(block_for_batch(1, 32), 8);
        assert_eq!(block_for_batch(64, 32), 8);
        assert_eq!(block_for_batch(1024, 32), 8);
        assert_eq!(block_for_batch(2048, 32), 16);
        assert_eq!(block_for_batch(4096, 32), 32);
        assert_eq!(block_for_batch(60_000, 32), 32);
        assert_eq!(block_for_batch(60_000, 16), 16);
    }

    #[test]
    fn split_leaves_no_workgroup_empty() {
        for m in [1, 5, 31, 32, 33, 64, 100, 1000, 60_000] {
            for (block, max_groups) in [(32, 512), (8, 3), (64, 1), (16, 7)] {
                let tiling = Tiling {
                    block,
                    max_groups,
                    ..Tiling::default()
                };
                let (groups, per_group) = split(m, tiling);
                assert!(
                    groups >= 1 && groups <= max_groups,
                    "{m} {block} {max_groups}"
                );
                assert!((groups - 1) * per_group < m && groups * per_group >= m);
            }
        }
    }
}
