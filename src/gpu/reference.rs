//! The GPU's reference path: the training step as one kernel per operation (`matmul`,
//! `activation`, `softmax`, `output_grad`, `sum_columns`, `sum_partials`, the optimizer's
//! update), recorded into one command encoder and submitted once per step, in the same order
//! as the CPU's reference path (`cpu::CpuBackend::new_reference`). It runs every network the
//! fused path (`fused.rs`) does not cover, and is what that path is checked against.
//!
//! Each bound kernel's parameters sit in their own slot of one uniform buffer, written at every
//! submit: so each step is a submit of its own. Like the fused engine it records, with no
//! device (`recording.rs`); `GpuBackend` hands the recording to an executor.

use crate::data::CLASSES;
use crate::error::{Error, Result};
use crate::gpu::copies::{copies_buffer, Copies, ShiftBuffer, WarpBuffer};
use crate::gpu::kernels::{
    column_chunks, forward_partial_floats, forward_splits_with, Bound, Kernels, Operand, Recorder,
    Uniforms,
};
use crate::gpu::recording::{Buf, Data as Bytes, Region, Tape, MAX_GROUPS};
use crate::gpu::{Data, StepArgs};
use crate::layout::Layout;
use crate::model::{Activation, Layer, Model};
use crate::optimizer::{adam_params, Optimizer};

/// One layer's buffers and its kernels' bind groups.
struct LayerState {
    inputs: usize,
    outputs: usize,
    /// W: (outputs, inputs), b: (outputs); read back by `model()`.
    w: Buf,
    b: Buf,
    /// dW, db: the averaged gradients the update reads.
    dw: Buf,
    db: Buf,
    /// The optimizer's state for W and for b (V, or M and V); empty for SGD.
    state: Vec<Buf>,
    /// Z: (outputs, capacity), column-major; the last layer's are the logits `logits()` reads.
    /// (A and dZ live only in the bind groups below.)
    z: Buf,
    /// Z = W·A[l-1] + b
    forward: Bound,
    /// With `--forward-split-k`: the same product's slices into the partials (the bias in
    /// slice 0), and Z = their sum.
    forward_split: Option<(Bound, Bound)>,
    /// A = g(Z), or softmax on the output layer
    activate: Bound,
    /// partials of dZ·A[l-1]ᵀ, then dW = 1/m · their sum
    dw_product: Bound,
    dw_sum: Bound,
    /// db = 1/m · Σ_columns dZ
    db_columns: Bound,
    db_sum: Bound,
    /// dA[l-1] = Wᵀ·dZ and dZ[l-1] = dA[l-1] ⊙ g'(Z[l-1]); none on the first layer
    back: Option<(Bound, Bound)>,
    /// P -= … with the optimizer's kernel, for W and for b
    update_w: Bound,
    update_b: Bound,
}

/// The output's kernels: dZ = A − Y with each sample's (loss, correct), and their sum over the
/// batch.
struct Output {
    grad: Bound,
    stats_columns: Bound,
    stats_sum: Bound,
}

/// Where the first layer reads the batch's images.
#[derive(Clone, Copy)]
enum Images<'a> {
    /// In the pool, through the index list from position `first`.
    Pool { first: u32 },
    /// The copies `augment` or `warp` made of them (or `classify`'s images).
    Copies(&'a Copied),
}

/// Buffers the layers share.
struct Scratch {
    /// Bound where a kernel's binding goes unused.
    dummy: Buf,
    /// dA of a hidden layer: (widest, capacity).
    da: Buf,
    /// The partial sums of the split-K products and the column sums (for the largest batch).
    partials: Buf,
    /// `--forward-split-k` when the engine was built (what the partials are sized for).
    forward_slices: Option<usize>,
}

impl Scratch {
    fn new(tape: &mut Tape, k: &Kernels, model: &Model, cap: usize) -> Result<Scratch> {
        let forward_slices = k.forward_split_k;
        let partial_floats = model
            .layers
            .iter()
            .map(|l| {
                let splits = k.splits(l.outputs, l.inputs, cap) as usize;
                let product = splits * l.outputs * l.inputs;
                let forward = forward_partial_floats(l.outputs, l.inputs, cap, forward_slices);
                product
                    .max(forward)
                    .max(column_chunks(cap) as usize * l.outputs)
            })
            .max()
            .unwrap_or(0)
            .max(2 * column_chunks(cap) as usize);
        Ok(Scratch {
            dummy: tape.storage("unused binding", 4)?,
            da: tape.storage("dA", 4 * (model.widest() * cap) as u64)?,
            partials: tape.storage("partial sums", 4 * partial_floats as u64)?,
            forward_slices,
        })
    }
}

/// A batch's copies (shifted, warped, or `classify`'s images), the shifts, and the bindings
/// that use them: made on the first shifted or warped step (or `classify`).
struct Copied {
    images: Buf,
    /// One region of shifts: each step is a submit of its own.
    shifts: ShiftBuffer,
    augment: Bound,
    /// The first layer's forward product and dW product, reading the copies (through
    /// an index list 0, 1, 2, …) instead of the pool.
    forward: Bound,
    /// With `--forward-split-k`, its slices into the partials (summed by layer 1's sum).
    forward_split: Option<Bound>,
    dw_product: Bound,
}

/// `--augment affine|elastic`'s warps and warp's binding (writing into `Copied`'s copies),
/// made on the first warped step.
struct Warped {
    /// One region: each step is a submit of its own.
    batch: WarpBuffer,
    warp: Bound,
}

/// The layers and the output's kernels: what a pass records. Kept apart from the uniforms,
/// which recording writes.
struct Network {
    activation: Activation,
    /// `--forward-split-k` as the scratch was sized for it.
    forward_slices: Option<usize>,
    optimizer: Optimizer,
    layers: Vec<LayerState>,
    output: Output,
}

pub struct Reference {
    capacity: usize,
    net: Network,
    uniforms: Uniforms,
    /// (loss, correct) summed over the last batch; copied to the step's history slot.
    stats_total: Buf,
    /// Kept so that `--augment` can bind them later, with dZ of the first layer.
    data: Data,
    scratch: Scratch,
    dz1: Buf,
    copied: Option<Copied>,
    warped: Option<Warped>,
}

/// Binds the kernels of the layers, one after another, to their buffers.
struct Binder<'a> {
    tape: &'a mut Tape,
    k: &'a Kernels,
    data: Data,
    scratch: &'a Scratch,
    cap: usize,
    uniforms: &'a mut Uniforms,
}

impl Binder<'_> {
    fn floats(&mut self, label: &str, n: usize) -> Result<Buf> {
        self.tape.storage(label, 4 * n as u64)
    }

    /// A layer's forward product Z = W·A + b, and with `--forward-split-k` its slices into the
    /// partials and their sum into Z. W: (outputs, inputs), A: (inputs, cap), b: (outputs),
    /// Z: (outputs, cap).
    fn forward(&mut self, w: Buf, input: Buf, b: Buf, z: Buf) -> (Bound, Option<(Bound, Bound)>) {
        let (k, tape, u) = (self.k, &mut *self.tape, &mut *self.uniforms);
        let Data {
            images, indices, ..
        } = self.data;
        let partials = self.scratch.partials;
        let forward = k.matmul.bind(tape, u, &[w, input, images, indices, b, z]);
        let split = self.scratch.forward_slices.map(|_| {
            let product = k
                .matmul
                .bind(tape, u, &[w, input, images, indices, b, partials]);
            (product, k.sum_partials.bind(tape, u, &[partials, z]))
        });
        (forward, split)
    }

    /// Layer `l`'s buffers and bound kernels; returns them, its A and its dZ. `input`: what
    /// the layer reads (A[l-1]; on the first layer a dummy, as it reads the images); `prev`:
    /// layer l-1 and its dZ, which the backward pass writes.
    fn layer(
        &mut self,
        l: usize,
        layer: &Layer,
        last: bool,
        input: Buf,
        prev: Option<(&LayerState, Buf)>,
    ) -> Result<(LayerState, Buf, Buf)> {
        let (inputs, outputs) = (layer.inputs, layer.outputs);
        let name = |what: &str| format!("{what}{}", l + 1);
        let w = upload_floats(self.tape, &name("W"), &layer.w)?;
        let b = upload_floats(self.tape, &name("b"), &layer.b)?;
        let dw = self.floats(&name("dW"), outputs * inputs)?;
        let db = self.floats(&name("db"), outputs)?;
        let z = self.floats(&name("Z"), outputs * self.cap)?;
        let a = self.floats(&name("A"), outputs * self.cap)?;
        let dz = self.floats(&name("dZ"), outputs * self.cap)?;
        let (forward, forward_split) = self.forward(w, input, b, z);
        let (k, tape, u) = (self.k, &mut *self.tape, &mut *self.uniforms);
        let Data {
            images, indices, ..
        } = self.data;
        let Scratch {
            dummy,
            da,
            partials,
            ..
        } = *self.scratch;
        let activate = if last {
            k.softmax.bind(tape, u, &[z, a])
        } else {
            k.activation.bind(tape, u, &[z, a])
        };
        let dw_product = k
            .matmul
            .bind(tape, u, &[dz, input, images, indices, dummy, partials]);
        let dw_sum = k.sum_partials.bind(tape, u, &[partials, dw]);
        let db_columns = k.sum_columns.bind(tape, u, &[dz, partials]);
        let db_sum = k.sum_partials.bind(tape, u, &[partials, db]);
        let back = prev.map(|(prev, prev_dz)| {
            let product = k.matmul.bind(tape, u, &[w, dz, images, indices, dummy, da]);
            let grad = k.activation_grad.bind(tape, u, &[da, prev.z, prev_dz]);
            (product, grad)
        });
        let update_w = k.sgd_update.bind(tape, u, &[dw, w]);
        let update_b = k.sgd_update.bind(tape, u, &[db, b]);
        let state = LayerState {
            inputs,
            outputs,
            w,
            b,
            dw,
            db,
            state: Vec::new(),
            z,
            forward,
            forward_split,
            activate,
            dw_product,
            dw_sum,
            db_columns,
            db_sum,
            back,
            update_w,
            update_b,
        };
        Ok((state, a, dz))
    }

    /// The output's kernels, reading the last layer's A and Z and writing its dZ; and the
    /// buffer their batch (loss, correct) is summed into.
    fn output(&mut self, out: &LayerState, a: Buf, dz: Buf) -> Result<(Output, Buf)> {
        let stats = self.floats("per-sample loss and correct", 2 * self.cap)?;
        let stats_total = self.floats("batch loss and correct", 2)?;
        let (k, tape, u) = (self.k, &mut *self.tape, &mut *self.uniforms);
        let Data {
            labels, indices, ..
        } = self.data;
        let partials = self.scratch.partials;
        let output = Output {
            grad: k
                .output_grad
                .bind(tape, u, &[a, out.z, labels, indices, dz, stats]),
            stats_columns: k.sum_columns.bind(tape, u, &[stats, partials]),
            stats_sum: k.sum_partials.bind(tape, u, &[partials, stats_total]),
        };
        Ok((output, stats_total))
    }
}

/// A buffer holding `values`.
fn upload_floats(tape: &mut Tape, label: &str, values: &[f32]) -> Result<Buf> {
    let bytes = bytemuck::cast_slice(values).to_vec();
    let len = bytes.len() as u64;
    tape.upload(label, Bytes::Bytes(bytes), len)
}

impl Reference {
    /// Uploads the model and binds every kernel to its buffers, for batches of up to
    /// `capacity` samples.
    pub fn new(
        tape: &mut Tape,
        k: &Kernels,
        model: &Model,
        data: Data,
        capacity: usize,
    ) -> Result<Self> {
        if model.widest() > MAX_GROUPS as usize {
            // sum_columns gives each row a workgroup row of its grid, which stops at MAX_GROUPS
            // (65,535, as the message says it).
            return Err(Error::Gpu(format!(
                "layers wider than 65,535 units are not supported on the GPU (widest: {}); use --backend cpu",
                model.widest()
            )));
        }
        let scratch = Scratch::new(tape, k, model, capacity)?;
        // One uniform slot per bind group: twelve per layer (forward, the two of
        // forward_split, activate, dw_product, dw_sum, db_columns, db_sum, the two of back,
        // update_w, update_b), three for the output. Four more are kept for `--augment` (see
        // `Copied`), one for its warps (`Warped`).
        let mut uniforms = Uniforms::new(tape, 12 * model.layers.len() as u64 + 8)?;
        let mut binder = Binder {
            tape,
            k,
            data,
            scratch: &scratch,
            cap: capacity,
            uniforms: &mut uniforms,
        };
        let last = model.layers.len() - 1;
        let (mut layers, mut activations, mut dzs) = (Vec::new(), Vec::new(), Vec::new());
        for (l, layer) in model.layers.iter().enumerate() {
            let input = if l == 0 {
                scratch.dummy
            } else {
                activations[l - 1]
            };
            let prev = layers.last().zip(dzs.last().copied());
            let (state, a, dz) = binder.layer(l, layer, l == last, input, prev)?;
            layers.push(state);
            activations.push(a);
            dzs.push(dz);
        }
        let (output, stats_total) = binder.output(&layers[last], activations[last], dzs[last])?;
        Ok(Reference {
            capacity,
            net: Network {
                activation: model.activation,
                forward_slices: scratch.forward_slices,
                optimizer: Optimizer::Sgd,
                layers,
                output,
            },
            uniforms,
            stats_total,
            data,
            scratch,
            dz1: dzs[0],
            copied: None,
            warped: None,
        })
    }

    /// `--augment`'s buffers: a batch's copies, the shifts, the list 0, 1, 2, … that reads the
    /// copies in order, and the bindings that use them.
    fn make_copied(&mut self, tape: &mut Tape, k: &Kernels) -> Result<Copied> {
        let cap = self.capacity;
        let copies = copies_buffer(tape, cap)?;
        let shifts = ShiftBuffer::new(tape, cap, 1, "shifts")?;
        let identity: Vec<u32> = (0..cap as u32).collect();
        let identity = tape.upload(
            "the copies' index list",
            Bytes::Bytes(bytemuck::cast_slice(&identity).to_vec()),
            4 * cap as u64,
        )?;
        let u = &mut self.uniforms;
        let Data {
            images, indices, ..
        } = self.data;
        let Scratch {
            dummy,
            partials,
            forward_slices,
            ..
        } = self.scratch;
        let augment = k
            .augment
            .bind(tape, u, &[images, indices, shifts.shifts, copies]);
        let first = &self.net.layers[0];
        let forward = k.matmul.bind(
            tape,
            u,
            &[first.w, dummy, copies, identity, first.b, first.z],
        );
        let forward_split = forward_slices.map(|_| {
            k.matmul.bind(
                tape,
                u,
                &[first.w, dummy, copies, identity, first.b, partials],
            )
        });
        let dw_product = k.matmul.bind(
            tape,
            u,
            &[self.dz1, dummy, copies, identity, dummy, partials],
        );
        Ok(Copied {
            images: copies,
            shifts,
            augment,
            forward,
            forward_split,
            dw_product,
        })
    }

    /// The warps' buffer and warp's binding, writing into the copies (made first).
    fn make_warped(&mut self, tape: &mut Tape, k: &Kernels) -> Result<Warped> {
        if self.copied.is_none() {
            self.copied = Some(self.make_copied(tape, k)?);
        }
        let copies = self.copied.as_ref().expect("made above").images;
        let batch = WarpBuffer::new(tape, 1)?;
        let Data {
            images, indices, ..
        } = self.data;
        let buffers = [images, indices, batch.warps, copies];
        let warp = k.warp.bind(tape, &mut self.uniforms, &buffers);
        Ok(Warped { batch, warp })
    }

    /// Uploads a step's shifts or warps, making their buffers on first use.
    fn upload(&mut self, tape: &mut Tape, k: &Kernels, copies: Copies) -> Result<()> {
        if self.copied.is_none() {
            self.copied = Some(self.make_copied(tape, k)?);
        }
        match copies {
            Copies::Shifts(shifts) => {
                let copied = self.copied.as_mut().expect("made above");
                copied.shifts.write(tape, 0, shifts);
            }
            Copies::Warps(warps) => {
                if self.warped.is_none() {
                    self.warped = Some(self.make_warped(tape, k)?);
                }
                let warped = self.warped.as_mut().expect("made above");
                warped.batch.write(tape, 0, warps);
            }
        }
        Ok(())
    }

    /// Records one training step and its submit; its (loss, correct) goes to `history` slot
    /// `args.history`. With `copies`, the step trains on shifted or warped copies of the batch.
    pub fn step(
        &mut self,
        tape: &mut Tape,
        k: &Kernels,
        args: &StepArgs,
        copies: Option<Copies>,
        history: Buf,
    ) -> Result<()> {
        if let Some(copies) = copies {
            self.upload(tape, k, copies)?;
        }
        let mut rec = Recorder::new(tape, &mut self.uniforms);
        let (first, m) = (args.first, args.m);
        let images = match (&self.copied, &self.warped, copies) {
            (Some(copied), _, Some(Copies::Shifts(_))) => {
                k.augment(&mut rec, &copied.augment, m, first);
                Images::Copies(copied)
            }
            (Some(copied), Some(warped), Some(Copies::Warps(_))) => {
                k.warp(&mut rec, &warped.warp, m, first);
                Images::Copies(copied)
            }
            _ => Images::Pool { first },
        };
        self.net.forward(k, &mut rec, images, m);
        self.net.backward(k, &mut rec, images, first, m);
        self.net.update(k, &mut rec, args.alpha, args.t);
        rec.copy(self.stats_total, 0, history, 8 * args.history as u64, 8);
        rec.submit();
        Ok(())
    }

    /// Z[L], the logits, of the `n` samples listed from position `first`, into `out`: (10, n).
    pub fn logits(&mut self, tape: &mut Tape, k: &Kernels, first: usize, n: usize, out: Buf) {
        let logits = self.net.layers.last().expect("at least one layer").z;
        for start in (0..n).step_by(self.capacity) {
            let m = self.capacity.min(n - start);
            let mut rec = Recorder::new(tape, &mut self.uniforms);
            let images = Images::Pool {
                first: (first + start) as u32,
            };
            self.net.forward(k, &mut rec, images, m);
            let bytes = 4 * (CLASSES * m) as u64;
            rec.copy(logits, 0, out, 4 * (CLASSES * start) as u64, bytes);
            rec.submit();
        }
    }

    /// The logits of `m` images (at most `capacity`, not in the pool; the recording's input)
    /// into `out`: (10, m).
    pub fn classify(&mut self, tape: &mut Tape, k: &Kernels, m: usize, out: Buf) -> Result<()> {
        if self.copied.is_none() {
            self.copied = Some(self.make_copied(tape, k)?);
        }
        let copied = self.copied.as_ref().expect("made above");
        tape.write(copied.images, 0, Bytes::Input);
        let mut rec = Recorder::new(tape, &mut self.uniforms);
        self.net.forward(k, &mut rec, Images::Copies(copied), m);
        let logits = self.net.layers.last().expect("at least one layer").z;
        rec.copy(logits, 0, out, 0, 4 * (CLASSES * m) as u64);
        rec.submit();
        Ok(())
    }

    /// Where W1, b1, W2, … lie, one region each: read in order, the dense layout.
    pub fn model_regions(&self) -> Vec<Region> {
        self.net
            .layers
            .iter()
            .flat_map(|l| [(l.w, l.outputs * l.inputs), (l.b, l.outputs)])
            .map(|(buffer, n)| Region {
                buffer,
                offset: 0,
                bytes: 4 * n as u64,
            })
            .collect()
    }

    /// Writes `model`'s weights, which must have the shape the path was built for.
    pub fn set_model(&mut self, tape: &mut Tape, model: &Model) {
        for (state, layer) in self.net.layers.iter().zip(&model.layers) {
            tape.write_values(state.w, 0, &layer.w);
            tape.write_values(state.b, 0, &layer.b);
        }
    }

    /// Where the optimizer's moments lie: per tensor (W1, b1, W2, …), per moment, one region.
    pub fn moment_regions(&self) -> Vec<Region> {
        let moments = self.net.optimizer.state_tensors();
        let mut regions = Vec::new();
        for layer in &self.net.layers {
            // layer.state: the moments of W, then those of b.
            for (t, len) in [layer.outputs * layer.inputs, layer.outputs]
                .into_iter()
                .enumerate()
            {
                for &buffer in &layer.state[t * moments..(t + 1) * moments] {
                    regions.push(Region {
                        buffer,
                        offset: 0,
                        bytes: 4 * len as u64,
                    });
                }
            }
        }
        regions
    }

    /// Writes the optimizer's moments, per tensor as `moment_regions` lists them.
    pub fn set_optimizer_state(&self, tape: &mut Tape, tensors: &[Vec<Vec<f32>>]) {
        let buffers = self.net.layers.iter().flat_map(|l| &l.state);
        let moments = tensors.iter().flatten();
        for (&buffer, values) in buffers.zip(moments) {
            tape.write_values(buffer, 0, values);
        }
    }

    /// Binds the optimizer's kernel and fresh (zeroed) state buffers to every tensor.
    pub fn set_optimizer(
        &mut self,
        tape: &mut Tape,
        k: &Kernels,
        optimizer: Optimizer,
    ) -> Result<()> {
        let (kernel, moments) = match optimizer {
            Optimizer::Sgd => (&k.sgd_update, &[][..]),
            Optimizer::Momentum { .. } => (&k.momentum_update, &["V"][..]),
            Optimizer::Adam { .. } => (&k.adam_update, &["M", "V"][..]),
        };
        for (l, layer) in self.net.layers.iter_mut().enumerate() {
            // Per tensor, the kernel's buffers: the gradient, the parameter, then its moments
            // (new buffers start zeroed).
            let mut bind = |tensor: &str, grad: Buf, param: Buf, len: usize, old: &Bound| {
                let mut state = Vec::new();
                for moment in moments {
                    state.push(
                        tape.storage(&format!("{moment} of {tensor}{}", l + 1), 4 * len as u64)?,
                    );
                }
                let mut buffers = vec![grad, param];
                buffers.extend(&state);
                let bound = kernel.rebind(tape, &self.uniforms, old, &buffers);
                Ok::<_, Error>((bound, state))
            };
            let (update_w, state_w) = bind(
                "W",
                layer.dw,
                layer.w,
                layer.outputs * layer.inputs,
                &layer.update_w,
            )?;
            let (update_b, state_b) = bind("b", layer.db, layer.b, layer.outputs, &layer.update_b)?;
            layer.update_w = update_w;
            layer.update_b = update_b;
            layer.state = [state_w, state_b].concat();
        }
        self.net.optimizer = optimizer;
        Ok(())
    }
}

impl Network {
    /// Records the forward pass over the m samples listed at `indices[first ..]`:
    /// `Z[l] = W[l]·A[l-1] + b[l]`, `A[l] = g(Z[l])`, softmax on the last layer.
    fn forward(&self, k: &Kernels, rec: &mut Recorder, images: Images, m: usize) {
        let last = self.layers.len() - 1;
        for (l, layer) in self.layers.iter().enumerate() {
            let (units, inputs) = (layer.outputs, layer.inputs);
            let input = match (l, images) {
                (0, Images::Pool { first }) => Operand::images(first, m),
                (0, Images::Copies(_)) => Operand::images(0, m),
                _ => Operand::Matrix(Layout::col_major(inputs, m)),
            };
            let (w, z) = (
                Layout::row_major(units, inputs),
                Layout::col_major(units, m),
            );
            let splits = forward_splits_with(units, m, inputs, self.forward_slices);
            match (
                self.forward_bindings(layer, l, images),
                &layer.forward_split,
            ) {
                // Split-K: the slices' sum, bias included (slice 0 adds it), into Z.
                ((_, Some(product)), Some((_, sum))) if splits > 1 => {
                    k.matmul(rec, product, w, input, z, true, splits);
                    k.sum_partials(rec, sum, units * m, splits, 1.0);
                }
                ((bound, _), _) => k.matmul(rec, bound, w, input, z, true, 1),
            }
            if l < last {
                k.activation(rec, &layer.activate, units * m, self.activation);
            } else {
                k.softmax(rec, &layer.activate, units, m);
            }
        }
    }

    /// Layer `l`'s forward product's bindings for `images`: the whole product into Z, and
    /// its split-K slices into the partials where `--forward-split-k` made them.
    fn forward_bindings<'a>(
        &self,
        layer: &'a LayerState,
        l: usize,
        images: Images<'a>,
    ) -> (&'a Bound, Option<&'a Bound>) {
        match (l, images) {
            (0, Images::Copies(s)) => (&s.forward, s.forward_split.as_ref()),
            _ => (&layer.forward, layer.forward_split.as_ref().map(|(p, _)| p)),
        }
    }

    /// Records the backward pass for the batch of the last `forward`, leaving dW and db.
    /// The batch's labels are listed at `indices[first ..]`.
    fn backward(&self, k: &Kernels, rec: &mut Recorder, images: Images, first: u32, m: usize) {
        let inv_m = 1.0 / m as f32;
        let out = &self.output;
        k.output_grad(rec, &out.grad, CLASSES, m, first);
        k.sum_columns(rec, &out.stats_columns, &out.stats_sum, 2, m, 1.0);
        for (l, layer) in self.layers.iter().enumerate().rev() {
            let (units, inputs) = (layer.outputs, layer.inputs);
            let dz = Layout::col_major(units, m);
            // dW[l] = 1/m · dZ[l]·A[l-1]ᵀ: (units, inputs), split over the batch
            let (bound, input_t) = match (l, images) {
                (0, Images::Pool { first }) => (&layer.dw_product, Operand::images_t(first, m)),
                (0, Images::Copies(s)) => (&s.dw_product, Operand::images_t(0, m)),
                _ => (
                    &layer.dw_product,
                    Operand::Matrix(Layout::col_major(inputs, m).t()),
                ),
            };
            let splits = k.splits(units, inputs, m);
            let w = Layout::row_major(units, inputs);
            k.matmul(rec, bound, dz, input_t, w, false, splits);
            k.sum_partials(rec, &layer.dw_sum, units * inputs, splits, inv_m);
            // db[l] = 1/m · Σ_columns dZ[l]: (units)
            k.sum_columns(rec, &layer.db_columns, &layer.db_sum, units, m, inv_m);
            // dZ[l-1] = W[l]ᵀ·dZ[l] ⊙ g'(Z[l-1]): (inputs, m)
            if let Some((product, grad)) = &layer.back {
                k.matmul(
                    rec,
                    product,
                    w.t(),
                    Operand::Matrix(dz),
                    Layout::col_major(inputs, m),
                    false,
                    1,
                );
                k.activation_grad(rec, grad, inputs * m, self.activation);
            }
        }
    }

    /// Records the optimizer's update of every W and b; `step` counts from 1.
    fn update(&self, k: &Kernels, rec: &mut Recorder, alpha: f32, step: u64) {
        for layer in &self.layers {
            let w = (&layer.update_w, layer.outputs * layer.inputs);
            let b = (&layer.update_b, layer.outputs);
            for (bound, count) in [w, b] {
                match self.optimizer {
                    Optimizer::Sgd => k.sgd_update(rec, bound, count, alpha),
                    Optimizer::Momentum { beta } => {
                        k.momentum_update(rec, bound, count, alpha, beta)
                    }
                    Optimizer::Adam { beta1, beta2, eps } => {
                        let adam = adam_params(beta1, beta2, eps, step);
                        k.adam_update(rec, bound, count, alpha, adam)
                    }
                }
            }
        }
    }
}
