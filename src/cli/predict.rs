//! `mnist-gpu predict` and `mnist-gpu eval`: a saved model on every image of a file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use serde_json::json;

use super::serve::probabilities;
use super::{check_output, percent, BackendArgs};
use mnist_gpu::data::pool::{ImagePool, List, ListSizes};
use mnist_gpu::data::{self, Dataset, CLASSES, EMBEDDED_TEST};
use mnist_gpu::error::{config, Result};
use mnist_gpu::model::{argmax_columns, confidence_columns};
use mnist_gpu::model_file::{self, write_atomically};
use mnist_gpu::{art, Error};

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// A model saved with --save.
    #[arg(long)]
    pub model: PathBuf,

    /// Images to classify: CSV (with or without a label column, e.g. Kaggle's test.csv) or
    /// IDX, optionally .gz.
    #[arg(long)]
    pub data: PathBuf,

    /// Write the predictions as a Kaggle digit-recognizer submission: `ImageId,Label`, ids
    /// from 1; `-` writes it to stdout (and everything else to stderr).
    #[arg(long, value_name = "FILE.csv")]
    pub out: Option<PathBuf>,

    /// Add the model's softmax probabilities to --out's rows: columns `p0` to `p9`.
    #[arg(long, requires = "out")]
    pub probabilities: bool,

    /// Draw the first N images as text with the prediction, its confidence and the label.
    #[arg(long, default_value_t = 0)]
    pub show: usize,

    #[command(flatten)]
    pub backend: BackendArgs,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// A model saved with --save.
    #[arg(long)]
    pub model: PathBuf,

    /// Labelled images: CSV with a label column, or IDX with its labels file [default: the
    /// embedded 10,000 test digits].
    #[arg(long)]
    pub data: Option<PathBuf>,

    /// Print a JSON report as the last line of stdout.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub backend: BackendArgs,
}

/// A model's logits (10, n) for every image of a file, and the file.
struct Classified {
    dataset: Dataset,
    logits: Vec<f32>,
    device: String,
    /// "cpu" or "gpu", and why (`--backend auto` may choose either).
    backend: &'static str,
    reason: String,
    path: &'static str,
}

/// Where the human-readable lines go: stdout, unless stdout carries `predict --out -`'s CSV.
#[derive(Clone, Copy)]
struct Notes {
    to_stderr: bool,
}

impl Notes {
    fn say(self, line: impl std::fmt::Display) {
        if self.to_stderr {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
}

fn classify(
    model_path: &Path,
    mut dataset: Dataset,
    backend: &BackendArgs,
    notes: Notes,
) -> Result<Classified> {
    let model = model_file::load(model_path)?.model;
    let n = dataset.len();
    if n == 0 {
        return config(format!("{}: holds no images", dataset.source));
    }
    // The backends evaluate their test list; an unlabelled file gets placeholder labels,
    // which only the loss would see. The pixels are lent to the pool, not copied.
    let pool = Arc::new(ImagePool {
        images: std::mem::take(&mut dataset.images),
        labels: dataset.labels.clone().unwrap_or_else(|| vec![0; n]),
    });
    let sizes = ListSizes {
        train: 0,
        dev: 0,
        test: n,
    };
    let mut opened = backend.open(&model, pool.clone(), sizes, 1)?;
    for note in opened.notes("classifying") {
        notes.say(note);
    }
    let on = &mut opened.backend;
    on.set_list(List::Test, &(0..n as u32).collect::<Vec<_>>())?;
    let logits = on.logits(List::Test)?;
    let (device, path) = (on.device_name(), on.path().name());
    let (backend, reason) = (opened.name, opened.reason);
    drop(opened.backend);
    // The backend is gone, so the pool is ours alone again.
    dataset.images = Arc::try_unwrap(pool).map_or_else(|p| p.images.clone(), |p| p.images);
    Ok(Classified {
        dataset,
        logits,
        device,
        backend,
        reason,
        path,
    })
}

/// `--out -`: the CSV goes to stdout, so nothing else may.
fn is_stdout(out: &Option<PathBuf>) -> bool {
    out.as_deref() == Some(Path::new("-"))
}

pub fn predict(args: &PredictArgs) -> Result<()> {
    let notes = Notes {
        to_stderr: is_stdout(&args.out),
    };
    if !notes.to_stderr {
        check_output(&args.out, "--out", &["csv"])?;
    }
    let dataset = data::load(&args.data)?;
    let c = classify(&args.model, dataset, &args.backend, notes)?;
    let n = c.dataset.len();
    if args.show > n {
        return config(format!(
            "--show {}: {} has only {n} images",
            args.show, c.dataset.source
        ));
    }
    let predictions = argmax_columns(&c.logits);
    let mut counts = [0usize; CLASSES];
    for &p in &predictions {
        counts[p as usize] += 1;
    }
    notes.say(format!(
        "classified {n} images of {} on {}",
        c.dataset.source, c.device
    ));
    notes.say(format!("predicted digits: {counts:?} (0 to 9)"));
    if let Some(labels) = &c.dataset.labels {
        let correct = predictions
            .iter()
            .zip(labels)
            .filter(|(p, l)| p == l)
            .count();
        notes.say(format!(
            "accuracy against the file's labels: {}",
            percent(Some(correct as f64 / n as f64))
        ));
    }
    show(&c, &predictions, args.show, notes);
    if let Some(out) = &args.out {
        let csv = submission(&predictions, args.probabilities.then_some(&c.logits[..]));
        let columns = if args.probabilities {
            "ImageId,Label,p0,…,p9"
        } else {
            "Kaggle's ImageId,Label"
        };
        if notes.to_stderr {
            use std::io::Write;
            std::io::stdout()
                .lock()
                .write_all(csv.as_bytes())
                .map_err(|source| Error::Io {
                    path: "--out - (stdout)".into(),
                    source,
                })?;
            notes.say(format!("wrote {n} predictions to stdout ({columns})"));
        } else {
            write_atomically(out, csv.as_bytes())?;
            notes.say(format!(
                "wrote {n} predictions to {} ({columns})",
                out.display()
            ));
        }
    }
    Ok(())
}

/// `--show N`: the first N images as text, with the prediction, its confidence and the label.
fn show(c: &Classified, predictions: &[u8], count: usize, notes: Notes) {
    let confidence = confidence_columns(&c.logits);
    for i in 0..count {
        let label = c
            .dataset
            .labels
            .as_ref()
            .map_or(String::new(), |l| format!(", label {}", l[i]));
        notes.say(format!(
            "\nimage {}: predicted {} ({:.1}% confident){label}",
            i + 1,
            predictions[i],
            100.0 * confidence[i]
        ));
        let drawing = art::draw(c.dataset.image(i));
        notes.say(drawing.trim_end_matches('\n'));
    }
}

/// Kaggle's submission, `ImageId,Label` with ids from 1; with the logits, each row also holds
/// the softmax probabilities of the ten digits, `p0` to `p9`.
fn submission(predictions: &[u8], logits: Option<&[f32]>) -> String {
    let mut csv = String::from("ImageId,Label");
    if logits.is_some() {
        for d in 0..CLASSES {
            csv += &format!(",p{d}");
        }
    }
    csv.push('\n');
    for (i, p) in predictions.iter().enumerate() {
        csv += &format!("{},{p}", i + 1);
        if let Some(logits) = logits {
            let column = &logits[i * CLASSES..(i + 1) * CLASSES];
            for q in probabilities(column) {
                csv += &format!(",{q:.6}");
            }
        }
        csv.push('\n');
    }
    csv
}

/// Per class: precision = correct / predicted as it, recall = correct / labelled as it.
fn precision_recall(confusion: &[[usize; CLASSES]; CLASSES]) -> Vec<(Option<f64>, Option<f64>)> {
    (0..CLASSES)
        .map(|c| {
            let predicted: usize = confusion.iter().map(|row| row[c]).sum();
            let labelled: usize = confusion[c].iter().sum();
            let hit = confusion[c][c] as f64;
            let ratio = |of: usize| (of > 0).then(|| hit / of as f64);
            (ratio(predicted), ratio(labelled))
        })
        .collect()
}

/// `--data`, or (as training's default test set) the embedded test digits, saying so.
fn eval_data(args: &EvalArgs, notes: Notes) -> Result<Dataset> {
    let Some(path) = &args.data else {
        let test = EMBEDDED_TEST.load()?;
        notes.say(format!(
            "no --data: evaluating on the {} test digits embedded in the binary ({})",
            test.len(),
            test.source
        ));
        return Ok(test);
    };
    Ok(data::load(path)?)
}

pub fn eval(args: &EvalArgs) -> Result<()> {
    let notes = Notes { to_stderr: false };
    let c = classify(&args.model, eval_data(args, notes)?, &args.backend, notes)?;
    let labels = c.dataset.require_labels().map_err(Error::from)?;
    let n = labels.len();
    let predictions = argmax_columns(&c.logits);
    // confusion[label][prediction]
    let mut confusion = [[0usize; CLASSES]; CLASSES];
    for (&l, &p) in labels.iter().zip(&predictions) {
        confusion[l as usize][p as usize] += 1;
    }
    let correct: usize = (0..CLASSES).map(|c| confusion[c][c]).sum();
    let accuracy = correct as f64 / n as f64;
    let (loss, _) = mnist_gpu::model::loss_and_correct(&c.logits, labels);
    let per_class = precision_recall(&confusion);

    println!(
        "{} on {} images of {} ({})",
        args.model.display(),
        n,
        c.dataset.source,
        c.device
    );
    println!(
        "accuracy {} ({correct}/{n}), loss {loss:.4}",
        percent(Some(accuracy))
    );
    println!("\ndigit  precision  recall  images");
    for (digit, (precision, recall)) in per_class.iter().enumerate() {
        let labelled: usize = confusion[digit].iter().sum();
        println!(
            "{digit:>5}  {:>9}  {:>6}  {labelled:>6}",
            percent(*precision),
            percent(*recall)
        );
    }
    println!("\nconfusion matrix (rows: label, columns: prediction)");
    println!(
        "     {}",
        (0..CLASSES).map(|d| format!("{d:>5}")).collect::<String>()
    );
    for (digit, row) in confusion.iter().enumerate() {
        println!(
            "{digit:>5}{}",
            row.iter().map(|v| format!("{v:>5}")).collect::<String>()
        );
    }
    if args.json {
        let report = json!({
            "model": args.model.display().to_string(),
            "data": c.dataset.source,
            "backend": c.backend,
            "backend_asked": args.backend.backend.name(),
            "backend_reason": c.reason,
            "path": c.path,
            "adapter": c.device,
            "images": n,
            "accuracy": accuracy,
            "loss": loss,
            "precision": per_class.iter().map(|p| p.0).collect::<Vec<_>>(),
            "recall": per_class.iter().map(|p| p.1).collect::<Vec<_>>(),
            "confusion": confusion,
        });
        println!("{report}");
    }
    Ok(())
}
