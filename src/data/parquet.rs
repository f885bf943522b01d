//! Hugging Face `datasets` parquet files, as the Hub holds MNIST and Fashion-MNIST
//! (`train-00000-of-00001.parquet`, `test-00000-of-00001.parquet`): a column `image`, a struct of
//! the picture's encoded `bytes` (PNG) and its `path`, and a column `label` (int64).
//!
//! Read with the `parquet` crate's row API (no Arrow). Only the `image` and `label` columns are
//! read; the pictures go through [`super::picture::prepare`], so that 28×28 MNIST PNGs come back
//! byte for byte. Compressions read: none, snappy (pyarrow's default, which `datasets` uses) and
//! gzip; others (zstd, brotli, lz4) are refused in one line that says how to rewrite the file.

use ::parquet::basic::Compression;
use ::parquet::file::reader::{FileReader, SerializedFileReader};
use ::parquet::record::{Field, Row};
use ::parquet::schema::types::Type;
use rayon::prelude::*;

use super::picture::{self, Prepared};
use super::{DataError, Dataset, Loaded, Origin, CLASSES, PIXELS};

/// The columns read.
const IMAGE: &str = "image";
const LABEL: &str = "label";

/// Reads a parquet file's `image` and `label` columns (the whole file's bytes; `file` names it).
pub(super) fn read(bytes: Vec<u8>, file: &str) -> Result<Loaded, DataError> {
    let error = |message: String| DataError::At {
        file: file.to_string(),
        place: "parquet".to_string(),
        message,
    };
    let reader = SerializedFileReader::new(bytes::Bytes::from(bytes))
        .map_err(|err| error(format!("cannot read the file: {}", one_line(&err))))?;
    let projection = projection(&reader).map_err(&error)?;
    check_compression(&reader).map_err(&error)?;
    let labelled = projection.get_fields().iter().any(|f| f.name() == LABEL);
    let rows = reader
        .get_row_iter(Some(projection))
        .map_err(|err| error(format!("cannot read the rows: {}", one_line(&err))))?;
    let mut pictures: Vec<Vec<u8>> = Vec::new();
    let mut labels: Vec<u8> = Vec::new();
    for (index, row) in rows.enumerate() {
        let row = row.map_err(|err| error(format!("row {index}: {}", one_line(&err))))?;
        let (picture, label) = cells(&row, labelled).map_err(|message| DataError::At {
            file: file.to_string(),
            place: format!("row {index}"),
            message,
        })?;
        pictures.push(picture);
        labels.extend(label);
    }
    if pictures.is_empty() {
        return Err(error("the file holds no rows".to_string()));
    }
    let prepared = prepare_all(&pictures, file)?;
    let mut images = Vec::with_capacity(prepared.len() * PIXELS);
    let mut origins = Vec::with_capacity(prepared.len());
    for (index, p) in prepared.into_iter().enumerate() {
        images.extend_from_slice(&p.pixels);
        origins.push(Origin {
            name: format!("{file} row {index}"),
            inverted: p.inverted,
        });
    }
    Ok(Loaded {
        dataset: Dataset {
            images,
            labels: labelled.then_some(labels),
            source: file.to_string(),
        },
        pictures: origins,
        notes: Vec::new(),
    })
}

/// The file's `image` and `label` columns (the label's may be missing: an unlabelled set), or
/// why it has no `image` column.
fn projection(reader: &SerializedFileReader<bytes::Bytes>) -> Result<Type, String> {
    let schema = reader.metadata().file_metadata().schema();
    let fields: Vec<_> = schema
        .get_fields()
        .iter()
        .filter(|f| f.name() == IMAGE || f.name() == LABEL)
        .cloned()
        .collect();
    if !fields.iter().any(|f| f.name() == IMAGE) {
        let names: Vec<&str> = schema.get_fields().iter().map(|f| f.name()).collect();
        return Err(format!(
            "no \"image\" column (it has {}): read are Hugging Face datasets of pictures, with \
             an \"image\" column of {{bytes, path}} and a \"label\" column",
            names.join(", ")
        ));
    }
    Type::group_type_builder(schema.name())
        .with_fields(fields)
        .build()
        .map_err(|err| one_line(&err))
}

/// Refuses, before reading, a column compressed with a codec this build does not read.
fn check_compression(reader: &SerializedFileReader<bytes::Bytes>) -> Result<(), String> {
    for group in reader.metadata().row_groups() {
        for column in group.columns() {
            let path = column.column_path().string();
            let read = path == LABEL || path.starts_with(IMAGE);
            match column.compression() {
                Compression::UNCOMPRESSED | Compression::SNAPPY | Compression::GZIP(_) => {}
                other if read => {
                    return Err(format!(
                        "column {path} is compressed with {}; read are uncompressed, snappy \
                         (pyarrow's default) and gzip: rewrite it with pyarrow, \
                         pq.write_table(pq.read_table(\"in.parquet\"), \"out.parquet\")",
                        codec_name(other)
                    ))
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// A compression codec's name, without its level.
fn codec_name(codec: Compression) -> &'static str {
    match codec {
        Compression::ZSTD(_) => "zstd",
        Compression::BROTLI(_) => "brotli",
        Compression::LZ4 | Compression::LZ4_RAW => "lz4",
        Compression::LZO => "lzo",
        Compression::UNCOMPRESSED => "nothing",
        Compression::SNAPPY => "snappy",
        Compression::GZIP(_) => "gzip",
    }
}

/// One row's picture bytes and label (none when the file has no label column).
fn cells(row: &Row, labelled: bool) -> Result<(Vec<u8>, Option<u8>), String> {
    let mut picture = None;
    let mut label = None;
    for (name, field) in row.get_column_iter() {
        match name.as_str() {
            IMAGE => picture = Some(picture_bytes(field)?),
            LABEL => label = Some(label_of(field)?),
            _ => {}
        }
    }
    let picture = picture.ok_or("the image is missing")?;
    if labelled && label.is_none() {
        return Err("the label is missing".to_string());
    }
    Ok((picture, label))
}

/// The encoded picture of an `image` cell: `{bytes, path}` as `datasets` writes it, or bytes.
fn picture_bytes(field: &Field) -> Result<Vec<u8>, String> {
    match field {
        Field::Bytes(bytes) => Ok(bytes.data().to_vec()),
        Field::Group(image) => {
            let mut path = None;
            for (name, part) in image.get_column_iter() {
                match (name.as_str(), part) {
                    ("bytes", Field::Bytes(bytes)) => return Ok(bytes.data().to_vec()),
                    ("path", Field::Str(p)) => path = Some(p.clone()),
                    _ => {}
                }
            }
            Err(match path {
                Some(path) => format!(
                    "the image has no bytes, only a path ({path:?}); write the dataset with its \
                     pictures embedded (datasets' to_parquet embeds them)"
                ),
                None => "the image has no bytes".to_string(),
            })
        }
        Field::Null => Err("the image is empty (null)".to_string()),
        other => Err(format!("the image is {other}, not a picture's bytes")),
    }
}

/// A `label` cell as a digit 0-9.
fn label_of(field: &Field) -> Result<u8, String> {
    let value: i64 = match *field {
        Field::Byte(v) => v.into(),
        Field::Short(v) => v.into(),
        Field::Int(v) => v.into(),
        Field::Long(v) => v,
        Field::UByte(v) => v.into(),
        Field::UShort(v) => v.into(),
        Field::UInt(v) => v.into(),
        Field::ULong(v) => i64::try_from(v).unwrap_or(i64::MAX),
        Field::Null => return Err("the label is empty (null)".to_string()),
        ref other => return Err(format!("the label is {other}, not an integer")),
    };
    u8::try_from(value)
        .ok()
        .filter(|&v| usize::from(v) < CLASSES)
        .ok_or_else(|| format!("label {value} is outside 0-9"))
}

/// Every picture prepared (in parallel); the first that fails, by row, is the error.
fn prepare_all(pictures: &[Vec<u8>], file: &str) -> Result<Vec<Prepared>, DataError> {
    pictures
        .par_iter()
        .enumerate()
        .map(|(index, bytes)| {
            picture::prepare(bytes, file).map_err(|err| match err {
                DataError::At { file, message, .. } => DataError::At {
                    file,
                    place: format!("row {index}"),
                    message: format!("picture: {message}"),
                },
                other => other,
            })
        })
        .collect()
}

/// A parquet error's text on one line.
fn one_line(err: &impl std::fmt::Display) -> String {
    err.to_string().replace('\n', " ")
}
