//! Checkpoints (`--checkpoint FILE --checkpoint-every N|epoch`): the whole training state in one
//! safetensors file, written atomically (a temporary file, fsync, rename, fsync of the
//! directory), so that a run stopped at any instant — Ctrl-C, `kill -9`, a lost machine — leaves
//! the previous checkpoint whole, and `--resume FILE` continues as if it had never stopped.
//!
//! A checkpoint is a model file (tensors `W1`, `b1`, …, the same metadata), which `predict`,
//! `eval`, NumPy and PyTorch read as one, with more tensors and one more metadata entry:
//! - `optimizer.W1.velocity` (momentum), or `optimizer.W1.m` and `optimizer.W1.v` (Adam), … one
//!   per moment and parameter tensor, shaped like the tensor;
//! - `order`: this epoch's order of the training samples (u32, positions in the image pool);
//! - `best.W1`, `best.b1`, …: early stopping's best model so far, when there is one;
//! - `history`: the progress lines, one row each (f64: step, steps, epoch, mean train loss and
//!   accuracy since the previous line, dev accuracy, dev loss, α, samples per second; NaN where
//!   a line has no value);
//! - `checkpoint`: JSON with the format version, the run's options, the training file's size and
//!   SHA-256, the step, epoch and position in the epoch, α, Adam's step count, the random
//!   streams' seeds and positions, early stopping's state, and the sums of the steps since the
//!   last progress line (`window`, whose mean the next line shows; absent in older files).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rand_chacha::ChaCha12Rng;
use safetensors::tensor::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::backend::{Backend, BatchStats};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::model_file::{self, named_tensors, read_f32, Named, Values, CHECKPOINT_FORMAT_NAME};
use crate::optimizer::{OptimizerKind, OptimizerState};
use crate::options::{Every, RunOptions};
use crate::train::{Checkpointer, Progress, RunState, Window};

/// How the warps of `--augment affine|elastic` are drawn (`augment::Warps`: from a key a step).
/// A warped run's checkpoint without it drew them on the host, image by image, from the stream
/// itself; those are refused rather than resumed with other warps.
const WARPS: &str = "keyed";

/// The version this trainer writes and reads.
pub const VERSION: u64 = 1;

/// The `format` metadata of the checkpoints this trainer writes.
pub fn format() -> String {
    format!("{CHECKPOINT_FORMAT_NAME} {VERSION}")
}

/// A training file's identity: how it is named, its size and the SHA-256 of its bytes (an IDX
/// file's images and labels, in that order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileId {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

impl FileId {
    pub fn of_bytes(name: &str, parts: &[&[u8]]) -> FileId {
        let mut hash = Sha256::new();
        for part in parts {
            hash.update(part);
        }
        FileId {
            name: name.to_string(),
            bytes: parts.iter().map(|p| p.len() as u64).sum(),
            sha256: hex(&hash.finalize()),
        }
    }

    /// The identity of the files `data::load(path)` reads, named by the path in full (so a
    /// resumed run finds it from any directory). A folder's pictures are each preceded by their
    /// path in the folder: a picture moved to another class folder changes its label.
    pub fn of_file(path: &Path) -> Result<FileId> {
        let mut contents = Vec::new();
        for file in crate::data::files_of(path) {
            if path.is_dir() {
                let inside = file.strip_prefix(path).unwrap_or(&file);
                contents.push(inside.to_string_lossy().as_bytes().to_vec());
            }
            contents.push(std::fs::read(&file).map_err(|source| Error::Io {
                path: file.display().to_string(),
                source,
            })?);
        }
        let parts: Vec<&[u8]> = contents.iter().map(Vec::as_slice).collect();
        let full = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        Ok(FileId::of_bytes(&full.display().to_string(), &parts))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What `--checkpoint` writes beside the state: where, and what identifies the run. The training
/// loop hands it the state (`train::Checkpointer`) as `options.checkpoint_every` says, and at
/// the end.
#[derive(Debug, Clone)]
pub struct Checkpointing {
    pub path: PathBuf,
    /// The run's options (a resumed run must not contradict them); `optimizer` names the
    /// moments' tensors, `checkpoint_every` says how often the state is written.
    pub options: RunOptions,
    pub train_file: FileId,
}

impl Checkpointer for Checkpointing {
    fn due_after_step(&self, step: usize) -> bool {
        self.options
            .checkpoint_every
            .is_some_and(|every| every.after_step(step))
    }

    fn due_at_epoch_end(&self) -> bool {
        self.options.checkpoint_every == Some(Every::Epoch)
    }

    fn save(&mut self, backend: &mut dyn Backend, state: &RunState) -> Result<()> {
        save(self, backend, state)
    }
}

/// A checkpoint read back.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub model: Model,
    pub optimizer: OptimizerState,
    pub options: RunOptions,
    pub train_file: FileId,
    pub state: RunState,
}

/// The parameter tensors' names, in order: W1, b1, W2, b2, …
fn parameter_names(model: &Model) -> Vec<String> {
    (1..=model.layers.len())
        .flat_map(|l| [format!("W{l}"), format!("b{l}")])
        .collect()
}

/// Writes the checkpoint of `state`, with the backend's model and optimizer state, to
/// `checkpointing.path`: whole, or not at all (the previous checkpoint stays).
pub fn save(
    checkpointing: &Checkpointing,
    backend: &mut dyn Backend,
    state: &RunState,
) -> Result<()> {
    let model = backend.model()?;
    let optimizer = backend.optimizer_state()?;
    write(checkpointing, &model, &optimizer, state)
}

/// Writes the checkpoint of `state` with `model` and `optimizer`'s state (`save`'s, for a run
/// whose model is not in a backend: `serve`'s page's).
pub fn write(
    checkpointing: &Checkpointing,
    model: &Model,
    optimizer: &OptimizerState,
    state: &RunState,
) -> Result<()> {
    let path = &checkpointing.path;
    let failed = |message: String| Error::Model {
        path: path.display().to_string(),
        message,
    };
    if !model.is_finite() {
        return Err(failed(
            "no checkpoint written: the model has NaN or infinite weights".into(),
        ));
    }
    let tensors =
        state_tensors(model, checkpointing.options.optimizer, optimizer, state).map_err(failed)?;
    // Through `Value`, whose keys are sorted: the bytes of the first checkpoints' JSON.
    let run = json!({
        "version": VERSION,
        "options": checkpointing.options,
        "train_file": checkpointing.train_file,
        "optimizer_steps": optimizer.steps,
        "state": state_json(state),
        "warps": WARPS,
    });
    let mut extra = BTreeMap::new();
    extra.insert("checkpoint".to_string(), run.to_string());
    extra.insert("steps".to_string(), state.step.to_string());
    let bytes = model_file::encode(
        path,
        &tensors,
        model_file::metadata(model, &format(), &extra),
    )?;
    model_file::write_atomically(path, &bytes)
}

/// Every tensor of a checkpoint: the model's, the optimizer's moments (one per parameter
/// tensor each, named by `kind`), the order of samples, early stopping's best model and the
/// progress lines.
fn state_tensors(
    model: &Model,
    kind: OptimizerKind,
    optimizer: &OptimizerState,
    state: &RunState,
) -> std::result::Result<Vec<Named>, String> {
    let names = kind.moments();
    let mut tensors = named_tensors("", model);
    let shapes: Vec<Vec<usize>> = tensors.iter().map(|t| t.shape.clone()).collect();
    for ((param, shape), saved) in parameter_names(model)
        .iter()
        .zip(shapes)
        .zip(&optimizer.tensors)
    {
        if saved.len() != names.len() {
            return Err(format!(
                "the optimizer has {} moment(s) per tensor, {} expected",
                saved.len(),
                names.len()
            ));
        }
        for (moment, values) in names.iter().zip(saved) {
            tensors.push(Named {
                name: format!("optimizer.{param}.{moment}"),
                shape: shape.clone(),
                data: Values::F32(values.clone()),
            });
        }
    }
    tensors.push(Named {
        name: "order".into(),
        shape: vec![state.order.len()],
        data: Values::U32(state.order.clone()),
    });
    if let Some((_, _, best)) = &state.best {
        tensors.extend(named_tensors("best.", best));
    }
    tensors.push(Named {
        name: "history".into(),
        shape: vec![state.history.len(), HISTORY_COLUMNS],
        data: Values::F64(state.history.iter().flat_map(history_row).collect()),
    });
    Ok(tensors)
}

/// Whether a file read as a model is a checkpoint (by its `format`).
pub fn is_checkpoint(file: &model_file::ModelFile) -> bool {
    model_file::is_checkpoint(&file.metadata)
}

/// Reads a checkpoint `save` wrote, refusing anything damaged with one line naming the file
/// and what is wrong.
pub fn load(path: &Path) -> Result<Checkpoint> {
    let bytes = model_file::read(path)?;
    let file = model_file::parse(path, &bytes)?;
    parse(path, &bytes, file)
}

/// The `checkpoint` metadata: the run beside its tensors.
struct Run {
    options: RunOptions,
    train_file: FileId,
    optimizer_steps: u64,
    state: Value,
}

/// `load`'s work on the file's bytes, which `model_file::parse` has read as `file`.
pub fn parse(path: &Path, bytes: &[u8], file: model_file::ModelFile) -> Result<Checkpoint> {
    let bad = |message: String| Error::Model {
        path: path.display().to_string(),
        message,
    };
    let run = read_run(&file.metadata).map_err(bad)?;
    let tensors = SafeTensors::deserialize(bytes)
        .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
    let moments = read_moments(path, &tensors, &file.model, run.options.optimizer)?;
    let order = read_u32(path, &tensors, "order")?;
    let best_model = match run.state["best_step"].as_u64() {
        None => None,
        Some(_) => Some(read_best(path, &tensors, &file.model)?),
    };
    let history = read_history(path, &tensors)?;
    let state = state_from_json(&run.state, order, best_model, history)
        .map_err(|what| bad(format!("the run's state has no valid `{what}`")))?;
    Ok(Checkpoint {
        model: file.model,
        optimizer: OptimizerState {
            steps: run.optimizer_steps,
            tensors: moments,
        },
        options: run.options,
        train_file: run.train_file,
        state,
    })
}

/// The `format` and `checkpoint` metadata, checked; on failure, what is wrong.
fn read_run(metadata: &BTreeMap<String, String>) -> std::result::Result<Run, String> {
    match metadata.get("format") {
        Some(f) if *f == format() => {}
        Some(f) if f.starts_with(CHECKPOINT_FORMAT_NAME) => {
            return Err(format!(
                "checkpoint format {f:?}: this trainer reads {:?}",
                format()
            ))
        }
        _ => return Err("not a checkpoint: a model file (weights only)".into()),
    }
    let text = metadata
        .get("checkpoint")
        .ok_or("the run's state (metadata `checkpoint`) is missing")?;
    let run: Value = serde_json::from_str(text)
        .map_err(|e| format!("the run's state (metadata `checkpoint`) is not valid JSON: {e}"))?;
    let field = |what: &str| format!("the run's state has no valid `{what}`");
    if run["version"].as_u64() != Some(VERSION) {
        return Err(field("version"));
    }
    let options = RunOptions::deserialize(&run["options"])
        .map_err(|e| format!("{} ({e})", field("options")))?;
    if options.augment.distortion().is_some() && run["warps"].as_str() != Some(WARPS) {
        return Err(format!(
            "this {} run's checkpoint was written before warps were drawn from keys, so this \
             build would warp its images differently and cannot resume it exactly: start the \
             run again, or resume it with the build that wrote it",
            options.augment.name()
        ));
    }
    let train_file = FileId::deserialize(&run["train_file"]).map_err(|_| field("train_file"))?;
    let sha = &train_file.sha256;
    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(field("train_file.sha256"));
    }
    Ok(Run {
        options,
        train_file,
        optimizer_steps: run["optimizer_steps"]
            .as_u64()
            .ok_or_else(|| field("optimizer_steps"))?,
        state: run["state"].clone(),
    })
}

/// The optimizer's moments (`optimizer.W1.m`, …), per parameter tensor of `model`.
fn read_moments(
    path: &Path,
    tensors: &SafeTensors,
    model: &Model,
    kind: OptimizerKind,
) -> Result<Vec<Vec<Vec<f32>>>> {
    let lengths = model.layers.iter().flat_map(|l| [l.w.len(), l.b.len()]);
    let mut moments = Vec::new();
    for (param, len) in parameter_names(model).iter().zip(lengths) {
        let mut saved = Vec::new();
        for moment in kind.moments() {
            let name = format!("optimizer.{param}.{moment}");
            let (_, values) = read_f32(path, tensors, &name)?;
            if values.len() != len {
                return Err(Error::Model {
                    path: path.display().to_string(),
                    message: format!("tensor {name} holds {} values, {param} {len}", values.len()),
                });
            }
            saved.push(values);
        }
        moments.push(saved);
    }
    Ok(moments)
}

/// The columns of a progress line in the `history` tensor.
const HISTORY_COLUMNS: usize = 9;

fn history_row(p: &Progress) -> [f64; HISTORY_COLUMNS] {
    let or_nan = |v: Option<f64>| v.unwrap_or(f64::NAN);
    [
        p.step as f64,
        p.steps as f64,
        or_nan(p.epoch.map(|e| e as f64)),
        p.batch.loss,
        p.batch.accuracy,
        or_nan(p.dev_accuracy),
        or_nan(p.dev_loss),
        p.alpha as f64,
        p.samples_per_second,
    ]
}

fn read_history(path: &Path, tensors: &SafeTensors) -> Result<Vec<Progress>> {
    let bad = |message: &str| Error::Model {
        path: path.display().to_string(),
        message: message.into(),
    };
    let tensor = tensors
        .tensor("history")
        .map_err(|_| bad("tensor history is missing"))?;
    if tensor.dtype() != Dtype::F64 || tensor.shape().get(1) != Some(&HISTORY_COLUMNS) {
        return Err(bad("tensor history is not a table of progress lines"));
    }
    let values: Vec<f64> = tensor
        .data()
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect();
    let some = |v: f64| (!v.is_nan()).then_some(v);
    Ok(values
        .chunks_exact(HISTORY_COLUMNS)
        .map(|r| Progress {
            step: r[0] as usize,
            steps: r[1] as usize,
            epoch: some(r[2]).map(|e| e as usize),
            batch: BatchStats {
                loss: r[3],
                accuracy: r[4],
            },
            dev_accuracy: some(r[5]),
            dev_loss: some(r[6]),
            alpha: r[7] as f32,
            samples_per_second: r[8],
        })
        .collect())
}

fn read_u32(path: &Path, tensors: &SafeTensors, name: &str) -> Result<Vec<u32>> {
    let bad = |message: String| Error::Model {
        path: path.display().to_string(),
        message,
    };
    let tensor = tensors
        .tensor(name)
        .map_err(|_| bad(format!("tensor {name} is missing")))?;
    if tensor.dtype() != Dtype::U32 || tensor.shape().len() != 1 {
        return Err(bad(format!("tensor {name} is not a list of u32")));
    }
    Ok(tensor
        .data()
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// Early stopping's best model, tensors `best.W1`, … of `like`'s shapes.
fn read_best(path: &Path, tensors: &SafeTensors, like: &Model) -> Result<Model> {
    let mut best = like.clone();
    for (l, layer) in best.layers.iter_mut().enumerate() {
        for (name, values) in [("W", &mut layer.w), ("b", &mut layer.b)] {
            let name = format!("best.{name}{}", l + 1);
            let (_, read) = read_f32(path, tensors, &name)?;
            if read.len() != values.len() {
                return Err(Error::Model {
                    path: path.display().to_string(),
                    message: format!("tensor {name} has the wrong size"),
                });
            }
            *values = read;
        }
    }
    Ok(best)
}

/// A random stream as its seed and position (words drawn).
fn rng_json(rng: &ChaCha12Rng) -> Value {
    json!({"seed": hex(&rng.get_seed()), "word_pos": rng.get_word_pos().to_string()})
}

fn rng_from_json(v: &Value) -> Option<ChaCha12Rng> {
    use rand::SeedableRng;
    let text = v["seed"].as_str()?;
    if text.len() != 64 {
        return None;
    }
    let mut seed = [0u8; 32];
    for (i, byte) in seed.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    let mut rng = ChaCha12Rng::from_seed(seed);
    rng.set_word_pos(v["word_pos"].as_str()?.parse().ok()?);
    Some(rng)
}

/// The state as JSON; α and the best dev loss as their bits, so they come back exactly.
fn state_json(state: &RunState) -> Value {
    json!({
        "step": state.step,
        "epoch": state.epoch,
        "position": state.position,
        "alpha_bits": state.alpha.to_bits(),
        "shuffle": rng_json(&state.shuffle),
        // `shifts`: the name it had before warps drew from it too.
        "shifts": rng_json(&state.augment),
        "best_loss_bits": state.best.as_ref().map(|b| b.0.to_bits()),
        "best_step": state.best.as_ref().map(|b| b.1),
        "since_best": state.since_best,
        "stopped_early": state.stopped_early,
        "window": {
            "loss_bits": state.window.loss.to_bits(),
            "correct_bits": state.window.correct.to_bits(),
            "samples": state.window.samples,
        },
    })
}

/// The sums since the last progress line; a checkpoint written before they were saved holds
/// none (an empty window: the next line's mean starts at the resumed step).
fn window_from_json(v: &Value) -> std::result::Result<Window, String> {
    if v.is_null() {
        return Ok(Window::default());
    }
    let bits = |key: &str| {
        v[key]
            .as_u64()
            .map(f64::from_bits)
            .filter(|x| x.is_finite())
    };
    match (
        bits("loss_bits"),
        bits("correct_bits"),
        v["samples"].as_u64(),
    ) {
        (Some(loss), Some(correct), Some(samples)) => Ok(Window {
            loss,
            correct,
            samples: samples as usize,
        }),
        _ => Err("window".into()),
    }
}

/// The state back from JSON; on failure, the name of the field that is missing or bad.
fn state_from_json(
    v: &Value,
    order: Vec<u32>,
    best_model: Option<Model>,
    history: Vec<Progress>,
) -> std::result::Result<RunState, String> {
    let count = |key: &str| v[key].as_u64().map(|n| n as usize).ok_or(key.to_string());
    let best = match (
        v["best_loss_bits"].as_u64(),
        v["best_step"].as_u64(),
        best_model,
    ) {
        (Some(bits), Some(step), Some(model)) => Some((f64::from_bits(bits), step as usize, model)),
        (None, None, None) => None,
        _ => return Err("best_loss_bits".into()),
    };
    let alpha = v["alpha_bits"]
        .as_u64()
        .and_then(|b| u32::try_from(b).ok())
        .map(f32::from_bits)
        .filter(|a| a.is_finite() && *a > 0.0)
        .ok_or("alpha_bits")?;
    Ok(RunState {
        step: count("step")?,
        epoch: count("epoch")?,
        position: count("position")?,
        alpha,
        order,
        shuffle: rng_from_json(&v["shuffle"]).ok_or("shuffle")?,
        augment: rng_from_json(&v["shifts"]).ok_or("shifts")?,
        best,
        since_best: count("since_best")?,
        stopped_early: v["stopped_early"].as_u64().map(|s| s as usize),
        history,
        window: window_from_json(&v["window"])?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checkpoints written before the window was saved load with an empty one; a damaged one
    /// is refused by name; a saved one comes back exactly.
    #[test]
    fn the_window_is_read_back_or_empty() {
        assert_eq!(window_from_json(&Value::Null), Ok(Window::default()));
        assert_eq!(
            window_from_json(&json!({"samples": 3})),
            Err("window".to_string())
        );
        let window = Window {
            loss: 0.1 + 0.2,
            correct: 17.0,
            samples: 30,
        };
        let saved = json!({
            "loss_bits": window.loss.to_bits(),
            "correct_bits": window.correct.to_bits(),
            "samples": window.samples,
        });
        assert_eq!(window_from_json(&saved), Ok(window));
    }
}
