//! The checkpoints opened in the page (`POST /api/checkpoint/open`), which its Train panel then
//! resumes by id: kept while used, within a bound on their bytes (`--checkpoints-held`) and on
//! the time since each was last used (`--checkpoint-ttl`). Past either, the one least recently
//! used goes first; a request for it is told to open the file again. Ids are never reused.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `--checkpoints-held`'s default.
pub const DEFAULT_HELD: &str = "256M";
/// `--checkpoint-ttl`'s default, in seconds.
pub const DEFAULT_TTL: u64 = 3600;

struct Entry<T> {
    id: usize,
    checkpoint: Arc<T>,
    /// What it holds: the size of the file it came from.
    bytes: usize,
    used: Instant,
}

struct Inner<T> {
    /// Least recently used first.
    entries: Vec<Entry<T>>,
    next_id: usize,
}

/// Opened checkpoints (`T`: `Checkpoint`), by id.
pub struct Store<T> {
    inner: Mutex<Inner<T>>,
    /// The most bytes held, and the longest an unused checkpoint is kept.
    pub max_bytes: usize,
    pub ttl: Duration,
}

/// Why a checkpoint cannot be had.
pub enum Missing {
    /// No checkpoint of this id was opened.
    Never,
    /// It was opened, and dropped to keep within the bounds.
    Dropped,
}

impl<T> Store<T> {
    pub fn new(max_bytes: usize, ttl: Duration) -> Store<T> {
        Store {
            inner: Mutex::new(Inner {
                entries: Vec::new(),
                next_id: 0,
            }),
            max_bytes,
            ttl,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `checkpoint` (read from a file of `bytes` bytes), dropping the least recently
    /// used ones as needed to keep within the bounds; its id, or None where it alone is over
    /// `max_bytes`.
    pub fn add(&self, checkpoint: T, bytes: usize) -> Option<usize> {
        if bytes > self.max_bytes {
            return None;
        }
        let mut inner = self.lock();
        let now = Instant::now();
        self.expire(&mut inner, now);
        let mut held: usize = inner.entries.iter().map(|e| e.bytes).sum();
        while held + bytes > self.max_bytes && !inner.entries.is_empty() {
            held -= inner.entries.remove(0).bytes;
        }
        let id = inner.next_id;
        inner.next_id += 1;
        inner.entries.push(Entry {
            id,
            checkpoint: Arc::new(checkpoint),
            bytes,
            used: now,
        });
        Some(id)
    }

    /// The checkpoint `id`, now its most recently used.
    pub fn get(&self, id: usize) -> Result<Arc<T>, Missing> {
        let mut inner = self.lock();
        let now = Instant::now();
        self.expire(&mut inner, now);
        let Some(at) = inner.entries.iter().position(|e| e.id == id) else {
            return Err(if id < inner.next_id {
                Missing::Dropped
            } else {
                Missing::Never
            });
        };
        let mut entry = inner.entries.remove(at);
        entry.used = now;
        let checkpoint = entry.checkpoint.clone();
        inner.entries.push(entry);
        Ok(checkpoint)
    }

    /// Drops the checkpoints unused for longer than `ttl`.
    fn expire(&self, inner: &mut Inner<T>, now: Instant) {
        inner
            .entries
            .retain(|e| now.duration_since(e.used) <= self.ttl);
    }

    /// The bounds, as the refusals say them.
    pub fn bounds(&self) -> String {
        format!(
            "opened checkpoints are kept for {} s after their last use, {} bytes in all: \
             serve --checkpoint-ttl, --checkpoints-held",
            self.ttl.as_secs(),
            self.max_bytes
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint() -> u32 {
        7
    }

    #[test]
    fn the_least_recently_used_goes_first_and_ids_are_not_reused() {
        let store = Store::new(100, Duration::from_secs(60));
        let a = store.add(checkpoint(), 40).unwrap();
        let b = store.add(checkpoint(), 40).unwrap();
        assert!(store.get(a).is_ok()); // b is now the least recently used
        let c = store.add(checkpoint(), 40).unwrap();
        assert_eq!((a, b, c), (0, 1, 2));
        assert!(matches!(store.get(b), Err(Missing::Dropped)));
        assert!(store.get(a).is_ok() && store.get(c).is_ok());
        assert!(matches!(store.get(3), Err(Missing::Never)));
        assert_eq!(store.add(checkpoint(), 101), None);
    }

    #[test]
    fn an_unused_checkpoint_expires() {
        let store = Store::new(100, Duration::from_millis(50));
        let a = store.add(checkpoint(), 10).unwrap();
        std::thread::sleep(Duration::from_millis(120));
        assert!(matches!(store.get(a), Err(Missing::Dropped)));
    }
}
