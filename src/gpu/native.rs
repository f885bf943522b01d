//! The native executor: a recording (`recording.rs`) carried out through wgpu. Dispatches and
//! copies go into one command encoder and compute pass until a `Submit`; writes go to the queue
//! as they come (so they land before the next submit); every submit is throttled
//! (`GpuContext::throttle`), so the host never runs far ahead of the GPU and never waits for it
//! otherwise. Pipelines and layouts come from the context's cache, built once per description.
//! With a profiler (`bench --profile`) each dispatch gets a pass of its own, stamped at its start
//! and end.

use std::sync::Arc;

use crate::error::Result;
use crate::gpu::kernels::Kernels;
use crate::gpu::pipeline::{bind_group, Binding};
use crate::gpu::profile::{Profiler, Timing};
use crate::gpu::recording::{Access, Buf, Command, Data, Executor, Inputs, PoolData, Region};
use crate::gpu::recording::{Tape, Usage, Wait};
use crate::gpu::stats::PendingRead;
use crate::gpu::GpuContext;

pub struct Native {
    ctx: Arc<GpuContext>,
    buffers: Vec<wgpu::Buffer>,
    /// Each layout with its entries (a pipeline's key in the context's cache).
    layouts: Vec<(Vec<(u32, Access)>, wgpu::BindGroupLayout)>,
    pipelines: Vec<wgpu::ComputePipeline>,
    groups: Vec<wgpu::BindGroup>,
    encoder: Option<wgpu::CommandEncoder>,
    pass: Option<wgpu::ComputePass<'static>>,
    profiler: Option<Profiler>,
    /// The stamps of the dispatches since the last submit (with a profiler).
    timing: Option<Timing>,
    /// A read started without waiting.
    reading: Option<PendingRead>,
}

impl Native {
    pub fn new(ctx: Arc<GpuContext>) -> Native {
        Native {
            ctx,
            buffers: Vec::new(),
            layouts: Vec::new(),
            pipelines: Vec::new(),
            groups: Vec::new(),
            encoder: None,
            pass: None,
            profiler: None,
            timing: None,
            reading: None,
        }
    }

    pub fn ctx(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    fn make_buffer(&mut self, label: &str, bytes: u64, usage: Usage) -> Result<()> {
        use wgpu::BufferUsages as U;
        let copies = U::COPY_SRC | U::COPY_DST;
        let usage = match usage {
            Usage::Storage => U::STORAGE | copies,
            Usage::Uniform => U::UNIFORM | copies,
            Usage::StorageUniform => U::STORAGE | U::UNIFORM | copies,
        };
        let device = &self.ctx.device;
        let buffer = self
            .ctx
            .scoped(&format!("allocating {label} ({bytes} bytes)"), || {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size: bytes,
                    usage,
                    mapped_at_creation: false,
                })
            })?;
        self.buffers.push(buffer);
        Ok(())
    }

    fn encoder(&mut self) -> &mut wgpu::CommandEncoder {
        let device = &self.ctx.device;
        self.encoder.get_or_insert_with(|| {
            device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("recording"),
            })
        })
    }

    fn dispatch(
        &mut self,
        label: &'static str,
        pipeline: usize,
        group: usize,
        offset: Option<u32>,
        groups: [u32; 3],
    ) {
        let timed = match (&self.profiler, &mut self.timing) {
            (Some(profiler), timing) => timing.get_or_insert_with(|| profiler.timing()).next(label),
            (None, _) => None,
        };
        if timed.is_some() {
            self.pass = None;
        }
        self.encoder();
        let encoder = self.encoder.as_mut().expect("made above");
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
        pass.set_pipeline(&self.pipelines[pipeline]);
        let offsets: &[u32] = match &offset {
            Some(o) => std::slice::from_ref(o),
            None => &[],
        };
        pass.set_bind_group(0, &self.groups[group], offsets);
        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        if timed.is_some() {
            self.pass = None;
        }
    }

    /// Submits the encoder (if any) and throttles; with a profiler, collects the stamps.
    fn submit(&mut self) -> Result<()> {
        self.pass = None;
        let Some(mut encoder) = self.encoder.take() else {
            return Ok(());
        };
        let timing = self.timing.take();
        if let Some(timing) = &timing {
            timing.resolve(&mut encoder);
        }
        let index = self.ctx.queue.submit([encoder.finish()]);
        self.ctx.throttle(index)?;
        if let (Some(profiler), Some(timing)) = (&mut self.profiler, timing) {
            profiler.collect(&self.ctx, timing)?;
        }
        Ok(())
    }

    fn write(&mut self, buffer: usize, offset: u64, data: &Data, inputs: Inputs) {
        let bytes: &[u8] = match data {
            Data::Bytes(bytes) => bytes,
            Data::Pool(PoolData::Images) => inputs.images,
            Data::Pool(PoolData::Labels) => bytemuck::cast_slice(inputs.labels),
            Data::Input => inputs.input,
        };
        if !bytes.is_empty() {
            self.ctx
                .queue
                .write_buffer(&self.buffers[buffer], offset, bytes);
        }
    }

    fn command(&mut self, command: &Command, inputs: Inputs) -> Result<()> {
        match command {
            Command::Buffer {
                label,
                bytes,
                usage,
                ..
            } => self.make_buffer(label, *bytes, *usage)?,
            Command::Layout { label, entries, .. } => {
                let layout = self.ctx.layout(label, entries);
                self.layouts.push((entries.clone(), layout));
            }
            Command::Pipeline { spec, .. } => {
                let entries = &self.layouts[spec.layout.0 as usize].0;
                let pipeline = self.ctx.pipeline(spec, entries)?;
                self.pipelines.push(pipeline);
            }
            Command::Group {
                label,
                layout,
                entries,
                ..
            } => {
                let bindings: Vec<Binding> = entries
                    .iter()
                    .map(|e| Binding {
                        binding: e.binding,
                        buffer: &self.buffers[e.buffer.0 as usize],
                        offset: e.offset,
                        bytes: e.size,
                    })
                    .collect();
                let layout = &self.layouts[layout.0 as usize].1;
                let group = bind_group(&self.ctx.device, label, layout, &bindings);
                self.groups.push(group);
            }
            Command::Write {
                buffer,
                offset,
                data,
            } => self.write(buffer.0 as usize, *offset, data, inputs),
            Command::Dispatch {
                label,
                pipeline,
                group,
                offset,
                groups,
            } => self.dispatch(
                label,
                pipeline.0 as usize,
                group.0 as usize,
                *offset,
                *groups,
            ),
            Command::Copy {
                from,
                from_offset,
                to,
                to_offset,
                bytes,
            } => {
                self.pass = None;
                let (from, to) = (from.0 as usize, to.0 as usize);
                self.encoder();
                let encoder = self.encoder.as_mut().expect("made above");
                encoder.copy_buffer_to_buffer(
                    &self.buffers[from],
                    *from_offset,
                    &self.buffers[to],
                    *to_offset,
                    *bytes,
                );
            }
            Command::Submit => self.submit()?,
        }
        Ok(())
    }
}

impl Executor for Native {
    fn run(&mut self, commands: &mut Vec<Command>, inputs: Inputs) -> Result<()> {
        let made = commands.iter().any(|c| {
            matches!(
                c,
                Command::Buffer { .. } | Command::Pipeline { .. } | Command::Group { .. }
            )
        });
        for command in commands.iter() {
            self.command(command, inputs)?;
        }
        commands.clear();
        if made {
            self.ctx.check()?;
        }
        Ok(())
    }

    fn read(&mut self, regions: &[Region]) -> Result<Vec<u8>> {
        // Everything recorded is submitted first: the read follows it.
        self.submit()?;
        let total: u64 = regions.iter().map(|r| r.bytes).sum();
        if total == 0 {
            return Ok(Vec::new());
        }
        let device = &self.ctx.device;
        let staging = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: total,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("read"),
        });
        let mut at = 0;
        for r in regions {
            let from = &self.buffers[r.buffer.0 as usize];
            encoder.copy_buffer_to_buffer(from, r.offset, &staging, at, r.bytes);
            at += r.bytes;
        }
        self.ctx.queue.submit([encoder.finish()]);
        self.ctx.map_and_read(&staging)
    }

    fn request(&mut self, region: Region) -> Result<()> {
        self.submit()?;
        let buffer = &self.buffers[region.buffer.0 as usize];
        self.reading = Some(PendingRead::start(&self.ctx, buffer, region));
        Ok(())
    }

    fn poll(&mut self, wait: Wait) -> Result<Option<Vec<u8>>> {
        let Some(read) = &self.reading else {
            return Ok(None);
        };
        let wait = match wait {
            Wait::No => false,
            Wait::IfDue => read.due(&self.ctx),
            Wait::Yes => true,
        };
        let bytes = read.poll(&self.ctx, wait)?;
        if bytes.is_some() {
            self.reading = None;
        }
        Ok(bytes)
    }

    fn describe(&self) -> String {
        self.ctx.describe()
    }

    fn start_profile(&mut self) -> Result<bool> {
        self.submit()?;
        self.profiler = Profiler::new(&self.ctx);
        Ok(self.profiler.is_some())
    }

    fn profile(&mut self) -> Result<Option<(Vec<(&'static str, f64, usize)>, usize)>> {
        self.submit()?;
        Ok(self
            .profiler
            .as_ref()
            .map(|p| (p.kernels().to_vec(), p.untimed())))
    }
}

/// Kernels run on their own, at once: every per-operation kernel declared in a recording that
/// `Native` carries out as it goes (the kernel tests' way to run one, and to read its output).
pub struct Workbench {
    pub tape: Tape,
    pub kernels: Kernels,
    exec: Native,
}

impl Workbench {
    /// The kernels as `ctx` chooses them (`--matmul coop`, split-K).
    pub fn new(ctx: Arc<GpuContext>) -> Workbench {
        let mut tape = Tape::new(ctx.limits());
        let kernels = Kernels::declare(&mut tape, &ctx.kernels);
        let mut bench = Workbench {
            tape,
            kernels,
            exec: Native::new(ctx),
        };
        bench.run();
        bench
    }

    /// Carries out what is recorded (a test fails where wgpu refuses it).
    pub fn run(&mut self) {
        let commands = self.tape.commands();
        if let Err(e) = self.exec.run(commands, Inputs::default()) {
            panic!("the recording failed: {e}");
        }
    }

    /// A buffer holding `bytes`.
    pub fn upload(&mut self, label: &str, bytes: &[u8]) -> Buf {
        let size = bytes.len() as u64;
        let buffer = self.tape.upload(label, Data::Bytes(bytes.to_vec()), size);
        buffer.unwrap_or_else(|e| panic!("{label}: {e}"))
    }

    /// A buffer holding `values`.
    pub fn floats(&mut self, values: &[f32]) -> Buf {
        self.upload("floats", bytemuck::cast_slice(values))
    }

    /// The first `bytes` of `buffer`, once everything recorded has run.
    pub fn read_bytes(&mut self, buffer: Buf, bytes: u64) -> Vec<u8> {
        self.run();
        let region = Region {
            buffer,
            offset: 0,
            bytes,
        };
        self.exec
            .read(&[region])
            .unwrap_or_else(|e| panic!("reading back: {e}"))
    }

    /// The first `n` floats of `buffer`.
    pub fn read(&mut self, buffer: Buf, n: usize) -> Vec<f32> {
        bytemuck::pod_collect_to_vec(&self.read_bytes(buffer, 4 * n as u64))
    }
}
