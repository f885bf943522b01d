//! What the page needs besides the model's API and the trainer's plans: its icon, the Train
//! form's starting values, choices and limits (so that each has one home, here and in the
//! types they come from, rather than in the page's HTML), and the test digits as bytes, on
//! which the page scores the network it trained.
//!
//! - `GET /favicon.svg` (and `/favicon.ico`, where browsers look by default): a small digit.
//! - `GET /api/train/form` → `{"fields": {name: starting value}, "choices": {name: [values]},
//!   "hints": {name: what the field takes}, "test": {"data", "images", "labelled"}}`. The
//!   networks the page trains are the GPU backend's: as wide and as deep as the adapter holds
//!   (the plan refuses in one line what it cannot), so the form has no limit of its own.
//! - `GET /api/test/images`, `/api/test/labels`: the test digits (`serve --data`, default the
//!   embedded 10,000), 784 bytes an image and a byte a label (none where they have no labels).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use clap::ValueEnum;
use serde_json::{json, Value};

use super::{json_body, App};
use crate::cli::train_args::AugmentKind;
use mnist_gpu::model::Activation;
use mnist_gpu::optimizer::OptimizerKind;
use mnist_gpu::options::RunOptions;

const FAVICON: &str = include_str!("../../../assets/serve/favicon.svg");

pub async fn favicon() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "max-age=86400"),
        ],
        FAVICON,
    )
}

/// The run the form suggests: `mnist-gpu train`'s defaults, but a network and a schedule that
/// train in seconds on a laptop's GPU (784-32-10, α = 0.1 in batches of 64 for 3 epochs), and
/// 100 iterations for when the batch size is cleared (full batch).
fn suggested() -> (RunOptions, usize) {
    let options = RunOptions {
        hidden: vec![32],
        alpha: 0.1,
        batch_size: Some(64),
        epochs: Some(3),
        iterations: None,
        ..RunOptions::default()
    };
    (options, 100)
}

/// `GET /api/train/form`.
pub async fn form(State(app): State<Arc<App>>) -> Response {
    json_body(&form_json(&app)).into_response()
}

fn form_json(app: &App) -> Value {
    let (run, iterations) = suggested();
    let strengths = run.augment.distortion().unwrap_or_default();
    let hidden: Vec<String> = run.hidden.iter().map(|h| h.to_string()).collect();
    json!({
        "fields": {
            "hidden": hidden.join(","),
            "activation": run.activation.name(),
            "optimizer": run.optimizer.name(),
            "alpha": run.alpha,
            "lr_decay": run.lr_decay,
            "batch_size": run.batch_size,
            "iterations": iterations,
            "epochs": run.epochs,
            "augment": run.augment.name(),
            "rotation": strengths.rotation,
            "scale": strengths.scale,
            "shear": strengths.shear,
            "translation": strengths.translation,
            "elastic_alpha": strengths.elastic_alpha,
            "elastic_sigma": strengths.elastic_sigma,
            "seed": run.seed,
            "dev_size": run.dev_size,
            // Empty: as `mnist-gpu train` chooses (once an epoch in mini-batch mode).
            "log_every": null,
        },
        "choices": {
            "activation": Activation::value_variants().iter().map(|a| a.name()).collect::<Vec<_>>(),
            "optimizer": OptimizerKind::value_variants().iter().map(|o| o.name()).collect::<Vec<_>>(),
            "augment": augment_kinds(),
        },
        "hints": {
            "hidden": "the hidden layers' widths, comma-separated, e.g. 32, 800 or 256,128,64: \
                       as many and as wide as this GPU holds",
        },
        "test": {
            "data": app.test.source,
            "images": app.test.len(),
            "labelled": app.test.labels.is_some(),
        },
    })
}

/// The names `--augment` takes (its menu's choices).
fn augment_kinds() -> Vec<String> {
    AugmentKind::value_variants()
        .iter()
        .filter_map(|kind| kind.to_possible_value())
        .map(|value| value.get_name().to_string())
        .collect()
}

/// The bytes as they are: `Bytes` shares them, so a request copies nothing.
fn bytes(data: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/octet-stream")], data).into_response()
}

pub async fn test_images(State(app): State<Arc<App>>) -> Response {
    bytes(app.test_images.clone())
}

/// The labels, one byte each; empty where the test digits have none.
pub async fn test_labels(State(app): State<Arc<App>>) -> Response {
    bytes(app.test_labels.clone())
}
