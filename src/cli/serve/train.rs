//! Training in the page: what the server hands the page's Web Worker (assets/serve/
//! train_worker.js), which carries out the GPU backend's own recording on the browser's WebGPU.
//!
//! The worker decides nothing: a plan (`plan.rs`) is what `GpuBackend` records, driven by the
//! native training loop (`train::train_from`), for the page's adapter limits: the engine
//! `mnist-gpu --backend gpu` would run (the fused step, or the per-operation kernels for wide
//! and deep networks), its buffers, pipelines and bind groups, each step's dispatches and
//! uniform values, and at each progress line where the page reads the numbers the backend's
//! figures computed on the device. So a run in the page follows the native one step for step.
//! (A wasm build of the driver would need a tool beyond cargo to serve; a plan needs none, and
//! the page stays plain files.)
//!
//! - `GET /train_worker.js`: the worker.
//! - `GET /api/shaders/NAME.wgsl`: the kernels, the bytes of shaders/.
//! - `GET /api/train/images`, `/api/train/labels`: the training file, 784 bytes an image and a
//!   byte a label (`serve --train`, default the embedded 10,000).
//! - `POST /api/train/plan` `{"options": {…}, "from": S, "steps": N, "limits":
//!   {"workgroup_storage", "storage_binding", "buffer"}}` → the plan of steps S+1 ..= S+N
//!   (`plan.rs` says its form).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use std::sync::Mutex;

use super::limits::{self, read_json};
use super::plan::{body, regions, PlanExec, Sink};
use super::store::Missing;
use super::{bad, json_body, App, Refusal};
use mnist_gpu::augment::Augment;
use mnist_gpu::backend::{Backend, BatchStats};
use mnist_gpu::checkpoint::{self, Checkpoint, Checkpointing};
use mnist_gpu::data::pool::{List, Split};
use mnist_gpu::data::{CLASSES, PIXELS};
use mnist_gpu::error::{config, Result};
use mnist_gpu::gpu::figures::Figure;
use mnist_gpu::gpu::kernels::KernelConfig;
use mnist_gpu::gpu::recording::Limits;
use mnist_gpu::gpu::shaders::SHADERS;
use mnist_gpu::gpu::{GpuBackend, Target};
use mnist_gpu::model::Model;
use mnist_gpu::options::RunOptions;
use mnist_gpu::params::{moments_of, shapes, ParamLayout};
use mnist_gpu::train::{self, Checkpointer, RunState, Schedule, StepHook};

pub const WORKER: &str = include_str!("../../../assets/serve/train_worker.js");
/// The images the runs of "Check this GPU" train on (the first of the training file).
pub const CHECK_IMAGES: usize = 600;
/// The most steps one plan request covers.
const MAX_PLAN_STEPS: usize = 2048;
/// The most steps, and images gone through in them, a plan or checkpoint request replays to
/// reach its step: each request drives the loop again from the run's start (the server keeps
/// no run). The images are the batches' where the run augments (each image's shift is drawn,
/// about 15 ns an image on one core; a warp is one key a step, counted here all the same) and
/// the dev list's at every progress point (the
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
fn bytes(data: impl Into<axum::body::Bytes>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        data.into(),
    )
        .into_response()
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
        Ok(Ok(body)) => bytes(body),
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
    // The run's length: one of iterations (full batch) and epochs (mini-batch), its default
    // worked out with the rest (`RunOptions::resolved`).
    let mini_batch = !options["batch_size"].is_null();
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
    /// Whether the split holds the server's test digits as its test list (scored at the end).
    tested: bool,
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
        // The check's runs ("check": true) train on the first images of the training file;
        // the others are scored on the server's test digits at the end, where they are labelled.
        let check = request["check"] == json!(true);
        let subset;
        let data = if check {
            let n = app.train.len().min(CHECK_IMAGES);
            subset = app.train.subset(&(0..n).collect::<Vec<_>>());
            &subset
        } else {
            &app.train
        };
        let test = (!check && app.test.labels.is_some()).then_some(&app.test);
        let split = Split::new(data, test, options.dev_size, options.seed)?;
        // As `mnist-gpu train` works them out (a resumed run's are its checkpoint's).
        options = options.resolved(split.train.len());
        if resumed.is_none() {
            // Refused before its weights are allocated (up to a gigabyte).
            fits(&options.hidden, limits_of(request)?)?;
        }
        let model = match &resumed {
            Some(c) => c.model.clone(),
            None => {
                let init = options.init.unwrap_or_default();
                Model::new(&options.hidden, options.activation, init, options.seed)?
            }
        };
        Ok(PageRun {
            options,
            split,
            model,
            resumed,
            tested: test.is_some(),
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

    /// The loop's schedule of the run.
    pub(super) fn schedule(&self) -> Schedule {
        Schedule::of(&self.options, self.split.train.len())
    }

    /// (epochs, steps per epoch).
    fn length(&self) -> (usize, usize) {
        self.schedule().length(self.split.train.len())
    }

    /// The run's steps in all; refused where they overflow.
    fn total(&self) -> Result<usize> {
        let (epochs, steps_per_epoch) = self.length();
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
        let schedule = self.schedule();
        schedule.validate(n)?;
        let total = self.total()?;
        if end > total {
            return config(format!(
                "{key}: step {end} is past the run's end ({total} steps)"
            ));
        }
        let steps = end.saturating_sub(self.start());
        let scored = (steps / schedule.log_every.max(1)).saturating_mul(self.split.dev.len());
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

    /// The page's GPU backend, recording into `sink` for an adapter with `limits`: the engine
    /// `mnist-gpu --backend gpu` would run, with the progress lines' numbers on the device.
    fn backend(&self, sink: &Arc<Mutex<Sink>>, limits: Limits) -> Result<GpuBackend> {
        let schedule = self.schedule();
        let n = self.split.train.len();
        schedule.validate(n)?;
        let target = Target {
            limits,
            kernels: KernelConfig::default(),
        };
        let mut backend = GpuBackend::recording(
            target,
            Box::new(PlanExec(sink.clone())),
            &self.model,
            &self.split.pool,
            self.split.sizes(),
            schedule.capacity(n),
            None,
        )?;
        let window = schedule.log_every.clamp(1, self.total()?.max(1));
        backend.keep_figures(window)?;
        Ok(backend)
    }

    /// Drives the training loop with the page's backend until `end` steps are done (or all).
    fn drive(
        &self,
        backend: &mut GpuBackend,
        end: usize,
        on_progress: &mut dyn FnMut(&train::Progress),
        checkpointer: Option<&mut dyn Checkpointer>,
    ) -> Result<()> {
        let mut schedule = self.schedule();
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
        train::train_from(
            backend,
            &self.split,
            &schedule,
            state,
            optimizer,
            on_progress,
            checkpointer,
        )?;
        Ok(())
    }

    /// The mark of a progress line: what the page reports (from the loop), and where it reads
    /// the numbers (from the figures) and the weights and moments.
    fn progress_mark(&self, p: &train::Progress, samples: usize) -> Value {
        let mut numbers = json!({"loss": ["window", 0], "accuracy": ["window", 1]});
        if p.dev_loss.is_some() {
            numbers["dev_loss"] = json!(["dev", 0]);
            numbers["dev_accuracy"] = json!(["dev", 1]);
        }
        let epochs = self.options.batch_size.map(|_| self.length().0);
        json!({
            "kind": "progress",
            "report": {"step": p.step, "steps": p.steps, "epoch": p.epoch, "epochs": epochs,
                       "alpha": p.alpha, "samples": samples},
            "numbers": numbers,
            "arrays": {"params": "model", "state": "moments"},
        })
    }

    /// Where a plan's marks read: the figures, the weights (dense) and the moments.
    fn regions(&self, backend: &GpuBackend) -> Value {
        let figure = |f: Figure| backend.figure_region(f).map(|r| regions(&[r]));
        json!({
            "window": figure(Figure::Window),
            "dev": figure(Figure::Dev),
            "test": figure(Figure::Test),
            "model": regions(&backend.model_regions()),
            "moments": regions(&backend.moment_regions()),
            "probabilities": backend.probabilities_region(1).map(|r| regions(&[r])),
        })
    }

    /// What the page uploads as the pool: the training file's images (the check's first ones),
    /// then the test digits' where the run is scored on them; their labels, as u32.
    fn pool(&self, app: &App) -> Value {
        let train = self.split.pool.labels.len() - if self.tested { app.test.len() } else { 0 };
        let mut images = vec![json!({"url": "/api/train/images", "bytes": PIXELS * train})];
        let mut labels = vec![json!({"url": "/api/train/labels", "bytes": train, "widen": 4})];
        if self.tested {
            let n = app.test.len();
            images.push(json!({"url": "/api/test/images", "bytes": PIXELS * n}));
            labels.push(json!({"url": "/api/test/labels", "bytes": n, "widen": 4}));
        }
        json!({"images": images, "labels": labels})
    }

    /// The recordings the page runs on its own: one image's probabilities (its input the
    /// drawing), and the test digits' score.
    fn templates(
        &self,
        app: &App,
        backend: &mut GpuBackend,
        sink: &Arc<Mutex<Sink>>,
    ) -> Result<Value> {
        let lock = || sink.lock().unwrap_or_else(|p| p.into_inner());
        lock().capture();
        backend.classify(&[0; PIXELS])?;
        let classify = lock().captured();
        lock().capture();
        let labelled = if self.tested {
            backend.logits(List::Test)?;
            app.test.len()
        } else {
            0
        };
        let mut test = lock().captured();
        let numbers = if labelled > 0 {
            json!({"loss": ["test", 0], "accuracy": ["test", 1]})
        } else {
            json!({})
        };
        test.push(json!(["mark", {"kind": "tested",
            "report": {"images": app.test.len(), "labelled": labelled}, "numbers": numbers}]));
        Ok(json!({
            "classify": {"commands": classify, "read": "probabilities"},
            "test": {"commands": test},
        }))
    }
}

/// The adapter's limits a request gives (`limits`, or the first pages' `workgroup_storage`);
/// WebGPU's defaults for those it leaves out.
fn limits_of(request: &Value) -> Result<Limits> {
    let given = &request["limits"];
    let number = |value: &Value, key: &str, default: u64| -> Result<u64> {
        match value {
            Value::Null => Ok(default),
            v => v.as_u64().ok_or_else(|| {
                mnist_gpu::error::Error::Config(format!("limits: {key}: {v} is not a count"))
            }),
        }
    };
    let d = Limits::DEFAULT;
    let storage = match &given["workgroup_storage"] {
        Value::Null => &request["workgroup_storage"],
        v => v,
    };
    Ok(Limits {
        workgroup_storage: number(storage, "workgroup_storage", d.workgroup_storage as u64)?
            as usize,
        storage_binding: number(
            &given["storage_binding"],
            "storage_binding",
            d.storage_binding,
        )?,
        buffer: number(&given["buffer"], "buffer", d.buffer)?,
    })
}

/// Refuses, in one line, hidden layers whose weights no buffer of the adapter holds (each
/// layer's, and all of them together: the fused step keeps them in one buffer, and the server
/// makes them for every request).
fn fits(hidden: &[usize], limits: Limits) -> Result<()> {
    let widths: Vec<usize> = [PIXELS]
        .into_iter()
        .chain(hidden.iter().copied())
        .chain([CLASSES])
        .collect();
    let most = limits.storage_binding.min(limits.buffer);
    let too_many = |what: String, bytes: u64| {
        config(format!(
            "options: hidden {hidden:?}: {what} needs {} MiB, more than the {} MiB this GPU \
             holds in one buffer",
            bytes.div_ceil(1 << 20),
            most >> 20
        ))
    };
    let mut all = 0u64;
    for (l, pair) in widths.windows(2).enumerate() {
        let bytes = 4 * (pair[0] as u64).saturating_mul(pair[1] as u64);
        if bytes > most {
            return too_many(format!("W{} ({} × {})", l + 1, pair[1], pair[0]), bytes);
        }
        all = all.saturating_add(bytes);
    }
    if all > most {
        return too_many("the weights".into(), all);
    }
    Ok(())
}

/// The plan of steps `from + 1 ..= from + steps` of the run `request` describes: its body.
fn plan_of(app: &App, request: &Value, resumed: Resumed) -> Result<Vec<u8>> {
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
    let steps = number("steps", 256)?.clamp(1, MAX_PLAN_STEPS);
    let (epochs, steps_per_epoch) = run.length();
    let total = run.total()?;
    let end = (from + steps).min(total);
    let (schedule, n) = (run.schedule(), run.split.train.len());
    let sink = Sink::new(run.start(), from..end, move |step| {
        schedule.epoch_of(step, n)
    });
    let mut backend = run.backend(&sink, limits_of(request)?)?;
    let mut on_progress = |p: &train::Progress| {
        let mut sink = sink.lock().unwrap_or_else(|p| p.into_inner());
        let samples = sink.progress().1;
        sink.mark(run.progress_mark(p, samples));
    };
    // One step past the span, so that what follows its last step (the progress line, the next
    // epoch's list) is recorded before the loop stops.
    run.drive(&mut backend, end + 1, &mut on_progress, None)?;
    sink.lock().unwrap_or_else(|p| p.into_inner()).mark_step();
    let templates = run.templates(app, &mut backend, &sink)?;
    let (commands, blob) = sink.lock().unwrap_or_else(|p| p.into_inner()).take();
    let header = json!({
        "commands": commands,
        "from": from,
        "next": end,
        "total": total,
        "steps_per_epoch": steps_per_epoch,
        "epochs": epochs,
        "options": run.options,
        "pool": run.pool(app),
        "regions": run.regions(&backend),
        "templates": templates,
        "units": run.model.layers[0].outputs,
    });
    Ok(body(&header, &blob))
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
/// weights and optimizer moments (`params`, `state`: as the plan's marks read them, dense), the
/// loop's state at that step (worked out again here), and the page's progress points
/// (`history`).
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
    let layout = ParamLayout::dense(&run.model);
    let params = floats("params")?;
    let state = floats("state")?;
    let moments = run.schedule().optimizer.state_tensors();
    if params.len() != layout.floats || state.len() != moments * layout.floats {
        return config(format!(
            "params: {} numbers and state {}, expected {} and {}",
            params.len(),
            state.len(),
            layout.floats,
            moments * layout.floats
        ));
    }
    let model = layout.unpack(&params, run.options.activation);
    let sink = Sink::new(run.start(), step..step, |_| None);
    let mut backend = run.backend(&sink, Limits::UNBOUNDED)?;
    let mut capture = Capture {
        at: step,
        state: None,
    };
    run.drive(&mut backend, step, &mut |_| {}, Some(&mut capture))?;
    let Some(mut state_at) = capture.state else {
        return config(format!("step: {step} is past the run's end"));
    };
    state_at.history.retain(|p| p.step <= run.start());
    state_at.history.extend(history);
    let mut optimizer = backend.optimizer_state()?;
    optimizer.tensors = moments_of(&shapes(&run.model), moments, &state);
    let dir = tempfile::tempdir()
        .map_err(|e| mnist_gpu::error::Error::Config(format!("no temporary directory: {e}")))?;
    let path = dir.path().join("checkpoint.safetensors");
    let checkpointing = Checkpointing {
        path: path.clone(),
        options: RunOptions {
            checkpoint_every: None,
            ..run.options.clone()
        },
        train_file: app.train_id.clone(),
    };
    checkpoint::write(&checkpointing, &model, &optimizer, &state_at)?;
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
    let step = c.state.step;
    let c = Arc::new(c);
    let run = PageRun::with(app, &json!({}), Some(c.clone()))?;
    run.backend(&Sink::new(step, step..step, |_| None), Limits::UNBOUNDED)?;
    drop(run);
    Ok(Arc::try_unwrap(c).unwrap_or_else(|shared| (*shared).clone()))
}
