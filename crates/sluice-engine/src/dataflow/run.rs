//! A run: the threads of a pipeline and the batches flowing between them.
//!
//! ```text
//! reader ─▶ [parse jobs] ─▶ workers ─▶ router (input order, lateness, key groups)
//!                                        │ per-shard work           ▲ shard results
//!                                        ▼                          │
//!                                      workers (shard i owns groups i·G/N..) ─┘
//!            router ─▶ [format jobs] ─▶ workers ─▶ writer (input order) ─▶ sink
//! ```
//!
//! Each of the N workers owns one shard's state and also takes parse and format jobs from
//! shared queues, so every CPU-heavy step runs on N threads and a run with N workers uses N
//! cores. The reader, router and writer only move batches. A fixed number of batch tokens
//! bounds memory: the reader takes one per batch and the writer returns it.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, never, unbounded, Receiver, Select, Sender};
use sluice_core::{shard_of, Plan};

use crate::checkpoint::{
    self, Barrier, CheckpointConfig, GroupSnapshot, Manifest, SinkPosition, SourceCheckpoint,
};
use crate::codec::format::OutputLayout;
use crate::codec::parse::{Extractor, ParseScratch};
use crate::codec::time::TimeFormat;
use crate::connector::{CsvBatcher, Input, InputFormat, LineBatcher};
use crate::dataflow::batch::RawBatch;
use crate::dataflow::pool::BufferPool;
use crate::dataflow::router::{
    route_all, CheckpointTimer, LinePartitions, Router, RouterMsg, ShardMsg,
};
use crate::dataflow::shard;
use crate::dataflow::writer::{format_batch, write_all, FormatJob, WriterCheckpoints, WriterMsg};
use crate::error::{Error, Result};
use crate::state::redis::Traffic;
use crate::state::{Backend, StateBackend, StateConfig};

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
    /// For a live JSONL input (a pipe, a terminal): cut a batch once it holds a whole line and
    /// this long has passed since its first byte, instead of waiting for it to fill. `None`:
    /// batches are cut when full (files).
    pub batch_wait: Option<Duration>,
    /// For a partitioned source (Kafka): the partition of each input line, so that lateness
    /// is judged per partition (see [`crate::dataflow::router::Router`]).
    pub partitions: Option<Arc<dyn LinePartitions>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("workers", &self.workers)
            .field("batch_bytes", &self.batch_bytes)
            .field("state", &self.state)
            .field("checkpoint", &self.checkpoint)
            .field("batch_wait", &self.batch_wait)
            .field("partitioned", &self.partitions.is_some())
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
            batch_wait: None,
            checkpoint: None,
            partitions: None,
        }
    }
}

impl Job {
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

    /// The same job, judging lateness per partition of a partitioned source.
    pub fn with_partitions(mut self, partitions: Option<Arc<dyn LinePartitions>>) -> Self {
        self.partitions = partitions;
        self
    }

    /// The same job, cutting batches of a live input after `wait` (see [`Job::batch_wait`]).
    pub fn with_batch_wait(mut self, wait: Option<Duration>) -> Self {
        self.batch_wait = wait;
        self
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

/// See [`Outputs::on_flushed`].
pub type OnFlushed = Box<dyn FnMut(u64, bool) -> std::io::Result<()> + Send>;

/// Where the run's output goes.
pub struct Outputs<'a> {
    /// Enriched events.
    pub events: Box<dyn Write + Send + 'a>,
    /// Dead letters.
    pub dead_letters: Box<dyn Write + Send + 'a>,
    /// Lengths of both outputs before this run wrote anything (a resumed run appends).
    pub start: SinkPosition,
    /// The events file, to make it durable at checkpoints (`None`: not a file).
    pub events_file: Option<std::fs::File>,
    /// The dead-letter file, likewise.
    pub dead_letters_file: Option<std::fs::File>,
    /// Called after each flush of both outputs with the number of input records whose
    /// outputs are now flushed, and whether it is the run's last flush (a source that
    /// acknowledges its input, such as Kafka offsets, acknowledges up to there). An error
    /// stops the run.
    pub on_flushed: Option<OnFlushed>,
    /// A partitioned source's part in checkpoints (see [`SourceCheckpoint`]).
    pub source_checkpoint: Option<Box<dyn SourceCheckpoint>>,
}

impl<'a> Outputs<'a> {
    /// Outputs written from the start, with nothing to sync.
    pub fn new(
        events: Box<dyn Write + Send + 'a>,
        dead_letters: Box<dyn Write + Send + 'a>,
    ) -> Self {
        Outputs {
            events,
            dead_letters,
            start: SinkPosition::default(),
            events_file: None,
            dead_letters_file: None,
            on_flushed: None,
            source_checkpoint: None,
        }
    }
}

/// What a run resumes from: a verified checkpoint and its key groups.
#[derive(Debug)]
pub struct Resume {
    /// The checkpoint's manifest.
    pub manifest: Manifest,
    /// Its key groups.
    pub groups: Vec<GroupSnapshot>,
}

impl Resume {
    /// Keys restored, over every key group and key spec.
    pub fn keys(&self) -> usize {
        self.groups
            .iter()
            .map(|g| g.tables.iter().map(Vec::len).sum::<usize>())
            .sum()
    }
}

/// A fingerprint of a plan: state restores only into the plan it was taken with
/// ([`Plan::fingerprint`]: an explicit encoding of the features and lateness).
pub fn plan_fingerprint(plan: &Plan) -> String {
    plan.fingerprint()
}

/// Runs a job over an input to completion.
pub fn run(job: &Job, input: Input, outputs: Outputs<'_>, stats: Arc<Stats>) -> Result<Summary> {
    run_resumed(job, input, outputs, stats, None)
}

/// Runs a job over an input to completion, starting from a checkpoint's state when given
/// (`input` must then be positioned at the checkpoint's source offset, and `outputs` at its
/// sink positions).
pub fn run_resumed(
    job: &Job,
    input: Input,
    outputs: Outputs<'_>,
    stats: Arc<Stats>,
    resume: Option<Resume>,
) -> Result<Summary> {
    let started = Instant::now();
    let n = job.workers;
    let plan = Arc::clone(&job.plan);
    let source_name = input.name.display().to_string();
    let mut extractor = Extractor::new(&plan, &job.time_field, job.time_format);
    enum Batcher {
        Lines(LineBatcher),
        Csv(CsvBatcher),
    }
    let mut batcher = match input.format {
        InputFormat::Jsonl => {
            let batcher = match job.batch_wait {
                None => LineBatcher::new(input.reader, input.name.clone(), job.batch_bytes),
                Some(wait) => {
                    LineBatcher::with_wait(input.reader, input.name.clone(), job.batch_bytes, wait)?
                }
            };
            Batcher::Lines(match &resume {
                Some(r) => batcher.starting_at(r.manifest.source.offset, r.manifest.source.line),
                None => batcher,
            })
        }
        InputFormat::Csv => {
            let b = CsvBatcher::new(input.reader, input.name.clone(), job.csv_batch_rows)?;
            extractor = extractor.with_csv_header(b.header().to_vec());
            Batcher::Csv(b)
        }
    };
    let extractor = Arc::new(extractor);
    let layout = Arc::new(OutputLayout::new(&plan));

    let max_in_flight = 4 * n + 4;
    let pool = BufferPool::new(2 * max_in_flight);
    let (token_tx, token_rx) = bounded::<()>(max_in_flight);
    for _ in 0..max_in_flight {
        token_tx.send(()).map_err(|_| Error::Stage("setup"))?;
    }
    let (parse_tx, parse_rx) = unbounded::<(u64, RawBatch)>();
    let (format_tx, format_rx) = unbounded::<FormatJob>();
    let (router_tx, router_rx) = unbounded::<RouterMsg>();
    let (written_tx, written_rx) = unbounded::<WriterMsg>();
    type ShardChannel = (Sender<ShardMsg>, Receiver<ShardMsg>);
    let shard_channels: Vec<ShardChannel> = (0..n).map(|_| unbounded()).collect();

    // State backends connect before any thread starts, so a bad address fails the run at once.
    // A resumed run hands each shard the key groups it now owns (any number of shards).
    let newest = resume.as_ref().and_then(|r| r.manifest.newest);
    let newest_by: Vec<(u32, i64)> = resume
        .as_ref()
        .map(|r| {
            r.manifest
                .partitions
                .iter()
                .filter_map(|p| Some((p.partition, p.newest?)))
                .collect()
        })
        .unwrap_or_default();
    let next_checkpoint = match (&resume, &job.checkpoint) {
        (Some(r), _) => r.manifest.id + 1,
        (None, Some(c)) => checkpoint::list(&c.dir)?.into_iter().max().unwrap_or(0) + 1,
        (None, None) => 1,
    };
    let mut restored: Vec<Vec<GroupSnapshot>> = (0..n).map(|_| Vec::new()).collect();
    for g in resume.map(|r| r.groups).unwrap_or_default() {
        restored[shard_of(g.group, n)].push(g);
    }
    // State is kept for the slowest partition (or the stream).
    let slowest = newest_by.iter().map(|&(_, t)| t).min().or(newest);
    let floor = slowest.map_or(i64::MIN, |t| t.saturating_sub(plan.lateness_ms));
    let restoring = Instant::now();
    let mut backends = Vec::with_capacity(n);
    for (i, groups) in restored.into_iter().enumerate() {
        backends.push(Backend::open(&plan, &job.state, i, n, groups, floor)?);
    }
    if newest.is_some() {
        tracing::info!(
            millis = restoring.elapsed().as_millis() as u64,
            "key tables rebuilt"
        );
    }
    let completed_checkpoints = Arc::new(AtomicU64::new(0));
    let writer_checkpoints = job.checkpoint.as_ref().map(|c| WriterCheckpoints {
        config: c.clone(),
        plan: plan_fingerprint(&plan),
        shards: n,
        completed: Arc::clone(&completed_checkpoints),
    });

    thread::scope(|scope| {
        // Reader.
        let reader_router = router_tx.clone();
        let reader_stats = Arc::clone(&stats);
        let reader_pool = pool.clone();
        let reader = thread::Builder::new()
            .name("sluice-reader".into())
            .spawn_scoped(scope, move || -> Result<()> {
                let mut seq = 0;
                let mut read = || -> Result<()> {
                    loop {
                        if token_rx.recv().is_err() {
                            return Ok(()); // the writer stopped; its error is reported
                        }
                        let next = match &mut batcher {
                            Batcher::Lines(b) => b.next_batch(reader_pool.take())?,
                            Batcher::Csv(b) => b.next_batch()?,
                        };
                        let Some((raw, records)) = next else {
                            return Ok(());
                        };
                        if let RawBatch::Lines { data, .. } = &raw {
                            reader_stats
                                .bytes_read
                                .fetch_add(data.len() as u64, Ordering::Relaxed);
                        }
                        reader_stats
                            .records_read
                            .fetch_add(records, Ordering::Relaxed);
                        if parse_tx.send((seq, raw)).is_err() {
                            return Ok(());
                        }
                        seq += 1;
                    }
                };
                let result = read();
                // Always tell the router how many batches there are, also after a read error:
                // what was read is still processed and written before the error is reported.
                let _ = reader_router.send(RouterMsg::End { batches: seq });
                result
            })
            .map_err(|_| Error::Stage("reader"))?;

        // Workers: shard owners that also parse and format.
        let mut workers = Vec::with_capacity(n);
        for (i, ((_, shard_rx), backend)) in shard_channels.iter().zip(backends).enumerate() {
            let shard_rx = shard_rx.clone();
            let parse_rx = parse_rx.clone();
            let format_rx = format_rx.clone();
            let router_tx = router_tx.clone();
            let written_tx = written_tx.clone();
            let plan = Arc::clone(&plan);
            let extractor = Arc::clone(&extractor);
            let layout = Arc::clone(&layout);
            let source_name = source_name.clone();
            let pool = pool.clone();
            let worker_stats = Arc::clone(&stats);
            let checkpoint_dir = job.checkpoint.as_ref().map(|c| c.dir.clone());
            let handle = thread::Builder::new()
                .name(format!("sluice-worker-{i}"))
                .spawn_scoped(scope, move || {
                    // A panic here is a bug; report it to the router instead of leaving the
                    // other stages waiting for this shard.
                    let failed = router_tx.clone();
                    let work = std::panic::AssertUnwindSafe(move || {
                        let mut backend = backend;
                        let mut scratch = ParseScratch::default();
                        let mut shard_rx = shard_rx;
                        let mut format_rx = format_rx;
                        let mut parse_rx = parse_rx;
                        while let Some(job) = next_job(&mut shard_rx, &mut format_rx, &mut parse_rx)
                        {
                            let sent = match job {
                                WorkerJob::Shard(ShardMsg::Checkpoint(barrier)) => {
                                    snapshot(
                                        &plan,
                                        &backend,
                                        i,
                                        &barrier,
                                        checkpoint_dir.as_deref(),
                                        &written_tx,
                                        &worker_stats,
                                    );
                                    true
                                }
                                WorkerJob::Shard(ShardMsg::Batch(batch)) => {
                                    let values = shard::process(&plan, &mut backend, &batch, i);
                                    router_tx
                                        .send(RouterMsg::ShardDone {
                                            seq: batch.parsed.seq,
                                            shard: i,
                                            values,
                                        })
                                        .is_ok()
                                }
                                WorkerJob::Format(job) => written_tx
                                    .send(WriterMsg::Batch(format_batch(
                                        &plan,
                                        &layout,
                                        &source_name,
                                        &pool,
                                        job,
                                        |_| {},
                                    )))
                                    .is_ok(),
                                WorkerJob::Parse(seq, raw) => router_tx
                                    .send(RouterMsg::Parsed(extractor.parse_batch(
                                        seq,
                                        raw,
                                        &mut scratch,
                                    )))
                                    .is_ok(),
                            };
                            if !sent {
                                break;
                            }
                        }
                        if let Some(tier) = backend.tier_stats() {
                            worker_stats
                                .keys_on_disk
                                .fetch_add(tier.on_disk as u64, Ordering::Relaxed);
                            worker_stats
                                .spill_moves
                                .fetch_add(tier.evictions + tier.loads, Ordering::Relaxed);
                        }
                        if let Some(t) = backend.traffic() {
                            if let Ok(mut total) = worker_stats.traffic.lock() {
                                *total = Some(total.unwrap_or_default().plus(t));
                            }
                        }
                    });
                    if std::panic::catch_unwind(work).is_err() {
                        let _ = failed.send(RouterMsg::WorkerFailed);
                    }
                })
                .map_err(|_| Error::Stage("worker"))?;
            workers.push(handle);
        }
        drop(parse_rx);
        drop(format_rx);
        let timer = job.checkpoint.as_ref().map(|c| CheckpointTimer {
            interval: c.interval,
            next_id: next_checkpoint,
            writer: written_tx.clone(),
            completed: Arc::clone(&completed_checkpoints),
            started: 0,
        });
        drop(written_tx);
        let shard_txs: Vec<Sender<ShardMsg>> =
            shard_channels.into_iter().map(|(tx, _)| tx).collect();

        // Router.
        let router_plan = Arc::clone(&plan);
        let router = thread::Builder::new()
            .name("sluice-router".into())
            .spawn_scoped(scope, move || -> Result<()> {
                drop(router_tx);
                route_all(
                    &router_plan,
                    Router::new(n, router_plan.lateness_ms)
                        .resuming(newest)
                        .resuming_partitions(&newest_by)
                        .with_partitions(job.partitions.clone())
                        .grouping_by_partition(
                            job.partitions.is_some() && job.checkpoint.is_some(),
                        ),
                    router_rx,
                    shard_txs,
                    format_tx,
                    timer,
                )
            })
            .map_err(|_| Error::Stage("router"))?;

        // Writer (this thread).
        let written = write_all(
            written_rx,
            outputs,
            &token_tx,
            &stats,
            &pool,
            writer_checkpoints.as_ref(),
        );
        drop(token_tx);

        let reader = reader.join().unwrap_or(Err(Error::Stage("reader")));
        let router = router.join().unwrap_or(Err(Error::Stage("router")));
        let mut worker_panicked = false;
        for w in workers {
            worker_panicked |= w.join().is_err();
        }
        // Report the root cause: an I/O or backend error before a stage that merely stopped.
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
    })?;

    let summary = Summary {
        records: stats.records_read.load(Ordering::Relaxed),
        events: stats.events_written.load(Ordering::Relaxed),
        dead_letters: stats.dead_letters.load(Ordering::Relaxed),
        late: stats.late.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        traffic: stats.traffic.lock().map(|t| *t).unwrap_or(None),
    };
    Ok(summary)
}

/// Snapshots shard `shard`'s state for a checkpoint: encodes it here (the shard waits) while
/// a helper thread streams it to disk, then reports the file to the writer.
fn snapshot(
    plan: &Plan,
    backend: &Backend,
    shard: usize,
    barrier: &Barrier,
    root: Option<&std::path::Path>,
    writer: &Sender<WriterMsg>,
    stats: &Stats,
) {
    let started = Instant::now();
    let id = barrier.id;
    let report = |file: Result<checkpoint::FileEntry>| {
        let _ = writer.send(WriterMsg::ShardFile { id, shard, file });
    };
    let Some(root) = root else {
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
    Parse(u64, RawBatch),
}

/// The next job of a worker: its own shard's work first (it holds up the merge), then
/// formatting (it frees memory), then parsing. `None` once every queue is closed and empty.
fn next_job(
    shard_rx: &mut Receiver<ShardMsg>,
    format_rx: &mut Receiver<FormatJob>,
    parse_rx: &mut Receiver<(u64, RawBatch)>,
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
