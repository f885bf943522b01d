//! How a step turns gradients into new parameters. Each rule is one kernel with a CPU twin:
//! `sgd_update`, `momentum_update`, `adam_update` (shaders/ and `cpu::ops`).
//!
//! - SGD: `P -= α·dP`, the tutorials' rule.
//! - Momentum (as in PyTorch's SGD with momentum): `V = β·V + dP`, `P -= α·V`.
//! - Adam (Kingma & Ba): `M = β1·M + (1−β1)·dP`, `V = β2·V + (1−β2)·dP²`,
//!   `P -= α · (M / (1−β1ᵗ)) / (sqrt(V / (1−β2ᵗ)) + ε)`, t counting steps from 1.

use crate::error::{config, Result};

/// The update rule and its constants.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Optimizer {
    Sgd,
    Momentum { beta: f32 },
    Adam { beta1: f32, beta2: f32, eps: f32 },
}

/// The update rules by name: `sgd`, `momentum`, `adam` (`--optimizer`, and in files).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    Sgd,
    Momentum,
    Adam,
}

impl OptimizerKind {
    pub fn name(self) -> &'static str {
        match self {
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Momentum => "momentum",
            OptimizerKind::Adam => "adam",
        }
    }

    /// How many state tensors the rule keeps per parameter tensor, and their names in a
    /// checkpoint (`optimizer.W1.velocity`; `optimizer.W1.m`, `optimizer.W1.v`).
    pub fn moments(self) -> &'static [&'static str] {
        match self {
            OptimizerKind::Sgd => &[],
            OptimizerKind::Momentum => &["velocity"],
            OptimizerKind::Adam => &["m", "v"],
        }
    }
}

impl Optimizer {
    /// The usual constants: β = 0.9 for momentum; β1 = 0.9, β2 = 0.999, ε = 1e-8 for Adam.
    pub fn with_defaults(kind: OptimizerKind) -> Optimizer {
        match kind {
            OptimizerKind::Sgd => Optimizer::Sgd,
            OptimizerKind::Momentum => Optimizer::Momentum { beta: 0.9 },
            OptimizerKind::Adam => Optimizer::Adam {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
        }
    }

    /// Which rule this is, without its constants.
    pub fn kind(&self) -> OptimizerKind {
        match self {
            Optimizer::Sgd => OptimizerKind::Sgd,
            Optimizer::Momentum { .. } => OptimizerKind::Momentum,
            Optimizer::Adam { .. } => OptimizerKind::Adam,
        }
    }

    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// How many state tensors the rule keeps per parameter tensor (V; or M and V).
    pub fn state_tensors(&self) -> usize {
        self.kind().moments().len()
    }
}

/// Adam's constants for one step: β1, β2, ε and this step's bias corrections c1, c2.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamParams {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub c1: f32,
    pub c2: f32,
}
/// Adam's bias corrections `1 / (1 − β1ᵗ)` and `1 / (1 − β2ᵗ)` for step t ≥ 1, computed in
/// f64 so that both backends get the same f32 values.
pub fn adam_corrections(beta1: f32, beta2: f32, t: u64) -> (f32, f32) {
    let power = |beta: f32| (beta as f64).powf(t as f64);
    (
        (1.0 / (1.0 - power(beta1))) as f32,
        (1.0 / (1.0 - power(beta2))) as f32,
    )
}

/// Adam's constants for step t ≥ 1, as the per-operation `adam_update` of either backend
/// takes them.
pub fn adam_params(beta1: f32, beta2: f32, eps: f32, t: u64) -> AdamParams {
    let (c1, c2) = adam_corrections(beta1, beta2, t);
    AdamParams {
        beta1,
        beta2,
        eps,
        c1,
        c2,
    }
}

/// The optimizer's state (`--checkpoint`): Adam's step count, and per parameter tensor (W1,
/// b1, W2, …, in that order) its moments, each as long as the tensor: none for SGD, the
/// velocity for momentum, M then V for Adam.
#[derive(Debug, Clone, PartialEq)]
pub struct OptimizerState {
    pub steps: u64,
    pub tensors: Vec<Vec<Vec<f32>>>,
}

/// `state` must hold, per parameter tensor of a model of `shapes` (inputs, outputs per layer),
/// `moments` tensors of its length.
pub fn check_optimizer_state(
    shapes: &[(usize, usize)],
    moments: usize,
    state: &OptimizerState,
) -> Result<()> {
    let lengths: Vec<usize> = shapes
        .iter()
        .flat_map(|&(inputs, outputs)| [inputs * outputs, outputs])
        .collect();
    let fits = state.tensors.len() == lengths.len()
        && state
            .tensors
            .iter()
            .zip(&lengths)
            .all(|(t, &len)| t.len() == moments && t.iter().all(|m| m.len() == len));
    if fits {
        Ok(())
    } else {
        config(format!(
            "the optimizer state does not fit: {moments} moment(s) per tensor of lengths {lengths:?} expected"
        ))
    }
}
