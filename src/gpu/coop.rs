//! matmul's cooperative-matrix kernel (`--matmul coop`): what an adapter offers for it, and its
//! module, shaders/matmul_coop.wgsl fitted to that and compiled after shaders/matmul.wgsl.

use crate::gpu::shaders::source;

/// The cooperative-matrix tiles `--matmul coop` multiplies on an adapter, which
/// shaders/matmul_coop.wgsl is fitted to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoopConfig {
    /// The side of a tile: 8 or 16.
    pub size: u32,
    /// Whether the tiles hold f16 (else f32); the sums are f32 either way.
    pub f16_inputs: bool,
    /// The adapter's subgroup size, the threads of a workgroup.
    pub lanes: u32,
}

impl CoopConfig {
    /// What `adapter` offers for the kernel: square 8×8 or 16×16 tiles with f32 sums, of f32
    /// inputs if it has them (the closest to the plain kernels), else of f16, the larger tile
    /// first; and one subgroup size. Else why not, in a few words.
    pub fn find(adapter: &wgpu::Adapter) -> std::result::Result<CoopConfig, String> {
        use wgpu::CooperativeScalarType as Scalar;
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
        let offered = adapter.cooperative_matrix_properties();
        let has = |size: u32, input: Scalar| {
            offered.iter().any(|c| {
                (c.m_size, c.n_size, c.k_size) == (size, size, size)
                    && c.ab_type == input
                    && c.cr_type == Scalar::F32
            })
        };
        let f16 = features.contains(wgpu::Features::SHADER_F16);
        let choices = [(16, false), (8, false), (16, true), (8, true)];
        choices
            .into_iter()
            .find(|&(size, f16_inputs)| {
                (!f16_inputs || f16)
                    && has(size, if f16_inputs { Scalar::F16 } else { Scalar::F32 })
            })
            .map(|(size, f16_inputs)| CoopConfig {
                size,
                f16_inputs,
                lanes: info.subgroup_max_size,
            })
            .ok_or_else(|| {
                "none of its cooperative tiles is 8×8 or 16×16 with f32 sums of f32 or f16".into()
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
