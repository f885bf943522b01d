//! Which copy of the CPU kernels runs: the instruction sets they are compiled for, and the
//! proof (`Simd`, made only by `detect`) that this CPU has the one chosen. The fused and wide
//! engines and the twins in `ops` (the warp) share it.

/// The instruction sets the kernels are compiled for, narrowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// Whatever the build target promises (SSE2 on x86-64); no fused multiply-add.
    Portable,
    /// NEON on aarch64 (4 floats per vector, with fused multiply-add): only the wide engine
    /// has a copy for it; elsewhere it means `Portable`.
    Neon,
    /// AVX2 + FMA: 8 floats per vector.
    Avx2,
    /// AVX-512F (with AVX2 + FMA): 16 floats per vector, 32 vector registers.
    Avx512,
}

/// Which copy of the kernels runs (the `simd` argument of the kernels). Only `detect` makes
/// one, so holding a `Simd` proves that the CPU runs its instruction set: that is what makes
/// the kernels' `unsafe` calls into `#[target_feature]` code sound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Simd(Isa);

impl Simd {
    /// The widest instruction set up to `max` that this CPU reports: on x86-64 `Avx512`,
    /// `Avx2` or `Portable`; on aarch64 `Neon` (which every such CPU has) or `Portable`.
    pub fn detect(max: Isa) -> Simd {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
            let avx512 = avx2 && is_x86_feature_detected!("avx512f");
            let best = if avx512 {
                Isa::Avx512
            } else if avx2 {
                Isa::Avx2
            } else {
                Isa::Portable
            };
            // `Neon` as a cap means no more than what runs everywhere.
            let max = if max == Isa::Neon { Isa::Portable } else { max };
            Simd(best.min(max))
        }
        #[cfg(target_arch = "aarch64")]
        {
            Simd(Isa::Neon.min(max))
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            let _ = max;
            Simd(Isa::Portable)
        }
    }

    /// The instruction set of the copy that runs.
    pub fn isa(self) -> Isa {
        self.0
    }
}
