//! matmul's cooperative-matrix kernel (`--matmul coop`): what an adapter offers for it, and its
//! module, shaders/matmul_coop.wgsl fitted to that and compiled after shaders/matmul.wgsl.

use crate::gpu::shaders::source;

/// The tile the kernel takes among those `offered`: square 8×8 or 16×16 with f32 sums, of
/// `prefer`'s inputs if there are some (f16 ones only where `f16`: the adapter has
/// SHADER_F16), else of the other's, the larger tile first. (side, f16 inputs), or why none.
pub fn choose(
    offered: &[wgpu::CooperativeMatrixProperties],
    f16: bool,
    prefer: CoopTile,
) -> std::result::Result<(u32, bool), String> {
    use wgpu::CooperativeScalarType as Scalar;
    let has = |size: u32, input: Scalar| {
        offered.iter().any(|c| {
            (c.m_size, c.n_size, c.k_size) == (size, size, size)
                && c.ab_type == input
                && c.cr_type == Scalar::F32
        })
    };
    let f32_first = [(16, false), (8, false), (16, true), (8, true)];
    let f16_first = [(16, true), (8, true), (16, false), (8, false)];
    let order = match prefer {
        CoopTile::F32 => f32_first,
        CoopTile::F16 => f16_first,
    };
    order
        .into_iter()
        .find(|&(size, f16_inputs)| {
            (!f16_inputs || f16) && has(size, if f16_inputs { Scalar::F16 } else { Scalar::F32 })
        })
        .ok_or_else(|| {
            "none of its cooperative tiles is 8×8 or 16×16 with f32 sums of f32 or f16".into()
        })
}

/// The cooperative-matrix tiles `--matmul coop` multiplies on an adapter, which
/// shaders/matmul_coop.wgsl is fitted to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CoopConfig {
    /// The side of a tile: 8 or 16.
    pub size: u32,
    /// Whether the tiles hold f16 (else f32); the sums are f32 either way.
    pub f16_inputs: bool,
    /// The adapter's subgroup size, the threads of a workgroup.
    pub lanes: u32,
}

/// Which tiles `--matmul coop` takes where the adapter offers both kinds (`bench --coop-tile`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum CoopTile {
    /// Tiles of f32 inputs first (8×8 on NVIDIA's Vulkan driver): the closest to the plain
    /// kernels' results.
    #[default]
    F32,
    /// Tiles of f16 inputs first (16×16 on NVIDIA's): the ones expected to be several times
    /// faster, inputs rounded to 10 bits of mantissa.
    F16,
}

impl CoopTile {
    pub fn name(self) -> &'static str {
        match self {
            CoopTile::F32 => "f32",
            CoopTile::F16 => "f16",
        }
    }
}

impl CoopConfig {
    /// What `adapter` offers for the kernel (see `choose`), tiles of `prefer`'s inputs first;
    /// and one subgroup size. Else why not, in a few words.
    pub fn find(
        adapter: &wgpu::Adapter,
        prefer: CoopTile,
    ) -> std::result::Result<CoopConfig, String> {
        let features = adapter.features();
        if !features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) {
            return Err("it has no cooperative matrices".into());
        }
        let info = adapter.get_info();
        if info.subgroup_min_size != info.subgroup_max_size || info.subgroup_max_size == 0 {
            return Err(format!(
                "its subgroup size varies ({}..{})",
                info.subgroup_min_size, info.subgroup_max_size
            ));
        }
        let f16 = features.contains(wgpu::Features::SHADER_F16);
        let offered = adapter.cooperative_matrix_properties();
        choose(&offered, f16, prefer).map(|(size, f16_inputs)| CoopConfig {
            size,
            f16_inputs,
            lanes: info.subgroup_max_size,
        })
    }

    /// The device features the kernel needs.
    pub fn features(&self) -> wgpu::Features {
        let f16 = if self.f16_inputs {
            wgpu::Features::SHADER_F16
        } else {
            wgpu::Features::empty()
        };
        wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX | f16
    }

    /// The kernel's module: the enable directives, matmul.wgsl, then matmul_coop.wgsl with its
    /// tile, input type and workgroup fitted.
    pub fn source(&self) -> String {
        let size = self.size;
        let input = if self.f16_inputs { "f16" } else { "f32" };
        let coop = [
            ("alias In = f16;", format!("alias In = {input};")),
            ("const S: u32 = 8u;", format!("const S: u32 = {size}u;")),
            (
                "const LANES: u32 = 8u;",
                format!("const LANES: u32 = {}u;", self.lanes),
            ),
            ("coop_mat8x8", format!("coop_mat{size}x{size}")),
        ]
        .iter()
        .fold(source("matmul_coop").to_string(), |text, (from, to)| {
            assert!(text.contains(from), "matmul_coop.wgsl: no `{from}` to fit");
            text.replace(from, to)
        });
        let f16 = if self.f16_inputs { "enable f16;\n" } else { "" };
        format!(
            "{f16}enable wgpu_cooperative_matrix;\n{}\n{coop}",
            source("matmul")
        )
    }

    /// In a few words, for the run's header.
    pub fn describe(&self) -> String {
        let input = if self.f16_inputs { "f16" } else { "f32" };
        format!("cooperative {0}×{0} tiles of {input}, f32 sums", self.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wgpu::CooperativeScalarType::{F16, F32};

    fn tile(size: u32, ab: wgpu::CooperativeScalarType) -> wgpu::CooperativeMatrixProperties {
        wgpu::CooperativeMatrixProperties {
            m_size: size,
            n_size: size,
            k_size: size,
            ab_type: ab,
            cr_type: F32,
            saturating_accumulation: false,
        }
    }

    #[test]
    fn the_preferred_inputs_first_where_both_are_offered() {
        // What NVIDIA's Vulkan driver lists: 16×16 f16 and 8×8 f32 (with f32 sums).
        let nvidia = [tile(16, F16), tile(8, F32), tile(16, F16)];
        assert_eq!(choose(&nvidia, true, CoopTile::F32), Ok((8, false)));
        assert_eq!(choose(&nvidia, true, CoopTile::F16), Ok((16, true)));
        // Without SHADER_F16 the f16 tiles cannot be used, whatever is preferred.
        assert_eq!(choose(&nvidia, false, CoopTile::F16), Ok((8, false)));
        // Only one kind: that one, whatever is preferred; the larger tile first.
        let f16_only = [tile(8, F16), tile(16, F16)];
        assert_eq!(choose(&f16_only, true, CoopTile::F32), Ok((16, true)));
        let f32_only = [tile(8, F32), tile(16, F32)];
        assert_eq!(choose(&f32_only, true, CoopTile::F16), Ok((16, false)));
        // f16 sums, odd shapes: none.
        let mut f16_sums = tile(16, F16);
        f16_sums.cr_type = F16;
        let odd = wgpu::CooperativeMatrixProperties {
            k_size: 8,
            ..tile(16, F32)
        };
        assert!(choose(&[f16_sums, odd], true, CoopTile::F16).is_err());
        assert!(choose(&[], true, CoopTile::F32).is_err());
    }
}
