//! Sluice connectors: where records come from and where enriched events go.
//!
//! - [`file`](mod@file): files, stdin and stdout, positioned and cut back for a resumed run.
//! - [`kafka`]: Kafka settings, and with the `kafka` feature (on by default) the consumer-group
//!   source, the producer sink and Kafka checkpoints.

pub mod error;
pub mod file;
pub mod kafka;

pub use error::{Error, Result};
