//! What the requests may hold at once: the bytes of their bodies (`--max-in-flight`), and how
//! long one waits for room (`--in-flight-wait-ms`) before it is told to come back (503 with
//! `Retry-After`); and reading a body within them.
//!
//! ## Design
//! A body's room is reserved before a byte of it is read: its declared length (or, sent in
//! chunks, the most its endpoint takes), at once. A request that cannot have all of it waits,
//! without reading, in arrival order (the pools are fair, so a large body is not overtaken for
//! ever by smaller ones); the rest of its body stays in the kernel's socket buffers, not in
//! this process. Reserving the whole body up front means no two half-read bodies can each wait
//! for the other's bytes. The room is given back when the answer is made (`Held` is dropped),
//! so it also covers what the body is parsed into. Small bodies (single images) have a share of
//! the room of their own: in one fair queue, a single image would wait behind every large body
//! that came before it (seconds, under a burst of them).

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::http::{header, HeaderMap, StatusCode};
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{bad, Refusal};

/// How long a body may take to arrive, once its room is reserved: a client that stops sending
/// half-way would otherwise hold its room for as long as it keeps the connection.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// What `Retry-After` says to a request turned away for lack of room, in seconds.
pub const RETRY_AFTER: u32 = 1;
/// `--max-in-flight`'s default.
pub const DEFAULT_IN_FLIGHT: &str = "64M";

/// A size on the command line: bytes, or with K, M or G (binary multiples: 64M is 64 MiB).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().last() {
        Some((at, c)) if c.is_ascii_alphabetic() => (&text[..at], c.to_ascii_uppercase()),
        _ => (text, 'B'),
    };
    let shift = match unit {
        'B' => 0,
        'K' => 10,
        'M' => 20,
        'G' => 30,
        _ => {
            return Err(format!(
                "{text:?}: expected a size such as 65536, 64K or 64M"
            ))
        }
    };
    let n: usize = digits
        .trim()
        .parse()
        .map_err(|_| format!("{text:?}: expected a size such as 65536, 64K or 64M"))?;
    n.checked_mul(1 << shift)
        .filter(|bytes| (1..=Semaphore::MAX_PERMITS).contains(bytes))
        .ok_or_else(|| format!("{text:?}: out of range"))
}

/// The room for request bodies, shared by every request: an eighth of it for small bodies
/// (`SMALL_BODY` bytes at most: a few images), the rest for the others, so that a single
/// image never waits behind large bodies for room.
pub struct Budget {
    small: Arc<Semaphore>,
    large: Arc<Semaphore>,
    /// The room in all (`--max-in-flight`), and the small bodies' share of it, in bytes.
    pub total: usize,
    small_total: usize,
    /// How long a request waits for room.
    wait: Duration,
}

/// Bodies of at most this many bytes are small (see `Budget`).
pub const SMALL_BODY: usize = 64 << 10;

/// A share of the room, given back when dropped.
pub struct Held {
    _permit: Option<OwnedSemaphorePermit>,
    pub bytes: usize,
}

/// A body read whole, and the room it holds.
pub struct Received {
    pub bytes: Vec<u8>,
    pub held: Held,
}

impl Budget {
    pub fn new(total: usize, wait: Duration) -> Budget {
        let small_total = total / 8;
        Budget {
            small: Arc::new(Semaphore::new(small_total)),
            large: Arc::new(Semaphore::new(total - small_total)),
            total,
            small_total,
            wait,
        }
    }

    /// Whether no request holds any room now.
    pub fn idle(&self) -> bool {
        self.small.available_permits() + self.large.available_permits() == self.total
    }

    /// The most bytes one body may have: the large bodies' share.
    pub fn largest(&self) -> usize {
        self.total - self.small_total
    }

    /// `bytes` of room (at most `largest()`), waiting up to `wait` for them; else a 503 that
    /// says when to try again.
    async fn reserve(&self, bytes: usize) -> Result<Held, Refusal> {
        if bytes == 0 {
            return Ok(Held {
                _permit: None,
                bytes,
            });
        }
        let pool = if bytes <= SMALL_BODY.min(self.small_total) {
            &self.small
        } else {
            &self.large
        };
        // `bytes` ≤ total ≤ MAX_PERMITS (parse_size), and a body is far under 4 GiB (u32).
        let permits = u32::try_from(bytes).unwrap_or(u32::MAX);
        let acquire = pool.clone().acquire_many_owned(permits);
        match tokio::time::timeout(self.wait, acquire).await {
            Ok(Ok(permit)) => Ok(Held {
                _permit: Some(permit),
                bytes,
            }),
            _ => Err(Refusal::busy(format!(
                "busy: the bodies being worked on fill the room for them ({} bytes, \
                 serve --max-in-flight), and none was freed within {} ms: try again in \
                 {RETRY_AFTER} s",
                self.total,
                self.wait.as_millis()
            ))),
        }
    }
}

/// The length a request says its body has.
pub fn declared_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
}

/// The body, read whole once room for it is reserved: refused unread where it says it is over
/// `max` bytes (`too_large`) or over the room in all, and refused where it turns out to be.
pub async fn receive(
    budget: &Budget,
    headers: &HeaderMap,
    mut body: Body,
    max: usize,
    too_large: &(dyn Fn() -> Refusal + Sync),
) -> Result<Received, Refusal> {
    let declared = declared_length(headers);
    if declared.is_some_and(|n| n > max) {
        return Err(too_large());
    }
    let over_room = |n: usize| {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the body is {n} bytes, more than this server holds of one request's body ({} \
                 bytes, seven eighths of serve --max-in-flight)",
                budget.largest()
            ),
        )
    };
    if let Some(n) = declared.filter(|&n| n > budget.largest()) {
        return Err(over_room(n));
    }
    let room = declared.unwrap_or(max.min(budget.largest()));
    let held = budget.reserve(room).await?;
    let mut bytes = Vec::with_capacity(declared.unwrap_or(0));
    let read = async {
        while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            let frame = frame.map_err(|e| bad(format!("the body could not be read: {e}")))?;
            if let Ok(data) = frame.into_data() {
                if bytes.len() + data.len() > room {
                    return Err(if room == max {
                        too_large()
                    } else {
                        over_room(bytes.len() + data.len())
                    });
                }
                bytes.extend_from_slice(&data);
            }
        }
        Ok(())
    };
    match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Ok(Ok(())) => Ok(Received { bytes, held }),
        Ok(Err(refusal)) => Err(refusal),
        Err(_) => Err(Refusal::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the body did not arrive within {} s ({} of {} bytes came)",
                BODY_TIMEOUT.as_secs(),
                bytes.len(),
                declared.map_or("?".to_string(), |n| n.to_string())
            ),
        )),
    }
}

/// The largest JSON body of the Train panel's requests.
pub const MAX_JSON: usize = super::MAX_BODY;

/// A JSON body (the Train panel's requests), within the room for bodies, and the room it holds.
pub async fn read_json(
    budget: &Budget,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Value, Held), Refusal> {
    let too_large = || {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over {MAX_JSON} bytes"),
        )
    };
    let Received { bytes, held } = receive(budget, headers, body, MAX_JSON, &too_large).await?;
    let value =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("the body is not JSON: {e}")))?;
    Ok((value, held))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_read_with_binary_multiples() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("8K"), Ok(8 << 10));
        assert_eq!(parse_size("64m"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        for bad in ["", "M", "0", "-1", "1.5M", "64Q", "99999999999999999999G"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
