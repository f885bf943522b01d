//! One error type for the whole trainer: every failure reaches `main` as a `Result`,
//! and `main` prints it as one line.

use crate::data::DataError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file that could not be read or parsed (the message names the file and record).
    #[error(transparent)]
    Data(#[from] DataError),
    /// Options that do not make sense together, or values out of range.
    #[error("{0}")]
    Config(String),
    /// Anything the GPU or wgpu refused: no adapter, a shader, a limit, a lost device.
    #[error("GPU: {0}")]
    Gpu(String),
    /// Training went wrong numerically (a NaN or infinite loss).
    #[error("{0}")]
    Diverged(String),
    /// A model file that is not one, or not of this network.
    #[error("{path}: {message}")]
    Model { path: String, message: String },
    /// Training was stopped from outside (Ctrl-C).
    #[error("{0}")]
    Interrupted(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// Shorthand for a configuration error with a formatted message.
pub fn config<T>(message: impl Into<String>) -> Result<T> {
    Err(Error::Config(message.into()))
}
