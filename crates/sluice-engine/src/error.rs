//! Errors of the engine's data plane.

use std::path::PathBuf;

/// Result of engine operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can stop a run. Bad records never do: they go to the dead-letter output.
///
/// An `Error` is final: there is no `is_retryable`. The only retries are those of the Redis
/// backend, decided on the Redis client's own errors before any `Error` exists: during a
/// flush by `state::redis::cluster::classify`, the one place that classifies them
/// (connection failures, timeouts, `TRYAGAIN`, `CLUSTERDOWN`, `LOADING` and `MASTERDOWN` are
/// retried with a backoff until `retry_timeout`, `MOVED` and `ASK` are followed, `NOSCRIPT`
/// reloads the scripts, anything else fails the flush); while connecting, every failure is
/// retried until `retry_timeout` (nodes may still be starting). What reaches an `Error` has
/// already been retried or cannot be, so a second classification here could only disagree
/// with that one: a former `Error::is_retryable`, always false and called nowhere, was
/// removed for that reason.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading the input failed.
    #[error("cannot read input {path}: {error}")]
    Input {
        /// The input, `-` for stdin.
        path: PathBuf,
        /// The I/O error (part of the message, not a separate cause, so that a chain of
        /// causes does not print it twice).
        error: std::io::Error,
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
    #[error("cannot write {what}: {error}")]
    Output {
        /// `output` or `dead letters`.
        what: &'static str,
        /// The I/O error (part of the message).
        error: std::io::Error,
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
