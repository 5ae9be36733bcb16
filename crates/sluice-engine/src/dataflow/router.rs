//! The router: the one sequential step between parsing and the shards. It sees every batch in
//! input order, rejects events that arrive too late, stamps each event with its floor (the
//! newest event time seen so far minus lateness), and splits the work by owning shard.

use std::collections::BTreeMap;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use sluice_core::{group_of, shard_of, Plan};

use crate::checkpoint::Barrier;
use crate::connector::Position;
use crate::dataflow::links::LinkStage;
use crate::dataflow::shard::ShardValues;
use crate::dataflow::writer::{FormatJob, WriterMsg};
use crate::error::{Error, Result};
use crate::state::StateConfig;

use crate::dataflow::batch::{ParsedBatch, Rejection};

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
    /// When state follows the partitions of the source: the key group of each event's keys
    /// (its partition's). Empty otherwise: a key's group is its hash's.
    pub groups: Vec<u32>,
    /// The relation features' values, `plan.relations.len()` per event (null for a rejected
    /// one), computed by the router in input order.
    pub links: Vec<sluice_core::FeatureValue>,
    /// Relation values of this batch that were null because a hub exceeded its limit.
    pub link_overflows: u64,
}

/// Event-time bookkeeping across batches.
///
/// With a partitioned source, lateness is judged per partition, as each partition is in order
/// on its own while partitions are consumed at their own pace: an event is late when it is
/// more than the lateness behind the newest time of its own partition. State is kept for the
/// slowest partition: the floor is the oldest of the partitions' newest times, minus the
/// lateness.
pub struct Router {
    shards: usize,
    lateness_ms: i64,
    newest: Option<i64>,
    /// Newest event time per partition.
    newest_by: std::collections::HashMap<u32, i64>,
    /// Keys live in their partition's key group (see [`Router::grouping_by_partition`]).
    by_partition: bool,
    /// The relation features' link indexes, if the plan has any.
    links: Option<Box<LinkStage>>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("shards", &self.shards)
            .field("newest", &self.newest)
            .field("newest_by", &self.newest_by)
            .finish_non_exhaustive()
    }
}

impl Router {
    /// A router for `shards` shards with the plan's lateness.
    pub fn new(shards: usize, lateness_ms: i64) -> Self {
        Router {
            shards,
            lateness_ms,
            newest: None,
            newest_by: std::collections::HashMap::new(),
            by_partition: false,
            links: None,
        }
    }

    /// The same router, computing the relation features of `plan` (if it has any), from the
    /// link indexes of a checkpoint when `restored` holds them.
    /// With Redis state the links live in the cluster instead (and nothing is restored).
    pub fn with_links(
        mut self,
        plan: &Arc<Plan>,
        restored: Option<&[u8]>,
        state: &StateConfig,
    ) -> Result<Self> {
        self.links = match (LinkStage::new(Arc::clone(plan)), restored, state) {
            (Some(stage), _, StateConfig::Redis(options)) => {
                Some(Box::new(stage.in_redis(options)?))
            }
            (Some(stage), Some(bytes), _) => Some(Box::new(stage.restore(bytes)?)),
            (stage, ..) => stage.map(Box::new),
        };
        Ok(self)
    }

    /// The relation stage, if the plan has relation features.
    pub fn links_mut(&mut self) -> Option<&mut LinkStage> {
        self.links.as_deref_mut()
    }

    /// The link indexes, encoded for a checkpoint (`None` without relation features).
    fn encoded_links(&self) -> Option<Vec<u8>> {
        self.links.as_deref().map(LinkStage::encode)
    }

    /// The same router, putting the keys of each partition in that partition's key group
    /// ([`sluice_core::partition_group`]) rather than their hash's, so that a partition's
    /// state can be checkpointed and restored on its own when the partition moves to another
    /// process. Partitions from [`KEY_GROUPS`](sluice_core::KEY_GROUPS) on fall back to hash
    /// groups (the Kafka source refuses them).
    pub fn grouping_by_partition(mut self, on: bool) -> Self {
        self.by_partition = on;
        self
    }

    /// The newest accepted event time of each partition, sorted by partition.
    pub fn newest_by_partition(&self) -> Vec<(u32, i64)> {
        let mut v: Vec<(u32, i64)> = self.newest_by.iter().map(|(&p, &t)| (p, t)).collect();
        v.sort_unstable();
        v
    }

    /// The same router, resuming after partitions' events up to these times.
    pub fn resuming_partitions(mut self, newest_by: &[(u32, i64)]) -> Self {
        self.newest_by.extend(newest_by.iter().copied());
        self
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
    pub fn route(&mut self, mut parsed: ParsedBatch, n_keys: usize) -> Result<RoutedBatch> {
        let mut floors = Vec::with_capacity(parsed.events.len());
        let mut items: Vec<Vec<Item>> = (0..self.shards).map(|_| Vec::new()).collect();
        let mut groups = Vec::new();
        let partition_of = std::mem::take(&mut parsed.partitions);
        for (i, event) in parsed.events.iter_mut().enumerate() {
            if event.rejection.is_some() {
                floors.push(i64::MIN);
                continue;
            }
            let partition = partition_of.get(i).copied();
            // The newest time lateness is judged against: the partition's, or the stream's.
            let newest = match partition {
                Some(p) => self.newest_by.get(&p).copied(),
                None => self.newest,
            };
            if let Some(newest) = newest.filter(|&n| event.ts < n.saturating_sub(self.lateness_ms))
            {
                let of = partition.map_or(String::new(), |p| format!(" of partition {p}"));
                event.rejection = Some(Box::new(Rejection {
                    reason: "late",
                    message: format!(
                        "event time {} is more than the lateness of {} ms behind the newest event time {}{of}",
                        event.ts, self.lateness_ms, newest
                    ),
                }));
                floors.push(i64::MIN);
                continue;
            }
            let newest = newest.map_or(event.ts, |n| n.max(event.ts));
            self.newest = Some(self.newest.map_or(newest, |n| n.max(newest)));
            // State is kept for the slowest partition.
            let slowest = match partition {
                Some(p) => {
                    self.newest_by.insert(p, newest);
                    self.newest_by.values().copied().min().unwrap_or(newest)
                }
                None => newest,
            };
            floors.push(slowest.saturating_sub(self.lateness_ms));
            let group = partition
                .filter(|&p| self.by_partition && p < sluice_core::KEY_GROUPS)
                .map(sluice_core::partition_group);
            if let Some(g) = group {
                groups.resize(i, u32::MAX);
                groups.push(g);
            }
            for k in 0..n_keys {
                let key = &parsed.keys[i * n_keys + k];
                if key.present {
                    let g = group.unwrap_or_else(|| group_of(key.hash));
                    items[shard_of(g, self.shards)].push(Item {
                        event: i as u32,
                        key_spec: k as u32,
                    });
                }
            }
        }
        if !groups.is_empty() {
            groups.resize(parsed.events.len(), u32::MAX);
        }
        parsed.partitions = partition_of;
        let (links, link_overflows) = match self.links.as_deref_mut() {
            Some(stage) => stage.batch(&parsed, &floors)?,
            None => (Vec::new(), 0),
        };
        Ok(RoutedBatch {
            parsed,
            floors,
            items,
            groups,
            links,
            link_overflows,
        })
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
    /// Where checkpoints go (the router writes the relation features' links file there).
    pub(crate) dir: std::path::PathBuf,
    /// The number of shards: the links file is reported as file number `shards`.
    pub(crate) shards: usize,
}

/// What the router thread receives.
pub(crate) enum RouterMsg {
    Parsed(Box<ParsedBatch>),
    ShardDone {
        seq: u64,
        shard: usize,
        values: Result<ShardValues>,
    },
    End {
        batches: u64,
    },
    WorkerFailed,
}

impl CheckpointTimer {
    /// Whether a checkpoint is due: the interval has passed and the previous one is complete
    /// (so checkpoints of a large state never pile up).
    fn due(&self, since_last: std::time::Duration) -> bool {
        since_last >= self.interval
            && self.completed.load(std::sync::atomic::Ordering::Acquire) >= self.started
    }

    /// Starts a checkpoint before batch `before_seq`, which starts at `position` of the input
    /// (whose bytes so far have `digest`): tells the writer and puts a barrier in every
    /// shard's queue. Returns when it started.
    fn start(
        &mut self,
        before_seq: u64,
        position: &Position,
        digest: Option<u64>,
        router: &Router,
        shard_txs: &[Sender<ShardMsg>],
    ) -> Result<std::time::Instant> {
        let barrier = Barrier {
            id: self.next_id,
            before_seq,
            position: position.clone(),
            digest,
            newest: router.newest(),
            newest_by: router.newest_by_partition(),
            started: std::time::Instant::now(),
        };
        self.next_id += 1;
        self.started += 1;
        let started = barrier.started;
        let shared = Arc::new(barrier.clone());
        let id = barrier.id;
        self.writer
            .send(WriterMsg::Barrier(barrier))
            .map_err(|_| Error::Stage("writer"))?;
        for tx in shard_txs {
            tx.send(ShardMsg::Checkpoint(Arc::clone(&shared)))
                .map_err(|_| Error::Stage("shard"))?;
        }
        // The relation features' links as of this barrier: every batch before it is routed.
        if let Some(bytes) = router.encoded_links() {
            let dir = crate::checkpoint::checkpoint_dir(&self.dir, id);
            let file = crate::checkpoint::write_links(&dir, &bytes);
            self.writer
                .send(WriterMsg::ShardFile {
                    id,
                    shard: self.shards,
                    file,
                })
                .map_err(|_| Error::Stage("writer"))?;
        }
        Ok(started)
    }
}

struct Pending {
    batch: Arc<RoutedBatch>,
    results: Vec<Option<ShardValues>>,
    remaining: usize,
}

/// The router loop: orders parsed batches, routes them to shards, and hands completed batches
/// to the formatters.
pub(crate) fn route_all(
    plan: &Plan,
    mut router: Router,
    rx: Receiver<RouterMsg>,
    shard_txs: Vec<Sender<ShardMsg>>,
    format_tx: Sender<FormatJob>,
    mut timer: Option<CheckpointTimer>,
    mut position: Position,
) -> Result<()> {
    let shards = router.shards;
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
    // Where the input stands after the batches routed so far (from the checkpoint resumed),
    // and the batches routed when the last checkpoint started: an input gone quiet is
    // checkpointed as well.
    let mut digest = None;
    let mut routed_at_last_checkpoint = 0;
    while total != Some(done) {
        // Nothing routed since the last checkpoint: nothing to checkpoint until more comes.
        let quiet_checkpoint = timer
            .as_mut()
            .filter(|_| next_seq > routed_at_last_checkpoint);
        let msg = match quiet_checkpoint {
            None => rx.recv().map_err(|_| Error::Stage("worker"))?,
            Some(t) => {
                let wait = t.interval.saturating_sub(last_checkpoint.elapsed());
                match rx.recv_timeout(wait.max(std::time::Duration::from_millis(10))) {
                    Ok(msg) => msg,
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                        if next_seq > routed_at_last_checkpoint && t.due(last_checkpoint.elapsed())
                        {
                            last_checkpoint =
                                t.start(next_seq, &position, digest, &router, &shard_txs)?;
                            routed_at_last_checkpoint = next_seq;
                        }
                        continue;
                    }
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                        return Err(Error::Stage("worker"))
                    }
                }
            }
        };
        match msg {
            RouterMsg::End { batches } => total = Some(batches),
            RouterMsg::WorkerFailed => return Err(Error::Stage("worker")),
            RouterMsg::Parsed(batch) => {
                parsed.insert(batch.seq, *batch);
                while let Some(batch) = parsed.remove(&next_seq) {
                    if let Some(t) = timer.as_mut() {
                        if next_seq > 0 && t.due(last_checkpoint.elapsed()) {
                            last_checkpoint =
                                t.start(next_seq, &position, digest, &router, &shard_txs)?;
                            routed_at_last_checkpoint = next_seq;
                        }
                        digest = batch.digest;
                    }
                    position.advance(&batch.end);
                    let routed = Arc::new(router.route(batch, n_keys)?);
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
    // A last checkpoint at the end of the input, so that a run started again on the same
    // checkpoints goes on from there instead of doing the tail again.
    if let Some(t) = timer.as_mut() {
        if next_seq > routed_at_last_checkpoint {
            t.start(next_seq, &position, digest, &router, &shard_txs)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataflow::batch::{Event, RawBatch, Span};

    fn batch(times: &[i64]) -> ParsedBatch {
        ParsedBatch {
            raw: RawBatch::Lines {
                data: Vec::new(),
                first_line: 1,
            },
            events: times
                .iter()
                .enumerate()
                .map(|(i, &ts)| Event {
                    line: i as u64 + 1,
                    ts,
                    raw: Span::default(),
                    body: Span::default(),
                    rejection: None,
                })
                .collect(),
            ..ParsedBatch::empty(0)
        }
    }

    fn late(routed: &RoutedBatch) -> Vec<bool> {
        routed
            .parsed
            .events
            .iter()
            .map(|e| e.rejection.is_some())
            .collect()
    }

    #[test]
    fn lateness_is_per_partition_and_state_follows_the_slowest() {
        // Lines 1, 3, 5, 7 (partition 1) are an hour behind lines 2, 4, 6, 8 (partition 0);
        // each partition is in order but for its last event.
        let times = [
            0, 3_600_000, 1_000, 3_601_000, 2_000, 3_602_000, 500, 3_000_000,
        ];
        let mut stream_wide = Router::new(1, 60_000);
        assert_eq!(
            late(&stream_wide.route(batch(&times), 0).expect("routes")),
            [false, false, true, false, true, false, true, true]
        );
        // Odd lines from partition 1, even lines from partition 0.
        let mut per_partition = Router::new(1, 60_000);
        let mut odd_even = batch(&times);
        odd_even.partitions = (1..=times.len() as u32).map(|l| l % 2).collect();
        let routed = per_partition.route(odd_even, 0).expect("routes");
        // Within its own partition 500 is 1.5 s behind 2,000: not late; 3,000,000 is ten
        // minutes behind 3,602,000: late.
        assert_eq!(
            late(&routed),
            [false, false, false, false, false, false, false, true]
        );
        // The floor follows the slowest partition.
        assert_eq!(routed.floors[5], 2_000 - 60_000);
        assert_eq!(per_partition.newest(), Some(3_602_000));
    }
}
