//! The router: the one sequential step between parsing and the shards. It sees every batch in
//! input order, rejects events that arrive too late, stamps each event with its floor (the
//! newest event time seen so far minus lateness), and splits the work by owning shard.

use std::collections::BTreeMap;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use sluice_core::{group_of, shard_of, FeatureValue, Plan};

use crate::checkpoint::{Barrier, SourcePosition};
use crate::error::{Error, Result};
use crate::output::{FormatJob, WriterMsg};

use crate::batch::{ParsedBatch, RawBatch, Rejection};

/// One unit of shard work: event `event` of the batch, for key spec `key_spec`.
#[derive(Debug, Clone, Copy)]
pub struct Item {
    /// Index of the event in the batch.
    pub event: u32,
    /// Index of the key spec in the plan.
    pub key_spec: u32,
}

/// A batch ready for the shards.
#[derive(Debug)]
pub struct RoutedBatch {
    /// The parsed batch (late events now carry a rejection).
    pub parsed: ParsedBatch,
    /// Floor of each event (meaningful for accepted events only).
    pub floors: Vec<i64>,
    /// Work of each shard, in input order.
    pub items: Vec<Vec<Item>>,
}

/// Event-time bookkeeping across batches.
#[derive(Debug, Clone)]
pub struct Router {
    shards: usize,
    lateness_ms: i64,
    newest: Option<i64>,
}

impl Router {
    /// A router for `shards` shards with the plan's lateness.
    pub fn new(shards: usize, lateness_ms: i64) -> Self {
        Router {
            shards,
            lateness_ms,
            newest: None,
        }
    }

    /// The newest accepted event time so far.
    pub fn newest(&self) -> Option<i64> {
        self.newest
    }

    /// The same router, resuming after events up to `newest`.
    pub fn resuming(mut self, newest: Option<i64>) -> Self {
        self.newest = newest;
        self
    }

    /// Routes the next batch (batches must come in input order).
    pub fn route(&mut self, mut parsed: ParsedBatch, n_keys: usize) -> RoutedBatch {
        let mut floors = Vec::with_capacity(parsed.events.len());
        let mut items: Vec<Vec<Item>> = (0..self.shards).map(|_| Vec::new()).collect();
        for (i, event) in parsed.events.iter_mut().enumerate() {
            if event.rejection.is_some() {
                floors.push(i64::MIN);
                continue;
            }
            if let Some(newest) = self.newest {
                if event.ts < newest.saturating_sub(self.lateness_ms) {
                    event.rejection = Some(Box::new(Rejection {
                        reason: "late",
                        message: format!(
                            "event time {} is more than the lateness of {} ms behind the newest event time {}",
                            event.ts, self.lateness_ms, newest
                        ),
                    }));
                    floors.push(i64::MIN);
                    continue;
                }
            }
            let newest = self.newest.map_or(event.ts, |n| n.max(event.ts));
            self.newest = Some(newest);
            floors.push(newest.saturating_sub(self.lateness_ms));
            for k in 0..n_keys {
                let key = &parsed.keys[i * n_keys + k];
                if key.present {
                    items[shard_of(group_of(key.hash), self.shards)].push(Item {
                        event: i as u32,
                        key_spec: k as u32,
                    });
                }
            }
        }
        RoutedBatch {
            parsed,
            floors,
            items,
        }
    }
}

/// What a shard receives: batches and, between them, checkpoint barriers.
pub(crate) enum ShardMsg {
    Batch(Arc<RoutedBatch>),
    Checkpoint(Arc<Barrier>),
}

/// When the router starts checkpoints.
pub(crate) struct CheckpointTimer {
    pub(crate) interval: std::time::Duration,
    pub(crate) next_id: u64,
    pub(crate) writer: Sender<WriterMsg>,
    /// Checkpoints completed so far (counted by the writer). A new one starts only once the
    /// previous one is complete, so checkpoints of a large state never pile up.
    pub(crate) completed: std::sync::Arc<std::sync::atomic::AtomicU64>,
    pub(crate) started: u64,
}

/// What the router thread receives.
pub(crate) enum RouterMsg {
    Parsed(ParsedBatch),
    ShardDone {
        seq: u64,
        shard: usize,
        values: Result<Vec<FeatureValue>>,
    },
    End {
        batches: u64,
    },
    WorkerFailed,
}

struct Pending {
    batch: Arc<RoutedBatch>,
    results: Vec<Option<Vec<FeatureValue>>>,
    remaining: usize,
}

/// The router loop: orders parsed batches, routes them to shards, and hands completed batches
/// to the formatters.
pub(crate) fn route_all(
    plan: &Plan,
    shards: usize,
    rx: Receiver<RouterMsg>,
    shard_txs: Vec<Sender<ShardMsg>>,
    format_tx: Sender<FormatJob>,
    newest: Option<i64>,
    mut timer: Option<CheckpointTimer>,
) -> Result<()> {
    let mut router = Router::new(shards, plan.lateness_ms).resuming(newest);
    let mut last_checkpoint = std::time::Instant::now();
    let mut parsed: BTreeMap<u64, ParsedBatch> = BTreeMap::new();
    let mut pending: BTreeMap<u64, Pending> = BTreeMap::new();
    let mut next_seq = 0;
    let mut total = None;
    let mut done = 0;
    let n_keys = plan.keys.len();
    let finish = |p: Pending, format_tx: &Sender<FormatJob>| -> Result<()> {
        let job = FormatJob {
            batch: p.batch,
            results: p
                .results
                .into_iter()
                .map(Option::unwrap_or_default)
                .collect(),
        };
        format_tx.send(job).map_err(|_| Error::Stage("formatter"))
    };
    while total != Some(done) {
        let Ok(msg) = rx.recv() else {
            return Err(Error::Stage("worker"));
        };
        match msg {
            RouterMsg::End { batches } => total = Some(batches),
            RouterMsg::WorkerFailed => return Err(Error::Stage("worker")),
            RouterMsg::Parsed(batch) => {
                parsed.insert(batch.seq, batch);
                while let Some(batch) = parsed.remove(&next_seq) {
                    if let Some(t) = timer.as_mut() {
                        let idle =
                            t.completed.load(std::sync::atomic::Ordering::Acquire) >= t.started;
                        if next_seq > 0 && idle && last_checkpoint.elapsed() >= t.interval {
                            if let RawBatch::Lines {
                                first_line, offset, ..
                            } = &batch.raw
                            {
                                let barrier = Barrier {
                                    id: t.next_id,
                                    before_seq: next_seq,
                                    source: SourcePosition {
                                        offset: *offset,
                                        line: *first_line,
                                    },
                                    newest: router.newest(),
                                    started: std::time::Instant::now(),
                                };
                                t.next_id += 1;
                                t.started += 1;
                                last_checkpoint = barrier.started;
                                let shared = Arc::new(barrier.clone());
                                t.writer
                                    .send(WriterMsg::Barrier(barrier))
                                    .map_err(|_| Error::Stage("writer"))?;
                                for tx in &shard_txs {
                                    tx.send(ShardMsg::Checkpoint(Arc::clone(&shared)))
                                        .map_err(|_| Error::Stage("shard"))?;
                                }
                            }
                        }
                    }
                    let routed = Arc::new(router.route(batch, n_keys));
                    let mut p = Pending {
                        batch: Arc::clone(&routed),
                        results: vec![None; shards],
                        remaining: 0,
                    };
                    for (i, items) in routed.items.iter().enumerate() {
                        if !items.is_empty() {
                            p.remaining += 1;
                            shard_txs[i]
                                .send(ShardMsg::Batch(Arc::clone(&routed)))
                                .map_err(|_| Error::Stage("shard"))?;
                        }
                    }
                    if p.remaining == 0 {
                        finish(p, &format_tx)?;
                        done += 1;
                    } else {
                        pending.insert(next_seq, p);
                    }
                    next_seq += 1;
                }
            }
            RouterMsg::ShardDone { seq, shard, values } => {
                let values = values?;
                let p = pending.get_mut(&seq).ok_or(Error::Stage("router"))?;
                p.results[shard] = Some(values);
                p.remaining -= 1;
                if p.remaining == 0 {
                    let p = pending.remove(&seq).ok_or(Error::Stage("router"))?;
                    finish(p, &format_tx)?;
                    done += 1;
                }
            }
        }
    }
    Ok(())
}
