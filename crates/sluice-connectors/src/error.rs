//! Errors of the connectors.

use std::path::{Path, PathBuf};

/// Result of connector operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can keep a connector from opening or stop its run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or directory could not be opened, read or written.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was attempted: `open input`, `create checkpoint directory`, ...
        action: String,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        cause: std::io::Error,
    },
    /// The run cannot go on with what it was given: another input than the checkpoint's,
    /// stdin for a resume, an instance in use, ... The message says what to do instead.
    #[error("{0}")]
    Refused(String),
    /// The Kafka client failed.
    #[error("kafka: cannot {action}")]
    Kafka {
        /// What was attempted.
        action: String,
        /// The client's error.
        #[source]
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] sluice_engine::Error),
}

impl Error {
    /// An I/O error while trying to `action` `path`.
    pub fn io(action: impl Into<String>, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
        let action = action.into();
        let path = path.to_path_buf();
        move |cause| Error::Io {
            action,
            path,
            cause,
        }
    }
}
