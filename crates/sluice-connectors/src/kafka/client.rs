//! Kafka as a source and a sink of `sluice run` (rdkafka over a vendored librdkafka).
//!
//! - [`KafkaReader`] turns a consumer group's messages into the JSONL byte stream the engine
//!   reads: one message, one line. It remembers which message each line came from, so that
//!   offsets are committed only once the outputs of those lines are flushed
//!   ([`OffsetCommitter`]): at least once. With `until_end` it stops once it has read every
//!   assigned partition to its end (so at least to the end it had when the run started).
//! - [`KafkaWriter`] turns the enriched-event (or dead-letter) lines back into messages, keyed
//!   by a field of the event. Before each commit (every [`COMMIT_INTERVAL`] and at the end)
//!   the committer waits until the broker has acknowledged every message (`acks=all`); a
//!   failed delivery fails the run before the offsets of its input are committed.
//!
//! See `docs/kafka.md` for the delivery guarantees.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use sluice_engine::dataflow::router::LinePartitions;

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

/// Which input line came from which message: `(line, partition, offset)`, one entry per line
/// in line order, from the oldest line whose outputs are not yet delivered.
pub type Marks = Arc<Mutex<VecDeque<(u64, i32, i64)>>>;

/// The partition of each input line, for lateness per partition.
pub struct MarksPartitions(pub Marks);

impl LinePartitions for MarksPartitions {
    fn partitions_of(&self, lines: &[u64], out: &mut Vec<u32>) {
        let Ok(marks) = self.0.lock() else {
            out.extend(lines.iter().map(|_| u32::MAX));
            return;
        };
        let first = marks.front().map_or(0, |&(line, _, _)| line);
        out.extend(lines.iter().map(|&line| {
            line.checked_sub(first)
                .and_then(|i| marks.get(i as usize))
                .filter(|&&(l, _, _)| l == line)
                .map_or(u32::MAX, |&(_, p, _)| p as u32)
        }));
    }
}

/// A consumer group's messages as JSONL.
pub struct KafkaReader {
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
    marks: Marks,
    line: u64,
    buf: Vec<u8>,
    pos: usize,
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
    marks: Marks,
    sinks: Vec<SinkHandle>,
    files: Vec<std::fs::File>,
    /// Input lines whose outputs are written (handed to the sinks).
    flushed: u64,
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
        let mut upto: HashMap<i32, i64> = HashMap::new();
        if let Ok(mut marks) = self.marks.lock() {
            while marks
                .front()
                .is_some_and(|&(line, _, _)| line <= self.flushed)
            {
                if let Some((_, p, o)) = marks.pop_front() {
                    let e = upto.entry(p).or_insert(o);
                    *e = (*e).max(o);
                }
            }
        }
        if upto.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for (p, o) in upto {
            // The committed offset is the next one to read.
            if let Err(e) = tpl.add_partition_offset(&self.topic, p, Offset::Offset(o + 1)) {
                tracing::warn!("kafka: cannot record offset {o} of partition {p}: {e}");
            }
        }
        if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
            // Not fatal: the next flush commits further; a restart re-reads (at least once).
            tracing::warn!("kafka: cannot commit offsets: {e}");
        }
        Ok(())
    }
}

/// Without a Kafka source: waits for the Kafka sinks' acknowledgements every
/// [`COMMIT_INTERVAL`] and at the end, so that a failed delivery fails the run and nothing
/// queued is dropped when the producer goes away.
pub struct DeliveryCheck {
    sinks: Vec<SinkHandle>,
    last_check: Instant,
}

impl DeliveryCheck {
    /// Checks `sinks`.
    pub fn new(sinks: Vec<SinkHandle>) -> DeliveryCheck {
        DeliveryCheck {
            sinks,
            last_check: Instant::now(),
        }
    }

    /// See [`OffsetCommitter::flushed`].
    pub fn flushed(&mut self, _records: u64, last: bool) -> io::Result<()> {
        if !last && self.last_check.elapsed() < COMMIT_INTERVAL {
            return Ok(());
        }
        self.last_check = Instant::now();
        self.sinks.iter().try_for_each(SinkHandle::deliver)
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
        .context("cannot create a Kafka consumer")?;
    consumer
        .subscribe(&[&source.topic])
        .with_context(|| format!("cannot subscribe to {}", source.topic))?;
    Ok(Arc::new(consumer))
}

impl KafkaReader {
    /// Joins the group and subscribes to the topic.
    pub fn open(source: &KafkaSource) -> Result<(KafkaReader, OffsetCommitter)> {
        let marks: Marks = Arc::default();
        let commits = Arc::new(Mutex::new(Commits {
            topic: source.topic.clone(),
            marks: Arc::clone(&marks),
            ..Commits::default()
        }));
        let consumer = consumer(source, None, Some(Arc::clone(&commits)))?;
        let committer = OffsetCommitter {
            consumer: Arc::clone(&consumer),
            commits,
            last_commit: Instant::now(),
        };
        Ok((
            KafkaReader::new(consumer, None, source.until_end, marks),
            committer,
        ))
    }

    fn new(
        consumer: Arc<BaseConsumer<Quiet>>,
        generation: Option<(Arc<super::checkpoint::Partitions>, u64)>,
        until_end: bool,
        marks: Marks,
    ) -> KafkaReader {
        let stashed = generation.as_ref().and_then(|(p, g)| p.take_stashed(*g));
        KafkaReader {
            consumer,
            generation,
            stashed,
            until_end,
            at_eof: std::collections::HashSet::new(),
            last_message: Instant::now(),
            assigned: Vec::new(),
            marks,
            line: 0,
            buf: Vec::new(),
            pos: 0,
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

    /// A reader of the current assignment of `consumer`, for one run of a checkpointed job;
    /// `marks` learns which message each line came from.
    pub fn for_assignment(
        consumer: Arc<BaseConsumer<Quiet>>,
        partitions: Arc<super::checkpoint::Partitions>,
        generation: u64,
        until_end: bool,
        marks: Marks,
    ) -> KafkaReader {
        KafkaReader::new(consumer, Some((partitions, generation)), until_end, marks)
    }

    /// Whether the assignment this reader reads has been replaced.
    fn reassigned(&self) -> bool {
        self.generation
            .as_ref()
            .is_some_and(|(p, g)| p.generation() != *g)
    }

    /// Waits for the next message; `None` at the end of the input.
    /// Waits for the next message (`wait`), or takes one only if it is there already;
    /// `None` at the end of the input (or, without `wait`, when none is there).
    fn next_message(&mut self, wait: bool) -> io::Result<Option<()>> {
        let timeout = if wait {
            Duration::from_millis(100)
        } else {
            Duration::ZERO
        };
        loop {
            if STOP.load(Ordering::SeqCst) || (self.until_end && self.at_end()) {
                return Ok(None);
            }
            if self.reassigned() {
                return Ok(None);
            }
            if let Some(m) = self.stashed.take() {
                self.take_message(&m);
                return Ok(Some(()));
            }
            // The message borrows the consumer, not the reader.
            let consumer = Arc::clone(&self.consumer);
            match consumer.poll(timeout) {
                None if wait => continue,
                None => return Ok(None),
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    self.at_eof.insert(p);
                    if !wait {
                        return Ok(None);
                    }
                }
                Some(Err(e)) => {
                    // librdkafka retries broker errors itself; report and go on.
                    tracing::warn!("kafka: {e}");
                    if !wait {
                        return Ok(None);
                    }
                }
                Some(Ok(m)) => {
                    if self.reassigned() {
                        // Served after a rebalance callback in this poll: the message belongs
                        // to the next assignment, hence to the next run.
                        if let Some((p, _)) = &self.generation {
                            p.stash(m.detach());
                        }
                        return Ok(None);
                    }
                    self.take_message(&m);
                    return Ok(Some(()));
                }
            }
        }
    }

    /// Makes `m` the next line.
    fn take_message<M: Message>(&mut self, m: &M) {
        FIRST_MESSAGE.get_or_init(Instant::now);
        self.at_eof.remove(&m.partition());
        self.last_message = Instant::now();
        self.line += 1;
        if let Ok(mut marks) = self.marks.lock() {
            marks.push_back((self.line, m.partition(), m.offset()));
        }
        self.buf.clear();
        self.pos = 0;
        // One message, one line: line breaks inside are spaces (JSON allows them
        // between tokens and forbids them inside strings).
        // An empty message still becomes a record (`null`, a dead letter), so that
        // every line is one record and committed offsets follow written records.
        let payload = match m.payload() {
            Some(p) if !p.iter().all(u8::is_ascii_whitespace) => p,
            _ => b"null",
        };
        self.buf.extend(
            payload
                .iter()
                .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
        );
        self.buf.push(b'\n');
    }
}

impl KafkaReader {
    /// Which partition each line came from, for the router (lateness per partition).
    pub fn line_partitions(&self) -> Arc<dyn LinePartitions> {
        Arc::new(MarksPartitions(Arc::clone(&self.marks)))
    }
}

impl Read for KafkaReader {
    /// Fills `out` with the messages there are, waiting only for the first: one message per
    /// call cost a thread hand-off and a zeroed buffer per message in the reader behind it.
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        loop {
            let k = (out.len() - n).min(self.buf.len() - self.pos);
            out[n..n + k].copy_from_slice(&self.buf[self.pos..self.pos + k]);
            self.pos += k;
            n += k;
            if n == out.len() || self.next_message(n == 0)?.is_none() {
                return Ok(n);
            }
        }
    }
}

impl OffsetCommitter {
    fn commits(&self) -> io::Result<std::sync::MutexGuard<'_, Commits>> {
        self.commits
            .lock()
            .map_err(|_| io::Error::other("offset commits: a thread panicked"))
    }

    /// Also waits for this Kafka sink's deliveries before committing.
    pub fn watch(&mut self, sink: SinkHandle) -> io::Result<()> {
        self.commits()?.sinks.push(sink);
        Ok(())
    }

    /// Also syncs this output file to disk before committing.
    pub fn watch_file(&mut self, file: std::fs::File) -> io::Result<()> {
        self.commits()?.files.push(file);
        Ok(())
    }

    /// The outputs of input lines `..=records` are written (handed to the sinks): every
    /// [`COMMIT_INTERVAL`], and at the end (`last`), waits until the Kafka sinks have
    /// delivered them and commits the offsets of their messages. Fails when a delivery did.
    pub fn flushed(&mut self, records: u64, last: bool) -> io::Result<()> {
        let consumer = Arc::clone(&self.consumer);
        let due = last || self.last_commit.elapsed() >= COMMIT_INTERVAL;
        if due {
            self.last_commit = Instant::now();
        }
        let mut commits = self.commits()?;
        commits.flushed = records;
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
pub struct KafkaWriter {
    producer: Arc<BaseProducer<Deliveries>>,
    topic: String,
    key: Option<String>,
    pending: Vec<u8>,
    sent: u64,
}

impl KafkaWriter {
    /// A producer for `sink`.
    pub fn open(sink: &KafkaSink) -> Result<KafkaWriter> {
        let producer = client(&sink.brokers)
            .set("acks", "all")
            .set("compression.type", &sink.compression)
            .set("linger.ms", "5")
            .set("queue.buffering.max.messages", "1000000")
            .create_with_context(Deliveries::default())
            .context("cannot create a Kafka producer")?;
        Ok(KafkaWriter {
            producer: Arc::new(producer),
            topic: sink.topic.clone(),
            key: sink.key.clone(),
            pending: Vec::new(),
            sent: 0,
        })
    }

    fn send_line(&mut self, line: &[u8]) -> io::Result<()> {
        let key = self.key.as_deref().and_then(|field| key_of(line, field));
        let mut record = BaseRecord::to(&self.topic).payload(line);
        if let Some(k) = key.as_deref() {
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

impl Write for KafkaWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut pending = std::mem::take(&mut self.pending);
        pending.extend_from_slice(data);
        let mut start = 0;
        let mut sent = Ok(());
        while let Some(nl) = memchr::memchr(b'\n', &pending[start..]) {
            sent = self.send_line(&pending[start..start + nl]);
            if sent.is_err() {
                break;
            }
            start += nl + 1;
        }
        pending.drain(..start);
        self.pending = pending;
        sent.map(|()| data.len())
    }

    /// Hands what is queued to the network without waiting: the offset committer waits for
    /// the acknowledgements ([`SinkHandle::deliver`]) before it commits.
    fn flush(&mut self) -> io::Result<()> {
        self.producer.poll(Duration::ZERO);
        Ok(())
    }
}

/// The message key of an output line: the value of its top-level `field`, a string without
/// its quotes, anything else as JSON text; `None` when absent or null. Only that value is
/// kept while the line is read (no tree of the whole event).
fn key_of(line: &[u8], field: &str) -> Option<Vec<u8>> {
    use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
    use serde_json::value::RawValue;

    /// An object key, borrowed unless it has escapes.
    #[derive(serde::Deserialize)]
    struct Name<'a>(#[serde(borrow)] std::borrow::Cow<'a, str>);

    struct Field<'f>(&'f str);

    impl<'de> DeserializeSeed<'de> for Field<'_> {
        type Value = Option<&'de RawValue>;
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
    }

    impl<'de> Visitor<'de> for Field<'_> {
        type Value = Option<&'de RawValue>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut found = None;
            while let Some(Name(name)) = map.next_key()? {
                if found.is_none() && name == self.0 {
                    found = Some(map.next_value::<&RawValue>()?);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(found)
        }
    }

    let mut de = serde_json::Deserializer::from_slice(line);
    let raw = Field(field).deserialize(&mut de).ok()??.get();
    match raw.as_bytes().first()? {
        b'"' => serde_json::from_str::<String>(raw)
            .ok()
            .map(String::into_bytes),
        b'n' => None,
        _ => serde_json::from_str::<serde_json::Value>(raw)
            .ok()
            .map(|v| v.to_string().into_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_the_field_value_as_text() {
        let line =
            br#"{"a":{"user_id":"inner"},"user_id":"u\"1","n":42,"z":null,"features":{"x":1}}"#;
        assert_eq!(key_of(line, "user_id"), Some(br#"u"1"#.to_vec()));
        assert_eq!(key_of(line, "n"), Some(b"42".to_vec()));
        assert_eq!(key_of(line, "z"), None);
        assert_eq!(key_of(line, "missing"), None);
        assert_eq!(key_of(b"not json", "user_id"), None);
    }
}
