//! The training curves, for other tools: `--metrics FILE.csv` writes one row per progress
//! line, `--plot FILE.png|svg` draws them.

use std::path::Path;

use crate::error::Result;
use crate::model_file::write_atomically;
use crate::train::Progress;

/// The CSV's columns, in order.
pub const COLUMNS: [&str; 8] = [
    "step",
    "epoch",
    "alpha",
    "loss",
    "train_accuracy",
    "dev_loss",
    "dev_accuracy",
    "samples_per_second",
];

/// Writes the history as CSV (empty fields where a value does not exist, such as the dev
/// accuracy without a dev set), whole or not at all.
pub fn write_csv(path: &Path, history: &[Progress]) -> Result<()> {
    let optional = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
    let mut text = COLUMNS.join(",") + "\n";
    for p in history {
        let row = [
            p.step.to_string(),
            p.epoch.map_or(String::new(), |e| e.to_string()),
            p.alpha.to_string(),
            p.batch.loss.to_string(),
            p.batch.accuracy.to_string(),
            optional(p.dev_loss),
            optional(p.dev_accuracy),
            format!("{:.0}", p.samples_per_second),
        ];
        text += &(row.join(",") + "\n");
    }
    write_atomically(path, text.as_bytes())
}

/// Draws the history: the loss, and the train (batch) and dev accuracy, against the step.
pub fn plot(path: &Path, history: &[Progress]) -> Result<()> {
    let _ = (path, history);
    Err(crate::error::Error::Config("--plot: not yet".into()))
}
