//! The page's plan: what the GPU backend records (`gpu::recording`) for a span of a run's steps,
//! in the form the page's worker (assets/serve/train_worker.js) carries out. The server drives
//! the training loop with a `GpuBackend` whose executor is a `PlanExec`: it keeps the commands of
//! the span and answers reads with placeholders (zeros), since the page computes the real values.
//! The loop's progress lines become marks that say which regions the page reads and what each
//! number there is; the numbers themselves come from the backend's figures (`gpu/figures.rs`).
//!
//! Wire form: the body is a little-endian u32 (the JSON header's length), the header, then
//! (from the next multiple of 4) a blob of the bytes that writes carry. Commands are arrays:
//! `["buffer", id, label, bytes, usage]`, `["layout", id, label, [[binding, access]]]`,
//! `["pipeline", id, label, shader, entry, layout, {constants}, zero_workgroup_memory]`,
//! `["group", id, label, layout, [[binding, buffer, offset, size or null]]]`,
//! `["write", buffer, offset, source]` (source `["blob", at, bytes]`, `"images"`, `"labels"`
//! or `"input"`), `["dispatch", pipeline, group, dynamic offset or null, x, y, z]`,
//! `["copy", from, offset, to, offset, bytes]`, `["submit"]`, `["step", step, epoch]` (the steps
//! before it are recorded) and `["mark", {…}]`. Resources are made by every plan of a run again;
//! the page keeps the ones it has.

use std::sync::{Arc, Mutex};

use serde_json::{json, Map, Value};

use mnist_gpu::error::{Error, Result};
use mnist_gpu::gpu::recording::{Command, Data, Executor, Inputs, PoolData, Region, Source, Wait};

/// The epoch a step is in (None in full-batch mode), as the run's schedule says.
type EpochOf = Box<dyn Fn(usize) -> Option<usize> + Send>;

/// What the executor and the loop's driver share: the plan being written.
pub struct Sink {
    commands: Vec<Value>,
    blob: Vec<u8>,
    /// Steps recorded so far, counted from the run's start.
    steps: usize,
    /// Steps `keep.start + 1 ..= keep.end` are kept; and with `setup`, what comes before the
    /// first of them (a session's start: the resources' contents, the lists).
    keep: std::ops::Range<usize>,
    setup: bool,
    /// Samples of the kept steps (the page's samples per second).
    samples: usize,
    epoch_of: EpochOf,
    /// The last step whose `["step", …]` is in the plan.
    marked: usize,
    /// A recording kept apart (`capture`), whole.
    captured: Option<Vec<Value>>,
}

impl Sink {
    /// A plan of steps `keep.start + 1 ..= keep.end` of a run at step `start`, whose steps are
    /// in the epochs `epoch_of` says.
    pub fn new(
        start: usize,
        keep: std::ops::Range<usize>,
        epoch_of: impl Fn(usize) -> Option<usize> + Send + 'static,
    ) -> Arc<Mutex<Sink>> {
        Arc::new(Mutex::new(Sink {
            commands: Vec::new(),
            blob: Vec::new(),
            steps: start,
            setup: keep.start == start,
            keep,
            samples: 0,
            epoch_of: Box::new(epoch_of),
            marked: 0,
            captured: None,
        }))
    }

    fn kept(&self) -> bool {
        self.captured.is_some()
            || (self.setup && self.steps == self.keep.start)
            || (self.keep.start < self.steps && self.steps <= self.keep.end)
    }

    /// Steps recorded so far, and samples of the kept ones.
    pub fn progress(&self) -> (usize, usize) {
        (self.steps, self.samples)
    }

    /// Says in the plan that the steps so far are recorded, where the last of them is kept.
    pub fn mark_step(&mut self) {
        let step = self.steps;
        if step > self.keep.start && step > self.marked && self.kept() {
            self.marked = step;
            let epoch = (self.epoch_of)(step);
            self.push(json!(["step", step, epoch]));
        }
    }

    /// Adds `mark` where the plan is being kept.
    pub fn mark(&mut self, mark: Value) {
        if self.kept() {
            self.push(json!(["mark", mark]));
        }
    }

    fn push(&mut self, command: Value) {
        match &mut self.captured {
            Some(commands) => commands.push(command),
            None => self.commands.push(command),
        }
    }

    /// From now on the commands go to a list of their own, whole, until `captured` takes it.
    pub fn capture(&mut self) {
        self.captured = Some(Vec::new());
    }

    pub fn captured(&mut self) -> Vec<Value> {
        self.captured.take().unwrap_or_default()
    }

    /// The commands kept and the blob their writes carry.
    pub fn take(&mut self) -> (Vec<Value>, Vec<u8>) {
        (
            std::mem::take(&mut self.commands),
            std::mem::take(&mut self.blob),
        )
    }

    /// `command` in the wire's form (its bytes into the blob).
    fn wire(&mut self, command: &Command) -> Result<Value> {
        Ok(match command {
            Command::Write {
                buffer,
                offset,
                data,
            } => {
                let source = match data {
                    Data::Bytes(bytes) => {
                        let at = self.blob.len();
                        self.blob.extend_from_slice(bytes);
                        self.blob.resize(self.blob.len().next_multiple_of(4), 0);
                        json!(["blob", at, bytes.len()])
                    }
                    Data::Pool(PoolData::Images) => json!("images"),
                    Data::Pool(PoolData::Labels) => json!("labels"),
                    Data::Input => json!("input"),
                };
                json!(["write", buffer.0, offset, source])
            }
            Command::Dispatch {
                pipeline,
                group,
                offset,
                groups,
                ..
            } => json!(["dispatch", pipeline.0, group.0, offset, groups[0], groups[1], groups[2]]),
            Command::Copy {
                from,
                from_offset,
                to,
                to_offset,
                bytes,
            } => json!(["copy", from.0, from_offset, to.0, to_offset, bytes]),
            Command::Submit => json!(["submit"]),
            made => made_wire(made)?,
        })
    }
}

/// A command that makes a resource, in the wire's form.
fn made_wire(command: &Command) -> Result<Value> {
    Ok(match command {
        Command::Buffer {
            id,
            label,
            bytes,
            usage,
        } => json!(["buffer", id.0, label, bytes, usage.name()]),
        Command::Layout { id, label, entries } => {
            let entries: Vec<Value> = entries
                .iter()
                .map(|(b, access)| json!([b, access.name()]))
                .collect();
            json!(["layout", id.0, label, entries])
        }
        Command::Pipeline { id, spec } => {
            let Source::Shader(shader) = spec.source else {
                return Err(Error::Gpu(
                    "the page has no cooperative matrices: --matmul coop is native only".into(),
                ));
            };
            let constants: Map<String, Value> = spec
                .constants
                .iter()
                .map(|(name, value)| (name.to_string(), json!(value)))
                .collect();
            json!([
                "pipeline",
                id.0,
                spec.label,
                shader,
                spec.entry,
                spec.layout.0,
                constants,
                spec.zero_workgroup_memory
            ])
        }
        Command::Group {
            id,
            label,
            layout,
            entries,
        } => {
            let entries: Vec<Value> = entries
                .iter()
                .map(|e| json!([e.binding, e.buffer.0, e.offset, e.size]))
                .collect();
            json!(["group", id.0, label, layout.0, entries])
        }
        _ => unreachable!("made_wire is given what makes a resource"),
    })
}

/// The executor the page's backend records for.
pub struct PlanExec(pub Arc<Mutex<Sink>>);

impl PlanExec {
    fn sink(&self) -> std::sync::MutexGuard<'_, Sink> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Executor for PlanExec {
    fn run(&mut self, commands: &mut Vec<Command>, _: Inputs) -> Result<()> {
        let mut sink = self.sink();
        for command in commands.drain(..) {
            let made = matches!(
                command,
                Command::Buffer { .. }
                    | Command::Layout { .. }
                    | Command::Pipeline { .. }
                    | Command::Group { .. }
            );
            // What a plan makes, every plan of the run makes again (the page keeps what it
            // has); work only where the plan is kept.
            if made || sink.kept() {
                let wire = sink.wire(&command)?;
                sink.push(wire);
            }
        }
        Ok(())
    }

    /// Placeholders: the page reads the real values where its marks say.
    fn read(&mut self, regions: &[Region]) -> Result<Vec<u8>> {
        let bytes: u64 = regions.iter().map(|r| r.bytes).sum();
        Ok(vec![0; bytes as usize])
    }

    fn request(&mut self, _: Region) -> Result<()> {
        Ok(())
    }

    fn poll(&mut self, _: Wait) -> Result<Option<Vec<u8>>> {
        Ok(Some(vec![0; 8 * mnist_gpu::backend::STATS_KEPT]))
    }

    fn describe(&self) -> String {
        "the page's WebGPU adapter".into()
    }

    fn step(&mut self, len: usize) {
        let mut sink = self.sink();
        sink.mark_step();
        sink.steps += 1;
        if sink.kept() {
            sink.samples += len;
        }
    }
}

/// Regions in the wire's form: [[buffer, offset, bytes], …].
pub fn regions(regions: &[Region]) -> Value {
    regions
        .iter()
        .map(|r| json!([r.buffer.0, r.offset, r.bytes]))
        .collect()
}

/// The body of a plan: the header's length, the header, the blob from the next multiple of 4.
pub fn body(header: &Value, blob: &[u8]) -> Vec<u8> {
    let text = header.to_string();
    let mut body = Vec::with_capacity(8 + text.len() + blob.len());
    body.extend_from_slice(&(text.len() as u32).to_le_bytes());
    body.extend_from_slice(text.as_bytes());
    body.resize(body.len().next_multiple_of(4), b' ');
    body.extend_from_slice(blob);
    body
}
