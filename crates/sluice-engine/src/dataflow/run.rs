//! A run: the threads of a pipeline and the batches flowing between them.
//!
//! ```text
//! source ─▶ reader ─▶ [parse jobs] ─▶ workers ─▶ router (input order, lateness, key groups)
//!                                                  │ per-shard work         ▲ shard results
//!                                                  ▼                        │
//!                                     workers (shard i owns groups i·G/N..) ┘
//!           router ─▶ [format jobs] ─▶ workers ─▶ writer (input order) ─▶ sinks
//! ```
//!
//! Each of the N workers owns one shard's state and also takes parse and format jobs from
//! shared queues, so every CPU-heavy step runs on N threads and a run with N workers uses N
//! cores. The reader, router and writer only move batches. A fixed number of batch tokens
//! bounds memory: the reader takes one per batch and the writer returns it.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, Scope, ScopedJoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, never, unbounded, Receiver, Select, Sender};
use sluice_core::{shard_of, Plan};

use crate::checkpoint::{self, Barrier, CheckpointConfig, GroupSnapshot, Resume};
use crate::codec::columns::{ColumnLayout, InputColumns};
use crate::codec::format::OutputLayout;
use crate::codec::parse::{Extractor, ParseScratch};
use crate::codec::time::TimeFormat;
use crate::connector::{Batching, OutputFormat, Position, Sink, Source, SourceBatch, StreamSink};
use crate::dataflow::batch::RawBatch;
use crate::dataflow::pool::BufferPool;
use crate::dataflow::router::{route_all, CheckpointTimer, Router, RouterMsg, ShardMsg};
use crate::dataflow::shard;
use crate::dataflow::writer::{
    format_batch, write_all, FormatJob, WriterCheckpoints, WriterEnds, WriterMsg,
};
use crate::error::{Error, Result};
use crate::state::redis::Traffic;
use crate::state::{Backend, StateBackend, StateConfig};

/// Rows of the pieces a Parquet row group is cut into, and of the batches of a Parquet output.
pub const PARQUET_SLICE_ROWS: usize = 16_384;

/// Everything a run needs to know about the pipeline.
#[derive(Clone)]
pub struct Job {
    /// The features, grouped.
    pub plan: Arc<Plan>,
    /// Name of the event time field.
    pub time_field: String,
    /// How the event time is written.
    pub time_format: TimeFormat,
    /// Number of shards and worker threads (>= 1).
    pub workers: usize,
    /// Approximate size of a JSONL batch in bytes.
    pub batch_bytes: usize,
    /// Rows per CSV batch.
    pub csv_batch_rows: usize,
    /// Where state lives.
    pub state: StateConfig,
    /// Checkpoints, if any (memory state and JSONL input only).
    pub checkpoint: Option<CheckpointConfig>,
    /// A live source (a pipe, a terminal, a topic) cuts a batch once it holds a record and
    /// this long has passed since its first one arrived, instead of waiting for it to fill.
    pub batch_wait: Duration,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("workers", &self.workers)
            .field("batch_bytes", &self.batch_bytes)
            .field("state", &self.state)
            .field("checkpoint", &self.checkpoint)
            .field("batch_wait", &self.batch_wait)
            .finish_non_exhaustive()
    }
}

impl Job {
    /// A job with default batching.
    pub fn new(
        plan: Plan,
        time_field: impl Into<String>,
        time_format: TimeFormat,
        workers: usize,
    ) -> Self {
        Job {
            plan: Arc::new(plan),
            time_field: time_field.into(),
            time_format,
            workers: workers.clamp(1, sluice_core::KEY_GROUPS as usize),
            batch_bytes: 256 * 1024,
            csv_batch_rows: 2048,
            state: StateConfig::Memory,
            checkpoint: None,
            batch_wait: Duration::from_millis(10),
        }
    }

    /// The same job with its state in `state`.
    pub fn with_state(mut self, state: StateConfig) -> Self {
        self.state = state;
        self
    }

    /// The same job, taking checkpoints as configured.
    pub fn with_checkpoints(mut self, checkpoint: Option<CheckpointConfig>) -> Self {
        self.checkpoint = checkpoint;
        self
    }

    /// The same job, cutting batches of a live source after `wait` (see [`Job::batch_wait`]).
    pub fn with_batch_wait(mut self, wait: Duration) -> Self {
        self.batch_wait = wait;
        self
    }

    /// How the source cuts batches.
    pub fn batching(&self) -> Batching {
        Batching {
            bytes: self.batch_bytes,
            csv_rows: self.csv_batch_rows,
            wait: self.batch_wait,
            slice_rows: PARQUET_SLICE_ROWS,
            max_slices: 1,
        }
    }
}

/// Counters of a run, readable while it goes (for progress reports).
#[derive(Debug, Default)]
pub struct Stats {
    /// Records read from the input.
    pub records_read: AtomicU64,
    /// Bytes of input read.
    pub bytes_read: AtomicU64,
    /// Enriched events written.
    pub events_written: AtomicU64,
    /// Records written to the dead letters.
    pub dead_letters: AtomicU64,
    /// Of which rejected as late.
    pub late: AtomicU64,
    /// Checkpoints completed.
    pub checkpoints: AtomicU64,
    /// Embedded backend: keys on disk at the end.
    pub keys_on_disk: AtomicU64,
    /// Embedded backend: keys moved to disk or back.
    pub spill_moves: AtomicU64,
    /// Longest time a shard stopped processing to snapshot its state, in microseconds.
    pub snapshot_stall_us: AtomicU64,
    /// Relation feature values that were null because a hub exceeded its `limit`.
    pub link_overflows: AtomicU64,
    /// Remote state traffic, summed over shards when they finish.
    pub traffic: std::sync::Mutex<Option<Traffic>>,
}

/// What a finished run did.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Records read.
    pub records: u64,
    /// Enriched events written.
    pub events: u64,
    /// Records sent to the dead letters.
    pub dead_letters: u64,
    /// Of which late.
    pub late: u64,
    /// Relation feature values that were null because a hub exceeded its `link_limit`.
    pub link_overflows: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Round trips and commands sent to remote state (`None` for memory state).
    pub traffic: Option<Traffic>,
}

impl Summary {
    /// Records per second.
    pub fn records_per_sec(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Where the run's output goes.
pub struct Outputs<'a> {
    /// Enriched events.
    pub events: Box<dyn Sink + 'a>,
    /// Dead letters.
    pub dead_letters: Box<dyn Sink + 'a>,
}

impl<'a> Outputs<'a> {
    /// Outputs to these sinks.
    pub fn new(events: Box<dyn Sink + 'a>, dead_letters: Box<dyn Sink + 'a>) -> Self {
        Outputs {
            events,
            dead_letters,
        }
    }

    /// Outputs to plain writers, with nothing to sync or cut back.
    pub fn writers(
        events: Box<dyn Write + Send + 'a>,
        dead_letters: Box<dyn Write + Send + 'a>,
    ) -> Self {
        Outputs::new(
            Box::new(StreamSink::new(events, "output")),
            Box::new(StreamSink::new(dead_letters, "dead letters")),
        )
    }
}

/// A fingerprint of a plan: state restores only into the plan it was taken with
/// ([`Plan::fingerprint`]: an explicit encoding of the features and lateness).
pub fn plan_fingerprint(plan: &Plan) -> String {
    plan.fingerprint()
}

/// Runs a job over a source to completion.
pub fn run(
    job: &Job,
    source: &mut dyn Source,
    outputs: Outputs<'_>,
    stats: Arc<Stats>,
) -> Result<Summary> {
    run_resumed(job, source, outputs, stats, None)
}

/// Where a resumed run starts: the state of each shard, the newest event times and the
/// number of the next checkpoint.
struct Start {
    backends: Vec<Backend>,
    /// The relation features' link indexes of a resumed checkpoint.
    links: Option<Vec<u8>>,
    newest: Option<i64>,
    newest_by: Vec<(u32, i64)>,
    next_checkpoint: u64,
    position: Position,
}

impl Start {
    /// Opens each shard's state backend (a resumed run hands each shard the key groups it now
    /// owns, for any number of shards). Backends connect before any thread starts, so a bad
    /// address fails the run at once.
    fn open(job: &Job, resume: Option<Resume>) -> Result<Start> {
        let n = job.workers;
        let next_checkpoint = match (&resume, &job.checkpoint) {
            (Some(r), _) => r.id + 1,
            (None, Some(c)) => checkpoint::list(&c.dir)?.into_iter().max().unwrap_or(0) + 1,
            (None, None) => 1,
        };
        let (newest, newest_by, position, groups, links) = match resume {
            Some(r) => (r.newest, r.newest_by, r.position, r.groups, r.links),
            None => (None, Vec::new(), Position::START, Vec::new(), None),
        };
        let mut restored: Vec<Vec<GroupSnapshot>> = (0..n).map(|_| Vec::new()).collect();
        for g in groups {
            restored[shard_of(g.group, n)].push(g);
        }
        // State is kept for the slowest partition (or the stream).
        let slowest = newest_by.iter().map(|&(_, t)| t).min().or(newest);
        let floor = slowest.map_or(i64::MIN, |t| t.saturating_sub(job.plan.lateness_ms));
        let restoring = Instant::now();
        let mut backends = Vec::with_capacity(n);
        for (i, groups) in restored.into_iter().enumerate() {
            backends.push(Backend::open(&job.plan, &job.state, i, n, groups, floor)?);
        }
        if newest.is_some() {
            tracing::info!(
                millis = restoring.elapsed().as_millis() as u64,
                "key tables rebuilt"
            );
        }
        Ok(Start {
            backends,
            links,
            newest,
            newest_by,
            next_checkpoint,
            position,
        })
    }
}

/// A queue of raw batches to parse, numbered in input order.
type ParseQueue = (Sender<(u64, SourceBatch)>, Receiver<(u64, SourceBatch)>);

/// The channels between the stages of a run.
struct Channels {
    tokens: (Sender<()>, Receiver<()>),
    parse: ParseQueue,
    format: (Sender<FormatJob>, Receiver<FormatJob>),
    router: (Sender<RouterMsg>, Receiver<RouterMsg>),
    written: (Sender<WriterMsg>, Receiver<WriterMsg>),
    shards: Vec<(Sender<ShardMsg>, Receiver<ShardMsg>)>,
}

impl Channels {
    /// Channels for `n` shards and `max_in_flight` batch tokens.
    fn new(n: usize, max_in_flight: usize) -> Result<Channels> {
        let tokens = bounded::<()>(max_in_flight);
        for _ in 0..max_in_flight {
            tokens.0.send(()).map_err(|_| Error::Stage("setup"))?;
        }
        Ok(Channels {
            tokens,
            parse: unbounded(),
            format: unbounded(),
            router: unbounded(),
            written: unbounded(),
            shards: (0..n).map(|_| unbounded()).collect(),
        })
    }
}

/// What every worker shares.
struct WorkerShared {
    plan: Arc<Plan>,
    extractor: Extractor,
    layout: OutputLayout,
    /// A columnar output's layout.
    columns: Option<ColumnLayout>,
    source_name: String,
    pool: BufferPool,
    stats: Arc<Stats>,
    checkpoint_dir: Option<std::path::PathBuf>,
}

/// Runs a job over a source to completion, starting from a checkpoint's state when given
/// (`source` must then be positioned at the checkpoint's position; the sinks are cut back to
/// the checkpoint's lengths here).
pub fn run_resumed(
    job: &Job,
    source: &mut dyn Source,
    mut outputs: Outputs<'_>,
    stats: Arc<Stats>,
    resume: Option<Resume>,
) -> Result<Summary> {
    let started = Instant::now();
    let n = job.workers;
    let plan = Arc::clone(&job.plan);
    // Columnar work goes in batches of about PARQUET_SLICE_ROWS rows: a Parquet input's row
    // groups are cut into pieces of that size (decoded whole on a worker), and a Parquet
    // output writes a row group per batch, so text input is cut into batches of about that
    // many records (4 MiB) instead of 256 KiB. Fewer such batches are in flight.
    let parquet_out = outputs.events.output_format() == OutputFormat::Parquet;
    let columnar = parquet_out || source.parquet_schema().is_some();
    let max_in_flight = if columnar { 2 * n + 2 } else { 4 * n + 4 };
    let mut batching = job.batching();
    batching.max_slices = max_in_flight - 1;
    if parquet_out {
        batching.bytes = batching.bytes.max(4 << 20);
        batching.csv_rows = batching.csv_rows.max(PARQUET_SLICE_ROWS);
    }
    source.start(&batching)?;
    let mut extractor = Extractor::new(&plan, &job.time_field, job.time_format);
    if let Some(header) = source.csv_header() {
        extractor = extractor.with_csv_header(header.to_vec());
    }
    if let Some(field) = outputs.events.key_field() {
        extractor = extractor.with_output_key(field);
    }
    let fresh_output = resume.as_ref().is_none_or(|r| r.sink.events_bytes == 0);
    let columns = columnar_output(job, source, &mut outputs, fresh_output)?;
    if columns.is_some() {
        extractor = extractor.keeping_columns();
    }
    let sink_start = resume.as_ref().map(|r| r.sink).unwrap_or_default();
    let start = Start::open(job, resume)?;
    let ends = writer_ends(outputs, source, sink_start, &start.position)?;
    let by_partition = ends.source_checkpoint.is_some() && job.checkpoint.is_some();

    let shared = Arc::new(WorkerShared {
        plan: Arc::clone(&plan),
        extractor,
        layout: OutputLayout::new(&plan),
        columns,
        source_name: source.name().to_owned(),
        pool: BufferPool::new(2 * max_in_flight),
        stats: Arc::clone(&stats),
        checkpoint_dir: job.checkpoint.as_ref().map(|c| c.dir.clone()),
    });
    let channels = Channels::new(n, max_in_flight)?;
    let completed_checkpoints = Arc::new(AtomicU64::new(0));
    let writer_checkpoints = job.checkpoint.as_ref().map(|c| WriterCheckpoints {
        config: c.clone(),
        plan: plan_fingerprint(&plan),
        shards: n,
        links: usize::from(!plan.relations.is_empty()),
        completed: Arc::clone(&completed_checkpoints),
    });
    let timer = job.checkpoint.as_ref().map(|c| CheckpointTimer {
        interval: c.interval,
        next_id: start.next_checkpoint,
        writer: channels.written.0.clone(),
        completed: Arc::clone(&completed_checkpoints),
        started: 0,
        dir: c.dir.clone(),
        shards: n,
    });
    let router = Router::new(n, plan.lateness_ms)
        .with_links(&plan, start.links.as_deref(), &job.state)?
        .resuming(start.newest)
        .resuming_partitions(&start.newest_by)
        .grouping_by_partition(by_partition);

    thread::scope(|scope| -> Result<()> {
        let Channels {
            tokens: (token_tx, token_rx),
            parse: (parse_tx, parse_rx),
            format: (format_tx, format_rx),
            router: (router_tx, router_rx),
            written: (written_tx, written_rx),
            shards,
        } = channels;
        let reader = spawn_reader(
            scope,
            source,
            token_rx,
            parse_tx,
            router_tx.clone(),
            &shared,
        )?;
        let mut workers = Vec::with_capacity(n);
        for (i, ((_, shard_rx), backend)) in shards.iter().zip(start.backends).enumerate() {
            let queues = WorkerQueues {
                shard: shard_rx.clone(),
                format: format_rx.clone(),
                parse: parse_rx.clone(),
                router: router_tx.clone(),
                written: written_tx.clone(),
            };
            let shared = Arc::clone(&shared);
            let handle = thread::Builder::new()
                .name(format!("sluice-worker-{i}"))
                .spawn_scoped(scope, move || work(i, backend, queues, &shared))
                .map_err(|_| Error::Stage("worker"))?;
            workers.push(handle);
        }
        drop((parse_rx, format_rx, written_tx));
        let shard_txs: Vec<Sender<ShardMsg>> = shards.into_iter().map(|(tx, _)| tx).collect();
        let position = start.position.clone();
        let router = thread::Builder::new()
            .name("sluice-router".into())
            .spawn_scoped(scope, move || -> Result<()> {
                drop(router_tx);
                route_all(
                    &plan, router, router_rx, shard_txs, format_tx, timer, position,
                )
            })
            .map_err(|_| Error::Stage("router"))?;

        // Writer (this thread).
        let written = write_all(
            written_rx,
            ends,
            &token_tx,
            &stats,
            &shared.pool,
            writer_checkpoints.as_ref(),
        );
        drop(token_tx);
        join_all(written, reader, router, workers)
    })?;

    Ok(Summary {
        records: stats.records_read.load(Ordering::Relaxed),
        events: stats.events_written.load(Ordering::Relaxed),
        dead_letters: stats.dead_letters.load(Ordering::Relaxed),
        late: stats.late.load(Ordering::Relaxed),
        link_overflows: stats.link_overflows.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        traffic: stats.traffic.lock().map(|t| *t).unwrap_or(None),
    })
}

/// A columnar events sink's layout, its schema set: the source's columns, then the features.
/// Fails when a feature has the name of an input column, or when checkpoints would need to
/// cut the output back.
fn columnar_output(
    job: &Job,
    source: &dyn Source,
    outputs: &mut Outputs<'_>,
    fresh_output: bool,
) -> Result<Option<ColumnLayout>> {
    let format = outputs.events.output_format();
    if format == OutputFormat::Jsonl {
        return Ok(None);
    }
    let refuse = |message: String| Error::Output {
        what: "output",
        error: std::io::Error::other(message),
    };
    if job.checkpoint.is_some() && format == OutputFormat::Parquet {
        return Err(refuse(
            "a Parquet output cannot be cut back to a checkpoint: write JSONL with \
             [checkpoint], or run without it"
                .into(),
        ));
    }
    let input = match (source.parquet_schema(), source.csv_header()) {
        (Some(schema), _) => InputColumns::Parquet(schema),
        (None, Some(header)) => InputColumns::Csv(header.to_vec()),
        (None, None) => InputColumns::Json,
    };
    let mut layout = ColumnLayout::new(&job.plan, input, format)
        .map_err(refuse)?
        .with_header(fresh_output);
    if format == OutputFormat::Parquet {
        outputs
            .events
            .set_schema(Arc::clone(layout.schema()))
            .map_err(|error| Error::Output {
                what: "output",
                error,
            })?;
        layout = layout.with_encoder(outputs.events.row_group_encoder());
    }
    Ok(Some(layout))
}

/// The writer's ends: the sinks cut back to where a resumed checkpoint left them, and the
/// source's acknowledger and part in checkpoints.
fn writer_ends<'o>(
    mut outputs: Outputs<'o>,
    source: &mut dyn Source,
    sink: checkpoint::SinkPosition,
    position: &Position,
) -> Result<WriterEnds<'o>> {
    let cut = |s: &mut Box<dyn Sink + 'o>, len: u64, what: &'static str| {
        if len == 0 {
            return Ok(0);
        }
        s.cut_back(len)
            .map_err(|error| Error::Output { what, error })
    };
    let events_bytes = cut(&mut outputs.events, sink.events_bytes, "output")?;
    let dead_letters_bytes = cut(
        &mut outputs.dead_letters,
        sink.dead_letters_bytes,
        "dead letters",
    )?;
    Ok(WriterEnds {
        events: outputs.events,
        dead_letters: outputs.dead_letters,
        position: checkpoint::SinkPosition {
            events_bytes,
            dead_letters_bytes,
        },
        written: position.clone(),
        acknowledger: source.acknowledger(),
        source_checkpoint: source.checkpoints(),
    })
}

/// Starts the reader: takes a batch token, reads a batch, hands it to the parsers; at the
/// end (or a read error) tells the router how many batches there were.
fn spawn_reader<'scope>(
    scope: &'scope Scope<'scope, '_>,
    source: &'scope mut dyn Source,
    tokens: Receiver<()>,
    parse: Sender<(u64, SourceBatch)>,
    router: Sender<RouterMsg>,
    shared: &Arc<WorkerShared>,
) -> Result<ScopedJoinHandle<'scope, Result<()>>> {
    let shared = Arc::clone(shared);
    thread::Builder::new()
        .name("sluice-reader".into())
        .spawn_scoped(scope, move || -> Result<()> {
            let mut seq = 0;
            let mut read = || -> Result<()> {
                while tokens.recv().is_ok() {
                    let Some(batch) = source.next_batch(shared.pool.take())? else {
                        return Ok(());
                    };
                    // A batch cut into pieces holds a token per piece (the writer returns one
                    // per piece).
                    for _ in 1..batch.slices {
                        if tokens.recv().is_err() {
                            return Ok(());
                        }
                    }
                    shared
                        .stats
                        .bytes_read
                        .fetch_add(batch.bytes() as u64, Ordering::Relaxed);
                    shared
                        .stats
                        .records_read
                        .fetch_add(batch.records, Ordering::Relaxed);
                    let slices = batch.slices.max(1);
                    if parse.send((seq, batch)).is_err() {
                        return Ok(());
                    }
                    seq += slices;
                }
                Ok(()) // the writer stopped; its error is reported
            };
            let result = read();
            // Always tell the router how many batches there are, also after a read error:
            // what was read is still processed and written before the error is reported.
            let _ = router.send(RouterMsg::End { batches: seq });
            result
        })
        .map_err(|_| Error::Stage("reader"))
}

/// The queues a worker takes jobs from and sends results to.
struct WorkerQueues {
    shard: Receiver<ShardMsg>,
    format: Receiver<FormatJob>,
    parse: Receiver<(u64, SourceBatch)>,
    router: Sender<RouterMsg>,
    written: Sender<WriterMsg>,
}

/// A worker: owns shard `i`'s state and also parses and formats. A panic here is a bug; it is
/// reported to the router instead of leaving the other stages waiting for this shard.
fn work(i: usize, backend: Backend, queues: WorkerQueues, shared: &WorkerShared) {
    let failed = queues.router.clone();
    let work = std::panic::AssertUnwindSafe(move || {
        let mut backend = backend;
        let WorkerQueues {
            shard: mut shard_rx,
            format: mut format_rx,
            parse: mut parse_rx,
            router,
            written,
        } = queues;
        let mut scratch = ParseScratch::default();
        while let Some(job) = next_job(&mut shard_rx, &mut format_rx, &mut parse_rx) {
            let sent = match job {
                WorkerJob::Shard(ShardMsg::Checkpoint(barrier)) => {
                    snapshot(i, &backend, &barrier, shared, &written);
                    true
                }
                WorkerJob::Shard(ShardMsg::Batch(batch)) => {
                    let values = shard::process(&shared.plan, &mut backend, &batch, i);
                    let seq = batch.parsed.seq;
                    let done = RouterMsg::ShardDone {
                        seq,
                        shard: i,
                        values,
                    };
                    router.send(done).is_ok()
                }
                WorkerJob::Format(job) => {
                    let s = shared;
                    let f = format_batch(
                        &s.plan,
                        &s.layout,
                        s.columns.as_ref(),
                        &s.source_name,
                        &s.pool,
                        job,
                        |_| {},
                    );
                    written.send(WriterMsg::Batch(f)).is_ok()
                }
                WorkerJob::Parse(
                    seq,
                    SourceBatch {
                        raw: RawBatch::RowGroup(group),
                        ..
                    },
                ) => shared
                    .extractor
                    .parse_row_group(seq, &group, &mut scratch)
                    .into_iter()
                    .all(|parsed| router.send(RouterMsg::Parsed(Box::new(parsed))).is_ok()),
                WorkerJob::Parse(seq, batch) => {
                    let mut parsed = shared.extractor.parse_batch(seq, batch.raw, &mut scratch);
                    parsed.end = batch.end;
                    parsed.partitions = batch.partitions;
                    parsed.digest = batch.digest;
                    router.send(RouterMsg::Parsed(Box::new(parsed))).is_ok()
                }
            };
            if !sent {
                break;
            }
        }
        report_backend(&backend, &shared.stats);
    });
    if std::panic::catch_unwind(work).is_err() {
        let _ = failed.send(RouterMsg::WorkerFailed);
    }
}

/// Adds a finished shard's tier and traffic figures to the run's.
fn report_backend(backend: &Backend, stats: &Stats) {
    if let Some(tier) = backend.tier_stats() {
        stats
            .keys_on_disk
            .fetch_add(tier.on_disk as u64, Ordering::Relaxed);
        stats
            .spill_moves
            .fetch_add(tier.evictions + tier.loads, Ordering::Relaxed);
    }
    if let Some(t) = backend.traffic() {
        if let Ok(mut total) = stats.traffic.lock() {
            *total = Some(total.unwrap_or_default().plus(t));
        }
    }
}

/// Waits for every stage and reports the root cause of a failure: an I/O or backend error
/// before a stage that merely stopped.
fn join_all(
    written: Result<()>,
    reader: ScopedJoinHandle<'_, Result<()>>,
    router: ScopedJoinHandle<'_, Result<()>>,
    workers: Vec<ScopedJoinHandle<'_, ()>>,
) -> Result<()> {
    let reader = reader.join().unwrap_or(Err(Error::Stage("reader")));
    let router = router.join().unwrap_or(Err(Error::Stage("router")));
    let mut worker_panicked = false;
    for w in workers {
        worker_panicked |= w.join().is_err();
    }
    let root_cause = [written, reader, router]
        .into_iter()
        .filter_map(Result::err)
        .min_by_key(|e| matches!(e, Error::Stage(_)));
    if let Some(e) = root_cause {
        return Err(e);
    }
    if worker_panicked {
        return Err(Error::Stage("worker"));
    }
    Ok(())
}

/// Snapshots shard `shard`'s state for a checkpoint: encodes it here (the shard waits) while
/// a helper thread streams it to disk, then reports the file to the writer.
fn snapshot(
    shard: usize,
    backend: &Backend,
    barrier: &Barrier,
    shared: &WorkerShared,
    writer: &Sender<WriterMsg>,
) {
    let (plan, stats) = (&shared.plan, &shared.stats);
    let started = Instant::now();
    let id = barrier.id;
    let report = |file: Result<checkpoint::FileEntry>| {
        let _ = writer.send(WriterMsg::ShardFile { id, shard, file });
    };
    let Some(root) = shared.checkpoint_dir.as_deref() else {
        return report(Err(Error::Checkpoint("no checkpoint directory".into())));
    };
    let dir = checkpoint::checkpoint_dir(root, id);
    let mut file = match checkpoint::ShardFileWriter::create(&dir, &format!("shard-{shard}.bin")) {
        Ok(f) => f,
        Err(e) => return report(Err(e)),
    };
    let encoded = backend.snapshot(plan, &mut file);
    stats
        .snapshot_stall_us
        .fetch_max(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    let writer = writer.clone();
    file.finish(move |file| {
        let file = encoded.and(file);
        let _ = writer.send(WriterMsg::ShardFile { id, shard, file });
    });
}

enum WorkerJob {
    Shard(ShardMsg),
    Format(FormatJob),
    Parse(u64, SourceBatch),
}

/// The next job of a worker: its own shard's work first (it holds up the merge), then
/// formatting (it frees memory), then parsing. `None` once every queue is closed and empty.
fn next_job(
    shard_rx: &mut Receiver<ShardMsg>,
    format_rx: &mut Receiver<FormatJob>,
    parse_rx: &mut Receiver<(u64, SourceBatch)>,
) -> Option<WorkerJob> {
    loop {
        if let Ok(b) = shard_rx.try_recv() {
            return Some(WorkerJob::Shard(b));
        }
        if let Ok(j) = format_rx.try_recv() {
            return Some(WorkerJob::Format(j));
        }
        if let Ok((seq, raw)) = parse_rx.try_recv() {
            return Some(WorkerJob::Parse(seq, raw));
        }
        let mut sel = Select::new();
        let s = sel.recv(shard_rx);
        let f = sel.recv(format_rx);
        let p = sel.recv(parse_rx);
        let op = sel.select();
        let i = op.index();
        if i == s {
            match op.recv(shard_rx) {
                Ok(b) => return Some(WorkerJob::Shard(b)),
                Err(_) => *shard_rx = never(),
            }
        } else if i == f {
            match op.recv(format_rx) {
                Ok(j) => return Some(WorkerJob::Format(j)),
                Err(_) => *format_rx = never(),
            }
        } else if i == p {
            match op.recv(parse_rx) {
                Ok((seq, raw)) => return Some(WorkerJob::Parse(seq, raw)),
                Err(_) => *parse_rx = never(),
            }
        }
        if is_never(shard_rx) && is_never(format_rx) && is_never(parse_rx) {
            return None;
        }
    }
}

fn is_never<T>(r: &Receiver<T>) -> bool {
    r.same_channel(&never())
}
