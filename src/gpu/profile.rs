//! GPU time per kernel from timestamp queries (`mnist-gpu bench --profile`), where the adapter
//! has them (`Features::TIMESTAMP_QUERY`). Each timed dispatch runs in a compute pass of its
//! own whose start and end are stamped; the totals are kept per kernel name.

use crate::error::Result;
use crate::gpu::GpuContext;

/// Timestamps one query set holds: two per timed dispatch (wgpu allows at most 4,096).
const QUERIES: u32 = 4096;

/// Collects the GPU time of the dispatches recorded with its `Timing`s.
pub struct Profiler {
    query_set: wgpu::QuerySet,
    resolved: wgpu::Buffer,
    /// Nanoseconds per timestamp tick.
    period_ns: f64,
    /// Per kernel, in the order first seen: total GPU seconds and dispatches.
    kernels: Vec<(&'static str, f64, usize)>,
    /// Dispatches that found the query set full and ran untimed.
    untimed: usize,
}

/// The labels of the dispatches one recorder timed, in query order.
pub struct Timing {
    query_set: wgpu::QuerySet,
    resolved: wgpu::Buffer,
    labels: Vec<&'static str>,
    untimed: usize,
}

impl Timing {
    /// The query set and the index of the next dispatch's start stamp, or None when full.
    pub fn next(&mut self, label: &'static str) -> Option<(wgpu::QuerySet, u32)> {
        let first = 2 * self.labels.len() as u32;
        if first + 2 > QUERIES {
            self.untimed += 1;
            return None;
        }
        self.labels.push(label);
        Some((self.query_set.clone(), first))
    }

    /// Records the copy of the stamps into the profiler's buffer.
    pub fn resolve(&self, encoder: &mut wgpu::CommandEncoder) {
        let queries = 2 * self.labels.len() as u32;
        if queries > 0 {
            encoder.resolve_query_set(&self.query_set, 0..queries, &self.resolved, 0);
        }
    }
}

impl Profiler {
    /// A profiler, or None when the device has no timestamp queries.
    pub fn new(ctx: &GpuContext) -> Option<Profiler> {
        if !ctx
            .device
            .features()
            .contains(wgpu::Features::TIMESTAMP_QUERY)
        {
            return None;
        }
        let query_set = ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("kernel timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count: QUERIES,
        });
        let resolved = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("resolved timestamps"),
            size: wgpu::QUERY_SIZE as u64 * QUERIES as u64,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        Some(Profiler {
            query_set,
            resolved,
            period_ns: ctx.queue.get_timestamp_period() as f64,
            kernels: Vec::new(),
            untimed: 0,
        })
    }

    /// What a recorder needs to time its dispatches.
    pub fn timing(&self) -> Timing {
        Timing {
            query_set: self.query_set.clone(),
            resolved: self.resolved.clone(),
            labels: Vec::new(),
            untimed: 0,
        }
    }

    /// Reads the stamps of a submitted recorder's dispatches (waiting for the GPU) and adds
    /// them to the totals.
    pub fn collect(&mut self, ctx: &GpuContext, timing: Timing) -> Result<()> {
        self.untimed += timing.untimed;
        if timing.labels.is_empty() {
            return Ok(());
        }
        let bytes = ctx.read_bytes(&self.resolved, 16 * timing.labels.len() as u64)?;
        let stamps: Vec<u64> = bytemuck::pod_collect_to_vec(&bytes);
        for (label, pair) in timing.labels.iter().zip(stamps.chunks_exact(2)) {
            let seconds = pair[1].saturating_sub(pair[0]) as f64 * self.period_ns * 1e-9;
            match self.kernels.iter_mut().find(|(name, ..)| name == label) {
                Some((_, total, count)) => {
                    *total += seconds;
                    *count += 1;
                }
                None => self.kernels.push((label, seconds, 1)),
            }
        }
        Ok(())
    }

    /// Per kernel: its name, total GPU seconds and dispatches, since the profiler was made.
    pub fn kernels(&self) -> &[(&'static str, f64, usize)] {
        &self.kernels
    }

    /// Dispatches that ran without timestamps (more than a query set holds in one submit).
    pub fn untimed(&self) -> usize {
        self.untimed
    }
}
