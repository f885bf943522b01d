//! `--augment` on the GPU, as both engines keep it: what a batch's copies are made with, by
//! augment.wgsl (`ShiftBuffer`: its shifts) or warp.wgsl (`WarpBuffer`: its warps), from the
//! pool's images into the engine's buffer of copies (which `classify`'s images use too). Each
//! engine makes them on first use and keeps them in its `Copied`, beside the bindings that read
//! them.

use crate::augment::{Warps, RECORD_WORDS};
use crate::data::pool::Shift;
use crate::data::PIXELS;
use crate::error::Result;
use crate::gpu::recording::{Buf, Tape};

/// The shifts augment.wgsl reads, in regions of room for a batch of `capacity`, one region per
/// step of a submit.
pub struct ShiftBuffer {
    /// (dx, dy) per image as two i32: (2, capacity) per region. Steps recorded into one
    /// submit each take a region of their own.
    pub shifts: Buf,
    pub regions: usize,
    capacity: usize,
    /// The host copy of one region.
    host: Vec<i32>,
}

/// The buffer of a batch's copies: up to `capacity` images in batch order, 784 bytes each
/// (shifted or warped, or the images `classify` is given).
pub fn copies_buffer(tape: &mut Tape, capacity: usize) -> Result<Buf> {
    tape.storage("copied images", (PIXELS * capacity) as u64)
}

impl ShiftBuffer {
    /// Shifts for `regions` batches of up to `capacity` images, in a buffer that errors name
    /// `label`.
    pub fn new(
        tape: &mut Tape,
        capacity: usize,
        regions: usize,
        label: &str,
    ) -> Result<ShiftBuffer> {
        Ok(ShiftBuffer {
            shifts: tape.storage(label, (8 * capacity * regions) as u64)?,
            regions,
            capacity,
            host: Vec::with_capacity(2 * capacity),
        })
    }

    /// Writes `shifts` into `region` (the write lands at the next submit, before the dispatches
    /// recorded with it); returns where the region starts, in i32s.
    pub fn write(&mut self, tape: &mut Tape, region: usize, shifts: &[Shift]) -> u32 {
        assert!(region < self.regions, "no shift region {region}");
        let start = 2 * self.capacity * region;
        self.host.clear();
        self.host
            .extend(shifts.iter().flat_map(|s| [s.dx as i32, s.dy as i32]));
        tape.write_values(self.shifts, 4 * start as u64, &self.host);
        start as u32
    }
}

/// What a training step's images are copied with: `--augment`'s shifts or its warps.
#[derive(Clone, Copy)]
pub enum Copies<'a> {
    Shifts(&'a [Shift]),
    Warps(&'a Warps),
}

/// `--augment affine|elastic` on the GPU: the records warp.wgsl reads (`Warps::record`: the
/// step's key, strengths and taps, the same size whatever the batch), one region per step of a
/// submit. Nothing per image: warp.wgsl draws each image's warp from the key.
pub struct WarpBuffer {
    pub warps: Buf,
    pub regions: usize,
}

impl WarpBuffer {
    pub fn new(tape: &mut Tape, regions: usize) -> Result<WarpBuffer> {
        let bytes = 4 * RECORD_WORDS * regions;
        Ok(WarpBuffer {
            warps: tape.storage("warps", bytes as u64)?,
            regions,
        })
    }

    /// Writes `warps`' record into `region` (the write lands at the next submit); returns
    /// where the region starts, in words.
    pub fn write(&mut self, tape: &mut Tape, region: usize, warps: &Warps) -> u32 {
        assert!(region < self.regions, "no warp region {region}");
        let start = RECORD_WORDS * region;
        tape.write_values(self.warps, 4 * start as u64, &warps.record());
        start as u32
    }
}
