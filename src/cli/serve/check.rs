//! "Check this GPU": two short fixed runs (a fixed init and batch order; full batch, and
//! mini-batch with a short last batch) that the page runs on its WebGPU adapter, and the CPU
//! reference engine's trace of the same runs, which the page compares step by step.
//!
//! `GET /api/check` → `{"cases": [{"what", "options", "losses": [per step], "params": [dense, as
//! the plan's marks read them], "tensors": [[name, at, rows, cols, row]]}], "images", "tolerance"}`. The runs
//! train on the first `CHECK_IMAGES` images of the training file (plan requests with
//! `"check": true`). With `MNIST_GPU_PERTURB_CHECK=1` in its environment the server perturbs
//! the trace (tests: the page must then say the check failed).

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::train::{merged_options, PageRun, CHECK_IMAGES};
use super::{bad, json_body, App};
use mnist_gpu::backend::{Backend, StepPath};
use mnist_gpu::cpu::CpuBackend;
use mnist_gpu::error::Result;
use mnist_gpu::options::RunOptions;
use mnist_gpu::params::ParamLayout;
use mnist_gpu::train::{self, Schedule};

/// parity.rs's float32 tolerances: each step's batch loss within `1e-4 + 1e-3·|ref|`, every
/// parameter within `1e-4 + 1e-3·|ref|`.
const LOSS_ATOL: f64 = 1e-4;
const LOSS_RTOL: f64 = 1e-3;
const ATOL: f64 = 1e-4;
const RTOL: f64 = 1e-3;

/// The two runs: (what, options).
fn cases() -> [(&'static str, Value); 2] {
    [
        (
            "full batch, 784-32-10 ReLU, SGD",
            json!({"hidden": [32], "activation": "relu", "optimizer": "sgd", "alpha": 0.5,
                   "iterations": 20, "dev_size": 100, "log_every": 1, "seed": 1}),
        ),
        (
            // parity.rs's Adam: α = 0.002, batches of 100.
            "batches of 100, 784-32-16-10 ELU, Adam",
            json!({"hidden": [32, 16], "activation": "elu", "optimizer": "adam", "alpha": 0.002,
                   "batch_size": 100, "epochs": 2, "dev_size": 100, "log_every": 1, "seed": 2}),
        ),
    ]
}

pub async fn check(State(app): State<Arc<App>>) -> Response {
    let answer = tokio::task::spawn_blocking(move || trace(&app)).await;
    match answer {
        Ok(Ok(value)) => json_body(&value).into_response(),
        Ok(Err(e)) => bad(e.to_string()).into_response(),
        Err(e) => bad(format!("the check's trace failed: {e}")).into_response(),
    }
}

/// The CPU reference engine's trace of both runs.
fn trace(app: &App) -> Result<Value> {
    let perturb = std::env::var_os("MNIST_GPU_PERTURB_CHECK").is_some_and(|v| v == "1");
    let mut traced = Vec::new();
    for (what, options) in cases() {
        let options = merged_options(&RunOptions::default(), &options, None)?;
        let (losses, mut params, tensors) = reference_run(app, &options)?;
        if perturb {
            // One parameter off by far more than the tolerance, as a broken kernel would be.
            params[0] += 0.01 + 0.01 * params[0].abs();
        }
        traced.push(json!({"what": what, "options": options, "losses": losses,
                           "params": params, "tensors": tensors}));
    }
    Ok(json!({
        "cases": traced,
        "images": CHECK_IMAGES,
        "tolerance": {"loss_atol": LOSS_ATOL, "loss_rtol": LOSS_RTOL, "atol": ATOL, "rtol": RTOL},
    }))
}

/// One run on the CPU's reference engine: every step's batch loss, the final parameters laid
/// out as the page holds them (dense), and where each tensor lies in them.
fn reference_run(app: &App, options: &RunOptions) -> Result<(Vec<f64>, Vec<f32>, Value)> {
    let run = PageRun::of(app, &json!({"options": options, "check": true}))?;
    let split = run.split();
    let schedule = Schedule::of(options);
    let capacity = schedule.capacity(split.train.len());
    let mut cpu = CpuBackend::with_path(
        run.model(),
        split.pool.clone(),
        split.sizes(),
        capacity,
        Some(StepPath::Reference),
    )?;
    let report = train::train(&mut cpu, split, &schedule, &mut |_| {})?;
    let losses = report.history.iter().map(|p| p.batch.loss).collect();
    let model = cpu.model()?;
    let layout = ParamLayout::dense(&model);
    let tensors: Vec<Value> = layout
        .layers
        .iter()
        .enumerate()
        .flat_map(|(l, t)| {
            [
                json!([format!("W{}", l + 1), t.w, t.outputs, t.inputs, t.row]),
                json!([format!("b{}", l + 1), t.b, t.outputs, 1, 1]),
            ]
        })
        .collect();
    Ok((losses, layout.pack(&model), json!(tensors)))
}
