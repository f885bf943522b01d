//! `mnist-gpu [OPTIONS]`: train, report, and optionally save the model, the curves and a plot.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::{json, Value};

use super::resume::{self, Resume};
use super::stop::{self, say};
use super::train_args::TrainArgs;
use super::{check_output, data_notes, percent, same_file, Opened, OutputLock};
use mnist_gpu::backend::Backend;
use mnist_gpu::checkpoint::{self, Checkpointing, FileId};
use mnist_gpu::data::pool::{List, Split};
use mnist_gpu::data::{Dataset, Embedded, Part, EMBEDDED_TEST, EMBEDDED_TRAIN};
use mnist_gpu::error::{config, Error, Result};
use mnist_gpu::model::{Activation, Model};
use mnist_gpu::optimizer::OptimizerState;
use mnist_gpu::options::RunOptions;
use mnist_gpu::train::{
    self, Checkpointer, Ending, Progress, Report, RunState, Schedule, StepHook,
};
use mnist_gpu::{art, data, metrics, model_file};

/// Where a dataset comes from: a file, or the digits compiled into the binary.
enum Source {
    File(PathBuf),
    Embedded(&'static Embedded),
}

impl Source {
    /// The data (for a file of two sets, its `part`), after the lines its reading calls for.
    fn load(&self, part: Part) -> Result<Dataset> {
        Ok(match self {
            Source::File(path) => {
                let loaded = data::open(path, part)?;
                for note in data_notes(&loaded) {
                    say!("{note}");
                }
                loaded.dataset
            }
            Source::Embedded(set) => set.load()?,
        })
    }

    /// A file, or the embedded digits when `path` is their name (`embedded:data/mnist/…`).
    fn named(path: &std::path::Path) -> Source {
        match path.to_str() {
            Some(name) if name == EMBEDDED_TRAIN.name() => Source::Embedded(&EMBEDDED_TRAIN),
            Some(name) if name == EMBEDDED_TEST.name() => Source::Embedded(&EMBEDDED_TEST),
            _ => Source::File(path.to_path_buf()),
        }
    }

    /// What identifies the data: its size and SHA-256.
    fn id(&self) -> Result<FileId> {
        match self {
            Source::File(path) => FileId::of_file(path),
            Source::Embedded(set) => Ok(FileId::of_bytes(&set.name(), &set.bytes())),
        }
    }

    /// The file's path, or `embedded:data/mnist/…`.
    fn name(&self) -> String {
        match self {
            Source::File(path) => path.display().to_string(),
            Source::Embedded(set) => set.name(),
        }
    }
}

/// The network to train: the `--resume` file's, or a new one.
fn initial_model(args: &TrainArgs, resume: &Resume) -> Result<Model> {
    let Some((path, saved)) = resume.model() else {
        let hidden = args.hidden.clone().unwrap_or_else(|| vec![10]);
        let activation = args.activation.unwrap_or(Activation::Relu);
        return Model::new(&hidden, activation, args.init, args.seed);
    };
    let hidden = saved.hidden();
    let mismatch = |what: &str, asked: String, found: String| {
        config(format!(
            "--resume {}: the model has {what} {found}, but {asked} was asked for",
            path.display()
        ))
    };
    if let Some(asked) = &args.hidden {
        if *asked != hidden {
            return mismatch("hidden layers", format!("{asked:?}"), format!("{hidden:?}"));
        }
    }
    if let Some(asked) = args.activation {
        if asked != saved.activation {
            let (asked, found) = (asked.name().into(), saved.activation.name().into());
            return mismatch("activation", asked, found);
        }
    }
    Ok(saved.clone())
}

/// Progress lines on stdout, under a progress bar on a terminal once the run has lasted a
/// second; plain lines when stdout is a pipe or a file, or with --json.
struct Reporter {
    bar: Arc<Bar>,
}

/// The progress bar, which the loop's per-step tick moves (so its ETA follows the steps, not
/// the progress lines) and the progress lines print above.
struct Bar {
    wanted: bool,
    started: Instant,
    shown: OnceLock<ProgressBar>,
}

impl Bar {
    /// The bar at `step` of `steps`, made on the first call after a second on a terminal; None
    /// before, or never.
    fn get(&self, step: usize, steps: usize) -> Option<&ProgressBar> {
        if let Some(bar) = self.shown.get() {
            return Some(bar);
        }
        if !self.wanted || self.started.elapsed() < Duration::from_secs(1) {
            return None;
        }
        Some(self.shown.get_or_init(|| {
            let style = ProgressStyle::with_template(
                "{bar:30} {pos}/{len} steps  {msg}  [{elapsed} < {eta}]",
            )
            .expect("a valid template");
            let bar = ProgressBar::new(steps as u64)
                .with_style(style)
                .with_elapsed(self.started.elapsed())
                .with_position(step as u64);
            // The time left is estimated from the steps taken from here on: not from a jump
            // from 0 to `step` (a resumed run, or the steps of the first second) in an instant.
            bar.tick();
            bar.reset_eta();
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        }))
    }
}

impl Reporter {
    fn new(json: bool) -> Reporter {
        Reporter {
            bar: Arc::new(Bar {
                wanted: !json && std::io::stdout().is_terminal(),
                started: Instant::now(),
                shown: OnceLock::new(),
            }),
        }
    }

    /// The loop's hook after every step: the bar moves on (no device read).
    fn tick(&self) -> StepHook {
        let bar = self.bar.clone();
        StepHook(Arc::new(move |step, steps| {
            if let Some(bar) = bar.get(step, steps) {
                bar.set_position(step as u64);
            }
        }))
    }

    fn line(&self, text: &str) {
        match self.bar.shown.get() {
            Some(bar) => bar.println(text),
            None => say!("{text}"),
        }
    }

    /// A progress line: the mean training loss and accuracy since the previous line, then the
    /// dev set's loss and accuracy.
    fn progress(&mut self, p: &Progress) {
        let epoch = p
            .epoch
            .map(|e| format!("epoch {e:>3}  "))
            .unwrap_or_default();
        let dev = match (p.dev_loss, p.dev_accuracy) {
            (Some(l), Some(a)) => format!("  dev loss {l:.4}  dev acc {a:.4}"),
            _ => String::new(),
        };
        let train = format!(
            "train loss {:.4}  train acc {:.4}",
            p.batch.loss, p.batch.accuracy
        );
        self.line(&format!(
            "{epoch}step {:>6}/{}  {train}{dev}",
            p.step, p.steps
        ));
        if let Some(bar) = self.bar.get(p.step, p.steps) {
            bar.set_position(p.step as u64);
            bar.set_message(format!(
                "{epoch}{train}{dev}  {:.0} samples/s",
                p.samples_per_second
            ));
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.shown.get() {
            bar.finish_and_clear();
        }
    }
}

/// Trains as `args` say; `explicit` holds the options the command line gave (clap's ids), which
/// a checkpoint's run must not contradict when it is resumed.
pub fn run(args: &TrainArgs, explicit: &BTreeSet<String>) -> Result<()> {
    // First: a stop from now on ends the run with its work saved.
    let interrupt = stop::install();
    let resume = open_resume(args, explicit)?;
    let merged;
    let args = match &resume {
        Resume::Run(path, ckpt) => {
            merged = resume::merge(args, explicit, path, ckpt)?;
            &merged
        }
        _ => args,
    };
    check_combinations(args, explicit)?;
    let _locks = claim_outputs(args, &resume)?;
    let data = Data::load(args, explicit, &resume)?;
    let split = &data.split;
    let n = split.train.len();
    let test_name = data.test.as_ref().map(Source::name);
    let options = args.run_options(&data.model, test_name).resolved(n);
    let schedule = Schedule {
        interrupt: Some(interrupt),
        ..Schedule::of(&options, n)
    };
    // A checkpoint's run continues on its own training file; a new checkpoint records it.
    let train_id = match (&resume, &args.checkpoint) {
        (Resume::Run(..), _) | (_, Some(_)) => Some(data.train.id()?),
        _ => None,
    };
    let mut checkpointing = checkpointing(args, &options, train_id.as_ref());
    let (state, optimizer) = starting_state(
        resume,
        split,
        &schedule,
        train_id.as_ref(),
        checkpointing.as_ref(),
    )?;
    schedule.validate(split.train.len())?;
    let capacity = schedule.capacity(split.train.len());
    let mut opened = args
        .backend
        .open(&data.model, split.pool.clone(), split.sizes(), capacity)?;
    for note in opened.notes("training") {
        say!("{note}");
    }
    announce(args, &opened, &data, &schedule);
    let mut reporter = Reporter::new(args.json);
    let schedule = Schedule {
        on_step: Some(reporter.tick()),
        ..schedule
    };
    let result = train::train_from(
        opened.backend.as_mut(),
        split,
        &schedule,
        state,
        optimizer.as_ref(),
        &mut |p| reporter.progress(p),
        checkpointing.as_mut().map(|c| c as &mut dyn Checkpointer),
    );
    reporter.finish();
    let report = result?;
    print_ending(&report, args);
    let record = options_record(args, &opened, &data, &options, capacity)?;
    write_outputs(args, &record, &report, opened.backend.as_mut())?;
    show_dev_images(args, split, &report);
    if args.json {
        let summary = Summary::new(&record, &report, opened.backend.device_name(), args, split);
        say!("{}", to_json(&summary)?);
    }
    if report.ending == Ending::Interrupted {
        return Err(interrupted(args, &report));
    }
    Ok(())
}

/// The output files checked and the `--resume` file opened, before any work.
fn open_resume(args: &TrainArgs, explicit: &BTreeSet<String>) -> Result<Resume> {
    check_output(&args.save, "--save", &["safetensors"])?;
    check_output(&args.metrics, "--metrics", &["csv"])?;
    check_output(&args.plot, "--plot", &["png", "svg"])?;
    check_output(&args.checkpoint, "--checkpoint", &["safetensors"])?;
    let resume = Resume::open(args.resume.as_deref())?;
    if explicit.contains("init") && args.resume.is_some() {
        return config("--init makes new weights; --resume brings its own: leave one out");
    }
    Ok(resume)
}

/// Options that need others (after a resumed checkpoint's are merged in).
fn check_combinations(args: &TrainArgs, explicit: &BTreeSet<String>) -> Result<()> {
    // A resumed checkpoint's run writes on to its file without --checkpoint.
    if args.checkpoint_every.is_some() && args.checkpoint.is_none() {
        return config("--checkpoint-every needs --checkpoint FILE.safetensors");
    }
    if explicit.contains("epochs") && args.batch_size.is_none() {
        return config("--epochs needs --batch-size: epochs count passes of mini-batches");
    }
    // Also checked by the training loop, but here before the run's header is printed.
    if args.patience.is_some() && args.dev_size == 0 {
        return config("--patience watches the dev loss, so it needs --dev-size of at least 1");
    }
    let strengths = ["rotation", "scale", "shear", "translation"];
    let warp = args.augment().distortion().is_some();
    if let Some(id) = strengths.iter().find(|id| explicit.contains(**id) && !warp) {
        return config(format!("--{id} needs --augment affine or elastic"));
    }
    let elastic = matches!(args.augment(), mnist_gpu::augment::Augment::Elastic(_));
    if let Some(id) = ["elastic_alpha", "elastic_sigma"]
        .iter()
        .find(|id| explicit.contains(**id) && !elastic)
    {
        return config(format!(
            "--{} needs --augment elastic",
            id.replace('_', "-")
        ));
    }
    Ok(())
}

/// A run replaces no file that holds other work: not another run's checkpoint (nor a model,
/// nor anything else, at --checkpoint), and not its own checkpoint with its model.
fn check_own_files(args: &TrainArgs, resume: &Resume) -> Result<()> {
    check_save_keeps_checkpoints(args)?;
    let Some(ckpt) = &args.checkpoint else {
        return Ok(());
    };
    let resumed = matches!(resume, Resume::Run(path, _) if same_file(path, ckpt));
    if resumed || !ckpt.exists() {
        return Ok(());
    }
    let shown = ckpt.display();
    let (holds, hint) = match model_file::load(ckpt) {
        Ok(file) if checkpoint::is_checkpoint(&file) => (
            "the checkpoint of another run",
            format!("continue that run with --resume {shown}, or choose another path or remove it"),
        ),
        Ok(_) => (
            "a saved model",
            "choose another path, or remove it".to_string(),
        ),
        Err(_) => (
            "a file that is not a checkpoint",
            "choose another path, or remove it".to_string(),
        ),
    };
    config(format!(
        "--checkpoint {shown}: the file holds {holds}; {hint}"
    ))
}

/// The run's output files, locked for it, or the run refused before any work: two outputs on
/// one file, a file another live run writes, or one that holds other work.
fn claim_outputs(args: &TrainArgs, resume: &Resume) -> Result<Vec<OutputLock>> {
    check_distinct_outputs(args)?;
    // Locked before the files are looked at: a file another live run writes is refused as
    // such, not as a finished run's checkpoint to --resume.
    let locks = lock_outputs(args)?;
    check_own_files(args, resume)?;
    Ok(locks)
}

/// `--save` and `--checkpoint` are two files: the model would replace the checkpoint. Checked
/// before the outputs are locked (one file locked twice would read as another run's).
fn check_distinct_outputs(args: &TrainArgs) -> Result<()> {
    match (&args.save, &args.checkpoint) {
        (Some(save), Some(ckpt)) if same_file(save, ckpt) => config(format!(
            "--save {} is also the --checkpoint: the model would replace the checkpoint; give \
             them different names",
            save.display()
        )),
        _ => Ok(()),
    }
}

/// `--save` replaces a saved model (that is what it is for), but never a run's checkpoint: a
/// mistyped name would turn hours of resumable training into bare weights.
fn check_save_keeps_checkpoints(args: &TrainArgs) -> Result<()> {
    let Some(save) = args.save.as_ref().filter(|save| save.is_file()) else {
        return Ok(());
    };
    match model_file::load(save) {
        Ok(file) if checkpoint::is_checkpoint(&file) => config(format!(
            "--save {0}: the file holds the checkpoint of a run; continue that run with --resume \
             {0}, or choose another path or remove it",
            save.display()
        )),
        _ => Ok(()),
    }
}

/// Every output file locked for this run, or the run refused: another process writes one.
fn lock_outputs(args: &TrainArgs) -> Result<Vec<OutputLock>> {
    [
        (&args.save, "--save"),
        (&args.checkpoint, "--checkpoint"),
        (&args.metrics, "--metrics"),
        (&args.plot, "--plot"),
    ]
    .into_iter()
    .filter_map(|(path, option)| Some(OutputLock::take(path.as_ref()?, option)))
    .collect()
}

/// What the run trains: the data's sources, the network to start from, and the split.
struct Data {
    train: Source,
    test: Option<Source>,
    model: Model,
    split: Split,
}

impl Data {
    fn load(args: &TrainArgs, explicit: &BTreeSet<String>, resume: &Resume) -> Result<Data> {
        let train = match &args.train {
            Some(path) => Source::named(path),
            None => Source::Embedded(&EMBEDDED_TRAIN),
        };
        let test = match (&args.test, &args.train) {
            (Some(p), _) if p.as_os_str() == "none" => None,
            (Some(p), _) => Some(Source::named(p)),
            (None, None) => Some(Source::Embedded(&EMBEDDED_TEST)),
            (None, Some(train)) => test_beside(train),
        };
        let model = initial_model(args, resume)?;
        let train_file = match (resume, explicit.contains("train")) {
            (Resume::Run(path, _), false) => train.load(Part::Train).map_err(|e| {
                Error::Config(format!(
                    "--resume {}: the run's training file cannot be read ({e}); pass it with \
                     --train",
                    path.display()
                ))
            })?,
            _ => train.load(Part::Train)?,
        };
        let test_file = test.as_ref().map(|t| t.load(Part::Test)).transpose()?;
        let split = Split::new(&train_file, test_file.as_ref(), args.dev_size, args.seed)?;
        if args.show > split.dev.len() {
            return config(format!(
                "--show {}: there are only {} dev images",
                args.show,
                split.dev.len()
            ));
        }
        Ok(Data {
            train,
            test,
            model,
            split,
        })
    }
}

/// Without `--test`: the test set that goes with the training file (`t10k-*` beside MNIST's
/// `train-*`, a `.npz`'s `x_test`, a folder's `test/`, `test-*.parquet`), saying so.
fn test_beside(train: &std::path::Path) -> Option<Source> {
    let beside = data::test_beside(train)?;
    say!(
        "testing on {}, the test set that goes with --train {} (--test none leaves it out)",
        beside.what,
        train.display()
    );
    Some(Source::File(beside.path))
}

/// With `--checkpoint`: what writes it (after removing a killed run's unfinished writes).
fn checkpointing(
    args: &TrainArgs,
    options: &RunOptions,
    train_id: Option<&FileId>,
) -> Option<Checkpointing> {
    let (path, train_file) = (args.checkpoint.as_ref()?, train_id?);
    let removed = model_file::remove_partials(path);
    if removed > 0 {
        say!(
            "note: removed {removed} unfinished write(s) of {} (a killed run's)",
            path.display()
        );
    }
    Some(Checkpointing {
        path: path.clone(),
        options: options.clone(),
        train_file: train_file.clone(),
    })
}

/// Where the run starts: a resumed checkpoint's state and optimizer (checked against the
/// training set and the schedule), or the start.
fn starting_state(
    resume: Resume,
    split: &Split,
    schedule: &Schedule,
    train_id: Option<&FileId>,
    checkpointing: Option<&Checkpointing>,
) -> Result<(RunState, Option<OptimizerState>)> {
    let (path, ckpt) = match resume {
        Resume::Run(path, ckpt) => (path, ckpt),
        Resume::Weights(path, _) => {
            say!(
                "note: {} holds weights only: the optimizer and the schedule start afresh",
                path.display()
            );
            return Ok((RunState::start(split, schedule), None));
        }
        Resume::Fresh => return Ok((RunState::start(split, schedule), None)),
    };
    let refuse = |message: String| config(format!("--resume {}: {message}", path.display()));
    // A state that cannot be this run's is a damaged file (exit status 1), not an option.
    let damaged = |message: &str| {
        Err(Error::Model {
            path: path.display().to_string(),
            message: message.to_string(),
        })
    };
    if let Some(id) = train_id {
        let saved = &ckpt.train_file;
        if id.sha256 != saved.sha256 || id.bytes != saved.bytes {
            return refuse(format!(
                "the training file {} ({} bytes) is not the one the run trained on ({}, {} \
                 bytes, SHA-256 {}…); pass that one with --train",
                id.name,
                id.bytes,
                saved.name,
                saved.bytes,
                &saved.sha256[..12]
            ));
        }
    }
    let mut order = ckpt.state.order.clone();
    let mut train = split.train.clone();
    order.sort_unstable();
    train.sort_unstable();
    if order != train {
        return damaged("its order of samples is not of the training set's samples");
    }
    let (epochs, per_epoch) = schedule.length(split.train.len());
    if ckpt.state.position > per_epoch {
        return damaged(&format!(
            "its position, step {} of an epoch, is past the epoch's {per_epoch} steps",
            ckpt.state.position
        ));
    }
    let (step, of) = (ckpt.state.step, epochs * per_epoch);
    let whence = match schedule.batch_size {
        _ if step >= of || ckpt.state.stopped_early.is_some() => {
            "its run has ended: nothing to train, the model is evaluated".to_string()
        }
        None => format!("at iteration {} of {of}", step + 1),
        Some(_) => format!(
            "at step {} of {of} (epoch {} of {epochs})",
            step + 1,
            ckpt.state.epoch + 1
        ),
    };
    say!("resuming {} after step {step}: {whence}", path.display());
    if let Some(c) = checkpointing {
        say!("checkpoints go on in {}", c.path.display());
    }
    Ok((ckpt.state, Some(ckpt.optimizer)))
}

/// The line that says what trains, where, on what.
fn announce(args: &TrainArgs, opened: &Opened, data: &Data, schedule: &Schedule) {
    let backend = &opened.backend;
    let widths: Vec<String> = data.model.hidden().iter().map(|h| h.to_string()).collect();
    if let Some(note) = backend.path_note() {
        say!("note: the reference path runs: {note}");
    }
    let split = &data.split;
    say!(
        "training 784-{}-10 ({}) on {}, {} path: {} train, {} dev, {} test images; {}, {}, α = {}",
        widths.join("-"),
        data.model.activation.name(),
        backend.device_name(),
        backend.path().name(),
        split.train.len(),
        split.dev.len(),
        split.test.len(),
        match args.batch_size {
            None => format!("full batch, {} iterations", args.iterations),
            Some(b) => format!("batches of {b}, {} epochs", args.epochs),
        },
        schedule.optimizer.name(),
        schedule.alpha,
    );
}

/// Why the run ended, and how it did.
fn print_ending(report: &Report, args: &TrainArgs) {
    match report.ending {
        Ending::Finished => {}
        Ending::EarlyStopped { best_step } => say!(
            "early stop at step {}: no better dev loss for {} evaluations; keeping step {best_step}",
            report.steps,
            args.patience.unwrap_or(0)
        ),
        Ending::Interrupted => say!("interrupted after step {}", report.steps),
    }
    say!(
        "done: dev accuracy {}, test accuracy {}, {:.2} s, {:.0} training samples/s",
        percent(report.dev_accuracy),
        percent(report.test_accuracy),
        report.seconds,
        report.train_samples_per_second
    );
}

/// `--save` (with the options as metadata), `--metrics` and `--plot`.
fn write_outputs(
    args: &TrainArgs,
    options: &Value,
    report: &Report,
    backend: &mut dyn Backend,
) -> Result<()> {
    if let Some(path) = &args.save {
        let mut metadata = BTreeMap::new();
        let command: Vec<String> = std::env::args().collect();
        metadata.insert("command".to_string(), command.join(" "));
        metadata.insert("options".to_string(), options.to_string());
        metadata.insert("steps".to_string(), report.steps.to_string());
        for (key, value) in [
            ("test_accuracy", report.test_accuracy),
            ("dev_accuracy", report.dev_accuracy),
        ] {
            if let Some(v) = value {
                metadata.insert(key.to_string(), format!("{v:.4}"));
            }
        }
        model_file::save(path, &backend.model()?, &metadata)?;
        say!("saved the model to {}", path.display());
    }
    if let Some(path) = &args.metrics {
        metrics::write_csv(path, &report.history)?;
        say!("wrote the training curves to {}", path.display());
    }
    if let Some(path) = &args.plot {
        metrics::plot(path, &report.history)?;
        say!("drew the training curves in {}", path.display());
    }
    Ok(())
}

/// `--show N`: the first N dev images as text, with their predictions.
fn show_dev_images(args: &TrainArgs, split: &Split, report: &Report) {
    let dev_labels = split.labels(List::Dev);
    for (i, &image) in split.dev.iter().take(args.show).enumerate() {
        say!(
            "\ndev image {i}: predicted {} ({:.1}% confident), label {}",
            report.dev_predictions[i],
            100.0 * report.dev_confidence[i],
            dev_labels[i]
        );
        let art = art::draw(&split.pool.images[image as usize * data::PIXELS..][..data::PIXELS]);
        say!("{}", art.trim_end_matches('\n'));
    }
}

/// The line a stopped run ends with: what stopped it, what was saved, and how to go on. Empty
/// when stdout's reader went away and nothing was asked to be kept: that run ends quietly, as
/// `cat` does (`mnist-gpu | head`).
fn interrupted(args: &TrainArgs, report: &Report) -> Error {
    let shown = |path: &Option<PathBuf>| path.as_ref().map(|p| p.display().to_string());
    let mut saved = Vec::new();
    if let Some(path) = shown(&args.save) {
        saved.push(format!(
            "the model after step {} is saved in {path}",
            report.steps
        ));
    }
    if let Some(path) = shown(&args.metrics) {
        saved.push(format!("the curves in {path}"));
    }
    if let Some(path) = shown(&args.plot) {
        saved.push(format!("the plot in {path}"));
    }
    let mut next = match (&args.checkpoint, report.checkpointed, &args.save) {
        (Some(c), Some(step), _) => {
            format!("; --resume {} continues after step {step}", c.display())
        }
        (_, _, Some(m)) => format!("; --resume {} trains on from its weights", m.display()),
        _ => String::new(),
    };
    if saved.is_empty() && next.is_empty() {
        if stop::stdout_closed() {
            return Error::Interrupted(String::new());
        }
        saved.push("no model was saved".to_string());
    } else if saved.is_empty() {
        next.replace_range(..2, "");
    }
    let line = format!("{}: {}{next}", stop::cause(), saved.join(", "));
    Error::Interrupted(line.trim_end_matches(": ").to_string())
}

/// As JSON, through `Value`, whose keys are sorted (as `--json` and the metadata always were).
fn to_json(value: &impl Serialize) -> Result<Value> {
    serde_json::to_value(value)
        .map_err(|e| Error::Config(format!("cannot write the options as JSON: {e}")))
}

/// The options as `--json` and the saved model's `options` metadata give them
/// (docs/options.md's `--json`): the run's options as its checkpoint records them, with what ran
/// them and the files; `batch_size` there is the largest batch (the whole training set in
/// full-batch mode).
fn options_record(
    args: &TrainArgs,
    opened: &Opened,
    data: &Data,
    options: &RunOptions,
    capacity: usize,
) -> Result<Value> {
    let shown = |path: &Option<PathBuf>| path.as_ref().map(|p| p.display().to_string());
    let mut record = to_json(options)?;
    let extra = json!({
        "backend": opened.name,
        "backend_asked": args.backend.backend.name(),
        "backend_reason": opened.reason,
        "path": opened.backend.path().name(),
        "matmul": opened.matmul,
        "resume": shown(&args.resume),
        "batch_size": capacity,
        "train": data.train.name(),
        "checkpoint": shown(&args.checkpoint),
    });
    for (key, value) in extra.as_object().expect("an object") {
        record[key] = value.clone();
    }
    Ok(record)
}

/// `--json`'s line: the options, and how the run did.
#[derive(Serialize)]
struct Summary<'a> {
    #[serde(flatten)]
    options: &'a Value,
    adapter: String,
    train_samples: usize,
    dev_samples: usize,
    test_samples: usize,
    steps: usize,
    /// `finished`, `early_stopped` or `interrupted`.
    ending: &'static str,
    seconds: f64,
    train_samples_per_second: f64,
    /// The kept model's: its line's training loss, its dev and test numbers.
    final_loss: f64,
    dev_accuracy: Option<f64>,
    dev_loss: Option<f64>,
    test_accuracy: Option<f64>,
    test_loss: Option<f64>,
    saved: Option<String>,
}

impl<'a> Summary<'a> {
    fn new(
        options: &'a Value,
        report: &Report,
        adapter: String,
        args: &TrainArgs,
        split: &Split,
    ) -> Summary<'a> {
        Summary {
            options,
            adapter,
            train_samples: split.train.len(),
            dev_samples: split.dev.len(),
            test_samples: split.test.len(),
            steps: report.steps,
            ending: match report.ending {
                Ending::Finished => "finished",
                Ending::EarlyStopped { .. } => "early_stopped",
                Ending::Interrupted => "interrupted",
            },
            seconds: report.seconds,
            train_samples_per_second: report.train_samples_per_second,
            final_loss: report.final_loss,
            dev_accuracy: report.dev_accuracy,
            dev_loss: report.dev_loss,
            test_accuracy: report.test_accuracy,
            test_loss: report.test_loss,
            saved: args.save.as_ref().map(|p| p.display().to_string()),
        }
    }
}
