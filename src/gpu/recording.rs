//! The GPU work as data, with no device: what the two engines (`fused.rs`, `reference.rs`
//! through `kernels.rs`) record, and what an executor carries out, natively through wgpu
//! (`native.rs`) or in `serve`'s page through WebGPU (the worker, fed by `cli/serve/plan.rs`).
//!
//! A recording is a list of `Command`s: made resources (buffers, bind group layouts, pipelines,
//! bind groups), then work on them (writes, dispatches, copies, submits). Resources are
//! numbered in the order they are made, so two recordings of the same calls name them alike.
//!
//! ## Design
//! The engines decide everything here: buffer sizes, override constants, each dispatch's
//! workgroups and uniform values, when to submit. An executor only does what it is told, in
//! order, with the one rule WebGPU and wgpu share: a write lands before the commands of the next
//! submit (and after those of earlier ones). Bulk bytes that both sides already hold (the
//! pool's images and labels, a caller's images) are named rather than carried (`Data`), so the
//! page's plan stays small. Reads are not commands: natively they return values the training
//! loop needs at once; the page reads only where its plan marks a progress point.

use crate::error::{Error, Result};
use crate::gpu::coop::CoopConfig;

/// Workgroups per grid dimension that every adapter allows.
pub const MAX_GROUPS: u32 = 65_535;

/// A buffer of a recording, by the order it was made in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Buf(pub u32);
/// A bind group layout of a recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BindLayout(pub u32);
/// A compute pipeline of a recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pipe(pub u32);
/// A bind group of a recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Group(pub u32);

/// What a buffer is bound as (every buffer can be written, copied and read back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Storage,
    Uniform,
    /// Both: the fused step's parameters, also read through a uniform view.
    StorageUniform,
}

impl Usage {
    pub fn name(self) -> &'static str {
        match self {
            Usage::Storage => "storage",
            Usage::Uniform => "uniform",
            Usage::StorageUniform => "storage+uniform",
        }
    }
}

/// How a kernel reads one of its bindings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// A uniform picked by a dynamic offset given with each dispatch (the fused step's slot).
    Slot,
    Uniform,
    Read,
    Write,
}

impl Access {
    pub fn name(self) -> &'static str {
        match self {
            Access::Slot => "slot",
            Access::Uniform => "uniform",
            Access::Read => "read",
            Access::Write => "write",
        }
    }
}

/// A pipeline's WGSL: one of `shaders::SHADERS`, or matmul's cooperative-matrix module fitted
/// to an adapter (native only: no browser has the extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Shader(&'static str),
    Coop(CoopConfig),
}

/// What one compute pipeline is built from.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineSpec {
    /// As profiles and errors name it.
    pub label: &'static str,
    pub source: Source,
    pub entry: &'static str,
    pub layout: BindLayout,
    /// Values of the module's `override` constants, by name.
    pub constants: Vec<(&'static str, f64)>,
    /// Whether workgroup memory is cleared before each dispatch, as WGSL promises by default.
    /// Only a kernel that writes its workgroup memory before reading it may say false.
    pub zero_workgroup_memory: bool,
}

/// One buffer of a bind group: `size` bytes from `offset` (None: to the buffer's end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub binding: u32,
    pub buffer: Buf,
    pub offset: u64,
    pub size: Option<u64>,
}

impl Entry {
    pub fn whole(binding: u32, buffer: Buf) -> Entry {
        Entry {
            binding,
            buffer,
            offset: 0,
            size: None,
        }
    }

    pub fn range(binding: u32, buffer: Buf, offset: u64, size: u64) -> Entry {
        Entry {
            binding,
            buffer,
            offset,
            size: Some(size),
        }
    }
}

/// What the image pool holds, as the shaders read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolData {
    /// 784 bytes per image.
    Images,
    /// One u32 per image.
    Labels,
}

/// The bytes of a write.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    Bytes(Vec<u8>),
    /// The pool's images or labels, which every executor holds already.
    Pool(PoolData),
    /// The images of the `classify` being recorded (784 bytes each).
    Input,
}

/// One step of a recording.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Buffer {
        id: Buf,
        label: String,
        bytes: u64,
        usage: Usage,
    },
    Layout {
        id: BindLayout,
        label: &'static str,
        entries: Vec<(u32, Access)>,
    },
    Pipeline {
        id: Pipe,
        spec: PipelineSpec,
    },
    Group {
        id: Group,
        label: &'static str,
        layout: BindLayout,
        entries: Vec<Entry>,
    },
    /// Lands before the commands of the next submit.
    Write {
        buffer: Buf,
        offset: u64,
        data: Data,
    },
    Dispatch {
        label: &'static str,
        pipeline: Pipe,
        group: Group,
        /// The dynamic offset of a `Slot` binding, if the layout has one.
        offset: Option<u32>,
        groups: [u32; 3],
    },
    Copy {
        from: Buf,
        from_offset: u64,
        to: Buf,
        to_offset: u64,
        bytes: u64,
    },
    /// Submits the dispatches and copies since the last submit.
    Submit,
}

/// Bytes of a buffer to read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub buffer: Buf,
    pub offset: u64,
    pub bytes: u64,
}

/// What an adapter allows, as far as the recordings depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of workgroup memory (the fused step's blocks).
    pub workgroup_storage: usize,
    /// The largest storage buffer binding, and the largest buffer.
    pub storage_binding: u64,
    pub buffer: u64,
}

impl Limits {
    /// WebGPU's defaults, which every adapter offers.
    pub const DEFAULT: Limits = Limits {
        workgroup_storage: 16384,
        storage_binding: 128 << 20,
        buffer: 256 << 20,
    };

    /// WebGPU's defaults, with buffers of any size: for a recording that no device carries out
    /// (a page's run replayed to reach a step), which must not refuse what the page's own
    /// adapter holds.
    pub const UNBOUNDED: Limits = Limits {
        storage_binding: u64::MAX,
        buffer: u64::MAX,
        ..Limits::DEFAULT
    };
}

/// Buffers are made in whole 16-byte units (what a uniform binding needs on every adapter).
pub fn buffer_size(bytes: u64) -> u64 {
    bytes.max(16).next_multiple_of(16)
}

/// A recording being made: the commands not yet handed to an executor, and the numbering of
/// the resources made so far.
#[derive(Debug)]
pub struct Tape {
    commands: Vec<Command>,
    buffers: u32,
    layouts: u32,
    pipelines: u32,
    groups: u32,
    limits: Limits,
}

impl Tape {
    pub fn new(limits: Limits) -> Tape {
        Tape {
            commands: Vec::new(),
            buffers: 0,
            layouts: 0,
            pipelines: 0,
            groups: 0,
            limits,
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// A buffer of `bytes` (zeroed), or an error naming `label` where the adapter cannot bind
    /// so much.
    pub fn buffer(&mut self, label: &str, bytes: u64, usage: Usage) -> Result<Buf> {
        let limit = self.limits.storage_binding.min(self.limits.buffer);
        if bytes > limit {
            return Err(Error::Gpu(format!(
                "{label} needs {} MiB, more than the {} MiB one GPU buffer may hold; \
                 try a smaller --batch-size, a smaller dev or test set (they are evaluated in \
                 chunks of up to 4,096), narrower layers, or --backend cpu",
                bytes.div_ceil(1 << 20),
                limit >> 20
            )));
        }
        let id = Buf(self.buffers);
        self.buffers += 1;
        self.commands.push(Command::Buffer {
            id,
            label: label.to_string(),
            bytes: buffer_size(bytes),
            usage,
        });
        Ok(id)
    }

    /// A storage buffer of `bytes`.
    pub fn storage(&mut self, label: &str, bytes: u64) -> Result<Buf> {
        self.buffer(label, bytes, Usage::Storage)
    }

    /// A storage buffer holding `data`.
    pub fn upload(&mut self, label: &str, data: Data, bytes: u64) -> Result<Buf> {
        let buffer = self.storage(label, bytes)?;
        self.write(buffer, 0, data);
        Ok(buffer)
    }

    pub fn layout(&mut self, label: &'static str, entries: &[(u32, Access)]) -> BindLayout {
        let id = BindLayout(self.layouts);
        self.layouts += 1;
        self.commands.push(Command::Layout {
            id,
            label,
            entries: entries.to_vec(),
        });
        id
    }

    pub fn pipeline(&mut self, spec: PipelineSpec) -> Pipe {
        let id = Pipe(self.pipelines);
        self.pipelines += 1;
        self.commands.push(Command::Pipeline { id, spec });
        id
    }

    pub fn group(&mut self, label: &'static str, layout: BindLayout, entries: Vec<Entry>) -> Group {
        let id = Group(self.groups);
        self.groups += 1;
        self.commands.push(Command::Group {
            id,
            label,
            layout,
            entries,
        });
        id
    }

    pub fn write(&mut self, buffer: Buf, offset: u64, data: Data) {
        self.commands.push(Command::Write {
            buffer,
            offset,
            data,
        });
    }

    /// Writes `values` (f32, u32, i32, …) as their bytes.
    pub fn write_values<T: bytemuck::Pod>(&mut self, buffer: Buf, offset: u64, values: &[T]) {
        let bytes = bytemuck::cast_slice(values).to_vec();
        self.write(buffer, offset, Data::Bytes(bytes));
    }

    /// A dispatch of `groups` workgroups, each dimension within `MAX_GROUPS` (so both executors
    /// run it as recorded); a grid with an empty dimension is left out.
    pub fn dispatch(
        &mut self,
        label: &'static str,
        pipeline: Pipe,
        group: Group,
        offset: Option<u32>,
        groups: [u32; 3],
    ) {
        assert!(
            groups.iter().all(|&g| g <= MAX_GROUPS),
            "{label}: grid {groups:?} too large"
        );
        if groups.contains(&0) {
            return;
        }
        self.commands.push(Command::Dispatch {
            label,
            pipeline,
            group,
            offset,
            groups,
        });
    }

    pub fn copy(&mut self, from: Buf, from_offset: u64, to: Buf, to_offset: u64, bytes: u64) {
        self.commands.push(Command::Copy {
            from,
            from_offset,
            to,
            to_offset,
            bytes,
        });
    }

    pub fn submit(&mut self) {
        self.commands.push(Command::Submit);
    }

    /// The commands recorded since the last call, for an executor.
    pub fn commands(&mut self) -> &mut Vec<Command> {
        &mut self.commands
    }
}

/// Whatever the named data of a recording stands for, where an executor needs the bytes: the
/// pool (images, and labels as u32) and the images of a `classify`.
#[derive(Clone, Copy, Default)]
pub struct Inputs<'a> {
    pub images: &'a [u8],
    pub labels: &'a [u32],
    pub input: &'a [u8],
}

/// How long `Executor::poll` may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    No,
    /// Only once a submit has followed the read (so the GPU has the next work queued).
    IfDue,
    Yes,
}

/// What carries a recording out: natively wgpu (`native::Native`), for the page a plan of
/// commands (`cli/serve/plan.rs`).
pub trait Executor: Send {
    /// Carries out `commands` in order and empties the list.
    fn run(&mut self, commands: &mut Vec<Command>, inputs: Inputs) -> Result<()>;

    /// The bytes of `regions`, one after another, once everything submitted so far has run.
    fn read(&mut self, regions: &[Region]) -> Result<Vec<u8>>;

    /// Starts reading `region` after everything submitted so far, without waiting; `poll`
    /// gives it. One at a time.
    fn request(&mut self, region: Region) -> Result<()>;

    /// The requested bytes once back (None while not, or when none was requested).
    fn poll(&mut self, wait: Wait) -> Result<Option<Vec<u8>>>;

    /// What runs the recording, in words.
    fn describe(&self) -> String;

    /// Told as each training step is recorded, with its batch length (the page's plan keeps the
    /// steps of its span).
    fn step(&mut self, _len: usize) {}

    /// Times every following dispatch, where the executor can (`bench --profile`).
    fn start_profile(&mut self) -> Result<bool> {
        Ok(false)
    }

    /// Per kernel since `start_profile`: its label, seconds and dispatches; and how many
    /// dispatches went untimed.
    #[allow(clippy::type_complexity)]
    fn profile(&mut self) -> Result<Option<(Vec<(&'static str, f64, usize)>, usize)>> {
        Ok(None)
    }
}

/// A tape and the executor that carries it out: what a GPU backend records into.
pub struct Session {
    pub tape: Tape,
    pub exec: Box<dyn Executor>,
}

impl Session {
    pub fn new(limits: Limits, exec: Box<dyn Executor>) -> Session {
        Session {
            tape: Tape::new(limits),
            exec,
        }
    }

    /// Hands what is recorded to the executor.
    pub fn run(&mut self) -> Result<()> {
        self.run_with(Inputs::default())
    }

    pub fn run_with(&mut self, inputs: Inputs) -> Result<()> {
        self.exec.run(self.tape.commands(), inputs)
    }

    /// `floats` f32 of `buffer` from its start, after everything recorded has run.
    pub fn read(&mut self, buffer: Buf, floats: usize) -> Result<Vec<f32>> {
        self.read_regions(&[Region {
            buffer,
            offset: 0,
            bytes: 4 * floats as u64,
        }])
    }

    /// The f32 of `regions`, one after another.
    pub fn read_regions(&mut self, regions: &[Region]) -> Result<Vec<f32>> {
        self.run()?;
        let bytes = self.exec.read(regions)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// The bytes of `buffer` from its start.
    pub fn read_bytes(&mut self, buffer: Buf, bytes: u64) -> Result<Vec<u8>> {
        self.run()?;
        self.exec.read(&[Region {
            buffer,
            offset: 0,
            bytes,
        }])
    }
}
