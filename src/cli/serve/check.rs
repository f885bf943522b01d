//! "Check this GPU": two short fixed runs (a fixed init and batch order; full batch, and
//! mini-batch with a short last batch) that the page runs on its WebGPU adapter, and the CPU
//! reference engine's trace of the same runs, against which the server judges the page's
//! results step by step (`POST /api/check`).
//!
//! `GET /api/check` → `{"cases": [{"what", "options", "losses": [per step], "params": [dense, as
//! the plan's marks read them], "tensors": [[name, at, rows, cols, row]]}], "images", "tolerance"}`. The runs
//! train on the first `CHECK_IMAGES` images of the training file (plan requests with
//! `"check": true`). With `MNIST_GPU_PERTURB_CHECK=1` in its environment the server perturbs
//! the trace (tests: the page must then say the check failed).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::limits::read_json;
use super::train::{merged_options, PageRun, CHECK_IMAGES};
use super::{bad, json_body, App};
use mnist_gpu::backend::{Backend, StepPath};
use mnist_gpu::cpu::CpuBackend;
use mnist_gpu::error::{config, Result};
use mnist_gpu::options::RunOptions;
use mnist_gpu::params::ParamLayout;
use mnist_gpu::train;

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

/// The trace is the same every time (fixed runs on a fixed file): worked out at the first
/// request, on a blocking thread (seconds of a core), and kept as its JSON; requests that come
/// meanwhile wait for it rather than work it out again.
pub async fn check(State(app): State<Arc<App>>) -> Response {
    let answer = tokio::task::spawn_blocking(move || kept_trace(&app)).await;
    match answer {
        Ok(Ok(text)) => ([(header::CONTENT_TYPE, "application/json")], text).into_response(),
        Ok(Err(e)) => bad(e.to_string()).into_response(),
        Err(e) => bad(format!("the check's trace failed: {e}")).into_response(),
    }
}

/// The trace's JSON, worked out once (`check`).
fn kept_trace(app: &App) -> Result<Bytes> {
    let mut kept = app.check.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(text) = &*kept {
        return Ok(text.clone());
    }
    let text = Bytes::from(trace(app)?.to_string());
    *kept = Some(text.clone());
    Ok(text)
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
    let run = PageRun::of(app, &json!({"options": options, "check": true}), None)?;
    let split = run.split();
    let schedule = run.schedule();
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

/// `POST /api/check` `{"results": [{"losses": [per step], "params": [dense]}, …]}` (the page's
/// runs of the cases `GET /api/check` gave, in order) → `{"pass", "worst": {"what", "got",
/// "want", "deviation", "ratio"}, "failures", "first_failures"}`: every step's loss and every
/// final parameter judged against the trace here, within `atol + rtol·|reference|`.
pub async fn judge(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    let (request, held) = match read_json(&app.budget, &headers, body).await {
        Ok(read) => read,
        Err(refusal) => return refusal.into_response(),
    };
    let answer = tokio::task::spawn_blocking(move || {
        let judged = judged(&app, &request);
        drop(held);
        judged
    })
    .await;
    match answer {
        Ok(Ok(value)) => json_body(&value).into_response(),
        Ok(Err(e)) => bad(e.to_string()).into_response(),
        Err(e) => bad(format!("judging the check failed: {e}")).into_response(),
    }
}

/// The worst deviation so far and every failure's name.
#[derive(Default)]
struct Verdict {
    worst: Option<(String, f64, f64, f64)>,
    failures: Vec<String>,
}

impl Verdict {
    /// Judges `got` against `want` within `atol + rtol·|want|`; NaN fails, as the worst there
    /// is (JSON has no NaN: its ratio is the largest finite number).
    fn judge(&mut self, what: String, got: f64, want: f64, atol: f64, rtol: f64) {
        let ratio = (got - want).abs() / (atol + rtol * want.abs());
        let ratio = if ratio.is_finite() { ratio } else { f64::MAX };
        if ratio > 1.0 {
            self.failures.push(what.clone());
        }
        if self.worst.as_ref().is_none_or(|w| ratio > w.3) {
            self.worst = Some((what, got, want, ratio));
        }
    }
}

/// The page's results judged against the trace.
fn judged(app: &App, request: &Value) -> Result<Value> {
    let trace: Value = serde_json::from_slice(&kept_trace(app)?)
        .map_err(|e| mnist_gpu::error::Error::Config(format!("the check's trace: {e}")))?;
    let cases = trace["cases"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let results = request["results"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if results.len() != cases.len() {
        return config(format!(
            "results: {} runs, the check has {}",
            results.len(),
            cases.len()
        ));
    }
    let numbers = |value: &Value, what: &str| -> Result<Vec<f64>> {
        let list = value.as_array().map(Vec::as_slice).unwrap_or(&[]);
        list.iter()
            .map(|v| v.as_f64().or(v.is_null().then_some(f64::NAN)))
            .collect::<Option<Vec<f64>>>()
            .ok_or_else(|| {
                mnist_gpu::error::Error::Config(format!("{what}: not a list of numbers"))
            })
    };
    let mut verdict = Verdict::default();
    for (case, result) in cases.iter().zip(results) {
        let what = case["what"].as_str().unwrap_or("a run");
        let (want, got) = (
            numbers(&case["losses"], what)?,
            numbers(&result["losses"], what)?,
        );
        if got.len() != want.len() {
            return config(format!(
                "{what}: {} steps, the reference {}",
                got.len(),
                want.len()
            ));
        }
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            verdict.judge(
                format!("{what}: the loss of step {}", i + 1),
                g,
                w,
                LOSS_ATOL,
                LOSS_RTOL,
            );
        }
        let (want, got) = (
            numbers(&case["params"], what)?,
            numbers(&result["params"], what)?,
        );
        if got.len() != want.len() {
            return config(format!(
                "{what}: {} parameters, the reference {}",
                got.len(),
                want.len()
            ));
        }
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            let name = parameter_name(&case["tensors"], i);
            verdict.judge(format!("{what}: {name} at the end"), g, w, ATOL, RTOL);
        }
    }
    let worst = verdict.worst.map(|(what, got, want, ratio)| {
        let deviation = (got - want).abs();
        let finite = |x: f64| if x.is_finite() { x } else { f64::MAX };
        json!({"what": what, "got": finite(got), "want": want, "deviation": finite(deviation),
               "ratio": ratio})
    });
    Ok(json!({
        "pass": verdict.failures.is_empty(),
        "worst": worst,
        "failures": verdict.failures.len(),
        "first_failures": &verdict.failures[..verdict.failures.len().min(5)],
    }))
}

/// Parameter `i` of the dense layout, by name: `W1[r, k]` or `b1[r]` (`tensors` as the trace
/// lists them: name, start, rows, columns, row length).
fn parameter_name(tensors: &Value, i: usize) -> String {
    let list = tensors.as_array().map(Vec::as_slice).unwrap_or(&[]);
    for t in list {
        let at = |k: usize| t[k].as_u64().unwrap_or(0) as usize;
        let (start, rows, cols, row) = (at(1), at(2), at(3), at(4).max(1));
        if (start..start + rows * row).contains(&i) {
            let (r, k) = ((i - start) / row, (i - start) % row);
            let name = t[0].as_str().unwrap_or("?");
            return if cols > 1 {
                format!("{name}[{r}, {k}]")
            } else {
                format!("{name}[{r}]")
            };
        }
    }
    format!("parameter {i}")
}
