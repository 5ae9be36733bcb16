//! The output stage: formatting completed batches (on the workers) and writing them in input
//! order (on the writer thread).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use sluice_core::{FeatureValue, Plan};

use crate::checkpoint::{
    self, Barrier, CheckpointConfig, FileEntry, Manifest, PartitionPosition, SinkPosition,
    SourceCheckpoint, SourcePosition, FORMAT_VERSION,
};
use crate::codec::columns::ColumnLayout;
use crate::codec::format::{write_dead_letter, OutputLayout, RELATION};
use crate::connector::parquet::EncodedRowGroup;
use crate::connector::{Acknowledge, OutputFormat, Position, RecordKeys, Sink};
use crate::dataflow::batch::{RawBatch, Rejection};
use crate::dataflow::pool::BufferPool;
use crate::dataflow::router::RoutedBatch;
use crate::dataflow::run::Stats;
use crate::dataflow::shard::ShardValues;
use crate::error::{Error, Result};

/// A batch whose shards have all answered.
pub(crate) struct FormatJob {
    pub(crate) batch: Arc<RoutedBatch>,
    pub(crate) results: Vec<ShardValues>,
}

/// A formatted batch, ready to write.
pub(crate) struct Formatted {
    seq: u64,
    pub(crate) events: Vec<u8>,
    pub(crate) dead: Vec<u8>,
    /// Each enriched event's message key, for a keyed events sink.
    keys: Option<RecordKeys>,
    /// Where the source stands after this batch.
    end: Position,
    n_events: u64,
    n_dead: u64,
    n_late: u64,
    /// Relation values null because a hub exceeded its limit.
    n_link_overflows: u64,
    /// For a Parquet output: the enriched events as one encoded row group (in place of
    /// `events`), or why it could not be built. (A CSV output's rows are in `events`.)
    pub(crate) columns: Option<std::result::Result<EncodedRowGroup, String>>,
}

/// Where one record of a formatted batch went: the byte range of its line (newline included)
/// in the enriched events or in the dead letters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// Enriched.
    Event(std::ops::Range<usize>),
    /// Rejected; the line says why.
    Dead(std::ops::Range<usize>),
}

/// Formats one batch: enriched events and dead letters, each in input order (with each
/// event's message key when the batch was parsed with an output key). `each` learns where
/// every record went, in input order.
pub(crate) fn format_batch(
    plan: &Plan,
    layout: &OutputLayout,
    columnar: Option<&ColumnLayout>,
    source: &str,
    pool: &BufferPool,
    job: FormatJob,
    mut each: impl FnMut(Written),
) -> Formatted {
    let routed = &job.batch;
    let batch = &routed.parsed;
    let n_keys = plan.keys.len();
    let n_fields = plan.fields.len();
    let n_links = plan.relations.len();
    // Where each (event, key spec) value block sits in the shard results.
    let mut at: Vec<(u32, u32)> = vec![(u32::MAX, 0); batch.events.len() * n_keys];
    for (shard, items) in routed.items.iter().enumerate() {
        let mut offset = 0u32;
        for item in items {
            at[item.event as usize * n_keys + item.key_spec as usize] = (shard as u32, offset);
            offset += layout.per_key(item.key_spec as usize) as u32;
        }
    }
    let mut events = pool.take();
    let mut columns = columnar.map(|c| c.builder(batch.events.len()));
    if columns.is_none() {
        let input_bytes = match &batch.raw {
            RawBatch::Lines { data, .. } => data.len(),
            RawBatch::Csv(_) | RawBatch::RowGroup(_) => batch.arena.len(),
        };
        events.reserve(input_bytes + batch.events.len() * layout.bytes_per_event());
    }
    let mut dead = Vec::new();
    let mut keys = (!batch.output_keys.is_empty()).then(RecordKeys::default);
    let (mut n_events, mut n_dead, mut n_late) = (0, 0, 0);
    for (i, e) in batch.events.iter().enumerate() {
        if let Some(rejection) = &e.rejection {
            let start = dead.len();
            write_dead_letter(&mut dead, source, e.line, batch.bytes(e.raw), rejection);
            each(Written::Dead(start..dead.len()));
            n_dead += 1;
            n_late += u64::from(rejection.reason == "late");
            continue;
        }
        // A remote backend may refuse an event its shared state can no longer compute.
        let beyond = (0..n_keys).any(|k| {
            let (shard, offset) = at[i * n_keys + k];
            shard != u32::MAX
                && job.results[shard as usize].values[offset as usize..][..layout.per_key(k)]
                    .contains(&FeatureValue::Beyond)
        }) || routed
            .links
            .get(i * n_links..(i + 1) * n_links)
            .is_some_and(|l| l.contains(&FeatureValue::Beyond));
        if beyond {
            let rejection = Rejection {
                reason: "late",
                message: "the key's shared state no longer holds this event's windows: \
                          another writer further ahead in event time already dropped them"
                    .into(),
            };
            let start = dead.len();
            write_dead_letter(&mut dead, source, e.line, batch.bytes(e.raw), &rejection);
            each(Written::Dead(start..dead.len()));
            n_dead += 1;
            n_late += 1;
            continue;
        }
        let value = |k: usize, slot: usize| {
            if k == RELATION {
                return routed.links.get(i * n_links + slot).copied();
            }
            let (shard, offset) = at[i * n_keys + k];
            (shard != u32::MAX).then(|| job.results[shard as usize].values[offset as usize + slot])
        };
        let text = |k: usize| {
            if k == RELATION {
                return &[][..];
            }
            let (shard, _) = at[i * n_keys + k];
            job.results
                .get(shard as usize)
                .map_or(&[][..], |r| r.text.as_slice())
        };
        let start = events.len();
        match columns.as_mut() {
            Some(columns) => {
                columns.add_event(batch, i);
                layout.cells(batch, i, n_fields, value, text, |o, cell| {
                    columns.add_cell(o, cell)
                });
            }
            None => layout.write_event(&mut events, batch, i, n_fields, value, text),
        }
        each(Written::Event(start..events.len()));
        if let Some(keys) = keys.as_mut() {
            keys.push(batch.output_keys[i].map(|(a, b)| &batch.arena[a..b]));
        }
        n_events += 1;
    }
    // CSV is lines, written (and cut back for checkpoints) like JSONL; Parquet row groups are
    // encoded here, on the workers, and only appended by the writer.
    let columns = match (columnar, columns) {
        (Some(layout), Some(builder)) => match builder.finish(batch) {
            Err(message) => Some(Err(message)),
            Ok(built) if layout.format() == OutputFormat::Csv => layout
                .write_csv(&built, batch.seq, &mut events)
                .err()
                .map(Err),
            Ok(built) => Some(layout.encode(&built)),
        },
        _ => None,
    };
    let seq = batch.seq;
    let end = batch.end.clone();
    let n_link_overflows = routed.link_overflows;
    // The input buffer is free once the last holder of the batch is done with it.
    if let Ok(routed) = Arc::try_unwrap(job.batch) {
        if let RawBatch::Lines { data, .. } = routed.parsed.raw {
            pool.give(data);
        }
    }
    Formatted {
        seq,
        events,
        dead,
        keys,
        end,
        n_events,
        n_dead,
        n_late,
        n_link_overflows,
        columns,
    }
}

/// What the writer thread receives.
pub(crate) enum WriterMsg {
    /// A formatted batch.
    Batch(Formatted),
    /// A checkpoint was started before batch `before_seq` (from the router).
    Barrier(Barrier),
    /// A shard wrote its file of checkpoint `id`.
    ShardFile {
        id: u64,
        shard: usize,
        file: Result<FileEntry>,
    },
}

/// A checkpoint the writer is completing.
struct InFlight {
    barrier: Barrier,
    /// The output lengths at the barrier, once everything before it is written.
    sink: Option<SinkPosition>,
    /// Whether those lengths are durable (a helper thread syncs the files).
    synced: bool,
    files: Vec<Option<FileEntry>>,
}

impl InFlight {
    fn ready(&self) -> bool {
        self.synced && self.files.iter().all(Option::is_some)
    }
}

/// Where the writer stands, and what it tells the source.
struct Sinks<'a, 'o> {
    events: Box<dyn Sink + 'o>,
    dead_letters: Box<dyn Sink + 'o>,
    position: SinkPosition,
    /// Where the source stands after the records written so far.
    written: Position,
    acknowledger: Option<Box<dyn Acknowledge>>,
    source_checkpoint: Option<Box<dyn SourceCheckpoint>>,
    checkpoints: Option<&'a WriterCheckpoints>,
}

/// What the writer needs to complete checkpoints.
pub(crate) struct WriterCheckpoints {
    pub(crate) config: CheckpointConfig,
    pub(crate) plan: String,
    pub(crate) shards: usize,
    /// 1 when the plan has relation features (the router writes their links file), else 0.
    pub(crate) links: usize,
    /// Completed checkpoints, read by the router before it starts another.
    pub(crate) completed: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// The writer's ends: the sinks (cut back to a resumed checkpoint's lengths) and, from the
/// source, its acknowledger and its part in checkpoints.
pub(crate) struct WriterEnds<'o> {
    pub(crate) events: Box<dyn Sink + 'o>,
    pub(crate) dead_letters: Box<dyn Sink + 'o>,
    pub(crate) position: SinkPosition,
    pub(crate) written: Position,
    pub(crate) acknowledger: Option<Box<dyn Acknowledge>>,
    pub(crate) source_checkpoint: Option<Box<dyn SourceCheckpoint>>,
}

fn out_err(error: std::io::Error) -> Error {
    Error::Output {
        what: "output",
        error,
    }
}

fn dead_err(error: std::io::Error) -> Error {
    Error::Output {
        what: "dead letters",
        error,
    }
}

impl Sinks<'_, '_> {
    /// Flushes both outputs and tells the acknowledger (`last`: for the last time in this
    /// run, after the sinks delivered everything).
    fn flush(&mut self, last: bool) -> Result<()> {
        if last {
            self.events.finish().map_err(out_err)?;
            self.dead_letters.finish().map_err(dead_err)?;
        } else {
            self.events.flush().map_err(out_err)?;
            self.dead_letters.flush().map_err(dead_err)?;
        }
        if let Some(ack) = self.acknowledger.as_mut() {
            ack.flushed(&self.written, last).map_err(out_err)?;
        }
        Ok(())
    }

    /// Flushes both outputs and has a helper thread make them durable, so that the writer
    /// goes on writing meanwhile (a sync covers everything written before it starts).
    /// Returns their lengths now; `(id, result)` is sent to `done` once those lengths are
    /// durable.
    fn make_durable(&mut self, id: u64, done: &Sender<(u64, Result<()>)>) -> Result<SinkPosition> {
        self.flush(false)?;
        let events = self.events.sync().map_err(out_err)?;
        let dead = self.dead_letters.sync().map_err(dead_err)?;
        let done = done.clone();
        std::thread::Builder::new()
            .name("sluice-sync".into())
            .spawn(move || {
                let run = |job: Option<crate::connector::SyncJob>,
                           err: fn(std::io::Error) -> Error| {
                    job.map_or(Ok(()), |job| job().map_err(err))
                };
                let result = run(events, out_err).and(run(dead, dead_err));
                let _ = done.send((id, result));
            })
            .map_err(|e| {
                Error::Checkpoint(format!("cannot start a thread to sync outputs: {e}"))
            })?;
        Ok(self.position)
    }

    /// Writes one formatted batch.
    fn write(&mut self, f: &mut Formatted) -> Result<()> {
        match f.columns.take() {
            Some(Ok(group)) => self.events.write_row_group(group).map_err(out_err)?,
            Some(Err(message)) => return Err(out_err(std::io::Error::other(message))),
            None => self
                .events
                .write(&f.events, f.keys.as_ref())
                .map_err(out_err)?,
        }
        if !f.dead.is_empty() {
            self.dead_letters.write(&f.dead, None).map_err(dead_err)?;
        }
        self.position.events_bytes += f.events.len() as u64;
        self.position.dead_letters_bytes += f.dead.len() as u64;
        self.written.advance(&f.end);
        Ok(())
    }
}

/// The writer loop: writes formatted batches in input order and returns their tokens, and
/// completes checkpoints once their outputs are durable and every shard's file is written.
pub(crate) fn write_all(
    rx: Receiver<WriterMsg>,
    ends: WriterEnds<'_>,
    tokens: &Sender<()>,
    stats: &Stats,
    pool: &BufferPool,
    checkpoints: Option<&WriterCheckpoints>,
) -> Result<()> {
    let mut waiting: BTreeMap<u64, Formatted> = BTreeMap::new();
    let mut next = 0;
    let mut sink = Sinks {
        events: ends.events,
        dead_letters: ends.dead_letters,
        position: ends.position,
        written: ends.written,
        acknowledger: ends.acknowledger,
        source_checkpoint: ends.source_checkpoint,
        checkpoints,
    };
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    let (synced_tx, synced_rx) = crossbeam_channel::unbounded::<(u64, Result<()>)>();
    let mut input_open = true;
    loop {
        let msg = if input_open {
            crossbeam_channel::select! {
                recv(rx) -> msg => match msg {
                    Ok(msg) => Some(msg),
                    Err(_) => {
                        input_open = false;
                        None
                    }
                },
                recv(synced_rx) -> s => {
                    mark_synced(&mut in_flight, s.ok())?;
                    None
                }
            }
        } else if in_flight.iter().any(|c| c.sink.is_some() && !c.synced) {
            // The input is done: wait for the syncs still running, then finish.
            mark_synced(&mut in_flight, synced_rx.recv().ok())?;
            None
        } else {
            break;
        };
        match msg {
            None => {}
            Some(WriterMsg::Batch(f)) => {
                waiting.insert(f.seq, f);
            }
            Some(WriterMsg::Barrier(barrier)) => in_flight.push_back(InFlight {
                // One file per shard, and the router's links file.
                files: vec![None; sink.checkpoints.map_or(0, |c| c.shards + c.links)],
                barrier,
                sink: None,
                synced: false,
            }),
            Some(WriterMsg::ShardFile { id, shard, file }) => {
                let file = file?;
                if let Some(c) = in_flight.iter_mut().find(|c| c.barrier.id == id) {
                    c.files[shard] = Some(file);
                }
            }
        }
        loop {
            // The outputs of a checkpoint are everything before its first batch.
            for c in in_flight.iter_mut().filter(|c| c.sink.is_none()) {
                if c.barrier.before_seq == next {
                    c.sink = Some(sink.make_durable(c.barrier.id, &synced_tx)?);
                }
            }
            let Some(mut f) = waiting.remove(&next) else {
                break;
            };
            sink.write(&mut f)?;
            stats
                .events_written
                .fetch_add(f.n_events, Ordering::Relaxed);
            stats.dead_letters.fetch_add(f.n_dead, Ordering::Relaxed);
            stats.late.fetch_add(f.n_late, Ordering::Relaxed);
            stats
                .link_overflows
                .fetch_add(f.n_link_overflows, Ordering::Relaxed);
            pool.give(f.events);
            let _ = tokens.send(());
            next += 1;
        }
        while in_flight.front().is_some_and(InFlight::ready) {
            let Some(c) = in_flight.pop_front() else {
                break;
            };
            complete(&mut sink, c, stats)?;
        }
        if rx.is_empty() {
            // Caught up: hand what is written to the sink now, so a live input's events do not
            // sit in a buffer until more arrive.
            sink.flush(false)?;
        }
    }
    sink.flush(true)
}

/// Records that the outputs of checkpoint `id` are durable (or fails with the sync's error).
fn mark_synced(in_flight: &mut VecDeque<InFlight>, done: Option<(u64, Result<()>)>) -> Result<()> {
    let Some((id, result)) = done else {
        return Ok(());
    };
    result?;
    if let Some(c) = in_flight.iter_mut().find(|c| c.barrier.id == id) {
        c.synced = true;
    }
    Ok(())
}

/// Writes the manifest of a checkpoint whose outputs and shard files are durable (with a
/// partitioned source, once the source has recorded its positions and agreed).
fn complete(sink: &mut Sinks<'_, '_>, c: InFlight, stats: &Stats) -> Result<()> {
    let Some(config) = sink.checkpoints else {
        return Ok(());
    };
    let files: Vec<FileEntry> = c.files.into_iter().flatten().collect();
    let mut manifest = Manifest {
        format: FORMAT_VERSION,
        id: c.barrier.id,
        created_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        plan: config.plan.clone(),
        shards: config.shards,
        source: None,
        sink: c.sink.unwrap_or_default(),
        newest: c.barrier.newest,
        files,
        partitions: Vec::new(),
    };
    let dir = &config.config.dir;
    let keep = config.config.keep;
    match (&c.barrier.position, sink.source_checkpoint.as_mut()) {
        (&Position::Stream { offset, line }, _) => {
            manifest.source = Some(SourcePosition {
                offset,
                line,
                digest: c.barrier.digest,
            });
            checkpoint::commit(dir, &manifest, keep)?;
        }
        (Position::Partitions(offsets), None) => {
            manifest.partitions = partition_positions(offsets, &c.barrier.newest_by);
            checkpoint::commit(dir, &manifest, keep)?;
        }
        (Position::Partitions(offsets), Some(source)) => {
            let mut commit = |partitions| {
                manifest.partitions = partitions;
                checkpoint::commit(dir, &manifest, keep)
            };
            if !source.complete(offsets, &c.barrier.newest_by, &mut commit)? {
                tracing::info!(id = manifest.id, "checkpoint abandoned: partitions revoked");
                return Ok(());
            }
        }
    }
    stats.checkpoints.fetch_add(1, Ordering::Relaxed);
    config.completed.fetch_add(1, Ordering::Release);
    let bytes: u64 = manifest.files.iter().map(|f| f.bytes).sum();
    tracing::info!(
        id = manifest.id,
        line = manifest.source.map_or(0, |s| s.line),
        bytes,
        millis = c.barrier.started.elapsed().as_millis() as u64,
        "checkpoint complete"
    );
    Ok(())
}

/// The positions of a partitioned source's partitions: the next offset of each, with its
/// newest event time.
pub fn partition_positions(
    offsets: &std::collections::BTreeMap<u32, i64>,
    newest_by: &[(u32, i64)],
) -> Vec<PartitionPosition> {
    offsets
        .iter()
        .map(|(&partition, &offset)| PartitionPosition {
            partition,
            offset,
            newest: newest_by
                .iter()
                .find(|&&(p, _)| p == partition)
                .map(|&(_, t)| t),
        })
        .collect()
}
