//! The router: the one sequential step between parsing and the shards. It sees every batch in
//! input order, rejects events that arrive too late, stamps each event with its floor (the
//! newest event time seen so far minus lateness), and splits the work by owning shard.

use sluice_core::{group_of, shard_of};

use crate::batch::{ParsedBatch, Rejection};

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
