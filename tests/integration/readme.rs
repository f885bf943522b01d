//! The README cannot drift from the binary: every command in its ` ```sh ` blocks runs here, as
//! written, in order, in one directory that holds the files its recipes name (`mnist.npz`,
//! `MNIST/raw/…`, the parquet files, `train.csv`, `digits/`, `digit.png`), made small from the
//! embedded digits. Each must succeed (status 0) and say nothing on stderr but `note:` lines.
//!
//! `cargo run --release -- ARGS` runs the test's binary with ARGS; `./test.sh` (this suite) is
//! the one command not run. Blocks fenced as ` ```console ` show commands that do not end by
//! themselves or take minutes (`serve`, the long accuracy runs); they are not run, and this
//! test checks that every command of the README is in one kind of block or the other.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use mnist_gpu::data::{write_csv, write_idx, Dataset, EMBEDDED_TEST, EMBEDDED_TRAIN};

/// The files the README's recipes name, in `dir`: the producers' own files from
/// `tests/fixtures/` (NumPy's `mnist.npz` and `datasets`' parquet, 1,200 training and 200 test
/// digits, enough for the default dev split; pictures of a 7 by PIL) and, written here from
/// the same embedded digits, torchvision's IDX files, Kaggle's CSVs and an ImageFolder.
fn make_files(dir: &Path) {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let copy = |from: &str, to: &str| {
        std::fs::copy(fixtures.join(from), dir.join(to)).unwrap_or_else(|e| panic!("{from}: {e}"));
    };
    for name in [
        "mnist.npz",
        "train-00000-of-00001.parquet",
        "test-00000-of-00001.parquet",
    ] {
        copy(&format!("readme/{name}"), name);
    }
    copy("pictures/seven.jpg", "digit.jpg");
    copy("pictures/seven-rgb.png", "digit.png");

    let first = |set: &Dataset, n: usize| set.subset(&(0..n).collect::<Vec<_>>());
    let (train, test) = (
        first(&EMBEDDED_TRAIN.load().unwrap(), 1200),
        first(&EMBEDDED_TEST.load().unwrap(), 200),
    );
    image_folder(&dir.join("digits/train"), &train);
    image_folder(&dir.join("digits/test"), &test);
    let raw = dir.join("MNIST/raw");
    std::fs::create_dir_all(&raw).unwrap();
    write_idx(
        &train,
        &raw.join("train-images-idx3-ubyte"),
        &raw.join("train-labels-idx1-ubyte"),
    )
    .unwrap();
    write_idx(
        &test,
        &raw.join("t10k-images-idx3-ubyte"),
        &raw.join("t10k-labels-idx1-ubyte"),
    )
    .unwrap();
    write_csv(&train, &dir.join("train.csv"), true).unwrap();
    let mut unlabelled = test;
    unlabelled.labels = None;
    write_csv(&unlabelled, &dir.join("test.csv"), true).unwrap();
}

/// `data` as torchvision's ImageFolder: `root/<label>/<index>.png`.
fn image_folder(root: &Path, data: &Dataset) {
    for (i, &label) in data.labels.as_ref().unwrap().iter().enumerate() {
        let folder = root.join(label.to_string());
        std::fs::create_dir_all(&folder).unwrap();
        image::GrayImage::from_raw(28, 28, data.image(i).to_vec())
            .unwrap()
            .save(folder.join(format!("{i:04}.png")))
            .unwrap();
    }
}

/// The README's commands, block by block: (fence info, the command lines).
fn blocks(readme: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.strip_prefix("```") else {
            continue;
        };
        let body: Vec<String> = lines
            .by_ref()
            .take_while(|l| !l.starts_with("```"))
            .map(str::to_string)
            .collect();
        out.push((info.trim().to_string(), body));
    }
    out
}

/// A README command as arguments of the binary; None for `./test.sh`.
fn arguments(command: &str) -> Option<Vec<String>> {
    if command == "./test.sh" {
        return None;
    }
    let rest = command
        .strip_prefix("cargo run --release")
        .unwrap_or_else(|| {
            panic!("a README command that is not `cargo run --release …`: {command}")
        });
    let rest = rest.trim_start();
    let rest = rest.strip_prefix("--").unwrap_or(rest);
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// The longest a README command may take here (they are meant to end in seconds; the
/// machine running the tests may be slow and busy).
const PATIENCE: Duration = Duration::from_secs(120);

fn run(dir: &Path, args: &[String]) -> Output {
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_mnist-gpu"))
        .args(args)
        .current_dir(dir)
        .env("NODEVICE_SELECT", "1")
        .output()
        .expect("the binary runs");
    assert!(
        start.elapsed() < PATIENCE,
        "`{}` took {:?}: a README ```sh command should end in seconds",
        args.join(" "),
        start.elapsed()
    );
    out
}

#[test]
fn every_sh_command_of_the_readme_runs_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let dir = tempfile::tempdir().unwrap();
    make_files(dir.path());
    let mut ran = 0;
    for (info, body) in blocks(&readme) {
        if info != "sh" {
            continue;
        }
        for command in body.iter().filter(|l| !l.trim().is_empty()) {
            let Some(args) = arguments(command.trim()) else {
                continue;
            };
            let out = run(dir.path(), &args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success(),
                "README command `{command}` failed ({}): {stderr}",
                out.status
            );
            let noise: Vec<&str> = stderr
                .lines()
                .filter(|l| !l.starts_with("note:") && !l.trim().is_empty())
                .collect();
            assert!(
                noise.is_empty(),
                "README command `{command}` wrote to stderr: {noise:?}"
            );
            ran += 1;
        }
    }
    assert!(ran >= 10, "only {ran} README commands ran");
}

/// Every command the README shows is either run above (` ```sh `) or fenced as
/// ` ```console ` (servers, long runs); output shown (` ``` ` with `$ `) is the example run,
/// and the code blocks of other languages are snippets for their own tools.
#[test]
fn every_readme_command_is_run_or_marked_as_not_run() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    for (info, body) in blocks(&readme) {
        match info.as_str() {
            "sh" | "console" => {
                for command in body.iter().filter(|l| !l.trim().is_empty()) {
                    assert!(
                        command == "./test.sh" || command.starts_with("cargo run --release"),
                        "README ```{info} line that is not a command of ours: {command}"
                    );
                }
            }
            "" => assert!(
                body.first().is_some_and(|l| l.starts_with("$ ")),
                "a README block with no language that is not an example run: {body:?}"
            ),
            "python" | "js" | "javascript" => {}
            other => {
                panic!("a README block fenced as ```{other}: mark it sh, console or a language")
            }
        }
    }
}
