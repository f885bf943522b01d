//! The network: dense layers `Z[l] = W[l]·A[l-1] + b[l]`, an activation between them,
//! softmax on the output.
//!
//! Layout, used everywhere (CPU, GPU, files): samples are columns, as in the math.
//! - `W[l]`: (outputs, inputs), row-major: `w[i * inputs + j]` is the weight from input j to unit i.
//! - `b[l]`: (outputs).
//! - activations `A[l]`, `Z[l]`, `dZ[l]`: (units, m), column-major, so that one sample's column
//!   is contiguous: `a[sample * units + unit]`. The input `X` (784, m) is the images themselves,
//!   one image (784 bytes) after another, scaled by 1/255 where it is read.

use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

use crate::data::{CLASSES, PIXELS};
use crate::error::{config, Result};

/// What a pixel byte (0–255) is multiplied by to become the network's input (0–1): one f32,
/// so that every reader of the images (the CPU paths, an exported ONNX graph) rounds alike.
pub const PIXEL_SCALE: f32 = 1.0 / 255.0;

/// The most weights a model may have (1 GiB of f32).
pub const MAX_PARAMETERS: usize = 1 << 28;

/// The nonlinearity between layers. ELU uses α = 1. Named `relu`, `elu` (options and files).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    Relu,
    Elu,
}

impl Activation {
    pub fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Elu => "elu",
        }
    }
}

/// How the weights start. Named `he`, `uniform`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Init {
    /// He et al.: W ~ Normal(0, sqrt(2 / inputs)), b = 0. Suits ReLU-like activations.
    #[default]
    He,
    /// The NumPy tutorials' choice: W and b ~ Uniform[-0.5, 0.5).
    Uniform,
}

impl Init {
    pub fn name(self) -> &'static str {
        match self {
            Init::He => "he",
            Init::Uniform => "uniform",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    pub inputs: usize,
    pub outputs: usize,
    /// W: (outputs, inputs), row-major.
    pub w: Vec<f32>,
    /// b: (outputs).
    pub b: Vec<f32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub layers: Vec<Layer>,
    pub activation: Activation,
}

impl Model {
    /// A 784 → hidden… → 10 network, initialised from `seed`.
    pub fn new(hidden: &[usize], activation: Activation, init: Init, seed: u64) -> Result<Model> {
        if hidden.is_empty() {
            return config("--hidden needs at least one layer width, e.g. --hidden 10");
        }
        if let Some(pos) = hidden.iter().position(|&h| h == 0) {
            return config(format!(
                "--hidden: layer {} has width 0; widths must be at least 1",
                pos + 1
            ));
        }
        let mut sizes = vec![PIXELS];
        sizes.extend_from_slice(hidden);
        sizes.push(CLASSES);
        // Refuse before allocating: a typo like --hidden 100000000 must not abort the process.
        let parameters = sizes.windows(2).try_fold(0usize, |n, pair| {
            n.checked_add(pair[0].checked_mul(pair[1])?)
        });
        if parameters.is_none_or(|n| n > MAX_PARAMETERS) {
            return config(format!(
                "--hidden {}: too many weights (at most {MAX_PARAMETERS} in all)",
                hidden
                    .iter()
                    .map(|h| h.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ));
        }

        let mut rng = StdRng::seed_from_u64(seed);
        let layers = sizes
            .windows(2)
            .map(|pair| {
                let (inputs, outputs) = (pair[0], pair[1]);
                let (w, b) = match init {
                    Init::He => {
                        let normal = Normal::new(0.0, (2.0 / inputs as f64).sqrt())
                            .expect("a positive standard deviation");
                        let w = (0..inputs * outputs)
                            .map(|_| normal.sample(&mut rng) as f32)
                            .collect();
                        (w, vec![0.0; outputs])
                    }
                    Init::Uniform => {
                        let mut uniform = |n: usize| -> Vec<f32> {
                            (0..n).map(|_| rng.random::<f32>() - 0.5).collect()
                        };
                        (uniform(inputs * outputs), uniform(outputs))
                    }
                };
                Layer {
                    inputs,
                    outputs,
                    w,
                    b,
                }
            })
            .collect();
        Ok(Model { layers, activation })
    }

    /// The hidden layer widths, e.g. `[10]` for the classic 784-10-10.
    pub fn hidden(&self) -> Vec<usize> {
        self.layers[..self.layers.len() - 1]
            .iter()
            .map(|l| l.outputs)
            .collect()
    }

    /// The most units any layer has: the height of the shared `dA` scratch.
    pub fn widest(&self) -> usize {
        self.layers
            .iter()
            .map(|l| l.outputs)
            .max()
            .unwrap_or(CLASSES)
    }

    /// True if every weight and bias is finite.
    pub fn is_finite(&self) -> bool {
        self.layers
            .iter()
            .all(|l| l.w.iter().chain(&l.b).all(|v| v.is_finite()))
    }
}

/// The predicted class of each sample, from logits `Z: (CLASSES, m)` column-major.
/// Ties go to the lowest class, the same rule as the kernels.
pub fn argmax_columns(logits: &[f32]) -> Vec<u8> {
    logits
        .chunks_exact(CLASSES)
        .map(|column| {
            let mut best = 0;
            for (class, &z) in column.iter().enumerate() {
                if z > column[best] {
                    best = class;
                }
            }
            best as u8
        })
        .collect()
}

/// The softmax's parts of one column of logits: its largest logit, and Σ exp(z − max) (the
/// largest subtracted, so that exp never overflows).
fn softmax_parts(column: &[f32]) -> (f64, f64) {
    let max = column.iter().fold(f32::NEG_INFINITY, |m, &z| m.max(z)) as f64;
    let sum = column.iter().map(|&z| (z as f64 - max).exp()).sum();
    (max, sum)
}

/// The softmax of one column of logits: each class's probability, exp(z − max) / Σ exp(z − max).
/// (The one softmax on the host: `serve`'s answers and Kaggle's probabilities use it; the
/// kernels' is shaders/softmax.wgsl, checked against its twin `cpu::ops::softmax`.)
pub fn softmax(column: &[f32]) -> Vec<f64> {
    let (max, sum) = softmax_parts(column);
    column
        .iter()
        .map(|&z| (z as f64 - max).exp() / sum)
        .collect()
}

/// The softmax probability of each sample's predicted class (its largest logit), from
/// logits `Z: (CLASSES, m)` column-major: how sure the model is.
pub fn confidence_columns(logits: &[f32]) -> Vec<f64> {
    logits
        .chunks_exact(CLASSES)
        .map(|column| 1.0 / softmax_parts(column).1)
        .collect()
}

/// Mean cross-entropy loss and number of correct predictions, from logits
/// `Z: (CLASSES, m)` column-major and labels `(m)`. Summed in f64.
pub fn loss_and_correct(logits: &[f32], labels: &[u8]) -> (f64, usize) {
    let mut loss = 0.0f64;
    for (column, &label) in logits.chunks_exact(CLASSES).zip(labels) {
        let (max, sum) = softmax_parts(column);
        loss += sum.ln() - (column[label as usize] as f64 - max);
    }
    let correct = argmax_columns(logits)
        .iter()
        .zip(labels)
        .filter(|(p, l)| p == l)
        .count();
    (loss / labels.len().max(1) as f64, correct)
}
