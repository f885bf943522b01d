//! Reading and writing MNIST files: every supported format round-trips exactly, `load` picks the
//! right reader, and every kind of bad file gives a one-line error naming the file, the place and
//! the problem.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mnist_gpu::data::*;

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// Five small images with distinct patterns, and distinct labels.
fn fixture() -> Dataset {
    let count = 5;
    let mut images = Vec::with_capacity(count * PIXELS);
    for k in 0..count {
        for j in 0..PIXELS {
            images.push(((j * (2 * k + 3) + 11 * k) % 256) as u8);
        }
    }
    Dataset {
        images,
        labels: Some(vec![5, 0, 4, 1, 9]),
        source: "fixture".to_string(),
    }
}

fn unlabeled(data: &Dataset) -> Dataset {
    Dataset {
        labels: None,
        ..data.clone()
    }
}

/// Same images and labels (the source differs: it is the path read from).
fn assert_same(read: &Dataset, expected: &Dataset) {
    assert_eq!(read.len(), expected.len());
    assert!(read.images == expected.images, "images differ");
    assert_eq!(read.labels, expected.labels);
}

/// A tiny deterministic random generator (xorshift), so tests need no extra dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next() >> 32) as u8).collect()
    }
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// The fields of row `k` of the fixture, as text.
fn row_fields(data: &Dataset, k: usize, labeled: bool) -> Vec<String> {
    let mut fields = Vec::new();
    if labeled {
        fields.push(data.labels.as_ref().unwrap()[k].to_string());
    }
    fields.extend(data.image(k).iter().map(|p| p.to_string()));
    fields
}

fn header_fields(labeled: bool) -> Vec<String> {
    let mut fields = Vec::new();
    if labeled {
        fields.push("label".to_string());
    }
    fields.extend((0..PIXELS).map(|i| format!("pixel{i}")));
    fields
}

/// CSV text from rows of fields.
fn csv_text(rows: &[Vec<String>]) -> String {
    rows.iter().map(|row| row.join(",") + "\n").collect()
}

/// The fixture as a Kaggle train.csv, as rows of fields that tests can spoil.
fn kaggle_rows(data: &Dataset) -> Vec<Vec<String>> {
    let mut rows = vec![header_fields(true)];
    rows.extend((0..data.len()).map(|k| row_fields(data, k, true)));
    rows
}

/// An IDX images file as bytes.
fn idx_images(magic: u32, count: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for value in [magic, count, rows, cols] {
        bytes.extend_from_slice(&value.to_be_bytes());
    }
    bytes.extend_from_slice(pixels);
    bytes
}

/// An IDX labels file as bytes.
fn idx_labels(count: u32, labels: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&2049u32.to_be_bytes());
    bytes.extend_from_slice(&count.to_be_bytes());
    bytes.extend_from_slice(labels);
    bytes
}

/// The error message of a result that must be an error; it must be one line.
fn error_of<T: std::fmt::Debug>(result: Result<T, DataError>) -> String {
    let message = match result {
        Ok(value) => panic!("expected an error, got {value:?}"),
        Err(err) => err.to_string(),
    };
    assert!(!message.contains('\n'), "not one line: {message:?}");
    message
}

fn assert_mentions(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(
            message.contains(part),
            "message should mention {part:?}: {message}"
        );
    }
}

/// Writes CSV text and returns the error from loading it.
fn csv_error(dir: &Path, name: &str, text: &str) -> String {
    let path = write_file(dir, name, text.as_bytes());
    error_of(load_csv(&path))
}

// ---------------------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------------------

#[test]
fn csv_round_trips_in_every_shape() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixture();
    let cases = [
        ("kaggle-train.csv", true, true),
        ("headerless.csv", false, true),
        ("kaggle-test.csv", true, false),
        ("headerless-unlabeled.csv", false, false),
        ("kaggle-train.csv.gz", true, true),
        ("headerless.csv.gz", false, true),
        ("kaggle-test.csv.gz", true, false),
    ];
    for (name, header, labeled) in cases {
        let expected = if labeled {
            data.clone()
        } else {
            unlabeled(&data)
        };
        let path = dir.path().join(name);
        write_csv(&expected, &path, header).unwrap();
        let read = load_csv(&path).unwrap();
        assert_same(&read, &expected);
        assert_eq!(read.source, path.display().to_string());
        assert_same(&load(&path).unwrap(), &expected);
    }
}

#[test]
fn written_csv_looks_like_kaggle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("train.csv");
    write_csv(&fixture(), &path, true).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6);
    assert!(lines[0].starts_with("label,pixel0,pixel1,"));
    assert!(lines[0].ends_with(",pixel783"));
    assert!(lines[1].starts_with("5,0,3,6,9,"));
    assert_eq!(lines[1].split(',').count(), 785);

    let gz = dir.path().join("train.csv.gz");
    write_csv(&fixture(), &gz, true).unwrap();
    assert_eq!(&std::fs::read(&gz).unwrap()[..2], &[0x1f, 0x8b]);
}

#[test]
fn hand_written_csv_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixture();

    // Kaggle train.csv, with CRLF line ends, spaces, a quoted header and no final newline.
    let mut rows = kaggle_rows(&data);
    rows[0][0] = "\"label\"".to_string();
    rows[2][7] = format!(" {} ", rows[2][7]);
    let text = rows
        .iter()
        .map(|row| row.join(","))
        .collect::<Vec<_>>()
        .join("\r\n");
    let path = write_file(dir.path(), "crlf.csv", text.as_bytes());
    assert_same(&load_csv(&path).unwrap(), &data);

    // Headerless, with a byte-order mark and blank lines at the end.
    let rows: Vec<_> = (0..data.len())
        .map(|k| row_fields(&data, k, true))
        .collect();
    let text = format!("\u{feff}{}\n  \n", csv_text(&rows));
    let path = write_file(dir.path(), "mnist_train.csv", text.as_bytes());
    assert_same(&load_csv(&path).unwrap(), &data);

    // Kaggle test.csv: no labels.
    let mut rows = vec![header_fields(false)];
    rows.extend((0..data.len()).map(|k| row_fields(&data, k, false)));
    let path = write_file(dir.path(), "test.csv", csv_text(&rows).as_bytes());
    let read = load_csv(&path).unwrap();
    assert_same(&read, &unlabeled(&data));
    assert_mentions(&error_of(read.require_labels()), &["test.csv", "labels"]);

    // Headerless with 784 fields: unlabeled.
    let rows: Vec<_> = (0..data.len())
        .map(|k| row_fields(&data, k, false))
        .collect();
    let path = write_file(dir.path(), "pixels-only.csv", csv_text(&rows).as_bytes());
    assert_same(&load_csv(&path).unwrap(), &unlabeled(&data));

    // Gzip detected from the content, whatever the name.
    let text = csv_text(&kaggle_rows(&data));
    let path = write_file(dir.path(), "compressed.csv", &gzip(text.as_bytes()));
    assert_same(&load_csv(&path).unwrap(), &data);
}

#[test]
fn idx_round_trips_plain_and_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixture();
    for (images, labels) in [
        ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    ] {
        let images = dir.path().join(images);
        let labels = dir.path().join(labels);
        write_idx(&data, &images, &labels).unwrap();
        let read = load_idx(&images, Some(&labels)).unwrap();
        assert_same(&read, &data);
        assert_eq!(read.source, images.display().to_string());
        assert_same(&load_idx(&images, None).unwrap(), &unlabeled(&data));
    }
    // The plain file is exactly the IDX layout.
    let plain = std::fs::read(dir.path().join("train-images-idx3-ubyte")).unwrap();
    assert_eq!(plain, idx_images(2051, 5, 28, 28, &data.images));
    let plain = std::fs::read(dir.path().join("train-labels-idx1-ubyte")).unwrap();
    assert_eq!(plain, idx_labels(5, &[5, 0, 4, 1, 9]));
}

#[test]
fn subset_and_accessors() {
    let data = fixture();
    assert_eq!(data.len(), 5);
    assert!(!data.is_empty());
    assert_eq!(data.image(2)[1], 29);
    let part = data.subset(&[4, 1]);
    assert_eq!(part.len(), 2);
    assert_eq!(part.image(0), data.image(4));
    assert_eq!(part.labels, Some(vec![9, 0]));
    assert_eq!(part.source, data.source);
    assert_eq!(data.require_labels().unwrap(), &[5, 0, 4, 1, 9]);
}

// ---------------------------------------------------------------------------------------------
// Format detection
// ---------------------------------------------------------------------------------------------

/// The bytes decide, whatever the name: IDX named otherwise (its labels beside it by the same
/// rule), CSV with semicolons or tabs under any name, gzip of anything.
#[test]
fn load_picks_the_format_from_the_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixture();
    let images = dir.path().join("images.gz");
    write_idx(&data, &images, &dir.path().join("labels.gz")).unwrap();
    assert_same(&load(&images).unwrap(), &data);
    let misnamed = dir.path().join("pixels.csv");
    std::fs::copy(&images, &misnamed).unwrap();
    assert_same(&load(&misnamed).unwrap(), &unlabeled(&data));

    let text = csv_text(&kaggle_rows(&data));
    for (name, delimiter) in [("semicolons.dat", ";"), ("tabs.tsv", "\t"), ("plain", ",")] {
        let path = write_file(dir.path(), name, text.replace(',', delimiter).as_bytes());
        assert_same(&load(&path).unwrap(), &data);
        let packed = write_file(
            dir.path(),
            &format!("{name}-packed"),
            &gzip(text.replace(',', delimiter).as_bytes()),
        );
        assert_same(&load(&packed).unwrap(), &data);
    }

    // A zip or a picture inside gzip is read from memory.
    let npz = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mnist.npz");
    let packed = write_file(
        dir.path(),
        "mnist.npz.gz",
        &gzip(&std::fs::read(&npz).unwrap()),
    );
    assert_eq!(load(&packed).unwrap().len(), 200);
}

#[test]
fn load_picks_the_format_from_the_name() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixture();

    // IDX: the labels are found beside the images, plain and gzip.
    for (images, labels) in [
        ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
        ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
        ("train-images.idx3-ubyte", "train-labels.idx1-ubyte"),
    ] {
        let images = dir.path().join(images);
        write_idx(&data, &images, &dir.path().join(labels)).unwrap();
        assert_same(&load(&images).unwrap(), &data);
    }

    // Without a labels file beside them, the images load unlabeled.
    let alone = dir.path().join("alone-images-idx3-ubyte.gz");
    write_idx(&data, &alone, &dir.path().join("elsewhere-labels")).unwrap();
    assert_same(&load(&alone).unwrap(), &unlabeled(&data));

    // CSV, any case.
    let upper = dir.path().join("DIGITS.CSV");
    write_csv(&data, &upper, true).unwrap();
    assert_same(&load(&upper).unwrap(), &data);

    // A labels file passed by mistake.
    let message = error_of(load(&dir.path().join("t10k-labels-idx1-ubyte")));
    assert_mentions(
        &message,
        &["t10k-labels-idx1-ubyte", "labels file", "images-idx3"],
    );

    // Text under any name is CSV: a .txt is read, and its errors are CSV's.
    let other = write_file(dir.path(), "digits.txt", b"1,2,3\n");
    assert_mentions(
        &error_of(load(&other)),
        &["digits.txt", "line 1", "3 fields"],
    );

    // Bytes of no format read: what they look like, and the formats read.
    let other = write_file(dir.path(), "digits.bin", b"%PDF-1.7\n\x00\x01\x02");
    let message = error_of(load(&other));
    assert_mentions(
        &message,
        &[
            "digits.bin: unknown format",
            "25 50 44 46 2d 31 2e 37",
            "PDF",
            ".csv",
            "idx3-ubyte",
            ".npz",
            ".parquet",
            "PNG",
        ],
    );
    assert!(!message.contains("file name"), "{message}");

    // Missing file.
    let message = error_of(load(&dir.path().join("missing.csv")));
    assert_mentions(&message, &["missing.csv", "open"]);
}

// ---------------------------------------------------------------------------------------------
// CSV errors
// ---------------------------------------------------------------------------------------------

#[test]
fn csv_field_count_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixture();

    let mut rows = kaggle_rows(&data);
    rows[2].truncate(700);
    let message = csv_error(dir.path(), "short.csv", &csv_text(&rows));
    assert_mentions(
        &message,
        &[
            "short.csv",
            "line 3",
            "too few",
            "700 found",
            "expected 785",
        ],
    );

    let mut rows = kaggle_rows(&data);
    rows[5].push("0".to_string());
    let message = csv_error(dir.path(), "long.csv", &csv_text(&rows));
    assert_mentions(
        &message,
        &[
            "long.csv",
            "line 6",
            "too many",
            "786 found",
            "expected 785",
        ],
    );

    // Unlabeled rows must all have 784 fields.
    let mut rows = vec![header_fields(false)];
    rows.extend((0..data.len()).map(|k| row_fields(&data, k, false)));
    rows[4].push("1".to_string());
    let message = csv_error(dir.path(), "test.csv", &csv_text(&rows));
    assert_mentions(
        &message,
        &["test.csv", "line 5", "785 found", "expected 784"],
    );

    // A headerless first row of the wrong length.
    let message = csv_error(dir.path(), "tiny.csv", "1,2,3\n4,5,6\n");
    assert_mentions(&message, &["tiny.csv", "line 1", "3 fields", "785", "784"]);
}

#[test]
fn csv_value_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixture();
    // (row, column, value, expected parts of the message); row 1 is line 2 (after the header).
    let cases: [(usize, usize, &str, &[&str]); 12] = [
        (
            3,
            5,
            "abc",
            &["line 4", "column 6 (pixel4)", "\"abc\"", "not a number"],
        ),
        (
            1,
            1,
            "nan",
            &["line 2", "column 2 (pixel0)", "\"nan\"", "not an integer"],
        ),
        (
            2,
            784,
            "inf",
            &["line 3", "column 785 (pixel783)", "not an integer"],
        ),
        (
            4,
            9,
            "0.5",
            &["line 5", "\"0.5\"", "not an integer", "0-255"],
        ),
        (4, 9, "12.5", &["line 5", "\"12.5\"", "not an integer"]),
        (
            5,
            300,
            "256",
            &["line 6", "column 301 (pixel299)", "256 is outside 0-255"],
        ),
        (1, 2, "-3", &["line 2", "pixel value -3 is outside 0-255"]),
        (
            2,
            0,
            "10",
            &["line 3", "column 1 (label)", "label 10 is outside 0-9"],
        ),
        (3, 0, "-1", &["line 4", "label -1 is outside 0-9"]),
        (
            3,
            0,
            "seven",
            &["line 4", "column 1 (label)", "\"seven\"", "not a number"],
        ),
        (2, 3, "", &["line 3", "column 4 (pixel2)", "empty field"]),
        (1, 3, "\u{1}x", &["line 2", "column 4", "not a number"]),
    ];
    for (row, column, value, parts) in cases {
        let mut rows = kaggle_rows(&data);
        rows[row][column] = value.to_string();
        let message = csv_error(dir.path(), "values.csv", &csv_text(&rows));
        assert_mentions(&message, &["values.csv"]);
        assert_mentions(&message, parts);
    }

    // Headerless files count lines from 1.
    let rows: Vec<_> = (0..data.len())
        .map(|k| {
            let mut fields = row_fields(&data, k, true);
            if k == 2 {
                fields[100] = "999".to_string();
            }
            fields
        })
        .collect();
    let message = csv_error(dir.path(), "mnist_train.csv", &csv_text(&rows));
    assert_mentions(
        &message,
        &["mnist_train.csv", "line 3", "column 101 (pixel99)", "999"],
    );
}

#[test]
fn csv_header_and_emptiness_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixture();

    let message = csv_error(dir.path(), "empty.csv", "");
    assert_mentions(&message, &["empty.csv", "empty"]);

    let message = csv_error(dir.path(), "blank.csv", "\n\n");
    assert_mentions(&message, &["blank.csv", "empty"]);

    let header_only = csv_text(&[header_fields(true)]);
    let message = csv_error(dir.path(), "header-only.csv", &header_only);
    assert_mentions(&message, &["header-only.csv", "no data rows"]);

    let mut rows = kaggle_rows(&data);
    rows[0][0] = "digit".to_string();
    let message = csv_error(dir.path(), "odd-header.csv", &csv_text(&rows));
    assert_mentions(
        &message,
        &[
            "odd-header.csv",
            "header",
            "\"digit\"",
            "label,pixel0,...,pixel783",
        ],
    );

    let mut rows = kaggle_rows(&data);
    rows[0][2] = "pixel_1".to_string();
    let message = csv_error(dir.path(), "typo-header.csv", &csv_text(&rows));
    assert_mentions(
        &message,
        &[
            "typo-header.csv",
            "header",
            "column 3",
            "\"pixel_1\"",
            "\"pixel1\"",
        ],
    );

    let mut rows = kaggle_rows(&data);
    rows[0].pop();
    let message = csv_error(dir.path(), "narrow-header.csv", &csv_text(&rows));
    assert_mentions(
        &message,
        &["narrow-header.csv", "header", "784 columns", "785"],
    );
}

#[test]
fn csv_binary_garbage_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..200 {
        let length = (rng.next() % 5000) as usize;
        let path = write_file(dir.path(), "garbage.csv", &rng.bytes(length));
        if let Err(err) = load_csv(&path) {
            let message = err.to_string();
            assert!(
                message.starts_with(&path.display().to_string()),
                "{message}"
            );
            assert!(!message.contains('\n'), "round {round}: {message:?}");
        }
    }
    // Garbage after a good header and row.
    let mut text = csv_text(&kaggle_rows(&fixture())[..2]).into_bytes();
    text.extend_from_slice(b"\xff\xfe\x00\x01,\x80\"\n");
    let message = error_of(load_csv(&write_file(dir.path(), "tail.csv", &text)));
    assert_mentions(&message, &["tail.csv", "line 3"]);
}

// ---------------------------------------------------------------------------------------------
// IDX errors
// ---------------------------------------------------------------------------------------------

#[test]
fn idx_header_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixture();
    let images = write_file(
        dir.path(),
        "a-images-idx3-ubyte",
        &idx_images(2051, 5, 28, 28, &data.images),
    );
    let labels = write_file(
        dir.path(),
        "a-labels-idx1-ubyte",
        &idx_labels(5, &[5, 0, 4, 1, 9]),
    );

    // Labels given as images, and the reverse.
    let message = error_of(load_idx(&labels, None));
    assert_mentions(
        &message,
        &[
            "a-labels-idx1-ubyte",
            "header",
            "2049",
            "expected 2051",
            "swap",
        ],
    );
    let message = error_of(load_idx(&images, Some(&images)));
    assert_mentions(
        &message,
        &["a-images-idx3-ubyte: header", "2051", "expected 2049"],
    );

    // Wrong rank, wrong element type, not IDX at all.
    let rank2 = write_file(
        dir.path(),
        "rank2",
        &idx_images(0x0802, 5, 28, 28, &data.images),
    );
    assert_mentions(
        &error_of(load_idx(&rank2, None)),
        &["rank2", "2 dimensions"],
    );
    let floats = write_file(dir.path(), "floats", &idx_images(0x0d03, 5, 28, 28, &[]));
    assert_mentions(
        &error_of(load_idx(&floats, None)),
        &["floats", "32-bit float"],
    );
    let text = write_file(dir.path(), "text", b"label,pixel0,pixel1\n");
    assert_mentions(
        &error_of(load_idx(&text, None)),
        &["text", "not an IDX file"],
    );

    // Other image sizes.
    let big = write_file(dir.path(), "big", &idx_images(2051, 1, 32, 32, &[0; 1024]));
    assert_mentions(
        &error_of(load_idx(&big, None)),
        &["big: header", "32x32", "28x28"],
    );

    // Header cut short, and an empty file.
    let short = write_file(dir.path(), "short", &idx_images(2051, 5, 28, 28, &[])[..10]);
    assert_mentions(
        &error_of(load_idx(&short, None)),
        &["short: header", "16 bytes", "found only 10"],
    );
    let empty = write_file(dir.path(), "empty", b"");
    assert_mentions(
        &error_of(load_idx(&empty, None)),
        &["empty: header", "found only 0"],
    );

    // Zero images.
    let none = write_file(dir.path(), "none", &idx_images(2051, 0, 28, 28, &[]));
    assert_mentions(
        &error_of(load_idx(&none, None)),
        &["none: header", "0 images"],
    );
}

#[test]
fn idx_size_and_label_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixture();
    let images = write_file(
        dir.path(),
        "b-images-idx3-ubyte",
        &idx_images(2051, 5, 28, 28, &data.images),
    );

    // Fewer labels than images.
    let four = write_file(dir.path(), "four-labels", &idx_labels(4, &[5, 0, 4, 1]));
    let message = error_of(load_idx(&images, Some(&four)));
    assert_mentions(
        &message,
        &["four-labels", "4 labels", "b-images-idx3-ubyte", "5 images"],
    );

    // Truncated: says how many bytes were expected and found.
    let cut = write_file(
        dir.path(),
        "cut",
        &idx_images(2051, 5, 28, 28, &data.images[..3820]),
    );
    assert_mentions(
        &error_of(load_idx(&cut, None)),
        &["cut: data", "shorter", "3920", "3820"],
    );
    let cut_labels = write_file(dir.path(), "cut-labels", &idx_labels(5, &[1, 2]));
    assert_mentions(
        &error_of(load_idx(&images, Some(&cut_labels))),
        &["cut-labels: data", "5 labels need 5 bytes", "found 2"],
    );

    // Trailing garbage.
    let mut long = idx_images(2051, 5, 28, 28, &data.images);
    long.extend_from_slice(b"extra");
    let long = write_file(dir.path(), "long", &long);
    assert_mentions(
        &error_of(load_idx(&long, None)),
        &["long: data", "extra data"],
    );

    // A label that is not a digit (the third one).
    let bad = write_file(dir.path(), "bad-labels", &idx_labels(5, &[5, 0, 12, 1, 9]));
    assert_mentions(
        &error_of(load_idx(&images, Some(&bad))),
        &["bad-labels: record 3", "label 12 is outside 0-9"],
    );
}

#[test]
fn idx_huge_claim_is_refused_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixture();
    let claim = idx_images(2051, 4_000_000_000, 28, 28, &data.images);
    let plain = write_file(dir.path(), "huge-images-idx3-ubyte", &claim);
    let packed = write_file(dir.path(), "huge-images-idx3-ubyte.gz", &gzip(&claim));
    for path in [plain, packed] {
        let start = Instant::now();
        let message = error_of(load(&path));
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "too slow: {message}"
        );
        // 4e9 × 784 bytes expected, 5 × 784 found.
        assert_mentions(&message, &["huge-images", "3136000000000", "found 3920"]);
    }
}

#[test]
fn damaged_gzip_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixture();
    let images = dir.path().join("z-images-idx3-ubyte.gz");
    let labels = dir.path().join("z-labels-idx1-ubyte.gz");
    let csv = dir.path().join("z.csv.gz");
    write_idx(&data, &images, &labels).unwrap();
    write_csv(&data, &csv, true).unwrap();

    for path in [&images, &csv] {
        let whole = std::fs::read(path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        // Cut in the middle, cut in the 8-byte trailer, and a flipped byte.
        let mut flipped = whole.clone();
        flipped[whole.len() / 2] ^= 0x55;
        for (what, bytes) in [
            ("half", &whole[..whole.len() / 2]),
            ("trailer", &whole[..whole.len() - 3]),
            ("flipped", &flipped[..]),
        ] {
            let damaged = write_file(dir.path(), &format!("{what}-{name}"), bytes);
            let message = error_of(load(&damaged));
            assert_mentions(&message, &[&format!("{what}-{name}")]);
        }
    }

    // A cut .csv.gz is reported as damaged compressed data, not read as a shorter file.
    let whole = std::fs::read(&csv).unwrap();
    let damaged = write_file(dir.path(), "cut.csv.gz", &whole[..whole.len() / 2]);
    assert_mentions(&error_of(load(&damaged)), &["cut.csv.gz: gzip"]);
}

// ---------------------------------------------------------------------------------------------
// Size and speed
// ---------------------------------------------------------------------------------------------

/// A realistic size: 60,000 headerless rows and 42,000 Kaggle rows of random pixels.
#[test]
fn full_size_csv_files_load() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(12345);
    for (name, count, header) in [
        ("mnist_train.csv", 60_000, false),
        ("train.csv", 42_000, true),
    ] {
        let data = Dataset {
            images: rng.bytes(count * PIXELS),
            labels: Some((0..count).map(|_| (rng.next() % 10) as u8).collect()),
            source: String::new(),
        };
        let path = dir.path().join(name);
        write_csv(&data, &path, header).unwrap();
        let start = Instant::now();
        let read = load(&path).unwrap();
        eprintln!("{name}: {count} rows loaded in {:?}", start.elapsed());
        assert_eq!(read.len(), count);
        let labels = read.require_labels().unwrap();
        for i in [0, 1, count / 2, count - 1] {
            assert_eq!(read.image(i), data.image(i));
            assert_eq!(labels[i], data.labels.as_ref().unwrap()[i]);
        }
        assert!(read.images == data.images);
    }
}

// ---------------------------------------------------------------------------------------------
// The real MNIST files shipped with the crate
// ---------------------------------------------------------------------------------------------

fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/mnist")
        .join(name)
}

#[test]
fn shipped_training_sample_loads() {
    let data = load(&shipped("train-10k-images-idx3-ubyte.gz")).unwrap();
    assert_eq!(data.len(), 10_000);
    let labels = data.require_labels().unwrap();
    assert_eq!(labels[0], 5);
    // The famous first 5 has ink in the middle and none in the corners.
    assert_eq!(data.image(0)[0], 0);
    assert!(data.image(0).iter().filter(|&&p| p > 128).count() > 50);
}

#[test]
fn shipped_test_set_has_the_known_class_counts() {
    let data = load(&shipped("t10k-images-idx3-ubyte.gz")).unwrap();
    assert_eq!(data.len(), 10_000);
    let mut counts = [0usize; CLASSES];
    for &label in data.require_labels().unwrap() {
        counts[usize::from(label)] += 1;
    }
    assert_eq!(
        counts,
        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
}

// ---------------------------------------------------------------------------------------------
// Issue 5: the remaining kinds of bad input, at the reader level
// ---------------------------------------------------------------------------------------------

/// True if this process can read a file that has no permissions at all (root, or a process with
/// CAP_DAC_OVERRIDE): then `chmod 000` proves nothing and another unreadable file is needed.
#[cfg(unix)]
fn can_read_without_permission(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o000)).unwrap();
    std::fs::File::open(path).is_ok()
}

#[cfg(unix)]
#[test]
fn unreadable_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("locked.csv");
    let images = dir.path().join("locked-images-idx3-ubyte");
    write_csv(&fixture(), &csv, true).unwrap();
    write_idx(&fixture(), &images, &dir.path().join("x")).unwrap();
    for path in [&csv, &images] {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if can_read_without_permission(path) {
            // Root reads it anyway: it must then load like any good file.
            assert_eq!(load(path).unwrap().len(), 5, "{name}");
        } else {
            let message = error_of(load(path));
            assert_mentions(&message, &[&format!("{name}: open: "), "ermission denied"]);
        }
    }

    // A file that opens but cannot be read, even by root: /proc/self/mem at offset 0 is an
    // unmapped address, so reading it fails with an I/O error.
    #[cfg(target_os = "linux")]
    for name in ["mem.csv", "mem-images-idx3-ubyte"] {
        let link = dir.path().join(name);
        std::os::unix::fs::symlink("/proc/self/mem", &link).unwrap();
        let message = error_of(load(&link));
        assert_mentions(&message, &[&format!("{name}: read: "), "error"]);
    }
}

#[test]
fn directories_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["folder.csv", "folder-images-idx3-ubyte.gz"] {
        let path = dir.path().join(name);
        std::fs::create_dir(&path).unwrap();
        let message = error_of(load(&path));
        assert_mentions(&message, &[&format!("{name}: "), "directory"]);
    }
}

#[test]
fn idx_header_only_and_garbage_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixture();
    let images = write_file(
        dir.path(),
        "c-images-idx3-ubyte",
        &idx_images(2051, 5, 28, 28, &data.images),
    );

    // Headers that announce data, and nothing after them.
    let header_only = write_file(dir.path(), "h-images", &idx_images(2051, 5, 28, 28, &[]));
    assert_mentions(
        &error_of(load_idx(&header_only, None)),
        &["h-images: data", "shorter", "3920 bytes", "found 0"],
    );
    let labels_only = write_file(dir.path(), "h-labels", &idx_labels(5, &[]));
    assert_mentions(
        &error_of(load_idx(&images, Some(&labels_only))),
        &["h-labels: data", "shorter", "5 bytes", "found 0"],
    );

    // Random bytes, as images and as labels.
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for round in 0..50 {
        let length = (rng.next() % 3000) as usize;
        let garbage = write_file(dir.path(), "garbage", &rng.bytes(length));
        let prefix = format!("{}: ", garbage.display());
        let message = error_of(load_idx(&garbage, None));
        assert!(message.starts_with(&prefix), "round {round}: {message}");
        let message = error_of(load_idx(&images, Some(&garbage)));
        assert!(message.starts_with(&prefix), "round {round}: {message}");
    }
}

#[test]
fn idx_more_labels_than_images() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixture();
    let images = write_file(
        dir.path(),
        "d-images-idx3-ubyte",
        &idx_images(2051, 5, 28, 28, &data.images),
    );
    let six = write_file(
        dir.path(),
        "six-labels",
        &idx_labels(6, &[5, 0, 4, 1, 9, 2]),
    );
    assert_mentions(
        &error_of(load_idx(&images, Some(&six))),
        &[
            "six-labels: header",
            "6 labels",
            "d-images-idx3-ubyte",
            "5 images",
        ],
    );
}

#[test]
fn idx_huge_claims_are_refused_from_readers_and_label_files() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixture();
    let claim = idx_images(2051, 4_000_000_000, 28, 28, &data.images);
    let labels = idx_labels(u32::MAX, &[1, 2, 3]);
    let start = Instant::now();
    // From memory: no file length to compare with, so the read itself is bounded.
    for bytes in [claim.clone(), gzip(&claim)] {
        let message = error_of(read_idx_images(&bytes[..], "claim"));
        assert_mentions(&message, &["claim: data", "3136000000000", "found 3920"]);
    }
    for bytes in [labels.clone(), gzip(&labels)] {
        let message = error_of(read_idx_labels(&bytes[..], "claim"));
        assert_mentions(&message, &["claim: data", "4294967295 bytes", "found 3"]);
    }
    // A labels file beside good images.
    let images = write_file(
        dir.path(),
        "e-images-idx3-ubyte",
        &idx_images(2051, 5, 28, 28, &data.images),
    );
    write_file(dir.path(), "e-labels-idx1-ubyte", &labels);
    assert_mentions(
        &error_of(load(&images)),
        &["e-labels-idx1-ubyte: data", "4294967295", "found 3"],
    );
    assert!(start.elapsed() < Duration::from_secs(2), "too slow");
}

#[test]
fn csv_label_column_where_none_is_expected_and_the_reverse() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixture();

    // Kaggle test.csv header (no labels), but a row with a label.
    let mut rows = vec![header_fields(false)];
    rows.extend((0..data.len()).map(|k| row_fields(&data, k, false)));
    rows[3] = row_fields(&data, 2, true);
    let message = csv_error(dir.path(), "test.csv", &csv_text(&rows));
    assert_mentions(
        &message,
        &[
            "test.csv: line 4",
            "too many fields: 785 found, expected 784",
            "784 pixels and no label",
            "as the header pixel0,...,pixel783 announces",
            "label column",
        ],
    );

    // Kaggle train.csv header, but a row without its label.
    let mut rows = kaggle_rows(&data);
    rows[2] = row_fields(&data, 1, false);
    let message = csv_error(dir.path(), "train.csv", &csv_text(&rows));
    assert_mentions(
        &message,
        &[
            "train.csv: line 3",
            "too few fields: 784 found, expected 785",
            "a label and 784 pixels",
            "as the header label,pixel0,...,pixel783 announces",
            "no label column",
        ],
    );

    // Headerless: the first row decides, and the message says so.
    let mut rows: Vec<_> = (0..data.len())
        .map(|k| row_fields(&data, k, true))
        .collect();
    rows[4] = row_fields(&data, 4, false);
    let message = csv_error(dir.path(), "mnist_train.csv", &csv_text(&rows));
    assert_mentions(
        &message,
        &[
            "mnist_train.csv: line 5",
            "784 found, expected 785",
            "like the first row, line 1",
            "no label column",
        ],
    );
    let mut rows: Vec<_> = (0..data.len())
        .map(|k| row_fields(&data, k, false))
        .collect();
    rows[1] = row_fields(&data, 1, true);
    let message = csv_error(dir.path(), "pixels.csv", &csv_text(&rows));
    assert_mentions(
        &message,
        &[
            "pixels.csv: line 2",
            "785 found, expected 784",
            "784 pixels and no label, like the first row, line 1",
        ],
    );

    // An unlabeled file where labels are needed.
    let mut rows = vec![header_fields(false)];
    rows.extend((0..data.len()).map(|k| row_fields(&data, k, false)));
    let path = write_file(dir.path(), "unlabeled.csv", csv_text(&rows).as_bytes());
    let read = load_csv(&path).unwrap();
    assert_mentions(
        &error_of(read.require_labels()),
        &["unlabeled.csv: labels", "no labels"],
    );
}

#[test]
fn readers_work_on_any_reader() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixture();
    let csv = dir.path().join("r.csv.gz");
    let images = dir.path().join("r-images-idx3-ubyte.gz");
    let labels = dir.path().join("r-labels-idx1-ubyte.gz");
    write_csv(&data, &csv, true).unwrap();
    write_idx(&data, &images, &labels).unwrap();

    // A reader that returns one byte per call still has its gzip detected.
    struct OneByte(std::io::Cursor<Vec<u8>>);
    impl std::io::Read for OneByte {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let end = buf.len().min(1);
            self.0.read(&mut buf[..end])
        }
    }
    let open = |path: &Path| OneByte(std::io::Cursor::new(std::fs::read(path).unwrap()));

    let read = read_csv(open(&csv), "stream.csv").unwrap();
    assert_same(&read, &data);
    assert_eq!(read.source, "stream.csv");
    assert!(read_idx_images(open(&images), "i").unwrap() == data.images);
    assert_eq!(
        read_idx_labels(open(&labels), "l").unwrap(),
        vec![5, 0, 4, 1, 9]
    );

    // Read errors name the given name.
    struct Failing;
    impl std::io::Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("the disk is on fire"))
        }
    }
    assert_mentions(
        &error_of(read_csv(Failing, "broken")),
        &["broken: read: ", "on fire"],
    );
    assert_mentions(
        &error_of(read_idx_images(Failing, "broken")),
        &["broken: read: ", "on fire"],
    );
}

#[test]
fn corrupt_gzip_idx_labels_and_headers() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixture();
    let images = dir.path().join("g-images-idx3-ubyte.gz");
    let labels = dir.path().join("g-labels-idx1-ubyte.gz");
    write_idx(&data, &images, &labels).unwrap();
    let whole = std::fs::read(&labels).unwrap();
    // Cut inside the compressed header and data: a gzip error, not a short IDX file.
    for cut in [5, 12, whole.len() - 4] {
        let path = write_file(dir.path(), "cut-labels.gz", &whole[..cut]);
        assert_mentions(
            &error_of(load_idx(&images, Some(&path))),
            &["cut-labels.gz: gzip: ", "corrupt or truncated"],
        );
    }
    // The gzip magic followed by garbage.
    let mut fake = vec![0x1f, 0x8b];
    fake.extend_from_slice(b"this is not deflate data at all");
    let path = write_file(dir.path(), "fake-images-idx3-ubyte.gz", &fake);
    assert_mentions(
        &error_of(load(&path)),
        &["fake-images-idx3-ubyte.gz: gzip: "],
    );
}

/// Regression: damage in the middle of a .gz can decompress to plausible text, and gzip only
/// notices at its CRC, at the end. The reader used to stop at the first bad line and blame it
/// ("line 151: too few fields"); it must say the file is damaged.
#[test]
fn damaged_gzip_is_blamed_rather_than_the_line_it_spoils() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(77);
    let count = 300;
    let data = Dataset {
        images: rng.bytes(count * PIXELS),
        labels: Some((0..count).map(|_| (rng.next() % 10) as u8).collect()),
        source: String::new(),
    };
    let csv = dir.path().join("big.csv.gz");
    let images = dir.path().join("big-images-idx3-ubyte.gz");
    let labels = dir.path().join("big-labels-idx1-ubyte.gz");
    write_csv(&data, &csv, true).unwrap();
    write_idx(&data, &images, &labels).unwrap();
    let mut blamed_lines = 0;
    for path in [&csv, &images] {
        let whole = std::fs::read(path).unwrap();
        for offset in [whole.len() / 3, whole.len() / 2, 2 * whole.len() / 3] {
            let mut damaged = whole.clone();
            for byte in &mut damaged[offset..offset + 16] {
                *byte ^= 0xa5;
            }
            let name = format!(
                "damaged-{offset}-{}",
                path.file_name().unwrap().to_string_lossy()
            );
            let damaged = write_file(dir.path(), &name, &damaged);
            let message = error_of(load(&damaged));
            assert_mentions(
                &message,
                &[&format!("{name}: gzip: "), "corrupt or truncated"],
            );
            blamed_lines += usize::from(message.contains("line"));
        }
    }
    assert_eq!(blamed_lines, 0);
}
