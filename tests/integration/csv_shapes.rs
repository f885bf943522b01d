//! A user's CSV trains, or is refused with the fix in the message, never misread: the shapes
//! people export (a `label` column anywhere, Fashion-MNIST's and "MNIST in CSV"'s pixel names, a
//! pandas index column, pandas float columns), and the shapes that would be misread (pixels
//! scaled to 0-1, a headerless file with its label last, labels all one class).

use std::path::Path;

use mnist_gpu::data::{load_csv, DataError, Dataset, PIXELS};

use crate::common::output::{assert_one_line_error, assert_success, run_in};
use crate::common::random_dataset;

/// `n` random labeled images; pixel 0 (a corner) is 0, as in MNIST.
fn digits(n: usize, seed: u64) -> Dataset {
    let mut data = random_dataset(n, seed);
    for image in data.images.chunks_mut(PIXELS) {
        image[0] = 0;
    }
    data
}

/// Writes rows of fields as CSV text into `dir/name`; returns the path.
fn write_rows(dir: &Path, name: &str, rows: &[Vec<String>]) -> std::path::PathBuf {
    let text: String = rows.iter().map(|row| row.join(",") + "\n").collect();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The rows of `data` with the label at `label_at` among the pixels (`None`: no label), each
/// number written by `number`.
fn data_rows(
    data: &Dataset,
    label_at: Option<usize>,
    number: impl Fn(u8) -> String,
) -> Vec<Vec<String>> {
    (0..data.len())
        .map(|k| {
            let mut row: Vec<String> = data.image(k).iter().map(|&p| number(p)).collect();
            if let Some(at) = label_at {
                row.insert(at, number(data.labels.as_ref().unwrap()[k]));
            }
            row
        })
        .collect()
}

/// A header: the pixel names given by `pixel`, "label" inserted at `label_at`.
fn header(label_at: Option<usize>, pixel: impl Fn(usize) -> String) -> Vec<String> {
    let mut names: Vec<String> = (0..PIXELS).map(pixel).collect();
    if let Some(at) = label_at {
        names.insert(at, "label".to_string());
    }
    names
}

fn same(read: &Dataset, expected: &Dataset, what: &str) {
    assert!(read.images == expected.images, "{what}: images differ");
    assert_eq!(read.labels, expected.labels, "{what}: labels differ");
}

fn one_line_error(result: Result<Dataset, DataError>) -> String {
    let message = match result {
        Ok(_) => panic!("expected an error"),
        Err(err) => err.to_string(),
    };
    assert!(!message.contains('\n'), "not one line: {message:?}");
    message
}

fn assert_mentions(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(message.contains(part), "should mention {part:?}: {message}");
    }
}

#[test]
fn a_label_column_anywhere_and_any_pixel_names_train() {
    let dir = tempfile::tempdir().unwrap();
    let data = digits(12, 1);
    let schemes: [(&str, fn(usize) -> String); 4] = [
        ("kaggle", |k| format!("pixel{k}")),
        ("fashion", |k| format!("pixel{}", k + 1)),
        ("mnist-in-csv", |k| format!("{}x{}", k / 28 + 1, k % 28 + 1)),
        ("own names", |k| format!("p_{k}")),
    ];
    for (scheme, pixel) in schemes {
        for (place, label_at) in [("first", 0), ("last", PIXELS), ("middle", 300)] {
            let what = format!("{scheme}, label {place}");
            let mut rows = vec![header(Some(label_at), pixel)];
            rows.extend(data_rows(&data, Some(label_at), |v| v.to_string()));
            let path = write_rows(dir.path(), "shape.csv", &rows);
            let read = load_csv(&path).unwrap_or_else(|err| panic!("{what}: {err}"));
            same(&read, &data, &what);
        }
    }
    // "LABEL" or "Label" is the label too.
    let mut rows = vec![header(Some(PIXELS), |k| format!("pixel{}", k + 1))];
    rows[0][PIXELS] = "Label".to_string();
    rows.extend(data_rows(&data, Some(PIXELS), |v| v.to_string()));
    same(
        &load_csv(&write_rows(dir.path(), "case.csv", &rows)).unwrap(),
        &data,
        "Label",
    );
}

#[test]
fn a_label_last_header_without_label_is_refused_without_speaking_of_test_csv() {
    let dir = tempfile::tempdir().unwrap();
    let data = digits(12, 2);
    let mut rows = vec![header(Some(PIXELS), |k| format!("pixel{k}"))];
    rows[0][PIXELS] = "class".to_string();
    rows.extend(data_rows(&data, Some(PIXELS), |v| v.to_string()));
    let message = one_line_error(load_csv(&write_rows(dir.path(), "mine.csv", &rows)));
    assert_mentions(
        &message,
        &["mine.csv", "\"class\"", "column 785", "\"label\""],
    );
    assert!(!message.contains("test.csv"), "{message}");
}

#[test]
fn a_known_pixel_scheme_with_a_typo_or_a_duplicate_label_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = digits(3, 3);
    let mut rows = vec![header(Some(0), |k| format!("pixel{}", k + 1))];
    rows[0][11] = "pixel12".to_string(); // two columns named pixel12
    rows.extend(data_rows(&data, Some(0), |v| v.to_string()));
    let message = one_line_error(load_csv(&write_rows(dir.path(), "typo.csv", &rows)));
    assert_mentions(
        &message,
        &["typo.csv", "header", "column 12", "\"pixel11\""],
    );

    let mut rows = vec![header(Some(0), |k| format!("pixel{k}"))];
    rows[0].push("LABEL".to_string());
    let message = one_line_error(load_csv(&write_rows(dir.path(), "two.csv", &rows)));
    assert_mentions(&message, &["two.csv", "columns 1 and 786", "\"label\""]);
}

#[test]
fn a_pandas_index_column_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let data = digits(12, 4);
    for index_name in ["", "Unnamed: 0"] {
        for label_at in [0, PIXELS] {
            let mut rows = vec![header(Some(label_at), |k| format!("pixel{k}"))];
            rows[0].insert(0, index_name.to_string());
            // After a shuffle or a split, pandas keeps the original index.
            let body = data_rows(&data, Some(label_at), |v| v.to_string());
            rows.extend(body.into_iter().enumerate().map(|(k, mut row)| {
                row.insert(0, (3 * k + 7).to_string());
                row
            }));
            let what = format!("index {index_name:?}, label at {label_at}");
            let path = write_rows(dir.path(), "indexed.csv", &rows);
            let read = load_csv(&path).unwrap_or_else(|err| panic!("{what}: {err}"));
            same(&read, &data, &what);
        }
    }
    // Unlabeled, as `df.to_csv()` writes Kaggle's test.csv back.
    let mut rows = vec![header(None, |k| format!("pixel{k}"))];
    rows[0].insert(0, String::new());
    rows.extend(
        data_rows(&data, None, |v| v.to_string())
            .into_iter()
            .enumerate()
            .map(|(k, mut row)| {
                row.insert(0, k.to_string());
                row
            }),
    );
    let read = load_csv(&write_rows(dir.path(), "test-indexed.csv", &rows)).unwrap();
    assert!(read.images == data.images && read.labels.is_none());

    // Headerless with an index (`header=False`): nothing says which column is which.
    let rows: Vec<Vec<String>> = data_rows(&data, Some(0), |v| v.to_string())
        .into_iter()
        .enumerate()
        .map(|(k, mut row)| {
            row.insert(0, k.to_string());
            row
        })
        .collect();
    let message = one_line_error(load_csv(&write_rows(dir.path(), "no-header.csv", &rows)));
    assert_mentions(&message, &["no-header.csv", "786 fields", "index=False"]);
}

#[test]
fn whole_numbers_written_as_floats_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let data = digits(12, 5);
    let mut rows = vec![header(Some(0), |k| format!("pixel{k}"))];
    rows.extend(data_rows(&data, Some(0), |v| format!("{v}.0")));
    same(
        &load_csv(&write_rows(dir.path(), "floats.csv", &rows)).unwrap(),
        &data,
        "with a header",
    );
    let rows = data_rows(&data, Some(0), |v| format!("{v}.00"));
    same(
        &load_csv(&write_rows(dir.path(), "floats-headerless.csv", &rows)).unwrap(),
        &data,
        "headerless",
    );
}

#[test]
fn pixels_scaled_to_0_1_are_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let data = digits(12, 6);
    let labels = data.labels.clone().unwrap();
    let mut rows = vec![header(Some(0), |k| format!("pixel{k}"))];
    rows.extend((0..data.len()).map(|k| {
        let mut row = vec![labels[k].to_string()];
        row.extend(
            data.image(k)
                .iter()
                .map(|&p| format!("{}", f64::from(p) / 255.0)),
        );
        row
    }));
    let message = one_line_error(load_csv(&write_rows(dir.path(), "scaled.csv", &rows)));
    assert_mentions(
        &message,
        &["scaled.csv", "line 2", "0-1", "multiply", "255"],
    );

    // Binarized 0-1 images: every value whole, so only the file as a whole tells.
    let mut rows = vec![header(Some(0), |k| format!("pixel{k}"))];
    rows.extend((0..data.len()).map(|k| {
        let mut row = vec![labels[k].to_string()];
        row.extend(data.image(k).iter().map(|&p| format!("{}.0", p / 128)));
        row
    }));
    let message = one_line_error(load_csv(&write_rows(dir.path(), "binary.csv", &rows)));
    assert_mentions(&message, &["binary.csv", "0 or 1", "multiply", "255"]);
}

/// The rows of a headerless file with the label in the last column.
fn label_last_rows(data: &Dataset) -> Vec<Vec<String>> {
    data_rows(data, Some(PIXELS), |v| v.to_string())
}

#[test]
fn a_headerless_file_with_its_label_last_is_refused_naming_the_columns() {
    let dir = tempfile::tempdir().unwrap();
    let data = digits(40, 7);
    let path = write_rows(dir.path(), "label-last.csv", &label_last_rows(&data));
    let message = one_line_error(load_csv(&path));
    assert_mentions(
        &message,
        &[
            "label-last.csv",
            "column 1",
            "column 785",
            "last column",
            "\"label\"",
        ],
    );

    // Labels all one class in column 1, and nothing label-like elsewhere.
    let mut one_class = random_dataset(40, 8);
    one_class.labels = Some(vec![3; 40]);
    let rows = data_rows(&one_class, Some(0), |v| v.to_string());
    let message = one_line_error(load_csv(&write_rows(dir.path(), "threes.csv", &rows)));
    assert_mentions(&message, &["threes.csv", "column 1", "is 3", "\"label\""]);

    // With a header saying where the label is, the same rows are read.
    let mut rows = vec![header(Some(PIXELS), |k| format!("pixel{k}"))];
    rows.extend(label_last_rows(&data));
    same(
        &load_csv(&write_rows(dir.path(), "named.csv", &rows)).unwrap(),
        &data,
        "label last, named",
    );
}

/// `train`, `eval` and `predict` refuse a label-last headerless file the same way.
#[test]
fn the_commands_refuse_a_label_last_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = data_rows(&digits(60, 9), Some(0), |v| v.to_string());
    write_rows(dir.path(), "good.csv", &good);
    write_rows(dir.path(), "last.csv", &label_last_rows(&digits(40, 10)));
    let cpu = ["--backend", "cpu"];

    let out = run_in(
        dir.path(),
        &[&["--train", "last.csv", "--test", "none"][..], &cpu].concat(),
    );
    assert_mentions(&assert_one_line_error(&out), &["last.csv", "column 785"]);

    let train = [
        "--train",
        "good.csv",
        "--test",
        "none",
        "--dev-size",
        "10",
        "--iterations",
        "2",
        "--hidden",
        "8",
        "--save",
        "m.safetensors",
    ];
    assert_success(&run_in(dir.path(), &[&train[..], &cpu].concat()));
    for command in ["eval", "predict"] {
        let args = [command, "--model", "m.safetensors", "--data", "last.csv"];
        let out = run_in(dir.path(), &[&args[..], &cpu].concat());
        let line = assert_one_line_error(&out);
        assert_mentions(&line, &["last.csv", "column 785", "last column"]);
    }
}
