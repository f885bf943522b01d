//! The `mnist-gpu` binary end to end, on small random CSV files in a temporary directory:
//! a tiny run's report (text and `--json`), `--show`'s digits, and one clean line on stderr
//! (never a panic) for every kind of bad input.

use crate::common;

use crate::common::output::{
    assert_no_panic, assert_one_line_error, assert_success, describe, json_summary, stderr, stdout,
};
use crate::common::random_dataset;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use tempfile::TempDir;

use mnist_gpu::art;
use mnist_gpu::data::pool::List;
use mnist_gpu::data::pool::Split;
use mnist_gpu::data::{self, Dataset, CLASSES, PIXELS};

// ---------------------------------------------------------------------------------------------
// Fixtures and helpers
// ---------------------------------------------------------------------------------------------

const TRAIN_ROWS: usize = 300;
const TEST_ROWS: usize = 100;

/// A temporary directory holding `t.csv` (300 labeled images) and `s.csv` (100 labeled).
struct Fixture {
    dir: TempDir,
    train: Dataset,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let train = random_dataset(TRAIN_ROWS, 1);
        data::write_csv(&train, &dir.path().join("t.csv"), true).unwrap();
        data::write_csv(
            &random_dataset(TEST_ROWS, 2),
            &dir.path().join("s.csv"),
            true,
        )
        .unwrap();
        Fixture { dir, train }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name)
            .to_str()
            .expect("a UTF-8 temporary path")
            .to_string()
    }

    /// Runs the binary in the fixture's directory. XDG_RUNTIME_DIR points at it so that a
    /// Vulkan driver has nothing to complain about; WGPU_ADAPTER_NAME is cleared so the
    /// caller's environment cannot pick an adapter.
    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_mnist-gpu"))
            .args(args)
            .current_dir(self.dir.path())
            .env("XDG_RUNTIME_DIR", self.dir.path())
            .env_remove("WGPU_ADAPTER_NAME")
            .output()
            .expect("the binary runs")
    }

    /// `--train t.csv --test s.csv --dev-size 50 --backend cpu`, then `extra`.
    fn run_small(&self, extra: &[&str]) -> Output {
        let (train, test) = (self.arg("t.csv"), self.arg("s.csv"));
        let mut args = vec![
            "--train",
            &train,
            "--test",
            &test,
            "--dev-size",
            "50",
            "--backend",
            "cpu",
        ];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// `--train t.csv --test s.csv --dev-size 50 --iterations 1 --backend gpu`, then `extra`.
    fn run_gpu(&self, extra: &[&str]) -> Output {
        let (train, test) = (self.arg("t.csv"), self.arg("s.csv"));
        let mut args = vec![
            "--train",
            &train,
            "--test",
            &test,
            "--dev-size",
            "50",
            "--iterations",
            "1",
            "--backend",
            "gpu",
        ];
        args.extend_from_slice(extra);
        self.run(&args)
    }
}

fn number(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

// ---------------------------------------------------------------------------------------------
// Successful runs
// ---------------------------------------------------------------------------------------------

#[test]
fn tiny_full_batch_run_reports_json() {
    let f = Fixture::new();
    let out = f.run_small(&["--iterations", "20", "--json"]);
    assert_success(&out);
    let text = stdout(&out);
    assert!(text.contains("250 train, 50 dev, 100 test"), "{text}");
    assert!(text.contains("done: dev accuracy"), "{text}");

    let v = json_summary(&out);
    for key in [
        "backend",
        "adapter",
        "hidden",
        "activation",
        "train_samples",
        "dev_samples",
        "test_samples",
        "iterations",
        "epochs",
        "batch_size",
        "seconds",
        "train_samples_per_second",
        "final_loss",
        "dev_accuracy",
        "test_accuracy",
    ] {
        assert!(v.get(key).is_some(), "key {key} missing from {v}");
    }
    assert_eq!(v["backend"], "cpu");
    assert_eq!(v["adapter"], "cpu");
    assert_eq!(v["hidden"], serde_json::json!([10]));
    assert_eq!(v["activation"], "relu");
    assert_eq!(v["train_samples"], 250);
    assert_eq!(v["dev_samples"], 50);
    assert_eq!(v["test_samples"], 100);
    assert_eq!(v["iterations"], 20);
    assert!(v["epochs"].is_null(), "full batch has no epochs: {v}");
    assert_eq!(v["batch_size"], 250, "full batch is the whole train set");
    assert!(number(&v, "seconds") >= 0.0);
    assert!(number(&v, "train_samples_per_second") > 0.0);
    // Random labels on random images: the loss stays near ln 10, but it is a finite positive.
    let loss = number(&v, "final_loss");
    assert!(loss.is_finite() && loss > 0.0, "final_loss {loss}");
    for key in ["dev_accuracy", "test_accuracy"] {
        let a = number(&v, key);
        assert!((0.0..=1.0).contains(&a), "{key} {a}");
    }
    // Accuracies are counts over 50 and 100 samples.
    let dev = number(&v, "dev_accuracy") * 50.0;
    assert!(
        (dev - dev.round()).abs() < 1e-9,
        "dev accuracy is not k/50: {v}"
    );
}

#[test]
fn no_test_set_reports_null_test_accuracy() {
    let f = Fixture::new();
    let train = f.arg("t.csv");
    let out = f.run(&[
        "--train",
        &train,
        "--test",
        "none",
        "--dev-size",
        "50",
        "--iterations",
        "5",
        "--json",
        "--backend",
        "cpu",
    ]);
    assert_success(&out);
    let v = json_summary(&out);
    assert!(v["test_accuracy"].is_null(), "{v}");
    assert_eq!(v["test_samples"], 0);
    assert!(v["dev_accuracy"].is_number(), "{v}");
}

#[test]
fn mini_batch_run_reports_epochs() {
    let f = Fixture::new();
    let out = f.run_small(&[
        "--batch-size",
        "64",
        "--epochs",
        "2",
        "--json",
        "--hidden",
        "8,6",
        "--activation",
        "elu",
    ]);
    assert_success(&out);
    let v = json_summary(&out);
    assert_eq!(v["epochs"], 2);
    assert!(
        v["iterations"].is_null(),
        "mini-batch has no iterations: {v}"
    );
    assert_eq!(v["batch_size"], 64);
    assert_eq!(v["hidden"], serde_json::json!([8, 6]));
    assert_eq!(v["activation"], "elu");
    // 250 samples in batches of 64: 4 steps an epoch.
    assert_eq!(v["steps"], 8);
    // One progress line per epoch by default.
    let text = stdout(&out);
    assert_eq!(
        text.lines().filter(|l| l.starts_with("epoch")).count(),
        2,
        "{text}"
    );
}

#[test]
fn show_draws_dev_images_with_labels() {
    let f = Fixture::new();
    let out = f.run_small(&["--iterations", "3", "--show", "3", "--seed", "7"]);
    assert_success(&out);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();

    // The dev images are the first 50 of the training file shuffled with the seed.
    let split = Split::new(&f.train, None, 50, 7).unwrap();
    let dev_labels = split.labels(List::Dev);

    let headers: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with("dev image"))
        .collect();
    assert_eq!(headers.len(), 3, "{text}");
    for (k, &h) in headers.iter().enumerate() {
        let header = lines[h];
        assert!(
            header.contains("predicted") && header.contains("label"),
            "{header}"
        );
        assert!(header.starts_with(&format!("dev image {k}:")), "{header}");
        let label: u8 = header
            .rsplit("label ")
            .next()
            .unwrap()
            .trim()
            .parse()
            .expect("a label");
        assert_eq!(label, dev_labels[k], "{header}");
        // "dev image 0: predicted 3 (41.2% confident), label 7"
        let predicted: u8 = header
            .split("predicted ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|s| s.trim().parse().ok())
            .expect("a predicted digit");
        assert!((predicted as usize) < CLASSES);
        let confidence: f64 = header
            .split('(')
            .nth(1)
            .and_then(|s| s.split('%').next())
            .and_then(|s| s.parse().ok())
            .expect("a confidence");
        // The most likely of ten classes has at least a tenth of the probability.
        assert!((10.0..=100.0).contains(&confidence), "{header}");

        // 14 lines of 28 characters: exactly what art::draw makes of that dev image.
        assert!(lines.len() >= h + 15, "image {k} is cut short:\n{text}");
        let drawing = &lines[h + 1..h + 15];
        assert!(
            drawing.iter().all(|l| l.chars().count() == 28),
            "{drawing:#?}"
        );
        let image = split.dev[k] as usize;
        let want = art::draw(&f.train.images[image * PIXELS..(image + 1) * PIXELS]);
        assert_eq!(
            drawing.join("\n") + "\n",
            want,
            "image {k} is not drawn as art::draw draws it"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Bad input: one line on stderr, a non-zero exit, no panic
// ---------------------------------------------------------------------------------------------

#[test]
fn missing_train_file() {
    let f = Fixture::new();
    let missing = f.arg("no-such-file.csv");
    let line = assert_one_line_error(&f.run(&["--train", &missing, "--backend", "cpu"]));
    assert!(
        line.contains("no-such-file.csv"),
        "the message does not name the file: {line}"
    );
}

#[test]
fn directory_as_train_file() {
    let f = Fixture::new();
    // Named like a CSV, so that it gets as far as being opened and read.
    std::fs::create_dir(f.path("dir.csv")).unwrap();
    let dir = f.arg("dir.csv");
    let line = assert_one_line_error(&f.run(&["--train", &dir, "--backend", "cpu"]));
    assert!(line.contains("dir.csv"), "{line}");
    // And a plain directory name.
    std::fs::create_dir(f.path("plain")).unwrap();
    let plain = f.arg("plain");
    assert_one_line_error(&f.run(&["--train", &plain, "--backend", "cpu"]));
}

#[test]
fn empty_train_file() {
    let f = Fixture::new();
    std::fs::write(f.path("empty.csv"), b"").unwrap();
    let empty = f.arg("empty.csv");
    let line =
        assert_one_line_error(&f.run(&["--train", &empty, "--test", "none", "--backend", "cpu"]));
    assert!(line.contains("empty.csv"), "{line}");
}

#[test]
fn csv_with_a_bad_row() {
    let f = Fixture::new();
    let text = std::fs::read_to_string(f.path("t.csv")).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    // Line 1 is the header; spoil a pixel on line 3.
    let mut fields: Vec<&str> = lines[2].split(',').collect();
    fields[100] = "x7";
    lines[2] = fields.join(",");
    std::fs::write(f.path("bad.csv"), lines.join("\n") + "\n").unwrap();
    let bad = f.arg("bad.csv");
    let line = assert_one_line_error(&f.run(&["--train", &bad, "--backend", "cpu"]));
    assert!(
        line.contains("bad.csv") && line.contains("line 3"),
        "{line}"
    );
}

#[test]
fn dev_size_as_large_as_the_data() {
    let f = Fixture::new();
    for dev in ["300", "301"] {
        let (train, test) = (f.arg("t.csv"), f.arg("s.csv"));
        let out = f.run(&[
            "--train",
            &train,
            "--test",
            &test,
            "--dev-size",
            dev,
            "--backend",
            "cpu",
        ]);
        let line = assert_one_line_error(&out);
        assert!(line.contains("dev-size"), "{line}");
    }
}

#[test]
fn bad_batch_sizes() {
    let f = Fixture::new();
    let line = assert_one_line_error(&f.run_small(&["--batch-size", "0"]));
    assert!(line.contains("batch-size"), "{line}");
    let line = assert_one_line_error(&f.run_small(&["--batch-size", "251"]));
    assert!(line.contains("batch-size"), "{line}");
    // The whole train set is a valid batch.
    assert_success(&f.run_small(&["--batch-size", "250", "--epochs", "1"]));
}

#[test]
fn bad_learning_rates() {
    let f = Fixture::new();
    // `--alpha=-1`, so that clap does not take -1 for an option.
    for alpha in ["--alpha=0", "--alpha=-1", "--alpha=nan", "--alpha=inf"] {
        let line = assert_one_line_error(&f.run_small(&[alpha, "--iterations", "2"]));
        assert!(line.contains("alpha"), "{alpha}: {line}");
    }
}

#[test]
fn bad_hidden_widths() {
    let f = Fixture::new();
    for hidden in ["0", "10,0"] {
        let line = assert_one_line_error(&f.run_small(&["--hidden", hidden, "--iterations", "2"]));
        assert!(line.contains("hidden"), "--hidden {hidden}: {line}");
    }
}

#[test]
fn hidden_layer_too_large_is_refused_before_allocating() {
    let f = Fixture::new();
    let line = assert_one_line_error(&f.run_small(&["--hidden", "100000000"]));
    assert!(line.contains("too many weights"), "{line}");
}

/// The header and `--json` name the path; `--path` chooses it on both backends, and the
/// fused GPU path refuses, in one line, a network it does not cover.
#[test]
fn the_path_is_named_and_chosen() {
    let f = Fixture::new();
    for (backend, extra, want) in [
        ("cpu", &[][..], "fused"),
        ("cpu", &["--path", "reference"], "reference"),
        ("gpu", &[], "fused"),
        ("gpu", &["--path", "reference"], "reference"),
        ("gpu", &["--hidden", "80"], "reference"),
    ] {
        let (train, test) = (f.arg("t.csv"), f.arg("s.csv"));
        let common = ["--train", &train, "--test", &test, "--dev-size", "50"];
        let args = [
            &common[..],
            &["--iterations", "1", "--json", "--backend", backend],
            extra,
        ];
        let out = f.run(&args.concat());
        assert!(out.status.success(), "{}", describe(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        let header = text.lines().find(|l| l.starts_with("training")).unwrap();
        assert!(
            header.contains(&format!("{want} path")),
            "{backend} {extra:?}: {header}"
        );
        let summary: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!(summary["path"], want, "{summary}");
        // Where the fused GPU path does not cover the network, a line says why.
        assert_eq!(
            text.contains("note: the reference path runs"),
            extra == ["--hidden", "80"],
            "{text}"
        );
    }
    let line = assert_one_line_error(&f.run_gpu(&["--path", "fused", "--hidden", "80"]));
    assert!(
        line.contains("64 units") && line.contains("--path reference"),
        "{line}"
    );
}

/// `--matmul` is named in `--json`; `coop` on an adapter without cooperative matrices runs
/// the plain kernels after one line saying why, and on one with them runs them silently. The
/// CPU has no matmul kernels to name.
#[test]
fn the_matmul_is_named_and_coop_falls_back_with_a_note() {
    let f = Fixture::new();
    let (train, test) = (f.arg("t.csv"), f.arg("s.csv"));
    let common = ["--train", &train, "--test", &test, "--dev-size", "50"];
    let run = |extra: &[&str]| {
        let args = [&common[..], &["--iterations", "1", "--json"], extra].concat();
        let out = f.run(&args);
        assert!(out.status.success(), "{}", describe(&out));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let summary: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        (text, summary)
    };
    let (_, cpu) = run(&["--backend", "cpu", "--matmul", "coop"]);
    assert_eq!(cpu["matmul"], Value::Null, "{cpu}");
    let (text, plain) = run(&["--backend", "gpu", "--hidden", "130"]);
    assert_eq!(plain["matmul"], "plain", "{plain}");
    assert!(!text.contains("--matmul coop"), "{text}");
    let (text, coop) = run(&["--backend", "gpu", "--hidden", "130", "--matmul", "coop"]);
    let note = text.lines().find(|l| l.starts_with("note: --matmul coop"));
    match coop["matmul"].as_str() {
        Some("coop") => assert!(note.is_none(), "{text}"),
        Some("plain") => {
            let note = note.expect("a line saying why the plain kernels run");
            assert!(note.contains("the plain float32 kernels run"), "{note}");
            eprintln!("no cooperative matrices here: {note}");
        }
        other => panic!("matmul {other:?} in {coop}"),
    }
}

#[test]
fn gpu_refuses_layers_wider_than_its_grid() {
    let f = Fixture::new();
    let out = f.run_gpu(&["--hidden", "70000"]);
    let line = assert_one_line_error(&out);
    assert!(line.contains("65,535"), "{line}");
}

#[test]
fn show_more_than_the_dev_set() {
    let f = Fixture::new();
    let line = assert_one_line_error(&f.run_small(&["--show", "51", "--iterations", "2"]));
    assert!(line.contains("show"), "{line}");
    assert_success(&f.run_small(&["--show", "50", "--iterations", "1"]));
}

#[test]
fn zero_iterations() {
    let f = Fixture::new();
    let line = assert_one_line_error(&f.run_small(&["--iterations", "0"]));
    assert!(line.contains("iterations"), "{line}");
}

#[test]
fn clap_rejects_malformed_options() {
    let f = Fixture::new();
    for (args, names) in [
        (&["--activation", "sigmoid"][..], "sigmoid"),
        (&["--backend", "tpu"], "tpu"),
        (&["--optimizer", "lbfgs"], "lbfgs"),
        (&["--hidden", "ten"], "ten"),
        (&["--batch-size", "-5"], "-5"),
        (&["--iterations", "-1"], "-1"),
        (&["--dev-size", "-100"], "-100"),
        (&["--epochs", "2"], "--batch-size"), // needs --batch-size
        (&["--batch-size", "10", "--iterations", "5"], "--iterations"), // conflict
        (&["--no-such-option"], "--no-such-option"),
    ] {
        // These fail while parsing, before any file is read.
        let line = assert_one_line_error(&f.run(args));
        assert!(line.contains(names), "{args:?}: {line}");
    }
    // --help is not an error.
    let help = f.run(&["--help"]);
    assert_success(&help);
    assert!(stdout(&help).contains("--optimizer"));
}

#[test]
fn unknown_gpu_adapter() {
    let f = Fixture::new();
    let out = f.run_gpu(&["--adapter", "no-such-adapter-xyz"]);
    let line = assert_one_line_error(&out);
    assert!(
        line.contains("no-such-adapter-xyz") || line.contains("driver"),
        "the message names neither the adapter nor a driver to install: {line}"
    );
}

// ---------------------------------------------------------------------------------------------
// Issue 13: first contact. `--backend auto`, a quiet stderr, the embedded digits.
// ---------------------------------------------------------------------------------------------

/// Runs the binary at `binary` in `dir` the way a fresh headless machine would: no
/// XDG_RUNTIME_DIR, no adapter chosen from the environment, `extra_env` set.
fn run_headless(binary: &Path, dir: &Path, args: &[&str], extra_env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(binary);
    command
        .args(args)
        .current_dir(dir)
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("WGPU_ADAPTER_NAME")
        .env_remove("NODEVICE_SELECT")
        .env_remove("MESA_VK_DEVICE_SELECT");
    for (key, value) in extra_env {
        command.env(key, value);
    }
    command.output().expect("the binary runs")
}

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_mnist-gpu"))
}

/// The adapters this machine has, (name, hardware?), as wgpu reports them.
fn adapters() -> Vec<(String, bool)> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::PRIMARY,
        ..wgpu::InstanceDescriptor::new_without_display_handle_from_env()
    });
    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY))
        .iter()
        .map(|a| {
            let info = a.get_info();
            (info.name, info.device_type != wgpu::DeviceType::Cpu)
        })
        .collect()
}

/// `--backend auto` (the default) uses a hardware GPU where there is one; where the only
/// adapter is a software one it trains on the CPU and says why, in one line and in --json.
#[test]
fn auto_uses_a_hardware_gpu_or_says_why_not() {
    let dir = tempfile::tempdir().unwrap();
    let found = adapters();
    assert!(
        !found.is_empty(),
        "no GPU adapter at all: install mesa-vulkan-drivers"
    );
    let out = run_headless(binary(), dir.path(), &["--iterations", "2", "--json"], &[]);
    assert_success(&out);
    let text = stdout(&out);
    let v = json_summary(&out);
    assert_eq!(v["backend_asked"], "auto", "{v}");
    match found.iter().find(|(_, hardware)| *hardware) {
        Some((name, _)) => {
            eprintln!("exercised: a hardware adapter ({name}) is used");
            assert_eq!(v["backend"], "gpu", "{v}");
            assert!(!text.contains("note: no hardware"), "{text}");
        }
        None => {
            eprintln!("exercised: only a software adapter, so the CPU runs (no hardware GPU here)");
            assert_eq!(v["backend"], "cpu", "{v}");
            let software = &found[0].0;
            let note = format!(
                "note: no hardware GPU adapter (only {software}, a software one): \
                 training on the CPU; --backend gpu uses it anyway"
            );
            assert!(text.lines().any(|l| l == note), "no {note:?} in:\n{text}");
            let reason = v["backend_reason"].as_str().unwrap();
            assert!(reason.starts_with("no hardware GPU adapter"), "{reason}");
        }
    }
}

/// With no driver at all, auto trains on the CPU and says so; `--backend gpu` is an error that
/// says what to install.
#[test]
fn auto_without_any_driver_trains_on_the_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let no_driver = [
        ("VK_DRIVER_FILES", "/nonexistent.json"),
        ("VK_ICD_FILENAMES", "/nonexistent.json"),
    ];
    let out = run_headless(
        binary(),
        dir.path(),
        &["--iterations", "1", "--json"],
        &no_driver,
    );
    assert_success(&out);
    let v = json_summary(&out);
    assert_eq!(v["backend"], "cpu", "{v}");
    assert!(
        stdout(&out).contains("note: no GPU adapter"),
        "{}",
        describe(&out)
    );
    let line = assert_one_line_error(&run_headless(
        binary(),
        dir.path(),
        &["--backend", "gpu", "--iterations", "1"],
        &no_driver,
    ));
    assert!(
        line.contains("mesa-vulkan-drivers") && line.contains("--backend cpu"),
        "{line}"
    );
}

/// `--backend gpu` on a software adapter uses it, and the header names it as software.
#[test]
fn gpu_on_a_software_adapter_uses_it_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_headless(
        binary(),
        dir.path(),
        &["--backend", "gpu", "--iterations", "1", "--json"],
        &[],
    );
    assert_success(&out);
    let v = json_summary(&out);
    assert_eq!(
        (v["backend"].clone(), v["backend_asked"].clone()),
        ("gpu".into(), "gpu".into())
    );
    let adapter = v["adapter"].as_str().unwrap();
    let best_is_software = adapters().iter().all(|(_, hardware)| !hardware);
    if best_is_software {
        assert!(
            adapter.contains("software adapter on the CPU, not a GPU"),
            "{adapter}"
        );
        let header = stdout(&out)
            .lines()
            .find(|l| l.starts_with("training"))
            .unwrap()
            .to_string();
        assert!(header.contains("not a GPU"), "{header}");
    }
}

/// A clean run on a headless machine writes nothing to stderr: no driver noise that reads as
/// ours (Mesa's `error: XDG_RUNTIME_DIR is invalid or not set`).
#[test]
fn a_clean_run_leaves_stderr_empty() {
    let dir = tempfile::tempdir().unwrap();
    for backend in ["auto", "gpu", "cpu"] {
        let out = run_headless(
            binary(),
            dir.path(),
            &["--backend", backend, "--iterations", "1"],
            &[],
        );
        assert_success(&out);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.trim().is_empty(),
            "--backend {backend} wrote to stderr:\n{stderr}"
        );
    }
}

/// Piped into a reader that stops early (`mnist-gpu | head -1`), the run ends quietly, as
/// `cat` would: killed by SIGPIPE, no panic about a broken pipe.
#[cfg(unix)]
#[test]
fn a_closed_pipe_ends_the_run_quietly() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let mut child = common::output::command(
        dir.path(),
        &[
            "--backend",
            "cpu",
            "--iterations",
            "100000",
            "--log-every",
            "1",
        ],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    lines.read_line(&mut first).unwrap();
    assert!(first.starts_with("training 784-10-10"), "{first}");
    drop(lines);
    let out = child.wait_with_output().unwrap();
    assert_no_panic(&out);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "{}",
        describe(&out)
    );
    assert!(stderr(&out).trim().is_empty(), "{}", describe(&out));
}

/// The binary copied alone to another directory trains on the digits compiled into it, from
/// any working directory.
#[test]
fn the_binary_alone_trains_on_its_embedded_digits() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("mnist-gpu");
    std::fs::copy(binary(), &copy).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let out = run_headless(
        &copy,
        elsewhere.path(),
        &["--backend", "cpu", "--iterations", "3", "--json"],
        &[],
    );
    assert_success(&out);
    let v = json_summary(&out);
    assert_eq!(
        (v["train_samples"].clone(), v["test_samples"].clone()),
        (9000.into(), 10_000.into())
    );
    assert_eq!(
        v["train"], "embedded:data/mnist/train-10k-images-idx3-ubyte.gz",
        "{v}"
    );
    assert_eq!(
        v["test"], "embedded:data/mnist/t10k-images-idx3-ubyte.gz",
        "{v}"
    );
}

/// The README's two commands are the ones the tests and CI rely on: the first trains with the
/// defaults, the second is `test.sh`, which `.ci/run` runs and which runs `cargo test`.
#[test]
fn the_readme_commands_are_what_ci_runs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |name: &str| std::fs::read_to_string(root.join(name)).unwrap();
    let readme = read("README.md");
    let section = readme.split("## Two commands").nth(1).unwrap();
    let blocks: Vec<&str> = section
        .split("```sh\n")
        .skip(1)
        .take(2)
        .map(|block| block.split("\n```").next().unwrap())
        .collect();
    assert_eq!(
        blocks,
        ["cargo run --release", "./test.sh"],
        "the README's two commands"
    );
    assert!(
        read(".ci/run").lines().any(|l| l.trim() == "./test.sh"),
        ".ci/run does not run ./test.sh"
    );
    let script = read("test.sh");
    assert!(
        script.contains("exec cargo test --release"),
        "test.sh does not run the tests"
    );
}

/// The fixture files are what the tests think they are.
#[test]
fn fixture_round_trips() {
    let f = Fixture::new();
    let read = data::load(Path::new(&f.arg("t.csv"))).unwrap();
    assert_eq!(read.images, f.train.images);
    assert_eq!(read.labels, f.train.labels);
}

// ---------------------------------------------------------------------------------------------
// Issue 5: every kind of bad data file, through the binary
// ---------------------------------------------------------------------------------------------

/// Runs `--train <path> --test none --backend cpu` and returns the one error line, after
/// checking that it names the file and mentions each of `parts` (the place and the problem).
fn refused_train(f: &Fixture, path: &Path, parts: &[&str]) -> String {
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    refused_naming(f, path, &name, parts)
}

/// Like `refused_train`, when the file to be named is not `path` but one beside it (`named` is
/// part of its name).
fn refused_naming(f: &Fixture, path: &Path, named: &str, parts: &[&str]) -> String {
    let train = path.to_str().expect("a UTF-8 temporary path").to_string();
    let line = assert_one_line_error(&f.run(&[
        "--train",
        &train,
        "--test",
        "none",
        "--dev-size",
        "1",
        "--iterations",
        "1",
        "--backend",
        "cpu",
    ]));
    assert!(
        line.contains(named),
        "the message does not name {named}: {line}"
    );
    for part in parts {
        assert!(
            line.contains(part),
            "the message should mention {part:?}: {line}"
        );
    }
    line
}

/// Writes `bytes` as `name` in the fixture directory and checks the binary refuses it.
fn refused_bytes(f: &Fixture, name: &str, bytes: &[u8], parts: &[&str]) -> String {
    std::fs::write(f.path(name), bytes).unwrap();
    refused_train(f, &f.path(name), parts)
}

/// The fixture's `t.csv` as rows of fields (row 0 is the header, on line 1).
fn train_rows(f: &Fixture) -> Vec<Vec<String>> {
    std::fs::read_to_string(f.path("t.csv"))
        .unwrap()
        .lines()
        .map(|line| line.split(',').map(str::to_string).collect())
        .collect()
}

fn rows_text(rows: &[Vec<String>]) -> String {
    rows.iter().map(|row| row.join(",") + "\n").collect()
}

/// Writes the fixture's `t.csv` with `edit` applied as `name`, and checks the binary refuses it.
fn refused_csv(
    f: &Fixture,
    name: &str,
    edit: impl FnOnce(&mut Vec<Vec<String>>),
    parts: &[&str],
) -> String {
    let mut rows = train_rows(f);
    edit(&mut rows);
    refused_bytes(f, name, rows_text(&rows).as_bytes(), parts)
}

fn gzip_bytes(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// An IDX file: big-endian magic and dimensions, then the body.
fn idx_bytes(magic: u32, dimensions: &[u32], body: &[u8]) -> Vec<u8> {
    let mut bytes = magic.to_be_bytes().to_vec();
    for d in dimensions {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(body);
    bytes
}

/// Writes `<stem>-images-idx3-ubyte` and, if given, `<stem>-labels-idx1-ubyte` beside it, then
/// checks the binary refuses the images file (whose labels it finds beside).
fn refused_idx(
    f: &Fixture,
    stem: &str,
    images: &[u8],
    labels: Option<&[u8]>,
    parts: &[&str],
) -> String {
    let images_path = f.path(&format!("{stem}-images-idx3-ubyte"));
    std::fs::write(&images_path, images).unwrap();
    if let Some(labels) = labels {
        std::fs::write(f.path(&format!("{stem}-labels-idx1-ubyte")), labels).unwrap();
    }
    refused_naming(f, &images_path, &format!("{stem}-"), parts)
}

#[cfg(unix)]
#[test]
fn data_unreadable_train_file() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new();
    let locked = f.path("locked.csv");
    std::fs::copy(f.path("t.csv"), &locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::File::open(&locked).is_err() {
        refused_train(&f, &locked, &["locked.csv: open: ", "ermission denied"]);
    } else {
        // Running as root: permissions do not stop reading, so the run must go through.
        let arg = f.arg("locked.csv");
        assert_success(&f.run(&[
            "--train",
            &arg,
            "--test",
            "none",
            "--dev-size",
            "50",
            "--iterations",
            "1",
            "--backend",
            "cpu",
        ]));
    }
    // Unreadable even for root: reading /proc/self/mem at offset 0 fails (an unmapped address).
    if cfg!(target_os = "linux") {
        std::os::unix::fs::symlink("/proc/self/mem", f.path("mem.csv")).unwrap();
        refused_train(&f, &f.path("mem.csv"), &["mem.csv: read: ", "error"]);
        std::os::unix::fs::symlink("/proc/self/mem", f.path("mem-images-idx3-ubyte")).unwrap();
        refused_train(&f, &f.path("mem-images-idx3-ubyte"), &["read: "]);
    }
}

#[test]
fn data_directory_named_like_idx() {
    let f = Fixture::new();
    std::fs::create_dir(f.path("d-images-idx3-ubyte.gz")).unwrap();
    refused_train(&f, &f.path("d-images-idx3-ubyte.gz"), &["directory"]);
}

#[test]
fn data_empty_idx_file() {
    let f = Fixture::new();
    refused_idx(&f, "empty", b"", None, &["header", "found only 0"]);
}

#[test]
fn data_header_only() {
    let f = Fixture::new();
    refused_csv(
        &f,
        "header-only.csv",
        |rows| rows.truncate(1),
        &["data", "header but no data rows"],
    );
    refused_idx(
        &f,
        "header-only",
        &idx_bytes(2051, &[3, 28, 28], &[]),
        None,
        &["data", "shorter than its header says", "found 0"],
    );
}

#[test]
fn data_binary_garbage() {
    let f = Fixture::new();
    let garbage: Vec<u8> = common::random_bytes(5000, 9);
    refused_bytes(&f, "garbage.csv", &garbage, &[": "]);
    refused_idx(
        &f,
        "garbage",
        &garbage,
        None,
        &["header", "not an IDX file"],
    );
    // Good images, garbage labels beside them.
    let mut images = Vec::new();
    images.extend_from_slice(&idx_bytes(2051, &[2, 28, 28], &garbage[..2 * PIXELS]));
    refused_idx(
        &f,
        "garbage2",
        &images,
        Some(&garbage),
        &["labels-idx1-ubyte: header"],
    );
}

#[test]
fn data_truncated_and_corrupt_gzip() {
    let f = Fixture::new();
    let csv = gzip_bytes(&std::fs::read(f.path("t.csv")).unwrap());
    refused_bytes(
        &f,
        "cut.csv.gz",
        &csv[..csv.len() / 2],
        &["gzip", "truncated"],
    );
    let mut corrupt = csv.clone();
    let middle = corrupt.len() / 2;
    for byte in &mut corrupt[middle..middle + 16] {
        *byte ^= 0xa5;
    }
    refused_bytes(&f, "corrupt.csv.gz", &corrupt, &["gzip", "corrupt"]);

    let data = common::random_dataset(3, 4);
    let images = gzip_bytes(&idx_bytes(2051, &[3, 28, 28], &data.images));
    refused_idx(&f, "cut", &images[..images.len() - 5], None, &["gzip"]);
    let mut corrupt = images.clone();
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 0xff;
    corrupt[middle + 1] ^= 0xff;
    refused_idx(&f, "corrupt", &corrupt, None, &["gzip"]);
}

#[test]
fn data_csv_wrong_field_counts() {
    let f = Fixture::new();
    refused_csv(
        &f,
        "few.csv",
        |rows| rows[4].truncate(500),
        &["line 5", "too few fields", "500 found", "expected 785"],
    );
    refused_csv(
        &f,
        "many.csv",
        |rows| rows[7].push("0".to_string()),
        &["line 8", "too many fields", "786 found", "expected 785"],
    );
}

#[test]
fn data_csv_bad_values() {
    let f = Fixture::new();
    let cases: [(&str, usize, usize, &str, &[&str]); 7] = [
        (
            "word.csv",
            2,
            10,
            "ten",
            &["line 3", "column 11", "not a number"],
        ),
        (
            "nan.csv",
            3,
            1,
            "nan",
            &["line 4", "\"nan\"", "not an integer"],
        ),
        (
            "inf.csv",
            4,
            784,
            "inf",
            &["line 5", "\"inf\"", "not an integer"],
        ),
        (
            "big.csv",
            5,
            20,
            "256",
            &["line 6", "pixel value 256 is outside 0-255"],
        ),
        (
            "neg-pixel.csv",
            5,
            20,
            "-4",
            &["line 6", "pixel value -4 is outside 0-255"],
        ),
        (
            "label.csv",
            6,
            0,
            "10",
            &["line 7", "label 10 is outside 0-9"],
        ),
        (
            "neg-label.csv",
            9,
            0,
            "-1",
            &["line 10", "label -1 is outside 0-9"],
        ),
    ];
    for (name, row, column, value, parts) in cases {
        refused_csv(
            &f,
            name,
            |rows| rows[row][column] = value.to_string(),
            parts,
        );
    }
}

#[test]
fn data_csv_label_column_mismatch() {
    let f = Fixture::new();
    // Kaggle train.csv header (labels), a row without its label.
    refused_csv(
        &f,
        "no-label.csv",
        |rows| {
            rows[3].remove(0);
        },
        &[
            "line 4",
            "784 found, expected 785",
            "label,pixel0",
            "no label column",
        ],
    );
    // Kaggle test.csv header (no labels), a row with a label.
    refused_csv(
        &f,
        "extra-label.csv",
        |rows| {
            for row in rows.iter_mut() {
                row.remove(0);
            }
            rows[2].insert(0, "3".to_string());
        },
        &[
            "line 3",
            "785 found, expected 784",
            "announces",
            "label column",
        ],
    );
    // A file without labels given for training: the run needs them.
    refused_csv(
        &f,
        "unlabeled.csv",
        |rows| {
            for row in rows.iter_mut() {
                row.remove(0);
            }
        },
        &["labels", "no labels"],
    );
}

#[test]
fn data_csv_not_the_kaggle_header() {
    let f = Fixture::new();
    refused_csv(
        &f,
        "digit-header.csv",
        |rows| rows[0][0] = "digit".to_string(),
        &["header", "\"digit\"", "label,pixel0,...,pixel783"],
    );
    refused_csv(
        &f,
        "typo-header.csv",
        |rows| rows[0][100] = "pixle99".to_string(),
        &["header", "column 101", "\"pixle99\"", "\"pixel99\""],
    );
}

#[test]
fn data_bad_test_file_is_refused_too() {
    let f = Fixture::new();
    std::fs::write(f.path("bad-test.csv"), b"label,pixel0\n1,2\n").unwrap();
    let (train, test) = (f.arg("t.csv"), f.arg("bad-test.csv"));
    let line = assert_one_line_error(&f.run(&[
        "--train",
        &train,
        "--test",
        &test,
        "--dev-size",
        "50",
        "--backend",
        "cpu",
    ]));
    assert!(
        line.contains("bad-test.csv") && line.contains("header"),
        "{line}"
    );
}

#[test]
fn data_idx_header_errors() {
    let f = Fixture::new();
    let data = common::random_dataset(3, 5);
    let labels = idx_bytes(2049, &[3], data.labels.as_deref().unwrap());
    refused_idx(
        &f,
        "magic",
        &idx_bytes(0x1234_5678, &[3, 28, 28], &data.images),
        Some(&labels),
        &["header", "magic number", "expected 2051"],
    );
    refused_idx(&f, "swapped", &labels, None, &["header", "2049", "swap"]);
    refused_idx(
        &f,
        "rank",
        &idx_bytes(0x0802, &[3, 784], &data.images),
        Some(&labels),
        &["header", "2 dimensions", "expected 2051"],
    );
    refused_idx(
        &f,
        "size",
        &idx_bytes(2051, &[3, 20, 20], &data.images[..3 * 400]),
        Some(&labels),
        &["header", "20x20", "28x28"],
    );
    // A labels file with the wrong magic beside good images.
    refused_idx(
        &f,
        "label-magic",
        &idx_bytes(2051, &[3, 28, 28], &data.images),
        Some(&idx_bytes(2051, &[3, 28, 28], &data.images)),
        &["labels-idx1-ubyte: header", "expected 2049"],
    );
}

#[test]
fn data_idx_count_and_length_errors() {
    let f = Fixture::new();
    let data = common::random_dataset(3, 6);
    let images = idx_bytes(2051, &[3, 28, 28], &data.images);
    refused_idx(
        &f,
        "count",
        &images,
        Some(&idx_bytes(2049, &[2], &[1, 2])),
        &["labels-idx1-ubyte: header", "2 labels", "3 images"],
    );
    refused_idx(
        &f,
        "short",
        &images[..images.len() - 100],
        None,
        &[
            "data",
            "shorter than its header says",
            "2352 bytes",
            "found 2252",
        ],
    );
    refused_idx(
        &f,
        "short-labels",
        &images,
        Some(&idx_bytes(2049, &[3], &[1])),
        &["labels-idx1-ubyte: data", "shorter", "found 1"],
    );
    refused_idx(
        &f,
        "bad-label",
        &images,
        Some(&idx_bytes(2049, &[3], &[1, 12, 3])),
        &["labels-idx1-ubyte: record 2", "label 12 is outside 0-9"],
    );
}

#[test]
fn data_idx_billions_of_images_refused_before_allocating() {
    let f = Fixture::new();
    let data = common::random_dataset(3, 7);
    let claim = idx_bytes(2051, &[4_000_000_000, 28, 28], &data.images);
    for (stem, bytes) in [("huge", claim.clone()), ("huge-gz", gzip_bytes(&claim))] {
        let start = std::time::Instant::now();
        refused_idx(
            &f,
            stem,
            &bytes,
            None,
            &["data", "3136000000000 bytes", "found 2352"],
        );
        // Allocating 3 TB would fail or take far longer.
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "{stem}: too slow"
        );
    }
}
