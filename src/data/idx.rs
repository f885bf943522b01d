//! The IDX format of the original MNIST distribution.
//!
//! An IDX file is a big-endian header followed by raw bytes:
//!
//! - images: magic 2051 (`00 00 08 03`), count, rows, cols, then count × rows × cols pixel bytes;
//! - labels: magic 2049 (`00 00 08 01`), count, then count label bytes.
//!
//! The magic number itself is two zero bytes, an element-type code (`0x08` = unsigned byte) and
//! the number of dimensions, which lets us say precisely what a wrong file is.

use std::path::Path;

use super::{display, write_output, DataError, Input, CLASSES, IMAGE_SIDE, PIXELS};

/// Magic number of an IDX file of unsigned bytes with 3 dimensions (count, rows, cols).
const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned bytes with 1 dimension (count).
const LABELS_MAGIC: u32 = 0x0000_0801;
/// Header sizes: the magic number plus one u32 per dimension.
const IMAGES_HEADER: usize = 16;
const LABELS_HEADER: usize = 8;

/// Reads an IDX images file and returns its pixels (a multiple of 784 bytes, at least one image).
pub(super) fn read_images(mut input: Input) -> Result<Vec<u8>, DataError> {
    let result = images_in(&mut input);
    result.map_err(|err| input.blame_gzip(err))
}

/// Reads an IDX labels file and returns the labels, each checked to be 0..=9.
pub(super) fn read_labels(mut input: Input) -> Result<Vec<u8>, DataError> {
    let result = labels_in(&mut input);
    result.map_err(|err| input.blame_gzip(err))
}

fn images_in(input: &mut Input) -> Result<Vec<u8>, DataError> {
    let header = read_header(input, IMAGES_MAGIC, IMAGES_HEADER, "images")?;
    let count = header[0];
    let (rows, cols) = (header[1], header[2]);
    if rows as usize != IMAGE_SIDE || cols as usize != IMAGE_SIDE {
        return Err(DataError::Header {
            file: input.file.clone(),
            message: format!(
                "images are {rows}x{cols} pixels; MNIST images (and this network's {PIXELS} inputs) \
                 are {IMAGE_SIDE}x{IMAGE_SIDE}"
            ),
        });
    }
    read_body(input, count, PIXELS as u64, IMAGES_HEADER, "images")
}

fn labels_in(input: &mut Input) -> Result<Vec<u8>, DataError> {
    let header = read_header(input, LABELS_MAGIC, LABELS_HEADER, "labels")?;
    let labels = read_body(input, header[0], 1, LABELS_HEADER, "labels")?;
    if let Some(index) = labels
        .iter()
        .position(|&label| usize::from(label) >= CLASSES)
    {
        return Err(DataError::Record {
            file: input.file.clone(),
            record: index + 1,
            message: format!("label {} is outside 0-9", labels[index]),
        });
    }
    Ok(labels)
}

/// Writes an IDX images file (`pixels` is a whole number of 28×28 images).
pub(super) fn write_images(path: &Path, pixels: &[u8]) -> Result<(), DataError> {
    let count = count_u32(path, pixels.len() / PIXELS)?;
    let side = IMAGE_SIDE as u32;
    write_output(path, |out| {
        for value in [IMAGES_MAGIC, count, side, side] {
            out.write_all(&value.to_be_bytes())?;
        }
        out.write_all(pixels)
    })
}

/// Writes an IDX labels file.
pub(super) fn write_labels(path: &Path, labels: &[u8]) -> Result<(), DataError> {
    let count = count_u32(path, labels.len())?;
    write_output(path, |out| {
        for value in [LABELS_MAGIC, count] {
            out.write_all(&value.to_be_bytes())?;
        }
        out.write_all(labels)
    })
}

/// IDX counts are 32-bit.
fn count_u32(path: &Path, count: usize) -> Result<u32, DataError> {
    u32::try_from(count).map_err(|_| DataError::Data {
        file: display(path),
        message: format!(
            "{count} items do not fit in an IDX file (at most {})",
            u32::MAX
        ),
    })
}

/// Reads and checks the header; returns the dimensions that follow the magic number
/// (for images: count, rows, cols; for labels: count).
fn read_header(
    input: &mut Input,
    expected_magic: u32,
    header_len: usize,
    what: &str,
) -> Result<Vec<u32>, DataError> {
    let bytes = input.read_up_to(header_len as u64)?;
    let header_error = |message: String| DataError::Header {
        file: input.file.clone(),
        message,
    };
    // Check the magic number first (if there are 4 bytes), so that a wrong kind of file is
    // reported as such rather than as "too short".
    if bytes.len() >= 4 {
        let magic = be_u32(&bytes[0..4]);
        if magic != expected_magic {
            return Err(header_error(wrong_magic(magic, expected_magic, what)));
        }
    }
    if bytes.len() < header_len {
        return Err(header_error(format!(
            "file is cut short: an IDX {what} header is {header_len} bytes, found only {}",
            bytes.len()
        )));
    }
    Ok(bytes[4..].chunks_exact(4).map(be_u32).collect())
}

/// Reads the `count` items of `item_size` bytes that follow the header, requiring exactly that
/// many bytes: fewer means a truncated file, more means it is not what the header says.
fn read_body(
    input: &mut Input,
    count: u32,
    item_size: u64,
    header_len: usize,
    what: &str,
) -> Result<Vec<u8>, DataError> {
    if count == 0 {
        return Err(DataError::Header {
            file: input.file.clone(),
            message: format!("the header says the file holds 0 {what}"),
        });
    }
    // u32 × 784 always fits in a u64, so this cannot overflow.
    let expected = u64::from(count) * item_size;
    let file = input.file.clone();
    let too_short = |found: u64| DataError::Data {
        file: file.clone(),
        message: format!(
            "file is shorter than its header says: {count} {what} need {expected} bytes after \
             the {header_len}-byte header, found {found}"
        ),
    };
    // A plain file's size is known: refuse a header that claims more than the file holds before
    // reading anything. (A length below the header's is not a real length, e.g. a /proc file.)
    if let Some(len) = input.plain_len.filter(|&len| len >= header_len as u64) {
        let found = len - header_len as u64;
        if found < expected {
            return Err(too_short(found));
        }
    }
    // Read one byte more than needed, to notice trailing data, and no more: a header claiming
    // billions of images stops at the real end of the data (for gzip, the end of what actually
    // decompresses), having allocated only what was there.
    let body = input.read_up_to(expected + 1)?;
    let found = body.len() as u64;
    if found < expected {
        return Err(too_short(found));
    }
    if found > expected {
        return Err(DataError::Data {
            file: input.file.clone(),
            message: format!(
                "unexpected extra data after the {count} {what} the header announces (the data \
                 should be exactly {} bytes long)",
                expected + header_len as u64
            ),
        });
    }
    Ok(body)
}

/// A big-endian u32 from 4 bytes (callers pass exactly 4).
fn be_u32(bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .fold(0u32, |value, &byte| (value << 8) | u32::from(byte))
}

/// Explains a wrong magic number: a swapped images/labels file, another IDX type, or not IDX.
fn wrong_magic(found: u32, expected: u32, what: &str) -> String {
    let [zero1, zero2, type_code, rank] = found.to_be_bytes();
    let is_idx = zero1 == 0 && zero2 == 0;
    let (meaning, hint) = if found == LABELS_MAGIC || found == IMAGES_MAGIC {
        let kind = if found == LABELS_MAGIC {
            "labels"
        } else {
            "images"
        };
        (
            format!("IDX {kind}"),
            "; did you swap the images and labels files?",
        )
    } else if is_idx && type_code == 0x08 {
        (format!("IDX bytes with {rank} dimensions"), "")
    } else if is_idx && (0x09..=0x0e).contains(&type_code) {
        (
            format!("IDX {} elements", type_name(type_code)),
            "; MNIST uses unsigned bytes (type 0x08)",
        )
    } else {
        ("this is not an IDX file".to_string(), "")
    };
    format!(
        "magic number {found} (0x{found:08x}) means {meaning}, expected {expected} \
         (0x{expected:08x}) for IDX {what} ({} dimensions of unsigned bytes){hint}",
        expected & 0xff
    )
}

/// Names of the IDX element types.
fn type_name(code: u8) -> &'static str {
    match code {
        0x08 => "unsigned byte",
        0x09 => "signed byte",
        0x0b => "16-bit integer",
        0x0c => "32-bit integer",
        0x0d => "32-bit float",
        0x0e => "64-bit float",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_endian() {
        assert_eq!(be_u32(&[0, 0, 8, 3]), 2051);
        assert_eq!(be_u32(&[0xee, 0x6b, 0x28, 0x00]), 4_000_000_000);
    }

    #[test]
    fn magic_messages() {
        let swapped = wrong_magic(LABELS_MAGIC, IMAGES_MAGIC, "images");
        assert!(swapped.contains("2049"), "{swapped}");
        assert!(swapped.contains("swap"), "{swapped}");
        assert!(swapped.contains("expected 2051 (0x00000803)"), "{swapped}");
        let rank = wrong_magic(0x0000_0802, IMAGES_MAGIC, "images");
        assert!(rank.contains("2 dimensions"), "{rank}");
        let floats = wrong_magic(0x0000_0d03, IMAGES_MAGIC, "images");
        assert!(floats.contains("32-bit float"), "{floats}");
        let text = wrong_magic(u32::from_be_bytes(*b"labe"), IMAGES_MAGIC, "images");
        assert!(text.contains("not an IDX file"), "{text}");
    }
}
