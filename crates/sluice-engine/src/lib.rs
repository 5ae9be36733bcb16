//! Sluice engine: runs a [`sluice_core::Plan`] over a stream of records.
//!
//! - [`source`]: reads JSONL or CSV into batches.
//! - [`parse`]: extracts time, keys and fields from each record (in parallel).
//! - [`router`]: input order, lateness and key groups.
//! - [`shard`] and [`backend`]: per-shard state behind the [`backend::StateBackend`] seam.
//! - [`format`]: enriched events and dead letters.
//! - [`run`]: the threads and channels that connect them.

pub mod backend;
pub mod batch;
pub mod error;
pub mod format;
pub mod parse;
pub mod pool;
pub mod prefetch;
pub mod router;
pub mod run;
pub mod shard;
pub mod source;
pub mod time;

pub use backend::{Backend, MemoryBackend, StateBackend, Update};
pub use error::{Error, Result};
pub use run::{run, Job, Outputs, Stats, Summary};
pub use source::{Input, InputFormat};
pub use time::TimeFormat;
