//! The GPU context, built once: adapter, device, queue, and the pipelines and layouts built so
//! far (a cache keyed by their description, so that every backend on the context shares them).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::gpu::coop::{CoopConfig, CoopTile};
use crate::gpu::kernels::KernelConfig;
use crate::gpu::pipeline::ShaderChecks;
use crate::gpu::pipeline::{bind_group_layout, buffer_entry, one_line, scoped, Pipeline};
use crate::gpu::recording::{Access, Limits, PipelineSpec, Source};
use crate::gpu::shaders::source;

const INSTALL_HINT: &str = "install a Vulkan driver (for a software adapter on Debian/Ubuntu: \
    `apt-get install -y mesa-vulkan-drivers libvulkan1`, as root or with sudo) or use --backend cpu";

pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    /// How the per-operation kernels are chosen and split (`--matmul coop`, `bench --split-k`).
    pub kernels: KernelConfig,
    /// Why `--matmul coop` was asked but the plain kernels run: the adapter, and what it lacks.
    pub coop_refused: Option<String>,
    /// The adapter's cooperative-matrix tiles, as "M×N×K A→C" ("16×16×16 f16→f32"), whether
    /// or not `--matmul coop` uses them.
    pub coop_offered: Vec<String>,
    /// Whether wgpu's runtime checks are in every shader (`MNIST_GPU_SHADER_CHECKS`, read once
    /// when the context is built; off by default).
    pub shader_checks: ShaderChecks,
    /// The first error wgpu reported outside an error scope (a failed dispatch, a lost
    /// device): its callbacks cannot return a `Result`, so they leave the message here.
    fault: Arc<Mutex<Option<String>>>,
    /// Submissions the GPU may not have finished, oldest first (see `throttle`).
    in_flight: Mutex<VecDeque<wgpu::SubmissionIndex>>,
    /// Submissions of training work so far (`throttle`'s count).
    submitted: AtomicU64,
    /// The bind group layouts and pipelines built so far, by their description.
    layouts: Mutex<HashMap<Vec<(u32, Access)>, wgpu::BindGroupLayout>>,
    pipelines: Mutex<HashMap<String, wgpu::ComputePipeline>>,
}

/// Submits allowed in flight: enough that the GPU always has the next one queued while the
/// host records another, few enough that recording never runs far ahead of the GPU.
const IN_FLIGHT: usize = 3;

/// What `--backend auto` found: a GPU to use, or why the CPU runs instead.
pub enum AutoChoice {
    /// A hardware GPU adapter (or the one `--adapter` names), opened.
    Gpu(GpuContext),
    /// No hardware GPU adapter: the reason, for a line that says so, and whether a software
    /// adapter is there (which `--backend gpu` would use).
    Cpu { why: String, software: bool },
}

impl GpuContext {
    /// Opens an adapter: the one whose name contains `adapter_name` (or `WGPU_ADAPTER_NAME`),
    /// else the most capable one (discrete GPU, then integrated, virtual, other, software).
    /// `WGPU_BACKEND` (e.g. `vulkan`) limits which APIs are searched.
    /// With `coop`, matmul's wide products run on the adapter's cooperative matrices where it
    /// has them (`--matmul coop`; see `coop_refused`).
    /// wgpu's shader runtime checks as `MNIST_GPU_SHADER_CHECKS` says (see `with_checks`).
    pub fn new(adapter_name: Option<&str>, coop: bool) -> Result<GpuContext> {
        Self::with_checks(adapter_name, coop, ShaderChecks::from_env()?)
    }

    /// As `new`, with wgpu's runtime checks in every shader as `checks` says, whatever the
    /// environment (the tests build contexts of both kinds in one process).
    pub fn with_checks(
        adapter_name: Option<&str>,
        coop: bool,
        checks: ShaderChecks,
    ) -> Result<GpuContext> {
        Self::open_with(adapter_name, coop.then_some(CoopTile::default()), checks)
    }

    /// As `with_checks`, `coop` saying which tiles `--matmul coop` prefers (None: the plain
    /// kernels).
    pub fn open_with(
        adapter_name: Option<&str>,
        coop: Option<CoopTile>,
        checks: ShaderChecks,
    ) -> Result<GpuContext> {
        let adapters = enumerate();
        let adapter = match wanted(adapter_name) {
            Some(name) => find_named(adapters, &name)?,
            None => adapters
                .into_iter()
                .min_by_key(|a| preference(a.get_info().device_type))
                .ok_or_else(|| Error::Gpu(format!("no GPU adapter found; {INSTALL_HINT}")))?,
        };
        Self::open(adapter, coop, checks)
    }

    /// `--backend auto`: the adapter `adapter_name` (or `WGPU_ADAPTER_NAME`) names, else the
    /// most capable adapter if it is a hardware one; otherwise why not. A hardware adapter that
    /// fails to open is a reason too: auto means the run goes on, on the CPU.
    pub fn auto(adapter_name: Option<&str>, coop: bool) -> Result<AutoChoice> {
        Self::auto_with(adapter_name, coop.then_some(CoopTile::default()))
    }

    /// As `auto`, `coop` saying which tiles `--matmul coop` prefers (None: the plain kernels).
    pub fn auto_with(adapter_name: Option<&str>, coop: Option<CoopTile>) -> Result<AutoChoice> {
        let checks = ShaderChecks::from_env()?;
        let mut adapters = enumerate();
        if let Some(name) = wanted(adapter_name) {
            return Ok(AutoChoice::Gpu(Self::open(
                find_named(adapters, &name)?,
                coop,
                checks,
            )?));
        }
        let found: Vec<(String, wgpu::DeviceType)> = adapters
            .iter()
            .map(|a| (a.get_info().name, a.get_info().device_type))
            .collect();
        match auto_choice(&found) {
            Ok(i) => {
                let name = found[i].0.clone();
                match Self::open(adapters.swap_remove(i), coop, checks) {
                    Ok(ctx) => Ok(AutoChoice::Gpu(ctx)),
                    Err(e) => Ok(AutoChoice::Cpu {
                        why: format!("the GPU adapter {name} did not open ({e})"),
                        software: false,
                    }),
                }
            }
            Err(why) => Ok(AutoChoice::Cpu {
                why,
                software: !found.is_empty(),
            }),
        }
    }

    /// Opens the device of `adapter` with the limits and features the kernels use, and builds
    /// every kernel's pipeline.
    fn open(
        adapter: wgpu::Adapter,
        coop: Option<CoopTile>,
        checks: ShaderChecks,
    ) -> Result<GpuContext> {
        let info = adapter.get_info();
        let coop_offered = adapter
            .cooperative_matrix_properties()
            .iter()
            .map(|c| {
                format!(
                    "{}×{}×{} {:?}→{:?}",
                    c.m_size, c.n_size, c.k_size, c.ab_type, c.cr_type
                )
                .to_lowercase()
            })
            .collect();
        let (coop, coop_refused) = match coop.map(|prefer| CoopConfig::find(&adapter, prefer)) {
            None => (None, None),
            Some(Ok(config)) => (Some(config), None),
            Some(Err(why)) => (None, Some(format!("{}: {why}", info.name))),
        };

        // The WebGPU defaults, what every adapter offers, so that a run that works here works
        // anywhere; but as much workgroup memory as the adapter has, which lets the fused step
        // hold larger blocks of samples (it falls back to smaller ones where there is less),
        // and timestamp queries where there are some (`bench --profile`).
        let limits = wgpu::Limits {
            max_compute_workgroup_storage_size: adapter
                .limits()
                .max_compute_workgroup_storage_size
                .max(wgpu::Limits::default().max_compute_workgroup_storage_size),
            ..wgpu::Limits::default()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("mnist-gpu device"),
            required_features: (adapter.features() & wgpu::Features::TIMESTAMP_QUERY)
                | coop.map_or(wgpu::Features::empty(), |c| c.features()),
            required_limits: limits,
            // Cooperative matrices are an experimental feature of wgpu's, asked for only when
            // the run asks for them. SAFETY: wgpu's token of accepting that such features may
            // still have bugs; the kernel is checked against the f64 reference on every adapter
            // that has them (tests/integration/kernels.rs).
            experimental_features: if coop.is_some() {
                unsafe { wgpu::ExperimentalFeatures::enabled() }
            } else {
                wgpu::ExperimentalFeatures::disabled()
            },
            ..Default::default()
        }))
        .map_err(|e| Error::Gpu(format!("{}: could not open the device: {e}", info.name)))?;

        let fault = faults_of(&device);
        let ctx = GpuContext {
            device,
            queue,
            info,
            kernels: KernelConfig {
                coop,
                ..KernelConfig::default()
            },
            coop_refused,
            coop_offered,
            shader_checks: checks,
            fault,
            in_flight: Mutex::new(VecDeque::new()),
            submitted: AtomicU64::new(0),
            layouts: Mutex::new(HashMap::new()),
            pipelines: Mutex::new(HashMap::new()),
        };
        // A cooperative-matrix kernel that does not build is refused now, not mid-run.
        if let Some(config) = coop {
            ctx.coop_pipeline(config)?;
        }
        Ok(ctx)
    }

    /// The adapter's name and kind; a software adapter says so, so nobody takes its timings
    /// for a GPU's.
    pub fn describe(&self) -> String {
        describe(&self.info)
    }

    /// Which kernels take matmul's wide products: "coop" (cooperative matrices) or "plain".
    pub fn matmul(&self) -> &'static str {
        if self.kernels.coop.is_some() {
            "coop"
        } else {
            "plain"
        }
    }

    /// The note for a run that asked for `--matmul coop` and runs the plain kernels.
    pub fn coop_note(&self) -> Option<String> {
        self.coop_refused
            .as_ref()
            .map(|why| format!("note: --matmul coop: {why}; the plain float32 kernels run"))
    }

    pub fn is_software(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// Turns any error wgpu reported since the context was built into a `Result`.
    pub fn check(&self) -> Result<()> {
        match self.fault.lock().unwrap().clone() {
            Some(message) => Err(Error::Gpu(format!(
                "{message} (--backend cpu avoids the GPU)"
            ))),
            None => Ok(()),
        }
    }

    /// Notes a submission of training work, and waits for the oldest one when more than
    /// `IN_FLIGHT` are unfinished: submitting never waits for the GPU otherwise, so a loop of
    /// steps with no read-back could queue seconds of work.
    pub fn throttle(&self, index: wgpu::SubmissionIndex) -> Result<()> {
        self.submitted.fetch_add(1, Ordering::Relaxed);
        let oldest = {
            let mut in_flight = self.in_flight.lock().unwrap();
            in_flight.push_back(index);
            if in_flight.len() <= IN_FLIGHT {
                return Ok(());
            }
            in_flight.pop_front().expect("more than IN_FLIGHT")
        };
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(oldest),
                timeout: None,
            })
            .map_err(|e| Error::Gpu(format!("waiting for the GPU: {e}")))?;
        self.check()
    }

    /// Submissions of training work so far.
    pub fn submits(&self) -> u64 {
        self.submitted.load(Ordering::Relaxed)
    }

    /// What this adapter allows, as the recordings need it.
    pub fn limits(&self) -> Limits {
        let l = self.device.limits();
        Limits {
            workgroup_storage: l.max_compute_workgroup_storage_size as usize,
            storage_binding: l.max_storage_buffer_binding_size,
            buffer: l.max_buffer_size,
        }
    }

    /// The bind group layout of `entries` (built once per context).
    pub fn layout(&self, label: &str, entries: &[(u32, Access)]) -> wgpu::BindGroupLayout {
        use wgpu::BufferBindingType::{Storage, Uniform};
        let mut built = self.layouts.lock().unwrap();
        built
            .entry(entries.to_vec())
            .or_insert_with(|| {
                let entries: Vec<_> = entries
                    .iter()
                    .map(|&(binding, access)| match access {
                        Access::Slot => buffer_entry(binding, Uniform, true),
                        Access::Uniform => buffer_entry(binding, Uniform, false),
                        Access::Read => buffer_entry(binding, Storage { read_only: true }, false),
                        Access::Write => buffer_entry(binding, Storage { read_only: false }, false),
                    })
                    .collect();
                bind_group_layout(&self.device, label, &entries)
            })
            .clone()
    }

    /// The pipeline `spec` describes, its layout's entries being `entries`, built once per
    /// context; or an error naming it.
    pub fn pipeline(
        &self,
        spec: &PipelineSpec,
        entries: &[(u32, Access)],
    ) -> Result<wgpu::ComputePipeline> {
        let key = format!(
            "{:?}",
            (
                spec.label,
                spec.source,
                spec.entry,
                &spec.constants,
                spec.zero_workgroup_memory,
                entries
            )
        );
        if let Some(pipeline) = self.pipelines.lock().unwrap().get(&key) {
            return Ok(pipeline.clone());
        }
        let (text, what) = match spec.source {
            Source::Shader(name) => (source(name).to_string(), format!("shader {name}.wgsl")),
            Source::Coop(config) => (config.source(), "shader matmul_coop.wgsl".to_string()),
        };
        let what = match spec.source {
            Source::Shader("fused") => format!("building the fused step's {} pipeline", spec.entry),
            _ => what,
        };
        let layout = self.layout(spec.label, entries);
        let pipeline = Pipeline {
            layout: Some(&layout),
            constants: &spec.constants,
            zero_workgroup_memory: spec.zero_workgroup_memory,
            ..Pipeline::new(spec.label, &what, &text, spec.entry)
        }
        .build(&self.device, self.shader_checks)?;
        self.pipelines.lock().unwrap().insert(key, pipeline.clone());
        Ok(pipeline)
    }

    /// Builds matmul's cooperative kernel for `config` (so that one that does not build is
    /// refused when the context opens).
    fn coop_pipeline(&self, config: crate::gpu::coop::CoopConfig) -> Result<()> {
        let entries = crate::gpu::kernels::MATMUL_BINDINGS;
        let spec = crate::gpu::kernels::coop_spec(config, crate::gpu::recording::BindLayout(0));
        self.pipeline(&spec, &entries).map(|_| ())
    }

    /// Copies the first `bytes` bytes of `buffer` back to the host, waiting for the GPU.
    pub fn read_bytes(&self, buffer: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("read"),
            });
        encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, bytes);
        self.queue.submit([encoder.finish()]);
        self.map_and_read(&staging)
    }

    /// The bytes of a `MAP_READ` buffer once everything submitted before has run (waits).
    pub fn map_and_read(&self, staging: &wgpu::Buffer) -> Result<Vec<u8>> {
        let (done, mapped) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |result| {
            let _ = done.send(result);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("waiting for the GPU: {e}")))?;
        self.check()?;
        let failed = |e: String| Error::Gpu(format!("reading {} back: {e}", staging.size()));
        mapped
            .recv()
            .map_err(|_| failed("no answer".into()))?
            .map_err(|e| failed(e.to_string()))?;
        let view = staging
            .get_mapped_range(..)
            .map_err(|e| failed(e.to_string()))?;
        Ok(view.to_vec())
    }

    /// Runs `f` inside error scopes; see [`scoped`](crate::gpu::pipeline::scoped).
    pub fn scoped<T>(&self, what: &str, f: impl FnOnce() -> T) -> Result<T> {
        scoped(&self.device, what, f)
    }
}

/// Where `device`'s errors outside error scopes go (wgpu's callbacks cannot return a `Result`).
fn faults_of(device: &wgpu::Device) -> Arc<Mutex<Option<String>>> {
    let fault = Arc::new(Mutex::new(None));
    let sink = fault.clone();
    device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
        sink.lock().unwrap().get_or_insert(one_line(&e.to_string()));
    }));
    let sink = fault.clone();
    // A lost device explains every error that follows it, so its message wins.
    device.set_device_lost_callback(move |reason, message| {
        *sink.lock().unwrap() = Some(format!(
            "the GPU device was lost ({reason:?}: {}); the driver may have reset or the GPU gone away",
            one_line(&message)
        ));
    });
    fault
}

/// Every adapter of the APIs `WGPU_BACKEND` allows (all primary ones by default).
fn enumerate() -> Vec<wgpu::Adapter> {
    let backends = wgpu::Backends::PRIMARY.with_env();
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends,
        ..wgpu::InstanceDescriptor::new_without_display_handle_from_env()
    });
    pollster::block_on(instance.enumerate_adapters(backends))
}

/// The adapter name asked for, `--adapter` or else `WGPU_ADAPTER_NAME`, lowercase.
fn wanted(adapter_name: Option<&str>) -> Option<String> {
    adapter_name
        .map(str::to_string)
        .or_else(|| std::env::var("WGPU_ADAPTER_NAME").ok())
        .map(|n| n.to_lowercase())
}

/// The adapter whose name contains `name` (lowercase).
fn find_named(adapters: Vec<wgpu::Adapter>, name: &str) -> Result<wgpu::Adapter> {
    let names: Vec<String> = adapters.iter().map(|a| describe(&a.get_info())).collect();
    adapters
        .into_iter()
        .find(|a| a.get_info().name.to_lowercase().contains(name))
        .ok_or_else(|| {
            Error::Gpu(if names.is_empty() {
                format!("no adapter named like {name:?}: no GPU adapter at all; {INSTALL_HINT}")
            } else {
                format!(
                    "no adapter named like {name:?}; found: {}",
                    names.join(", ")
                )
            })
        })
}

/// `--backend auto`'s choice among the adapters found (name, type): the most capable one if
/// it is hardware (a discrete, integrated or virtual GPU, or one of unknown type); else the
/// reason the CPU runs instead.
pub fn auto_choice(adapters: &[(String, wgpu::DeviceType)]) -> std::result::Result<usize, String> {
    let best = (0..adapters.len()).min_by_key(|&i| preference(adapters[i].1));
    match best {
        None => Err("no GPU adapter (no Vulkan, Metal or DirectX 12 driver found)".to_string()),
        Some(i) if adapters[i].1 == wgpu::DeviceType::Cpu => {
            let software: Vec<&str> = adapters.iter().map(|a| a.0.as_str()).collect();
            Err(format!(
                "no hardware GPU adapter (only {}, a software one)",
                software.join(", ")
            ))
        }
        Some(i) => Ok(i),
    }
}

fn preference(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

fn describe(info: &wgpu::AdapterInfo) -> String {
    let kind = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => "discrete GPU",
        wgpu::DeviceType::IntegratedGpu => "integrated GPU",
        wgpu::DeviceType::VirtualGpu => "virtual GPU",
        wgpu::DeviceType::Other => "unknown adapter type",
        wgpu::DeviceType::Cpu => "software adapter on the CPU, not a GPU",
    };
    format!("{} ({kind}, {:?})", info.name, info.backend)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wgpu::DeviceType::{Cpu, DiscreteGpu, IntegratedGpu, Other};

    #[test]
    fn auto_prefers_a_hardware_adapter_and_says_why_not() {
        let found = |list: &[(&str, wgpu::DeviceType)]| {
            let list: Vec<_> = list.iter().map(|(n, t)| (n.to_string(), *t)).collect();
            auto_choice(&list)
        };
        assert_eq!(
            found(&[("llvmpipe", Cpu), ("NVIDIA H100", DiscreteGpu)]),
            Ok(1)
        );
        assert_eq!(
            found(&[("Intel UHD", IntegratedGpu), ("AMD RX", DiscreteGpu)]),
            Ok(1)
        );
        assert_eq!(found(&[("mystery", Other)]), Ok(0));
        assert_eq!(
            found(&[("llvmpipe (LLVM 15.0.6, 256 bits)", Cpu)]),
            Err(
                "no hardware GPU adapter (only llvmpipe (LLVM 15.0.6, 256 bits), a software one)"
                    .into()
            )
        );
        assert!(found(&[]).unwrap_err().starts_with("no GPU adapter"));
    }
}
