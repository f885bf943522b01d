//! `mnist-gpu predict` and `mnist-gpu eval`: a saved model on every image of a file, or on
//! pictures.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use serde_json::json;

use super::serve::probabilities;
use super::{check_output, data_notes, percent, BackendArgs};
use mnist_gpu::data::pool::{ImagePool, List, ListSizes};
use mnist_gpu::data::{self, Dataset, Loaded, Part, CLASSES, EMBEDDED_TEST, EMBEDDED_TRAIN};
use mnist_gpu::error::{config, Result};
use mnist_gpu::model::{argmax_columns, confidence_columns, Model};
use mnist_gpu::model_file::{self, write_atomically};
use mnist_gpu::{art, Error};

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// A model saved with --save.
    #[arg(long)]
    pub model: PathBuf,

    /// Pictures to classify (PNG or JPEG, any size and colour, made MNIST-like first), or
    /// folders of them: one line per picture.
    #[arg(value_name = "PICTURE", conflicts_with = "data")]
    pub pictures: Vec<PathBuf>,

    /// Images to classify: a dataset in any format --train reads (CSV with or without a label
    /// column, e.g. Kaggle's test.csv; IDX; .npz; .npy; parquet; a folder of pictures),
    /// optionally .gz, or one picture. A file of two sets gives its test set.
    #[arg(long, required_unless_present = "pictures")]
    pub data: Option<PathBuf>,

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

    /// Labelled images: CSV with a label column, IDX with its labels file, .npz, .npy,
    /// parquet, or folders of pictures, one per class (a file of two sets gives its test set)
    /// [default: the embedded 10,000 test digits].
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
    model: &Model,
    mut dataset: Dataset,
    backend: &BackendArgs,
    notes: Notes,
) -> Result<Classified> {
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
    let mut opened = backend.open(model, pool.clone(), sizes, 1)?;
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
    let (loaded, per_picture) = match &args.data {
        Some(path) => {
            let loaded = data::open(path, Part::Test)?;
            // One picture is answered as pictures are, not as a dataset.
            let one = !path.is_dir() && loaded.pictures.len() == 1;
            (loaded, one)
        }
        None => (read_pictures(&args.pictures)?, true),
    };
    let lines = data_notes(&loaded);
    let skip = usize::from(per_picture && loaded.inverted().is_some());
    for line in &lines[..lines.len() - skip] {
        notes.say(line);
    }
    let model = model_file::load(&args.model)?.model;
    let bright = loaded.dataset.bright_backgrounds();
    let c = classify(&model, loaded.dataset, &args.backend, notes)?;
    let n = c.dataset.len();
    if args.show > n {
        return config(format!(
            "--show {}: {} has only {n} images",
            args.show, c.dataset.source
        ));
    }
    warn_bright_backgrounds(&c.dataset, &bright);
    let predictions = argmax_columns(&c.logits);
    if per_picture {
        say_per_picture(&c, &predictions, &loaded.pictures, notes);
    } else {
        say_summary(&c, &predictions, notes);
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

/// A dataset's answer: how many of each digit, and the accuracy when it has labels.
fn say_summary(c: &Classified, predictions: &[u8], notes: Notes) {
    let n = c.dataset.len();
    let mut counts = [0usize; CLASSES];
    for &p in predictions {
        counts[p as usize] += 1;
    }
    notes.say(format!(
        "classified {n} images of {} on {}",
        c.dataset.source, c.device
    ));
    notes.say(format!("predicted digits: {counts:?} (0 to 9)"));
    if let Some(labels) = &c.dataset.labels {
        notes.say(format!(
            "accuracy against the file's labels: {}",
            percent(Some(accuracy(predictions, labels)))
        ));
    }
}

/// The share of predictions equal to their labels.
fn accuracy(predictions: &[u8], labels: &[u8]) -> f64 {
    let correct = predictions
        .iter()
        .zip(labels)
        .filter(|(p, l)| p == l)
        .count();
    correct as f64 / predictions.len().max(1) as f64
}

/// Pictures' answers: a line per picture naming it, e.g. `a.png: 7 (99.6% confident)`, with its
/// label when its folder gives one, and whether it was inverted.
fn say_per_picture(c: &Classified, predictions: &[u8], pictures: &[data::Origin], notes: Notes) {
    let confidence = confidence_columns(&c.logits);
    for (i, picture) in pictures.iter().enumerate() {
        let label = c
            .dataset
            .labels
            .as_ref()
            .map_or(String::new(), |l| format!(", label {}", l[i]));
        let inverted = if picture.inverted {
            "; light background, inverted"
        } else {
            ""
        };
        notes.say(format!(
            "{}: {} ({:.1}% confident{inverted}){label}",
            picture.name,
            predictions[i],
            100.0 * confidence[i]
        ));
    }
    if let (Some(labels), true) = (&c.dataset.labels, pictures.len() > 1) {
        notes.say(format!(
            "accuracy against the folders' labels: {}",
            percent(Some(accuracy(predictions, labels)))
        ));
    }
}

/// The pictures named on the command line (pictures, or folders of them), as one dataset; a
/// file that is not a picture is refused, with where datasets go.
fn read_pictures(paths: &[PathBuf]) -> Result<Loaded> {
    let mut all = Loaded {
        dataset: Dataset {
            images: Vec::new(),
            labels: Some(Vec::new()),
            source: match paths {
                [one] => one.display().to_string(),
                _ => "the pictures given".to_string(),
            },
        },
        pictures: Vec::new(),
        notes: Vec::new(),
    };
    for path in paths {
        let loaded = data::open(path, Part::Test)?;
        if loaded.pictures.len() != loaded.dataset.len() {
            return config(format!(
                "{}: a dataset, not a picture or a folder of pictures: pass it with --data",
                path.display()
            ));
        }
        all.dataset.images.extend_from_slice(&loaded.dataset.images);
        all.dataset.labels = match (all.dataset.labels, loaded.dataset.labels) {
            (Some(mut labels), Some(more)) => {
                labels.extend(more);
                Some(labels)
            }
            _ => None,
        };
        all.pictures.extend(loaded.pictures);
        all.notes.extend(loaded.notes);
    }
    Ok(all)
}

/// One line on stderr when images have a bright background (`bright`: their indices; dark ink
/// on light paper): the network reads MNIST's light ink on dark, and would answer confidently
/// and wrongly.
fn warn_bright_backgrounds(dataset: &Dataset, bright: &[usize]) {
    let Some(&first) = bright.first() else {
        return;
    };
    let which = if dataset.len() == 1 {
        format!("the image of {} has a bright background", dataset.source)
    } else {
        format!(
            "{} of {} images of {} have a bright background (the first: image {})",
            bright.len(),
            dataset.len(),
            dataset.source,
            first + 1
        )
    };
    eprintln!(
        "warning: {which}: the network reads light ink on a dark background, as MNIST's, so \
         their answers are likely wrong; invert them (255 - pixel)"
    );
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

/// `--data` (its test set, for a file of two), or (as training's default test set) the
/// embedded test digits, saying so.
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
    let loaded = data::open(path, Part::Test)?;
    for line in data_notes(&loaded) {
        notes.say(line);
    }
    Ok(loaded.dataset)
}

/// The line saying which file the model was trained on (the `train` of its metadata's
/// `options`), when that was a file and the model is evaluated on the embedded MNIST digits, or
/// on data of another format than that file's.
fn trained_on(metadata: &BTreeMap<String, String>, data: Option<&Path>) -> Option<String> {
    let options: serde_json::Value = serde_json::from_str(metadata.get("options")?).ok()?;
    let train = options.get("train")?.as_str()?;
    if train == EMBEDDED_TRAIN.name() {
        return None;
    }
    let Some(path) = data else {
        return Some(format!(
            "note: the model was trained on {train}, not on the embedded MNIST digits it is \
             evaluated on here; pass its test data with --data"
        ));
    };
    let theirs = data::format_name(Path::new(train))?;
    let ours = data::format_name(path)?;
    (theirs != ours).then(|| {
        format!("note: the model was trained on {train} ({theirs}); the data here is {ours}")
    })
}

pub fn eval(args: &EvalArgs) -> Result<()> {
    let notes = Notes { to_stderr: false };
    let dataset = eval_data(args, notes)?;
    let file = model_file::load(&args.model)?;
    if let Some(line) = trained_on(&file.metadata, args.data.as_deref()) {
        notes.say(line);
    }
    let bright = dataset.bright_backgrounds();
    let c = classify(&file.model, dataset, &args.backend, notes)?;
    let labels = c.dataset.require_labels().map_err(Error::from)?;
    warn_bright_backgrounds(&c.dataset, &bright);
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
