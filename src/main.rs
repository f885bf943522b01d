//! Command line: `mnist-gpu [OPTIONS]` trains and reports; `mnist-gpu bench [OPTIONS]`
//! measures training throughput; see `--help`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;

use mnist_gpu::backend::{Backend, List};
use mnist_gpu::cpu::CpuBackend;
use mnist_gpu::error::{config, Result};
use mnist_gpu::model::{Activation, Init, Model};
use mnist_gpu::train::{self, Progress, Schedule, Split};
use mnist_gpu::{art, data, gpu};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendKind {
    /// WGSL compute shaders through wgpu (a real GPU, or a software adapter such as lavapipe).
    Gpu,
    /// The CPU reference.
    Cpu,
}

/// Trains the classic MNIST network (784 → hidden → 10, softmax) by gradient descent.
///
/// With no --train/--test it uses the 10,000 training and 10,000 test digits embedded in
/// data/mnist/. Full-batch gradient descent by default; --batch-size switches to mini-batch SGD.
#[derive(Debug, Parser)]
// Training takes its options at the top level, as before the subcommand existed.
#[command(version, about, long_about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// Where the math runs.
    #[arg(long, value_enum, default_value_t = BackendKind::Gpu)]
    backend: BackendKind,

    /// GPU adapter to use: any part of its name, case-insensitive (see WGPU_ADAPTER_NAME).
    #[arg(long)]
    adapter: Option<String>,

    /// Training data: an IDX images file (labels beside it) or a CSV, optionally .gz.
    #[arg(long)]
    train: Option<PathBuf>,

    /// Test data, same formats; `none` for no test set.
    #[arg(long)]
    test: Option<PathBuf>,

    /// Hidden layer widths, comma-separated: `10` is the classic 784-10-10, `10,10` two layers.
    #[arg(long, value_delimiter = ',', default_value = "10")]
    hidden: Vec<usize>,

    /// Activation between layers.
    #[arg(long, value_enum, default_value_t = Activation::Relu)]
    activation: Activation,

    /// Weight initialisation.
    #[arg(long, value_enum, default_value_t = Init::He)]
    init: Init,

    /// Seed for the initial weights, the dev split and the batch order.
    #[arg(long, default_value_t = 1)]
    seed: u64,

    /// Learning rate α.
    #[arg(long, default_value_t = 0.3)]
    alpha: f64,

    /// Full-batch gradient descent steps.
    #[arg(long, default_value_t = 500, conflicts_with = "batch_size")]
    iterations: usize,

    /// Mini-batch size: switches from full-batch gradient descent to mini-batch SGD.
    #[arg(long)]
    batch_size: Option<usize>,

    /// Passes over the training set in mini-batch mode.
    #[arg(long, default_value_t = 30, requires = "batch_size")]
    epochs: usize,

    /// Images held out of the training file as the dev set.
    #[arg(long, default_value_t = 1000)]
    dev_size: usize,

    /// Print progress every N steps [default: 50 full-batch, once an epoch mini-batch].
    #[arg(long)]
    log_every: Option<usize>,

    /// Draw N dev images as text with their predicted and true labels.
    #[arg(long, default_value_t = 0)]
    show: usize,

    /// Print a JSON summary as the last line of stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measures training throughput (samples/s) per backend and batch size on synthetic data.
    Bench(mnist_gpu::bench::BenchOptions),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Some(Command::Bench(options)) => mnist_gpu::bench::run(options),
        None => run(&cli),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The embedded data's files, found from the source tree.
fn embedded(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/mnist")
        .join(name)
}

fn run(cli: &Cli) -> Result<()> {
    let train_path = cli
        .train
        .clone()
        .unwrap_or_else(|| embedded("train-10k-images-idx3-ubyte.gz"));
    let test_path = match &cli.test {
        Some(p) if p.as_os_str() == "none" => None,
        Some(p) => Some(p.clone()),
        None if cli.train.is_none() => Some(embedded("t10k-images-idx3-ubyte.gz")),
        None => None,
    };
    let train_file = data::load(&train_path)?;
    let test_file = test_path.as_deref().map(data::load).transpose()?;
    let split = Split::new(&train_file, test_file.as_ref(), cli.dev_size, cli.seed)?;
    if cli.show > split.dev.len() {
        return config(format!(
            "--show {}: there are only {} dev images",
            cli.show,
            split.dev.len()
        ));
    }

    let mini_batch = cli.batch_size.is_some();
    let steps_per_epoch = cli.batch_size.map(|b| split.train.len().div_ceil(b.max(1)));
    let schedule = Schedule {
        batch_size: cli.batch_size,
        iterations: cli.iterations,
        epochs: cli.epochs,
        alpha: cli.alpha as f32,
        log_every: cli.log_every.or(steps_per_epoch).unwrap_or(50),
        seed: cli.seed,
    };
    schedule.validate(split.train.len())?;
    let model = Model::new(&cli.hidden, cli.activation, cli.init, cli.seed)?;
    let capacity = schedule.capacity(split.train.len());

    let mut backend: Box<dyn Backend> = match cli.backend {
        BackendKind::Cpu => Box::new(CpuBackend::new(
            &model,
            split.pool.clone(),
            split.sizes(),
            capacity,
        )?),
        BackendKind::Gpu => gpu::open_backend(
            cli.adapter.as_deref(),
            &model,
            split.pool.clone(),
            split.sizes(),
            capacity,
        )?,
    };
    let device = backend.device_name();

    println!(
        "training 784-{}-10 ({}) on {}: {} train, {} dev, {} test images; {}, α = {}",
        cli.hidden
            .iter()
            .map(|h| h.to_string())
            .collect::<Vec<_>>()
            .join("-"),
        cli.activation.name(),
        device,
        split.train.len(),
        split.dev.len(),
        split.test.len(),
        match cli.batch_size {
            None => format!("full batch, {} iterations", cli.iterations),
            Some(b) => format!("batches of {b}, {} epochs", cli.epochs),
        },
        schedule.alpha,
    );
    let mut print_progress = |p: &Progress| {
        let epoch = p
            .epoch
            .map(|e| format!("epoch {e:>3}  "))
            .unwrap_or_default();
        let dev = p
            .dev_accuracy
            .map(|a| format!("  dev acc {a:.4}"))
            .unwrap_or_default();
        println!(
            "{epoch}step {:>6}/{}  loss {:.4}  batch acc {:.4}{dev}",
            p.step, p.steps, p.batch.loss, p.batch.accuracy
        );
    };
    let report = train::train(backend.as_mut(), &split, &schedule, &mut print_progress)?;

    let percent = |a: Option<f64>| a.map_or("n/a".to_string(), |a| format!("{:.2}%", 100.0 * a));
    println!(
        "done: dev accuracy {}, test accuracy {}, {:.2} s, {:.0} training samples/s",
        percent(report.dev_accuracy),
        percent(report.test_accuracy),
        report.seconds,
        report.train_samples_per_second
    );

    let dev_labels = split.labels(List::Dev);
    for (i, &image) in split.dev.iter().take(cli.show).enumerate() {
        println!(
            "\ndev image {i}: predicted {}, label {}",
            report.dev_predictions[i], dev_labels[i]
        );
        print!(
            "{}",
            art::draw(&split.pool.images[image as usize * data::PIXELS..][..data::PIXELS])
        );
    }
    if cli.json {
        let summary = json!({
            "backend": match cli.backend { BackendKind::Cpu => "cpu", BackendKind::Gpu => "gpu" },
            "adapter": device,
            "hidden": cli.hidden,
            "activation": cli.activation.name(),
            "init": format!("{:?}", cli.init).to_lowercase(),
            "alpha": cli.alpha,
            "seed": cli.seed,
            "train_samples": split.train.len(),
            "dev_samples": split.dev.len(),
            "test_samples": split.test.len(),
            "iterations": if mini_batch { None } else { Some(cli.iterations) },
            "epochs": if mini_batch { Some(cli.epochs) } else { None },
            "batch_size": capacity,
            "steps": report.steps,
            "seconds": report.seconds,
            "train_samples_per_second": report.train_samples_per_second,
            "final_loss": report.final_loss,
            "dev_accuracy": report.dev_accuracy,
            "test_accuracy": report.test_accuracy,
        });
        println!("{summary}");
    }
    Ok(())
}
