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

/// What the `format` metadata of every checkpoint (`checkpoint.rs`) starts with; its version
/// follows. A checkpoint is a model file with the run's state beside the model.
pub const CHECKPOINT_FORMAT_NAME: &str = "mnist-gpu checkpoint";

/// Whether a file's metadata says it is a checkpoint (of any version).
pub fn is_checkpoint(metadata: &BTreeMap<String, String>) -> bool {
    metadata
        .get("format")
        .is_some_and(|f| f.starts_with(CHECKPOINT_FORMAT_NAME))
}

/// The largest file `load` reads: a checkpoint of the largest model (the model, Adam's two
/// moments, early stopping's best model), plus room for its order of samples and its header.
const MAX_FILE_BYTES: u64 = 4 * 4 * MAX_PARAMETERS as u64 + (64 << 20);

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
        .prefix(&partial_prefix(path))
        .suffix(PARTIAL)
        .rand_bytes(RANDOM_CHARS)
        .tempfile_in(dir)
        .map_err(|e| io_error(path, without_temporary_name(e)))?;
    // tempfile makes its files readable by their owner only; the result is an ordinary file.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::Permissions::from_mode(0o644);
        file.as_file()
            .set_permissions(mode)
            .map_err(|e| io_error(path, e))?;
    }
    file.write_all(contents)
        .and_then(|()| file.as_file().sync_all())
        .map_err(|e| io_error(path, e))?;
    // On error the temporary file is removed when `file` is dropped.
    file.persist(path).map_err(|e| io_error(path, e.error))?;
    // The rename is on disk once the directory is.
    #[cfg(unix)]
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(path, e))?;
    Ok(())
}

/// The system's error without the temporary file's name, which tempfile appends (`… at path
/// "…"`): the error is about `path`, which the user named, not a hidden `.NAME.…partial`.
fn without_temporary_name(e: std::io::Error) -> std::io::Error {
    let text = e.to_string();
    match text.split_once(" at path ") {
        Some((reason, _)) => std::io::Error::new(e.kind(), reason.to_string()),
        None => e,
    }
}

/// How the temporary files `write_atomically` makes for `path` are named: `.NAME.` then random
/// characters then `PARTIAL`, beside it.
fn partial_prefix(path: &Path) -> String {
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    format!(".{name}.")
}

const PARTIAL: &str = ".partial";
/// The random characters between the prefix and the suffix of a temporary file's name.
const RANDOM_CHARS: usize = 6;

/// Removes the temporary files that writes of `path` left behind when their process was killed
/// mid-write; returns how many.
pub fn remove_partials(path: &Path) -> usize {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let prefix = partial_prefix(path);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            // Exactly `.NAME.` + tempfile's six random characters + `.partial`.
            let name = e.file_name().to_string_lossy().into_owned();
            name.len() == prefix.len() + RANDOM_CHARS + PARTIAL.len()
                && name.starts_with(&prefix)
                && name.ends_with(PARTIAL)
        })
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

/// Saves `model` with the standard metadata and `extra` (which may not override it).
pub fn save(path: &Path, model: &Model, extra: &BTreeMap<String, String>) -> Result<()> {
    if !model.is_finite() {
        return Err(model_error(
            path,
            "not saved: the model has NaN or infinite weights",
        ));
    }
    let tensors = named_tensors("", model);
    let bytes = encode(path, &tensors, metadata(model, FORMAT, extra))?;
    write_atomically(path, &bytes)
}

/// A tensor to write: its name, shape and f32 or u32 values.
pub(crate) struct Named {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Values,
}

pub(crate) enum Values {
    F32(Vec<f32>),
    F64(Vec<f64>),
    U32(Vec<u32>),
}

/// The model's tensors `W1`, `b1`, … with their names prefixed by `prefix`.
pub(crate) fn named_tensors(prefix: &str, model: &Model) -> Vec<Named> {
    model
        .layers
        .iter()
        .enumerate()
        .flat_map(|(l, layer)| {
            [
                Named {
                    name: format!("{prefix}W{}", l + 1),
                    shape: vec![layer.outputs, layer.inputs],
                    data: Values::F32(layer.w.clone()),
                },
                Named {
                    name: format!("{prefix}b{}", l + 1),
                    shape: vec![layer.outputs],
                    data: Values::F32(layer.b.clone()),
                },
            ]
        })
        .collect()
}

/// The metadata every file of a model carries (`format`, `inputs`, `hidden`, `outputs`,
/// `activation`) and `extra`, which may not override it.
pub(crate) fn metadata(
    model: &Model,
    format: &str,
    extra: &BTreeMap<String, String>,
) -> HashMap<String, String> {
    let hidden: Vec<String> = model.hidden().iter().map(|h| h.to_string()).collect();
    let mut metadata: HashMap<String, String> = extra.clone().into_iter().collect();
    metadata.insert("format".into(), format.into());
    metadata.insert("inputs".into(), PIXELS.to_string());
    metadata.insert("hidden".into(), hidden.join(","));
    metadata.insert("outputs".into(), CLASSES.to_string());
    metadata.insert("activation".into(), model.activation.name().into());
    metadata
}

/// The safetensors bytes of `tensors` and `metadata`.
pub(crate) fn encode(
    path: &Path,
    tensors: &[Named],
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>> {
    let views = tensors
        .iter()
        .map(|t| {
            let (dtype, bytes): (Dtype, &[u8]) = match &t.data {
                Values::F32(v) => (Dtype::F32, bytemuck::cast_slice(v)),
                Values::F64(v) => (Dtype::F64, bytemuck::cast_slice(v)),
                Values::U32(v) => (Dtype::U32, bytemuck::cast_slice(v)),
            };
            TensorView::new(dtype, t.shape.clone(), bytes)
                .map(|view| (t.name.clone(), view))
                .map_err(|e| model_error(path, format!("cannot encode {}: {e}", t.name)))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, Some(metadata))
        .map_err(|e| model_error(path, format!("cannot encode the file: {e}")))
}

/// Reads a model saved by `save`, or any safetensors file with f32 tensors `W1`, `b1`, … of
/// the network's shapes (784 inputs, 10 outputs). The activation comes from the metadata;
/// a file without one is taken to be the classic ReLU network.
pub fn load(path: &Path) -> Result<ModelFile> {
    parse(path, &read(path)?)
}

/// The bytes of a model file or checkpoint, refusing a directory or a file larger than any
/// this trainer writes.
pub fn read(path: &Path) -> Result<Vec<u8>> {
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
    std::fs::read(path).map_err(|e| io_error(path, e))
}

/// `load`'s work on the bytes of the file at `path`. A checkpoint (`checkpoint.rs`) reads as
/// its model: its other tensors (`optimizer.*`, `best.*`, `order`, `history`) are passed over.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<ModelFile> {
    let not_one = |e: safetensors::SafeTensorError| {
        model_error(path, format!("not a safetensors model file ({e})"))
    };
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(not_one)?;
    let tensors = SafeTensors::deserialize(bytes).map_err(not_one)?;
    let metadata: BTreeMap<String, String> = header
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let activation = activation_of(&metadata).map_err(|m| model_error(path, m))?;
    let layers = read_layers(path, &tensors)?;
    check_names(&tensors, layers.len(), is_checkpoint(&metadata))
        .map_err(|m| model_error(path, m))?;
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

/// The activation the metadata names; a file without one is the classic ReLU network.
fn activation_of(metadata: &BTreeMap<String, String>) -> std::result::Result<Activation, String> {
    match metadata.get("activation").map(String::as_str) {
        None | Some("relu") => Ok(Activation::Relu),
        Some("elu") => Ok(Activation::Elu),
        Some(other) => Err(format!(
            "unknown activation {other:?} in the metadata (expected relu or elu)"
        )),
    }
}

/// Layers W1, b1, W2, b2, … until there is no W(l+1), each taking the previous one's outputs
/// (784 for the first); at least two.
fn read_layers(path: &Path, tensors: &SafeTensors) -> Result<Vec<Layer>> {
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
        let w = read_f32(path, tensors, &format!("W{l}"))?;
        let b = read_f32(path, tensors, &format!("b{l}"))?;
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
    Ok(layers)
}

/// Every tensor must be a layer's (of `layers`), or, in a checkpoint, the run's state.
fn check_names(
    tensors: &SafeTensors,
    layers: usize,
    checkpoint: bool,
) -> std::result::Result<(), String> {
    let run_state = |n: &str| {
        checkpoint
            && (n.starts_with("optimizer.")
                || n.starts_with("best.")
                || n == "order"
                || n == "history")
    };
    let names = tensors.names();
    match names.iter().find(|n| {
        !run_state(n) && !(1..=layers).any(|l| **n == format!("W{l}") || **n == format!("b{l}"))
    }) {
        Some(extra) => Err(format!(
            "unexpected tensor {extra:?}; expected only W1, b1 … W{layers}, b{layers}"
        )),
        None => Ok(()),
    }
}

/// A tensor's shape and values; it must be f32.
pub(crate) fn read_f32(
    path: &Path,
    tensors: &SafeTensors,
    name: &str,
) -> Result<(Vec<usize>, Vec<f32>)> {
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
