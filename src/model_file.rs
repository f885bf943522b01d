//! Models that outlive the run: the weights and biases in the safetensors format, which
//! NumPy, PyTorch and candle users load with their own safetensors library.
//!
//! Tensors `W1`, `b1`, `W2`, `b2`, … as in the math: `W[l]` (outputs, inputs) row-major,
//! `b[l]` (outputs), all f32. String metadata: `format`, `inputs`, `hidden` (comma-separated
//! widths), `outputs`, `activation`, plus whatever the caller adds (the training options,
//! the test accuracy).
//!
//! Files are written whole or not at all: into a temporary file in the same directory, then
//! renamed over the target.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::data::{CLASSES, PIXELS};
use crate::error::{Error, Result};
use crate::model::{Activation, Layer, Model, MAX_PARAMETERS};

/// The `format` metadata value this version writes.
pub const FORMAT: &str = "mnist-gpu model 1";

/// The largest file `load` reads: the largest model, plus room for the header.
const MAX_FILE_BYTES: u64 = 4 * MAX_PARAMETERS as u64 + (1 << 20);

/// A model read back, with its metadata.
#[derive(Debug, Clone)]
pub struct ModelFile {
    pub model: Model,
    pub metadata: BTreeMap<String, String>,
}

fn model_error(path: &Path, message: impl Into<String>) -> Error {
    Error::Model {
        path: path.display().to_string(),
        message: message.into(),
    }
}

fn io_error(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Writes `contents` to `path` through a temporary file in the same directory and a rename,
/// so that `path` holds either its old contents or all of the new ones, never a part.
pub fn write_atomically(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if path.is_dir() {
        return Err(model_error(path, "is a directory, not a file name"));
    }
    let mut file = tempfile::Builder::new()
        .prefix(".mnist-gpu-")
        .suffix(".partial")
        .tempfile_in(dir)
        .map_err(|e| io_error(path, e))?;
    file.write_all(contents)
        .and_then(|()| file.as_file().sync_all())
        .map_err(|e| io_error(path, e))?;
    // On error the temporary file is removed when `file` is dropped.
    file.persist(path).map_err(|e| io_error(path, e.error))?;
    Ok(())
}

/// Saves `model` with the standard metadata and `extra` (which may not override it).
pub fn save(path: &Path, model: &Model, extra: &BTreeMap<String, String>) -> Result<()> {
    if !model.is_finite() {
        return Err(model_error(
            path,
            "not saved: the model has NaN or infinite weights",
        ));
    }
    let hidden: Vec<String> = model.hidden().iter().map(|h| h.to_string()).collect();
    let mut metadata: HashMap<String, String> = extra.clone().into_iter().collect();
    metadata.insert("format".into(), FORMAT.into());
    metadata.insert("inputs".into(), PIXELS.to_string());
    metadata.insert("hidden".into(), hidden.join(","));
    metadata.insert("outputs".into(), CLASSES.to_string());
    metadata.insert("activation".into(), model.activation.name().into());

    let mut tensors = Vec::new();
    for (l, layer) in model.layers.iter().enumerate() {
        let w = TensorView::new(
            Dtype::F32,
            vec![layer.outputs, layer.inputs],
            bytemuck::cast_slice(&layer.w),
        );
        let b = TensorView::new(
            Dtype::F32,
            vec![layer.outputs],
            bytemuck::cast_slice(&layer.b),
        );
        let encode = |e| model_error(path, format!("cannot encode layer {}: {e}", l + 1));
        tensors.push((format!("W{}", l + 1), w.map_err(encode)?));
        tensors.push((format!("b{}", l + 1), b.map_err(encode)?));
    }
    let bytes = safetensors::serialize(tensors, Some(metadata))
        .map_err(|e| model_error(path, format!("cannot encode the model: {e}")))?;
    write_atomically(path, &bytes)
}

/// Reads a model saved by `save`, or any safetensors file with f32 tensors `W1`, `b1`, … of
/// the network's shapes (784 inputs, 10 outputs). The activation comes from the metadata;
/// a file without one is taken to be the classic ReLU network.
pub fn load(path: &Path) -> Result<ModelFile> {
    let size = std::fs::metadata(path)
        .map_err(|e| io_error(path, e))?
        .len();
    if path.is_dir() {
        return Err(model_error(path, "is a directory, not a model file"));
    }
    if size > MAX_FILE_BYTES {
        return Err(model_error(
            path,
            format!("{size} bytes is larger than any model this trainer makes"),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| io_error(path, e))?;
    let not_one = |e: safetensors::SafeTensorError| {
        model_error(path, format!("not a safetensors model file ({e})"))
    };
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(not_one)?;
    let tensors = SafeTensors::deserialize(&bytes).map_err(not_one)?;
    let metadata: BTreeMap<String, String> = header
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();

    let activation = match metadata.get("activation").map(String::as_str) {
        None | Some("relu") => Activation::Relu,
        Some("elu") => Activation::Elu,
        Some(other) => {
            return Err(model_error(
                path,
                format!("unknown activation {other:?} in the metadata (expected relu or elu)"),
            ))
        }
    };

    // Layers W1, b1, W2, b2, … until there is no W(l+1); every tensor must be used.
    let mut layers: Vec<Layer> = Vec::new();
    let names = tensors.names();
    if names.is_empty() {
        return Err(model_error(
            path,
            "holds no tensors; expected W1, b1, W2, b2, …",
        ));
    }
    while names.contains(&format!("W{}", layers.len() + 1).as_str()) {
        let l = layers.len() + 1;
        let inputs = layers.last().map_or(PIXELS, |prev| prev.outputs);
        let w = read_f32(path, &tensors, &format!("W{l}"))?;
        let b = read_f32(path, &tensors, &format!("b{l}"))?;
        let outputs = w.0.first().copied().unwrap_or(0);
        if w.0 != [outputs, inputs] || outputs == 0 {
            return Err(model_error(
                path,
                format!("W{l} has shape {:?}, expected [units, {inputs}]", w.0),
            ));
        }
        if b.0 != [outputs] {
            return Err(model_error(
                path,
                format!(
                    "b{l} has shape {:?}, expected [{outputs}] to match W{l}",
                    b.0
                ),
            ));
        }
        layers.push(Layer {
            inputs,
            outputs,
            w: w.1,
            b: b.1,
        });
    }
    if layers.len() < 2 {
        let found = names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        return Err(model_error(
            path,
            format!("expected tensors W1, b1, W2, b2, … (at least two layers), found {found:?}"),
        ));
    }
    if let Some(extra) = names
        .iter()
        .find(|n| !(1..=layers.len()).any(|l| **n == format!("W{l}") || **n == format!("b{l}")))
    {
        return Err(model_error(
            path,
            format!(
                "unexpected tensor {extra:?}; expected only W1, b1 … W{0}, b{0}",
                layers.len()
            ),
        ));
    }
    let outputs = layers.last().map_or(0, |l| l.outputs);
    if outputs != CLASSES {
        return Err(model_error(
            path,
            format!("the last layer has {outputs} outputs, expected {CLASSES} (one per digit)"),
        ));
    }
    let model = Model { layers, activation };
    if let Some(hidden) = metadata.get("hidden") {
        let widths: Vec<String> = model.hidden().iter().map(|h| h.to_string()).collect();
        if *hidden != widths.join(",") {
            return Err(model_error(
                path,
                format!(
                    "metadata says hidden layers {hidden}, but the tensors have {}",
                    widths.join(",")
                ),
            ));
        }
    }
    if !model.is_finite() {
        return Err(model_error(path, "the model has NaN or infinite weights"));
    }
    Ok(ModelFile { model, metadata })
}

/// A tensor's shape and values; it must be f32.
fn read_f32(path: &Path, tensors: &SafeTensors, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
    let tensor = tensors
        .tensor(name)
        .map_err(|_| model_error(path, format!("tensor {name} is missing")))?;
    if tensor.dtype() != Dtype::F32 {
        return Err(model_error(
            path,
            format!("tensor {name} is {:?}, expected F32", tensor.dtype()),
        ));
    }
    // The data may not be 4-byte aligned inside the file, so decode rather than cast.
    let values = tensor
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok((tensor.shape().to_vec(), values))
}
