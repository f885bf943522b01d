//! Models that outlive the run: `--save` → `predict` → `eval` through the built binary on
//! both backends, the safetensors file read back through the crate, Kaggle's submission
//! format, `--resume`, `--metrics`, Ctrl-C, and a clear error for every kind of bad model file.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::output::{
    assert_one_line_error, assert_success, command, json_summary, run_in, stdout,
};
use crate::common::random_dataset;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use tempfile::TempDir;

use mnist_gpu::data::{self, Dataset};
use mnist_gpu::model::{Activation, Init, Model};
use mnist_gpu::model_file;

/// A temporary directory with `t.csv` (300 labelled random images), `s.csv` (100 labelled)
/// and `u.csv` (the same 100 without labels, as Kaggle's test.csv).
fn fixture() -> (TempDir, Dataset) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    data::write_csv(&random_dataset(300, 1), &dir.path().join("t.csv"), true).unwrap();
    let test = random_dataset(100, 2);
    data::write_csv(&test, &dir.path().join("s.csv"), true).unwrap();
    let unlabelled = Dataset {
        labels: None,
        ..test.clone()
    };
    data::write_csv(&unlabelled, &dir.path().join("u.csv"), true).unwrap();
    (dir, test)
}

/// Trains a small model on the CSVs and saves it as `name` (relative to the directory).
fn train_and_save(dir: &Path, backend: &str, name: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "--train",
        "t.csv",
        "--test",
        "s.csv",
        "--dev-size",
        "50",
        "--iterations",
        "20",
        "--backend",
        backend,
        "--save",
        name,
        "--json",
    ];
    args.extend_from_slice(extra);
    run_in(dir, &args)
}

/// The predictions of a `predict --out` file, checking Kaggle's format on the way.
fn read_submission(path: &Path, rows: usize) -> Vec<u8> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("ImageId,Label"), "the Kaggle header");
    let mut labels = Vec::new();
    for (i, line) in lines.enumerate() {
        let (id, label) = line.split_once(',').expect("two fields");
        assert_eq!(id, (i + 1).to_string(), "ImageIds count from 1");
        let label: u8 = label.parse().expect("a digit");
        assert!(label <= 9);
        labels.push(label);
    }
    assert_eq!(labels.len(), rows, "one row per image");
    assert!(text.ends_with('\n'));
    labels
}

#[test]
fn save_predict_eval_round_trip_on_both_backends() {
    let (dir, test) = fixture();
    let d = dir.path();
    let trained = train_and_save(d, "cpu", "m.safetensors", &["--hidden", "13"]);
    assert_success(&trained);
    let summary = json_summary(&trained);

    // The file loads through the safetensors crate itself, with the documented names,
    // shapes and metadata.
    let bytes = std::fs::read(d.join("m.safetensors")).unwrap();
    let tensors = SafeTensors::deserialize(&bytes).unwrap();
    let mut names = tensors.names();
    names.sort();
    assert_eq!(names, ["W1", "W2", "b1", "b2"]);
    assert_eq!(tensors.tensor("W1").unwrap().shape(), [13, 784]);
    assert_eq!(tensors.tensor("b1").unwrap().shape(), [13]);
    assert_eq!(tensors.tensor("W2").unwrap().shape(), [10, 13]);
    assert_eq!(tensors.tensor("b2").unwrap().dtype(), Dtype::F32);
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().unwrap();
    assert_eq!(meta["hidden"], "13");
    assert_eq!(meta["activation"], "relu");
    assert_eq!(meta["inputs"], "784");
    let test_accuracy: f64 = meta["test_accuracy"].parse().unwrap();
    let reported = summary["test_accuracy"].as_f64().unwrap();
    assert!((test_accuracy - reported).abs() < 1e-4);
    assert!(
        meta["options"].contains("\"optimizer\":\"sgd\""),
        "{}",
        meta["options"]
    );

    // Predictions agree between the backends, and with the labels where eval counts them.
    let mut submissions = Vec::new();
    for backend in ["cpu", "gpu"] {
        let out_name = format!("{backend}.csv");
        let predicted = run_in(
            d,
            &[
                "predict",
                "--model",
                "m.safetensors",
                "--data",
                "u.csv",
                "--out",
                &out_name,
                "--backend",
                backend,
            ],
        );
        assert_success(&predicted);
        submissions.push(read_submission(&d.join(&out_name), 100));
    }
    assert_eq!(
        submissions[0], submissions[1],
        "CPU and GPU predictions differ"
    );
    let correct = submissions[0]
        .iter()
        .zip(test.labels.as_ref().unwrap())
        .filter(|(p, l)| p == l)
        .count();
    for backend in ["cpu", "gpu"] {
        let evaluated = run_in(
            d,
            &[
                "eval",
                "--model",
                "m.safetensors",
                "--data",
                "s.csv",
                "--json",
                "--backend",
                backend,
            ],
        );
        assert_success(&evaluated);
        let report = json_summary(&evaluated);
        assert_eq!(report["images"], 100);
        let accuracy = report["accuracy"].as_f64().unwrap();
        assert!(
            (accuracy - correct as f64 / 100.0).abs() < 1e-12,
            "{backend}: {accuracy}"
        );
        assert!(
            (accuracy - reported).abs() < 1e-12,
            "eval disagrees with training's report"
        );
        let confusion = report["confusion"].as_array().unwrap();
        let total: u64 = confusion
            .iter()
            .flat_map(|row| row.as_array().unwrap())
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(total, 100);
        let diagonal: u64 = (0..10).map(|i| confusion[i][i].as_u64().unwrap()).sum();
        assert_eq!(diagonal as usize, correct);
        assert_eq!(report["precision"].as_array().unwrap().len(), 10);
        assert!(stdout(&evaluated).contains("confusion matrix"));
    }
}

#[test]
fn a_model_saved_on_the_gpu_predicts_identically_on_the_cpu() {
    let (dir, _) = fixture();
    let d = dir.path();
    assert_success(&train_and_save(
        d,
        "gpu",
        "g.safetensors",
        &["--hidden", "10,7", "--activation", "elu"],
    ));
    let saved = model_file::load(&d.join("g.safetensors")).unwrap();
    assert_eq!(saved.model.hidden(), [10, 7]);
    assert_eq!(saved.model.activation, Activation::Elu);
    let mut submissions = Vec::new();
    for backend in ["gpu", "cpu"] {
        let out = format!("{backend}.csv");
        let args = [
            "predict",
            "--model",
            "g.safetensors",
            "--data",
            "s.csv",
            "--out",
            &out,
            "--backend",
            backend,
            "--show",
            "2",
        ];
        let predicted = run_in(d, &args);
        assert_success(&predicted);
        assert!(stdout(&predicted).contains("confident), label"));
        submissions.push(read_submission(&d.join(&out), 100));
    }
    assert_eq!(submissions[0], submissions[1]);
}

#[test]
fn save_and_load_keep_every_bit_and_the_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    let model = Model::new(&[17, 5], Activation::Elu, Init::Uniform, 9).unwrap();
    let extra = BTreeMap::from([("test_accuracy".to_string(), "0.5".to_string())]);
    model_file::save(&path, &model, &extra).unwrap();
    let loaded = model_file::load(&path).unwrap();
    assert!(loaded.model == model, "the model changed on the way");
    assert_eq!(loaded.metadata["test_accuracy"], "0.5");
    assert_eq!(loaded.metadata["hidden"], "17,5");
    assert_eq!(loaded.metadata["format"], model_file::FORMAT);
    // Only the model is left in the directory: the temporary file was renamed.
    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(files.len(), 1);
}

/// Tensors by name and shape.
type Tensors<'a> = &'a [(&'a str, &'a [usize])];

/// The classic 784-10-10 network's tensors.
const CLASSIC: Tensors = &[
    ("W1", &[10, 784]),
    ("b1", &[10]),
    ("W2", &[10, 10]),
    ("b2", &[10]),
];

/// Writes a safetensors file with zero-filled f32 tensors of the given shapes, and metadata.
fn write_tensors(path: &Path, tensors: Tensors, meta: &[(&str, &str)]) {
    let data: Vec<(&str, Vec<u8>, &[usize])> = tensors
        .iter()
        .map(|&(name, shape)| (name, vec![0u8; 4 * shape.iter().product::<usize>()], shape))
        .collect();
    let views = data.iter().map(|(name, bytes, shape)| {
        let view = TensorView::new(Dtype::F32, shape.to_vec(), bytes).unwrap();
        (name.to_string(), view)
    });
    let meta = meta
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    std::fs::write(path, safetensors::serialize(views, Some(meta)).unwrap()).unwrap();
}

#[test]
fn bad_model_files_get_one_line_errors() {
    let (dir, _) = fixture();
    let d = dir.path();
    // Files that are not safetensors at all: (name, what the error says).
    std::fs::write(d.join("text.safetensors"), "ImageId,Label\n1,7\n").unwrap();
    std::fs::write(d.join("empty.safetensors"), "").unwrap();
    std::fs::create_dir(d.join("dir.safetensors")).unwrap();
    let mut cases = vec![
        ("missing.safetensors", "No such file"),
        ("text.safetensors", "not a safetensors"),
        ("empty.safetensors", "not a safetensors"),
        ("dir.safetensors", "directory"),
    ];
    // safetensors files with the wrong tensors or metadata.
    // A table: one case a line.
    #[rustfmt::skip]
    let wrong: [(&str, Tensors, &[(&str, &str)], &str); 10] = [
        ("no_tensors.safetensors", &[], &[("format", "none")], "no tensors"),
        ("names.safetensors", &[("weight", &[10, 784])], &[], "expected tensors W1"),
        ("no_b1.safetensors", &[("W1", &[10, 784]), ("W2", &[10, 10]), ("b2", &[10])], &[], "b1 is missing"),
        ("inputs.safetensors", &[("W1", &[10, 100]), ("b1", &[10]), ("W2", &[10, 10]), ("b2", &[10])], &[], "expected [units, 784]"),
        ("chain.safetensors", &[("W1", &[10, 784]), ("b1", &[10]), ("W2", &[10, 12]), ("b2", &[10])], &[], "expected [units, 10]"),
        ("b_shape.safetensors", &[("W1", &[10, 784]), ("b1", &[11]), ("W2", &[10, 10]), ("b2", &[10])], &[], "b1 has shape [11]"),
        ("outputs.safetensors", &[("W1", &[10, 784]), ("b1", &[10]), ("W2", &[9, 10]), ("b2", &[9])], &[], "9 outputs"),
        ("extra.safetensors", &[("W1", &[10, 784]), ("b1", &[10]), ("W2", &[10, 10]), ("b2", &[10]), ("W9", &[1])], &[], "unexpected tensor \"W9\""),
        ("activation.safetensors", CLASSIC, &[("activation", "tanh")], "unknown activation \"tanh\""),
        ("hidden_meta.safetensors", CLASSIC, &[("hidden", "512")], "metadata says hidden layers 512"),
    ];
    for (name, tensors, meta, expected) in wrong {
        write_tensors(&d.join(name), tensors, meta);
        cases.push((name, expected));
    }
    for (name, expected) in cases {
        for command in ["predict", "eval"] {
            let out = run_in(
                d,
                &[
                    command,
                    "--model",
                    name,
                    "--data",
                    "s.csv",
                    "--backend",
                    "cpu",
                ],
            );
            let line = assert_one_line_error(&out);
            assert!(
                line.contains(name),
                "{command} {name}: the message does not name the file: {line}"
            );
            assert!(
                line.contains(expected),
                "{command} {name}: expected {expected:?} in: {line}"
            );
        }
    }
    // A file of the right layout loads (the same writer, no metadata: the classic ReLU net).
    write_tensors(&d.join("ok.safetensors"), CLASSIC, &[]);
    assert_success(&run_in(
        d,
        &[
            "predict",
            "--model",
            "ok.safetensors",
            "--data",
            "s.csv",
            "--backend",
            "cpu",
        ],
    ));

    // NaN weights.
    let mut model = Model::new(&[10], Activation::Relu, Init::He, 1).unwrap();
    model.layers[1].w[3] = f32::NAN;
    let err = model_file::save(&d.join("nan.safetensors"), &model, &BTreeMap::new()).unwrap_err();
    assert!(err.to_string().contains("NaN"), "{err}");
    assert!(
        !d.join("nan.safetensors").exists(),
        "a NaN model was written"
    );
}

#[test]
fn eval_needs_labels_and_predict_options_are_checked() {
    let (dir, _) = fixture();
    let d = dir.path();
    assert_success(&train_and_save(d, "cpu", "m.safetensors", &[]));
    let line = assert_one_line_error(&run_in(
        d,
        &[
            "eval",
            "--model",
            "m.safetensors",
            "--data",
            "u.csv",
            "--backend",
            "cpu",
        ],
    ));
    assert!(line.contains("u.csv") && line.contains("label"), "{line}");
    let line = assert_one_line_error(&run_in(
        d,
        &[
            "predict",
            "--model",
            "m.safetensors",
            "--data",
            "s.csv",
            "--show",
            "101",
            "--backend",
            "cpu",
        ],
    ));
    assert!(line.contains("--show 101"), "{line}");
    std::fs::create_dir(d.join("out.csv")).unwrap();
    for (out, says) in [
        ("out.csv", "is a directory"),
        ("nowhere/out.csv", "does not exist"),
        ("out.txt", "must end in .csv"),
    ] {
        let args = [
            "predict",
            "--model",
            "m.safetensors",
            "--data",
            "s.csv",
            "--out",
            out,
        ];
        let out_run = run_in(d, &[&args[..], &["--backend", "cpu"]].concat());
        let line = assert_one_line_error(&out_run);
        assert!(line.contains(out) && line.contains(says), "{line}");
        // Refused before any work.
        assert!(!stdout(&out_run).contains("classified"), "{line}");
    }
}

#[test]
fn resume_continues_from_a_saved_model_of_the_same_shape_only() {
    let (dir, _) = fixture();
    let d = dir.path();
    let first = train_and_save(d, "cpu", "a.safetensors", &["--hidden", "13"]);
    assert_success(&first);
    let resumed = train_and_save(d, "cpu", "b.safetensors", &["--resume", "a.safetensors"]);
    assert_success(&resumed);
    // Twenty more steps from where the first run stopped: the loss keeps going down.
    let (loss_a, loss_b) = (
        json_summary(&first)["final_loss"].as_f64().unwrap(),
        json_summary(&resumed)["final_loss"].as_f64().unwrap(),
    );
    assert!(
        loss_b < loss_a,
        "resumed loss {loss_b} is not below {loss_a}"
    );

    for (option, value, says) in [
        ("--hidden", "10", "hidden layers [13]"),
        ("--activation", "elu", "activation relu"),
    ] {
        let out = train_and_save(
            d,
            "cpu",
            "c.safetensors",
            &["--resume", "a.safetensors", option, value],
        );
        let line = assert_one_line_error(&out);
        assert!(
            line.contains("a.safetensors") && line.contains(says),
            "{line}"
        );
    }
    assert!(!d.join("c.safetensors").exists());
}

#[test]
fn output_paths_are_checked_before_training() {
    let (dir, _) = fixture();
    let d = dir.path();
    for (option, value, says) in [
        ("--save", "nowhere/m.safetensors", "does not exist"),
        ("--save", "m.bin", ".safetensors"),
        ("--metrics", "m.txt", ".csv"),
        ("--plot", "m.jpg", ".png or .svg"),
    ] {
        let out = run_in(
            d,
            &[
                "--train",
                "t.csv",
                "--backend",
                "cpu",
                "--iterations",
                "1",
                option,
                value,
            ],
        );
        let line = assert_one_line_error(&out);
        assert!(line.contains(value) && line.contains(says), "{line}");
        assert!(
            !stdout(&out).contains("training"),
            "it trained before failing"
        );
    }
}

#[test]
fn metrics_csv_has_one_row_per_progress_line() {
    let (dir, _) = fixture();
    let d = dir.path();
    let out = run_in(
        d,
        &[
            "--train",
            "t.csv",
            "--test",
            "s.csv",
            "--dev-size",
            "50",
            "--backend",
            "cpu",
            "--batch-size",
            "50",
            "--epochs",
            "4",
            "--lr-decay",
            "0.5",
            "--metrics",
            "m.csv",
        ],
    );
    assert_success(&out);
    let text = std::fs::read_to_string(d.join("m.csv")).unwrap();
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(rows[0], mnist_gpu::metrics::COLUMNS);
    assert_eq!(rows.len(), 1 + 4, "a header and one row per epoch");
    for (e, row) in rows[1..].iter().enumerate() {
        assert_eq!(row[0], ((e + 1) * 5).to_string(), "step");
        assert_eq!(row[1], (e + 1).to_string(), "epoch");
        // --lr-decay 0.5 halves α after every epoch.
        let alpha: f64 = row[2].parse().unwrap();
        assert!(
            (alpha - 0.3 * 0.5f64.powi(e as i32)).abs() < 1e-6,
            "epoch {e}: α {alpha}"
        );
        let dev: f64 = row[6].parse().unwrap();
        assert!((0.0..=1.0).contains(&dev));
    }
}

#[test]
fn ctrl_c_stops_cleanly_and_saves_the_last_finished_step() {
    let (dir, _) = fixture();
    let d = dir.path();
    // A run far too long to finish: a million full-batch steps.
    let mut child = command(
        d,
        &[
            "--train",
            "t.csv",
            "--test",
            "none",
            "--dev-size",
            "50",
            "--backend",
            "cpu",
            "--iterations",
            "1000000",
            "--log-every",
            "1",
            "--save",
            "m.safetensors",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // Wait for the first progress line, so that it is training, then send SIGINT as
    // Ctrl-C would.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        if line.unwrap().starts_with("step") {
            break;
        }
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let status = child.wait().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "it took long to stop"
    );
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(
        rest.iter().any(|l| l.starts_with("interrupted after step")),
        "{rest:?}"
    );
    assert!(
        err.contains("interrupted") && err.contains("m.safetensors"),
        "{err}"
    );
    assert!(!err.contains("panicked"));
    // The model is whole, and nothing else is left behind.
    let saved = model_file::load(&d.join("m.safetensors")).unwrap();
    let steps: usize = saved.metadata["steps"].parse().unwrap();
    assert!(steps >= 1 && steps < 1_000_000, "steps {steps}");
    let partial = std::fs::read_dir(d)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".partial")
        })
        .count();
    assert_eq!(partial, 0, "a temporary file was left behind");
}

#[test]
fn plot_draws_the_loss_and_both_accuracies_as_png_and_svg() {
    let (dir, _) = fixture();
    let d = dir.path();
    let args = [
        "--train",
        "t.csv",
        "--test",
        "s.csv",
        "--dev-size",
        "50",
        "--backend",
        "cpu",
        "--iterations",
        "30",
        "--log-every",
        "3",
    ];
    let png = run_in(d, &[&args[..], &["--plot", "curves.png"]].concat());
    assert_success(&png);
    let bytes = std::fs::read(d.join("curves.png")).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!((width, height), (1000, 420));
    assert!(
        bytes.len() > 10_000,
        "a PNG of {} bytes has no curves",
        bytes.len()
    );

    let svg = run_in(d, &[&args[..], &["--plot", "curves.svg"]].concat());
    assert_success(&svg);
    let text = std::fs::read_to_string(d.join("curves.svg")).unwrap();
    assert!(text.starts_with("<svg"), "not an SVG");
    // The loss, the train accuracy and the dev accuracy: three lines of ten points.
    let lines: Vec<&str> = text.split("<polyline").skip(1).collect();
    let curves = lines
        .iter()
        .filter(|l| l.matches(',').count() >= 10)
        .count();
    assert!(curves >= 3, "{curves} curves in the SVG");
    for label in [
        "loss",
        "accuracy",
        "train (mean)",
        "dev",
        "dev loss",
        "step",
    ] {
        assert!(text.contains(label), "no {label:?} in the SVG");
    }
}

/// A write that cannot start (no file can be made in the folder) names the file asked for,
/// not the hidden temporary file it would have gone through.
#[test]
fn a_failed_write_names_the_file_not_its_temporary() {
    let path = Path::new("/proc/m.safetensors");
    let e = model_file::write_atomically(path, b"model").unwrap_err();
    let message = e.to_string();
    assert!(message.starts_with("/proc/m.safetensors: "), "{message}");
    assert!(!message.contains(".partial"), "{message}");
}

/// `predict --out -` writes the submission to stdout and nothing else there (the notes go to
/// stderr); `--probabilities` adds each digit's softmax probability, `p0` to `p9`, whose
/// largest is the row's label.
#[test]
fn predict_writes_to_stdout_and_gives_probabilities() {
    let (dir, _) = fixture();
    let d = dir.path();
    assert_success(&train_and_save(d, "cpu", "m.safetensors", &[]));
    let args = ["predict", "--model", "m.safetensors", "--data", "u.csv"];
    let cpu = ["--backend", "cpu"];
    assert_success(&run_in(d, &[&args[..], &["--out", "f.csv"], &cpu].concat()));
    let to_file = std::fs::read_to_string(d.join("f.csv")).unwrap();
    let piped = run_in(d, &[&args[..], &["--out", "-"], &cpu].concat());
    assert_success(&piped);
    assert_eq!(stdout(&piped), to_file, "stdout is the CSV alone");
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(stderr.contains("classified 100 images"), "{stderr}");
    assert!(!d.join("-").exists(), "a file named -");

    let with = run_in(
        d,
        &[&args[..], &["--out", "-", "--probabilities"], &cpu].concat(),
    );
    assert_success(&with);
    let text = stdout(&with);
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("ImageId,Label,p0,p1,p2,p3,p4,p5,p6,p7,p8,p9")
    );
    let labels = read_submission(&d.join("f.csv"), 100);
    let mut rows = 0;
    for (i, line) in lines.enumerate() {
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(fields.len(), 12, "{line}");
        assert_eq!(fields[0], (i + 1).to_string());
        assert_eq!(fields[1], labels[i].to_string(), "{line}");
        let p: Vec<f64> = fields[2..].iter().map(|f| f.parse().unwrap()).collect();
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-4, "{line}");
        let top = (0..10).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap();
        assert_eq!(p[top], p[labels[i] as usize], "{line}");
        rows += 1;
    }
    assert_eq!(rows, 100);
}
