//! Sluice engine: runs a [`sluice_core::Plan`] over a stream of records.
//!
//! - [`source`]: reads JSONL or CSV into batches ([`batch`]).
//! - [`parse`]: extracts time, keys and fields from each record (in parallel); `field` holds
//!   the serde visitors it uses.
//! - [`router`]: input order, lateness and key groups, and the router thread's loop.
//! - [`shard`] and [`backend`]: per-shard state behind the [`backend::StateBackend`] seam
//!   ([`prefetch`] hides its cache misses); [`mod@redis`] keeps it in a Redis Cluster.
//! - [`mod@format`]: enriched events and dead letters as text; `output` formats batches and
//!   writes them in order.
//! - [`mod@run`]: the threads and channels that connect them; [`pool`] recycles their buffers.
//! - [`checkpoint`]: snapshots of local state with the input and output positions.
//! - [`serve`]: the same steps driven one request batch at a time, for `sluice serve`.

pub mod backend;
pub mod batch;
pub mod checkpoint;
pub mod error;
mod field;
pub mod format;
mod output;
pub mod parse;
pub mod pool;
pub mod prefetch;
pub mod redis;
pub mod router;
pub mod run;
mod scan;
pub mod serve;
pub mod shard;
pub mod source;
pub mod spill;
pub mod time;

pub use backend::{Backend, MemoryBackend, StateBackend, Update};
pub use error::{Error, Result};
pub use run::{
    plan_fingerprint, run, run_resumed, Job, Outputs, Resume, StateConfig, Stats, Summary,
};
pub use source::{Input, InputFormat};
pub use time::TimeFormat;
