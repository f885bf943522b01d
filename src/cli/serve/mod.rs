//! `mnist-gpu serve`: a local web page to draw a digit and watch the network answer, try the
//! test digits, and see what the first layer learned; and the JSON API the page uses, which
//! scripts can use too. The page (assets/serve/index.html) is compiled in and fetches nothing
//! from elsewhere.
//!
//! API (every error is a 4xx or 5xx with a one-line JSON body `{"error": "…"}`):
//! - `POST /api/predict` `{"pixels": [784 numbers 0–255]}` → `{"digit": 7, "probabilities": [10]}`;
//!   `{"images": [[784], …]}` (at most `MAX_IMAGES`) → a list of those; a binary body
//!   (`application/octet-stream`, 784 bytes an image) → a list. Bodies over `MAX_BODY` bytes
//!   are refused, and so are images scaled to 0–1 (`decode`; `predict`).
//! - `GET /api/model`: the shape, activation, where it runs, and the file's metadata.
//! - `GET /api/test[?misclassified=true]`: a random test digit with its label and prediction.
//! - `GET /api/weights`: the first layer's weights, per unit (the first `MAX_UNITS`).
//! - `GET /api/confusion`: the confusion matrix on the test digits.
//! - The Train panel's: the worker, the shaders, the training data, plans, checkpoints both
//!   ways and "Check this GPU" (`train.rs`, `check.rs`).
//! - The page's own: its icon, the Train form's starting values and limits, and the test
//!   digits as bytes (`page.rs`).
//!
//! Without `--model`, the model's requests are refused (404, "no model: …") and `/api/test`
//! gives digits unclassified: the page answers with the network it trains.
//!
//! What the server holds is bounded by its options, not by its traffic: the request bodies in
//! flight (`--max-in-flight`; past it a request waits, then gets 503 with `Retry-After`:
//! `limits`), the checkpoints opened in the page (`--checkpoints-held`, `--checkpoint-ttl`:
//! `store`). The HTTP work runs on tokio's threads; the model on a worker per core (or the
//! GPU's one), batching what waits (`engine`). SIGINT or SIGTERM stops it: no new connection
//! is taken, the requests in flight get `http::GRACE` to finish, and the rest are cut.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{RawQuery, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use clap::Args;
use rand::Rng;
use serde_json::{json, Value};

mod check;
mod decode;
mod engine;
mod http;
mod limits;
mod memory;
mod page;
mod plan;
mod predict;
mod store;
mod train;

use super::{stop, BackendArgs};
use engine::{Bulk, Engine};
use limits::Budget;
use mnist_gpu::backend::{Backend, StepPath};
use mnist_gpu::checkpoint::{Checkpoint, FileId};
use mnist_gpu::cpu::{fused::FusedConfig, CpuBackend};
use mnist_gpu::data::pool::{ImagePool, List, ListSizes};
use mnist_gpu::data::{self, Dataset, CLASSES, EMBEDDED_TEST, EMBEDDED_TRAIN, PIXELS};
use mnist_gpu::error::{config, Error, Result};
use mnist_gpu::model::Model;
use mnist_gpu::model_file::{self, ModelFile};
use store::Store;

const PAGE: &str = include_str!("../../../assets/serve/index.html");
/// The largest request body: a batch of `MAX_IMAGES` images written as JSON fits.
const MAX_BODY: usize = 4 << 20;
/// The most images one request classifies.
const MAX_IMAGES: usize = 1000;
/// The most first-layer units `/api/weights` returns.
const MAX_UNITS: usize = 64;
/// On the CPU: images per chunk of a large request (about a millisecond of a core for
/// 784-256-10), and the most images of small requests one pass gathers.
const CPU_CHUNK: usize = 128;
const CPU_BATCH: usize = 256;

/// Serves a page to draw digits and see what the model says (and the JSON API it uses).
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The model (a --save file or a --checkpoint) [default: none: the draw and test panels
    /// wait for one trained in the page].
    #[arg(long)]
    pub model: Option<PathBuf>,

    /// The port to listen on (0: any free one; the address is printed).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,

    /// The address to listen on: 127.0.0.1 serves this machine only; 0.0.0.0 the network.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,

    /// Test digits for the page (any format training reads; a file holding both sets gives its
    /// test part) [default: the embedded 10,000].
    #[arg(long)]
    pub data: Option<PathBuf>,

    /// Training digits for the page's Train panel (any format training reads, labelled)
    /// [default: the
    /// embedded 10,000].
    #[arg(long)]
    pub train: Option<PathBuf>,

    /// The most bytes of request bodies held at once, across all requests (K, M, G: binary
    /// multiples). A request past it waits (--in-flight-wait-ms), then gets 503 with
    /// Retry-After.
    #[arg(long, value_name = "SIZE", default_value = limits::DEFAULT_IN_FLIGHT, value_parser = limits::parse_size)]
    pub max_in_flight: usize,

    /// How long a request waits for room under --max-in-flight before it gets 503.
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    pub in_flight_wait_ms: u64,

    /// The most bytes of checkpoints opened in the page kept at once (the least recently used
    /// goes first).
    #[arg(long, value_name = "SIZE", default_value = store::DEFAULT_HELD, value_parser = limits::parse_size)]
    pub checkpoints_held: usize,

    /// How long a checkpoint opened in the page is kept after its last use, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = store::DEFAULT_TTL)]
    pub checkpoint_ttl: u64,

    #[command(flatten)]
    pub backend: BackendArgs,
}

/// What every request reads: the model's workers, the bounds, and what was worked out at the
/// start.
struct App {
    /// None without `--model`.
    engine: Option<Engine>,
    model_info: Value,
    weights: Value,
    confusion: Value,
    /// The test digits (and as the bytes `/api/test/*` send).
    test: Dataset,
    test_images: Bytes,
    test_labels: Bytes,
    /// What the Train panel trains on (and as the bytes `/api/train/*` send), and its identity
    /// (as checkpoints record it).
    train: Dataset,
    train_images: Bytes,
    train_labels: Bytes,
    train_id: FileId,
    /// The checkpoints opened in the page, by id.
    checkpoints: Store<Checkpoint>,
    /// `/api/check`'s answer, worked out at its first request.
    check: Mutex<Option<Bytes>>,
    /// Per test image: the prediction and its probabilities.
    predicted: Vec<predict::Answer>,
    misclassified: Vec<usize>,
    /// The room for request bodies; the pool for large requests' work; the trim after them.
    budget: Budget,
    bulk: Bulk,
    trim: Arc<memory::Trim>,
}

/// What every `App` holds whether or not it has a model.
struct Common {
    test: Dataset,
    train: Dataset,
    train_id: FileId,
    checkpoints: Store<Checkpoint>,
    budget: Budget,
    bulk: Bulk,
}

impl Common {
    fn new(
        args: &ServeArgs,
        test: Dataset,
        (train, train_id): (Dataset, FileId),
    ) -> Result<Common> {
        Ok(Common {
            test,
            train,
            train_id,
            checkpoints: Store::new(
                args.checkpoints_held,
                Duration::from_secs(args.checkpoint_ttl),
            ),
            budget: Budget::new(
                args.max_in_flight,
                Duration::from_millis(args.in_flight_wait_ms),
            ),
            bulk: Bulk::new().map_err(Error::Config)?,
        })
    }
}

/// One-line JSON errors, the only kind this API gives; a 503 says when to try again.
struct Refusal {
    status: StatusCode,
    message: String,
    retry_after: Option<u32>,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 503: no room now; try again in `RETRY_AFTER` seconds.
    fn busy(message: impl Into<String>) -> Refusal {
        Refusal {
            retry_after: Some(limits::RETRY_AFTER),
            ..Refusal::new(StatusCode::SERVICE_UNAVAILABLE, message)
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, json_body(&json!({ "error": self.message }))).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

fn json_body(value: &Value) -> ([(header::HeaderName, &'static str); 1], String) {
    (
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
}

fn bad(message: impl Into<String>) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, message)
}

/// Softmax of one column of logits (`model::softmax`, under the name `predict` imports).
pub(super) use mnist_gpu::model::softmax as probabilities;

/// Loads the model and the test digits, works out what the page shows of them, and serves the
/// page and the API until stopped.
pub fn serve(args: &ServeArgs) -> Result<()> {
    memory::fix_mmap_threshold();
    let common = Common::new(args, test_digits(args)?, training_digits(args)?)?;
    let Some(path) = &args.model else {
        let app = Arc::new(App::without_model(common));
        let description = format!(
            "  no model (--model): train one in the page; test digits: {}; Ctrl-C stops",
            app.test.source
        );
        return listen(args, app, &description);
    };
    let file = model_file::load(path)?;
    let (backend, backend_name) = open_backend(args, &file.model, &common.test)?;
    let app = Arc::new(App::new(path, &file, backend, backend_name, common)?);
    let description = describe(path, &file.model, &app);
    listen(args, app, &description)
}

/// Without `--model`: what the model panels answer.
const NO_MODEL: &str = "no model: start serve with --model FILE, or train one in the Train panel";

fn no_model() -> Response {
    Refusal::new(StatusCode::NOT_FOUND, NO_MODEL).into_response()
}

/// `--data` (a file holding both sets gives its test part: `x_test` of a Keras `.npz`, a
/// folder's `test/`), or the embedded test digits; at least one.
fn test_digits(args: &ServeArgs) -> Result<Dataset> {
    let test = match &args.data {
        Some(path) => data::open(path, data::Part::Test)?.dataset,
        None => EMBEDDED_TEST.load()?,
    };
    if test.is_empty() {
        return config(format!("--data {}: holds no images", test.source));
    }
    Ok(test)
}

/// `--train`, or the embedded training digits; labelled; and its identity.
fn training_digits(args: &ServeArgs) -> Result<(Dataset, FileId)> {
    let (train, id) = match &args.train {
        Some(path) => (data::load(path)?, FileId::of_file(path)?),
        None => (
            EMBEDDED_TRAIN.load()?,
            FileId::of_bytes(&EMBEDDED_TRAIN.name(), &EMBEDDED_TRAIN.bytes()),
        ),
    };
    if train.is_empty() {
        return config(format!("--train {}: holds no images", train.source));
    }
    train.require_labels()?;
    Ok((train, id))
}

/// The backend `--backend` asks for, holding the model and the test digits as its test list
/// (label 0 where they have none); and its name, "cpu" or "gpu".
fn open_backend(
    args: &ServeArgs,
    model: &Model,
    test: &Dataset,
) -> Result<(Box<dyn Backend>, &'static str)> {
    let n = test.len();
    let pool = Arc::new(ImagePool {
        images: test.images.clone(),
        labels: test.labels.clone().unwrap_or_else(|| vec![0; n]),
    });
    let sizes = ListSizes {
        train: 0,
        dev: 0,
        test: n,
    };
    let opened = args.backend.open(model, pool, sizes, 1)?;
    for note in opened.notes("classifying") {
        println!("{note}");
    }
    let mut backend = opened.backend;
    backend.set_list(List::Test, &(0..n as u32).collect::<Vec<_>>())?;
    Ok((backend, opened.name))
}

/// The model's workers, started: on the CPU one per core, each with the model and its own scratch (the
/// fused path one thread each; the reference path where `--path reference` chose it); on a GPU
/// the one backend, whose device takes one pass at a time.
fn workers(backend: Box<dyn Backend>, backend_name: &str, model: &Model) -> Result<Engine> {
    if backend_name != "cpu" {
        return Ok(Engine::start(vec![backend], MAX_IMAGES, MAX_IMAGES));
    }
    let none = ListSizes {
        train: 0,
        dev: 0,
        test: 0,
    };
    let pool = Arc::new(ImagePool::default());
    let one_thread = FusedConfig {
        threads: 1,
        ..FusedConfig::default()
    };
    let path = backend.path();
    let workers = (0..engine::cores())
        .map(|_| -> Result<Box<dyn Backend>> {
            Ok(Box::new(match path {
                StepPath::Fused => {
                    CpuBackend::with_config(model, pool.clone(), none, CPU_BATCH, one_thread)?
                }
                StepPath::Reference => {
                    CpuBackend::new_reference(model, pool.clone(), none, CPU_BATCH)?
                }
            }))
        })
        .collect::<Result<_>>()?;
    Ok(Engine::start(workers, CPU_CHUNK, CPU_BATCH))
}

impl App {
    /// Classifies every test digit once, works out what the page asks for of the model, and
    /// starts the model's workers.
    fn new(
        path: &std::path::Path,
        file: &ModelFile,
        mut backend: Box<dyn Backend>,
        backend_name: &str,
        common: Common,
    ) -> Result<App> {
        let predicted = predict::answers(&backend.logits(List::Test)?);
        let (confusion, misclassified) = confusion(&common.test, &predicted);
        let model = &file.model;
        let model_info = json!({
            "file": path.display().to_string(),
            "inputs": PIXELS,
            "hidden": model.hidden(),
            "outputs": CLASSES,
            "activation": model.activation.name(),
            "backend": backend_name,
            "device": backend.device_name(),
            "path": backend.path().name(),
            "data": common.test.source,
            "metadata": file.metadata.iter()
                .filter(|(key, _)| key.as_str() != "checkpoint")
                .collect::<std::collections::BTreeMap<_, _>>(),
        });
        Ok(App {
            engine: Some(workers(backend, backend_name, model)?),
            model_info,
            weights: first_layer(model),
            confusion,
            predicted,
            misclassified,
            ..App::without_model(common)
        })
    }

    /// The test and training digits alone (no `--model`).
    fn without_model(common: Common) -> App {
        App {
            engine: None,
            model_info: Value::Null,
            weights: Value::Null,
            confusion: Value::Null,
            train_images: Bytes::from(common.train.images.clone()),
            train_labels: Bytes::from(common.train.labels.clone().unwrap_or_default()),
            test_images: Bytes::from(common.test.images.clone()),
            test_labels: Bytes::from(common.test.labels.clone().unwrap_or_default()),
            test: common.test,
            train: common.train,
            train_id: common.train_id,
            checkpoints: common.checkpoints,
            check: Mutex::new(None),
            predicted: Vec::new(),
            misclassified: Vec::new(),
            budget: common.budget,
            bulk: common.bulk,
            trim: Arc::default(),
        }
    }

    /// `value`, or the refusal without a model.
    fn with_model(&self, value: &Value) -> Response {
        match self.engine {
            Some(_) => json_body(value).into_response(),
            None => no_model(),
        }
    }

    /// The share of test digits classified right; None where they have no labels.
    fn accuracy(&self) -> Option<f64> {
        let n = self.test.len();
        let wrong = self.misclassified.len();
        self.test
            .labels
            .as_ref()
            .map(|_| 1.0 - wrong as f64 / n as f64)
    }
}

/// `/api/confusion`'s answer (the matrix, label by prediction, where the digits have labels),
/// and the indices of the misclassified digits. The matrix is `confusion`, as in `eval
/// --json`; `matrix`, its first name here, stays as its alias for clients written before.
fn confusion(test: &Dataset, predicted: &[predict::Answer]) -> (Value, Vec<usize>) {
    let n = test.len();
    let mut confusion = [[0usize; CLASSES]; CLASSES];
    let mut misclassified = Vec::new();
    let Some(labels) = &test.labels else {
        return (
            json!({ "confusion": null, "matrix": null, "images": n, "data": test.source }),
            misclassified,
        );
    };
    for (i, (&label, answer)) in labels.iter().zip(predicted).enumerate() {
        confusion[label as usize][answer.digit as usize] += 1;
        if label != answer.digit {
            misclassified.push(i);
        }
    }
    let accuracy = 1.0 - misclassified.len() as f64 / n as f64;
    let value = json!({
        "confusion": confusion,
        "matrix": confusion,
        "accuracy": accuracy,
        "images": n,
        "data": test.source,
    });
    (value, misclassified)
}

/// `/api/weights`'s answer: the first layer's weights, one image per unit (the first
/// `MAX_UNITS`), and the largest magnitude among them, to scale the colours by.
fn first_layer(model: &Model) -> Value {
    let first = &model.layers[0];
    let shown = first.outputs.min(MAX_UNITS);
    let scale = first.w[..shown * PIXELS]
        .iter()
        .fold(0.0f32, |m, &w| m.max(w.abs()));
    json!({
        "total": first.outputs,
        "shown": shown,
        "scale": scale,
        "units": first.w.chunks_exact(PIXELS).take(shown).collect::<Vec<_>>(),
    })
}

/// The line under the address: the model, where it runs, and the test digits.
fn describe(path: &std::path::Path, model: &Model, app: &App) -> String {
    let hidden: Vec<String> = model.hidden().iter().map(|h| h.to_string()).collect();
    let summary = match app.accuracy() {
        Some(accuracy) => format!("{:.2}% of them right", 100.0 * accuracy),
        None => "unlabelled".to_string(),
    };
    format!(
        "  {} (784-{}-10, {}) on {}, {} path; test digits: {}, {summary}; Ctrl-C stops",
        path.display(),
        hidden.join("-"),
        model.activation.name(),
        app.model_info["device"].as_str().unwrap_or(""),
        app.model_info["path"].as_str().unwrap_or(""),
        app.test.source,
    )
}

/// The page, the API, and one-line JSON refusals for anything else.
fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(page))
        .route(
            "/api/model",
            get(|State(app): State<Arc<App>>| async move { app.with_model(&app.model_info) }),
        )
        .route(
            "/api/weights",
            get(|State(app): State<Arc<App>>| async move { app.with_model(&app.weights) }),
        )
        .route(
            "/api/confusion",
            get(|State(app): State<Arc<App>>| async move { app.with_model(&app.confusion) }),
        )
        .route("/api/test", get(test_digit))
        .route("/api/test/images", get(page::test_images))
        .route("/api/test/labels", get(page::test_labels))
        .route("/api/train/form", get(page::form))
        .route("/favicon.svg", get(page::favicon))
        .route("/favicon.ico", get(page::favicon))
        .route("/train_worker.js", get(train::worker))
        .route("/api/shaders", get(train::shader_list))
        .route("/api/shaders/{file}", get(train::shader))
        .route("/api/train/images", get(train::images))
        .route("/api/train/labels", get(train::labels))
        .route("/api/train/plan", post(train::plan))
        .route("/api/checkpoint", post(train::checkpoint))
        .route("/api/check", get(check::check).post(check::judge))
        .route("/api/checkpoint/open", post(train::open_checkpoint))
        .route("/api/predict", post(predict::predict))
        .route("/api/prepare", post(predict::prepare))
        .fallback(|request: Request| async move {
            Refusal::new(
                StatusCode::NOT_FOUND,
                format!("nothing at {}", request.uri().path()),
            )
        })
        .method_not_allowed_fallback(|request: Request| async move {
            Refusal::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!(
                    "{} is not served at {}",
                    request.method(),
                    request.uri().path()
                ),
            )
        })
        .with_state(app)
}

/// Listens on `--host`:`--port`, prints the address and `description`, and serves until
/// stopped (SIGINT, SIGTERM: `stop`).
fn listen(args: &ServeArgs, app: Arc<App>, description: &str) -> Result<()> {
    let stopping = stop::install();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| Error::Config(format!("cannot start the server: {e}")))?;
    let served = runtime.block_on(async {
        let address = format!("{}:{}", args.host, args.port);
        let listener = tokio::net::TcpListener::bind(&address).await.map_err(|e| {
            Error::Config(format!("cannot listen on {address} (--host, --port): {e}"))
        })?;
        let bound: SocketAddr = listener
            .local_addr()
            .map_err(|e| Error::Config(format!("cannot listen on {address}: {e}")))?;
        let shown = if bound.ip().is_unspecified() {
            format!(
                "http://127.0.0.1:{}/ (and this machine's other addresses)",
                bound.port()
            )
        } else {
            format!("http://{bound}/")
        };
        println!("serving {shown}");
        println!("{description}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let trim = app.trim.clone();
        let idle = {
            let app = app.clone();
            move || app.budget.idle()
        };
        tokio::spawn(trim.trim_when_idle(idle));
        http::serve(listener, router(app), stopping).await
    });
    // The requests still in flight are cut here: their threads are not waited for.
    runtime.shutdown_timeout(Duration::from_millis(100));
    served
}

async fn page() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE)
}

/// A random test digit (of the misclassified ones with `?misclassified=true`).
async fn test_digit(State(app): State<Arc<App>>, RawQuery(query): RawQuery) -> Response {
    let only_wrong = match query.as_deref() {
        None | Some("") | Some("misclassified=false") => false,
        Some("misclassified=true") => true,
        Some(other) => {
            return bad(format!("unknown query {other:?}: use misclassified=true")).into_response()
        }
    };
    if only_wrong && app.engine.is_none() {
        return no_model();
    }
    let choices = if only_wrong {
        &app.misclassified[..]
    } else {
        &[][..]
    };
    let n = app.test.len();
    let index = if only_wrong {
        if choices.is_empty() {
            return Refusal::new(StatusCode::NOT_FOUND, "no test digit is misclassified")
                .into_response();
        }
        choices[rand::rng().random_range(0..choices.len())]
    } else {
        rand::rng().random_range(0..n)
    };
    // Without a model, the digit alone (the page may classify it with the model it trained).
    let mut answer = match app.predicted.get(index) {
        Some(predicted) => serde_json::to_value(predicted).unwrap_or(Value::Null),
        None => json!({ "digit": null, "probabilities": null }),
    };
    answer["index"] = json!(index);
    answer["of"] = json!(n);
    answer["pixels"] = json!(app.test.image(index));
    answer["label"] = json!(app.test.labels.as_ref().map(|l| l[index]));
    json_body(&answer).into_response()
}
