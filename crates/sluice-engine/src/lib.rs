//! Sluice engine: runs a [`sluice_core::Plan`] over a stream of records.
//!
//! The crate is laid out as the data path:
//!
//! - [`connector`]: the seam to the outside: the [`Source`] and [`Sink`] traits with typed
//!   [`Position`]s, and their byte-stream implementations (files, stdin, stdout).
//! - [`codec`]: record codecs — scan and parse a record's time, keys and fields, format the
//!   enriched event and dead letters.
//! - `dataflow` (private): the run — reader, router (input order, lateness, key groups), shards,
//!   merge (results back in input order), writer, and the scheduler of the worker threads.
//! - [`state`]: the [`StateBackend`] trait and its implementations (memory, memory with a disk
//!   tier, Redis Cluster), built by one factory.
//! - [`checkpoint`]: snapshots of local state with the source and sink positions.
//! - [`serve`]: the same steps driven one request batch at a time, for an HTTP server.

pub mod checkpoint;
pub mod codec;
pub mod connector;
pub(crate) mod dataflow;
pub mod error;
pub mod serve;
pub mod state;

pub use checkpoint::Resume;
pub use codec::time::TimeFormat;
pub use connector::{
    InputFormat, OutputFormat, ParquetInput, ParquetSink, ParquetSource, Position, Sink, Source,
    StreamSink, StreamSource,
};
pub use dataflow::run::{plan_fingerprint, run, run_resumed, Job, Outputs, Stats, Summary};
pub use dataflow::writer::Written;
pub use error::{Error, Result};
pub use state::{Backend, MemoryBackend, StateBackend, StateConfig, Update};
