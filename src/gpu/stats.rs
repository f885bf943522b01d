//! The steps' statistics read back without waiting: the ring of (loss, correct) sums is copied,
//! after the steps submitted so far, into a buffer of its own that the host maps when the GPU
//! gets there. Training's checks between progress lines read this way, so the queue never
//! drains for them and the run of steps per submit keeps growing. The copy is waited for only
//! once the next run of steps is submitted behind it.

use std::sync::mpsc::{channel, Receiver, TryRecvError};

use crate::backend::{BatchStats, STATS_KEPT};
use crate::error::{Error, Result};
use crate::gpu::recording::Region;
use crate::gpu::GpuContext;

type Mapped = std::result::Result<(), wgpu::BufferAsyncError>;

/// A copy of a buffer's region on its way back.
pub struct PendingRead {
    staging: wgpu::Buffer,
    mapped: Receiver<Mapped>,
    /// Submissions of training work when it was asked for (see `due`).
    submits: u64,
}

impl PendingRead {
    /// Copies `region` of `buffer` after everything submitted so far and asks for the copy
    /// mapped.
    pub fn start(ctx: &GpuContext, buffer: &wgpu::Buffer, region: Region) -> PendingRead {
        let staging = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("step statistics read"),
            size: region.bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("step statistics read"),
            });
        encoder.copy_buffer_to_buffer(buffer, region.offset, &staging, 0, region.bytes);
        ctx.queue.submit([encoder.finish()]);
        let (done, mapped) = channel();
        staging.map_async(wgpu::MapMode::Read, .., move |result| {
            let _ = done.send(result);
        });
        PendingRead {
            staging,
            mapped,
            submits: ctx.submits(),
        }
    }

    /// Whether a submit of steps has followed the copy: then it is waited for, which leaves
    /// those steps queued (the GPU never idles for it), and the check comes at most one
    /// submit after the step it follows.
    pub fn due(&self, ctx: &GpuContext) -> bool {
        ctx.submits() > self.submits
    }

    /// The bytes once the copy is mapped; None while it is not (with `wait`, waits for it).
    pub fn poll(&self, ctx: &GpuContext, wait: bool) -> Result<Option<Vec<u8>>> {
        let poll = if wait {
            wgpu::PollType::wait_indefinitely()
        } else {
            wgpu::PollType::Poll
        };
        ctx.device
            .poll(poll)
            .map_err(|e| Error::Gpu(format!("waiting for the GPU: {e}")))?;
        ctx.check()?;
        let failed = |e: String| Error::Gpu(format!("reading the step statistics back: {e}"));
        match self.mapped.try_recv() {
            Err(TryRecvError::Empty) if !wait => return Ok(None),
            Err(_) => return Err(failed("no answer".into())),
            Ok(result) => result.map_err(|e| failed(e.to_string()))?,
        }
        let view = self
            .staging
            .get_mapped_range(..)
            .map_err(|e| failed(e.to_string()))?;
        Ok(Some(view.to_vec()))
    }
}

/// The mean (loss, accuracy) of the last `count` of `recorded` steps, oldest first, from the
/// ring's sums `sums: (2, STATS_KEPT)` and each slot's batch size.
pub fn stats_of(sums: &[f32], batch: &[usize], recorded: usize, count: usize) -> Vec<BatchStats> {
    (recorded - count..recorded)
        .map(|step| {
            let slot = step % STATS_KEPT;
            let m = batch[slot] as f64;
            BatchStats {
                loss: sums[2 * slot] as f64 / m,
                accuracy: sums[2 * slot + 1] as f64 / m,
            }
        })
        .collect()
}
