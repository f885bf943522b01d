//! Data as people hold it (issue 28): Keras's `mnist.npz`, `.npy` pairs, Hugging Face parquet,
//! torchvision ImageFolders and single pictures. Each form reads to exactly the bytes and labels
//! of the same digits in IDX, and trains exactly as IDX does (the CPU is bit-reproducible); a
//! broken file is refused in one line naming it; a picture of a digit on paper is classified as
//! its digit; a bright background is flagged.
//!
//! The committed fixtures in `tests/fixtures/` were made by the real producers (NumPy,
//! `datasets`, PIL) with `tests/fixtures/make_fixtures.py`: the first 200 digits of the embedded
//! training file and the first 100 of the embedded test file.

use std::io::Write;
use std::path::{Path, PathBuf};

use mnist_gpu::data::{
    self, open, picture, write_csv, write_idx, DataError, Dataset, Part, EMBEDDED_TEST,
    EMBEDDED_TRAIN, PIXELS,
};
use mnist_gpu::model_file;
use serde_json::Value;

use crate::common::output::{
    assert_one_line_error, assert_success, json_summary, run_in, stderr, stdout,
};

const TRAIN: usize = 200;
const TEST: usize = 100;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The first `n` digits of an embedded set.
fn first(set: &mnist_gpu::data::Embedded, n: usize) -> Dataset {
    set.load().unwrap().subset(&(0..n).collect::<Vec<_>>())
}

fn train_digits() -> Dataset {
    first(&EMBEDDED_TRAIN, TRAIN)
}

fn test_digits() -> Dataset {
    first(&EMBEDDED_TEST, TEST)
}

/// Same images and labels, byte for byte.
fn assert_same(what: &str, read: &Dataset, expected: &Dataset) {
    assert_eq!(read.len(), expected.len(), "{what}: image count");
    let differ = (0..read.len()).find(|&i| read.image(i) != expected.image(i));
    assert_eq!(differ, None, "{what}: the first image that differs");
    assert_eq!(read.labels, expected.labels, "{what}: labels");
}

/// The one-line error of a read that must fail.
fn error_of<T: std::fmt::Debug>(result: Result<T, DataError>) -> String {
    let message = result.expect_err("expected an error").to_string();
    assert!(!message.contains('\n'), "not one line: {message:?}");
    message
}

fn assert_mentions(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(message.contains(part), "should mention {part:?}: {message}");
    }
}

/// A 28×28 grey image as PNG bytes (the `image` crate's encoder).
fn png(pixels: &[u8], width: u32, height: u32) -> Vec<u8> {
    let picture = image::GrayImage::from_raw(width, height, pixels.to_vec()).unwrap();
    let mut bytes = std::io::Cursor::new(Vec::new());
    picture
        .write_to(&mut bytes, image::ImageOutputFormat::Png)
        .unwrap();
    bytes.into_inner()
}

/// An ImageFolder of `data` in `root/<label>/<index>.png`.
fn write_folder(root: &Path, data: &Dataset) {
    let labels = data.labels.as_ref().unwrap();
    for (i, &label) in labels.iter().enumerate() {
        let dir = root.join(label.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{i:04}.png")), png(data.image(i), 28, 28)).unwrap();
    }
}

/// The images of `data`, each in the folder order (by label, then index) that ImageFolder reads.
fn in_folder_order(data: &Dataset) -> Dataset {
    let labels = data.labels.as_ref().unwrap();
    let mut order: Vec<usize> = (0..data.len()).collect();
    order.sort_by_key(|&i| (labels[i], i));
    data.subset(&order)
}

// ---------------------------------------------------------------------------------------------
// Each form reads to the IDX bytes
// ---------------------------------------------------------------------------------------------

#[test]
fn keras_npz_and_npy_read_as_their_idx_digits() {
    let npz = fixture("mnist.npz");
    let train = open(&npz, Part::Train).unwrap().dataset;
    assert_same("x_train", &train, &train_digits());
    assert!(
        train.source.ends_with("mnist.npz (x_train, y_train)"),
        "{}",
        train.source
    );
    let test = open(&npz, Part::Test).unwrap().dataset;
    assert_same("x_test", &test, &test_digits());
    assert_eq!(data::load(&npz).unwrap(), train);

    let beside = data::test_beside(&npz).unwrap();
    assert_eq!(beside.path, npz);
    assert!(
        beside.what.starts_with("x_test, y_test of "),
        "{}",
        beside.what
    );

    // x_train.npy (50, 784) uint8 with y_train.npy (int64) beside it.
    let npy = open(&fixture("npy/x_train.npy"), Part::Train)
        .unwrap()
        .dataset;
    assert_same("npy", &npy, &first(&EMBEDDED_TRAIN, 50));
    assert_eq!(
        data::files_of(&fixture("npy/x_train.npy")),
        vec![fixture("npy/x_train.npy"), fixture("npy/y_train.npy")]
    );
}

#[test]
fn hugging_face_parquet_reads_as_its_idx_digits() {
    // The training split as datasets 5 writes it (pictures uncompressed, labels in snappy), the
    // test split as the Hub's files are (snappy throughout).
    let train = fixture("hf/train-00000-of-00001.parquet");
    let read = open(&train, Part::Train).unwrap();
    assert_same("parquet train", &read.dataset, &train_digits());
    assert!(read.pictures.iter().all(|p| !p.inverted));
    let test = fixture("hf/test-00000-of-00001.parquet");
    assert_same("parquet test", &data::load(&test).unwrap(), &test_digits());
    assert_eq!(data::test_beside(&train).unwrap().path, test);
    assert_eq!(data::test_beside(&test), None);
}

#[test]
fn image_folders_read_as_their_idx_digits() {
    // PIL's PNGs, named by their index in the IDX file: train/ has 3 of each digit, test/ 2.
    let root = fixture("folder");
    for (part, set, count) in [
        (Part::Train, &EMBEDDED_TRAIN, TRAIN),
        (Part::Test, &EMBEDDED_TEST, TEST),
    ] {
        let read = open(&root, part).unwrap();
        let expected = first(set, count);
        let indices: Vec<usize> = read
            .pictures
            .iter()
            .map(|p| {
                let stem = Path::new(&p.name).file_stem().unwrap().to_str().unwrap();
                stem.parse().unwrap()
            })
            .collect();
        assert_eq!(indices.len(), 10 * if part == Part::Train { 3 } else { 2 });
        assert_same("folder", &read.dataset, &expected.subset(&indices));
        assert!(read.notes.is_empty(), "{:?}", read.notes);
    }
    assert_eq!(data::test_beside(&root).unwrap().path, root.join("test"));
    // A test set must be labelled: unlabelled IDX or pictures beside are not one.
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("train-images-idx3-ubyte");
    write_idx(
        &train_digits(),
        &images,
        &dir.path().join("train-labels-idx1-ubyte"),
    )
    .unwrap();
    write_idx(
        &test_digits(),
        &dir.path().join("t10k-images-idx3-ubyte"),
        &dir.path().join("x"),
    )
    .unwrap();
    assert_eq!(data::test_beside(&images), None);
    std::fs::create_dir_all(dir.path().join("train/0")).unwrap();
    std::fs::create_dir(dir.path().join("test")).unwrap();
    assert_eq!(data::test_beside(dir.path()), None);
    assert_eq!(
        data::test_beside(&root.join("train")).unwrap().path,
        root.join("test")
    );

    // Rust's PNGs of all 200 digits, and an unlabelled folder of loose pictures.
    let dir = tempfile::tempdir().unwrap();
    write_folder(dir.path(), &train_digits());
    let read = data::load(dir.path()).unwrap();
    assert_same("folder", &read, &in_folder_order(&train_digits()));
    let loose = dir.path().join("3");
    let read = data::load(&loose).unwrap();
    assert_eq!(read.labels, None);
    let threes = train_digits()
        .labels
        .unwrap()
        .iter()
        .filter(|&&l| l == 3)
        .count();
    assert_eq!(read.len(), threes);
}

#[test]
fn class_folders_are_numbered_as_torchvision_numbers_them_except_digits() {
    let dir = tempfile::tempdir().unwrap();
    let digits = train_digits();
    let put = |class: &str, i: usize| {
        let folder = dir.path().join(class);
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(
            folder.join(format!("{i}.png")),
            png(digits.image(i), 28, 28),
        )
        .unwrap();
    };
    // Digit names: their digits, even when some are missing.
    put("7", 0);
    put("3", 1);
    let read = open(dir.path(), Part::Train).unwrap();
    assert_eq!(read.dataset.labels, Some(vec![3, 7]));

    // Other names: sorted, numbered from 0, with a line saying how.
    let named = tempfile::tempdir().unwrap();
    for (class, i) in [("trouser", 2), ("bag", 3), ("coat", 4)] {
        let folder = named.path().join(class);
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("a.png"), png(digits.image(i), 28, 28)).unwrap();
    }
    // Thumbnails caches and hidden files are no pictures, and are skipped.
    std::fs::write(named.path().join("coat/.DS_Store"), b"junk").unwrap();
    std::fs::write(named.path().join("bag/Thumbs.db"), b"junk").unwrap();
    let read = open(named.path(), Part::Train).unwrap();
    assert_eq!(read.dataset.labels, Some(vec![0, 1, 2]));
    assert_mentions(&read.notes.join(" "), &["bag=0", "coat=1", "trouser=2"]);
}

#[test]
fn a_28_by_28_mnist_png_is_taken_byte_for_byte() {
    let bytes = std::fs::read(fixture("pictures/mnist-2.png")).unwrap();
    let prepared = picture::prepare(&bytes, "mnist-2.png").unwrap();
    assert!(prepared.as_is && !prepared.inverted);
    assert_eq!(prepared.pixels, test_digits().image(1));
}

#[test]
fn pictures_in_every_colour_mode_prepare_alike() {
    let prepare = |name: &str| {
        let bytes = std::fs::read(fixture(&format!("pictures/{name}"))).unwrap();
        picture::prepare(&bytes, name).unwrap()
    };
    let grey = prepare("seven-grey.png");
    assert!(grey.inverted && !grey.as_is);
    for name in [
        "seven-rgb.png",
        "seven-palette.png",
        "seven-16bit.png",
        "seven-transparent.png",
    ] {
        let other = prepare(name);
        assert!(other.inverted, "{name}");
        let worst = (0..PIXELS)
            .map(|i| grey.pixels[i].abs_diff(other.pixels[i]))
            .max();
        // The palette's greys are quantized by PIL; the others are the same greys exactly.
        let allowed = if name.contains("palette") { 8 } else { 0 };
        assert!(worst <= Some(allowed), "{name}: differs by {worst:?}");
    }
    // A phone's photo, stored on its side: turned upright by its EXIF orientation.
    let phone = prepare("seven-exif6.jpg");
    let upright = prepare("seven.jpg");
    let mean_difference = |a: &[u8], b: &[u8]| -> f64 {
        (0..PIXELS)
            .map(|i| f64::from(a[i].abs_diff(b[i])))
            .sum::<f64>()
            / PIXELS as f64
    };
    let turned = mean_difference(&phone.pixels, &upright.pixels);
    assert!(
        turned < 4.0,
        "the phone's photo differs by {turned} on average"
    );
    let jpeg = prepare("seven.jpg");
    let mean: f64 = (0..PIXELS)
        .map(|i| f64::from(grey.pixels[i].abs_diff(jpeg.pixels[i])))
        .sum::<f64>()
        / PIXELS as f64;
    assert!(
        jpeg.inverted && mean < 4.0,
        "the JPEG differs by {mean} on average"
    );

    // MNIST's frame: the ink fits 20×20 and its centre of mass is at the centre.
    let ink: Vec<(usize, f64)> = (0..PIXELS)
        .filter(|&i| grey.pixels[i] > 0)
        .map(|i| (i, f64::from(grey.pixels[i])))
        .collect();
    let (rows, cols): (Vec<usize>, Vec<usize>) = ink.iter().map(|&(i, _)| (i / 28, i % 28)).unzip();
    let span = |v: &[usize]| v.iter().max().unwrap() - v.iter().min().unwrap() + 1;
    assert_eq!(span(&rows).max(span(&cols)), 20);
    let mass: f64 = ink.iter().map(|p| p.1).sum();
    for (axis, coordinate) in [("x", 28usize), ("y", 1)] {
        let centre: f64 = ink
            .iter()
            .map(|&(i, v)| ((i / coordinate) % 28) as f64 * v)
            .sum::<f64>()
            / mass;
        assert!(
            (centre - 13.5).abs() <= 0.5,
            "{axis}: centre of mass {centre}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Each form trains as IDX
// ---------------------------------------------------------------------------------------------

/// A short CPU run on `train` (with `extra`), its `--json` summary and the saved model.
fn short_run(dir: &Path, train: &str, extra: &[&str]) -> (Value, mnist_gpu::model::Model, String) {
    let save = format!("{}.safetensors", train.replace(['/', '.'], "-"));
    let mut args = vec![
        "--train",
        train,
        "--backend",
        "cpu",
        "--dev-size",
        "50",
        "--iterations",
        "30",
        "--hidden",
        "16",
        "--json",
        "--save",
        &save,
    ];
    args.extend_from_slice(extra);
    let out = run_in(dir, &args);
    assert_success(&out);
    let model = model_file::load(&dir.join(&save)).unwrap().model;
    (json_summary(&out), model, stdout(&out))
}

/// The same 200 training and 100 test digits in `d` in every form: IDX (`idx/`, t10k beside),
/// Keras's npz, Hugging Face parquet (`hf/`), an ImageFolder (`folder/`), CSV as `train.txt`
/// with semicolons and a tab-separated `test.tsv`.
fn write_every_form(d: &Path) {
    let (train, test) = (train_digits(), test_digits());
    std::fs::create_dir(d.join("idx")).unwrap();
    write_idx(
        &train,
        &d.join("idx/train-images-idx3-ubyte.gz"),
        &d.join("idx/train-labels-idx1-ubyte.gz"),
    )
    .unwrap();
    write_idx(
        &test,
        &d.join("idx/t10k-images-idx3-ubyte.gz"),
        &d.join("idx/t10k-labels-idx1-ubyte.gz"),
    )
    .unwrap();
    std::fs::copy(fixture("mnist.npz"), d.join("mnist.npz")).unwrap();
    std::fs::create_dir(d.join("hf")).unwrap();
    for split in ["train", "test"] {
        let name = format!("{split}-00000-of-00001.parquet");
        std::fs::copy(fixture(&format!("hf/{name}")), d.join("hf").join(&name)).unwrap();
    }
    // An ImageFolder: in folder order, which is another order of the same digits.
    write_folder(&d.join("folder/train"), &train);
    write_folder(&d.join("folder/test"), &test);
    // CSV as .txt with semicolons, and a tab-separated test file.
    write_csv(&train, &d.join("train.csv"), true).unwrap();
    let text = std::fs::read_to_string(d.join("train.csv")).unwrap();
    std::fs::write(d.join("train.txt"), text.replace(',', ";")).unwrap();
    write_csv(&test, &d.join("test.csv"), false).unwrap();
    let text = std::fs::read_to_string(d.join("test.csv")).unwrap();
    std::fs::write(d.join("test.tsv"), text.replace(',', "\t")).unwrap();
}

#[test]
fn every_form_trains_exactly_as_idx() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_every_form(d);
    let (train, test) = (train_digits(), test_digits());

    let (idx, idx_model, said) = short_run(d, "idx/train-images-idx3-ubyte.gz", &[]);
    assert_mentions(
        &said,
        &[
            "testing on idx/t10k-images-idx3-ubyte.gz",
            "--test none leaves it out",
        ],
    );
    assert_eq!(idx["test"], "idx/t10k-images-idx3-ubyte.gz");
    assert_eq!(
        (idx["train_samples"].as_u64(), idx["test_samples"].as_u64()),
        (Some(150), Some(100))
    );
    let same_as_idx = |what: &str, train: &str, extra: &[&str], test_name: &str| {
        let (summary, model, _) = short_run(d, train, extra);
        for key in [
            "final_loss",
            "dev_accuracy",
            "test_accuracy",
            "test_loss",
            "test_samples",
        ] {
            assert_eq!(summary[key], idx[key], "{what}: {key}");
        }
        assert_eq!(summary["test"], test_name, "{what}");
        model
    };
    assert_eq!(same_as_idx("npz", "mnist.npz", &[], "mnist.npz"), idx_model);
    assert_eq!(
        same_as_idx(
            "parquet",
            "hf/train-00000-of-00001.parquet",
            &[],
            "hf/test-00000-of-00001.parquet"
        ),
        idx_model
    );
    assert_eq!(
        same_as_idx("csv", "train.txt", &["--test", "test.tsv"], "test.tsv"),
        idx_model
    );
    // The folder holds the digits in another order: a run on IDX files in that order matches it.
    std::fs::create_dir(d.join("sorted")).unwrap();
    write_idx(
        &in_folder_order(&train),
        &d.join("sorted/train-images-idx3-ubyte"),
        &d.join("sorted/train-labels-idx1-ubyte"),
    )
    .unwrap();
    write_idx(
        &in_folder_order(&test),
        &d.join("sorted/t10k-images-idx3-ubyte"),
        &d.join("sorted/t10k-labels-idx1-ubyte"),
    )
    .unwrap();
    let (sorted, sorted_model, _) = short_run(d, "sorted/train-images-idx3-ubyte", &[]);
    let (folder, folder_model, said) = short_run(d, "folder", &[]);
    assert_mentions(&said, &["testing on folder/test"]);
    for key in ["final_loss", "dev_accuracy", "test_accuracy"] {
        assert_eq!(folder[key], sorted[key], "folder: {key}");
    }
    assert_eq!(folder_model, sorted_model);
}

#[test]
fn pairing_opts_out_and_survives_resume() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::copy(fixture("mnist.npz"), d.join("mnist.npz")).unwrap();
    let (summary, _, said) = short_run(d, "mnist.npz", &["--test", "none"]);
    assert!(!said.contains("testing on"), "{said}");
    assert_eq!(summary["test_samples"], 0);
    assert_eq!(summary["test"], Value::Null);

    // A checkpoint of a paired run resumes with its test set, or without it when asked.
    let run = |extra: &[&str]| {
        let mut args = vec![
            "--backend",
            "cpu",
            "--dev-size",
            "50",
            "--batch-size",
            "50",
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = run_in(d, &args);
        assert_success(&out);
        json_summary(&out)
    };
    let first = run(&[
        "--train",
        "mnist.npz",
        "--epochs",
        "1",
        "--checkpoint",
        "c.safetensors",
    ]);
    assert_eq!(first["test_samples"], 100);
    let resumed = run(&["--resume", "c.safetensors", "--epochs", "2"]);
    assert_eq!(
        (resumed["test"].as_str(), resumed["test_samples"].as_u64()),
        (Some("mnist.npz"), Some(100))
    );
    let without = run(&[
        "--resume",
        "c.safetensors",
        "--epochs",
        "3",
        "--test",
        "none",
    ]);
    assert_eq!(without["test_samples"], 0);
}

// ---------------------------------------------------------------------------------------------
// Pictures and bright backgrounds in predict and eval
// ---------------------------------------------------------------------------------------------

/// Trains a small model on the embedded digits into `dir/m.safetensors`.
fn trained_model(dir: &Path) -> PathBuf {
    let out = run_in(
        dir,
        &[
            "--backend",
            "cpu",
            "--batch-size",
            "64",
            "--epochs",
            "3",
            "--hidden",
            "64",
            "--save",
            "m.safetensors",
        ],
    );
    assert_success(&out);
    dir.join("m.safetensors")
}

/// A digit drawn big on white paper: scaled up to `side` (nearest pixel) and inverted.
fn on_paper(pixels: &[u8], side: usize) -> Vec<u8> {
    (0..side * side)
        .map(|i| {
            let (x, y) = (i % side * 28 / side, i / side * 28 / side);
            255 - pixels[y * 28 + x]
        })
        .collect()
}

#[test]
fn photos_of_digits_are_classified_as_their_digits() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    trained_model(d);
    let test = test_digits();
    let mut names = Vec::new();
    for i in 0..20 {
        let name = format!("digit{i:02}.png");
        std::fs::write(d.join(&name), png(&on_paper(test.image(i), 200), 200, 200)).unwrap();
        names.push(name);
    }
    // The same digits as they are in MNIST, to compare with.
    write_csv(
        &test.subset(&(0..20).collect::<Vec<_>>()),
        &d.join("digits.csv"),
        true,
    )
    .unwrap();
    let out = run_in(
        d,
        &[
            &["predict", "--model", "m.safetensors", "--backend", "cpu"][..],
            &names.iter().map(String::as_str).collect::<Vec<_>>(),
        ]
        .concat(),
    );
    assert_success(&out);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("digit")).collect();
    assert_eq!(lines.len(), 20, "{text}");
    let labels = test.labels.as_ref().unwrap();
    // `digit00.png: 7 (99.1% confident; light background, inverted)`
    let predicted: Vec<u8> = lines.iter().map(|l| l.as_bytes()[13] - b'0').collect();
    for line in &lines {
        assert!(
            line.ends_with("confident; light background, inverted)"),
            "{line}"
        );
    }
    assert_eq!(predicted[0], labels[0], "the 7 on paper: {}", lines[0]);
    let right = predicted.iter().zip(labels).filter(|(p, l)| p == l).count();
    assert!(
        right >= 18,
        "{right} of 20 digits on paper classified as their label:\n{text}"
    );

    // One picture through --data: the same line.
    let out = run_in(
        d,
        &[
            "predict",
            "--model",
            "m.safetensors",
            "--backend",
            "cpu",
            "--data",
            "digit00.png",
        ],
    );
    assert_success(&out);
    assert!(
        stdout(&out).lines().any(|l| l == lines[0]),
        "{}",
        stdout(&out)
    );
}

#[test]
fn bright_backgrounds_are_flagged() {
    // The rule on every embedded digit: none flagged; inverted, all.
    for set in [&EMBEDDED_TRAIN, &EMBEDDED_TEST] {
        let digits = set.load().unwrap();
        assert_eq!(
            digits.bright_backgrounds(),
            Vec::<usize>::new(),
            "{}",
            set.file
        );
        let inverted = Dataset {
            images: digits.images.iter().map(|v| 255 - v).collect(),
            ..digits.clone()
        };
        assert_eq!(
            inverted.bright_backgrounds().len(),
            digits.len(),
            "{}",
            set.file
        );
    }
    // In the CLI: one line on stderr, counting and naming the first.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    trained_model(d);
    let mut data = test_digits();
    for i in [3, 5, 6] {
        let image = &mut data.images[i * PIXELS..(i + 1) * PIXELS];
        image.iter_mut().for_each(|v| *v = 255 - *v);
    }
    write_csv(&data, &d.join("mixed.csv"), true).unwrap();
    for command in ["predict", "eval"] {
        let out = run_in(
            d,
            &[
                command,
                "--model",
                "m.safetensors",
                "--backend",
                "cpu",
                "--data",
                "mixed.csv",
            ],
        );
        assert_success(&out);
        let warnings: Vec<String> = stderr(&out)
            .lines()
            .filter(|l| l.contains("bright background"))
            .map(str::to_string)
            .collect();
        assert_eq!(warnings.len(), 1, "{command}: {warnings:?}");
        assert_mentions(
            &warnings[0],
            &[
                "warning: 3 of 100 images of mixed.csv",
                "(the first: image 4)",
                "invert",
            ],
        );
    }
    std::fs::copy(fixture("mnist.npz"), d.join("mnist.npz")).unwrap();
    let out = run_in(
        d,
        &[
            "eval",
            "--model",
            "m.safetensors",
            "--backend",
            "cpu",
            "--data",
            "mnist.npz",
        ],
    );
    assert_success(&out);
    assert!(!stderr(&out).contains("bright"), "{}", stderr(&out));
}

#[test]
fn eval_says_what_the_model_was_trained_on() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::copy(fixture("mnist.npz"), d.join("mnist.npz")).unwrap();
    let out = run_in(
        d,
        &[
            "--train",
            "mnist.npz",
            "--backend",
            "cpu",
            "--dev-size",
            "50",
            "--iterations",
            "5",
            "--save",
            "m.safetensors",
        ],
    );
    assert_success(&out);
    let note = |args: &[&str]| -> Vec<String> {
        let out = run_in(
            d,
            &[
                &["eval", "--model", "m.safetensors", "--backend", "cpu"][..],
                args,
            ]
            .concat(),
        );
        assert_success(&out);
        stdout(&out)
            .lines()
            .filter(|l| l.starts_with("note: the model was trained on"))
            .map(str::to_string)
            .collect()
    };
    let embedded = note(&[]);
    assert_eq!(embedded.len(), 1, "{embedded:?}");
    assert_mentions(&embedded[0], &["mnist.npz", "embedded MNIST digits"]);
    write_idx(
        &test_digits(),
        &d.join("t10k-images-idx3-ubyte"),
        &d.join("t10k-labels-idx1-ubyte"),
    )
    .unwrap();
    let other = note(&["--data", "t10k-images-idx3-ubyte"]);
    assert_mentions(
        &other.join(""),
        &["mnist.npz (NumPy .npz)", "the data here is IDX"],
    );
    assert_eq!(note(&["--data", "mnist.npz"]), Vec::<String>::new());
}

#[test]
fn predict_takes_pictures_and_folders_and_refuses_datasets_among_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    trained_model(d);
    let folder = fixture("folder/test").display().to_string();
    let seven = fixture("pictures/seven.jpg").display().to_string();
    let out = run_in(
        d,
        &[
            "predict",
            "--model",
            "m.safetensors",
            "--backend",
            "cpu",
            &seven,
            &folder,
            "--out",
            "p.csv",
        ],
    );
    assert_success(&out);
    let text = stdout(&out);
    assert!(
        text.lines()
            .any(|l| l.starts_with(&format!("{seven}: 7 ("))),
        "{text}"
    );
    let labelled = text
        .lines()
        .filter(|l| l.contains("confident), label "))
        .count();
    assert_eq!(
        labelled, 0,
        "a picture without a label mixed in: no labels:\n{text}"
    );
    let rows = std::fs::read_to_string(d.join("p.csv")).unwrap();
    assert_eq!(rows.lines().count(), 1 + 1 + 20);

    // A folder of class folders alone: each line with its label, and the accuracy.
    let out = run_in(
        d,
        &[
            "predict",
            "--model",
            "m.safetensors",
            "--backend",
            "cpu",
            &folder,
        ],
    );
    let text = stdout(&out);
    assert_eq!(
        text.lines().filter(|l| l.contains(", label ")).count(),
        20,
        "{text}"
    );
    assert_mentions(&text, &["accuracy against the folders' labels"]);

    write_csv(&test_digits(), &d.join("t.csv"), true).unwrap();
    let line = assert_one_line_error(&run_in(
        d,
        &[
            "predict",
            "--model",
            "m.safetensors",
            "--backend",
            "cpu",
            "t.csv",
        ],
    ));
    assert_mentions(&line, &["t.csv", "not a picture", "--data"]);
}

// ---------------------------------------------------------------------------------------------
// Broken files: one line naming the file
// ---------------------------------------------------------------------------------------------

/// A `.npy` (version 1) of `body` with a descr and a shape.
fn npy(descr: &str, shape: &str, body: &[u8]) -> Vec<u8> {
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (11 + header.len()) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(body);
    bytes
}

/// Named `.npy` files: an archive's members.
type Arrays<'a> = Vec<(&'a str, Vec<u8>)>;

/// A `.npz` (stored, as np.savez writes) of named `.npy` arrays.
fn npz(path: &Path, arrays: &[(&str, Vec<u8>)]) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, bytes) in arrays {
        zip.start_file(*name, options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
}

#[test]
fn broken_numpy_files_are_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let images = &train_digits().images[..3 * PIXELS];
    let labels = npy("|u1", "(3,)", &[5, 0, 4]);
    let good = npy("|u1", "(3, 28, 28)", images);
    let whole = std::fs::read(fixture("mnist.npz")).unwrap();
    let cut = d.join("cut.npz");
    std::fs::write(&cut, &whole[..whole.len() / 2]).unwrap();
    assert_mentions(
        &error_of(data::load(&cut)),
        &["cut.npz: npz: ", "cut short"],
    );

    let floats: Vec<u8> = images
        .iter()
        .flat_map(|&v| (f32::from(v) / 255.0).to_le_bytes())
        .collect();
    // The first pixel neither 0 nor 255 is the first that is no whole number once scaled.
    let grey = images.iter().position(|&v| v != 0 && v != 255).unwrap();
    let scaled = format!(
        "x: element [{}, {}, {}] is",
        grey / PIXELS,
        grey % PIXELS / 28,
        grey % 28
    );
    let cases: [(&str, Arrays, &[&str]); 6] = [
        (
            "dtype",
            vec![
                ("x_train.npy", npy("<c8", "(3, 28, 28)", &[0; 8])),
                ("y_train.npy", labels.clone()),
            ],
            &["x_train: ", "dtype \"<c8\""],
        ),
        (
            "shape",
            vec![
                ("x_train.npy", npy("|u1", "(3, 32, 32)", &[0; 3072])),
                ("y_train.npy", labels.clone()),
            ],
            &["x_train: ", "(3, 32, 32) uint8"],
        ),
        (
            "keys",
            vec![("a.npy", good.clone()), ("b.npy", labels.clone())],
            &[
                "npz: no images array among a (3, 28, 28) uint8, b (3,) uint8",
                "x_train",
            ],
        ),
        (
            "scaled",
            vec![
                ("x.npy", npy("<f4", "(3, 28, 28)", &floats)),
                ("y.npy", labels.clone()),
            ],
            &[&scaled, "scaled to 0-1", "* 255"],
        ),
        (
            "count",
            vec![
                ("images.npy", good.clone()),
                ("labels.npy", npy("|u1", "(2,)", &[1, 2])),
            ],
            &["2 labels for 3 images"],
        ),
        (
            "torch",
            vec![("archive/data.pkl", vec![0x80, 2])],
            &["no .npy arrays", "archive/data.pkl", "PyTorch"],
        ),
    ];
    for (name, arrays, parts) in cases {
        let path = d.join(format!("{name}.npz"));
        npz(&path, &arrays);
        let message = error_of(data::load(&path));
        assert_mentions(&message, &[&format!("{name}.npz: ")]);
        assert_mentions(&message, parts);
    }
}

#[test]
fn broken_npy_pairs_are_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = npy("|u1", "(3, 28, 28)", &train_digits().images[..3 * PIXELS]);
    // x_train without y_train: unlabelled, which training refuses.
    npz(&d.join("alone.npz"), &[("x_train.npy", good.clone())]);
    let alone = data::load(&d.join("alone.npz")).unwrap();
    assert_mentions(
        &error_of(alone.require_labels()),
        &["alone.npz (x_train): labels: ", "y_train"],
    );

    // A .npy pair with a bad label; a .npy of labels passed as the images.
    std::fs::write(d.join("x_bad.npy"), &good).unwrap();
    std::fs::write(
        d.join("y_bad.npy"),
        npy(
            "<i8",
            "(3,)",
            &[3i64, 12, 1]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>(),
        ),
    )
    .unwrap();
    assert_mentions(
        &error_of(data::load(&d.join("x_bad.npy"))),
        &["y_bad.npy: npy: element [1]: label 12 is outside 0-9"],
    );
    assert_mentions(
        &error_of(data::load(&d.join("y_bad.npy"))),
        &["y_bad.npy: npy: ", "like labels", "x_train.npy"],
    );
}

#[test]
fn broken_parquet_files_are_refused_in_one_line() {
    let broken = |name: &str| fixture(&format!("broken/{name}"));
    let cases: [(&str, &[&str]); 4] = [
        (
            "no-image.parquet",
            &["no-image.parquet: parquet: no \"image\" column (it has img, label)"],
        ),
        (
            "zstd.parquet",
            &[
                "zstd.parquet: parquet: ",
                "compressed with zstd",
                "snappy",
                "pq.write_table",
            ],
        ),
        (
            "bad-png.parquet",
            &["bad-png.parquet: row 1: picture: cannot decode it as PNG"],
        ),
        (
            "bad-label.parquet",
            &["bad-label.parquet: row 1: label 12 is outside 0-9"],
        ),
    ];
    for (name, parts) in cases {
        assert_mentions(&error_of(data::load(&broken(name))), parts);
    }
    let unlabelled = data::load(&broken("no-label.parquet")).unwrap();
    assert_eq!((unlabelled.len(), unlabelled.labels), (2, None));

    let dir = tempfile::tempdir().unwrap();
    let whole = std::fs::read(fixture("hf/test-00000-of-00001.parquet")).unwrap();
    let cut = dir.path().join("cut.parquet");
    std::fs::write(&cut, &whole[..whole.len() - 100]).unwrap();
    assert_mentions(
        &error_of(data::load(&cut)),
        &["cut.parquet: parquet: cannot read the file"],
    );
}

#[test]
fn broken_folders_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("digits");
    write_folder(&root, &first(&EMBEDDED_TEST, 12));
    assert_eq!(data::load(&root).unwrap().len(), 12);

    std::fs::write(root.join("4/notes.txt"), b"a note").unwrap();
    assert_mentions(
        &error_of(data::load(&root)),
        &[
            "digits/4/notes.txt: picture: not a PNG or JPEG",
            "\"a note\"",
            "move it out",
        ],
    );
    std::fs::remove_file(root.join("4/notes.txt")).unwrap();

    std::fs::write(root.join("1/broken.png"), b"\x89PNG\r\n\x1a\nnot a picture").unwrap();
    assert_mentions(
        &error_of(data::load(&root)),
        &["digits/1/broken.png: picture: cannot decode it as PNG"],
    );
    std::fs::remove_file(root.join("1/broken.png")).unwrap();

    std::fs::write(root.join("loose.png"), png(&[0; PIXELS], 28, 28)).unwrap();
    assert_mentions(
        &error_of(data::load(&root)),
        &["digits: folder: ", "loose.png"],
    );
    std::fs::remove_file(root.join("loose.png")).unwrap();

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let message = error_of(data::load(&empty));
    assert_mentions(
        &message,
        &["empty: folder: the directory holds no pictures"],
    );
    assert!(!message.contains("file name"), "{message}");

    let many = dir.path().join("many");
    for class in ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"] {
        std::fs::create_dir_all(many.join(class)).unwrap();
        std::fs::write(many.join(class).join("x.png"), png(&[0; PIXELS], 28, 28)).unwrap();
    }
    assert_mentions(
        &error_of(data::load(&many)),
        &["many: folder: 11 class folders", "10 classes"],
    );
}
