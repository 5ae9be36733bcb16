//! Sluice engine: runs a [`sluice_core::Plan`] over a stream of records.
//!
//! The crate is laid out as the data path:
//!
//! - [`connector`]: the input side: byte streams cut into batches of JSONL lines or CSV rows
//!   ([`Input`]); the outputs are [`Outputs`].
//! - [`codec`]: record codecs — scan and parse a record's time, keys and fields, format the
//!   enriched event and dead letters.
//! - [`dataflow`]: the run — reader, router (input order, lateness, key groups), shards,
//!   merge (results back in input order), writer, and the scheduler of the worker threads.
//! - [`state`]: the [`StateBackend`] trait and its implementations (memory, memory with a disk
//!   tier, Redis Cluster), built by one factory.
//! - [`checkpoint`]: snapshots of local state with the source and sink positions.
//! - [`serve`]: the same steps driven one request batch at a time, for an HTTP server.

pub mod checkpoint;
pub mod codec;
pub mod connector;
pub mod dataflow;
pub mod error;
pub mod serve;
pub mod state;

pub use codec::time::TimeFormat;
pub use connector::{Input, InputFormat};
pub use dataflow::run::{plan_fingerprint, run, run_resumed, Job, Outputs, Resume, Stats, Summary};
pub use error::{Error, Result};
pub use state::{Backend, MemoryBackend, StateBackend, StateConfig, Update};
