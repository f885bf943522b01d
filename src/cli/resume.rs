//! `--resume FILE`: from a model file (the weights; the optimizer and the schedule start afresh)
//! or from a checkpoint (the whole run, which continues as if it had never stopped).
//!
//! A checkpoint's run is defined by its options: the architecture, `--optimizer`, `--alpha`,
//! `--lr-decay`, `--batch-size`, `--dev-size`, `--seed`, `--augment` (and its strengths,
//! `--rotation` …), `--patience` (with
//! `--log-every`, which sets how often it counts), and its training file. The command line may
//! leave them out, and they are the checkpoint's; one it gives must agree, or the run is
//! refused with one line naming it. Left out, these are the checkpoint's too, but may change:
//! `--epochs` or `--iterations` (the run's length), `--test`, `--log-every` (without
//! `--patience`), `--checkpoint` (the resumed file) and `--checkpoint-every`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::train_args::{AugmentKind, TrainArgs};
use mnist_gpu::augment::Augment;
use mnist_gpu::checkpoint::{self, Checkpoint};
use mnist_gpu::data::{EMBEDDED_TEST, EMBEDDED_TRAIN};
use mnist_gpu::error::{config, Result};
use mnist_gpu::model::Model;
use mnist_gpu::model_file;
use mnist_gpu::optimizer::OptimizerKind;
use mnist_gpu::options::RunOptions;

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

/// `args` with the options the command line leaves out taken from `ckpt`'s run; refused when
/// the command line contradicts an option that defines the run. `explicit` holds the options the
/// command line gives (clap's ids: `alpha`, `batch_size`, …).
pub fn merge(
    args: &TrainArgs,
    explicit: &BTreeSet<String>,
    path: &Path,
    ckpt: &Checkpoint,
) -> Result<TrainArgs> {
    let saved = &ckpt.options;
    let refuse = |message: String| config(format!("--resume {}: {message}", path.display()));
    if let Err(message) = check_length(explicit, saved) {
        return refuse(message.into());
    }
    if let Some((flag, saved, asked)) = contradiction(args, explicit, saved) {
        return refuse(format!(
            "the checkpoint's run has {flag} {saved}, this run asks for {asked}; leave {flag} out \
             to continue that run, or start a new one without --resume"
        ));
    }
    let mut merged = args.clone();
    take_defining(&mut merged, saved);
    if let Err(what) = take_length(&mut merged, explicit, saved) {
        return refuse(format!("the checkpoint's options have no valid {what}"));
    }
    take_intervals(&mut merged, explicit, saved, path);
    take_data(&mut merged, explicit, saved, ckpt);
    Ok(merged)
}

/// The run's length is said in its own mode's unit: epochs of mini-batches, or iterations.
fn check_length(
    explicit: &BTreeSet<String>,
    saved: &RunOptions,
) -> std::result::Result<(), &'static str> {
    let mini_batch = saved.batch_size.is_some();
    if explicit.contains("iterations") && mini_batch {
        return Err("the checkpoint's run is mini-batch: say how long with --epochs");
    }
    if explicit.contains("epochs") && !mini_batch && !explicit.contains("batch_size") {
        return Err("the checkpoint's run is full-batch: say how long with --iterations");
    }
    Ok(())
}

/// The first option that defines the run which the command line gives otherwise than the
/// checkpoint: its flag, the checkpoint's value and the asked one, as they read in a message.
/// α and its decay are compared as the run uses them (f32).
fn contradiction(
    args: &TrainArgs,
    explicit: &BTreeSet<String>,
    saved: &RunOptions,
) -> Option<(&'static str, String, String)> {
    let given = |id: &str| explicit.contains(id);
    let differs = |flag: &'static str, id: &str, saved: Shown, asked: Shown| {
        (given(id) && saved != asked).then(|| (flag, saved.to_string(), asked.to_string()))
    };
    let f32_of = |v: f64| Shown::F32(v as f32);
    [
        differs(
            "--optimizer",
            "optimizer",
            Shown::Optimizer(saved.optimizer),
            Shown::Optimizer(args.optimizer),
        ),
        differs("--alpha", "alpha", f32_of(saved.alpha), f32_of(args.alpha)),
        differs(
            "--lr-decay",
            "lr_decay",
            f32_of(saved.lr_decay),
            f32_of(args.lr_decay),
        ),
        differs(
            "--batch-size",
            "batch_size",
            Shown::count(saved.batch_size),
            Shown::count(args.batch_size),
        ),
        differs(
            "--dev-size",
            "dev_size",
            Shown::count(Some(saved.dev_size)),
            Shown::count(Some(args.dev_size)),
        ),
        differs(
            "--seed",
            "seed",
            Shown::Count(Some(saved.seed)),
            Shown::Count(Some(args.seed)),
        ),
        differs(
            "--augment",
            "augment",
            Shown::Name(saved.augment.name()),
            Shown::Name(args.augment().name()),
        ),
        differs(
            "--patience",
            "patience",
            Shown::count(saved.patience),
            Shown::count(args.patience),
        ),
        // Early stopping counts evaluations, one every --log-every steps.
        saved.patience.and_then(|_| {
            differs(
                "--log-every",
                "log_every",
                Shown::count(saved.log_every),
                Shown::count(args.log_every),
            )
        }),
    ]
    .into_iter()
    .flatten()
    .next()
    .or_else(|| strength_contradiction(args, explicit, saved))
}

/// The first strength of a warp (`--rotation` …) the command line gives otherwise than the
/// checkpoint, compared as the run uses them (f32).
fn strength_contradiction(
    args: &TrainArgs,
    explicit: &BTreeSet<String>,
    saved: &RunOptions,
) -> Option<(&'static str, String, String)> {
    let (s, a) = (
        saved.augment.distortion().unwrap_or_default(),
        args.distortion(),
    );
    [
        ("--rotation", "rotation", s.rotation, a.rotation),
        ("--scale", "scale", s.scale, a.scale),
        ("--shear", "shear", s.shear, a.shear),
        ("--translation", "translation", s.translation, a.translation),
        (
            "--elastic-alpha",
            "elastic_alpha",
            s.elastic_alpha,
            a.elastic_alpha,
        ),
        (
            "--elastic-sigma",
            "elastic_sigma",
            s.elastic_sigma,
            a.elastic_sigma,
        ),
    ]
    .into_iter()
    .find(|&(_, id, s, a)| explicit.contains(id) && s as f32 != a as f32)
    .map(|(flag, _, s, a)| {
        (
            flag,
            Shown::F32(s as f32).to_string(),
            Shown::F32(a as f32).to_string(),
        )
    })
}

/// An option's value as a message shows it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Shown {
    Optimizer(OptimizerKind),
    F32(f32),
    /// A count, or `none`.
    Count(Option<u64>),
    /// A value's name (`--augment`'s kind).
    Name(&'static str),
}

impl Shown {
    fn count(n: Option<usize>) -> Shown {
        Shown::Count(n.map(|n| n as u64))
    }
}

impl std::fmt::Display for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Shown::Optimizer(kind) => f.write_str(kind.name()),
            Shown::F32(v) => write!(f, "{v}"),
            Shown::Count(Some(n)) => write!(f, "{n}"),
            Shown::Count(None) => f.write_str("none"),
            Shown::Name(name) => f.write_str(name),
        }
    }
}

/// The options that define the run: the checkpoint's (the command line agrees, or leaves them
/// out).
fn take_defining(merged: &mut TrainArgs, saved: &RunOptions) {
    merged.optimizer = saved.optimizer;
    merged.alpha = saved.alpha;
    merged.lr_decay = saved.lr_decay;
    merged.batch_size = saved.batch_size;
    merged.dev_size = saved.dev_size;
    merged.seed = saved.seed;
    merged.augment = Some(match saved.augment {
        Augment::Off => AugmentKind::Off,
        Augment::Shift => AugmentKind::Shift,
        Augment::Affine(_) => AugmentKind::Affine,
        Augment::Elastic(_) => AugmentKind::Elastic,
    });
    let d = saved.augment.distortion().unwrap_or_default();
    (merged.rotation, merged.scale, merged.shear) = (d.rotation, d.scale, d.shear);
    (merged.translation, merged.elastic_alpha) = (d.translation, d.elastic_alpha);
    merged.elastic_sigma = d.elastic_sigma;
    merged.patience = saved.patience;
}

/// The run's length: the checkpoint's unless given. On failure, the missing option's name.
fn take_length(
    merged: &mut TrainArgs,
    explicit: &BTreeSet<String>,
    saved: &RunOptions,
) -> std::result::Result<(), &'static str> {
    if saved.batch_size.is_some() {
        if !explicit.contains("epochs") {
            merged.epochs = saved.epochs.ok_or("epochs")?;
        }
    } else if !explicit.contains("iterations") {
        merged.iterations = saved.iterations.ok_or("iterations")?;
    }
    Ok(())
}

/// How often the run reports and writes checkpoints, and where: the checkpoint's unless given
/// (a resumed run writes on to its checkpoint).
fn take_intervals(
    merged: &mut TrainArgs,
    explicit: &BTreeSet<String>,
    saved: &RunOptions,
    path: &Path,
) {
    if !explicit.contains("log_every") {
        merged.log_every = saved.log_every;
    }
    if !explicit.contains("checkpoint") {
        merged.checkpoint = Some(path.to_path_buf());
        if !explicit.contains("checkpoint_every") {
            merged.checkpoint_every = saved.checkpoint_every;
        }
    }
}

/// The data: the run's training file unless --train names it (its bytes are checked), and its
/// test file unless --test says otherwise.
fn take_data(
    merged: &mut TrainArgs,
    explicit: &BTreeSet<String>,
    saved: &RunOptions,
    ckpt: &Checkpoint,
) {
    if !explicit.contains("train") {
        let name = &ckpt.train_file.name;
        merged.train = (*name != EMBEDDED_TRAIN.name()).then(|| PathBuf::from(name));
    }
    if !explicit.contains("test") {
        merged.test = match saved.test.as_deref() {
            None => Some(PathBuf::from("none")),
            Some(name) if name == EMBEDDED_TEST.name() => {
                // The embedded digits are the default only beside the embedded training set.
                merged.train.is_some().then(|| PathBuf::from(name))
            }
            Some(name) => Some(PathBuf::from(name)),
        };
    }
}
