//! Kafka as a source and a sink of `sluice run` (rdkafka over a vendored librdkafka).
//!
//! - [`TopicSource`] reads a consumer group's messages as batches of JSONL records, one
//!   message one record, each with its partition and offset ([`Position::Partitions`]).
//!   Without checkpoints, offsets are committed once the outputs of their records are flushed
//!   and delivered ([`OffsetCommitter`]): at least once. With `until_end` it stops once it
//!   has read every assigned partition to its end (so at least to the end it had when the run
//!   started).
//! - [`TopicSink`] sends each output line as a message, keyed by a field of the event (taken
//!   from the parsed record). Before each commit (every [`COMMIT_INTERVAL`] and at the end)
//!   the committer waits until the broker has acknowledged every message (`acks=all`); a
//!   failed delivery fails the run before the offsets of its input are committed.
//!
//! See `docs/kafka.md` for the delivery guarantees.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use sluice_engine::checkpoint::SourceCheckpoint;
use sluice_engine::connector::{
    Acknowledge, Batching, Position, RecordKeys, Sink, Source, SourceBatch, SyncJob,
};

use super::{KafkaSink, KafkaSource, Start};

/// How long metadata and offset requests to the broker may take.
const BROKER_TIMEOUT: Duration = Duration::from_secs(30);

/// With `until_end`: how long every assigned partition must stay at its end.
pub const QUIET: Duration = Duration::from_millis(1000);

/// Offsets are committed at most this often (and at the end of the run): each commit first
/// waits for the broker to acknowledge every output message.
pub const COMMIT_INTERVAL: Duration = Duration::from_millis(1000);

/// Set by SIGTERM and SIGINT: a Kafka source then ends its input, and the run drains and
/// stops cleanly.
static STOP: std::sync::LazyLock<Arc<AtomicBool>> = std::sync::LazyLock::new(Arc::default);

/// When this process received its first message (joining the group takes seconds).
static FIRST_MESSAGE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// When this process received its first message, if it did.
pub fn first_message() -> Option<Instant> {
    FIRST_MESSAGE.get().copied()
}

/// Whether SIGTERM or ctrl-c asked the run to stop.
pub fn stopping() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Makes SIGTERM and ctrl-c end a Kafka source's input instead of killing the process.
pub fn stop_on_signals() {
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(signal, Arc::clone(&STOP)) {
            tracing::warn!("cannot handle signal {signal}: {e}");
        }
    }
}

/// A consumer context that logs rebalances and does not report reaching the end of a
/// partition as an error (it is asked for, with `enable.partition.eof`). With checkpoints it
/// also positions newly assigned partitions at their checkpointed offsets, and fences the
/// process's checkpoints when partitions are revoked ([`crate::kafka_checkpoint`]).
#[derive(Default)]
pub struct Quiet {
    checkpoints: Option<Arc<super::checkpoint::Partitions>>,
    /// Without checkpoints: the offsets to commit when partitions are revoked.
    commits: Option<Arc<Mutex<Commits>>>,
}

impl ClientContext for Quiet {
    fn error(&self, error: KafkaError, reason: &str) {
        let eof = matches!(error, KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF);
        if !eof {
            tracing::warn!("kafka: {error}: {reason}");
        }
    }
}

impl ConsumerContext for Quiet {
    /// The group's eager protocol: every rebalance revokes all partitions, then assigns.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: rdkafka::types::RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        use rdkafka::types::RDKafkaRespErr as E;
        let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        let result = match err {
            E::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                if let Some(c) = &self.checkpoints {
                    c.assigned(tpl);
                }
                tracing::info!("kafka: assigned partitions {partitions:?}");
                consumer.assign(tpl)
            }
            E::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                if let Some(c) = &self.checkpoints {
                    c.revoked();
                }
                if let Some(commits) = &self.commits {
                    // What is written so far need not be read again by the next owner.
                    let started = Instant::now();
                    let committed = commits
                        .lock()
                        .map_err(|_| io::Error::other("poisoned"))
                        .and_then(|mut c| c.commit(consumer));
                    match committed {
                        Ok(()) => tracing::info!(
                            millis = started.elapsed().as_millis() as u64,
                            "kafka: offsets committed before giving partitions up"
                        ),
                        Err(e) => {
                            tracing::warn!("kafka: cannot commit before giving partitions up: {e}")
                        }
                    }
                }
                tracing::info!("kafka: revoked partitions {partitions:?}");
                consumer.unassign()
            }
            other => {
                tracing::warn!("kafka: rebalance failed: {other:?}");
                if let Some(c) = &self.checkpoints {
                    c.revoked();
                }
                consumer.unassign()
            }
        };
        if let Err(e) = result {
            tracing::warn!("kafka: cannot apply the new assignment: {e}");
        }
    }
}

/// A consumer group's messages as batches of JSONL records.
pub struct TopicSource {
    consumer: Arc<BaseConsumer<Quiet>>,
    /// With checkpoints: the assignment this reader reads. It ends its input when the
    /// assignment changes (the run then restarts from the checkpoints).
    generation: Option<(Arc<super::checkpoint::Partitions>, u64)>,
    /// A message the previous run's reader was served after the rebalance: this run's first.
    stashed: Option<rdkafka::message::OwnedMessage>,
    until_end: bool,
    /// Partitions read up to their current end (no message since).
    at_eof: std::collections::HashSet<i32>,
    /// When the last message arrived.
    last_message: Instant,
    /// The partitions assigned when last looked at, sorted.
    assigned: Vec<i32>,
    /// `kafka:<topic>`, in dead letters.
    name: String,
    batching: Batching,
    /// Records read so far (dead letters number them as lines).
    line: u64,
    /// The input has ended (a stop, the end with `until_end`, a new assignment).
    ended: bool,
    /// Without checkpoints: commits offsets once outputs are flushed.
    committer: Option<OffsetCommitter>,
    /// With checkpoints: this run's part in them.
    checkpoints: Option<super::checkpoint::PartitionCheckpoints>,
}

/// What waiting for the next message gave.
enum Next {
    /// A message, appended as a record: its partition and offset.
    Message(u32, i64),
    /// None before the deadline.
    Idle,
    /// The end of this run's input.
    End,
}

/// Commits the offsets of input lines whose outputs are written, once the Kafka sinks have
/// delivered them: every [`COMMIT_INTERVAL`], at the end, and when partitions are revoked.
pub struct OffsetCommitter {
    consumer: Arc<BaseConsumer<Quiet>>,
    commits: Arc<Mutex<Commits>>,
    last_commit: Instant,
}

/// What committing offsets needs, shared by the writer (which learns what is written) and the
/// rebalance callback (which commits before partitions go to another process, so that they
/// are not read again there).
#[derive(Default)]
pub struct Commits {
    topic: String,
    sinks: Vec<SinkHandle>,
    files: Vec<std::fs::File>,
    /// The next offset of each partition whose records before it have their outputs written
    /// (handed to the sinks).
    flushed: BTreeMap<u32, i64>,
    /// What was last committed.
    committed: BTreeMap<u32, i64>,
}

impl Commits {
    /// Waits until the Kafka sinks have delivered everything and the output files are on
    /// disk, then commits the offsets of the lines whose outputs were written. Fails when a
    /// delivery did; a failed commit is only reported (the next one goes further).
    fn commit<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) -> io::Result<()> {
        for sink in &self.sinks {
            sink.deliver()?;
        }
        for file in &self.files {
            file.sync_data()?;
        }
        // Only partitions that moved since the last commit: a partition given up meanwhile
        // is not set back under its next owner.
        let moved: Vec<(u32, i64)> = self
            .flushed
            .iter()
            .filter(|&(p, o)| self.committed.get(p) != Some(o))
            .map(|(&p, &o)| (p, o))
            .collect();
        if moved.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for &(p, o) in &moved {
            // The committed offset is the next one to read.
            if let Err(e) = tpl.add_partition_offset(&self.topic, p as i32, Offset::Offset(o)) {
                tracing::warn!("kafka: cannot record offset {o} of partition {p}: {e}");
            }
            self.committed.insert(p, o);
        }
        if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
            // Not fatal: the next flush commits further; a restart re-reads (at least once).
            tracing::warn!("kafka: cannot commit offsets: {e}");
        }
        Ok(())
    }
}

/// A Kafka client error while trying to `action`.
fn kafka(action: &str, cause: KafkaError) -> Error {
    Error::Kafka {
        action: action.to_owned(),
        cause: Box::new(cause),
    }
}

fn client(brokers: &[String]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers.join(","));
    c
}

/// Joins the group and subscribes to the topic; with `checkpoints`, assignments are
/// positioned and fenced by them.
pub fn consumer(
    source: &KafkaSource,
    checkpoints: Option<Arc<super::checkpoint::Partitions>>,
    commits: Option<Arc<Mutex<Commits>>>,
) -> Result<Arc<BaseConsumer<Quiet>>> {
    let consumer: BaseConsumer<Quiet> = client(&source.brokers)
        .set("group.id", &source.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // Report reaching the end of a partition: with `until_end` that, not the end
        // offset alone, ends a partition (a broker may report end offsets below the last
        // message of its last batch).
        .set("enable.partition.eof", "true")
        // Answer as soon as data is there (some brokers wait the full time otherwise).
        .set("fetch.wait.max.ms", "10")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set(
            "auto.offset.reset",
            match source.start {
                Start::Earliest => "earliest",
                Start::Latest => "latest",
            },
        )
        .create_with_context(Quiet {
            checkpoints,
            commits,
        })
        .map_err(|e| kafka("create a consumer", e))?;
    consumer
        .subscribe(&[&source.topic])
        .map_err(|e| kafka(&format!("subscribe to {}", source.topic), e))?;
    Ok(Arc::new(consumer))
}

impl TopicSource {
    /// Joins the group and subscribes to the topic; offsets are committed once the outputs
    /// of their records are flushed (see [`TopicSource::watch`]).
    pub fn open(source: &KafkaSource) -> Result<TopicSource> {
        let commits = Arc::new(Mutex::new(Commits {
            topic: source.topic.clone(),
            ..Commits::default()
        }));
        let consumer = consumer(source, None, Some(Arc::clone(&commits)))?;
        let committer = OffsetCommitter {
            consumer: Arc::clone(&consumer),
            commits,
            last_commit: Instant::now(),
        };
        let mut topic = TopicSource::new(consumer, None, source);
        topic.committer = Some(committer);
        Ok(topic)
    }

    fn new(
        consumer: Arc<BaseConsumer<Quiet>>,
        generation: Option<(Arc<super::checkpoint::Partitions>, u64)>,
        source: &KafkaSource,
    ) -> TopicSource {
        let stashed = generation.as_ref().and_then(|(p, g)| p.take_stashed(*g));
        TopicSource {
            consumer,
            generation,
            stashed,
            until_end: source.until_end,
            at_eof: std::collections::HashSet::new(),
            last_message: Instant::now(),
            assigned: Vec::new(),
            name: format!("kafka:{}", source.topic),
            batching: Batching {
                slice_rows: 0,
                max_slices: 1,
                bytes: 256 * 1024,
                csv_rows: 2048,
                wait: Duration::from_millis(10),
            },
            line: 0,
            ended: false,
            committer: None,
            checkpoints: None,
        }
    }

    /// A reader of the current assignment of `consumer`, for one run of a checkpointed job:
    /// it ends its input when the assignment changes (the run then restarts from the
    /// checkpoints), and `checkpoints` completes the run's checkpoints.
    pub fn for_assignment(
        consumer: Arc<BaseConsumer<Quiet>>,
        partitions: Arc<super::checkpoint::Partitions>,
        generation: u64,
        source: &KafkaSource,
        checkpoints: super::checkpoint::PartitionCheckpoints,
    ) -> TopicSource {
        let mut topic = TopicSource::new(consumer, Some((partitions, generation)), source);
        topic.checkpoints = Some(checkpoints);
        topic
    }

    /// Also waits for this Kafka sink's deliveries before committing offsets.
    pub fn watch(&mut self, sink: SinkHandle) {
        if let Some(c) = &mut self.committer {
            let mut commits = c.commits.lock().unwrap_or_else(|p| p.into_inner());
            commits.sinks.push(sink);
        }
    }

    /// Also syncs this output file to disk before committing offsets.
    pub fn watch_file(&mut self, file: std::fs::File) {
        if let Some(c) = &mut self.committer {
            let mut commits = c.commits.lock().unwrap_or_else(|p| p.into_inner());
            commits.files.push(file);
        }
    }

    /// Whether every assigned partition is read up to its end. The consumer reports the end
    /// of a partition whenever it has caught up, so this holds no earlier than the end
    /// offsets the partitions had at start. Some brokers (tansu) report an end before the last
    /// batch of a partition, or an empty fetch while a batch is still being written, so the
    /// end must also hold for [`QUIET`]: no message from any partition meanwhile.
    fn at_end(&mut self) -> bool {
        // Asking for the assignment is a round trip to librdkafka's main thread: only once
        // the input is quiet (asked per message, it made reading six times slower).
        if self.last_message.elapsed() < QUIET {
            return false;
        }
        let Ok(assigned) = self.consumer.assignment() else {
            return false;
        };
        let mut now: Vec<i32> = assigned.elements().iter().map(|e| e.partition()).collect();
        now.sort_unstable();
        if now != self.assigned {
            // A partition given up and assigned again must be read to its end again.
            self.at_eof.retain(|p| now.contains(p));
            self.assigned = now;
            return false;
        }
        !self.assigned.is_empty() && self.assigned.iter().all(|p| self.at_eof.contains(p))
    }

    /// Whether the assignment this reader reads has been replaced.
    fn reassigned(&self) -> bool {
        self.generation
            .as_ref()
            .is_some_and(|(p, g)| p.generation() != *g)
    }

    /// Waits for the next message until `deadline` (`None`: as long as it takes) and appends
    /// it to `out` as a record.
    fn next_message(&mut self, deadline: Option<Instant>, out: &mut Vec<u8>) -> Next {
        loop {
            if STOP.load(Ordering::SeqCst) || (self.until_end && self.at_end()) || self.reassigned()
            {
                return Next::End;
            }
            if let Some(m) = self.stashed.take() {
                return self.take_message(&m, out);
            }
            let mut timeout = Duration::from_millis(100);
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Next::Idle;
                }
                timeout = timeout.min(left);
            }
            // The message borrows the consumer, not the reader.
            let consumer = Arc::clone(&self.consumer);
            match consumer.poll(timeout) {
                None => {}
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    self.at_eof.insert(p);
                }
                // librdkafka retries broker errors itself; report and go on.
                Some(Err(e)) => tracing::warn!("kafka: {e}"),
                Some(Ok(m)) => {
                    if self.reassigned() {
                        // Served after a rebalance callback in this poll: the message belongs
                        // to the next assignment, hence to the next run.
                        if let Some((p, _)) = &self.generation {
                            p.stash(m.detach());
                        }
                        return Next::End;
                    }
                    return self.take_message(&m, out);
                }
            }
        }
    }

    /// Appends `m` to `out` as one record.
    fn take_message<M: Message>(&mut self, m: &M, out: &mut Vec<u8>) -> Next {
        FIRST_MESSAGE.get_or_init(Instant::now);
        self.at_eof.remove(&m.partition());
        self.last_message = Instant::now();
        // One message, one line: line breaks inside are spaces (JSON allows them between
        // tokens and forbids them inside strings). An empty message still becomes a record
        // (`null`, a dead letter), so that every message is one record and committed offsets
        // follow written records.
        let payload = match m.payload() {
            Some(p) if !p.iter().all(u8::is_ascii_whitespace) => p,
            _ => b"null",
        };
        out.extend(
            payload
                .iter()
                .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
        );
        out.push(b'\n');
        Next::Message(m.partition() as u32, m.offset())
    }
}

impl Source for TopicSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn is_live(&self) -> bool {
        true
    }

    fn start(&mut self, batching: &Batching) -> sluice_engine::Result<()> {
        self.batching = *batching;
        Ok(())
    }

    /// Waits for a first message, then takes more until the batch is full or the batch wait
    /// has passed since the first.
    fn next_batch(&mut self, mut buf: Vec<u8>) -> sluice_engine::Result<Option<SourceBatch>> {
        buf.clear();
        if self.ended {
            return Ok(None);
        }
        let mut origins = Vec::new();
        let mut deadline = None;
        while buf.len() < self.batching.bytes {
            match self.next_message(deadline, &mut buf) {
                Next::Message(p, o) => {
                    origins.push((p, o));
                    deadline.get_or_insert_with(|| Instant::now() + self.batching.wait);
                }
                Next::Idle => break,
                Next::End => {
                    self.ended = true;
                    break;
                }
            }
        }
        if origins.is_empty() {
            return Ok(None);
        }
        let batch = SourceBatch::partitioned(buf, self.line + 1, &origins);
        self.line += origins.len() as u64;
        Ok(Some(batch))
    }

    fn acknowledger(&mut self) -> Option<Box<dyn Acknowledge>> {
        self.committer
            .take()
            .map(|c| Box::new(c) as Box<dyn Acknowledge>)
    }

    fn checkpoints(&mut self) -> Option<Box<dyn SourceCheckpoint>> {
        self.checkpoints
            .take()
            .map(|c| Box::new(c) as Box<dyn SourceCheckpoint>)
    }
}

impl OffsetCommitter {
    fn commits(&self) -> io::Result<std::sync::MutexGuard<'_, Commits>> {
        self.commits
            .lock()
            .map_err(|_| io::Error::other("offset commits: a thread panicked"))
    }
}

impl Acknowledge for OffsetCommitter {
    /// The outputs of records before `upto` are written (handed to the sinks): every
    /// [`COMMIT_INTERVAL`], and at the end (`last`), waits until the Kafka sinks have
    /// delivered them and commits those offsets. Fails when a delivery did.
    fn flushed(&mut self, upto: &Position, last: bool) -> io::Result<()> {
        let consumer = Arc::clone(&self.consumer);
        let due = last || self.last_commit.elapsed() >= COMMIT_INTERVAL;
        if due {
            self.last_commit = Instant::now();
        }
        let mut commits = self.commits()?;
        if let Position::Partitions(offsets) = upto {
            commits.flushed.clone_from(offsets);
        }
        if !due {
            return Ok(());
        }
        commits.commit(&consumer)
    }
}

/// Remembers the first failed delivery.
#[derive(Default)]
struct Deliveries {
    failed: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            if let Ok(mut failed) = self.failed.lock() {
                failed.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// A Kafka sink's producer, to wait for its deliveries from elsewhere.
#[derive(Clone)]
pub struct SinkHandle {
    producer: Arc<BaseProducer<Deliveries>>,
    topic: String,
}

impl SinkHandle {
    /// Waits until the broker has acknowledged every message sent so far.
    pub fn deliver(&self) -> io::Result<()> {
        self.producer
            .flush(BROKER_TIMEOUT)
            .map_err(|e| io::Error::other(format!("kafka: cannot flush to {}: {e}", self.topic)))?;
        self.failed()
    }

    /// Fails if a message sent so far was not delivered.
    fn failed(&self) -> io::Result<()> {
        let failed = self
            .producer
            .context()
            .failed
            .lock()
            .ok()
            .and_then(|f| f.clone());
        match failed {
            Some(e) => Err(io::Error::other(format!(
                "kafka: a message to {} was not delivered: {e}",
                self.topic
            ))),
            None => Ok(()),
        }
    }
}

/// Output lines as messages.
pub struct TopicSink {
    producer: Arc<BaseProducer<Deliveries>>,
    topic: String,
    key: Option<String>,
    sent: u64,
    last_check: Instant,
}

impl TopicSink {
    /// A producer for `sink`.
    pub fn open(sink: &KafkaSink) -> Result<TopicSink> {
        let producer = client(&sink.brokers)
            .set("acks", "all")
            .set("compression.type", &sink.compression)
            .set("linger.ms", "5")
            .set("queue.buffering.max.messages", "1000000")
            .create_with_context(Deliveries::default())
            .map_err(|e| kafka("create a producer", e))?;
        Ok(TopicSink {
            producer: Arc::new(producer),
            topic: sink.topic.clone(),
            key: sink.key.clone(),
            sent: 0,
            last_check: Instant::now(),
        })
    }

    fn send(&mut self, line: &[u8], key: Option<&[u8]>) -> io::Result<()> {
        let mut record = BaseRecord::to(&self.topic).payload(line);
        if let Some(k) = key {
            record = record.key(k);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((e, back)) => {
                    if matches!(
                        e.rdkafka_error_code(),
                        Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                    ) {
                        self.producer.poll(Duration::from_millis(50));
                        record = back;
                    } else {
                        return Err(io::Error::other(format!("kafka: cannot send: {e}")));
                    }
                }
            }
        }
        self.sent += 1;
        if self.sent.is_multiple_of(1024) {
            self.producer.poll(Duration::ZERO);
        }
        Ok(())
    }

    /// A handle to wait for this sink's deliveries.
    pub fn handle(&self) -> SinkHandle {
        SinkHandle {
            producer: Arc::clone(&self.producer),
            topic: self.topic.clone(),
        }
    }
}

impl Sink for TopicSink {
    fn write(&mut self, lines: &[u8], keys: Option<&RecordKeys>) -> io::Result<()> {
        for (i, line) in lines.split_inclusive(|&b| b == b'\n').enumerate() {
            let line = line.strip_suffix(b"\n").unwrap_or(line);
            self.send(line, keys.and_then(|k| k.get(i)))?;
        }
        Ok(())
    }

    /// Hands what is queued to the network without waiting; every [`COMMIT_INTERVAL`] fails
    /// if a delivery has failed meanwhile.
    fn flush(&mut self) -> io::Result<()> {
        self.producer.poll(Duration::ZERO);
        if self.last_check.elapsed() >= COMMIT_INTERVAL {
            self.last_check = Instant::now();
            self.handle().failed()?;
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<Option<SyncJob>> {
        let handle = self.handle();
        Ok(Some(Box::new(move || handle.deliver())))
    }

    fn cut_back(&mut self, len: u64) -> io::Result<u64> {
        if len == 0 {
            return Ok(0);
        }
        Err(io::Error::other(format!(
            "cannot resume into topic {}: messages sent cannot be taken back",
            self.topic
        )))
    }

    fn key_field(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// Waits until the broker has acknowledged every message.
    fn finish(&mut self) -> io::Result<()> {
        self.handle().deliver()
    }
}
