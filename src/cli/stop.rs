//! How a training run is stopped from outside: SIGINT (Ctrl-C), SIGTERM (`kill`, `timeout`,
//! `docker stop`) or a closed stdout (its reader gone: `| tee log` when Ctrl-C reaches the whole
//! pipeline, `| head`). Each only raises the flag the training loop polls, so the run ends the
//! same way: after the current step, everything saved, one line on stderr.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, OnceLock};

/// The flag the training loop polls (`Schedule::interrupt`).
static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
/// What stopped the run: a signal's number, `CLOSED_STDOUT`, or 0 while nothing has.
static CAUSE: AtomicI32 = AtomicI32::new(0);
/// Whether a signal has asked the run to stop.
static SIGNALLED: AtomicBool = AtomicBool::new(false);
/// Whether stdout's reader has gone: from then on progress is not written.
static STDOUT_GONE: AtomicBool = AtomicBool::new(false);

#[cfg(unix)]
const CLOSED_STDOUT: i32 = libc::SIGPIPE;
#[cfg(not(unix))]
const CLOSED_STDOUT: i32 = 13;

fn flag() -> &'static Arc<AtomicBool> {
    FLAG.get_or_init(|| Arc::new(AtomicBool::new(false)))
}

/// Records the first cause and raises the flag; a second signal quits at once (the files keep
/// their previous contents: they are only ever replaced whole). A closed stdout is no signal:
/// Ctrl-C after it (`| tee` that died first) still waits for the saves.
fn request(cause: i32) {
    if cause != CLOSED_STDOUT && SIGNALLED.swap(true, Ordering::SeqCst) {
        quit_now(cause);
    }
    // A signal is the cause even when stdout closed first: Ctrl-C to `| tee` ends with 130.
    let _ = CAUSE.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |was| {
        (was == 0 || (was == CLOSED_STDOUT && cause != CLOSED_STDOUT)).then_some(cause)
    });
    // Only reads after `install`'s `get_or_init`: no allocation in a signal handler.
    if let Some(flag) = FLAG.get() {
        flag.store(true, Ordering::SeqCst);
    }
}

#[cfg(unix)]
fn quit_now(signal: i32) {
    // SAFETY: `_exit` is async-signal-safe.
    unsafe { libc::_exit(128 + signal) }
}

#[cfg(not(unix))]
fn quit_now(signal: i32) {
    std::process::exit(128 + signal);
}

#[cfg(unix)]
extern "C" fn on_signal(signal: libc::c_int) {
    request(signal);
}

/// SIGINT, SIGTERM and SIGHUP (the terminal closed, an ssh session dropped) raise the flag; SIGPIPE is ignored, so that a closed stdout shows as an
/// error on the next write (`write_line`) rather than killing the run before it saves.
#[cfg(unix)]
pub fn install() -> Arc<AtomicBool> {
    let flag = flag().clone();
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a handler that only touches atomics (and `_exit`), installed with sigaction.
        let installed = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut()) == 0
        };
        if !installed {
            eprintln!("warning: signal {signal} will stop the run without saving (no handler)");
        }
    }
    // SAFETY: sets a signal's disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    flag
}

#[cfg(not(unix))]
pub fn install() -> Arc<AtomicBool> {
    let flag = flag().clone();
    if ctrlc::set_handler(|| request(2)).is_err() {
        eprintln!("warning: Ctrl-C will stop the run without saving (no handler)");
    }
    flag
}

/// The exit status of a stopped run: what a shell reports for a process the signal ended
/// (130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP, 141 for a closed stdout).
pub fn exit_status() -> u8 {
    match CAUSE.load(Ordering::SeqCst) {
        0 => 130,
        cause => (128 + cause).clamp(0, 255) as u8,
    }
}

/// How a stopped run ends: its line on stderr (none if empty), then the exit status the signal
/// would have given. A run whose stdout closed ends by SIGPIPE itself, as `cat` does.
pub fn end(line: &str) -> std::process::ExitCode {
    if !line.is_empty() {
        // stderr may be the closed pipe too (`2>&1 | tee`): nothing to do about that.
        let _ = writeln!(std::io::stderr(), "{line}");
    }
    #[cfg(unix)]
    if CAUSE.load(Ordering::SeqCst) == CLOSED_STDOUT {
        // SAFETY: restores SIGPIPE's default action and raises it: the process ends here.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            libc::raise(libc::SIGPIPE);
        }
    }
    std::process::ExitCode::from(exit_status())
}

/// Whether the run was stopped because stdout's reader went away (and by no signal).
pub fn stdout_closed() -> bool {
    CAUSE.load(Ordering::SeqCst) == CLOSED_STDOUT
}

/// What stopped the run, in words.
pub fn cause() -> &'static str {
    match CAUSE.load(Ordering::SeqCst) {
        CLOSED_STDOUT => "interrupted (stdout closed)",
        #[cfg(unix)]
        libc::SIGTERM => "interrupted (SIGTERM)",
        _ => "interrupted (SIGINT)",
    }
}

/// Writes one line to stdout. Once its reader has gone (EPIPE) nothing more is written and the
/// run is asked to stop, as for Ctrl-C; no other write error stops a run either.
pub fn write_line(text: std::fmt::Arguments) {
    if STDOUT_GONE.load(Ordering::SeqCst) {
        return;
    }
    let mut out = std::io::stdout().lock();
    let written = out.write_fmt(text).and_then(|()| out.write_all(b"\n"));
    let written = written.and_then(|()| out.flush());
    if let Err(e) = written {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            STDOUT_GONE.store(true, Ordering::SeqCst);
            request(CLOSED_STDOUT);
        }
    }
}

/// `println!` for the training command: see `write_line`.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::cli::stop::write_line(format_args!($($arg)*))
    };
}
pub(crate) use say;
