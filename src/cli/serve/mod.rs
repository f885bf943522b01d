//! `mnist-gpu serve`: a local web page to draw a digit and watch the network answer, try the
//! test digits, and see what the first layer learned; and the JSON API the page uses, which
//! scripts can use too. The page (assets/serve/index.html) is compiled in and fetches nothing
//! from elsewhere.
//!
//! API (every error is a 4xx with a one-line JSON body `{"error": "…"}`):
//! - `POST /api/predict` `{"pixels": [784 numbers 0–255]}` → `{"digit": 7, "probabilities": [10]}`;
//!   `{"images": [[784], …]}` (at most `MAX_IMAGES`) → a list of those. Bodies over `MAX_BODY`
//!   bytes are refused, and so are images scaled to 0–1 (see `image_bytes`).
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
//! One backend serves every request, in turn (a mutex); the HTTP work runs on tokio's threads,
//! so other clients are served while one waits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use clap::Args;
use rand::Rng;
use serde_json::{json, Value};

mod check;
mod page;
mod plan;
mod train;

use super::BackendArgs;
use mnist_gpu::backend::Backend;
use mnist_gpu::checkpoint::{Checkpoint, FileId};
use mnist_gpu::data::pool::{ImagePool, List, ListSizes};
use mnist_gpu::data::{self, Dataset, CLASSES, EMBEDDED_TEST, EMBEDDED_TRAIN, PIXELS};
use mnist_gpu::error::{config, Error, Result};
use mnist_gpu::model::{argmax_columns, Model};
use mnist_gpu::model_file::{self, ModelFile};

const PAGE: &str = include_str!("../../../assets/serve/index.html");
/// The largest request body: a batch of `MAX_IMAGES` images written as JSON fits.
const MAX_BODY: usize = 4 << 20;
/// The most images one request classifies.
const MAX_IMAGES: usize = 1000;
/// The most first-layer units `/api/weights` returns.
const MAX_UNITS: usize = 64;

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

    /// Test digits for the page (IDX or CSV) [default: the embedded 10,000].
    #[arg(long)]
    pub data: Option<PathBuf>,

    /// Training digits for the page's Train panel (IDX or CSV, labelled) [default: the
    /// embedded 10,000].
    #[arg(long)]
    pub train: Option<PathBuf>,

    #[command(flatten)]
    pub backend: BackendArgs,
}

/// What every request reads: the backend (one request at a time), and what was worked out at
/// the start.
struct App {
    /// None without `--model`.
    backend: Option<Mutex<Box<dyn Backend>>>,
    model_info: Value,
    weights: Value,
    confusion: Value,
    test: Dataset,
    /// What the Train panel trains on, and its identity (as checkpoints record it).
    train: Dataset,
    train_id: FileId,
    /// The checkpoints opened in the page, by id.
    checkpoints: Mutex<Vec<Checkpoint>>,
    /// Per test image: the prediction and its probabilities.
    predicted: Vec<(u8, Vec<f64>)>,
    misclassified: Vec<usize>,
}

/// One-line JSON errors, the only kind this API gives.
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, json_body(&json!({ "error": self.1 }))).into_response()
    }
}

fn json_body(value: &Value) -> ([(header::HeaderName, &'static str); 1], String) {
    (
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
}

fn bad(message: impl Into<String>) -> Refusal {
    Refusal(StatusCode::BAD_REQUEST, message.into())
}

/// Softmax of one column of logits (`model::softmax`, under the name `predict` imports).
pub(super) use mnist_gpu::model::softmax as probabilities;

fn answers(logits: &[f32]) -> Vec<(u8, Vec<f64>)> {
    argmax_columns(logits)
        .into_iter()
        .zip(logits.chunks_exact(CLASSES).map(probabilities))
        .collect()
}

fn answer_json((digit, probabilities): &(u8, Vec<f64>)) -> Value {
    json!({ "digit": digit, "probabilities": probabilities })
}

/// Loads the model and the test digits, works out what the page shows of them, and serves the
/// page and the API until stopped.
pub fn serve(args: &ServeArgs) -> Result<()> {
    let test = test_digits(args)?;
    let train = training_digits(args)?;
    let Some(path) = &args.model else {
        let app = Arc::new(App::without_model(test, train));
        let description = format!(
            "  no model (--model): train one in the page; test digits: {}; Ctrl-C stops",
            app.test.source
        );
        return listen(args, router(app), &description);
    };
    let file = model_file::load(path)?;
    let (backend, backend_name) = open_backend(args, &file.model, &test)?;
    let app = Arc::new(App::new(path, &file, backend, backend_name, test, train)?);
    let description = describe(path, &file.model, &app);
    listen(args, router(app), &description)
}

/// Without `--model`: what the model panels answer.
const NO_MODEL: &str = "no model: start serve with --model FILE, or train one in the Train panel";

fn no_model() -> Response {
    Refusal(StatusCode::NOT_FOUND, NO_MODEL.into()).into_response()
}

/// `--data`, or the embedded test digits; at least one.
fn test_digits(args: &ServeArgs) -> Result<Dataset> {
    let test = match &args.data {
        Some(path) => data::load(path)?,
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

impl App {
    /// Classifies every test digit once, and works out what the page asks for of the model.
    fn new(
        path: &std::path::Path,
        file: &ModelFile,
        mut backend: Box<dyn Backend>,
        backend_name: &str,
        test: Dataset,
        (train, train_id): (Dataset, FileId),
    ) -> Result<App> {
        let predicted = answers(&backend.logits(List::Test)?);
        let (confusion, misclassified) = confusion(&test, &predicted);
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
            "data": test.source,
            "metadata": file.metadata.iter()
                .filter(|(key, _)| key.as_str() != "checkpoint")
                .collect::<std::collections::BTreeMap<_, _>>(),
        });
        Ok(App {
            backend: Some(Mutex::new(backend)),
            model_info,
            weights: first_layer(model),
            confusion,
            test,
            train,
            train_id,
            checkpoints: Mutex::new(Vec::new()),
            predicted,
            misclassified,
        })
    }

    /// The test and training digits alone (no `--model`).
    fn without_model(test: Dataset, (train, train_id): (Dataset, FileId)) -> App {
        App {
            backend: None,
            model_info: Value::Null,
            weights: Value::Null,
            confusion: Value::Null,
            test,
            train,
            train_id,
            checkpoints: Mutex::new(Vec::new()),
            predicted: Vec::new(),
            misclassified: Vec::new(),
        }
    }

    /// `value`, or the refusal without a model.
    fn with_model(&self, value: &Value) -> Response {
        match self.backend {
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
fn confusion(test: &Dataset, predicted: &[(u8, Vec<f64>)]) -> (Value, Vec<usize>) {
    let n = test.len();
    let mut confusion = [[0usize; CLASSES]; CLASSES];
    let mut misclassified = Vec::new();
    let Some(labels) = &test.labels else {
        return (
            json!({ "confusion": null, "matrix": null, "images": n, "data": test.source }),
            misclassified,
        );
    };
    for (i, (&label, (digit, _))) in labels.iter().zip(predicted).enumerate() {
        confusion[label as usize][*digit as usize] += 1;
        if label != *digit {
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
        .route("/api/predict", post(predict))
        .fallback(|request: Request| async move {
            Refusal(
                StatusCode::NOT_FOUND,
                format!("nothing at {}", request.uri().path()),
            )
        })
        .method_not_allowed_fallback(|request: Request| async move {
            Refusal(
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
/// stopped.
fn listen(args: &ServeArgs, router: Router, description: &str) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_io()
        .build()
        .map_err(|e| Error::Config(format!("cannot start the server: {e}")))?;
    runtime.block_on(async {
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
        axum::serve(listener, router)
            .await
            .map_err(|e| Error::Config(format!("the server stopped: {e}")))
    })
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
    if only_wrong && app.backend.is_none() {
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
            return Refusal(
                StatusCode::NOT_FOUND,
                "no test digit is misclassified".into(),
            )
            .into_response();
        }
        choices[rand::rng().random_range(0..choices.len())]
    } else {
        rand::rng().random_range(0..n)
    };
    // Without a model, the digit alone (the page may classify it with the model it trained).
    let mut answer = match app.predicted.get(index) {
        Some(predicted) => answer_json(predicted),
        None => json!({ "digit": null, "probabilities": null }),
    };
    answer["index"] = json!(index);
    answer["of"] = json!(n);
    answer["pixels"] = json!(app.test.image(index));
    answer["label"] = json!(app.test.labels.as_ref().map(|l| l[index]));
    json_body(&answer).into_response()
}

/// `POST /api/predict`: one image (`pixels`) or a batch (`images`).
async fn predict(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    match predict_body(app, headers, body).await {
        Ok(value) => json_body(&value).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

async fn predict_body(
    app: Arc<App>,
    headers: HeaderMap,
    body: Body,
) -> std::result::Result<Value, Refusal> {
    if app.backend.is_none() {
        return Err(Refusal(StatusCode::NOT_FOUND, NO_MODEL.into()));
    }
    let request = read_json(headers, body).await?;
    let (pixels, batch) = requested_images(&request)?;
    let logits = tokio::task::spawn_blocking(move || {
        let Some(backend) = &app.backend else {
            return Err(Error::Config(NO_MODEL.into()));
        };
        let mut backend = backend
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        backend.classify(&pixels)
    })
    .await
    .map_err(model_failed)?
    .map_err(model_failed)?;
    let mut answers: Vec<Value> = answers(&logits).iter().map(answer_json).collect();
    Ok(if batch {
        Value::Array(answers)
    } else {
        answers.remove(0)
    })
}

/// The request's body as JSON, refused unread where it says it is over `MAX_BODY` bytes,
/// and refused where it turns out to be.
async fn read_json(headers: HeaderMap, body: Body) -> std::result::Result<Value, Refusal> {
    let too_large = || {
        Refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the body is over {MAX_BODY} bytes: send at most {MAX_IMAGES} images a request"
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Err(too_large());
    }
    let bytes: Bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| too_large())?;
    serde_json::from_slice(&bytes).map_err(|e| bad(format!("the body is not JSON: {e}")))
}

/// The pixels of the request's images, one after another, and whether it sent a batch
/// (`images`) rather than one image (`pixels`).
fn requested_images(request: &Value) -> std::result::Result<(Vec<u8>, bool), Refusal> {
    let usage = "expected {\"pixels\": [784 numbers 0–255]} or {\"images\": [[784 numbers], …]}";
    let (images, batch) = match (&request["pixels"], &request["images"]) {
        (Value::Array(_), Value::Null) => (vec![("pixels".to_string(), &request["pixels"])], false),
        (Value::Null, Value::Array(list)) => {
            if list.is_empty() || list.len() > MAX_IMAGES {
                return Err(bad(format!(
                    "images: {} images; send 1 to {MAX_IMAGES}",
                    list.len()
                )));
            }
            (
                list.iter()
                    .enumerate()
                    .map(|(i, v)| (format!("images[{i}]"), v))
                    .collect(),
                true,
            )
        }
        _ => return Err(bad(usage)),
    };
    let mut pixels = Vec::with_capacity(PIXELS * images.len());
    for (name, image) in images {
        pixels.extend(image_bytes(&name, image)?);
    }
    Ok((pixels, batch))
}

/// The backend's error (or its thread's panic) as a 500.
fn model_failed(e: impl std::fmt::Display) -> Refusal {
    Refusal(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("the model failed: {e}"),
    )
}

/// 784 numbers in 0–255 (rounded to whole grey levels). An image whose brightest pixel is 1 or
/// less, yet not black, was scaled to 0–1 (torchvision's `ToTensor()`): read as grey levels it is
/// a black image, and would be classified as one, so it is refused with the fix.
fn image_bytes(name: &str, image: &Value) -> std::result::Result<Vec<u8>, Refusal> {
    let values = image
        .as_array()
        .ok_or_else(|| bad(format!("{name}: not a list of numbers")))?;
    if values.len() != PIXELS {
        return Err(bad(format!(
            "{name}: {} numbers, expected {PIXELS}",
            values.len()
        )));
    }
    let levels = values
        .iter()
        .enumerate()
        .map(|(i, v)| match v.as_f64() {
            Some(x) if (0.0..=255.0).contains(&x) => Ok(x),
            Some(x) => Err(bad(format!("{name}[{i}]: {x} is outside 0–255"))),
            None => Err(bad(format!("{name}[{i}]: {v} is not a number"))),
        })
        .collect::<std::result::Result<Vec<f64>, Refusal>>()?;
    let brightest = levels.iter().copied().fold(0.0, f64::max);
    if brightest > 0.0 && brightest <= 1.0 {
        return Err(bad(format!(
            "{name}: the brightest pixel is {brightest}: pixels look scaled to 0–1 (as \
             torchvision's ToTensor() does), but grey levels 0–255 are expected: multiply by 255"
        )));
    }
    Ok(levels.iter().map(|&x| x.round() as u8).collect())
}
