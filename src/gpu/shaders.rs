//! What the Rust side and the WGSL side share: the shaders' sources, and the codes by which the
//! shaders tell activations and optimizers apart.
//!
//! A code is defined here alone and handed to WGSL by name, as an override constant: a shader
//! declares `override ELU: u32 = 1u;` and compares `p.act == ELU`, never a bare `1u`. The
//! defaults in the .wgsl files let a shader compile on its own (naga, a browser); a test checks
//! them against the codes here (tests/integration/shaders.rs).

use crate::model::Activation;
use crate::optimizer::Optimizer;

/// Every kernel's source, compiled into the binary. Tests validate each with naga. All but
/// `fused` and `matmul` hold one kernel, entry point `main`, wrapped in `kernels.rs`; `fused`
/// holds the fused step's kernels (`gpu::fused`); `matmul` two kernels, `main` and `tiled`, and
/// `matmul_coop` a third one to add to them.
pub const SHADERS: &[(&str, &str)] = &[
    ("matmul", include_str!("../../shaders/matmul.wgsl")),
    ("activation", include_str!("../../shaders/activation.wgsl")),
    (
        "activation_grad",
        include_str!("../../shaders/activation_grad.wgsl"),
    ),
    ("softmax", include_str!("../../shaders/softmax.wgsl")),
    (
        "output_grad",
        include_str!("../../shaders/output_grad.wgsl"),
    ),
    (
        "sum_columns",
        include_str!("../../shaders/sum_columns.wgsl"),
    ),
    (
        "sum_partials",
        include_str!("../../shaders/sum_partials.wgsl"),
    ),
    ("sgd_update", include_str!("../../shaders/sgd_update.wgsl")),
    (
        "momentum_update",
        include_str!("../../shaders/momentum_update.wgsl"),
    ),
    (
        "adam_update",
        include_str!("../../shaders/adam_update.wgsl"),
    ),
    ("augment", include_str!("../../shaders/augment.wgsl")),
    ("warp", include_str!("../../shaders/warp.wgsl")),
    ("fused", include_str!("../../shaders/fused.wgsl")),
    // Not a shader on its own: matmul's cooperative-matrix kernel, compiled after matmul.wgsl
    // (`CoopConfig::source`).
    (
        "matmul_coop",
        include_str!("../../shaders/matmul_coop.wgsl"),
    ),
];

/// The source of shader `name`.
pub fn source(name: &str) -> &'static str {
    SHADERS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, source)| *source)
        .expect("a listed shader")
}

/// A code the shaders know by `name` (an override constant of theirs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Code {
    pub name: &'static str,
    pub value: u32,
}

/// The activations' codes (`activation`, `activation_grad` and `fused` compare against them).
pub const RELU: Code = Code {
    name: "RELU",
    value: 0,
};
pub const ELU: Code = Code {
    name: "ELU",
    value: 1,
};
pub const ACTIVATION_CODES: [Code; 2] = [RELU, ELU];

/// The optimizers' codes (the fused step's `update` compares against them).
pub const SGD: Code = Code {
    name: "SGD",
    value: 0,
};
pub const MOMENTUM: Code = Code {
    name: "MOMENTUM",
    value: 1,
};
pub const ADAM: Code = Code {
    name: "ADAM",
    value: 2,
};
pub const OPTIMIZER_CODES: [Code; 3] = [SGD, MOMENTUM, ADAM];

pub fn activation_code(activation: Activation) -> Code {
    match activation {
        Activation::Relu => RELU,
        Activation::Elu => ELU,
    }
}

pub fn optimizer_code(optimizer: Optimizer) -> Code {
    match optimizer {
        Optimizer::Sgd => SGD,
        Optimizer::Momentum { .. } => MOMENTUM,
        Optimizer::Adam { .. } => ADAM,
    }
}

/// `codes` as a pipeline's override constants.
pub fn constants(codes: &[Code]) -> impl Iterator<Item = (&'static str, f64)> + '_ {
    codes.iter().map(|c| (c.name, c.value as f64))
}
