//! `mnist-gpu [OPTIONS]`: train, report, and optionally save the model, the curves and a plot.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use super::resume::{self, Resume};
use super::{check_output, percent, BackendArgs};
use mnist_gpu::checkpoint::{Checkpointing, Every, FileId};
use mnist_gpu::data::pool::List;
use mnist_gpu::data::pool::Split;
use mnist_gpu::data::{Dataset, Embedded, EMBEDDED_TEST, EMBEDDED_TRAIN};
use mnist_gpu::error::{config, Error, Result};
use mnist_gpu::model::{Activation, Init, Model};
use mnist_gpu::optimizer::{Optimizer, OptimizerKind};
use mnist_gpu::train::{self, Ending, Progress, RunState, Schedule};
use mnist_gpu::{art, data, metrics, model_file};

#[derive(Debug, Clone, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub backend: BackendArgs,

    /// Training data: an IDX images file (labels beside it) or a CSV, optionally .gz.
    #[arg(long)]
    pub train: Option<PathBuf>,

    /// Test data, same formats; `none` for no test set.
    #[arg(long)]
    pub test: Option<PathBuf>,

    /// Hidden layer widths, comma-separated: `10` is the classic 784-10-10, `10,10` two
    /// layers [default: 10, or the --resume model's].
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    pub hidden: Option<Vec<usize>>,

    /// Activation between layers [default: relu, or the --resume model's].
    #[arg(long, value_enum)]
    pub activation: Option<Activation>,

    /// Weight initialisation.
    #[arg(long, value_enum, default_value_t = Init::He)]
    pub init: Init,

    /// Continue from a checkpoint (the whole run, as if it had never stopped), or start from
    /// the weights of a saved model (the optimizer starts afresh).
    #[arg(long, value_name = "FILE")]
    pub resume: Option<PathBuf>,

    /// Write the whole training state (model, optimizer, position, random streams) to this
    /// .safetensors file every --checkpoint-every steps and at the end; --resume continues it
    /// (and writes on to it unless given another).
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,

    /// How often --checkpoint writes: every N steps, or `epoch` [default: every --log-every
    /// steps, or the resumed checkpoint's].
    #[arg(long, value_name = "N|epoch", value_parser = Every::parse)]
    pub checkpoint_every: Option<Every>,

    /// Seed for the initial weights, the dev split, the batch order and the shifts.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    pub seed: u64,

    /// Learning rate α.
    #[arg(long, default_value_t = 0.3, allow_negative_numbers = true)]
    pub alpha: f64,

    /// How gradients update the weights.
    #[arg(long, value_enum, default_value_t = OptimizerKind::Sgd)]
    pub optimizer: OptimizerKind,

    /// Multiply α by this after every epoch (every iteration in full-batch mode), e.g. 0.95.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub lr_decay: f64,

    /// Stop when the dev loss has not improved for N evaluations (one per --log-every
    /// steps), and keep the best model.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub patience: Option<usize>,

    /// Shift each training image by up to 2 pixels each way, drawn per batch.
    #[arg(long)]
    pub augment: bool,

    /// Full-batch gradient descent steps.
    #[arg(
        long,
        default_value_t = 500,
        conflicts_with = "batch_size",
        allow_negative_numbers = true
    )]
    pub iterations: usize,

    /// Mini-batch size: switches from full-batch gradient descent to mini-batch SGD.
    #[arg(long, allow_negative_numbers = true)]
    pub batch_size: Option<usize>,

    /// Passes over the training set in mini-batch mode.
    #[arg(long, default_value_t = 30, allow_negative_numbers = true)]
    pub epochs: usize,

    /// Images held out of the training file as the dev set.
    #[arg(long, default_value_t = 1000, allow_negative_numbers = true)]
    pub dev_size: usize,

    /// Print progress every N steps [default: 50 full-batch, once an epoch mini-batch].
    #[arg(long, allow_negative_numbers = true)]
    pub log_every: Option<usize>,

    /// Draw N dev images as text with their predicted and true labels.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub show: usize,

    /// Save the trained model (safetensors).
    #[arg(long, value_name = "FILE")]
    pub save: Option<PathBuf>,

    /// Write the loss and accuracies at every progress line as CSV.
    #[arg(long, value_name = "FILE.csv")]
    pub metrics: Option<PathBuf>,

    /// Draw the loss and the train/dev accuracy against the step (.png or .svg).
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,

    /// Print a JSON summary as the last line of stdout.
    #[arg(long)]
    pub json: bool,
}

/// Where a dataset comes from: a file, or the digits compiled into the binary.
enum Source {
    File(PathBuf),
    Embedded(&'static Embedded),
}

impl Source {
    fn load(&self) -> Result<Dataset> {
        Ok(match self {
            Source::File(path) => data::load(path)?,
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

/// Ctrl-C sets the flag the training loop polls; a second Ctrl-C quits at once.
fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let handler_flag = flag.clone();
    let installed = ctrlc::set_handler(move || {
        if handler_flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
    });
    if installed.is_err() {
        eprintln!("warning: Ctrl-C will stop the run without saving (no handler)");
    }
    flag
}

/// Progress lines on stdout, under a progress bar on a terminal once the run has lasted a
/// second; plain lines when stdout is a pipe or a file, or with --json.
struct Reporter {
    bar: Option<ProgressBar>,
    wanted: bool,
    started: Instant,
}

impl Reporter {
    fn new(json: bool) -> Reporter {
        Reporter {
            bar: None,
            wanted: !json && std::io::stdout().is_terminal(),
            started: Instant::now(),
        }
    }

    fn line(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => println!("{text}"),
        }
    }

    fn progress(&mut self, p: &Progress) {
        let epoch = p
            .epoch
            .map(|e| format!("epoch {e:>3}  "))
            .unwrap_or_default();
        let dev = p
            .dev_accuracy
            .map(|a| format!("  dev acc {a:.4}"))
            .unwrap_or_default();
        let text = format!(
            "{epoch}step {:>6}/{}  loss {:.4}  batch acc {:.4}{dev}",
            p.step, p.steps, p.batch.loss, p.batch.accuracy
        );
        if self.bar.is_none() && self.wanted && self.started.elapsed() > Duration::from_secs(1) {
            let style = ProgressStyle::with_template(
                "{bar:30} {pos}/{len} steps  {msg}  [{elapsed} < {eta}]",
            )
            .expect("a valid template");
            let bar = ProgressBar::new(p.steps as u64).with_style(style);
            bar.enable_steady_tick(Duration::from_millis(200));
            self.bar = Some(bar);
        }
        self.line(&text);
        if let Some(bar) = &self.bar {
            bar.set_position(p.step as u64);
            bar.set_message(format!(
                "{epoch}loss {:.4}  acc {:.4}{dev}  {:.0} samples/s",
                p.batch.loss, p.batch.accuracy, p.samples_per_second
            ));
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// Trains as `args` say; `explicit` holds the options the command line gave (clap's ids), which
/// a checkpoint's run must not contradict when it is resumed.
pub fn run(args: &TrainArgs, explicit: &BTreeSet<String>) -> Result<()> {
    check_output(&args.save, "--save", &["safetensors"])?;
    check_output(&args.metrics, "--metrics", &["csv"])?;
    check_output(&args.plot, "--plot", &["png", "svg"])?;
    check_output(&args.checkpoint, "--checkpoint", &["safetensors"])?;
    let resume = Resume::open(args.resume.as_deref())?;
    if explicit.contains("init") && args.resume.is_some() {
        return config("--init makes new weights; --resume brings its own: leave one out");
    }
    let merged;
    let args = match &resume {
        Resume::Run(path, ckpt) => {
            merged = resume::merge(args, explicit, path, ckpt)?;
            &merged
        }
        _ => args,
    };
    // A resumed checkpoint's run writes on to its file without --checkpoint.
    if args.checkpoint_every.is_some() && args.checkpoint.is_none() {
        return config("--checkpoint-every needs --checkpoint FILE.safetensors");
    }
    if explicit.contains("epochs") && args.batch_size.is_none() {
        return config("--epochs needs --batch-size: epochs count passes of mini-batches");
    }
    let train_source = match &args.train {
        Some(path) => Source::named(path),
        None => Source::Embedded(&EMBEDDED_TRAIN),
    };
    let test_source = match &args.test {
        Some(p) if p.as_os_str() == "none" => None,
        Some(p) => Some(Source::named(p)),
        None if args.train.is_none() => Some(Source::Embedded(&EMBEDDED_TEST)),
        None => None,
    };
    let model = initial_model(args, &resume)?;
    let train_file = match (&resume, explicit.contains("train")) {
        (Resume::Run(path, _), false) => train_source.load().map_err(|e| {
            Error::Config(format!(
                "--resume {}: the run's training file cannot be read ({e}); pass it with --train",
                path.display()
            ))
        })?,
        _ => train_source.load()?,
    };
    let test_file = test_source.as_ref().map(Source::load).transpose()?;
    let split = Split::new(&train_file, test_file.as_ref(), args.dev_size, args.seed)?;
    if args.show > split.dev.len() {
        return config(format!(
            "--show {}: there are only {} dev images",
            args.show,
            split.dev.len()
        ));
    }

    let steps_per_epoch = args
        .batch_size
        .map(|b| split.train.len().div_ceil(b.max(1)));
    let interrupt = interrupt_flag();
    let mut schedule = Schedule {
        batch_size: args.batch_size,
        iterations: args.iterations,
        epochs: args.epochs,
        alpha: args.alpha as f32,
        optimizer: Optimizer::with_defaults(args.optimizer),
        lr_decay: args.lr_decay as f32,
        patience: args.patience,
        augment: args.augment,
        log_every: args.log_every.or(steps_per_epoch).unwrap_or(50),
        seed: args.seed,
        interrupt: Some(interrupt),
        checkpoint: None,
    };
    let every = args.checkpoint.as_ref().map(|_| {
        args.checkpoint_every
            .unwrap_or(Every::Steps(schedule.log_every))
    });
    let test_name = test_source.as_ref().map(Source::name);
    let run_options = resume::run_options(
        args,
        &model,
        test_name.as_deref(),
        schedule.log_every,
        every,
    );
    // A checkpoint's run continues on its own training file; a new checkpoint records it.
    let train_id = match (&resume, &args.checkpoint) {
        (Resume::Run(..), _) | (_, Some(_)) => Some(train_source.id()?),
        _ => None,
    };
    if let (Some(path), Some(every)) = (&args.checkpoint, every) {
        let removed = model_file::remove_partials(path);
        if removed > 0 {
            println!(
                "note: removed {removed} unfinished write(s) of {} (a killed run's)",
                path.display()
            );
        }
        schedule.checkpoint = Some(Checkpointing {
            path: path.clone(),
            every,
            options: run_options.clone(),
            train_file: train_id.clone().expect("computed for --checkpoint"),
        });
    }
    let (state, optimizer_state) = match resume {
        Resume::Run(path, ckpt) => {
            let refuse =
                |message: String| config(format!("--resume {}: {message}", path.display()));
            let id = train_id.as_ref().expect("computed for a checkpoint");
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
            let mut order = ckpt.state.order.clone();
            let mut train = split.train.clone();
            order.sort_unstable();
            train.sort_unstable();
            if order != train {
                return refuse("its order of samples is not of the training set's samples".into());
            }
            let (epochs, per_epoch) = train::plan(&schedule, split.train.len());
            if ckpt.state.position > per_epoch {
                return refuse(format!(
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
            println!("resuming {} after step {step}: {whence}", path.display());
            if let Some(c) = &schedule.checkpoint {
                println!("checkpoints go on in {}", c.path.display());
            }
            (ckpt.state, Some(ckpt.optimizer))
        }
        Resume::Weights(path, _) => {
            println!(
                "note: {} holds weights only: the optimizer and the schedule start afresh",
                path.display()
            );
            (RunState::start(&split, &schedule), None)
        }
        Resume::Fresh => (RunState::start(&split, &schedule), None),
    };
    schedule.validate(split.train.len())?;
    let capacity = schedule.capacity(split.train.len());
    let opened = args
        .backend
        .open(&model, split.pool.clone(), split.sizes(), capacity)?;
    for note in opened.notes("training") {
        println!("{note}");
    }
    let mut backend = opened.backend;
    let device = backend.device_name();
    let hidden = model.hidden();
    let widths: Vec<String> = hidden.iter().map(|h| h.to_string()).collect();

    let path = backend.path().name();
    if let Some(note) = backend.path_note() {
        println!("note: the reference path runs: {note}");
    }
    println!(
        "training 784-{}-10 ({}) on {}, {path} path: {} train, {} dev, {} test images; {}, {}, α = {}",
        widths.join("-"),
        model.activation.name(),
        device,
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
    let mut reporter = Reporter::new(args.json);
    let result = train::train_from(
        backend.as_mut(),
        &split,
        &schedule,
        state,
        optimizer_state.as_ref(),
        &mut |p| reporter.progress(p),
    );
    reporter.finish();
    let report = result?;

    match report.ending {
        Ending::Finished => {}
        Ending::EarlyStopped { best_step } => println!(
            "early stop at step {}: no better dev loss for {} evaluations; keeping step {best_step}",
            report.steps,
            args.patience.unwrap_or(0)
        ),
        Ending::Interrupted => println!("interrupted after step {}", report.steps),
    }
    println!(
        "done: dev accuracy {}, test accuracy {}, {:.2} s, {:.0} training samples/s",
        percent(report.dev_accuracy),
        percent(report.test_accuracy),
        report.seconds,
        report.train_samples_per_second
    );

    let options = json!({
        "backend": opened.name,
        "backend_asked": args.backend.backend.name(),
        "backend_reason": opened.reason,
        "path": path,
        "matmul": opened.matmul,
        "hidden": hidden,
        "activation": model.activation.name(),
        "init": format!("{:?}", args.init).to_lowercase(),
        "resume": args.resume.as_ref().map(|p| p.display().to_string()),
        "optimizer": schedule.optimizer.name(),
        "alpha": args.alpha,
        "lr_decay": args.lr_decay,
        "patience": args.patience,
        "augment": args.augment,
        "seed": args.seed,
        "iterations": if args.batch_size.is_some() { None } else { Some(args.iterations) },
        "epochs": args.batch_size.map(|_| args.epochs),
        "batch_size": capacity,
        "dev_size": args.dev_size,
        "train": train_source.name(),
        "test": test_name,
        "checkpoint": args.checkpoint.as_ref().map(|p| p.display().to_string()),
    });
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
        println!("saved the model to {}", path.display());
    }
    if let Some(path) = &args.metrics {
        metrics::write_csv(path, &report.history)?;
        println!("wrote the training curves to {}", path.display());
    }
    if let Some(path) = &args.plot {
        metrics::plot(path, &report.history)?;
        println!("drew the training curves in {}", path.display());
    }

    let dev_labels = split.labels(List::Dev);
    for (i, &image) in split.dev.iter().take(args.show).enumerate() {
        println!(
            "\ndev image {i}: predicted {} ({:.1}% confident), label {}",
            report.dev_predictions[i],
            100.0 * report.dev_confidence[i],
            dev_labels[i]
        );
        print!(
            "{}",
            art::draw(&split.pool.images[image as usize * data::PIXELS..][..data::PIXELS])
        );
    }
    if args.json {
        let mut summary = options;
        summary["adapter"] = json!(device);
        summary["train_samples"] = json!(split.train.len());
        summary["dev_samples"] = json!(split.dev.len());
        summary["test_samples"] = json!(split.test.len());
        summary["steps"] = json!(report.steps);
        summary["ending"] = json!(match report.ending {
            Ending::Finished => "finished",
            Ending::EarlyStopped { .. } => "early_stopped",
            Ending::Interrupted => "interrupted",
        });
        summary["seconds"] = json!(report.seconds);
        summary["train_samples_per_second"] = json!(report.train_samples_per_second);
        summary["final_loss"] = json!(report.final_loss);
        summary["dev_accuracy"] = json!(report.dev_accuracy);
        summary["test_accuracy"] = json!(report.test_accuracy);
        summary["saved"] = json!(args.save.as_ref().map(|p| p.display().to_string()));
        println!("{summary}");
    }
    if report.ending == Ending::Interrupted {
        let mut saved = match &args.save {
            Some(path) => format!(
                "the model after step {} is saved in {}",
                report.steps,
                path.display()
            ),
            None => "no model was saved".to_string(),
        };
        if let (Some(c), Some(step)) = (&args.checkpoint, report.checkpointed) {
            saved += &format!("; --resume {} continues after step {step}", c.display());
        }
        return Err(Error::Interrupted(format!("interrupted: {saved}")));
    }
    Ok(())
}
