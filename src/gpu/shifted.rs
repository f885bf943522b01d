//! `--augment` on the GPU, as both paths keep it: a batch's shifted copies, which augment.wgsl
//! makes from the pool's images, and the shifts it makes them with. Each path makes one on its
//! first shifted step (or its first `classify`, whose images it holds too) and keeps it in its
//! `Shifted`, beside the bindings that read it.

use crate::data::pool::Shift;
use crate::data::PIXELS;
use crate::error::Result;
use crate::gpu::context::GpuContext;

pub struct ShiftedImages {
    /// A batch's images in batch order, 784 bytes each: the shifted copies augment makes, or
    /// the images `classify` is given.
    pub images: wgpu::Buffer,
    /// (dx, dy) per image as two i32: (2, capacity) per region. Steps recorded into one
    /// submit each take a region of their own.
    pub shifts: wgpu::Buffer,
    pub regions: usize,
    capacity: usize,
    /// The host copy of one region.
    host: Vec<i32>,
}

impl ShiftedImages {
    /// Room for batches of up to `capacity` images, and shifts for `regions` of them, in a
    /// buffer that errors name `shifts_label`.
    pub fn new(
        ctx: &GpuContext,
        capacity: usize,
        regions: usize,
        shifts_label: &str,
    ) -> Result<ShiftedImages> {
        Ok(ShiftedImages {
            images: ctx.storage("shifted images", (PIXELS * capacity) as u64)?,
            shifts: ctx.storage(shifts_label, (8 * capacity * regions) as u64)?,
            regions,
            capacity,
            host: Vec::with_capacity(2 * capacity),
        })
    }

    /// Writes `shifts` into `region` (the write lands at the next submit, before the dispatches
    /// recorded with it); returns where the region starts, in i32s.
    pub fn write(&mut self, ctx: &GpuContext, region: usize, shifts: &[Shift]) -> u32 {
        assert!(region < self.regions, "no shift region {region}");
        let start = 2 * self.capacity * region;
        self.host.clear();
        self.host
            .extend(shifts.iter().flat_map(|s| [s.dx as i32, s.dy as i32]));
        ctx.queue.write_buffer(
            &self.shifts,
            4 * start as u64,
            bytemuck::cast_slice(&self.host),
        );
        start as u32
    }
}
