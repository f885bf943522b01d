//! A training run's options, typed: the one form of them that the command line and `serve`'s
//! page parse into, a checkpoint records (its metadata's `options`), `--json` and the saved
//! model's metadata show, and a resumed run compares its command line against; their defaults,
//! worked out from the training set in one place (`RunOptions::resolved`), from which the
//! training loop's schedule follows (`train::Schedule::of`).
//!
//! Serialised with serde as JSON whose keys are the field names and whose values are spelled
//! once each (`sgd`, `momentum`, `adam`; `relu`, `elu`; a number of steps or `epoch`):
//! checkpoints written before this type existed have exactly these keys, and read back.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::augment::Augment;
use crate::model::{Activation, Init};
use crate::optimizer::OptimizerKind;

/// Full-batch steps where the options leave the run's length out.
pub const ITERATIONS: usize = 500;
/// Mini-batch epochs where they leave it out.
pub const EPOCHS: usize = 30;
/// Steps between progress lines in full-batch mode where they leave it out (mini-batch: once an
/// epoch).
pub const LOG_EVERY: usize = 50;

/// Steps an epoch over `train_len` samples in batches of `batch_size` (None: full batch, one
/// step an epoch), the last batch the short one.
pub fn steps_per_epoch(batch_size: Option<usize>, train_len: usize) -> usize {
    match batch_size {
        None => 1,
        Some(b) => train_len.div_ceil(b.clamp(1, train_len.max(1))),
    }
}

/// The options that define a run, and those a resumed run takes when they are left out. Those
/// whose default depends on the training set (`log_every`, the run's length, `checkpoint_every`)
/// may be left out (None, `Every::Progress`) until `resolved` works them out; a checkpoint
/// records them resolved.
///
/// A field added later must be `#[serde(default)]` (with the value that means "as before"), or
/// checkpoints written before it no longer read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunOptions {
    /// The hidden layers' widths, e.g. `[10]` for the classic 784-10-10.
    pub hidden: Vec<usize>,
    pub activation: Activation,
    pub optimizer: OptimizerKind,
    /// Learning rate α (the run uses it as f32).
    pub alpha: f64,
    /// How the weights were initialised; None in checkpoints written before it was recorded
    /// (and then not written back, so that their options read and write the same text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<Init>,
    /// α is multiplied by this after every epoch (every iteration in full-batch mode).
    pub lr_decay: f64,
    /// None: full-batch gradient descent for `iterations` steps; Some(B): mini-batch SGD with
    /// batches of B for `epochs` epochs.
    pub batch_size: Option<usize>,
    /// Images held out of the training file as the dev set.
    pub dev_size: usize,
    pub seed: u64,
    /// `false`/`true` (off, shift) as the first checkpoints wrote it; a warp with its strengths.
    pub augment: Augment,
    /// Early stopping: evaluations without a better dev loss before the run stops.
    pub patience: Option<usize>,
    /// The test file's name (a path or `embedded:…`), None for no test set.
    pub test: Option<String>,
    /// The run's length: `iterations` in full-batch mode, `epochs` in mini-batch mode (the other
    /// one None).
    pub iterations: Option<usize>,
    pub epochs: Option<usize>,
    /// Steps between progress lines (and dev evaluations, which early stopping counts); None:
    /// once an epoch in mini-batch mode, every `LOG_EVERY` steps in full batch.
    pub log_every: Option<usize>,
    /// How often `--checkpoint` writes; None without one.
    pub checkpoint_every: Option<Every>,
}

impl RunOptions {
    /// These options with the defaults that depend on the training set (of `train_len`
    /// samples) worked out: the run's length in its mode (`ITERATIONS` steps or `EPOCHS`
    /// epochs, the other None), progress once an epoch (mini-batch) or every `LOG_EVERY` steps,
    /// checkpoints (`Every::Progress`) at every progress line. The one place they are applied:
    /// the command line, `serve`'s page and, through the options they record, checkpoints.
    pub fn resolved(self, train_len: usize) -> RunOptions {
        let mini_batch = self.batch_size.is_some();
        let log_every = self.log_every.unwrap_or(if mini_batch {
            steps_per_epoch(self.batch_size, train_len)
        } else {
            LOG_EVERY
        });
        let checkpoint_every = self.checkpoint_every.map(|every| match every {
            Every::Progress => Every::Steps(log_every.max(1)),
            every => every,
        });
        RunOptions {
            iterations: (!mini_batch).then(|| self.iterations.unwrap_or(ITERATIONS)),
            epochs: mini_batch.then(|| self.epochs.unwrap_or(EPOCHS)),
            log_every: Some(log_every),
            checkpoint_every,
            ..self
        }
    }
}

impl Default for RunOptions {
    /// The tutorials' run: 500 full-batch steps of plain gradient descent on 784-10-10.
    fn default() -> RunOptions {
        RunOptions {
            hidden: vec![10],
            activation: Activation::Relu,
            optimizer: OptimizerKind::Sgd,
            alpha: 0.3,
            init: Some(Init::He),
            lr_decay: 1.0,
            batch_size: None,
            dev_size: 1000,
            seed: 1,
            augment: Augment::Off,
            patience: None,
            test: None,
            iterations: Some(ITERATIONS),
            epochs: None,
            log_every: None,
            checkpoint_every: None,
        }
    }
}

/// How often a checkpoint is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Every {
    /// After every N-th step.
    Steps(usize),
    /// At the end of every epoch (in full-batch mode, of every iteration).
    Epoch,
    /// At every progress line (`--checkpoint` without `--checkpoint-every`), until
    /// `RunOptions::resolved` makes it `Steps(log_every)`.
    Progress,
}

impl Every {
    /// `N` (steps, at least 1) or `epoch`.
    pub fn parse(s: &str) -> std::result::Result<Every, String> {
        match s.trim() {
            "epoch" => Ok(Every::Epoch),
            "progress" => Ok(Every::Progress),
            n => match n.parse::<usize>() {
                Ok(0) => Err("must be at least 1 step".into()),
                Ok(n) => Ok(Every::Steps(n)),
                Err(_) => Err(format!("{n:?} is neither a number of steps nor `epoch`")),
            },
        }
    }

    /// Whether a checkpoint follows step `step` (counted from 1).
    pub fn after_step(self, step: usize) -> bool {
        matches!(self, Every::Steps(n) if step.is_multiple_of(n))
    }
}

/// As JSON: the number of steps, or `"epoch"`.
impl Serialize for Every {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Every::Steps(n) => serializer.serialize_u64(*n as u64),
            Every::Epoch => serializer.serialize_str("epoch"),
            Every::Progress => serializer.serialize_str("progress"),
        }
    }
}

impl<'de> Deserialize<'de> for Every {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Every, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Steps(u64),
            Name(String),
        }
        match Written::deserialize(deserializer)? {
            // As the first checkpoints were read: 0 steps is every step.
            Written::Steps(n) => Ok(Every::Steps(n.max(1) as usize)),
            Written::Name(name) => Every::parse(&name).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Init;

    /// A value's JSON string.
    fn json(value: impl Serialize) -> String {
        serde_json::to_value(value)
            .unwrap()
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The defaults that depend on the data, worked out in one place: the length in the run's
    /// mode, progress once an epoch (the short last batch counted) or every `LOG_EVERY` steps,
    /// checkpoints at every progress line; what is given stays, and resolving twice changes
    /// nothing.
    #[test]
    fn resolved_works_out_the_defaults_from_the_training_set() {
        let full = RunOptions::default().resolved(9000);
        assert_eq!(
            (full.iterations, full.epochs, full.log_every),
            (Some(ITERATIONS), None, Some(LOG_EVERY))
        );
        let mini = RunOptions {
            batch_size: Some(64),
            iterations: Some(7),
            checkpoint_every: Some(Every::Progress),
            ..RunOptions::default()
        };
        let resolved = mini.clone().resolved(9000);
        assert_eq!(steps_per_epoch(Some(64), 9000), 141);
        assert_eq!(
            (resolved.iterations, resolved.epochs, resolved.log_every),
            (None, Some(EPOCHS), Some(141))
        );
        assert_eq!(resolved.checkpoint_every, Some(Every::Steps(141)));
        assert_eq!(resolved.clone().resolved(9000), resolved);
        let given = RunOptions {
            log_every: Some(5),
            epochs: Some(2),
            checkpoint_every: Some(Every::Epoch),
            ..mini
        }
        .resolved(9000);
        assert_eq!(
            (given.epochs, given.log_every, given.checkpoint_every),
            (Some(2), Some(5), Some(Every::Epoch))
        );
        // A checkpoint written before `init` was recorded reads without one.
        assert_eq!(serde_json::from_str::<RunOptions>(r#"{"activation":"relu","alpha":0.3,"augment":false,"batch_size":null,"checkpoint_every":null,"dev_size":1,"epochs":null,"hidden":[10],"iterations":5,"log_every":5,"lr_decay":1.0,"optimizer":"sgd","patience":null,"seed":1,"test":null}"#).unwrap().init, None);
    }

    /// One spelling per value: serde's is the `name()` the messages and files use.
    #[test]
    fn serde_names_are_the_names() {
        for kind in [
            OptimizerKind::Sgd,
            OptimizerKind::Momentum,
            OptimizerKind::Adam,
        ] {
            assert_eq!(json(kind), kind.name());
        }
        for activation in [Activation::Relu, Activation::Elu] {
            assert_eq!(json(activation), activation.name());
        }
        for init in [Init::He, Init::Uniform] {
            assert_eq!(json(init), init.name());
        }
    }

    /// The options JSON of checkpoints written before this type (keys and spellings as the
    /// first trainer wrote them) reads back, and writes back the same text.
    #[test]
    fn first_checkpoints_options_round_trip() {
        for text in [
            r#"{"activation":"elu","alpha":0.1,"augment":false,"batch_size":null,"checkpoint_every":"epoch","dev_size":300,"epochs":null,"hidden":[16,12],"iterations":3000,"log_every":5,"lr_decay":1.0,"optimizer":"momentum","patience":50,"seed":1,"test":null}"#,
            r#"{"activation":"relu","alpha":0.003,"augment":true,"batch_size":64,"checkpoint_every":7,"dev_size":200,"epochs":40,"hidden":[10],"iterations":null,"log_every":7,"lr_decay":0.9,"optimizer":"adam","patience":null,"seed":1,"test":"embedded:data/mnist/t10k"}"#,
        ] {
            let options: RunOptions = serde_json::from_str(text).unwrap();
            let back = serde_json::to_value(&options).unwrap().to_string();
            assert_eq!(back, text);
        }
        // A warp is written as an object with its kind and strengths, and reads back.
        let warped = RunOptions {
            augment: Augment::Elastic(crate::augment::Distortion {
                rotation: 0.3,
                ..Default::default()
            }),
            ..RunOptions::default()
        };
        let text = serde_json::to_string(&warped).unwrap();
        assert!(
            text.contains(r#""augment":{"kind":"elastic","rotation":0.3,"#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<RunOptions>(&text).unwrap(), warped);
        // As the first trainer read it: 0 steps is every step.
        let zero = r#"{"activation":"relu","alpha":0.3,"augment":false,"batch_size":null,"checkpoint_every":0,"dev_size":1,"epochs":null,"hidden":[10],"iterations":5,"log_every":5,"lr_decay":1.0,"optimizer":"sgd","patience":null,"seed":1,"test":null}"#;
        let options: RunOptions = serde_json::from_str(zero).unwrap();
        assert_eq!(options.checkpoint_every, Some(Every::Steps(1)));
    }
}
