//! `--resume FILE`: from a model file (the weights; the optimizer and the schedule start afresh)
//! or from a checkpoint (the whole run, which continues as if it had never stopped).
//!
//! A checkpoint's run is defined by its options: the architecture, `--optimizer`, `--alpha`,
//! `--lr-decay`, `--batch-size`, `--dev-size`, `--seed`, `--augment`, `--patience` (with
//! `--log-every`, which sets how often it counts), and its training file. The command line may
//! leave them out, and they are the checkpoint's; one it gives must agree, or the run is
//! refused with one line naming it. Left out, these are the checkpoint's too, but may change:
//! `--epochs` or `--iterations` (the run's length), `--test`, `--log-every` (without
//! `--patience`), `--checkpoint` (the resumed file) and `--checkpoint-every`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::train::TrainArgs;
use mnist_gpu::checkpoint::{self, Checkpoint, Every};
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
        let bytes = model_file::read(path)?;
        let file = model_file::parse(path, &bytes)?;
        Ok(if checkpoint::is_checkpoint(&file) {
            Resume::Run(
                path.to_path_buf(),
                Box::new(checkpoint::parse(path, &bytes, file)?),
            )
        } else {
            Resume::Weights(path.to_path_buf(), file.model)
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

/// The options of a run that a checkpoint records: those that define it, and those a resumed
/// run takes when they are left out. `log_every` and `every` are the run's own (their defaults
/// resolved).
pub fn run_options(
    args: &TrainArgs,
    model: &Model,
    test: Option<&str>,
    log_every: usize,
    every: Option<Every>,
) -> Value {
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
        "iterations": args.batch_size.is_none().then_some(args.iterations),
        "epochs": args.batch_size.map(|_| args.epochs),
        "log_every": log_every,
        "checkpoint_every": every.map(|e| match e {
            Every::Epoch => json!("epoch"),
            Every::Steps(n) => json!(n),
        }),
    })
}

/// How a value reads in a message: an f32 as the run uses it, `on`/`off`, `none`.
fn shown(value: &Value, as_f32: bool) -> String {
    match value {
        Value::Null => "none".into(),
        Value::Bool(true) => "on".into(),
        Value::Bool(false) => "off".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) if as_f32 => format!("{}", n.as_f64().unwrap_or(f64::NAN) as f32),
        other => other.to_string(),
    }
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
    let file = path.display();
    let refuse = |message: String| config(format!("--resume {file}: {message}"));
    let mini_batch = !saved["batch_size"].is_null();
    if explicit.contains("iterations") && mini_batch {
        return refuse("the checkpoint's run is mini-batch: say how long with --epochs".into());
    }
    if explicit.contains("epochs") && !mini_batch && !explicit.contains("batch_size") {
        return refuse("the checkpoint's run is full-batch: say how long with --iterations".into());
    }
    // The options that define the run, with what the command line says as the checkpoint
    // stores it; f32 ones compared as the run uses them.
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
            "log_every" => json!(args.log_every),
            _ => Value::Null,
        }
    };
    let stored = |id: &str| -> Value {
        match id {
            "alpha" | "lr_decay" => json!(saved[id].as_f64().map(|v| v as f32)),
            _ => saved[id].clone(),
        }
    };
    let mut defining = vec![
        ("optimizer", "--optimizer"),
        ("alpha", "--alpha"),
        ("lr_decay", "--lr-decay"),
        ("batch_size", "--batch-size"),
        ("dev_size", "--dev-size"),
        ("seed", "--seed"),
        ("augment", "--augment"),
        ("patience", "--patience"),
    ];
    // Early stopping counts evaluations, one every --log-every steps.
    if !saved["patience"].is_null() {
        defining.push(("log_every", "--log-every"));
    }
    for (id, flag) in defining {
        if explicit.contains(id) && asked(id) != stored(id) {
            let f32_valued = matches!(id, "alpha" | "lr_decay");
            return refuse(format!(
                "the checkpoint's run has {flag} {}, this run asks for {}; leave {flag} out to \
                 continue that run, or start a new one without --resume",
                shown(&stored(id), f32_valued),
                shown(&asked(id), f32_valued)
            ));
        }
    }
    let bad = |what: &str| {
        Error::Config(format!(
            "--resume {file}: the checkpoint's options have no valid {what}"
        ))
    };
    let count = |key: &str| {
        saved[key]
            .as_u64()
            .map(|n| n as usize)
            .ok_or_else(|| bad(key))
    };
    let mut merged = args.clone();
    merged.optimizer = checkpoint::optimizer_kind(saved).ok_or_else(|| bad("optimizer"))?;
    merged.alpha = saved["alpha"].as_f64().ok_or_else(|| bad("alpha"))?;
    merged.lr_decay = saved["lr_decay"].as_f64().ok_or_else(|| bad("lr_decay"))?;
    merged.batch_size = mini_batch.then(|| count("batch_size")).transpose()?;
    merged.dev_size = count("dev_size")?;
    merged.seed = saved["seed"].as_u64().ok_or_else(|| bad("seed"))?;
    merged.augment = saved["augment"].as_bool().ok_or_else(|| bad("augment"))?;
    merged.patience = saved["patience"].as_u64().map(|p| p as usize);
    // The run's length and its intervals: the checkpoint's unless given.
    if mini_batch && !explicit.contains("epochs") {
        merged.epochs = count("epochs")?;
    }
    if !mini_batch && !explicit.contains("iterations") {
        merged.iterations = count("iterations")?;
    }
    if !explicit.contains("log_every") {
        merged.log_every = Some(count("log_every")?);
    }
    if !explicit.contains("checkpoint") {
        merged.checkpoint = Some(path.to_path_buf());
        if !explicit.contains("checkpoint_every") {
            merged.checkpoint_every = match &saved["checkpoint_every"] {
                Value::String(e) => Some(Every::parse(e).map_err(|_| bad("checkpoint_every"))?),
                Value::Number(n) => Some(Every::Steps(n.as_u64().unwrap_or(1).max(1) as usize)),
                _ => None,
            };
        }
    }
    // The data: the run's training file unless --train names it (its bytes are checked), and
    // its test file unless --test says otherwise.
    if !explicit.contains("train") {
        let name = &ckpt.train_file.name;
        merged.train =
            (*name != mnist_gpu::data::EMBEDDED_TRAIN.name()).then(|| PathBuf::from(name));
    }
    if !explicit.contains("test") {
        merged.test = match saved["test"].as_str() {
            None => Some(PathBuf::from("none")),
            Some(name) if name == mnist_gpu::data::EMBEDDED_TEST.name() => {
                // The embedded digits are the default only beside the embedded training set.
                merged.train.is_some().then(|| PathBuf::from(name))
            }
            Some(name) => Some(PathBuf::from(name)),
        };
    }
    Ok(merged)
}
