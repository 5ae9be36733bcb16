//! Kafka as a source and a sink: the settings (always compiled, so a pipeline file naming Kafka
//! is understood by every build) and, with the `kafka` feature, the client (rdkafka over a
//! vendored librdkafka) and its checkpoints.

#[cfg(feature = "kafka")]
mod checkpoint;
#[cfg(feature = "kafka")]
mod client;
#[cfg(feature = "kafka")]
pub mod run;

#[cfg(feature = "kafka")]
pub use checkpoint::{PartitionCheckpoints, Partitions};
#[cfg(feature = "kafka")]
pub use client::{
    first_message, stop_on_signals, stopping, SinkHandle, TopicSink, TopicSource, COMMIT_INTERVAL,
    QUIET,
};

/// Whether this build can talk to Kafka (the `kafka` feature).
pub const AVAILABLE: bool = cfg!(feature = "kafka");

/// Where a consumer group starts on a partition it has no committed offset for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The oldest message kept.
    Earliest,
    /// Only messages produced after the group joins.
    Latest,
}

/// `[source] kind = "kafka"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSource {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// The topic read.
    pub topic: String,
    /// The consumer group.
    pub group: String,
    /// Where to start without a committed offset.
    pub start: Start,
    /// Stop once every assigned partition is read to its end.
    pub until_end: bool,
}

/// `[sink] kind = "kafka"` (or `[dead_letters] kind = "kafka"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSink {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// The topic written.
    pub topic: String,
    /// The field of the event whose value is the message key (none: no key).
    pub key: Option<String>,
    /// `compression.type`: none, snappy or lz4 (built into the vendored librdkafka).
    pub compression: String,
}
