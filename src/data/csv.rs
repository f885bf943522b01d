//! MNIST as CSV, in the shapes found in the wild:
//!
//! - with a header: a column named `label` (any case) anywhere, and 784 pixel columns, whatever
//!   they are called (Kaggle's `label,pixel0,...,pixel783`, Fashion-MNIST's
//!   `label,pixel1,...,pixel784`, "MNIST in CSV"'s `label,1x1,...,28x28`, the label last...);
//!   without a `label` column, 784 pixel columns (Kaggle's `test.csv`). A pandas index column
//!   (header cell empty or `Unnamed: 0`) is skipped. When the pixel names follow one of the known
//!   schemes, every name must, in order: a typo or a shuffled column is refused, not misread;
//! - headerless, label first (the common `mnist_train.csv`): rows of 785 numbers. A headerless
//!   file with 784 fields per row is read as unlabeled.
//!
//! The shape is decided by the first line: it is a header if its first field is not a number.
//! Every later row must have the same shape. Numbers are whole (`255`, or `255.0` as pandas writes
//! a float column). What cannot be told from one row is checked on the whole file: pixels scaled
//! to 0-1, and a headerless file whose first column is one value (a pixel, not labels). The `csv`
//! crate does the splitting (quotes, CRLF); we read raw bytes (`ByteRecord`) and parse the
//! numbers ourselves, which is fast and lets every error say exactly which line, column and value
//! is wrong.

use std::path::Path;

use ::csv::{ByteRecord, ErrorKind, ReaderBuilder};

use super::{read_error, write_output, DataError, Dataset, Input, CLASSES, PIXELS};

/// Where things are in a row, and what the columns are called (for messages).
#[derive(Debug, Clone)]
struct Layout {
    /// The column holding the label, if any.
    label: Option<usize>,
    /// A leading pandas index column (skipped).
    index: bool,
    /// One name per column: the header's, or Kaggle's for a headerless file.
    names: Vec<String>,
    /// Whether the names come from a header line.
    header: bool,
}

impl Layout {
    /// A headerless file: Kaggle's names, the label (if any) first.
    fn headerless(labeled: bool) -> Layout {
        let mut names = Vec::with_capacity(PIXELS + 1);
        if labeled {
            names.push("label".to_string());
        }
        names.extend((0..PIXELS).map(|i| format!("pixel{i}")));
        Layout {
            label: labeled.then_some(0),
            index: false,
            names,
            header: false,
        }
    }

    fn fields(&self) -> usize {
        self.names.len()
    }

    fn describe(&self) -> &'static str {
        match (self.index, self.label.is_some()) {
            (false, true) => "a label and 784 pixels",
            (false, false) => "784 pixels and no label",
            (true, true) => "an index, a label and 784 pixels",
            (true, false) => "an index and 784 pixels and no label",
        }
    }

    /// The header in short, e.g. `label,pixel0,...,pixel783`.
    fn summary(&self) -> String {
        let pixels: Vec<&str> = (0..self.fields())
            .filter(|&column| Some(column) != self.label && !(self.index && column == 0))
            .map(|column| self.names[column].as_str())
            .collect();
        let span = format!("{},...,{}", pixels[0], pixels[pixels.len() - 1]);
        let first = usize::from(self.index);
        let body = match self.label {
            None => span,
            Some(label) if label == first => format!("{},{span}", self.names[label]),
            Some(label) if label == self.fields() - 1 => format!("{span},{}", self.names[label]),
            Some(label) => format!("{span} with {} in column {}", self.names[label], label + 1),
        };
        if self.index {
            format!("{},{body}", self.names[0])
        } else {
            body
        }
    }
}

/// The byte-order mark some editors (Excel) put at the start of a UTF-8 file.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// How the start of every accepted file is described in errors.
const EXPECTED_SHAPES: &str = "expected a header with a \"label\" column and 784 pixel columns \
                               (Kaggle's train.csv: label,pixel0,...,pixel783), 784 pixel columns \
                               alone (Kaggle's test.csv: pixel0,...,pixel783), or headerless rows \
                               of a label and 784 pixels";

/// Below this many rows a headerless file of one class is believed (a small test file).
const ROWS_TO_JUDGE_LABELS: usize = 10;

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
    let delimiter = delimiter(&input.peek(DELIMITER_SNIFF_LEN)?);
    let mut reader = ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false) // we decide ourselves whether line 1 is a header
        .flexible(true) // we check field counts ourselves, to give a better message
        .buffer_capacity(1 << 16)
        .from_reader(&mut input.reader);

    let mut record = ByteRecord::new();
    // The shape of the rows, and what decided it (for messages about rows of another shape).
    let mut layout: Option<(Layout, String)> = None;
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
        if layout.is_none() {
            let (found, is_header) = first_line(&file, line, &mut record)?;
            let decided_by = if is_header {
                format!("as the header {} announces", found.summary())
            } else {
                format!("like the first row, line {line}")
            };
            layout = Some((found, decided_by));
            if is_header {
                continue;
            }
        }
        let Some((row_layout, decided_by)) = &layout else {
            continue; // not reached: set just above
        };
        parse_row(&record, row_layout, decided_by, &mut images, &mut labels).map_err(
            |message| DataError::Line {
                file: file.clone(),
                line,
                message,
            },
        )?;
    }
    dataset(file, layout.map(|(found, _)| found), images, labels)
}

/// How much of the start is looked at for the delimiter: a header of 785 names fits many times.
const DELIMITER_SNIFF_LEN: usize = 1 << 16;

/// The delimiter of the first line: the most frequent of comma, semicolon and tab (a comma when
/// there is none of them), so that a file saved with `;` (Excel in much of Europe) or tabs reads.
fn delimiter(start: &[u8]) -> u8 {
    let line = start.split(|&b| b == b'\n').next().unwrap_or_default();
    let count = |delimiter: u8| line.iter().filter(|&&b| b == delimiter).count();
    [b';', b'\t'].into_iter().fold(
        b',',
        |best, d| if count(d) > count(best) { d } else { best },
    )
}

/// Removes a byte-order mark from the first line (not blank), then decides what it is: a header
/// if its first field is not a number (an empty one is pandas' index), else a data row whose field
/// count gives the shape. Returns the layout of the rows, and whether the line was a header.
fn first_line(file: &str, line: u64, record: &mut ByteRecord) -> Result<(Layout, bool), DataError> {
    if record.get(0).is_some_and(|first| first.starts_with(BOM)) {
        *record = without_bom(record);
    }
    let first = record.get(0).unwrap_or_default().trim_ascii();
    if !looks_numeric(first) {
        return Ok((check_header(file, record)?, true));
    }
    let hint = match record.len() {
        n if n == PIXELS + 1 => return Ok((Layout::headerless(true), false)),
        n if n == PIXELS => return Ok((Layout::headerless(false), false)),
        n if n == PIXELS + 2 => {
            "; if the first column is pandas' index, write the file with index=False \
             (or with its header, which names the label column)"
        }
        _ => "",
    };
    Err(DataError::Line {
        file: file.to_string(),
        line,
        message: format!(
            "{} fields found in the first row; expected 785 (a label and 784 \
             pixels) or 784 (pixels only){hint}",
            record.len()
        ),
    })
}

/// The rows read as a dataset, or why there is none (an empty file, a header alone), or why they
/// cannot be what they seem (pixels scaled to 0-1, a pixel column read as the labels).
fn dataset(
    file: String,
    layout: Option<Layout>,
    images: Vec<u8>,
    labels: Vec<u8>,
) -> Result<Dataset, DataError> {
    let refuse = |message: String| DataError::Data {
        file: file.clone(),
        message,
    };
    let Some(layout) = layout else {
        return Err(refuse(format!("the file is empty; {EXPECTED_SHAPES}")));
    };
    if images.is_empty() {
        return Err(refuse("there is a header but no data rows".to_string()));
    }
    if images.iter().max() == Some(&1) {
        return Err(refuse(
            "every pixel is 0 or 1, but pixels must be 0-255: if the images are scaled to 0-1, \
             multiply them by 255"
                .to_string(),
        ));
    }
    if !layout.header && layout.label.is_some() {
        check_headerless_labels(&images, &labels).map_err(refuse)?;
    }
    Ok(Dataset {
        images,
        labels: layout.label.is_some().then_some(labels),
        source: file,
    })
}

/// A headerless file's labels are column 1 by convention. If column 1 holds one value in every
/// row it is no label column (MNIST's pixel 0 is always 0): say which column looks like the labels.
fn check_headerless_labels(images: &[u8], labels: &[u8]) -> Result<(), String> {
    let first = labels[0];
    if labels.len() < ROWS_TO_JUDGE_LABELS || labels.iter().any(|&label| label != first) {
        return Ok(());
    }
    let last: Vec<u8> = images
        .chunks(PIXELS)
        .map(|image| image[PIXELS - 1])
        .collect();
    let fix = "add a header naming the label column \"label\" (e.g. pixel0,...,pixel783,label), \
               or move the labels to the first column";
    if last.iter().all(|&value| usize::from(value) < CLASSES) && last.iter().any(|&v| v != last[0])
    {
        return Err(format!(
            "column 1, read as the label, is {first} in every row, like a pixel, while column 785 \
             holds 0-9 like labels: the labels seem to be in the last column; {fix}"
        ));
    }
    Err(format!(
        "every label (column 1, headerless files put the label first) is {first}: a file of one \
         class cannot be told from a column of pixels; if the labels are in another column, {fix}"
    ))
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

/// The names pixel columns follow in known files: Kaggle's, Fashion-MNIST's, "MNIST in CSV"'s.
const PIXEL_SCHEMES: [fn(usize) -> String; 3] = [
    |k| format!("pixel{k}"),
    |k| format!("pixel{}", k + 1),
    |k| format!("{}x{}", k / 28 + 1, k % 28 + 1),
];

/// Reads a header line: where the label, index and pixel columns are.
fn check_header(file: &str, record: &ByteRecord) -> Result<Layout, DataError> {
    let header_error = |message: String| DataError::Header {
        file: file.to_string(),
        message,
    };
    let names: Vec<String> = record
        .iter()
        .map(|name| String::from_utf8_lossy(name.trim_ascii()).into_owned())
        .collect();
    let index = names[0].is_empty() || names[0].eq_ignore_ascii_case("Unnamed: 0");
    let labels: Vec<usize> = (0..names.len())
        .filter(|&column| names[column].eq_ignore_ascii_case("label"))
        .collect();
    if labels.len() > 1 {
        return Err(header_error(format!(
            "columns {} and {} are both named \"label\"; keep one",
            labels[0] + 1,
            labels[1] + 1
        )));
    }
    let layout = Layout {
        label: labels.first().copied(),
        index,
        names,
        header: true,
    };
    let pixels: Vec<usize> = (0..layout.fields())
        .filter(|&column| Some(column) != layout.label && !(index && column == 0))
        .collect();
    if pixels.len() != PIXELS {
        return Err(header_error(column_count_problem(&layout, pixels.len())));
    }
    check_pixel_names(&layout, &pixels).map_err(header_error)?;
    Ok(layout)
}

/// Why a header's columns are not a label (optional) and 784 pixels.
fn column_count_problem(layout: &Layout, pixels: usize) -> String {
    let names = &layout.names;
    let count = names.len();
    let index = if layout.index {
        format!(" after the index column {}", quote(names[0].as_bytes()))
    } else {
        String::new()
    };
    if layout.label.is_none() && pixels == PIXELS + 1 {
        return format!(
            "{count} columns{index} but none is named \"label\" (column 1 is {}, column {count} is \
             {}); name the label column \"label\", as in label,pixel0,...,pixel783 or \
             pixel0,...,pixel783,label",
            quote(names[0].as_bytes()),
            quote(names[count - 1].as_bytes())
        );
    }
    let what = if layout.label.is_some() {
        "a \"label\" column and 784 pixels, e.g. label,pixel0,...,pixel783"
    } else {
        "784 pixels, e.g. pixel0,...,pixel783 (a label column must be named \"label\")"
    };
    let expected = PIXELS + usize::from(layout.label.is_some()) + usize::from(layout.index);
    format!("{count} columns found{index}, expected {expected}: {what}")
}

/// If the pixel columns' names follow a known scheme (by the first one's name), every one must,
/// in order: a typo or a moved column would otherwise be read as the wrong pixel. Other names
/// are taken in file order.
fn check_pixel_names(layout: &Layout, pixels: &[usize]) -> Result<(), String> {
    let name = |k: usize| layout.names[pixels[k]].as_str();
    let Some(scheme) = PIXEL_SCHEMES
        .iter()
        .find(|scheme| name(0).eq_ignore_ascii_case(&scheme(0)))
    else {
        return Ok(());
    };
    for k in 0..PIXELS {
        let expected = scheme(k);
        if !name(k).eq_ignore_ascii_case(&expected) {
            return Err(format!(
                "column {} is {}, expected \"{expected}\" in {}",
                pixels[k] + 1,
                quote(name(k).as_bytes()),
                layout.summary()
            ));
        }
    }
    Ok(())
}

/// Parses one data row into `images` (and `labels`), or says what is wrong with it.
/// `decided_by` says what set the shape (the header, or the first row), for a row of another.
fn parse_row(
    record: &ByteRecord,
    layout: &Layout,
    decided_by: &str,
    images: &mut Vec<u8>,
    labels: &mut Vec<u8>,
) -> Result<(), String> {
    let expected = layout.fields();
    if record.len() != expected {
        let amount = if record.len() < expected {
            "too few"
        } else {
            "too many"
        };
        // One field off is most likely a label column where there should be none, or the reverse.
        let hint = match layout.label {
            Some(_) if record.len() + 1 == expected => "; this row seems to have no label column",
            None if record.len() == expected + 1 => {
                "; this row seems to have a label column the file should not have"
            }
            _ => "",
        };
        return Err(format!(
            "{amount} fields: {} found, expected {expected} ({}, {decided_by}){hint}",
            record.len(),
            layout.describe()
        ));
    }
    images.reserve(PIXELS);
    for (column, field) in record.iter().enumerate() {
        if layout.index && column == 0 {
            continue;
        }
        let is_label = layout.label == Some(column);
        let max = if is_label { CLASSES as u32 - 1 } else { 255 };
        let value =
            parse_number(field, max).map_err(|problem| problem.explain(column, layout, field))?;
        if is_label {
            labels.push(value);
        } else {
            images.push(value);
        }
    }
    Ok(())
}

/// Why a field is not an acceptable number.
#[derive(Debug, PartialEq)]
enum Problem {
    Empty,
    /// A number, but not a whole one (`0.5`, `1e3`, `nan`, `inf`).
    NotInteger(f64),
    NotNumber,
    /// A whole number outside the allowed range (the value, saturated to fit an i64).
    OutOfRange(i64),
}

impl Problem {
    /// The message for this problem in `column` (0-based) of a row.
    fn explain(&self, column: usize, layout: &Layout, field: &[u8]) -> String {
        let is_label = layout.label == Some(column);
        let range = if is_label { "0-9" } else { "0-255" };
        let what = if is_label { "label" } else { "pixel value" };
        let place = format!("column {} ({})", column + 1, layout.names[column]);
        let text = quote(field.trim_ascii());
        match self {
            Problem::Empty => format!("{place}: empty field; expected an integer {range}"),
            Problem::NotInteger(value) => {
                // A fraction of 1 is a pixel scaled to 0-1 (torchvision's ToTensor(), x / 255).
                let hint = if !is_label && (0.0..=1.0).contains(value) {
                    "; the pixels seem scaled to 0-1: multiply them by 255 and round \
                     (pandas: (df * 255).round().astype(int))"
                } else {
                    ""
                };
                format!(
                    "{place}: {text} is not an integer; {what}s must be whole numbers {range}{hint}"
                )
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
    if let Some(whole) = whole_float(text) {
        // The integer part has no point: this recursion is one level deep.
        return parse_number(whole.as_bytes(), max);
    }
    if let Ok(value) = text.parse::<f64>() {
        return Err(Problem::NotInteger(value));
    }
    Err(Problem::NotNumber)
}

/// A whole number written as a float, as pandas writes a float column (`255.0`, `0.00`): the
/// digits before the point, or `None` if the text is not of that form.
fn whole_float(text: &str) -> Option<&str> {
    let (whole, fraction) = text.split_once('.')?;
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit());
    if !digits(whole) || !digits(fraction) || fraction.bytes().any(|byte| byte != b'0') {
        return None;
    }
    Some(whole)
}

/// True if a first field is a number (so the line is data, not a header). Anything Rust can read
/// as a float counts, so that a data row starting with `nan` or `0.5` is reported as a bad value
/// rather than as a strange header.
fn looks_numeric(field: &[u8]) -> bool {
    std::str::from_utf8(field).is_ok_and(|text| text.parse::<f64>().is_ok())
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
        assert_eq!(parse_number(b"0.5", 255), Err(Problem::NotInteger(0.5)));
        assert_eq!(parse_number(b"12.5", 255), Err(Problem::NotInteger(12.5)));
        assert_eq!(parse_number(b"12.", 255), Err(Problem::NotInteger(12.0)));
        assert!(matches!(parse_number(b"nan", 255), Err(Problem::NotInteger(v)) if v.is_nan()));
        assert_eq!(
            parse_number(b"inf", 255),
            Err(Problem::NotInteger(f64::INFINITY))
        );
        // Whole numbers as pandas writes a float column.
        assert_eq!(parse_number(b"12.0", 255), Ok(12));
        assert_eq!(parse_number(b" 255.00 ", 255), Ok(255));
        assert_eq!(parse_number(b"0.0", 9), Ok(0));
        assert_eq!(parse_number(b"256.0", 255), Err(Problem::OutOfRange(256)));
        assert_eq!(parse_number(b"-1.0", 255), Err(Problem::NotInteger(-1.0)));
        assert_eq!(parse_number(b"abc", 255), Err(Problem::NotNumber));
        assert_eq!(parse_number(b"\xff\xfe", 255), Err(Problem::NotNumber));
        assert_eq!(parse_number(b"-", 255), Err(Problem::NotNumber));
    }

    #[test]
    fn delimiters() {
        assert_eq!(delimiter(b"label,pixel0,pixel1\n1;2;3;4;5"), b',');
        assert_eq!(delimiter(b"label;pixel0;pixel1\n"), b';');
        assert_eq!(delimiter(b"5\t0\t0\t0"), b'\t');
        assert_eq!(delimiter(b"5"), b',');
        assert_eq!(delimiter(b""), b',');
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
        let labeled = Layout::headerless(true);
        assert_eq!(labeled.names[0], "label");
        assert_eq!(labeled.names[1], "pixel0");
        assert_eq!(labeled.names[784], "pixel783");
        assert_eq!(labeled.summary(), "label,pixel0,...,pixel783");
        let unlabeled = Layout::headerless(false);
        assert_eq!(unlabeled.names[0], "pixel0");
        assert_eq!(unlabeled.summary(), "pixel0,...,pixel783");
    }
}
