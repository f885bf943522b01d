//! `--resume FILE`: from a model file (the weights; the optimizer starts afresh) or from a
//! checkpoint (the whole run, which continues as if it had never stopped).
//!
//! A checkpoint's run is defined by its options (architecture, optimizer, α and its decay, batch
//! size, dev split and seed, `--augment`, `--patience`) and its training file. The command line
//! may leave them out, and they are the checkpoint's; one it gives must agree, or the run is
//! refused with one line naming it. The rest may change: more or fewer `--epochs` or
//! `--iterations`, the test file, the backend and path, `--log-every`, the outputs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::train::TrainArgs;
use mnist_gpu::checkpoint::{self, Checkpoint};
use mnist_gpu::error::{config, Error, Result};
use mnist_gpu::model::Model;
use mnist_gpu::model_file;

/// What `--resume` names.
pub enum Resume {
    Fresh,
    /// A model file: its weights.
    Weights(PathBuf, Model),
    /// A checkpoint: the whole run.
    Run(PathBuf, Box<Checkpoint>),
}

impl Resume {
    pub fn open(path: Option<&Path>) -> Result<Resume> {
        let Some(path) = path else {
            return Ok(Resume::Fresh);
        };
        Ok(if checkpoint::is_checkpoint(path)? {
            Resume::Run(path.to_path_buf(), Box::new(checkpoint::load(path)?))
        } else {
            Resume::Weights(path.to_path_buf(), model_file::load(path)?.model)
        })
    }

    /// The model to start from, if any.
    pub fn model(&self) -> Option<(&Path, &Model)> {
        match self {
            Resume::Fresh => None,
            Resume::Weights(path, model) => Some((path, model)),
            Resume::Run(path, c) => Some((path, &c.model)),
        }
    }
}

/// The options that define a run, which a resumed run must not contradict.
pub fn run_options(args: &TrainArgs, model: &Model, test: Option<&str>) -> Value {
    json!({
        "hidden": model.hidden(),
        "activation": model.activation.name(),
        "optimizer": format!("{:?}", args.optimizer).to_lowercase(),
        "alpha": args.alpha,
        "lr_decay": args.lr_decay,
        "batch_size": args.batch_size,
        "dev_size": args.dev_size,
        "seed": args.seed,
        "augment": args.augment,
        "patience": args.patience,
        "test": test,
    })
}

/// `args` with the options the command line leaves out taken from `ckpt`'s run. `explicit`
/// holds the options the command line gives (clap's ids: `alpha`, `batch_size`, …).
pub fn merge(
    args: &TrainArgs,
    explicit: &BTreeSet<String>,
    path: &Path,
    ckpt: &Checkpoint,
) -> Result<TrainArgs> {
    let saved = &ckpt.options;
    let mut merged = args.clone();
    // Per option: its clap id, its flag, and what the command line says, as the checkpoint
    // stores it.
    let asked = |id: &str| -> Value {
        match id {
            "optimizer" => json!(format!("{:?}", args.optimizer).to_lowercase()),
            "alpha" => json!(args.alpha as f32),
            "lr_decay" => json!(args.lr_decay as f32),
            "batch_size" => json!(args.batch_size),
            "dev_size" => json!(args.dev_size),
            "seed" => json!(args.seed),
            "augment" => json!(args.augment),
            "patience" => json!(args.patience),
            _ => Value::Null,
        }
    };
    let stored = |id: &str| -> Value {
        match id {
            // Compared as the f32 the run uses.
            "alpha" | "lr_decay" => json!(saved[id].as_f64().map(|v| v as f32)),
            _ => saved[id].clone(),
        }
    };
    for (id, flag) in [
        ("optimizer", "--optimizer"),
        ("alpha", "--alpha"),
        ("lr_decay", "--lr-decay"),
        ("batch_size", "--batch-size"),
        ("dev_size", "--dev-size"),
        ("seed", "--seed"),
        ("augment", "--augment"),
        ("patience", "--patience"),
    ] {
        if explicit.contains(id) && asked(id) != stored(id) {
            let value = |v: Value| match v {
                Value::Null => "none".to_string(),
                Value::Bool(true) => "on".to_string(),
                Value::Bool(false) => "off".to_string(),
                Value::String(s) => s,
                other => other.to_string(),
            };
            return config(format!(
                "--resume {}: the checkpoint's run has {flag} {}, this run asks for {}; \
                 leave {flag} out to continue that run, or start a new one without --resume",
                path.display(),
                value(stored(id)),
                value(asked(id))
            ));
        }
    }
    let bad = |what: &str| {
        Error::Config(format!(
            "--resume {}: the checkpoint's options have no valid {what}",
            path.display()
        ))
    };
    merged.optimizer = checkpoint::optimizer_kind(saved).ok_or_else(|| bad("optimizer"))?;
    merged.alpha = saved["alpha"].as_f64().ok_or_else(|| bad("alpha"))?;
    merged.lr_decay = saved["lr_decay"].as_f64().ok_or_else(|| bad("lr_decay"))?;
    merged.batch_size = match &saved["batch_size"] {
        Value::Null => None,
        v => Some(v.as_u64().ok_or_else(|| bad("batch_size"))? as usize),
    };
    merged.dev_size = saved["dev_size"].as_u64().ok_or_else(|| bad("dev_size"))? as usize;
    merged.seed = saved["seed"].as_u64().ok_or_else(|| bad("seed"))?;
    merged.augment = saved["augment"].as_bool().ok_or_else(|| bad("augment"))?;
    merged.patience = saved["patience"].as_u64().map(|p| p as usize);
    if !explicit.contains("train") && merged.train.is_none() {
        // The run's training file, unless it was the embedded one.
        let name = &ckpt.train_file.name;
        if *name != mnist_gpu::data::EMBEDDED_TRAIN.name() {
            merged.train = Some(PathBuf::from(name));
        }
    }
    if !explicit.contains("test") && !explicit.contains("train") {
        merged.test = match saved["test"].as_str() {
            None => Some(PathBuf::from("none")),
            Some(name) if name == mnist_gpu::data::EMBEDDED_TEST.name() => None,
            Some(name) => Some(PathBuf::from(name)),
        };
    }
    Ok(merged)
}
