//! The `mnist-gpu` binary end to end, on small random CSV files in a temporary directory:
//! a tiny run's report (text and `--json`), `--show`'s digits, and one clean line on stderr
//! (never a panic) for every kind of bad input.

mod common;

use common::output::{
    assert_clean_failure, assert_one_line_error, assert_success, json_summary, stdout,
};
use common::random_dataset;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use tempfile::TempDir;

use mnist_gpu::art;
use mnist_gpu::backend::List;
use mnist_gpu::data::{self, Dataset, CLASSES, PIXELS};
use mnist_gpu::train::Split;

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
        let predicted: u8 = header
            .split("predicted ")
            .nth(1)
            .and_then(|s| s.split(',').next())
            .and_then(|s| s.trim().parse().ok())
            .expect("a predicted digit");
        assert!((predicted as usize) < CLASSES);

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
    assert_clean_failure(&f.run_small(&["--activation", "sigmoid"]));
    assert_clean_failure(&f.run_small(&["--hidden", "ten"]));
    assert_clean_failure(&f.run_small(&["--epochs", "2"])); // needs --batch-size
    assert_clean_failure(&f.run_small(&["--batch-size", "10", "--iterations", "5"])); // conflict
    assert_clean_failure(&f.run_small(&["--no-such-option"]));
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

/// The fixture files are what the tests think they are.
#[test]
fn fixture_round_trips() {
    let f = Fixture::new();
    let read = data::load(Path::new(&f.arg("t.csv"))).unwrap();
    assert_eq!(read.images, f.train.images);
    assert_eq!(read.labels, f.train.labels);
}
