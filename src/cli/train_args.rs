//! The training command's flags (clap), and the one place they become the run's typed options
//! (`RunOptions`), which the checkpoint, `--json` and the saved model's metadata record.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::BackendArgs;
use mnist_gpu::augment::{Augment, Distortion};
use mnist_gpu::model::{Activation, Init, Model};
use mnist_gpu::optimizer::OptimizerKind;
use mnist_gpu::options::{Every, RunOptions, EPOCHS, ITERATIONS};

#[derive(Debug, Clone, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub backend: BackendArgs,

    /// Training data, its format told by its bytes: IDX images (labels beside them), CSV,
    /// NumPy .npz/.npy, Hugging Face .parquet, or a folder of pictures (one folder per class),
    /// optionally .gz.
    #[arg(long)]
    pub train: Option<PathBuf>,

    /// Test data, same formats; `none` for no test set [default: the test set that goes with
    /// --train (t10k-* beside train-*, a .npz's x_test, a folder's test/, test-*.parquet)].
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

    /// How often --checkpoint writes: every N steps, `epoch`, or `progress` (at every progress
    /// line) [default: progress, or the resumed checkpoint's].
    #[arg(long, value_name = "N|epoch|progress", value_parser = Every::parse)]
    pub checkpoint_every: Option<Every>,

    /// Seed for the initial weights, the dev split, the batch order and the augmentation.
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

    /// Distort each training image, drawn per batch: `shift` (--augment alone) moves it by up
    /// to 2 pixels each way; `affine` rotates, scales, shears and translates it (bilinear);
    /// `elastic` adds a smooth random displacement field to the affine warp.
    #[arg(
        long,
        value_enum,
        value_name = "KIND",
        num_args = 0..=1,
        default_missing_value = "shift"
    )]
    pub augment: Option<AugmentKind>,

    /// affine/elastic: the largest rotation, in radians, each way.
    #[arg(long, value_name = "RADIANS", default_value_t = Distortion::default().rotation, allow_negative_numbers = true)]
    pub rotation: f64,

    /// affine/elastic: the largest relative change of size, e.g. 0.12 for 0.88..1.12.
    #[arg(long, default_value_t = Distortion::default().scale, allow_negative_numbers = true)]
    pub scale: f64,

    /// affine/elastic: the largest shear (x moves by shear·y), each way.
    #[arg(long, default_value_t = Distortion::default().shear, allow_negative_numbers = true)]
    pub shear: f64,

    /// affine/elastic: the largest translation, in pixels, each way along each axis.
    #[arg(long, value_name = "PIXELS", default_value_t = Distortion::default().translation, allow_negative_numbers = true)]
    pub translation: f64,

    /// elastic: the displacement field's RMS per coordinate, in pixels.
    #[arg(long, value_name = "PIXELS", default_value_t = Distortion::default().elastic_alpha, allow_negative_numbers = true)]
    pub elastic_alpha: f64,

    /// elastic: the width σ of the Gaussian that smooths the field, in pixels.
    #[arg(long, value_name = "PIXELS", default_value_t = Distortion::default().elastic_sigma, allow_negative_numbers = true)]
    pub elastic_sigma: f64,

    /// Full-batch gradient descent steps.
    #[arg(
        long,
        default_value_t = ITERATIONS,
        conflicts_with = "batch_size",
        allow_negative_numbers = true
    )]
    pub iterations: usize,

    /// Mini-batch size: switches from full-batch gradient descent to mini-batch SGD.
    #[arg(long, allow_negative_numbers = true)]
    pub batch_size: Option<usize>,

    /// Passes over the training set in mini-batch mode.
    #[arg(long, default_value_t = EPOCHS, allow_negative_numbers = true)]
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

/// What `--augment` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AugmentKind {
    Off,
    Shift,
    Affine,
    Elastic,
}

impl TrainArgs {
    /// The warp's strengths as given (`--rotation` …).
    pub fn distortion(&self) -> Distortion {
        Distortion {
            rotation: self.rotation,
            scale: self.scale,
            shear: self.shear,
            translation: self.translation,
            elastic_alpha: self.elastic_alpha,
            elastic_sigma: self.elastic_sigma,
        }
    }

    /// `--augment` and the strengths, as the run's option.
    pub fn augment(&self) -> Augment {
        let strengths = self.distortion();
        match self.augment {
            None | Some(AugmentKind::Off) => Augment::Off,
            Some(AugmentKind::Shift) => Augment::Shift,
            Some(AugmentKind::Affine) => Augment::Affine(strengths),
            Some(AugmentKind::Elastic) => Augment::Elastic(strengths),
        }
    }

    /// The run's options: these flags (a resumed checkpoint's merged in), the model's
    /// architecture and the test set's name; what is left out stays so (`log_every`, and with
    /// `--checkpoint` its interval), for `RunOptions::resolved` to work out from the data.
    pub fn run_options(&self, model: &Model, test: Option<String>) -> RunOptions {
        let mini_batch = self.batch_size.is_some();
        RunOptions {
            hidden: model.hidden(),
            activation: model.activation,
            optimizer: self.optimizer,
            alpha: self.alpha,
            init: Some(self.init),
            lr_decay: self.lr_decay,
            batch_size: self.batch_size,
            dev_size: self.dev_size,
            seed: self.seed,
            augment: self.augment(),
            patience: self.patience,
            test,
            iterations: (!mini_batch).then_some(self.iterations),
            epochs: mini_batch.then_some(self.epochs),
            log_every: self.log_every,
            checkpoint_every: self
                .checkpoint
                .as_ref()
                .map(|_| self.checkpoint_every.unwrap_or(Every::Progress)),
        }
    }
}
