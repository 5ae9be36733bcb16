//! Sluice: exact per-event sliding-window features over streams, as a library.
//!
//! A [`Pipeline`] is built from a pipeline file's TOML ([`Pipeline::from_toml`],
//! [`Pipeline::load`]) or in code ([`Pipeline::builder`]), then run over an input and
//! outputs ([`Pipeline::run`]) or served over HTTP ([`Pipeline::server`]).
//!
//! ```
//! let pipeline = sluice::Pipeline::from_toml(r#"
//!     [[feature]]
//!     name = "user_amount_1d"
//!     agg = "sum"
//!     of = "amount"
//!     by = ["user_id"]
//!     window = "1d"
//! "#)?;
//! let input = br#"{"user_id":"u1","amount":10,"ts":1767225600000}
//! {"user_id":"u1","amount":5,"ts":1767225660000}
//! "#;
//! let (mut enriched, mut dead_letters) = (Vec::new(), Vec::new());
//! let summary = pipeline.run(&input[..], &mut enriched, &mut dead_letters)?;
//! assert_eq!(summary.events, 2);
//! let last = String::from_utf8(enriched)?.lines().last().unwrap_or_default().to_owned();
//! assert!(last.ends_with(r#""features":{"user_amount_1d":15}}"#), "{last}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod config;
mod pipeline;

/// The README's Rust examples, compiled and run as doctests so that they cannot rot.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

pub use config::ConfigError;
pub use pipeline::{BuildError, Feature, Pipeline, PipelineBuilder};
pub use sluice_core::Agg;
pub use sluice_engine::connector::{Acknowledge, Batching, RecordKeys, SourceBatch, SyncJob};
pub use sluice_engine::{
    InputFormat, Outputs, Position, Sink, Source, StateConfig, StreamSink, StreamSource, Summary,
    TimeFormat,
};
