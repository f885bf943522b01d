//! NumPy's files: `.npy` (one array) and `.npz` (a zip archive of `.npy` files, one per named
//! array, as `np.savez` and Keras's `mnist.npz` hold them).
//!
//! A `.npy` file is the magic `\x93NUMPY`, a version (1, 2 or 3), the length of a header, and the
//! header: a Python dict literal such as `{'descr': '|u1', 'fortran_order': False, 'shape':
//! (60000, 28, 28), }`, then the elements, in C (row-major) or Fortran (column-major) order. The
//! header is parsed here by hand: it is a few fields, and a parser of Python literals would be a
//! dependency larger than this file.
//!
//! Images are arrays shaped (N, 28, 28) or (N, 784) (also (N, 28, 28, 1) and (N, 1, 28, 28)), of
//! any integer or float type holding whole numbers 0-255; labels (N,) or (N, 1) of whole numbers
//! 0-9, or one-hot (N, 10).

use std::io::{self, Read, Seek};
use std::path::Path;

use super::{display, DataError, Dataset, Input, Part, CLASSES, IMAGE_SIDE, PIXELS};

/// The largest header read (NumPy writes about a hundred bytes; it refuses more than 10,000).
const MAX_HEADER: usize = 1 << 16;
/// Elements are converted this many bytes at a time: memory grows only as data arrives.
const CHUNK: usize = 1 << 16;

/// An array's element type (`descr`).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Dtype {
    kind: u8,
    size: usize,
    big_endian: bool,
}

impl Dtype {
    /// NumPy's name for it, as messages show it.
    fn name(&self) -> String {
        match self.kind {
            b'u' => format!("uint{}", 8 * self.size),
            b'i' => format!("int{}", 8 * self.size),
            b'f' => format!("float{}", 8 * self.size),
            b'b' => "bool".to_string(),
            other => format!("{}{}", char::from(other), self.size),
        }
    }

    /// One element as a number (integers up to 2^53 exactly; larger ones are out of range anyway).
    fn value(&self, bytes: &[u8]) -> f64 {
        let mut raw = [0u8; 8];
        if self.big_endian {
            raw[8 - self.size..].copy_from_slice(bytes);
            raw.reverse();
        } else {
            raw[..self.size].copy_from_slice(bytes);
        }
        let unsigned = u64::from_le_bytes(raw);
        match (self.kind, self.size) {
            (b'f', 4) => f64::from(f32::from_bits(unsigned as u32)),
            (b'f', 8) => f64::from_bits(unsigned),
            (b'i', size) => {
                // Sign-extend from `size` bytes.
                let shift = 64 - 8 * size as u32;
                ((unsigned << shift) as i64 >> shift) as f64
            }
            _ => unsigned as f64,
        }
    }
}

/// A `.npy` header: the element type, the order, the shape.
#[derive(Debug, Clone, PartialEq)]
struct Header {
    dtype: Dtype,
    fortran: bool,
    shape: Vec<u64>,
}

impl Header {
    /// The shape as NumPy prints it, with the type: `(60000, 28, 28) uint8`.
    fn describe(&self) -> String {
        let dims: Vec<String> = self.shape.iter().map(u64::to_string).collect();
        let trailing = if dims.len() == 1 { "," } else { "" };
        format!("({}{trailing}) {}", dims.join(", "), self.dtype.name())
    }

    /// The number of elements, if it fits.
    fn count(&self) -> Option<u64> {
        self.shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d))
    }
}

/// What an array is read as.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    Images,
    Labels,
}

/// Reads a `.npy` of images, and its labels from another `.npy` when there is one beside it.
pub(super) fn read_npy(
    images: &mut Input,
    labels: Option<&mut Input>,
) -> Result<Dataset, DataError> {
    let pixels = read_npy_array(images, Role::Images)?;
    let (labels, labels_file) = match labels {
        None => (None, images.file.clone()),
        Some(input) => (
            Some(read_npy_array(input, Role::Labels)?),
            input.file.clone(),
        ),
    };
    pair(pixels, labels, &images.file, &labels_file)
}

/// One `.npy` file's array, read errors blamed on a damaged .gz where it is one.
fn read_npy_array(input: &mut Input, role: Role) -> Result<Vec<u8>, DataError> {
    let (file, gzip, len) = (input.file.clone(), input.gzip, input.plain_len);
    let io_error = |source| super::read_error(&file, gzip, source);
    read_array(&mut input.reader, &file, "npy", len, role, &io_error)
}

/// The images and labels arrays of a `.npz` that `part` reads (see [`PAIRS`]).
pub(super) fn read_npz<R: Read + Seek>(
    reader: R,
    path: &Path,
    part: Part,
) -> Result<Dataset, DataError> {
    let file = display(path);
    let npz_error = |message: String| DataError::At {
        file: file.clone(),
        place: "npz".to_string(),
        message,
    };
    let mut archive = zip::ZipArchive::new(reader).map_err(|err| {
        npz_error(format!(
            "not a readable zip archive, or cut short ({})",
            one_line(&err.to_string())
        ))
    })?;
    let arrays = array_keys(&archive);
    let Some((images_key, labels_key)) = choose_pair(&arrays, part) else {
        return Err(npz_error(no_pair_message(&mut archive, &arrays)));
    };
    let mut read_member = |key: &str, role: Role| -> Result<Vec<u8>, DataError> {
        let mut member = archive
            .by_name(&format!("{key}.npy"))
            .map_err(|err| npz_error(format!("{key}: {}", one_line(&err.to_string()))))?;
        let len = Some(member.size());
        // A damaged member shows up as a read error while it is decompressed.
        let io_error = |source: io::Error| DataError::At {
            file: file.clone(),
            place: key.to_string(),
            message: format!("cannot read it: the archive is damaged ({source})"),
        };
        read_array(&mut member, &file, key, len, role, &io_error)
    };
    let images = read_member(images_key, Role::Images)?;
    let labels = labels_key
        .map(|key| read_member(key, Role::Labels))
        .transpose()?;
    let source = match labels_key {
        Some(labels_key) => format!("{file} ({images_key}, {labels_key})"),
        None => format!("{file} ({images_key})"),
    };
    pair(images, labels, &source, &file)
}

/// Reads a `.npz` from an input (read whole: a zip archive is read from its end).
pub(super) fn read_npz_input(
    input: &mut Input,
    path: &Path,
    part: Part,
) -> Result<Dataset, DataError> {
    let bytes = input.read_whole()?;
    read_npz(io::Cursor::new(bytes), path, part)
}

/// The `(images, labels)` key pairs looked for in a `.npz`, in the order of preference of each
/// part: the test part prefers the test arrays, the training part the training ones; a file of
/// one set (`images`/`labels`, `X`/`y`, `x`/`y`) reads the same either way.
pub const PAIRS: [(&str, &str); 9] = [
    ("x_train", "y_train"),
    ("X_train", "y_train"),
    ("train_images", "train_labels"),
    ("images", "labels"),
    ("X", "y"),
    ("x", "y"),
    ("x_test", "y_test"),
    ("X_test", "y_test"),
    ("test_images", "test_labels"),
];

/// The first pair whose images array the archive holds, in `part`'s order; its labels key when
/// the archive holds that too.
fn choose_pair(arrays: &[String], part: Part) -> Option<(&'static str, Option<&'static str>)> {
    let order: Vec<&(&str, &str)> = match part {
        Part::Train => PAIRS.iter().collect(),
        // The test arrays first, then the one-set names, then the training arrays.
        Part::Test => PAIRS[6..]
            .iter()
            .chain(&PAIRS[3..6])
            .chain(&PAIRS[..3])
            .collect(),
    };
    let holds = |key: &str| arrays.iter().any(|a| a == key);
    order
        .into_iter()
        .find(|(images, _)| holds(images))
        .map(|&(images, labels)| (images, holds(labels).then_some(labels)))
}

/// True if a `.npz` (by its array names) holds both a training and a test set.
pub(super) fn holds_test_set(arrays: &[String]) -> bool {
    let holds = |key: &str| arrays.iter().any(|a| a == key);
    PAIRS[..3].iter().any(|(x, _)| holds(x)) && PAIRS[6..].iter().any(|(x, _)| holds(x))
}

/// The test set's keys of a `.npz` (by its array names) that holds a training and a labelled
/// test set.
pub(super) fn test_pair(arrays: &[String]) -> Option<(&'static str, &'static str)> {
    if !holds_test_set(arrays) {
        return None;
    }
    match choose_pair(arrays, Part::Test)? {
        (images, Some(labels)) => Some((images, labels)),
        _ => None,
    }
}

/// The names of the arrays in a `.npz` read from `reader`, or `None` if it is no zip archive.
pub(super) fn array_names<R: Read + Seek>(reader: R) -> Option<Vec<String>> {
    let archive = zip::ZipArchive::new(reader).ok()?;
    Some(array_keys(&archive))
}

/// The names of an archive's members.
fn member_names<R: Read + Seek>(archive: &zip::ZipArchive<R>) -> Vec<String> {
    archive
        .file_names()
        .filter_map(Result::ok)
        .map(|name| name.into_owned())
        .collect()
}

/// The arrays of a `.npz`: its members named `*.npy`, without the `.npy`.
fn array_keys<R: Read + Seek>(archive: &zip::ZipArchive<R>) -> Vec<String> {
    member_names(archive)
        .into_iter()
        .filter_map(|name| name.strip_suffix(".npy").map(str::to_string))
        .collect()
}

/// Why no pair was found: what the archive holds instead.
fn no_pair_message<R: Read + Seek>(archive: &mut zip::ZipArchive<R>, arrays: &[String]) -> String {
    const NAMES: &str =
        "name them x_train, y_train (and x_test, y_test), or images, labels, or X, y";
    if arrays.is_empty() {
        let names: Vec<String> = member_names(archive).into_iter().take(3).collect();
        return format!(
            "a zip archive with no .npy arrays (it holds {}): NumPy's .npz holds one name.npy per \
             array (np.savez); a PyTorch .pt file is not read",
            if names.is_empty() {
                "nothing".to_string()
            } else {
                names.join(", ")
            }
        );
    }
    let described: Vec<String> = arrays
        .iter()
        .take(6)
        .map(|key| {
            let shape = archive
                .by_name(&format!("{key}.npy"))
                .ok()
                .and_then(|mut member| read_header(&mut member).ok())
                .map_or_else(|| "?".to_string(), |header| header.describe());
            format!("{key} {shape}")
        })
        .collect();
    format!("no images array among {}; {NAMES}", described.join(", "))
}

/// Images and labels as a dataset, their counts checked (`labels_file` names the labels).
fn pair(
    images: Vec<u8>,
    labels: Option<Vec<u8>>,
    source: &str,
    labels_file: &str,
) -> Result<Dataset, DataError> {
    let count = images.len() / PIXELS;
    if let Some(labels) = &labels {
        if labels.len() != count {
            return Err(DataError::Data {
                file: labels_file.to_string(),
                message: format!(
                    "{} labels for {count} images: the arrays must hold as many",
                    labels.len()
                ),
            });
        }
    }
    if images.iter().max() == Some(&1) {
        return Err(DataError::Data {
            file: source.to_string(),
            message: "every pixel is 0 or 1, but pixels must be 0-255: if the images are scaled \
                      to 0-1, multiply them by 255 (NumPy: (x * 255).round().astype(np.uint8))"
                .to_string(),
        });
    }
    Ok(Dataset {
        images,
        labels,
        source: source.to_string(),
    })
}

/// Reads one array (its header and elements) as images or labels. `place` names it in messages
/// (`npy` for a `.npy` file, the array's name in a `.npz`); `len` is its length when known.
fn read_array(
    input: &mut dyn Read,
    file: &str,
    place: &str,
    len: Option<u64>,
    role: Role,
    io_error: &dyn Fn(io::Error) -> DataError,
) -> Result<Vec<u8>, DataError> {
    let error = |message: String| DataError::At {
        file: file.to_string(),
        place: place.to_string(),
        message,
    };
    let problem = |problem| match problem {
        Problem::Io(source) => io_error(source),
        Problem::Bad(message) => error(message),
    };
    let mut counted = Counted {
        inner: input,
        read: 0,
    };
    let header = read_header(&mut counted).map_err(problem)?;
    let (count, width) = check_shape(&header, role).map_err(&error)?;
    let size = header.dtype.size as u64;
    let expected = count
        .checked_mul(size)
        .ok_or_else(|| error("the shape is too large".into()))?;
    if let Some(len) = len {
        let found = len.saturating_sub(counted.read);
        if found != expected {
            return Err(error(format!(
                "{} needs {expected} bytes of data, the file holds {found}: it is cut short or \
                 damaged",
                header.describe()
            )));
        }
    }
    let values = read_values(&mut counted, &header, expected, role).map_err(problem)?;
    if !read_up_to(&mut counted, 1).map_err(problem)?.is_empty() {
        return Err(error(format!(
            "unexpected extra data after the array {}",
            header.describe()
        )));
    }
    let values = if header.fortran {
        to_row_major(&values, &header.shape)
    } else {
        values
    };
    match (role, width) {
        (Role::Labels, CLASSES) => one_hot(&values).map_err(error),
        _ => Ok(values),
    }
}

/// Why reading an array failed: the reader's error, or what is wrong with the array.
enum Problem {
    Io(io::Error),
    Bad(String),
}

/// A reader that counts the bytes read (the header's length, to compare the rest with the file's).
struct Counted<'a> {
    inner: &'a mut dyn Read,
    read: u64,
}

impl Read for Counted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// Reads exactly `n` bytes, or fewer at the end of the data.
fn read_up_to(input: &mut dyn Read, n: usize) -> Result<Vec<u8>, Problem> {
    let mut bytes = Vec::with_capacity(n.min(CHUNK));
    input
        .take(n as u64)
        .read_to_end(&mut bytes)
        .map_err(Problem::Io)?;
    Ok(bytes)
}

/// Reads and parses the magic, the version and the header.
fn read_header(input: &mut dyn Read) -> Result<Header, Problem> {
    let bad = |message: String| Problem::Bad(message);
    let start = read_up_to(input, 10)?;
    if !start.starts_with(b"\x93NUMPY") {
        return Err(bad(format!(
            "not a .npy array: {}",
            super::sniff::describe(&start)
        )));
    }
    if start.len() < 10 {
        return Err(bad("the .npy header is cut short".to_string()));
    }
    let major = start[6];
    let header_len = match major {
        1 => usize::from(u16::from_le_bytes([start[8], start[9]])),
        2 | 3 => {
            let more = read_up_to(input, 2)?;
            if more.len() < 2 {
                return Err(bad("the .npy header is cut short".to_string()));
            }
            u32::from_le_bytes([start[8], start[9], more[0], more[1]]) as usize
        }
        _ => {
            return Err(bad(format!(
                ".npy format version {major} is not read (1 to 3 are)"
            )))
        }
    };
    if header_len > MAX_HEADER {
        return Err(bad(format!(
            "a .npy header of {header_len} bytes is too long"
        )));
    }
    let text = read_up_to(input, header_len)?;
    if text.len() < header_len {
        return Err(bad("the .npy header is cut short".to_string()));
    }
    parse_header(&String::from_utf8_lossy(&text)).map_err(Problem::Bad)
}

/// Parses the header's dict: `descr`, `fortran_order` and `shape`.
fn parse_header(text: &str) -> Result<Header, String> {
    let after = |key: &str| -> Result<&str, String> {
        let at = text
            .find(&format!("'{key}'"))
            .or_else(|| text.find(&format!("\"{key}\"")))
            .ok_or_else(|| format!("the .npy header has no {key:?}"))?;
        let rest = &text[at + key.len() + 2..];
        let colon = rest.find(':').ok_or("the .npy header is malformed")?;
        Ok(rest[colon + 1..].trim_start())
    };
    let descr = after("descr")?;
    if descr.starts_with('[') {
        return Err(
            "the array has a structured dtype (named fields): save a plain numeric \
                    array"
                .to_string(),
        );
    }
    let quote = descr.chars().next().filter(|c| *c == '\'' || *c == '"');
    let descr = quote
        .and_then(|q| descr[1..].split(q).next())
        .ok_or("the .npy header's descr is malformed")?;
    let dtype = parse_dtype(descr)?;
    let fortran = after("fortran_order")?.starts_with("True");
    let shape_text = after("shape")?;
    let inside = shape_text
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or("the .npy header's shape is malformed")?;
    let shape = inside
        .split(',')
        .map(|d| d.trim().trim_end_matches('L'))
        .filter(|d| !d.is_empty())
        .map(|d| {
            d.parse::<u64>()
                .map_err(|_| format!("the .npy shape has {d:?}"))
        })
        .collect::<Result<Vec<u64>, String>>()?;
    Ok(Header {
        dtype,
        fortran,
        shape,
    })
}

/// Parses a `descr` such as `<f8`, `|u1`, `>i4`.
fn parse_dtype(descr: &str) -> Result<Dtype, String> {
    let bytes = descr.as_bytes();
    let refuse = || {
        format!(
            "the array's dtype {descr:?} is not read: pixels and labels are integers or floats \
             (uint8 best)"
        )
    };
    let [order, kind, size @ ..] = bytes else {
        return Err(refuse());
    };
    let size: usize = std::str::from_utf8(size)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(refuse)?;
    let ok = match kind {
        b'u' | b'i' => matches!(size, 1 | 2 | 4 | 8),
        b'f' => matches!(size, 4 | 8),
        b'b' => size == 1,
        _ => false,
    };
    if !ok || !matches!(order, b'<' | b'>' | b'|' | b'=') {
        return Err(refuse());
    }
    Ok(Dtype {
        kind: *kind,
        size,
        big_endian: *order == b'>',
    })
}

/// The number of elements and the width of a row (784 for images; 1 or 10 for labels), or why
/// the shape is not one read as `role`.
fn check_shape(header: &Header, role: Role) -> Result<(u64, usize), String> {
    let side = IMAGE_SIDE as u64;
    let shape = &header.shape;
    let count = header.count().ok_or("the shape is too large")?;
    let width = match (role, shape.as_slice()) {
        (_, [0, ..]) => return Err(format!("the array {} holds no images", header.describe())),
        (Role::Images, [_, a, b]) if (*a, *b) == (side, side) => PIXELS,
        (Role::Images, [_, p]) if *p == PIXELS as u64 => PIXELS,
        (Role::Images, [_, a, b, 1]) | (Role::Images, [_, 1, a, b]) if (*a, *b) == (side, side) => {
            PIXELS
        }
        (Role::Labels, [_]) | (Role::Labels, [_, 1]) => 1,
        (Role::Labels, [_, c]) if *c == CLASSES as u64 => CLASSES,
        (Role::Images, [_]) => {
            return Err(format!(
                "the array {} is one number per image, like labels: images are (N, 28, 28) or \
                 (N, 784); pass the images (x_train.npy) and their labels (y_train.npy) are \
                 found beside them",
                header.describe()
            ))
        }
        (Role::Images, _) => {
            return Err(format!(
                "images are shaped (N, 28, 28) or (N, 784), this array is {}",
                header.describe()
            ))
        }
        (Role::Labels, _) => {
            return Err(format!(
                "labels are shaped (N,), or (N, 10) one-hot, this array is {}",
                header.describe()
            ))
        }
    };
    Ok((count, width))
}

/// Reads `expected` bytes of elements and converts each to a byte, checked to be a whole number
/// 0-255 (images) or 0-9 (labels; 0-1 when one-hot, checked later).
fn read_values(
    input: &mut dyn Read,
    header: &Header,
    expected: u64,
    role: Role,
) -> Result<Vec<u8>, Problem> {
    let dtype = header.dtype;
    // Labels are checked to be 0-9 below, once their shape (one-hot or not) is considered.
    let max = 255.0;
    let chunk = (CHUNK / dtype.size) * dtype.size;
    let mut values: Vec<u8> = Vec::new();
    let mut taken = input.take(expected);
    loop {
        let bytes = read_up_to(&mut taken, chunk)?;
        for element in bytes.chunks_exact(dtype.size) {
            let value = dtype.value(element);
            if !(value.fract() == 0.0 && (0.0..=max).contains(&value)) {
                return Err(Problem::Bad(bad_value(header, values.len(), value, role)));
            }
            values.push(value as u8);
        }
        if bytes.len() < chunk {
            break;
        }
    }
    if (values.len() as u64) * (dtype.size as u64) < expected {
        return Err(Problem::Bad(format!(
            "{} needs {expected} bytes of data, found {}: the array is cut short",
            header.describe(),
            values.len() * dtype.size
        )));
    }
    let one_hot = header.shape.get(1) == Some(&(CLASSES as u64));
    if role == Role::Labels && !one_hot {
        if let Some(at) = values.iter().position(|&v| usize::from(v) >= CLASSES) {
            let label = values[at];
            return Err(Problem::Bad(format!(
                "{}: label {label} is outside 0-9",
                element_name(header, at)
            )));
        }
    }
    Ok(values)
}

/// The message for a value that is no whole number 0-255.
fn bad_value(header: &Header, at: usize, value: f64, role: Role) -> String {
    let what = match role {
        Role::Images => "pixels must be whole numbers 0-255",
        Role::Labels => "labels must be whole numbers 0-9",
    };
    let hint = if role == Role::Images && (0.0..1.0).contains(&value) {
        "; the pixels seem scaled to 0-1: multiply them by 255 and round (NumPy: (x * \
         255).round().astype(np.uint8))"
    } else {
        ""
    };
    // A float32 as float32 prints it (0.011764706, not 0.0117647061124444).
    let shown = match (header.dtype.kind, header.dtype.size) {
        (b'f', 4) => (value as f32).to_string(),
        _ => value.to_string(),
    };
    format!(
        "{} is {shown} in a {} array: {what}{hint}",
        element_name(header, at),
        header.dtype.name()
    )
}

/// An element's place as NumPy indexes it, e.g. `element [3, 12, 5]`.
fn element_name(header: &Header, flat: usize) -> String {
    let mut index = Vec::with_capacity(header.shape.len());
    let mut rest = flat as u64;
    let dims: Vec<u64> = if header.fortran {
        header.shape.clone()
    } else {
        header.shape.iter().rev().copied().collect()
    };
    for d in dims {
        let d = d.max(1);
        index.push(rest % d);
        rest /= d;
    }
    if !header.fortran {
        index.reverse();
    }
    let parts: Vec<String> = index.iter().map(u64::to_string).collect();
    format!("element [{}]", parts.join(", "))
}

/// Fortran-ordered values (the first index varies fastest) in C order (the last one fastest).
fn to_row_major(values: &[u8], shape: &[u64]) -> Vec<u8> {
    let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    // Fortran strides: 1, d0, d0*d1, ...
    let mut strides = vec![1usize; dims.len()];
    for k in 1..dims.len() {
        strides[k] = strides[k - 1] * dims[k - 1];
    }
    let mut index = vec![0usize; dims.len()];
    let mut out = Vec::with_capacity(values.len());
    for _ in 0..values.len() {
        let at: usize = index.iter().zip(&strides).map(|(i, s)| i * s).sum();
        out.push(values[at]);
        // The next C-order index: the last dimension first.
        for k in (0..dims.len()).rev() {
            index[k] += 1;
            if index[k] < dims[k] {
                break;
            }
            index[k] = 0;
        }
    }
    out
}

/// One-hot rows of 10 (each one 1 and nine 0s) as the labels they mark.
fn one_hot(values: &[u8]) -> Result<Vec<u8>, String> {
    values
        .chunks(CLASSES)
        .enumerate()
        .map(|(row, hot)| {
            let ones: Vec<usize> = (0..CLASSES).filter(|&c| hot[c] == 1).collect();
            match ones.as_slice() {
                [label] if hot.iter().all(|&v| v <= 1) => Ok(*label as u8),
                _ => Err(format!(
                    "labels row {row} of 10 is not one-hot (one 1 and nine 0s): {hot:?}"
                )),
            }
        })
        .collect()
}

/// An error's text on one line.
fn one_line(text: &str) -> String {
    text.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version 1 `.npy` of `body` with the given descr and shape.
    fn npy(descr: &str, shape: &str, fortran: bool, body: &[u8]) -> Vec<u8> {
        let order = if fortran { "True" } else { "False" };
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': {order}, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(body);
        bytes
    }

    fn read(bytes: &[u8], role: Role) -> Result<Vec<u8>, String> {
        let io_error = |source| super::super::read_error("a.npy", false, source);
        let len = Some(bytes.len() as u64);
        read_array(&mut &bytes[..], "a.npy", "npy", len, role, &io_error).map_err(|e| e.to_string())
    }

    #[test]
    fn headers() {
        let header =
            parse_header("{'descr': '<f8', 'fortran_order': False, 'shape': (3, 28, 28), }")
                .unwrap();
        assert_eq!(header.shape, vec![3, 28, 28]);
        assert_eq!(header.dtype.name(), "float64");
        assert_eq!(header.describe(), "(3, 28, 28) float64");
        let labels =
            parse_header("{'descr': '|u1', 'fortran_order': False, 'shape': (7,), }").unwrap();
        assert_eq!(labels.describe(), "(7,) uint8");
        assert!(
            parse_header("{'descr': '<c16', 'fortran_order': False, 'shape': (1,), }").is_err()
        );
        assert!(
            parse_header("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }")
                .unwrap_err()
                .contains("structured")
        );
    }

    #[test]
    fn values_of_every_type() {
        let d = |s: &str| parse_dtype(s).unwrap();
        assert_eq!(d("<i2").value(&(-3i16).to_le_bytes()), -3.0);
        assert_eq!(d(">i4").value(&200i32.to_be_bytes()), 200.0);
        assert_eq!(d("<u8").value(&7u64.to_le_bytes()), 7.0);
        assert_eq!(d("<f4").value(&0.5f32.to_le_bytes()), 0.5);
        assert_eq!(d(">f8").value(&255f64.to_be_bytes()), 255.0);
    }

    #[test]
    fn images_and_their_errors() {
        let body: Vec<u8> = (0..2 * PIXELS).map(|i| (i % 256) as u8).collect();
        let flat = npy("|u1", "(2, 784)", false, &body);
        assert_eq!(read(&flat, Role::Images).unwrap(), body);
        let floats: Vec<u8> = body
            .iter()
            .flat_map(|&v| f32::from(v).to_le_bytes())
            .collect();
        assert_eq!(
            read(&npy("<f4", "(2, 28, 28)", false, &floats), Role::Images).unwrap(),
            body
        );

        let mut scaled = floats.clone();
        scaled[4 * 5..4 * 6].copy_from_slice(&0.25f32.to_le_bytes());
        let message = read(&npy("<f4", "(2, 28, 28)", false, &scaled), Role::Images).unwrap_err();
        assert!(message.contains("element [0, 0, 5] is 0.25"), "{message}");
        assert!(message.contains("multiply them by 255"), "{message}");

        let message = read(&npy("|u1", "(2, 32, 32)", false, &body), Role::Images).unwrap_err();
        assert!(message.contains("(2, 32, 32) uint8"), "{message}");
        let message = read(&flat[..flat.len() - 10], Role::Images).unwrap_err();
        assert!(message.contains("cut short"), "{message}");
    }

    #[test]
    fn fortran_order_and_one_hot() {
        // A 2×3 array [[1, 2, 3], [4, 5, 6]] in Fortran order is 1 4 2 5 3 6.
        assert_eq!(
            to_row_major(&[1, 4, 2, 5, 3, 6], &[2, 3]),
            vec![1, 2, 3, 4, 5, 6]
        );
        let hot = npy(
            "<f4",
            "(2, 10)",
            false,
            &[
                0f32, 0., 1., 0., 0., 0., 0., 0., 0., 0., 1., 0., 0., 0., 0., 0., 0., 0., 0., 0.,
            ]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>(),
        );
        assert_eq!(read(&hot, Role::Labels).unwrap(), vec![2, 0]);
        let labels = npy(
            "<i8",
            "(3,)",
            false,
            &[3i64, 10, 1]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>(),
        );
        let message = read(&labels, Role::Labels).unwrap_err();
        assert!(
            message.contains("element [1]: label 10 is outside 0-9"),
            "{message}"
        );
    }

    #[test]
    fn pairs_by_part() {
        let keys = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let keras = keys(&["x_train", "y_train", "x_test", "y_test"]);
        assert_eq!(
            choose_pair(&keras, Part::Train),
            Some(("x_train", Some("y_train")))
        );
        assert_eq!(
            choose_pair(&keras, Part::Test),
            Some(("x_test", Some("y_test")))
        );
        assert!(holds_test_set(&keras));
        let one = keys(&["X", "y"]);
        assert_eq!(choose_pair(&one, Part::Test), Some(("X", Some("y"))));
        assert!(!holds_test_set(&one));
        assert_eq!(
            choose_pair(&keys(&["images"]), Part::Train),
            Some(("images", None))
        );
        assert_eq!(choose_pair(&keys(&["a", "b"]), Part::Train), None);
    }
}
