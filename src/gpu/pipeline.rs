//! How a compute pipeline is built and bound, in one place for the per-operation kernels
//! (`kernels.rs`) and the fused step (`fused.rs`): the shader module, its override constants,
//! the bind group layout, the pipeline, all inside error scopes (`Pipeline::build`); and the
//! layout entries and bind groups of buffers (`bind_group_layout`, `bind_group`).

use std::num::NonZeroU64;

use crate::error::{Error, Result};

/// The environment variable that turns wgpu's runtime checks back on in every shader
/// (`MNIST_GPU_SHADER_CHECKS=1`), to tell a kernel's own out-of-bounds access from a driver's
/// fault while diagnosing.
pub const SHADER_CHECKS_VAR: &str = "MNIST_GPU_SHADER_CHECKS";

/// Whether wgpu adds its runtime checks to the project's shaders: a clamp on every dynamic
/// index into a buffer, a workgroup or a function-local array, a counter and a second exit in
/// every loop (naga's `force_loop_bounding`), and guarded integer division. Off by default:
/// the counters and clamps can keep a driver from unrolling the small constant loops that keep
/// accumulators in registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShaderChecks {
    Off,
    On,
}

impl ShaderChecks {
    /// From `MNIST_GPU_SHADER_CHECKS`: `1` on; unset, empty or `0` off; anything else refused.
    pub fn from_env() -> Result<ShaderChecks> {
        let value = std::env::var(SHADER_CHECKS_VAR).unwrap_or_default();
        ShaderChecks::parse(&value)
    }

    /// The variable's value read as `from_env` reads it.
    pub fn parse(value: &str) -> Result<ShaderChecks> {
        match value.trim() {
            "" | "0" => Ok(ShaderChecks::Off),
            "1" => Ok(ShaderChecks::On),
            other => Err(Error::Config(format!(
                "{SHADER_CHECKS_VAR}={other:?}: expected 1 (wgpu's shader runtime checks on) \
                 or 0 (off, the default)"
            ))),
        }
    }

    /// "on" or "off", as bench's header and JSON say it.
    pub fn name(self) -> &'static str {
        match self {
            ShaderChecks::Off => "off",
            ShaderChecks::On => "on",
        }
    }
}

/// What one compute pipeline is built from.
pub struct Pipeline<'a> {
    /// The pipeline's label, as profiles and wgpu's messages name it.
    pub label: &'a str,
    /// What failed, should the build fail ("shader matmul.wgsl").
    pub what: &'a str,
    /// The WGSL module's text.
    pub source: &'a str,
    pub entry: &'a str,
    /// The bind group layout of group 0; None: derived from the shader (a derived layout serves
    /// that pipeline only).
    pub layout: Option<&'a wgpu::BindGroupLayout>,
    /// Values of the module's `override` constants, by name.
    pub constants: &'a [(&'a str, f64)],
    /// Whether the workgroup memory is cleared before each dispatch, as WGSL promises by
    /// default. Only a kernel that writes its workgroup memory before reading it may say false
    /// (the fused step's): it spares a clearing pass over that memory on every dispatch.
    pub zero_workgroup_memory: bool,
}

impl<'a> Pipeline<'a> {
    /// Entry point `entry` of `source`: a layout derived from the shader, no constants given
    /// (their defaults hold), workgroup memory cleared.
    pub fn new(label: &'a str, what: &'a str, source: &'a str, entry: &'a str) -> Pipeline<'a> {
        Pipeline {
            label,
            what,
            source,
            entry,
            layout: None,
            constants: &[],
            zero_workgroup_memory: true,
        }
    }

    /// The pipeline, or an error naming `what` (a shader that does not compile, a constant it
    /// does not declare); its module with wgpu's runtime checks as `checks` says.
    pub fn build(
        &self,
        device: &wgpu::Device,
        checks: ShaderChecks,
    ) -> Result<wgpu::ComputePipeline> {
        scoped(device, self.what, || {
            let descriptor = wgpu::ShaderModuleDescriptor {
                label: Some(self.label),
                source: wgpu::ShaderSource::Wgsl(self.source.into()),
            };
            let module = match checks {
                ShaderChecks::On => device.create_shader_module(descriptor),
                // SAFETY: the unchecked module may not index out of bounds, loop forever or
                // divide an integer by zero. Only the project's own shaders come here (the
                // sources in shaders.rs, WGSL validated by naga all the same), and in them:
                // every index derives from sizes the host validates before recording (a
                // batch within the capacity its buffers were sized for, list positions within
                // the index list, the model's shape in override constants); every loop runs
                // to a bound from those sizes; every integer divisor is a constant or a layer
                // size, at least 1. The kernel tests run at awkward sizes (not multiples of
                // any tile) with NaN-poisoned outputs, in both modes, and the fused and
                // parity tests compare the two modes' steps.
                ShaderChecks::Off => unsafe {
                    device.create_shader_module_trusted(
                        descriptor,
                        wgpu::ShaderRuntimeChecks::unchecked(),
                    )
                },
            };
            let pipeline_layout = self.layout.map(|layout| {
                device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                    label: Some(self.label),
                    bind_group_layouts: &[Some(layout)],
                    immediate_size: 0,
                })
            });
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(self.label),
                layout: pipeline_layout.as_ref(),
                module: &module,
                entry_point: Some(self.entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: self.constants,
                    zero_initialize_workgroup_memory: self.zero_workgroup_memory,
                },
                cache: None,
            })
        })
    }
}

/// A buffer at `binding`, seen by compute shaders; `dynamic`: bound at an offset given with
/// each dispatch.
pub fn buffer_entry(
    binding: u32,
    ty: wgpu::BufferBindingType,
    dynamic: bool,
) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty,
            has_dynamic_offset: dynamic,
            min_binding_size: None,
        },
        count: None,
    }
}

pub fn bind_group_layout(
    device: &wgpu::Device,
    label: &str,
    entries: &[wgpu::BindGroupLayoutEntry],
) -> wgpu::BindGroupLayout {
    device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some(label),
        entries,
    })
}

/// One buffer of a bind group: `bytes` of it from `offset` (None: to its end).
#[derive(Clone, Copy)]
pub struct Binding<'a> {
    pub binding: u32,
    pub buffer: &'a wgpu::Buffer,
    pub offset: u64,
    pub bytes: Option<u64>,
}

impl<'a> Binding<'a> {
    /// The whole of `buffer`.
    pub fn whole(binding: u32, buffer: &'a wgpu::Buffer) -> Binding<'a> {
        Binding {
            binding,
            buffer,
            offset: 0,
            bytes: None,
        }
    }

    /// `bytes` of `buffer` from `offset`.
    pub fn range(binding: u32, buffer: &'a wgpu::Buffer, offset: u64, bytes: u64) -> Binding<'a> {
        Binding {
            binding,
            buffer,
            offset,
            bytes: Some(bytes),
        }
    }
}

pub fn bind_group(
    device: &wgpu::Device,
    label: &str,
    layout: &wgpu::BindGroupLayout,
    bindings: &[Binding],
) -> wgpu::BindGroup {
    let entries: Vec<wgpu::BindGroupEntry> = bindings
        .iter()
        .map(|b| wgpu::BindGroupEntry {
            binding: b.binding,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: b.buffer,
                offset: b.offset,
                size: b.bytes.and_then(NonZeroU64::new),
            }),
        })
        .collect();
    device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some(label),
        layout,
        entries: &entries,
    })
}

/// Runs `f` inside validation and out-of-memory error scopes, so that a bad shader or a buffer
/// too large becomes an `Err` naming `what` instead of a panic from a wgpu callback.
pub fn scoped<T>(device: &wgpu::Device, what: &str, f: impl FnOnce() -> T) -> Result<T> {
    let memory = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let value = f();
    let errors = [
        pollster::block_on(validation.pop()),
        pollster::block_on(memory.pop()),
    ];
    match errors.into_iter().flatten().next() {
        Some(e) => Err(Error::Gpu(format!("{what}: {}", one_line(&e.to_string())))),
        None => Ok(value),
    }
}

/// wgpu's messages span several lines; errors here are one line.
pub fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shader_checks_from_the_variable() {
        assert_eq!(ShaderChecks::parse("").unwrap(), ShaderChecks::Off);
        assert_eq!(ShaderChecks::parse("0").unwrap(), ShaderChecks::Off);
        assert_eq!(ShaderChecks::parse(" 1 ").unwrap(), ShaderChecks::On);
        let e = ShaderChecks::parse("on").unwrap_err().to_string();
        assert!(
            e.starts_with("MNIST_GPU_SHADER_CHECKS=\"on\": expected 1"),
            "{e}"
        );
    }
}
