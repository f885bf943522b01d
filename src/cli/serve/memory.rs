//! The server's memory given back after a burst, and the bulk threads' priority. Both are
//! glibc's and Linux's business; elsewhere these do nothing.
//!
//! ## Design
//! glibc's `malloc` keeps what is freed for reuse. Two of its habits kept a burst's memory
//! for the server's life (bench/NOTES.md, "serve under load"):
//! - a freed block of at least the mmap threshold (128 KiB at first) is returned to the
//!   system, but freeing one also raises the threshold to its size (up to 32 MiB): after the
//!   first large body was freed, every later one came from the heaps and stayed there.
//!   `fix_mmap_threshold` sets it once, which turns that off: a body, its pixels and its
//!   answer each get their own mapping, unmapped when freed.
//! - each thread's small blocks come from one of up to 8 heaps per core, and a heap is only
//!   shrunk from its top. `trim_when_idle` calls `malloc_trim(0)` (which returns every free
//!   page of every heap) once the bodies of a burst are all done, at most once a second.
//!
//! Another allocator (mimalloc, jemalloc) would need a C build; these two calls need none.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Blocks of this many bytes or more are mapped on their own (glibc's own first threshold).
const MMAP_THRESHOLD: usize = 128 << 10;
/// A request that held this much of `--max-in-flight` marks the heaps for trimming.
pub const LARGE: usize = 1 << 20;

/// Fixes glibc's mmap threshold (see the module's comment).
pub fn fix_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets one of malloc's parameters; it is called before the server's
    // threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
    }
}

/// Lowers the calling thread's priority (nice 10), so that it runs when the others wait.
pub fn lower_priority() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: setpriority on the calling thread (Linux's nice value is per thread); raising
    // the nice value needs no privilege.
    unsafe {
        let thread = libc::gettid() as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, thread, 10);
    }
}

/// Set after a large request; cleared by the trim it leads to.
#[derive(Default)]
pub struct Trim {
    due: AtomicBool,
}

impl Trim {
    /// A large request has ended: its memory is free.
    pub fn after_large_request(&self) {
        self.due.store(true, Ordering::Relaxed);
    }

    /// Once a second: when a trim is due and `idle()` says no body is held, gives the free
    /// pages of every heap back (on a blocking thread: it takes the heaps' locks).
    pub async fn trim_when_idle(self: Arc<Self>, idle: impl Fn() -> bool) {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if idle() && self.due.swap(false, Ordering::Relaxed) {
                let _ = tokio::task::spawn_blocking(trim).await;
            }
        }
    }
}

fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}
