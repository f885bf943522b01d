//! What every figure shares: the file format chosen by the name, and a font built into the
//! binary, so that drawing text needs no fonts installed on the machine.
//! `metrics::plot` draws the training curves, the `bench` command (`cli/bench/report.rs`) the
//! throughput.

use std::path::Path;

use plotters::style::FontStyle;

use crate::error::{config, Error, Result};

/// DejaVu Sans cut down to printable ASCII (see assets/fonts/README.md).
static FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans-ascii.ttf");

/// The family name figures ask for.
pub const FAMILY: &str = "sans-serif";

pub enum Format {
    Svg,
    Png,
}

/// SVG or PNG, from the file name's extension.
pub fn format(path: &Path) -> Result<Format> {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_lowercase)
    {
        Some(e) if e == "svg" => Ok(Format::Svg),
        Some(e) if e == "png" => Ok(Format::Png),
        _ => config(format!(
            "--plot {}: the file must end in .svg or .png",
            path.display()
        )),
    }
}

/// Makes the built-in font the one `FAMILY` names (registering again is harmless).
pub fn register_font(path: &Path) -> Result<()> {
    plotters::style::register_font(FAMILY, FontStyle::Normal, FONT)
        .map_err(|_| failed(path, "the built-in font is invalid".into()))
}

/// A drawing error, as an error writing `path`.
pub fn failed(path: &Path, message: String) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source: std::io::Error::other(message),
    }
}
