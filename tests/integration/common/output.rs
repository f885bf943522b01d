//! Checks on a run of the built binary: its output, its exit, and one clean error line.

use std::process::Output;

use serde_json::Value;

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn describe(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        stdout(out),
        stderr(out)
    )
}

pub fn assert_no_panic(out: &Output) {
    assert!(
        !stdout(out).contains("panicked") && !stderr(out).contains("panicked"),
        "the binary panicked:\n{}",
        describe(out)
    );
}

/// The run succeeded and printed `text` on stdout.
pub fn assert_prints(out: &Output, text: &str) {
    assert_success(out);
    assert!(
        stdout(out).contains(text),
        "expected {text:?} on stdout:\n{}",
        describe(out)
    );
}

pub fn assert_success(out: &Output) {
    assert_no_panic(out);
    assert!(out.status.success(), "the run failed:\n{}", describe(out));
}

/// The last line of stdout, parsed as JSON.
pub fn json_summary(out: &Output) -> Value {
    let text = stdout(out);
    let last = text.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("last stdout line is not JSON ({e}): {last:?}"))
}

/// A failed run that says why in exactly one non-empty line on stderr (lines about
/// XDG_RUNTIME_DIR, which a Vulkan driver may print, are not ours); returns that line.
pub fn assert_one_line_error(out: &Output) -> String {
    assert_no_panic(out);
    assert!(
        !out.status.success(),
        "expected a failure:\n{}",
        describe(out)
    );
    let text = stderr(out);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains("XDG_RUNTIME_DIR"))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one line on stderr:\n{}",
        describe(out)
    );
    assert!(
        !lines[0].trim().is_empty(),
        "the error line is empty:\n{}",
        describe(out)
    );
    lines[0].to_string()
}

/// The binary with `args`, in `dir`, with XDG_RUNTIME_DIR there (so that a Vulkan driver has
/// nothing to complain about) and WGPU_ADAPTER_NAME cleared (so the caller's cannot pick one).
pub fn command(dir: &std::path::Path, args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_mnist-gpu"));
    command
        .args(args)
        .current_dir(dir)
        .env("XDG_RUNTIME_DIR", dir)
        .env_remove("WGPU_ADAPTER_NAME");
    command
}

/// Runs `command(dir, args)` to its end.
pub fn run_in(dir: &std::path::Path, args: &[&str]) -> Output {
    command(dir, args).output().expect("the binary runs")
}
