//! The fused step as a plan, for a driver outside this crate: the `serve` page's JavaScript,
//! which runs shaders/fused.wgsl on the browser's WebGPU. Nothing here touches a device.
//!
//! The page must not become a second copy of `fused.rs`, so everything the host decides is
//! decided here, by `fused.rs`'s own functions: the tiling for the browser's workgroup memory
//! (`tiling_with`), the override constants (`shape_constants`), the parameter layout
//! (`ParamLayout`), and each step's 256-byte slot (`Step::train`) with its workgroup counts.
//!
//! `PlanBackend` is a `Backend` that records instead of computing: driven by the training
//! loop (`train::train_from`), it writes down what `GpuBackend` with the fused engine would
//! have done — index lists written, runs of steps submitted (their slots, shifts and
//! dispatches), the dev logits asked for — as `Command`s. So the batch order, α's decay,
//! Adam's step count, the shifts and the warps come from the loop itself, and a browser that executes
//! the commands follows the native run step for step. The numbers it answers with (stats,
//! logits, the model) are placeholders: the browser computes the real ones.

use serde::Serialize;
use serde_json::{json, Value};

use crate::augment::{Augment, Warps};
use crate::backend::Backend;
use crate::backend::{check_batch, check_list, check_shifts, check_warps, forward_capacity};
use crate::backend::{BatchStats, StepPath, STATS_KEPT};
use crate::data::pool::{List, ListSizes, Shift};
use crate::data::{CLASSES, PIXELS};
use crate::error::{config, Result};
use crate::gpu::fused::{self, warp_regions, Access, ParamLayout, Step, Tiling};
use crate::gpu::fused::{AUGMENT_BINDINGS, FORWARD_BINDINGS, UPDATE_BINDINGS};
use crate::gpu::fused::{SHIFTS_PER_SUBMIT, SLOTS, SLOT_BYTES, UNIFORM_BYTES};
use crate::gpu::kernels::grid;
use crate::gpu::shaders::{self, ACTIVATION_CODES, OPTIMIZER_CODES};
use crate::gpu::shifted::{warp_floats, Copies, WarpBuffer};
use crate::gpu::StepArgs;
use crate::model::Model;
use crate::optimizer::{Optimizer, OptimizerState};

/// What the page builds once: pipelines, buffers and bind groups.
#[derive(Debug, Clone)]
pub struct Setup {
    pub layout: ParamLayout,
    pub tiling: Tiling,
    pub constants: Vec<(&'static str, f64)>,
    /// The largest batch (or evaluation chunk) a slot describes.
    pub capacity: usize,
    pub sizes: ListSizes,
    /// Regions of shifts a submit holds (one per shifted step).
    pub shift_regions: usize,
    /// Whether the run's warps carry fields (`--augment elastic`), and the regions of warps a
    /// submit holds (one per warped step; 0 when the run does not warp), as `Fused` sizes them.
    pub elastic: bool,
    pub warp_regions: usize,
}

impl Setup {
    /// The plan's setup for `model`, batches of at most `batch` over lists of `sizes` with
    /// `augment`, on an adapter with `workgroup_storage` bytes of workgroup memory. Refuses a
    /// network the fused step does not cover.
    pub fn new(
        model: &Model,
        batch: usize,
        sizes: ListSizes,
        augment: &Augment,
        workgroup_storage: usize,
    ) -> Result<Setup> {
        let tiling = fused::tiling_with(model, workgroup_storage);
        if let Some(why) = fused::unsupported_with(model, tiling, workgroup_storage) {
            return config(why);
        }
        let layout = ParamLayout::new(model);
        let tiling = fused::within_partials(tiling, layout.floats / 4 + 1);
        let capacity = forward_capacity(batch, sizes)?;
        let mut constants = fused::shape_constants(model, &layout, tiling);
        constants.extend(shaders::constants(&ACTIVATION_CODES));
        constants.extend(shaders::constants(&OPTIMIZER_CODES));
        let elastic = matches!(augment, Augment::Elastic(_));
        let warps = augment.distortion().is_some();
        Ok(Setup {
            elastic,
            warp_regions: if warps {
                warp_regions(capacity, elastic)
            } else {
                0
            },
            shift_regions: (SHIFTS_PER_SUBMIT / capacity).clamp(1, SLOTS),
            layout,
            tiling,
            constants,
            capacity,
            sizes,
        })
    }

    fn param_vec4s(&self) -> usize {
        self.layout.floats / 4
    }

    /// Floats of one region of warps, as `WarpBuffer` lays them out.
    fn warp_region_floats(&self) -> usize {
        WarpBuffer::region_floats(self.capacity, self.elastic)
    }

    /// The page's description of it: override constants, buffer sizes in bytes, the bind
    /// group layouts (binding, kind) and the bind groups (binding, buffer, offset, size; size
    /// 0: the whole buffer), as `fused.rs` builds them.
    pub fn describe(&self) -> Value {
        let param_vec4s = self.param_vec4s();
        let constants: serde_json::Map<String, Value> = self
            .constants
            .iter()
            .map(|(name, value)| (name.to_string(), json!(value)))
            .collect();
        let slot = SLOT_BYTES; // binding 0 of every group: one slot, at a dynamic offset
        json!({
            "constants": constants,
            "block": self.tiling.block,
            "max_groups": self.tiling.max_groups,
            "capacity": self.capacity,
            "slots": SLOTS,
            "slot_bytes": SLOT_BYTES,
            "history_slots": STATS_KEPT,
            "param_floats": self.layout.floats,
            "offsets": {
                "train": self.sizes.offset(List::Train),
                "dev": self.sizes.offset(List::Dev),
                "test": self.sizes.offset(List::Test),
            },
            "buffers": {
                "indices": 4 * self.sizes.total().max(1),
                "params": (4 * self.layout.floats as u64).max(UNIFORM_BYTES),
                "partials": 16 * self.tiling.max_groups * (param_vec4s + 1),
                "state": 16 * 2 * param_vec4s,
                "history": 8 * STATS_KEPT,
                "logits": 4 * CLASSES * self.sizes.dev.max(self.capacity),
                "slots": SLOTS as u64 * SLOT_BYTES,
                "shifts": 8 * self.capacity * self.shift_regions,
                "shifted": PIXELS * self.capacity,
                "warps": 4 * self.warp_region_floats() * self.warp_regions,
            },
            "layouts": {
                "forward": layout_entries(&FORWARD_BINDINGS),
                "update": layout_entries(&UPDATE_BINDINGS),
                "augment": layout_entries(&AUGMENT_BINDINGS),
            },
            "groups": {
                "pool": {"layout": "forward", "entries": forward_entries("images")},
                "shifted": {"layout": "forward", "entries": forward_entries("shifted")},
                "update": {"layout": "update", "entries": [
                    [0, "slots", 0, slot], [8, "params", 0, 0], [9, "partials", 0, 0],
                    [10, "state", 0, 0], [11, "history", 0, 0]]},
                "augment": {"layout": "augment", "entries": [
                    [0, "slots", 0, slot], [1, "images", 0, 0], [2, "indices", 0, 0],
                    [3, "shifts", 0, 0], [4, "shifted", 0, 0]]},
                // warp.wgsl has augment.wgsl's bindings, the warps in place of the shifts.
                "warp": {"layout": "augment", "entries": [
                    [0, "slots", 0, slot], [1, "images", 0, 0], [2, "indices", 0, 0],
                    [3, "warps", 0, 0], [4, "shifted", 0, 0]]},
            },
            // One image's logits (`Fused::classify`): the image in `shifted`, its slot this.
            "classify_slot": classify_slot(1),
            // A full `shifted` buffer's logits, as `Fused::classify` records them: the page
            // classifies its test digits in chunks of these (the last padded with blank images).
            "classify_chunk": {
                "images": self.capacity,
                "slot": classify_slot(self.capacity),
                "groups": self.capacity.div_ceil(self.tiling.block),
            },
            "pipelines": {
                "gradients": ["fused", "gradients", "forward"],
                "logits": ["fused", "logits", "forward"],
                "update": ["fused", "update", "update"],
                "augment": ["augment", "main", "augment"],
                "warp": ["warp", "main", "augment"],
            },
        })
    }
}

/// The slot of the logits of `m` images in `shifted` (`Fused::classify`'s).
fn classify_slot(m: usize) -> Vec<u32> {
    slot_words(Step {
        m: m as u32,
        shifted: 1,
        ..Step::default()
    })
}

/// `step` as the u32 words of a slot.
fn slot_words(step: Step) -> Vec<u32> {
    let mut words = vec![0u32; WORDS];
    bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..std::mem::size_of::<Step>()]
        .copy_from_slice(bytemuck::bytes_of(&step));
    words
}

/// A layout as the page builds it: (binding, how it is read) per entry, from `fused.rs`'s table.
fn layout_entries(bindings: &[(u32, Access)]) -> Value {
    bindings
        .iter()
        .map(|&(binding, access)| json!([binding, access.name()]))
        .collect()
}

/// `gradients` and `logits` reading `images` (the pool's, or the shifted copies).
fn forward_entries(images: &str) -> Value {
    json!([
        [0, "slots", 0, SLOT_BYTES],
        [1, images, 0, 0],
        [2, "indices", 0, 0],
        [3, "labels", 0, 0],
        [4, "params", 0, 0],
        [5, "params", 0, UNIFORM_BYTES],
        [6, "partials", 0, 0],
        [7, "logits", 0, 0]
    ])
}

/// One dispatch of a submit: pipeline, bind group, slot, workgroups.
#[derive(Debug, Clone, Serialize)]
pub struct Dispatch(pub &'static str, pub &'static str, pub u32, pub [u32; 3]);

/// One region of warps in a submit: where it starts in the warps buffer (in floats), and its
/// floats (`WarpBuffer::write`'s: the records, then the fields).
#[derive(Debug, Clone, Serialize)]
pub struct WarpRegion(pub u32, pub Vec<f32>);

/// What the page does, in order.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Write `indices` at float `offset` of the index lists (after submitting what is pending,
    /// as `GpuBackend::set_list` does).
    Write { offset: usize, indices: Vec<u32> },
    /// Write the slots (u32 words, `SLOT_BYTES` each), the shifts (i32 pairs, one region of
    /// `capacity` pairs per shifted step) and the warps (one region per warped step), then
    /// record the dispatches and submit them.
    Submit {
        slots: Vec<u32>,
        shifts: Vec<i32>,
        warps: Vec<WarpRegion>,
        dispatches: Vec<Dispatch>,
    },
    /// Read the logits of the dev list's `labels.len()` samples (written by the submit before)
    /// and the history; the dev loss and accuracy are for the next `Progress`.
    ReadDev { labels: Vec<u8> },
    /// A progress point of the loop: after step `step`, the history slots (and batch
    /// lengths) of the steps since the previous one.
    Progress {
        step: usize,
        alpha: f32,
        window: Vec<(u32, usize)>,
    },
}

/// A `Backend` that writes down the fused step's commands for steps `keep.start + 1 ..=
/// keep.end` (counted from 1) and drops the others'.
pub struct PlanBackend {
    setup: Setup,
    pool_len: usize,
    optimizer: Optimizer,
    /// Steps taken with this optimizer (Adam's t), and in all (the history's slot).
    steps: u64,
    recorded: usize,
    keep: std::ops::Range<usize>,
    /// The lists as last set, written again at the start of the kept steps.
    lists: Vec<(List, Vec<u32>)>,
    lists_written: bool,
    pending: Option<Pending>,
    /// (history slot, batch length) of the kept steps since the last progress point.
    window: Vec<(u32, usize)>,
    pub commands: Vec<Command>,
    model: Model,
    /// The dev list's labels; the loop's progress rule; the last step's α.
    dev_labels: Vec<u8>,
    log_every: usize,
    total_steps: usize,
    last_progress: Option<usize>,
    alpha: f32,
    /// The page's optimizer moments, per tensor, for a checkpoint of its run.
    moments: Option<Vec<Vec<Vec<f32>>>>,
}

/// The submit being recorded: what `Command::Submit` holds.
#[derive(Default)]
struct Pending {
    slots: Vec<u32>,
    shifts: Vec<i32>,
    warps: Vec<WarpRegion>,
    dispatches: Vec<Dispatch>,
}

/// Where the plan's run is: what the loop logs, and which steps' commands are kept (steps
/// `keep.start + 1 ..= keep.end`, counted from 1).
pub struct Span {
    /// Steps done before the loop starts (a resumed run's).
    pub start: usize,
    pub log_every: usize,
    pub total_steps: usize,
    pub keep: std::ops::Range<usize>,
}

impl PlanBackend {
    pub fn new(
        setup: Setup,
        model: &Model,
        pool_len: usize,
        dev_labels: Vec<u8>,
        span: Span,
    ) -> Self {
        PlanBackend {
            setup,
            pool_len,
            optimizer: Optimizer::Sgd,
            steps: 0,
            recorded: span.start,
            keep: span.keep,
            lists: Vec::new(),
            lists_written: false,
            pending: None,
            window: Vec::new(),
            commands: Vec::new(),
            model: model.clone(),
            dev_labels,
            log_every: span.log_every.max(1),
            total_steps: span.total_steps,
            last_progress: None,
            alpha: 0.0,
            moments: None,
        }
    }

    /// The page's model and optimizer moments (per tensor, as `OptimizerState` holds them),
    /// which `model` and `optimizer_state` answer with from now on: a checkpoint of the
    /// page's run.
    pub fn hold(&mut self, model: Model, moments: Vec<Vec<Vec<f32>>>) {
        self.model = model;
        self.moments = Some(moments);
    }

    /// Steps the loop has taken.
    pub fn recorded(&self) -> usize {
        self.recorded
    }

    fn kept(&self) -> bool {
        self.keep.contains(&self.recorded)
    }

    /// Ends the pending submit, if any.
    pub fn flush(&mut self) {
        if let Some(p) = self.pending.take() {
            self.commands.push(Command::Submit {
                slots: p.slots,
                shifts: p.shifts,
                warps: p.warps,
                dispatches: p.dispatches,
            });
        }
    }

    /// The slot for `step` in the pending submit (a new one when it leaves no slot, or for a
    /// step on `copies` no region of shifts or warps, as `Fused::make_room`), and its index.
    fn slot(&mut self, step: Step, copies: Option<Copies>) -> u32 {
        let setup = &self.setup;
        let full = self.pending.as_ref().is_some_and(|p| {
            p.slots.len() / WORDS == SLOTS
                || match copies {
                    None => false,
                    Some(Copies::Shifts(_)) => {
                        p.shifts.len() / (2 * setup.capacity) == setup.shift_regions
                    }
                    Some(Copies::Warps(_)) => p.warps.len() == setup.warp_regions,
                }
        });
        if full {
            self.flush();
        }
        let p = self.pending.get_or_insert_with(Default::default);
        let index = (p.slots.len() / WORDS) as u32;
        p.slots.extend(slot_words(step));
        index
    }

    fn dispatch(&mut self, dispatch: Dispatch) {
        let p = self.pending.get_or_insert_with(Default::default);
        p.dispatches.push(dispatch);
    }

    /// Puts `copies` into the next region of the pending submit (which `slot` made room for),
    /// as `ShiftedImages::write` and `WarpBuffer::write` lay it out; returns where the region
    /// starts (in i32s or floats), the slot's `shift_offset`.
    fn region(&mut self, copies: Copies) -> u32 {
        let region_floats = self.setup.warp_region_floats();
        let capacity = self.setup.capacity;
        let p = self.pending.as_mut().expect("slot() made one");
        match copies {
            Copies::Shifts(shifts) => {
                let start = p.shifts.len();
                p.shifts
                    .extend(shifts.iter().flat_map(|s| [s.dx as i32, s.dy as i32]));
                p.shifts.resize(start + 2 * capacity, 0);
                start as u32
            }
            Copies::Warps(warps) => {
                let start = (region_floats * p.warps.len()) as u32;
                let mut floats = Vec::new();
                warp_floats(warps, &mut floats);
                p.warps.push(WarpRegion(start, floats));
                start
            }
        }
    }

    /// One training step, as `GpuBackend::step` and `Fused::step` record it.
    fn step(&mut self, start: usize, len: usize, alpha: f32, copies: Option<Copies>) {
        self.steps += 1;
        self.alpha = alpha;
        let history = (self.recorded % STATS_KEPT) as u32;
        let kept = self.kept();
        self.recorded += 1;
        if !kept {
            return;
        }
        if !self.lists_written {
            self.flush();
            for (list, indices) in self.lists.clone() {
                self.write(list, indices);
            }
            self.lists_written = true;
        }
        let args = StepArgs {
            first: (self.setup.sizes.offset(List::Train) + start) as u32,
            m: len,
            alpha,
            t: self.steps,
            history,
        };
        let mut step = Step::train(&args, self.setup.tiling, self.optimizer);
        if let Some(copies) = copies {
            step.shifted = 1;
            // The slot first: `slot` may start a new submit, whose first region this takes.
            let slot = self.slot(step, Some(copies));
            let offset = self.region(copies);
            let p = self.pending.as_mut().expect("slot() made one");
            // shift_offset is the third word of the slot.
            p.slots[slot as usize * WORDS + 2] = offset;
            // augment.wgsl or warp.wgsl writes the copies that gradients reads.
            let kernel = match copies {
                Copies::Shifts(_) => "augment",
                Copies::Warps(_) => "warp",
            };
            let words = step.m as usize * PIXELS / 4;
            self.dispatch(Dispatch(kernel, kernel, slot, grid(words)));
            self.record_train(&step, slot, "shifted");
        } else {
            let slot = self.slot(step, None);
            self.record_train(&step, slot, "pool");
        }
        self.window.push((history, len));
    }

    fn record_train(&mut self, step: &Step, slot: u32, images: &'static str) {
        self.dispatch(Dispatch("gradients", images, slot, [step.groups, 1, 1]));
        let update = fused::update_groups(self.setup.param_vec4s(), step.lanes);
        self.dispatch(Dispatch("update", "update", slot, [update, 1, 1]));
    }

    fn write(&mut self, list: List, indices: Vec<u32>) {
        let offset = self.setup.sizes.offset(list);
        self.commands.push(Command::Write { offset, indices });
    }

    /// The dev list's logits, chunk by chunk as `Fused::logits` records them.
    fn dev_logits(&mut self) {
        self.flush();
        let (first, n) = (self.setup.sizes.offset(List::Dev), self.setup.sizes.dev);
        for start in (0..n).step_by(self.setup.capacity) {
            let m = self.setup.capacity.min(n - start);
            let step = Step {
                m: m as u32,
                first: (first + start) as u32,
                out: start as u32,
                ..Step::default()
            };
            let slot = self.slot(step, None);
            let groups = m.div_ceil(self.setup.tiling.block) as u32;
            self.dispatch(Dispatch("logits", "pool", slot, [groups, 1, 1]));
        }
        self.flush();
    }

    /// A progress point of the loop, which the loop marks by asking for the dev logits
    /// after a logged step (every `log_every` steps, and the last).
    fn progress(&mut self) {
        let step = self.recorded;
        let logged = step > 0 && (step.is_multiple_of(self.log_every) || step == self.total_steps);
        if !logged
            || self.last_progress == Some(step)
            || !(self.keep.start < step && step <= self.keep.end)
        {
            return;
        }
        self.last_progress = Some(step);
        self.dev_logits();
        self.commands.push(Command::ReadDev {
            labels: self.dev_labels.clone(),
        });
        let window = std::mem::take(&mut self.window);
        self.commands.push(Command::Progress {
            step,
            alpha: self.alpha,
            window,
        });
    }
}

/// u32 words per slot.
const WORDS: usize = SLOT_BYTES as usize / 4;

impl Backend for PlanBackend {
    fn device_name(&self) -> String {
        "the page's WebGPU adapter".into()
    }

    fn set_list(&mut self, list: List, indices: &[u32]) -> Result<()> {
        check_list(&self.setup.sizes, list, indices, self.pool_len)?;
        self.lists.retain(|(l, _)| *l != list);
        self.lists.push((list, indices.to_vec()));
        if self.lists_written && self.kept() {
            self.flush();
            self.write(list, indices.to_vec());
        }
        Ok(())
    }

    fn train_step(&mut self, start: usize, len: usize, alpha: f32) -> Result<()> {
        check_batch(&self.setup.sizes, self.setup.capacity, start, len)?;
        self.step(start, len, alpha, None);
        Ok(())
    }

    fn train_step_shifted(
        &mut self,
        start: usize,
        len: usize,
        alpha: f32,
        shifts: &[Shift],
    ) -> Result<()> {
        check_batch(&self.setup.sizes, self.setup.capacity, start, len)?;
        check_shifts(shifts, len)?;
        self.step(start, len, alpha, Some(Copies::Shifts(shifts)));
        Ok(())
    }

    fn train_step_warped(
        &mut self,
        start: usize,
        len: usize,
        alpha: f32,
        warps: &Warps,
    ) -> Result<()> {
        check_batch(&self.setup.sizes, self.setup.capacity, start, len)?;
        check_warps(warps, len)?;
        // The warps buffer is sized for the run's --augment, as `Fused` sizes it.
        if self.setup.warp_regions == 0 || (!warps.field.is_empty() && !self.setup.elastic) {
            return config("the plan was set up without room for these warps (its --augment)");
        }
        self.step(start, len, alpha, Some(Copies::Warps(warps)));
        Ok(())
    }

    fn path(&self) -> StepPath {
        StepPath::Fused
    }

    /// A loss of ln 10 for every step: the page reads the real ones.
    fn batch_stats(&mut self) -> Result<BatchStats> {
        Ok(placeholder_stats())
    }

    fn step_stats(&mut self) -> Result<Vec<BatchStats>> {
        Ok(vec![placeholder_stats(); self.recorded.min(STATS_KEPT)])
    }

    fn logits(&mut self, list: List) -> Result<Vec<f32>> {
        if list == List::Dev {
            self.progress();
        }
        Ok(vec![0.0; CLASSES * self.setup.sizes.len(list)])
    }

    fn classify(&mut self, images: &[u8]) -> Result<Vec<f32>> {
        Ok(vec![0.0; CLASSES * images.len() / PIXELS])
    }

    /// The model the run started from (the page holds the trained one).
    fn model(&mut self) -> Result<Model> {
        Ok(self.model.clone())
    }

    fn set_model(&mut self, model: &Model) -> Result<()> {
        self.model = model.clone();
        Ok(())
    }

    fn set_optimizer(&mut self, optimizer: Optimizer) -> Result<()> {
        self.flush();
        self.optimizer = optimizer;
        self.steps = 0;
        Ok(())
    }

    fn optimizer_state(&mut self) -> Result<OptimizerState> {
        if let Some(tensors) = &self.moments {
            return Ok(OptimizerState {
                steps: self.steps,
                tensors: tensors.clone(),
            });
        }
        let moments = self.optimizer.state_tensors();
        let tensors = self
            .model
            .layers
            .iter()
            .flat_map(|l| [l.w.len(), l.b.len()])
            .map(|n| vec![vec![0.0; n]; moments])
            .collect();
        Ok(OptimizerState {
            steps: self.steps,
            tensors,
        })
    }

    fn set_optimizer_state(&mut self, state: &OptimizerState) -> Result<()> {
        self.steps = state.steps;
        Ok(())
    }
}

fn placeholder_stats() -> BatchStats {
    BatchStats {
        loss: std::f64::consts::LN_10,
        accuracy: 0.1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Activation, Init};

    fn plan_of(keep: std::ops::Range<usize>, steps: &[(usize, usize)]) -> PlanBackend {
        let model = Model::new(&[8], Activation::Relu, Init::He, 1).unwrap();
        let sizes = ListSizes {
            train: 100,
            dev: 10,
            test: 0,
        };
        let setup = Setup::new(&model, 64, sizes, &Augment::Off, 16384).unwrap();
        let span = Span {
            start: 0,
            log_every: 2,
            total_steps: steps.len(),
            keep,
        };
        let mut plan = PlanBackend::new(setup, &model, 110, vec![0; 10], span);
        plan.set_optimizer(Optimizer::with_defaults(
            crate::optimizer::OptimizerKind::Adam,
        ))
        .unwrap();
        plan.set_list(List::Dev, &(100..110).collect::<Vec<u32>>())
            .unwrap();
        plan.set_list(List::Train, &(0..100).rev().collect::<Vec<u32>>())
            .unwrap();
        for (i, &(start, len)) in steps.iter().enumerate() {
            plan.train_step(start, len, 0.01).unwrap();
            if (i + 1) % 2 == 0 {
                plan.logits(List::Dev).unwrap();
            }
        }
        plan.flush();
        plan
    }

    /// Each step's slot is `Step::train`'s for the same arguments (Adam's t counted from 1),
    /// two dispatches a step; the lists are written before the first kept step.
    #[test]
    fn a_plan_holds_the_fused_steps_slots_and_dispatches() {
        let plan = plan_of(0..4, &[(0, 64), (64, 36), (0, 64), (64, 36)]);
        let mut t = 0u64;
        let mut writes = 0;
        for command in &plan.commands {
            match command {
                Command::Write { .. } => writes += 1,
                Command::Submit {
                    slots, dispatches, ..
                } if dispatches[0].0 == "gradients" => {
                    assert_eq!(dispatches.len(), 2 * slots.len() / WORDS);
                    for slot in slots.chunks(WORDS) {
                        t += 1;
                        let (start, m) = [(0, 64), (64, 36)][(t as usize - 1) % 2];
                        let args = StepArgs {
                            first: start as u32,
                            m,
                            alpha: 0.01,
                            t,
                            history: (t - 1) as u32,
                        };
                        let adam = Optimizer::with_defaults(crate::optimizer::OptimizerKind::Adam);
                        let want = slot_words(Step::train(&args, plan.setup.tiling, adam));
                        assert_eq!(slot, &want[..], "step {t}");
                    }
                }
                _ => {}
            }
        }
        assert_eq!((t, writes), (4, 2));
    }

    /// A warped step uploads `warp_floats`' floats into a region of its own, whose start is
    /// its slot's shift_offset, and runs warp on the copies before gradients reads them.
    #[test]
    fn a_warped_step_uploads_its_warps_and_runs_warp_first() {
        use crate::augment::{draw_warps, Distortion};
        use rand::SeedableRng;
        let model = Model::new(&[8], Activation::Relu, Init::He, 1).unwrap();
        let sizes = ListSizes {
            train: 100,
            dev: 10,
            test: 0,
        };
        let augment = Augment::Elastic(Distortion::default());
        let setup = Setup::new(&model, 64, sizes, &augment, 16384).unwrap();
        assert_eq!(setup.warp_regions, warp_regions(64, true));
        let span = Span {
            start: 0,
            log_every: 100,
            total_steps: 2,
            keep: 0..2,
        };
        let mut plan = PlanBackend::new(setup, &model, 110, vec![0; 10], span);
        plan.set_list(List::Train, &(0..100).collect::<Vec<u32>>())
            .unwrap();
        let mut rng = rand_chacha::ChaCha12Rng::seed_from_u64(3);
        let mut drawn = Vec::new();
        for (start, len) in [(0, 64), (64, 36)] {
            let mut warps = Warps::default();
            draw_warps(&mut rng, &augment, len, &mut warps);
            plan.train_step_warped(start, len, 0.1, &warps).unwrap();
            drawn.push(warps);
        }
        plan.flush();
        let Some(Command::Submit {
            slots,
            warps,
            dispatches,
            ..
        }) = plan.commands.last()
        else {
            panic!("no submit: {:?}", plan.commands);
        };
        let region = WarpBuffer::region_floats(64, true);
        assert_eq!((warps.len(), dispatches.len()), (2, 6));
        for (k, want) in drawn.iter().enumerate() {
            let mut floats = Vec::new();
            warp_floats(want, &mut floats);
            assert_eq!(warps[k].0 as usize, k * region);
            assert!(warps[k].1 == floats, "region {k}'s floats");
            assert_eq!(slots[k * WORDS + 2] as usize, k * region);
            let order: Vec<_> = dispatches[3 * k..3 * k + 3]
                .iter()
                .map(|d| (d.0, d.1, d.2))
                .collect();
            let k = k as u32;
            let want_order = [
                ("warp", "warp", k),
                ("gradients", "shifted", k),
                ("update", "update", k),
            ];
            assert_eq!(order, want_order);
            assert_eq!(dispatches[3 * k as usize].3, grid(want.len() * PIXELS / 4));
        }
    }

    /// A plan set up for affine warps has no room for fields, and says so in one line.
    #[test]
    fn an_affine_plan_refuses_elastic_warps() {
        use crate::augment::{draw_warps, Distortion};
        use rand::SeedableRng;
        let model = Model::new(&[8], Activation::Relu, Init::He, 1).unwrap();
        let sizes = ListSizes {
            train: 100,
            dev: 10,
            test: 0,
        };
        let affine = Augment::Affine(Distortion::default());
        let setup = Setup::new(&model, 64, sizes, &affine, 16384).unwrap();
        let span = Span {
            start: 0,
            log_every: 100,
            total_steps: 1,
            keep: 0..1,
        };
        let mut plan = PlanBackend::new(setup, &model, 110, vec![0; 10], span);
        let mut warps = Warps::default();
        let mut rng = rand_chacha::ChaCha12Rng::seed_from_u64(3);
        draw_warps(
            &mut rng,
            &Augment::Elastic(Distortion::default()),
            8,
            &mut warps,
        );
        let error = plan.train_step_warped(0, 8, 0.1, &warps).unwrap_err();
        assert!(!error.to_string().contains('\n'), "{error}");
    }

    /// A later chunk keeps only its steps, and writes the lists again first.
    #[test]
    fn a_chunk_keeps_its_own_steps() {
        let plan = plan_of(2..3, &[(0, 64), (64, 36), (0, 64), (64, 36)]);
        let steps: usize = plan
            .commands
            .iter()
            .map(|c| match c {
                Command::Submit { dispatches, .. } => {
                    dispatches.iter().filter(|d| d.0 == "update").count()
                }
                _ => 0,
            })
            .sum();
        assert_eq!(steps, 1);
        assert!(matches!(plan.commands[0], Command::Write { .. }));
    }
}
