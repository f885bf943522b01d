//! Command line: `mnist-gpu [OPTIONS]` trains and reports; `mnist-gpu predict` and
//! `mnist-gpu eval` use a saved model, `mnist-gpu export` writes it as ONNX; `mnist-gpu bench`
//! measures throughput. See `--help`.

mod cli;

use std::io::Write;
use std::process::ExitCode;

use std::collections::BTreeSet;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use mnist_gpu::Error;

/// Trains the classic MNIST network (784 → hidden → 10, softmax) by gradient descent, on the
/// GPU (WGSL compute shaders through wgpu) or the CPU.
///
/// With no --train/--test it uses the 10,000 training and 10,000 test digits embedded in
/// data/mnist/. Full-batch gradient descent by default; --batch-size switches to mini-batch SGD.
/// The subcommands use a model saved with --save.
#[derive(Debug, Parser)]
// `about` and `long_about` both come from the comment above (its first paragraph, and the
// whole), so `-h` and `--help` open with the same sentence.
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    train: cli::train_args::TrainArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Classify pictures, or every image of a file, with a saved model (Kaggle submission
    /// with --out).
    Predict(cli::predict::PredictArgs),
    /// Accuracy, per-class precision and recall, and the confusion matrix of a saved model
    /// on a labelled file.
    Eval(cli::predict::EvalArgs),
    /// Writes a saved model as an ONNX file (raw 0-255 pixels in, probabilities out) for
    /// onnxruntime, OpenCV, TensorRT or Netron.
    Export(cli::export::ExportArgs),
    /// Measures training throughput (samples/s) per backend and batch size on synthetic data.
    Bench(cli::bench::BenchOptions),
    /// Serves a local web page to draw a digit and watch the model answer, try test digits and
    /// see what it learned, and the JSON API the page uses.
    Serve(cli::serve::ServeArgs),
}

/// Mesa's Vulkan device-selection layer connects to a Wayland display to put the desktop's GPU
/// first, and where there is none (no `XDG_RUNTIME_DIR`: a server, a container) libwayland
/// prints `error: XDG_RUNTIME_DIR is invalid or not set`, twice, which reads as ours. We choose
/// the adapter ourselves, so there we turn the layer off, unless the user steers it.
fn quiet_headless_vulkan() {
    let headless = std::env::var_os("XDG_RUNTIME_DIR")
        .is_none_or(|dir| !std::path::Path::new(&dir).is_absolute());
    let steered = ["MESA_VK_DEVICE_SELECT", "NODEVICE_SELECT"]
        .iter()
        .any(|var| std::env::var_os(var).is_some());
    if headless && !steered {
        // Before any thread starts: nothing else reads the environment yet.
        std::env::set_var("NODEVICE_SELECT", "1");
    }
}

/// Rust ignores SIGPIPE, so printing to a pipe whose reader has gone (`mnist-gpu | head`)
/// panics. A command-line tool should end quietly there, as `cat` does: the signal's default
/// action. Files are written whole or not at all (by rename), so nothing is left half-written.
fn end_quietly_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: sets a signal's disposition to its default, before any other thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// 2 for a command line that cannot run as given (as clap's own errors): options out of range
/// or contradicting one another, an output path that cannot be written; 1 for what went wrong
/// with the run itself: a file, its data, a model, the GPU, a diverged loss.
fn exit_status(e: &Error) -> ExitCode {
    match e {
        Error::Config(_) => ExitCode::from(2),
        _ => ExitCode::FAILURE,
    }
}

fn main() -> ExitCode {
    quiet_headless_vulkan();
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|matches| Ok((Cli::from_arg_matches(&matches)?, matches)));
    let (cli, matches) = match parsed {
        Ok(parsed) => parsed,
        // --help and --version.
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        // clap explains over several lines; errors here are one line, like every other.
        Err(e) => {
            eprintln!("{}", cli::usage_error::one_line(&e));
            return ExitCode::from(2);
        }
    };
    // The training options the command line gives (not defaults): a resumed checkpoint's run
    // must not be contradicted by them.
    let explicit: BTreeSet<String> = matches
        .ids()
        .filter(|id| matches.value_source(id.as_str()) == Some(ValueSource::CommandLine))
        .map(|id| id.to_string())
        .collect();
    // Not for `serve`, whose sockets' readers go away all the time, nor for training, which
    // saves its work first (`cli::stop`).
    if matches!(
        cli.command,
        Some(Command::Predict(_) | Command::Eval(_) | Command::Export(_) | Command::Bench(_))
    ) {
        end_quietly_on_closed_pipe();
    }
    let result = match &cli.command {
        None => cli::train::run(&cli.train, &explicit),
        Some(Command::Predict(args)) => cli::predict::predict(args),
        Some(Command::Eval(args)) => cli::predict::eval(args),
        Some(Command::Export(args)) => cli::export::export(args),
        Some(Command::Bench(options)) => cli::bench::run(options),
        Some(Command::Serve(args)) => cli::serve::serve(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // What was saved, then the status a shell reports for the signal that stopped it.
        Err(Error::Interrupted(line)) => cli::stop::end(&line),
        Err(e) => {
            // Not `eprintln!`: stderr may be a closed pipe.
            let _ = writeln!(std::io::stderr(), "error: {e}");
            exit_status(&e)
        }
    }
}
