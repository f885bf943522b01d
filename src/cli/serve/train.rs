//! Training in the page: what the server hands the page's Web Worker (assets/serve/
//! train_worker.js), which runs the fused step on the browser's WebGPU.
//!
//! The worker executes a plan and decides nothing: the plan (`gpu::plan`) is made by driving the
//! native training loop (`train::train`) with a `PlanBackend`, which writes down what the GPU
//! backend's fused engine would do. So a run in the page follows `mnist-gpu --backend gpu` with
//! the same options step for step. (A wasm build of the driver would need a tool beyond cargo
//! to serve; a plan needs none, and the page stays plain files.)
//!
//! - `GET /train_worker.js`: the worker.
//! - `GET /api/shaders/NAME.wgsl`: the kernels, the bytes of shaders/.
//! - `GET /api/train/images`, `/api/train/labels`: the training file, 784 bytes an image and a
//!   byte a label (`serve --train`, default the embedded 10,000).
//! - `POST /api/train/plan` `{"options": {…}, "from": S, "steps": N, "workgroup_storage": B}` →
//!   the setup (constants, buffers, bind groups), the initial parameters when `from` is 0, and
//!   the commands of steps S+1 ..= S+N.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::{bad, json_body, read_json, App, Refusal};
use mnist_gpu::data::pool::{List, Split};
use mnist_gpu::data::Dataset;
use mnist_gpu::error::{config, Result};
use mnist_gpu::gpu::fused::ParamLayout;
use mnist_gpu::gpu::plan::{PlanBackend, Setup, Span};
use mnist_gpu::gpu::shaders::SHADERS;
use mnist_gpu::model::{Init, Model};
use mnist_gpu::options::RunOptions;
use mnist_gpu::train::{self, Schedule, StepHook};

pub const WORKER: &str = include_str!("../../../assets/serve/train_worker.js");
/// The most steps one plan request covers.
const MAX_PLAN_STEPS: usize = 2048;

pub async fn worker() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        WORKER,
    )
}

/// `GET /api/shaders`: the shaders that compile on their own (matmul_coop.wgsl is compiled
/// after matmul.wgsl, and needs an extension browsers lack).
pub async fn shader_list() -> Response {
    let names: Vec<String> = SHADERS
        .iter()
        .filter(|(n, _)| *n != "matmul_coop")
        .map(|(n, _)| format!("{n}.wgsl"))
        .collect();
    json_body(&json!(names)).into_response()
}

/// `GET /api/shaders/NAME.wgsl`: a kernel's source, as compiled into the binary.
pub async fn shader(Path(file): Path<String>) -> Response {
    let name = file.strip_suffix(".wgsl").unwrap_or(&file);
    match SHADERS.iter().find(|(n, _)| *n == name) {
        Some((_, source)) => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            *source,
        )
            .into_response(),
        None => {
            let names: Vec<String> = SHADERS.iter().map(|(n, _)| format!("{n}.wgsl")).collect();
            Refusal(
                StatusCode::NOT_FOUND,
                format!("no shader {file}: there are {}", names.join(", ")),
            )
            .into_response()
        }
    }
}

fn bytes(data: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/octet-stream")], data).into_response()
}

pub async fn images(State(app): State<Arc<App>>) -> Response {
    bytes(app.train.images.clone())
}

pub async fn labels(State(app): State<Arc<App>>) -> Response {
    bytes(app.train.labels.clone().unwrap_or_default())
}

/// `POST /api/train/plan`.
pub async fn plan(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    let request = match read_json(headers, body).await {
        Ok(request) => request,
        Err(refusal) => return refusal.into_response(),
    };
    let answer = tokio::task::spawn_blocking(move || plan_of(&app.train, &request)).await;
    match answer {
        Ok(Ok(value)) => json_body(&value).into_response(),
        Ok(Err(e)) => bad(e.to_string()).into_response(),
        Err(e) => bad(format!("the plan failed: {e}")).into_response(),
    }
}

/// The run's options: the defaults of `mnist-gpu train`, with the request's over them.
pub fn run_options(given: &Value) -> Result<RunOptions> {
    let mut options = serde_json::to_value(RunOptions::default()).expect("options serialise");
    let Some(given) = given.as_object() else {
        return config("options: expected an object such as {\"hidden\": [32], \"epochs\": 1}");
    };
    for (key, value) in given {
        if options.get(key).is_none() {
            return config(format!("options: unknown option {key:?}"));
        }
        options[key] = value.clone();
    }
    // The run's length: one of iterations (full batch) and epochs (mini-batch).
    let mini_batch = !options["batch_size"].is_null();
    if mini_batch && options["epochs"].is_null() {
        options["epochs"] = json!(30);
    }
    options[if mini_batch { "iterations" } else { "epochs" }] = Value::Null;
    let options: RunOptions = serde_json::from_value(options)
        .map_err(|e| mnist_gpu::error::Error::Config(format!("options: {e}")))?;
    if options.patience.is_some() {
        return config("options: patience (early stopping) is not offered in the page");
    }
    Ok(options)
}

/// The plan of steps `from + 1 ..= from + steps` of the run `request` describes.
fn plan_of(train_file: &Dataset, request: &Value) -> Result<Value> {
    let mut options = run_options(&request["options"])?;
    let number = |key: &str, default: usize| -> Result<usize> {
        match &request[key] {
            Value::Null => Ok(default),
            v => v.as_u64().map(|n| n as usize).ok_or_else(|| {
                mnist_gpu::error::Error::Config(format!("{key}: {v} is not a count"))
            }),
        }
    };
    let from = number("from", 0)?;
    let steps = number("steps", 256)?.clamp(1, MAX_PLAN_STEPS);
    let storage = number("workgroup_storage", 16384)?;
    let split = Split::new(train_file, None, options.dev_size, options.seed)?;
    if request["options"]["log_every"].is_null() {
        // As `mnist-gpu train`: a progress point once an epoch, or every 50 steps.
        let n = split.train.len();
        options.log_every = options.batch_size.map_or(50, |b| n.div_ceil(b.clamp(1, n)));
    }
    let model = Model::new(&options.hidden, options.activation, Init::He, options.seed)?;
    let schedule = Schedule::of(&options);
    let n = split.train.len();
    schedule.validate(n)?;
    let (epochs, steps_per_epoch) = train::plan(&schedule, n);
    let total = epochs * steps_per_epoch;
    let setup = Setup::new(&model, schedule.capacity(n), split.sizes(), storage)?;
    let layout = ParamLayout::new(&model);
    let described = setup.describe();
    let span = Span {
        log_every: options.log_every,
        total_steps: total,
        keep: from..(from + steps).min(total),
    };
    let mut backend = PlanBackend::new(
        setup,
        &model,
        split.pool.labels.len(),
        split.labels(List::Dev),
        span,
    );
    run_until(&mut backend, &split, schedule, from + steps)?;
    backend.flush();
    let done = backend.recorded().min(total);
    Ok(json!({
        "setup": described,
        "params": (from == 0).then(|| layout.pack(&model)),
        "commands": backend.commands,
        "from": from,
        "next": done,
        "total": total,
        "steps_per_epoch": steps_per_epoch,
        "options": options,
    }))
}

/// Drives the training loop with the plan's backend until `end` steps are taken (or all).
fn run_until(
    backend: &mut PlanBackend,
    split: &Split,
    mut schedule: Schedule,
    end: usize,
) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    schedule.interrupt = Some(stop);
    schedule.on_step = Some(StepHook(Arc::new(move |step, _| {
        if step >= end {
            flag.store(true, Ordering::Relaxed);
        }
    })));
    train::train(backend, split, &schedule, &mut |_| {})?;
    Ok(())
}
