//! A stop never loses finished work, and a run never destroys another run's file. Through the
//! binary: SIGINT to a pipeline's process group (the trainer piped into `tee`), SIGTERM, a
//! closed stdout, a re-run over another run's checkpoint, an unwritable folder, `--save` and
//! `--checkpoint` naming one file, two processes writing one file.

#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mnist_gpu::{checkpoint, model_file};

use crate::common::output::{assert_one_line_error, command, describe, run_in};

/// A run long enough to be stopped, on the embedded digits, on the CPU; every output asked for.
const LONG: [&str; 16] = [
    "--backend",
    "cpu",
    "--iterations",
    "1000000",
    "--log-every",
    "1",
    "--checkpoint-every",
    "5",
    "--save",
    "m.safetensors",
    "--checkpoint",
    "c.safetensors",
    "--metrics",
    "m.csv",
    "--plot",
    "m.png",
];

/// A short run, to the end.
const SHORT: [&str; 6] = ["--backend", "cpu", "--iterations", "2", "--dev-size", "100"];

/// Waits until `path` exists.
fn wait_for(path: &Path, child: &mut Child) {
    let started = Instant::now();
    while !path.exists() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "the run ended ({status}) before {} appeared",
                path.display()
            );
        }
        assert!(started.elapsed().as_secs() < 120, "no {}", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Reads `lines` up to the first progress line: the run is training.
fn wait_for_training(lines: &mut impl BufRead) {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(lines.read_line(&mut line).unwrap() > 0, "no progress line");
        if line.starts_with("step") {
            return;
        }
    }
}

/// Everything a stopped run was asked to keep is there, whole; and nothing half-written.
fn assert_all_saved(d: &Path) {
    let model = model_file::load(&d.join("m.safetensors")).expect("the model is saved");
    let steps: usize = model.metadata["steps"].parse().unwrap();
    assert!(steps >= 1 && steps < 1_000_000, "steps {steps}");
    let ckpt = checkpoint::load(&d.join("c.safetensors")).expect("the checkpoint is saved");
    assert_eq!(ckpt.state.step, steps, "the checkpoint is of the last step");
    let csv = std::fs::read_to_string(d.join("m.csv")).expect("the metrics are written");
    assert!(csv.lines().count() >= 2, "{csv}");
    let png = std::fs::read(d.join("m.png")).expect("the plot is drawn");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let left: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".partial") || n.ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// The stop's one line on stderr: what stopped it, what was saved, how to resume.
fn assert_stop_line(stderr: &str, cause: &str) {
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.contains("XDG_RUNTIME_DIR"))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    let line = lines[0];
    for part in [
        cause,
        "is saved in m.safetensors",
        "m.csv",
        "m.png",
        "--resume c.safetensors continues after step",
    ] {
        assert!(line.contains(part), "no {part:?} in {line:?}");
    }
}

/// Ctrl-C in a terminal reaches the whole pipeline `mnist-gpu … | tee log`: `tee` dies first,
/// and the trainer's last lines go to a closed pipe. Its work is saved all the same, it says so
/// on stderr, and it exits with 130.
#[test]
fn ctrl_c_to_a_pipeline_into_tee_saves_everything() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut trainer = command(d, &LONG)
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let group = trainer.id() as i32;
    let mut tee = Command::new("tee")
        .arg("log")
        .current_dir(d)
        .process_group(group)
        .stdin(trainer.stdout.take().unwrap())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&d.join("c.safetensors"), &mut trainer);
    // SAFETY: a signal to the process group this test made.
    assert_eq!(unsafe { libc::kill(-group, libc::SIGINT) }, 0);
    let tee_status = tee.wait().unwrap();
    assert_eq!(
        tee_status.signal(),
        Some(libc::SIGINT),
        "tee was not stopped"
    );
    let out = trainer.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{}", describe(&out));
    assert_stop_line(&stderr, "interrupted");
    assert_all_saved(d);
}

/// The reader of stdout goes away (`| head`, a closed terminal): the run stops as for Ctrl-C,
/// saves everything, says so on stderr, and ends by SIGPIPE as `cat` would.
#[test]
fn a_closed_stdout_stops_the_run_with_everything_saved() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut trainer = command(d, &LONG)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(trainer.stdout.take().unwrap());
    wait_for_training(&mut lines);
    drop(lines);
    let out = trainer.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "{}",
        describe(&out)
    );
    assert_stop_line(&stderr, "interrupted (stdout closed)");
    assert_all_saved(d);
}

/// SIGTERM (`kill`, `timeout`, `docker stop`) ends the run as Ctrl-C does, with 143.
#[test]
fn sigterm_saves_everything_and_exits_143() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut trainer = command(d, &LONG)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&d.join("c.safetensors"), &mut trainer);
    // SAFETY: a signal to the child this test started.
    assert_eq!(unsafe { libc::kill(trainer.id() as i32, libc::SIGTERM) }, 0);
    let out = trainer.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{}", describe(&out));
    assert_stop_line(&stderr, "interrupted (SIGTERM)");
    assert_all_saved(d);
}

/// The same command run again after a stop (without --resume) would start the run afresh over
/// the checkpoint: refused, the checkpoint untouched; so is a saved model at --checkpoint.
/// With --resume of it, it goes on.
#[test]
fn a_run_does_not_overwrite_another_runs_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let first = [&SHORT[..], &["--checkpoint", "c.safetensors"]].concat();
    assert!(run_in(d, &first).status.success());
    let before = std::fs::read(d.join("c.safetensors")).unwrap();
    let out = run_in(d, &first);
    let line = assert_one_line_error(&out);
    for part in [
        "--checkpoint c.safetensors",
        "checkpoint of another run",
        "--resume c.safetensors",
    ] {
        assert!(line.contains(part), "no {part:?} in {line:?}");
    }
    assert!(!String::from_utf8_lossy(&out.stdout).contains("training"));
    assert_eq!(std::fs::read(d.join("c.safetensors")).unwrap(), before);

    assert!(
        run_in(d, &[&SHORT[..], &["--save", "m.safetensors"]].concat())
            .status
            .success()
    );
    let model = std::fs::read(d.join("m.safetensors")).unwrap();
    let out = run_in(
        d,
        &[&SHORT[..], &["--checkpoint", "m.safetensors"]].concat(),
    );
    let line = assert_one_line_error(&out);
    assert!(line.contains("--checkpoint m.safetensors"), "{line}");
    assert!(line.contains("a saved model"), "{line}");
    assert_eq!(std::fs::read(d.join("m.safetensors")).unwrap(), model);

    // Nor does --save turn a run's checkpoint into bare weights.
    let out = run_in(d, &[&SHORT[..], &["--save", "c.safetensors"]].concat());
    let line = assert_one_line_error(&out);
    for part in [
        "--save c.safetensors",
        "checkpoint of a run",
        "--resume c.safetensors",
    ] {
        assert!(line.contains(part), "no {part:?} in {line:?}");
    }
    assert_eq!(std::fs::read(d.join("c.safetensors")).unwrap(), before);

    let out = run_in(
        d,
        &[
            "--resume",
            "c.safetensors",
            "--iterations",
            "3",
            "--backend",
            "cpu",
        ],
    );
    assert!(out.status.success(), "{}", describe(&out));
}

/// An output file that cannot be written is found before training, and the error names the
/// option and the path (not a hidden temporary file). Root may write anywhere the permission
/// bits forbid, but not in /proc.
#[test]
fn an_unwritable_output_folder_is_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (option, path) in [
        ("--save", "/proc/m.safetensors"),
        ("--checkpoint", "/proc/c.safetensors"),
        ("--metrics", "/proc/m.csv"),
        ("--plot", "/proc/m.png"),
    ] {
        let out = run_in(d, &[&SHORT[..], &[option, path]].concat());
        let line = assert_one_line_error(&out);
        assert!(
            line.contains(&format!("{option} {path}: cannot write a file in /proc")),
            "{line}"
        );
        assert!(!line.contains(".partial"), "{line}");
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("training"),
            "it trained first: {}",
            describe(&out)
        );
    }
}

/// `--save` and `--checkpoint` naming one file (or `--save` naming the resumed checkpoint, which
/// the run writes on to): the model would replace the checkpoint. Refused.
#[test]
fn save_and_checkpoint_cannot_be_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = run_in(
        d,
        &[
            &SHORT[..],
            &["--save", "x.safetensors", "--checkpoint", "./x.safetensors"],
        ]
        .concat(),
    );
    let line = assert_one_line_error(&out);
    assert!(line.contains("--save x.safetensors"), "{line}");
    assert!(line.contains("--checkpoint"), "{line}");
    assert!(!d.join("x.safetensors").exists());

    assert!(run_in(
        d,
        &[&SHORT[..], &["--checkpoint", "c.safetensors"]].concat()
    )
    .status
    .success());
    let before = std::fs::read(d.join("c.safetensors")).unwrap();
    let out = run_in(
        d,
        &[
            "--resume",
            "c.safetensors",
            "--iterations",
            "3",
            "--save",
            "c.safetensors",
        ],
    );
    let line = assert_one_line_error(&out);
    assert!(line.contains("--save c.safetensors"), "{line}");
    assert_eq!(std::fs::read(d.join("c.safetensors")).unwrap(), before);
}

/// A second process writing a file a running one writes is refused, naming the option; once
/// the first has ended, the path is free again.
#[test]
fn a_second_run_writing_the_same_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut first = command(d, &LONG)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(first.stdout.take().unwrap());
    wait_for_training(&mut lines);
    let out = run_in(d, &[&SHORT[..], &["--metrics", "m.csv"]].concat());
    let line = assert_one_line_error(&out);
    assert!(line.contains("--metrics m.csv"), "{line}");
    assert!(
        line.contains("another mnist-gpu run is writing it"),
        "{line}"
    );
    assert!(!d.join("m.csv").exists(), "the second run wrote m.csv");
    // SAFETY: a signal to the child this test started.
    assert_eq!(unsafe { libc::kill(first.id() as i32, libc::SIGINT) }, 0);
    // Its stdout still read, so that the stop is SIGINT's alone.
    let rest: Vec<String> = lines.lines().map(|l| l.unwrap()).collect();
    assert_eq!(first.wait().unwrap().code(), Some(130), "{rest:?}");
    assert_all_saved(d);
    let out = run_in(d, &[&SHORT[..], &["--metrics", "m.csv"]].concat());
    assert!(out.status.success(), "{}", describe(&out));
}
