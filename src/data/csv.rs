//! MNIST as CSV, in the three shapes found in the wild:
//!
//! - Kaggle digit-recognizer `train.csv`: header `label,pixel0,...,pixel783`, then rows of 785
//!   integers;
//! - Kaggle `test.csv`: header `pixel0,...,pixel783`, then rows of 784 integers (no labels);
//! - headerless, label first (the common `mnist_train.csv`): rows of 785 integers. A headerless
//!   file with 784 fields per row is read as unlabeled.
//!
//! The shape is decided by the first line: it is a header if its first field is not a number.
//! Every later row must have the same shape. The `csv` crate does the splitting (quotes, CRLF);
//! we read raw bytes (`ByteRecord`) and parse the numbers ourselves, which is fast and lets every
//! error say exactly which line, column and value is wrong.

use std::path::Path;

use ::csv::{ByteRecord, ErrorKind, ReaderBuilder};

use super::{read_error, write_output, DataError, Dataset, Input, CLASSES, PIXELS};

/// What a data row holds.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Shape {
    /// A label, then 784 pixels.
    Labeled,
    /// 784 pixels only.
    Unlabeled,
}

impl Shape {
    fn fields(self) -> usize {
        match self {
            Shape::Labeled => PIXELS + 1,
            Shape::Unlabeled => PIXELS,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Shape::Labeled => "a label and 784 pixels",
            Shape::Unlabeled => "784 pixels and no label",
        }
    }

    /// The Kaggle header announcing this shape.
    fn header(self) -> &'static str {
        match self {
            Shape::Labeled => "label,pixel0,...,pixel783",
            Shape::Unlabeled => "pixel0,...,pixel783",
        }
    }
}

/// The byte-order mark some editors (Excel) put at the start of a UTF-8 file.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// How the start of every accepted file is described in errors.
const EXPECTED_SHAPES: &str = "expected Kaggle's train.csv (header label,pixel0,...,pixel783), \
                               Kaggle's test.csv (header pixel0,...,pixel783), or headerless rows \
                               of a label and 784 pixels";

/// Reads a CSV file (plain or gzip) into a dataset.
pub(super) fn read(mut input: Input) -> Result<Dataset, DataError> {
    let result = read_rows(&mut input);
    result.map_err(|err| input.blame_gzip(err))
}

/// Reads row after row: the first line sets the shape (see `first_line`), every later row
/// must have it.
fn read_rows(input: &mut Input) -> Result<Dataset, DataError> {
    let file = input.file.clone();
    let gzip = input.gzip;
    let mut reader = ReaderBuilder::new()
        .has_headers(false) // we decide ourselves whether line 1 is a header
        .flexible(true) // we check field counts ourselves, to give a better message
        .buffer_capacity(1 << 16)
        .from_reader(&mut input.reader);

    let mut record = ByteRecord::new();
    // The shape of the rows, and what decided it (for messages about rows of another shape).
    let mut shape: Option<(Shape, String)> = None;
    let mut images: Vec<u8> = Vec::new();
    let mut labels: Vec<u8> = Vec::new();

    loop {
        match reader.read_byte_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(err) => return Err(csv_error(&file, gzip, err)),
        }
        let line = record.position().map_or(0, |position| position.line());
        // The csv crate already skips empty lines; also skip lines of only spaces (often at the end).
        if record.len() == 1 && record[0].trim_ascii().is_empty() {
            continue;
        }

        let (row_shape, decided_by) = match &shape {
            Some((known, decided_by)) => (*known, decided_by.as_str()),
            None => match first_line(&file, line, &mut record)? {
                FirstLine::Header(announced) => {
                    let decided_by = format!("as the header {} announces", announced.header());
                    shape = Some((announced, decided_by));
                    continue;
                }
                FirstLine::Data(detected) => {
                    shape = Some((detected, format!("like the first row, line {line}")));
                    (detected, "")
                }
            },
        };
        parse_row(&record, row_shape, decided_by, &mut images, &mut labels).map_err(|message| {
            DataError::Line {
                file: file.clone(),
                line,
                message,
            }
        })?;
    }
    dataset(file, shape.map(|(found, _)| found), images, labels)
}

/// What the first line (not blank) is, which sets the shape of every row.
enum FirstLine {
    /// A Kaggle header announcing rows of this shape.
    Header(Shape),
    /// A data row of this shape.
    Data(Shape),
}

/// Removes a byte-order mark from the first line, then decides: a header if its first field is
/// not a number, else a data row whose field count gives the shape.
fn first_line(file: &str, line: u64, record: &mut ByteRecord) -> Result<FirstLine, DataError> {
    if record.get(0).is_some_and(|first| first.starts_with(BOM)) {
        *record = without_bom(record);
    }
    let first = record.get(0).unwrap_or_default().trim_ascii();
    if !looks_numeric(first) {
        return Ok(FirstLine::Header(check_header(file, record)?));
    }
    match record.len() {
        n if n == Shape::Labeled.fields() => Ok(FirstLine::Data(Shape::Labeled)),
        n if n == Shape::Unlabeled.fields() => Ok(FirstLine::Data(Shape::Unlabeled)),
        n => Err(DataError::Line {
            file: file.to_string(),
            line,
            message: format!(
                "{n} fields found in the first row; expected 785 (a label and 784 \
                 pixels) or 784 (pixels only)"
            ),
        }),
    }
}

/// The rows read as a dataset, or why there is none: an empty file, or a header alone.
fn dataset(
    file: String,
    shape: Option<Shape>,
    images: Vec<u8>,
    labels: Vec<u8>,
) -> Result<Dataset, DataError> {
    match shape {
        None => Err(DataError::Data {
            file,
            message: format!("the file is empty; {EXPECTED_SHAPES}"),
        }),
        Some(_) if images.is_empty() => Err(DataError::Data {
            file,
            message: "there is a header but no data rows".to_string(),
        }),
        Some(found) => Ok(Dataset {
            images,
            labels: (found == Shape::Labeled).then_some(labels),
            source: file,
        }),
    }
}

/// Writes a dataset as CSV (see `super::write_csv`). The dataset has been checked to be
/// consistent. Numbers are formatted from a table: much faster than `write!` per field.
pub(super) fn write(data: &Dataset, path: &Path, header: bool) -> Result<(), DataError> {
    let numbers: Vec<String> = (0..=255u8).map(|value| value.to_string()).collect();
    write_output(path, |out| {
        let mut line: Vec<u8> = Vec::with_capacity(4 * (PIXELS + 1));
        if header {
            let mut names: Vec<String> = Vec::with_capacity(PIXELS + 1);
            if data.labels.is_some() {
                names.push("label".to_string());
            }
            names.extend((0..PIXELS).map(|i| format!("pixel{i}")));
            line.extend_from_slice(names.join(",").as_bytes());
            line.push(b'\n');
            out.write_all(&line)?;
        }
        for i in 0..data.len() {
            line.clear();
            if let Some(labels) = &data.labels {
                line.extend_from_slice(numbers[usize::from(labels[i])].as_bytes());
                line.push(b',');
            }
            for &pixel in data.image(i) {
                line.extend_from_slice(numbers[usize::from(pixel)].as_bytes());
                line.push(b',');
            }
            // Replace the last comma with the end of the line.
            line.pop();
            line.push(b'\n');
            out.write_all(&line)?;
        }
        Ok(())
    })
}

/// Checks a header line against Kaggle's two headers; returns the shape of the rows it announces.
fn check_header(file: &str, record: &ByteRecord) -> Result<Shape, DataError> {
    let header_error = |message: String| DataError::Header {
        file: file.to_string(),
        message,
    };
    let first = record.get(0).unwrap_or_default().trim_ascii();
    let shape = if first.eq_ignore_ascii_case(b"label") {
        Shape::Labeled
    } else if first.eq_ignore_ascii_case(b"pixel0") {
        Shape::Unlabeled
    } else {
        return Err(header_error(format!(
            "unrecognized header starting with {}; {EXPECTED_SHAPES}",
            quote(first)
        )));
    };
    let expected_header = match shape {
        Shape::Labeled => format!("{} (Kaggle train.csv)", shape.header()),
        Shape::Unlabeled => format!("{} (Kaggle test.csv)", shape.header()),
    };
    if record.len() != shape.fields() {
        return Err(header_error(format!(
            "{} columns found, expected {}: {expected_header}",
            record.len(),
            shape.fields()
        )));
    }
    for (column, name) in record.iter().enumerate() {
        let expected = column_name(column, shape);
        if !name.trim_ascii().eq_ignore_ascii_case(expected.as_bytes()) {
            return Err(header_error(format!(
                "column {} is {}, expected \"{expected}\" in {expected_header}",
                column + 1,
                quote(name.trim_ascii())
            )));
        }
    }
    Ok(shape)
}

/// Parses one data row into `images` (and `labels`), or says what is wrong with it.
/// `decided_by` says what set the shape (the header, or the first row), for a row of another.
fn parse_row(
    record: &ByteRecord,
    shape: Shape,
    decided_by: &str,
    images: &mut Vec<u8>,
    labels: &mut Vec<u8>,
) -> Result<(), String> {
    let expected = shape.fields();
    if record.len() != expected {
        let amount = if record.len() < expected {
            "too few"
        } else {
            "too many"
        };
        // One field off is most likely a label column where there should be none, or the reverse.
        let hint = match shape {
            Shape::Labeled if record.len() == Shape::Unlabeled.fields() => {
                "; this row seems to have no label column"
            }
            Shape::Unlabeled if record.len() == Shape::Labeled.fields() => {
                "; this row seems to have a label column the file should not have"
            }
            _ => "",
        };
        return Err(format!(
            "{amount} fields: {} found, expected {expected} ({}, {decided_by}){hint}",
            record.len(),
            shape.describe()
        ));
    }
    let mut fields = record.iter().enumerate();
    if shape == Shape::Labeled {
        if let Some((column, field)) = fields.next() {
            let label = parse_number(field, CLASSES as u32 - 1)
                .map_err(|problem| problem.explain(column, shape, field))?;
            labels.push(label);
        }
    }
    images.reserve(PIXELS);
    for (column, field) in fields {
        let pixel =
            parse_number(field, 255).map_err(|problem| problem.explain(column, shape, field))?;
        images.push(pixel);
    }
    Ok(())
}

/// Why a field is not an acceptable number.
#[derive(Debug, PartialEq)]
enum Problem {
    Empty,
    /// A number, but not a whole one (`0.5`, `12.0`, `1e3`, `nan`, `inf`).
    NotInteger,
    NotNumber,
    /// A whole number outside the allowed range (the value, saturated to fit an i64).
    OutOfRange(i64),
}

impl Problem {
    /// The message for this problem in `column` (0-based) of a row.
    fn explain(&self, column: usize, shape: Shape, field: &[u8]) -> String {
        let is_label = shape == Shape::Labeled && column == 0;
        let range = if is_label { "0-9" } else { "0-255" };
        let what = if is_label { "label" } else { "pixel value" };
        let place = format!("column {} ({})", column + 1, column_name(column, shape));
        let text = quote(field.trim_ascii());
        match self {
            Problem::Empty => format!("{place}: empty field; expected an integer {range}"),
            Problem::NotInteger => {
                format!("{place}: {text} is not an integer; {what}s must be whole numbers {range}")
            }
            Problem::NotNumber => {
                format!("{place}: {text} is not a number; expected an integer {range}")
            }
            Problem::OutOfRange(value) => {
                format!("{place}: {what} {value} is outside {range}")
            }
        }
    }
}

/// Parses a whole number in `0..=max` (max ≤ 255), allowing spaces around it.
///
/// The common case (1 to 3 plain digits) is handled by a tight loop; anything else goes to a
/// slower path whose only job is to explain what is wrong.
fn parse_number(field: &[u8], max: u32) -> Result<u8, Problem> {
    let digits = field.trim_ascii();
    if !digits.is_empty() && digits.len() <= 3 && digits.iter().all(u8::is_ascii_digit) {
        let value = digits
            .iter()
            .fold(0u32, |value, &digit| value * 10 + u32::from(digit - b'0'));
        return if value <= max {
            Ok(value as u8)
        } else {
            Err(Problem::OutOfRange(i64::from(value)))
        };
    }
    let text = std::str::from_utf8(digits).map_err(|_| Problem::NotNumber)?;
    if text.is_empty() {
        return Err(Problem::Empty);
    }
    if let Ok(value) = text.parse::<i64>() {
        // "007", "+5": unusual but whole numbers; only the range matters.
        return match u8::try_from(value) {
            Ok(byte) if u32::from(byte) <= max => Ok(byte),
            _ => Err(Problem::OutOfRange(value)),
        };
    }
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !unsigned.is_empty() && unsigned.bytes().all(|byte| byte.is_ascii_digit()) {
        // Too many digits for an i64.
        let huge = if text.starts_with('-') {
            i64::MIN
        } else {
            i64::MAX
        };
        return Err(Problem::OutOfRange(huge));
    }
    if text.parse::<f64>().is_ok() {
        return Err(Problem::NotInteger);
    }
    Err(Problem::NotNumber)
}

/// True if a first field is a number (so the line is data, not a header). Anything Rust can read
/// as a float counts, so that a data row starting with `nan` or `0.5` is reported as a bad value
/// rather than as a strange header.
fn looks_numeric(field: &[u8]) -> bool {
    std::str::from_utf8(field).is_ok_and(|text| text.parse::<f64>().is_ok())
}

/// Kaggle's name for a column (0-based): `label`, `pixel0`, ...
fn column_name(column: usize, shape: Shape) -> String {
    match shape {
        Shape::Labeled if column == 0 => "label".to_string(),
        Shape::Labeled => format!("pixel{}", column - 1),
        Shape::Unlabeled => format!("pixel{column}"),
    }
}

/// A field for an error message: quoted, escaped (so it stays on one line) and shortened.
fn quote(field: &[u8]) -> String {
    const MAX_CHARS: usize = 20;
    let text = String::from_utf8_lossy(field);
    if text.chars().count() > MAX_CHARS {
        let short: String = text.chars().take(MAX_CHARS).collect();
        format!("{short:?}...")
    } else {
        format!("{text:?}")
    }
}

/// A copy of the record with the byte-order mark removed from its first field.
fn without_bom(record: &ByteRecord) -> ByteRecord {
    let mut fixed = ByteRecord::with_capacity(record.as_slice().len(), record.len());
    for (column, field) in record.iter().enumerate() {
        if column == 0 {
            fixed.push_field(field.strip_prefix(BOM).unwrap_or(field));
        } else {
            fixed.push_field(field);
        }
    }
    fixed.set_position(record.position().cloned());
    fixed
}

/// Turns an error from the `csv` crate into ours. With byte records and flexible rows the only
/// real failure is reading (a disk error or a damaged .gz).
fn csv_error(file: &str, gzip: bool, err: ::csv::Error) -> DataError {
    let line = err.position().map_or(0, |position| position.line());
    match err.into_kind() {
        ErrorKind::Io(source) => read_error(file, gzip, source),
        other => DataError::Line {
            file: file.to_string(),
            line,
            message: format!("CSV error: {other:?}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(parse_number(b"0", 255), Ok(0));
        assert_eq!(parse_number(b" 255 ", 255), Ok(255));
        assert_eq!(parse_number(b"007", 255), Ok(7));
        assert_eq!(parse_number(b"+9", 9), Ok(9));
        assert_eq!(parse_number(b"256", 255), Err(Problem::OutOfRange(256)));
        assert_eq!(parse_number(b"10", 9), Err(Problem::OutOfRange(10)));
        assert_eq!(parse_number(b"-1", 9), Err(Problem::OutOfRange(-1)));
        assert_eq!(
            parse_number(b"99999999999999999999999", 255),
            Err(Problem::OutOfRange(i64::MAX))
        );
        assert_eq!(parse_number(b"", 255), Err(Problem::Empty));
        assert_eq!(parse_number(b"  ", 255), Err(Problem::Empty));
        assert_eq!(parse_number(b"0.5", 255), Err(Problem::NotInteger));
        assert_eq!(parse_number(b"12.0", 255), Err(Problem::NotInteger));
        assert_eq!(parse_number(b"nan", 255), Err(Problem::NotInteger));
        assert_eq!(parse_number(b"inf", 255), Err(Problem::NotInteger));
        assert_eq!(parse_number(b"abc", 255), Err(Problem::NotNumber));
        assert_eq!(parse_number(b"\xff\xfe", 255), Err(Problem::NotNumber));
        assert_eq!(parse_number(b"-", 255), Err(Problem::NotNumber));
    }

    #[test]
    fn header_detection() {
        assert!(looks_numeric(b"5"));
        assert!(looks_numeric(b"-1"));
        assert!(looks_numeric(b"nan"));
        assert!(!looks_numeric(b"label"));
        assert!(!looks_numeric(b"\x00\x01"));
    }

    #[test]
    fn quoting_stays_on_one_line() {
        assert_eq!(quote(b"a\nb"), "\"a\\nb\"");
        let long = quote(&[b'x'; 100]);
        assert!(long.len() < 30 && long.ends_with("..."), "{long}");
    }

    #[test]
    fn column_names() {
        assert_eq!(column_name(0, Shape::Labeled), "label");
        assert_eq!(column_name(1, Shape::Labeled), "pixel0");
        assert_eq!(column_name(784, Shape::Labeled), "pixel783");
        assert_eq!(column_name(0, Shape::Unlabeled), "pixel0");
    }
}
