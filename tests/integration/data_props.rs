//! Property tests of the data readers:
//!
//! 1. any bytes given to the CSV and IDX readers (plain, or wrapped in gzip) give a dataset that
//!    holds together or a one-line error naming the input: never a panic;
//! 2. any valid dataset written by `write_csv` / `write_idx` reads back identically, in every
//!    format variant, through the path loaders and through the reader functions.
//!
//! Case counts are kept small so that the file runs in seconds in release mode; raise them with
//! `PROPTEST_CASES=...` for a longer search.

use std::io::{Read, Write};
use std::path::Path;

use proptest::collection::vec;
use proptest::prelude::*;

use mnist_gpu::data::{
    load, load_csv, load_idx, read_csv, read_idx_images, read_idx_labels, write_csv, write_idx,
    DataError, Dataset, CLASSES, PIXELS,
};

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// What every reader promises: a consistent dataset, or an error on one line that starts with
/// the input's name.
fn check_result<T>(
    result: Result<T, DataError>,
    name: &str,
    ok: impl FnOnce(T) -> Result<(), TestCaseError>,
) -> Result<(), TestCaseError> {
    match result {
        Ok(value) => ok(value),
        Err(err) => {
            let message = err.to_string();
            prop_assert!(
                message.starts_with(&format!("{name}: ")),
                "does not name the input: {message}"
            );
            prop_assert!(!message.contains('\n'), "not one line: {message:?}");
            Ok(())
        }
    }
}

fn check_dataset(result: Result<Dataset, DataError>, name: &str) -> Result<(), TestCaseError> {
    check_result(result, name, |data| {
        prop_assert!(!data.images.is_empty());
        prop_assert_eq!(data.images.len() % PIXELS, 0);
        if let Some(labels) = &data.labels {
            prop_assert_eq!(labels.len(), data.len());
            prop_assert!(labels.iter().all(|&l| usize::from(l) < CLASSES));
        }
        Ok(())
    })
}

fn check_images(bytes: &[u8], name: &str) -> Result<(), TestCaseError> {
    check_result(read_idx_images(bytes, name), name, |pixels| {
        prop_assert!(!pixels.is_empty());
        prop_assert_eq!(pixels.len() % PIXELS, 0);
        Ok(())
    })
}

fn check_labels(bytes: &[u8], name: &str) -> Result<(), TestCaseError> {
    check_result(read_idx_labels(bytes, name), name, |labels| {
        prop_assert!(!labels.is_empty());
        prop_assert!(labels.iter().all(|&l| usize::from(l) < CLASSES));
        Ok(())
    })
}

/// Bytes that start like an IDX file (right or nearly right magic, small or huge dimensions)
/// followed by anything: gets past the first checks far more often than uniform noise.
fn idx_like() -> impl Strategy<Value = Vec<u8>> {
    let magic = prop_oneof![
        Just(0x0803u32),
        Just(0x0801u32),
        Just(0x0802u32),
        any::<u32>()
    ];
    let dimension = prop_oneof![0u32..4, Just(28u32), Just(u32::MAX), any::<u32>()];
    (
        magic,
        vec(dimension, 0..4),
        vec(any::<u8>(), 0..2000),
        any::<bool>(),
    )
        .prop_map(|(magic, dims, body, cut)| {
            let mut bytes = magic.to_be_bytes().to_vec();
            for d in dims {
                bytes.extend_from_slice(&d.to_be_bytes());
            }
            bytes.extend_from_slice(&body);
            if cut {
                bytes.truncate(bytes.len() / 2);
            }
            bytes
        })
}

/// Text that looks like CSV: lines of number-ish tokens, header words and junk, joined by
/// commas, sometimes with quotes and CR. Mostly fails, but at every place in the parser.
fn csv_like() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        (0u32..300).prop_map(|n| n.to_string()),
        Just("label".to_string()),
        Just("pixel0".to_string()),
        Just("-1".to_string()),
        Just("nan".to_string()),
        Just("\"".to_string()),
        Just(String::new()),
        "[ -~]{0,6}",
    ];
    let line = prop_oneof![
        vec(token.clone(), 0..12).prop_map(|t| t.join(",")),
        // A full-width row, sometimes with one bad field.
        (0usize..2, vec(0u8..=255, PIXELS), token, 0..PIXELS + 1).prop_map(
            |(label, pixels, bad, at)| {
                let mut fields: Vec<String> = (0..label).map(|_| "7".to_string()).collect();
                fields.extend(pixels.iter().map(u8::to_string));
                if at < fields.len() {
                    fields[at] = bad;
                }
                fields.join(",")
            }
        ),
    ];
    (vec(line, 0..4), any::<bool>()).prop_map(|(lines, crlf)| {
        let end = if crlf { "\r\n" } else { "\n" };
        lines.join(end).into_bytes()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_bytes_never_panic(bytes in vec(any::<u8>(), 0..3000)) {
        let packed = gzip(&bytes);
        check_dataset(read_csv(&bytes[..], "in.csv"), "in.csv")?;
        check_dataset(read_csv(&packed[..], "in.csv.gz"), "in.csv.gz")?;
        check_images(&bytes, "images")?;
        check_images(&packed, "images.gz")?;
        check_labels(&bytes, "labels")?;
        check_labels(&packed, "labels.gz")?;
        // Gzip cut short, and starting with the gzip magic but not gzip.
        let cut = &packed[..packed.len() / 2];
        check_dataset(read_csv(cut, "cut.csv.gz"), "cut.csv.gz")?;
        check_images(cut, "cut-images.gz")?;
        check_labels(cut, "cut-labels.gz")?;
        let mut fake = vec![0x1f, 0x8b];
        fake.extend_from_slice(&bytes);
        check_dataset(read_csv(&fake[..], "fake.csv.gz"), "fake.csv.gz")?;
        check_images(&fake, "fake-images.gz")?;
        check_labels(&fake, "fake-labels.gz")?;
    }

    #[test]
    fn idx_like_bytes_never_panic(bytes in idx_like()) {
        check_images(&bytes, "images")?;
        check_labels(&bytes, "labels")?;
        let packed = gzip(&bytes);
        check_images(&packed, "images.gz")?;
        check_labels(&packed, "labels.gz")?;
    }

    #[test]
    fn csv_like_text_never_panics(bytes in csv_like()) {
        check_dataset(read_csv(&bytes[..], "in.csv"), "in.csv")?;
        check_dataset(read_csv(&gzip(&bytes)[..], "in.csv.gz"), "in.csv.gz")?;
    }
}

// ---------------------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------------------

/// A dataset of 1 to 9 images (1, non-powers of two, ...) of arbitrary pixels and labels.
fn dataset() -> impl Strategy<Value = Dataset> {
    (1usize..10).prop_flat_map(|n| {
        (vec(any::<u8>(), n * PIXELS), vec(0..CLASSES as u8, n)).prop_map(|(images, labels)| {
            Dataset {
                images,
                labels: Some(labels),
                source: "generated".to_string(),
            }
        })
    })
}

/// A reader that hands out one byte per call, the least any reader may do.
struct Trickle<'a>(&'a [u8]);

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match (self.0.split_first(), buf.first_mut()) {
            (Some((&byte, rest)), Some(slot)) => {
                *slot = byte;
                self.0 = rest;
                Ok(1)
            }
            _ => Ok(0),
        }
    }
}

fn assert_same(read: &Dataset, expected: &Dataset, what: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(read.len(), expected.len(), "{}", what);
    prop_assert!(read.images == expected.images, "{}: images differ", what);
    prop_assert_eq!(&read.labels, &expected.labels, "{}", what);
    Ok(())
}

fn read_bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn csv_round_trips_in_every_variant(data in dataset()) {
        let dir = tempfile::tempdir().unwrap();
        let unlabeled = Dataset { labels: None, ..data.clone() };
        for header in [true, false] {
            for expected in [&data, &unlabeled] {
                for gz in [false, true] {
                    let name = format!(
                        "h{}-l{}.csv{}",
                        u8::from(header),
                        u8::from(expected.labels.is_some()),
                        if gz { ".gz" } else { "" }
                    );
                    let path = dir.path().join(&name);
                    write_csv(expected, &path, header).unwrap();
                    if gz {
                        prop_assert!(read_bytes(&path).starts_with(&[0x1f, 0x8b]), "{}", name);
                    }
                    let read = load_csv(&path).unwrap();
                    assert_same(&read, expected, &name)?;
                    prop_assert_eq!(read.source, path.display().to_string());
                    assert_same(&load(&path).unwrap(), expected, &name)?;
                    let bytes = read_bytes(&path);
                    let read = read_csv(Trickle(&bytes), &name).unwrap();
                    assert_same(&read, expected, &name)?;
                    prop_assert_eq!(read.source, name);
                }
            }
        }
    }

    #[test]
    fn idx_round_trips_plain_and_gzip(data in dataset()) {
        let dir = tempfile::tempdir().unwrap();
        let unlabeled = Dataset { labels: None, ..data.clone() };
        for suffix in ["", ".gz"] {
            let images = dir.path().join(format!("d-images-idx3-ubyte{suffix}"));
            let labels = dir.path().join(format!("d-labels-idx1-ubyte{suffix}"));
            write_idx(&data, &images, &labels).unwrap();
            let what = images.display().to_string();
            assert_same(&load_idx(&images, Some(&labels)).unwrap(), &data, &what)?;
            assert_same(&load(&images).unwrap(), &data, &what)?;
            assert_same(&load_idx(&images, None).unwrap(), &unlabeled, &what)?;
            let pixels = read_idx_images(Trickle(&read_bytes(&images)), "images").unwrap();
            prop_assert!(pixels == data.images, "{}: images differ", what);
            let read = read_idx_labels(Trickle(&read_bytes(&labels)), "labels").unwrap();
            prop_assert_eq!(Some(read), data.labels.clone(), "{}", what);
        }
    }
}
