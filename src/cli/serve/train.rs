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

use super::limits::{self, read_json};
use super::store::Missing;
use super::{bad, json_body, App, Refusal};
use mnist_gpu::augment::Augment;
use mnist_gpu::backend::BatchStats;
use mnist_gpu::checkpoint::{self, Checkpoint, Checkpointing};
use mnist_gpu::data::pool::{List, Split};
use mnist_gpu::error::{config, Result};
use mnist_gpu::gpu::fused::{ParamLayout, MAX_HIDDEN, MAX_HIDDEN_LAYERS};
use mnist_gpu::gpu::plan::{PlanBackend, Setup, Span};
use mnist_gpu::gpu::shaders::SHADERS;
use mnist_gpu::model::{Init, Model};
use mnist_gpu::options::RunOptions;
use mnist_gpu::train::{self, Checkpointer, RunState, Schedule, StepHook};

pub const WORKER: &str = include_str!("../../../assets/serve/train_worker.js");
/// The images the runs of "Check this GPU" train on (the first of the training file).
pub const CHECK_IMAGES: usize = 600;
/// The most steps one plan request covers.
const MAX_PLAN_STEPS: usize = 2048;
/// The most images whose warps one plan of an elastic run carries: each image's field is 1,568
/// floats, about 16 KB of JSON, so 512 steps of 64 would be half a gigabyte. (A step larger
/// than this still gets a plan of its own.)
const MAX_ELASTIC_PLAN_IMAGES: usize = 2048;
/// The most steps, and images gone through in them, a plan or checkpoint request replays to
/// reach its step: each request drives the loop again from the run's start (the server keeps
/// no run). The images are the batches' where the run augments (each image is shifted or
/// warped, about 15 ns an image on one core) and the dev list's at every progress point (the
/// loop scores its placeholder logits, about 125 ns an image), so these bound one request to
/// seconds, where a far step of a long run held a thread for minutes. A page's run of 30
/// epochs of 60,000 images, or of 1,000 full-batch iterations with --augment, fits.
const MAX_REPLAYED_STEPS: usize = 1 << 22;
const MAX_REPLAYED_IMAGES: usize = 1 << 26;

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
            Refusal::new(
                StatusCode::NOT_FOUND,
                format!("no shader {file}: there are {}", names.join(", ")),
            )
            .into_response()
        }
    }
}

/// The bytes as they are: `Bytes` shares them, so a request copies nothing.
fn bytes(data: axum::body::Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/octet-stream")], data).into_response()
}

pub async fn images(State(app): State<Arc<App>>) -> Response {
    bytes(app.train_images.clone())
}

pub async fn labels(State(app): State<Arc<App>>) -> Response {
    bytes(app.train_labels.clone())
}

/// A Train panel request's body, and the checkpoint it resumes (if any).
async fn train_request(
    app: &App,
    headers: HeaderMap,
    body: Body,
) -> std::result::Result<(Value, Resumed, limits::Held), Refusal> {
    let (request, held) = read_json(&app.budget, &headers, body).await?;
    let resumed = resumed(app, &request)?;
    Ok((request, resumed, held))
}

/// `POST /api/train/plan`.
pub async fn plan(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    let (request, resumed, held) = match train_request(&app, headers, body).await {
        Ok(request) => request,
        Err(refusal) => return refusal.into_response(),
    };
    let answer = tokio::task::spawn_blocking(move || plan_of(&app, &request, resumed)).await;
    drop(held);
    match answer {
        Ok(Ok(value)) => json_body(&value).into_response(),
        Ok(Err(e)) => bad(e.to_string()).into_response(),
        Err(e) => bad(format!("the plan failed: {e}")).into_response(),
    }
}

/// `options` with `given`'s over them; `allowed` (if any) names the keys `given` may hold.
pub(super) fn merged_options(
    options: &RunOptions,
    given: &Value,
    allowed: Option<&[&str]>,
) -> Result<RunOptions> {
    let mut options = serde_json::to_value(options).expect("options serialise");
    let Some(given) = given.as_object() else {
        return config("options: expected an object such as {\"hidden\": [32], \"epochs\": 1}");
    };
    for (key, value) in given {
        if options.get(key).is_none() {
            return config(format!("options: unknown option {key:?}"));
        }
        if allowed.is_some_and(|keys| !keys.contains(&key.as_str())) && options[key] != *value {
            return config(format!(
                "options: a resumed run keeps its {key}; only its length (epochs or iterations) \
                 may change"
            ));
        }
        options[key] = value.clone();
    }
    // The run's length: one of iterations (full batch) and epochs (mini-batch).
    let mini_batch = !options["batch_size"].is_null();
    if mini_batch && options["epochs"].is_null() {
        options["epochs"] = json!(30);
    }
    if !mini_batch && options["iterations"].is_null() {
        options["iterations"] = json!(500);
    }
    options[if mini_batch { "iterations" } else { "epochs" }] = Value::Null;
    let options: RunOptions = serde_json::from_value(options)
        .map_err(|e| mnist_gpu::error::Error::Config(format!("options: {e}")))?;
    if options.patience.is_some() {
        return config("options: patience (early stopping) is not offered in the page");
    }
    Ok(options)
}

/// The checkpoint a run resumes, shared with the store that keeps it.
type Resumed = Option<Arc<Checkpoint>>;

/// The checkpoint `request["resume"]` names, if any: refused (400) where it was never opened,
/// and (410) where it was dropped to keep the store within its bounds.
fn resumed(app: &App, request: &Value) -> std::result::Result<Resumed, Refusal> {
    let id = match &request["resume"] {
        Value::Null => return Ok(None),
        id => id.as_u64().map_or(usize::MAX, |id| id as usize),
    };
    match app.checkpoints.get(id) {
        Ok(c) => Ok(Some(c)),
        Err(Missing::Never) => Err(bad(format!("resume: no checkpoint {id} was opened"))),
        Err(Missing::Dropped) => Err(Refusal::new(
            StatusCode::GONE,
            format!(
                "resume: checkpoint {id} is no longer held ({}): open the file again",
                app.checkpoints.bounds()
            ),
        )),
    }
}

/// A run of the page: its options, data and start (fresh, or a checkpoint opened in the page).
pub(super) struct PageRun {
    options: RunOptions,
    split: Split,
    model: Model,
    resumed: Resumed,
}

impl PageRun {
    /// The run `request` describes: `options` over `mnist-gpu train`'s defaults, or `resumed`
    /// (the checkpoint `resume` names) with only its length changed by `options`.
    pub(super) fn of(app: &App, request: &Value, resumed: Resumed) -> Result<PageRun> {
        if !request.is_object() {
            return config(
                "the body: expected a JSON object such as {\"options\": {\"hidden\": [32]}}",
            );
        }
        PageRun::with(app, request, resumed)
    }

    /// `of`, resuming `resumed` (if any).
    fn with(app: &App, request: &Value, resumed: Resumed) -> Result<PageRun> {
        let given = if request["options"].is_null() {
            json!({})
        } else {
            request["options"].clone()
        };
        let mut options = match &resumed {
            Some(c) => merged_options(&c.options, &given, Some(&["epochs", "iterations"]))?,
            None => merged_options(&RunOptions::default(), &given, None)?,
        };
        // The check's runs ("check": true) train on the first images of the training file.
        let subset;
        let data = if request["check"] == json!(true) {
            let n = app.train.len().min(CHECK_IMAGES);
            subset = app.train.subset(&(0..n).collect::<Vec<_>>());
            &subset
        } else {
            &app.train
        };
        let split = Split::new(data, None, options.dev_size, options.seed)?;
        if resumed.is_none() && given["log_every"].is_null() {
            // As `mnist-gpu train`: a progress point once an epoch, or every 50 steps.
            let n = split.train.len();
            options.log_every = options.batch_size.map_or(50, |b| n.div_ceil(b.clamp(1, n)));
        }
        let hidden = &options.hidden;
        if resumed.is_none()
            && (!(1..=MAX_HIDDEN_LAYERS).contains(&hidden.len())
                || hidden.iter().any(|&h| h > MAX_HIDDEN))
        {
            // Refused before its weights are allocated (up to a gigabyte).
            return config(format!(
                "options: hidden {hidden:?}: the page's fused step covers one or two hidden \
                 layers of at most {MAX_HIDDEN} units"
            ));
        }
        let model = match &resumed {
            Some(c) => c.model.clone(),
            None => Model::new(&options.hidden, options.activation, Init::He, options.seed)?,
        };
        Ok(PageRun {
            options,
            split,
            model,
            resumed,
        })
    }

    pub(super) fn split(&self) -> &Split {
        &self.split
    }

    pub(super) fn model(&self) -> &Model {
        &self.model
    }

    /// Steps done before this session of the run.
    fn start(&self) -> usize {
        self.resumed.as_ref().map_or(0, |c| c.state.step)
    }

    /// (epochs, steps per epoch).
    fn plan(&self) -> (usize, usize) {
        train::plan(&Schedule::of(&self.options), self.split.train.len())
    }

    /// The run's steps in all; refused where they overflow.
    fn total(&self) -> Result<usize> {
        let (epochs, steps_per_epoch) = self.plan();
        epochs.checked_mul(steps_per_epoch).map_or_else(
            || {
                config(format!(
                    "options: {epochs} epochs of {steps_per_epoch} steps are too many"
                ))
            },
            Ok,
        )
    }

    /// Refuses (naming `key`) a step `end` past the run's end, or further from its start
    /// than a request replays (`MAX_REPLAYED_STEPS`, `MAX_REPLAYED_IMAGES`).
    fn check_reach(&self, key: &str, end: usize) -> Result<()> {
        let n = self.split.train.len();
        let schedule = Schedule::of(&self.options);
        schedule.validate(n)?;
        let total = self.total()?;
        if end > total {
            return config(format!(
                "{key}: step {end} is past the run's end ({total} steps)"
            ));
        }
        let steps = end.saturating_sub(self.start());
        let scored = (steps / self.options.log_every.max(1)).saturating_mul(self.split.dev.len());
        let augmented = match self.options.augment {
            Augment::Off => 0,
            _ => schedule.capacity(n),
        };
        let images = steps.saturating_mul(augmented).saturating_add(scored);
        if steps > MAX_REPLAYED_STEPS || images > MAX_REPLAYED_IMAGES {
            return config(format!(
                "{key}: step {end} is {steps} steps from the run's start, {images} images \
                 augmented or scored on the dev list on the way; a request replays at most \
                 {MAX_REPLAYED_STEPS} steps and {MAX_REPLAYED_IMAGES} images"
            ));
        }
        Ok(())
    }

    /// The plan's backend, keeping the commands of steps `keep`, on an adapter with
    /// `storage` bytes of workgroup memory.
    fn backend(
        &self,
        keep: std::ops::Range<usize>,
        storage: usize,
    ) -> Result<(PlanBackend, Value)> {
        let schedule = Schedule::of(&self.options);
        let n = self.split.train.len();
        schedule.validate(n)?;
        let setup = Setup::new(
            &self.model,
            schedule.capacity(n),
            self.split.sizes(),
            &self.options.augment,
            storage,
        )?;
        let described = setup.describe();
        let span = Span {
            start: self.start(),
            log_every: self.options.log_every,
            total_steps: self.total()?,
            keep,
        };
        let backend = PlanBackend::new(
            setup,
            &self.model,
            self.split.pool.labels.len(),
            self.split.labels(List::Dev),
            span,
        );
        Ok((backend, described))
    }

    /// Drives the training loop with the plan's backend until `end` steps are done (or all).
    fn drive(
        &self,
        backend: &mut PlanBackend,
        end: usize,
        checkpointer: Option<&mut dyn Checkpointer>,
    ) -> Result<()> {
        let mut schedule = Schedule::of(&self.options);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        schedule.interrupt = Some(stop);
        schedule.on_step = Some(StepHook(Arc::new(move |step, _| {
            if step >= end {
                flag.store(true, Ordering::Relaxed);
            }
        })));
        let (state, optimizer) = match &self.resumed {
            Some(c) => (c.state.clone(), Some(&c.optimizer)),
            None => (RunState::start(&self.split, &schedule), None),
        };
        if end <= state.step {
            return Ok(());
        }
        let progress = &mut |_: &train::Progress| {};
        train::train_from(
            backend,
            &self.split,
            &schedule,
            state,
            optimizer,
            progress,
            checkpointer,
        )?;
        Ok(())
    }
}

/// The plan of steps `from + 1 ..= from + steps` of the run `request` describes.
fn plan_of(app: &App, request: &Value, resumed: Resumed) -> Result<Value> {
    let run = PageRun::of(app, request, resumed)?;
    let number = |key: &str, default: usize| -> Result<usize> {
        match &request[key] {
            Value::Null => Ok(default),
            v => v.as_u64().map(|n| n as usize).ok_or_else(|| {
                mnist_gpu::error::Error::Config(format!("{key}: {v} is not a count"))
            }),
        }
    };
    let from = number("from", run.start())?.max(run.start());
    run.check_reach("from", from)?;
    let mut steps = number("steps", 256)?.clamp(1, MAX_PLAN_STEPS);
    if matches!(run.options.augment, Augment::Elastic(_)) {
        let batch = Schedule::of(&run.options).capacity(run.split.train.len());
        steps = steps.min((MAX_ELASTIC_PLAN_IMAGES / batch).max(1));
    }
    let storage = number("workgroup_storage", 16384)?;
    let (epochs, steps_per_epoch) = run.plan();
    let total = run.total()?;
    let (mut backend, described) = run.backend(from..(from + steps).min(total), storage)?;
    run.drive(&mut backend, from + steps, None)?;
    backend.flush();
    let layout = ParamLayout::new(&run.model);
    let first = from == run.start();
    let state = run.resumed.as_ref().filter(|_| first).map(|c| {
        // The moments one after another, each laid out as the parameters.
        (0..c.optimizer.tensors.first().map_or(0, Vec::len))
            .flat_map(|k| {
                let moment: Vec<&[f32]> = c.optimizer.tensors.iter().map(|t| &t[k][..]).collect();
                layout.pack_tensors(&moment)
            })
            .collect::<Vec<f32>>()
    });
    Ok(json!({
        "setup": described,
        "params": first.then(|| layout.pack(&run.model)),
        "state": state,
        "commands": backend.commands,
        "from": from,
        "next": backend.recorded().min(total),
        "total": total,
        "steps_per_epoch": steps_per_epoch,
        "epochs": epochs,
        "options": run.options,
    }))
}

/// The loop's state after one step, captured as a checkpoint would save it.
struct Capture {
    at: usize,
    state: Option<RunState>,
}

impl Checkpointer for Capture {
    fn due_after_step(&self, step: usize) -> bool {
        step == self.at
    }

    fn due_at_epoch_end(&self) -> bool {
        false
    }

    fn save(&mut self, _: &mut dyn mnist_gpu::backend::Backend, state: &RunState) -> Result<()> {
        self.state = Some(state.clone());
        Ok(())
    }
}

/// `POST /api/checkpoint`: the page's run after step `step` as a `--checkpoint` file: its
/// parameters and optimizer state (`params`, `state`: laid out as the plan's), the loop's
/// state at that step (worked out again here), and the page's progress points (`history`).
fn checkpoint_of(app: &App, request: &Value, resumed: Resumed) -> Result<Vec<u8>> {
    let run = PageRun::of(app, request, resumed)?;
    let step = request["step"].as_u64().unwrap_or(0) as usize;
    if step <= run.start() {
        return config("step: the page's run has no progress point yet to save");
    }
    run.check_reach("step", step)?;
    // Checked before any work; added to the loop's own points below.
    let history = page_history(&request["history"], step)?;
    let floats = |key: &str| -> Result<Vec<f32>> {
        let values = request[key].as_array().map(Vec::as_slice).unwrap_or(&[]);
        values
            .iter()
            .map(|v| v.as_f64().map(|x| x as f32))
            .collect::<Option<Vec<f32>>>()
            .ok_or_else(|| mnist_gpu::error::Error::Config(format!("{key}: not a list of numbers")))
    };
    let layout = ParamLayout::new(&run.model);
    let params = floats("params")?;
    let state = floats("state")?;
    let moments = Schedule::of(&run.options).optimizer.state_tensors();
    if params.len() != layout.floats || state.len() < moments * layout.floats {
        return config(format!(
            "params: {} numbers and state {}, expected {} and {}",
            params.len(),
            state.len(),
            layout.floats,
            moments * layout.floats
        ));
    }
    let model = layout.unpack(&params, run.options.activation);
    let per_moment: Vec<Vec<Vec<f32>>> = (0..moments)
        .map(|k| layout.tensors(&state[k * layout.floats..(k + 1) * layout.floats]))
        .collect();
    let tensors = (0..2 * layout.layers.len())
        .map(|t| per_moment.iter().map(|m| m[t].clone()).collect())
        .collect();
    let (mut backend, _) = run.backend(step..step, 1 << 20)?;
    let mut capture = Capture {
        at: step,
        state: None,
    };
    run.drive(&mut backend, step, Some(&mut capture))?;
    let Some(mut state) = capture.state else {
        return config(format!("step: {step} is past the run's end"));
    };
    state.history.retain(|p| p.step <= run.start());
    state.history.extend(history);
    backend.hold(model, tensors);
    let dir = tempfile::tempdir()
        .map_err(|e| mnist_gpu::error::Error::Config(format!("no temporary directory: {e}")))?;
    let path = dir.path().join("checkpoint.safetensors");
    let plan = Checkpointing {
        path: path.clone(),
        options: RunOptions {
            checkpoint_every: None,
            ..run.options.clone()
        },
        train_file: app.train_id.clone(),
    };
    checkpoint::save(&plan, &mut backend, &state)?;
    std::fs::read(&path)
        .map_err(|e| mnist_gpu::error::Error::Config(format!("reading the checkpoint back: {e}")))
}

/// The page's progress points, as the loop's progress lines; refused where one is not an
/// object whose `step` is a step of the run up to `last` (the checkpoint's), so the file holds
/// no progress after its own step. Numbers the page lacks (null) are NaN.
fn page_history(history: &Value, last: usize) -> Result<Vec<train::Progress>> {
    let rows = match history {
        Value::Null => &[][..],
        Value::Array(rows) => &rows[..],
        _ => return config("history: expected a list of progress points"),
    };
    let mut points = Vec::with_capacity(rows.len());
    for (i, p) in rows.iter().enumerate() {
        let step = p["step"].as_u64().map(|s| s as usize);
        let Some(step) = step.filter(|s| (1..=last).contains(s)) else {
            return config(format!(
                "history[{i}]: expected a progress point {{\"step\": 1 to {last}, …}}, got {p}"
            ));
        };
        let f = |key: &str| p[key].as_f64();
        points.push(train::Progress {
            step,
            steps: f("steps").unwrap_or(0.0) as usize,
            epoch: f("epoch").map(|e| e as usize),
            batch: BatchStats {
                loss: f("loss").unwrap_or(f64::NAN),
                accuracy: f("accuracy").unwrap_or(f64::NAN),
            },
            dev_accuracy: f("dev_accuracy"),
            dev_loss: f("dev_loss"),
            alpha: f("alpha").unwrap_or(f64::NAN) as f32,
            samples_per_second: f("samples_per_second").unwrap_or(0.0),
        });
    }
    Ok(points)
}

pub async fn checkpoint(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    let (request, resumed, held) = match train_request(&app, headers, body).await {
        Ok(request) => request,
        Err(refusal) => return refusal.into_response(),
    };
    let answer = tokio::task::spawn_blocking(move || checkpoint_of(&app, &request, resumed)).await;
    drop(held);
    match answer {
        Ok(Ok(bytes)) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"mnist-gpu-checkpoint.safetensors\"",
                ),
            ],
            bytes,
        )
            .into_response(),
        Ok(Err(e)) => bad(e.to_string()).into_response(),
        Err(e) => bad(format!("the checkpoint failed: {e}")).into_response(),
    }
}

/// The largest checkpoint the page opens.
const MAX_CHECKPOINT: usize = 64 << 20;

/// `POST /api/checkpoint/open` (the file's bytes): its run, for the page to continue, kept
/// in the store under a new id; refused with one line when damaged, from another training
/// file, a shape the page cannot run, or larger than the store holds.
pub async fn open_checkpoint(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let too_large = || bad(format!("the checkpoint is over {MAX_CHECKPOINT} bytes"));
    let received = limits::receive(&app.budget, &headers, body, MAX_CHECKPOINT, &too_large).await;
    let limits::Received { bytes, held } = match received {
        Ok(received) => received,
        Err(refusal) => return refusal.into_response(),
    };
    let answer = tokio::task::spawn_blocking(move || opened(&app, &bytes)).await;
    drop(held);
    match answer {
        Ok(Ok(value)) => json_body(&value).into_response(),
        Ok(Err(refusal)) => refusal.into_response(),
        Err(e) => bad(format!("opening the checkpoint failed: {e}")).into_response(),
    }
}

fn opened(app: &App, bytes: &[u8]) -> std::result::Result<Value, Refusal> {
    let store = &app.checkpoints;
    if bytes.len() > store.max_bytes {
        return Err(Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the checkpoint is {} bytes, more than this server keeps of opened checkpoints \
                 ({} bytes, serve --checkpoints-held)",
                bytes.len(),
                store.max_bytes
            ),
        ));
    }
    let c = parsed(app, bytes).map_err(|e| bad(e.to_string()))?;
    let (options, step) = (c.options.clone(), c.state.step);
    let id = store
        .add(c, bytes.len())
        .ok_or_else(|| bad("the checkpoint is too large"))?;
    Ok(json!({"id": id, "options": options, "step": step}))
}

/// The dropped file as a checkpoint the page can run.
fn parsed(app: &App, bytes: &[u8]) -> Result<Checkpoint> {
    let path = std::path::Path::new("the dropped file");
    let file = mnist_gpu::model_file::parse(path, bytes)?;
    if !checkpoint::is_checkpoint(&file) {
        return config("the dropped file: a model, not a checkpoint (--checkpoint writes those)");
    }
    let c = checkpoint::parse(path, bytes, file)?;
    if c.train_file.sha256 != app.train_id.sha256 {
        return config(format!(
            "the dropped file: trained on {}, but this server trains on {} (serve --train)",
            c.train_file.name, app.train_id.name
        ));
    }
    // The shape and the data must suit the page (the plan says why not), before it is kept.
    let c = Arc::new(c);
    let run = PageRun::with(app, &json!({}), Some(c.clone()))?;
    run.backend(0..0, 1 << 20)?;
    drop(run);
    Ok(Arc::try_unwrap(c).unwrap_or_else(|shared| (*shared).clone()))
}
