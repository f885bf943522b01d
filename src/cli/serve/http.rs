//! The connections: each served by hyper's HTTP/1 with a small read buffer, until the server
//! is asked to stop; then no new one is taken, and those in flight get `GRACE` to finish.
//!
//! ## Design
//! Not `axum::serve`, which gives no say over hyper's read buffer. That buffer grows to about
//! 400 KiB on a connection that sent a large body, keeps its size, and is filled again from
//! the next request's body while that request waits for room (`limits`): with 600 clients
//! keeping their connections, 248 MB were held outside `--max-in-flight`. `MAX_READ_BUFFER`
//! bounds it per connection (a 2.6 MB body then takes 80 reads, well under a millisecond).

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use mnist_gpu::error::{Error, Result};

/// How long the requests in flight have to finish once the server is asked to stop.
pub const GRACE: Duration = Duration::from_secs(1);
/// The most bytes hyper reads ahead on a connection.
const MAX_READ_BUFFER: usize = 32 << 10;

/// Resolves once the server is asked to stop.
pub async fn stopped(stopping: Arc<AtomicBool>) {
    while !stopping.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Serves `router` on `listener`'s connections until `stopping` is raised, then waits up to
/// `GRACE` for the requests in flight; the line the stop ends with (`Error::Interrupted`).
pub async fn serve(listener: TcpListener, router: Router, stopping: Arc<AtomicBool>) -> Result<()> {
    // Every connection holds a sender: `recv` gives None once all have ended.
    let (open, mut all_closed) = mpsc::channel::<Infallible>(1);
    let (stop, stop_seen) = watch::channel(false);
    let asked = stopped(stopping);
    tokio::pin!(asked);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut asked => break,
        };
        match accepted {
            Ok((stream, _)) => connection(stream, router.clone(), stop_seen.clone(), open.clone()),
            // Out of file descriptors (or the like): the connections open now must end first.
            Err(e) if !is_connection_error(&e) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(_) => {}
        }
    }
    drop(listener);
    let asked = Instant::now();
    let _ = stop.send(true);
    drop(open);
    let finished = tokio::time::timeout(GRACE, all_closed.recv()).await.is_ok();
    let how = if finished {
        format!(
            "stopped after the requests in flight ({} ms)",
            asked.elapsed().as_millis()
        )
    } else {
        format!(
            "the requests still in flight after {} s were cut",
            GRACE.as_secs()
        )
    };
    Err(Error::Interrupted(format!(
        "serve {}: {how}",
        crate::cli::stop::cause()
    )))
}

/// Errors of one connection only (the next accept may well succeed).
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// Serves one connection on its own task: to its end, or, once `stop` says so, to the end of
/// the request in flight (hyper closes an idle one at once).
fn connection(
    stream: TcpStream,
    router: Router,
    mut stop: watch::Receiver<bool>,
    open: mpsc::Sender<Infallible>,
) {
    let _ = stream.set_nodelay(true);
    let service = TowerToHyperService::new(router);
    tokio::spawn(async move {
        let _open = open;
        let mut builder = http1::Builder::new();
        builder.max_buf_size(MAX_READ_BUFFER);
        let served = builder.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(served);
        tokio::select! {
            _ = served.as_mut() => return,
            _ = stop.wait_for(|stop| *stop) => {}
        }
        served.as_mut().graceful_shutdown();
        let _ = served.await;
    });
}
