//! The output stage: formatting completed batches (on the workers) and writing them in input
//! order (on the writer thread).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use sluice_core::{FeatureValue, Plan};

use crate::batch::RawBatch;
use crate::error::{Error, Result};
use crate::format::{write_dead_letter, OutputLayout};
use crate::pool::BufferPool;
use crate::router::RoutedBatch;
use crate::run::{Outputs, Stats};

/// A batch whose shards have all answered.
pub(crate) struct FormatJob {
    pub(crate) batch: Arc<RoutedBatch>,
    pub(crate) results: Vec<Vec<FeatureValue>>,
}

/// A formatted batch, ready to write.
pub(crate) struct Formatted {
    seq: u64,
    events: Vec<u8>,
    dead: Vec<u8>,
    n_events: u64,
    n_dead: u64,
    n_late: u64,
}

/// Formats one batch: enriched events and dead letters, each in input order.
pub(crate) fn format_batch(
    plan: &Plan,
    layout: &OutputLayout,
    source: &str,
    pool: &BufferPool,
    job: FormatJob,
) -> Formatted {
    let routed = &job.batch;
    let batch = &routed.parsed;
    let n_keys = plan.keys.len();
    let n_fields = plan.fields.len();
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
    let input_bytes = match &batch.raw {
        RawBatch::Lines { data, .. } => data.len(),
        RawBatch::Csv(_) => batch.arena.len(),
    };
    events.reserve(input_bytes + batch.events.len() * layout.bytes_per_event());
    let mut dead = Vec::new();
    let (mut n_events, mut n_dead, mut n_late) = (0, 0, 0);
    for (i, e) in batch.events.iter().enumerate() {
        if let Some(rejection) = &e.rejection {
            write_dead_letter(&mut dead, source, e.line, batch.bytes(e.raw), rejection);
            n_dead += 1;
            n_late += u64::from(rejection.reason == "late");
            continue;
        }
        layout.write_event(&mut events, batch, i, n_fields, |k, slot| {
            let (shard, offset) = at[i * n_keys + k];
            (shard != u32::MAX).then(|| job.results[shard as usize][offset as usize + slot])
        });
        n_events += 1;
    }
    let seq = batch.seq;
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
        n_events,
        n_dead,
        n_late,
    }
}

/// The writer loop: writes formatted batches in input order and returns their tokens.
pub(crate) fn write_all(
    rx: Receiver<Formatted>,
    mut outputs: Outputs,
    tokens: &Sender<()>,
    stats: &Stats,
    pool: &BufferPool,
) -> Result<()> {
    let mut waiting: BTreeMap<u64, Formatted> = BTreeMap::new();
    let mut next = 0;
    let out_err = |source| Error::Output {
        what: "output",
        source,
    };
    let dead_err = |source| Error::Output {
        what: "dead letters",
        source,
    };
    for f in rx.iter() {
        waiting.insert(f.seq, f);
        while let Some(f) = waiting.remove(&next) {
            outputs.events.write_all(&f.events).map_err(out_err)?;
            if !f.dead.is_empty() {
                outputs.dead_letters.write_all(&f.dead).map_err(dead_err)?;
            }
            stats
                .events_written
                .fetch_add(f.n_events, Ordering::Relaxed);
            stats.dead_letters.fetch_add(f.n_dead, Ordering::Relaxed);
            stats.late.fetch_add(f.n_late, Ordering::Relaxed);
            pool.give(f.events);
            let _ = tokens.send(());
            next += 1;
        }
        if rx.is_empty() {
            // Caught up: hand what is written to the sink now, so a live input's events do not
            // sit in a buffer until more arrive.
            outputs.events.flush().map_err(out_err)?;
            outputs.dead_letters.flush().map_err(dead_err)?;
        }
    }
    outputs.events.flush().map_err(out_err)?;
    outputs.dead_letters.flush().map_err(dead_err)?;
    Ok(())
}
