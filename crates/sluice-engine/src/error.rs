//! Errors of the engine's data plane.

use std::path::PathBuf;

/// Result of engine operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can stop a run. Bad records never do: they go to the dead-letter output.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading the input failed.
    #[error("cannot read input {path}: {source}")]
    Input {
        /// The input, `-` for stdin.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The CSV header could not be read.
    #[error("cannot read the CSV header of {path}: {message}")]
    CsvHeader {
        /// The input, `-` for stdin.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Writing the output or the dead letters failed.
    #[error("cannot write {what}: {source}")]
    Output {
        /// `output` or `dead letters`.
        what: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The state backend failed.
    #[error("state backend {backend}: {message}")]
    Backend {
        /// Which backend.
        backend: &'static str,
        /// What went wrong.
        message: String,
    },
    /// Writing or reading a checkpoint failed.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// A worker thread panicked or stopped early (a bug).
    #[error("engine stage `{0}` stopped unexpectedly")]
    Stage(&'static str),
}

impl Error {
    /// Whether retrying the same operation may succeed (remote backends use this).
    pub fn is_retryable(&self) -> bool {
        false
    }
}
