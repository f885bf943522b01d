//! Where `/api/predict`'s images are classified: one worker thread per backend (on the CPU one
//! per core, each with its own scratch; on a GPU one, the device's), fed from two queues; and
//! the bulk pool, where large bodies are parsed and large answers written.
//!
//! ## Design
//! As inference servers batch: a worker takes every small request waiting (up to `most`
//! images) and runs them as one forward pass, so that at 16 clients a pass reads the weights
//! once for many images, and on a GPU one submission serves them all. A large request is cut
//! into chunks of `chunk` images, queued apart from the small ones; a worker takes a small
//! request before any chunk, so a single image waits for at most one chunk, never for a whole
//! large request ahead of it; and the chunks of one request run on every core at once. The
//! queues hold only requests whose bodies are within `--max-in-flight`, so they are bounded
//! by it. A forward pass of the CPU's fused path computes each image's logits alone (a chain
//! of multiply-adds per image and unit, in a fixed order), so an image gets the same bits
//! whichever batch it is in.
//!
//! Parsing a body of 1,000 images as JSON, and writing their answers, take milliseconds of a
//! core: done on the tokio threads they would hold up every other connection. They run on the
//! bulk pool instead, one thread per core at a lower priority (nice 10 on Linux), so that the
//! small requests' work comes first and the large ones take the rest of the machine.

use std::collections::VecDeque;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use axum::http::StatusCode;
use tokio::sync::oneshot;

use super::{memory, Refusal};
use mnist_gpu::backend::Backend;
use mnist_gpu::data::{CLASSES, PIXELS};

/// Requests of at most this many images are small: batched, and taken before any chunk.
const SMALL: usize = 16;

/// What one job's worker sends back: its images' logits, or why not.
type Reply = std::result::Result<Vec<f32>, String>;

/// Images `range` of a request's `images` (784 bytes each), and where their logits go.
struct Job {
    images: Arc<Vec<u8>>,
    range: Range<usize>,
    reply: oneshot::Sender<Reply>,
}

impl Job {
    fn pixels(&self) -> &[u8] {
        &self.images[PIXELS * self.range.start..PIXELS * self.range.end]
    }
}

#[derive(Default)]
struct Queues {
    small: VecDeque<Job>,
    chunks: VecDeque<Job>,
}

#[derive(Default)]
struct Shared {
    queues: Mutex<Queues>,
    ready: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queues> {
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next pass's jobs: the small requests waiting, up to `most` images (at least one
    /// request), or else one chunk. Jobs whose requester has gone are dropped unrun.
    fn next(&self, most: usize) -> Vec<Job> {
        let mut queues = self.lock();
        loop {
            queues.small.retain(|job| !job.reply.is_closed());
            queues.chunks.retain(|job| !job.reply.is_closed());
            let mut jobs = Vec::new();
            let mut images = 0;
            while let Some(job) = queues.small.front() {
                if !jobs.is_empty() && images + job.range.len() > most {
                    break;
                }
                images += job.range.len();
                jobs.extend(queues.small.pop_front());
            }
            if jobs.is_empty() {
                jobs.extend(queues.chunks.pop_front());
            }
            if !jobs.is_empty() {
                return jobs;
            }
            queues = self.ready.wait(queues).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// The workers and their queues.
pub struct Engine {
    shared: Arc<Shared>,
    /// Images per chunk of a large request.
    chunk: usize,
}

impl Engine {
    /// A worker thread per backend, each taking up to `most` images of small requests a pass;
    /// large requests cut into chunks of `chunk` images.
    pub fn start(backends: Vec<Box<dyn Backend>>, chunk: usize, most: usize) -> Engine {
        let shared = Arc::new(Shared::default());
        for (i, backend) in backends.into_iter().enumerate() {
            let shared = shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("serve-model-{i}"))
                .spawn(move || work(&shared, backend, most));
            if let Err(e) = spawned {
                eprintln!("warning: a model worker did not start: {e}");
            }
        }
        Engine {
            shared,
            chunk: chunk.max(1),
        }
    }

    /// The logits `Z: (10, n)` of `images` (n × 784 bytes), column by column.
    pub async fn classify(&self, images: Arc<Vec<u8>>) -> Result<Vec<f32>, Refusal> {
        let n = images.len() / PIXELS;
        let mut replies = Vec::with_capacity(n.div_ceil(self.chunk));
        {
            let mut queues = self.shared.lock();
            for start in (0..n).step_by(self.chunk) {
                let (reply, answer) = oneshot::channel();
                let range = start..(start + self.chunk).min(n);
                let job = Job {
                    images: images.clone(),
                    range,
                    reply,
                };
                if n <= SMALL {
                    queues.small.push_back(job);
                } else {
                    queues.chunks.push_back(job);
                }
                replies.push(answer);
            }
        }
        if replies.len() == 1 {
            self.shared.ready.notify_one();
        } else {
            self.shared.ready.notify_all();
        }
        let mut logits = Vec::with_capacity(CLASSES * n);
        for answer in replies {
            let part = answer
                .await
                .map_err(|_| model_failed("its worker stopped"))?
                .map_err(model_failed)?;
            logits.extend(part);
        }
        Ok(logits)
    }
}

/// The backend's error (or its thread's panic) as a 500.
pub fn model_failed(e: impl std::fmt::Display) -> Refusal {
    Refusal::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("the model failed: {e}"),
    )
}

/// A worker: forever, the next jobs as one forward pass, each job's logits to its requester.
fn work(shared: &Shared, mut backend: Box<dyn Backend>, most: usize) {
    let mut gathered = Vec::new();
    loop {
        let jobs = shared.next(most);
        let pixels = if let [job] = &jobs[..] {
            job.pixels()
        } else {
            gathered.clear();
            for job in &jobs {
                gathered.extend_from_slice(job.pixels());
            }
            &gathered[..]
        };
        let logits = catch_unwind(AssertUnwindSafe(|| backend.classify(pixels)));
        match logits {
            Ok(Ok(logits)) => {
                let mut columns = logits.chunks_exact(CLASSES);
                for job in jobs {
                    let part = columns.by_ref().take(job.range.len()).flatten();
                    let _ = job.reply.send(Ok(part.copied().collect()));
                }
            }
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "it panicked".to_string(),
                };
                for job in jobs {
                    let _ = job.reply.send(Err(why.clone()));
                }
            }
        }
    }
}

/// The bulk pool: threads at a lower priority for the work of large requests.
pub struct Bulk {
    pool: rayon::ThreadPool,
}

impl Bulk {
    /// One thread per core.
    pub fn new() -> Result<Bulk, String> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(cores())
            .thread_name(|i| format!("serve-bulk-{i}"))
            .start_handler(|_| memory::lower_priority())
            .build()
            .map_err(|e| format!("cannot start the bulk pool: {e}"))?;
        Ok(Bulk { pool })
    }

    /// `work`'s result, computed on the pool (a panic becomes a 500).
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Refusal> {
        let (reply, answer) = oneshot::channel();
        self.pool.spawn(move || {
            let _ = reply.send(catch_unwind(AssertUnwindSafe(work)));
        });
        match answer.await {
            Ok(Ok(value)) => Ok(value),
            _ => Err(Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the request's work failed (a bug: please report it)",
            )),
        }
    }
}

/// The cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
