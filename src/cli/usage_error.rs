//! clap's errors as one line: its message, and what was probably meant (clap's own "did you
//! mean", or ours for the names other trainers use).

use clap::error::{ContextKind, ContextValue, Error};

/// Names people bring from other tools, and what this one calls them. clap suggests names that
/// are spelt alike (`--epoch` → `--epochs`); these are not.
const HINTS: &[(&str, &str)] = &[
    ("--lr", "the learning rate is --alpha"),
    ("--learning-rate", "the learning rate is --alpha"),
    ("--learning_rate", "the learning rate is --alpha"),
    ("--batch", "did you mean --batch-size?"),
    ("--hidden-size", "did you mean --hidden?"),
    (
        "train",
        "training is the default command and takes no name: `mnist-gpu --epochs 5 --batch-size 64`",
    ),
    ("evaluate", "did you mean `eval`?"),
    ("test", "did you mean `eval`?"),
    ("predict-one", "did you mean `predict`?"),
    ("convert", "did you mean `export`?"),
    ("onnx", "did you mean `export --onnx FILE.onnx`?"),
];

/// `error: unexpected argument '--lr' found; the learning rate is --alpha (see --help)`.
pub fn one_line(e: &Error) -> String {
    // clap's first paragraph is the message (a list of missing options included).
    let text = e.render().to_string();
    let message: Vec<&str> = text
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .map(str::trim)
        .collect();
    let mut line = message.join(" ");
    if let Some(hint) = hint(e) {
        line = format!("{line}; {hint}");
    }
    format!("{line} (see --help)")
}

/// Ours for a name in `HINTS`, else clap's suggestion of a similar name, if it has one.
fn hint(e: &Error) -> Option<String> {
    let given = [ContextKind::InvalidArg, ContextKind::InvalidSubcommand]
        .into_iter()
        .find_map(|kind| match e.get(kind) {
            Some(ContextValue::String(name)) => Some(name.clone()),
            _ => None,
        })?;
    // `--lr=0.1` is `--lr` given a value.
    let name = given.split('=').next().unwrap_or(&given);
    if let Some((_, hint)) = HINTS.iter().find(|(known, _)| *known == name) {
        return Some(hint.to_string());
    }
    let similar = [ContextKind::SuggestedArg, ContextKind::SuggestedSubcommand]
        .into_iter()
        .find_map(|kind| match e.get(kind) {
            Some(ContextValue::String(name)) => Some(vec![name.clone()]),
            Some(ContextValue::Strings(names)) if !names.is_empty() => Some(names.clone()),
            _ => None,
        })?;
    Some(format!("did you mean {}?", similar.join(" or ")))
}
