//! `POST /api/predict`: one image (`{"pixels": …}`, or a PNG/JPEG picture) or a batch
//! (`{"images": …}`, or a binary body) in, the model's answers out. The body is read within `--max-in-flight`, decoded by
//! its media type (`decode`), classified by the workers (`engine`), and answered; a large
//! body's parsing and answer are made on the bulk pool.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::decode::{Decoded, Media};
use super::limits::{self, Held, Received};
use super::memory::LARGE;
use super::{probabilities, App, Refusal, MAX_BODY, MAX_IMAGES, NO_MODEL};
use mnist_gpu::data::CLASSES;
use mnist_gpu::model::argmax_columns;

/// Bodies up to this many bytes are parsed on the thread that read them (a few images of
/// JSON: tens of microseconds); larger ones on the bulk pool.
const INLINE_BODY: usize = 32 << 10;
/// Answers of up to this many images are written on the thread that read the request.
const INLINE_ANSWERS: usize = 16;

/// The model's answer for one image. `warning` says what to doubt about the image (a bright
/// background sent as pixels); absent when there is nothing to say. A picture's answer also
/// says whether its background was inverted, and gives the 784 pixels the model saw.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    pub digit: u8,
    pub probabilities: Vec<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inverted: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pixels: Option<Vec<u8>>,
}

/// One answer per column of `logits: (10, n)`.
pub fn answers(logits: &[f32]) -> Vec<Answer> {
    argmax_columns(logits)
        .into_iter()
        .zip(logits.chunks_exact(CLASSES).map(probabilities))
        .map(|(digit, probabilities)| Answer {
            digit,
            probabilities,
            warning: None,
            inverted: None,
            pixels: None,
        })
        .collect()
}

pub async fn predict(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    match answer(&app, &headers, body).await {
        Ok(text) => ([(header::CONTENT_TYPE, "application/json")], text).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

/// The answers' JSON.
async fn answer(app: &Arc<App>, headers: &HeaderMap, body: Body) -> Result<String, Refusal> {
    let Some(engine) = &app.engine else {
        return Err(Refusal::new(StatusCode::NOT_FOUND, NO_MODEL));
    };
    let (decoded, held) = decoded(app, headers, body).await?;
    let Decoded {
        pixels,
        batch,
        warnings,
        inverted,
    } = decoded;
    let n = pixels.len() / mnist_gpu::data::PIXELS;
    let pixels = Arc::new(pixels);
    let logits = engine.classify(pixels.clone()).await?;
    // A picture's answer shows the image it became (784 bytes: no copy worth avoiding).
    let seen = inverted.map(|_| pixels.to_vec());
    let write = move || written(&logits, batch, warnings, inverted, seen);
    let text = if n <= INLINE_ANSWERS {
        write()
    } else {
        app.bulk.run(write).await?
    };
    release(app, held);
    Ok(text)
}

/// Gives a body's room back once its answer is made, and memory to the system after a large
/// one.
fn release(app: &App, held: Held) {
    if held.bytes >= LARGE {
        drop(held);
        app.trim.after_large_request();
    }
}

/// `POST /api/prepare`: a PNG or JPEG picture in, the 784 pixels MNIST's preprocessing makes
/// of it out (`{"pixels": [...], "inverted": bool}`), with or without a model: the page sends
/// its drawing here, so one piece of Rust prepares drawings, uploads and `predict`'s files.
pub async fn prepare(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    let prepared = async {
        if Media::of(&headers)? != Media::Picture {
            return Err(Refusal::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the picture as image/png or image/jpeg",
            ));
        }
        decoded(&app, &headers, body).await
    };
    match prepared.await {
        Ok((decoded, held)) => {
            release(&app, held);
            let answer = serde_json::json!({
                "pixels": decoded.pixels,
                "inverted": decoded.inverted == Some(true),
            });
            (
                [(header::CONTENT_TYPE, "application/json")],
                answer.to_string(),
            )
                .into_response()
        }
        Err(refusal) => refusal.into_response(),
    }
}

/// The body's images, read within `--max-in-flight` and decoded by its media type (a large
/// body on the bulk pool), and the room the body holds until its answer is made.
async fn decoded(
    app: &Arc<App>,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Decoded, Held), Refusal> {
    let media = Media::of(headers)?;
    let too_large = || {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the body is over {MAX_BODY} bytes: send at most {MAX_IMAGES} images a request"
            ),
        )
    };
    let declared = limits::declared_length(headers);
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Err(too_large());
    }
    media.check_length(declared)?;
    let Received { bytes, held } =
        limits::receive(&app.budget, headers, body, MAX_BODY, &too_large).await?;
    let decoded = if bytes.len() <= INLINE_BODY {
        media.decode(bytes)?
    } else {
        app.bulk.run(move || media.decode(bytes)).await??
    };
    Ok((decoded, held))
}

/// The answers to `logits: (10, n)` as JSON: a list (`batch`), or the one answer; each with
/// its warning, if any; a picture's with whether it was inverted and the pixels it became.
fn written(
    logits: &[f32],
    batch: bool,
    warnings: Vec<Option<String>>,
    inverted: Option<bool>,
    seen: Option<Vec<u8>>,
) -> String {
    let mut answers = answers(logits);
    for (answer, warning) in answers.iter_mut().zip(warnings) {
        answer.warning = warning;
    }
    if let Some(first) = answers.first_mut() {
        first.inverted = inverted;
        first.pixels = seen;
    }
    let text = match (batch, answers.first()) {
        (false, Some(one)) => serde_json::to_string(one),
        _ => serde_json::to_string(&answers),
    };
    text.unwrap_or_else(|e| format!("{{\"error\": \"the answer could not be written: {e}\"}}"))
}
