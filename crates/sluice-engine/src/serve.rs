//! The engine behind `sluice serve`: the same parse, lateness, state and formatting steps as a
//! run, driven synchronously, one request's records at a time, by whoever holds it (the
//! server keeps it behind a mutex). Records are added to state exactly as `sluice run` adds them, in the order
//! they are given; features can also be read without adding anything.

use std::sync::Arc;

use sluice_core::{FeatureValue, KeyEncoder, Plan};

use crate::codec::format::OutputLayout;
use crate::codec::parse::{Extractor, ParseScratch};
use crate::codec::time::TimeFormat;
use crate::dataflow::batch::RawBatch;
use crate::dataflow::pool::BufferPool;
use crate::dataflow::router::Router;
pub use crate::dataflow::writer::Written;
use crate::dataflow::writer::{format_batch, FormatJob};
use crate::error::Result;
use crate::state::StateConfig;
use crate::state::{Backend, StateBackend};

/// The records of one batch after processing.
#[derive(Debug, Default)]
pub struct Processed {
    /// Enriched events, one line each (as `sluice run` writes them).
    pub events: Vec<u8>,
    /// Dead letters, one line each.
    pub dead: Vec<u8>,
    /// Where each record went, in input order.
    pub outcomes: Vec<Written>,
    /// Relation feature values left null because a hub exceeded its `link_limit`.
    pub hub_nulls: u64,
}

/// A key field's value in a feature query, typed as in events: `"42"` and `42` are different
/// keys.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyValue {
    /// A string.
    Str(String),
    /// A number.
    Num(f64),
    /// A boolean.
    Bool(bool),
}

/// The answer to a feature query for one key spec.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyFeatures {
    /// The key spec's `by` fields.
    pub by: Vec<String>,
    /// The time the windows end at (`None`: not given, and the key holds nothing).
    pub at: Option<i64>,
    /// `(feature name, value)`, in the pipeline's order.
    pub features: Vec<(String, FeatureValue)>,
    /// What the [`FeatureValue::Text`] values point into.
    pub text: Vec<u8>,
}

/// Why a feature query cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryError {
    /// No key spec has all its `by` fields among the given ones.
    NoKey {
        /// The `by` lists that could be queried.
        valid: Vec<Vec<String>>,
    },
    /// `at` is older than the state kept (newest event time minus lateness).
    TooOld {
        /// The oldest time that can be answered exactly.
        oldest: i64,
    },
}

/// Encodes into `key` the key whose fields are `by`, with their values from `given`; false
/// when a field is not given. The global key (`by = []`) is the answer to a query that gives
/// no field at all, and only to such a query.
fn encode_given(by: &[String], given: &[(String, KeyValue)], key: &mut Vec<u8>) -> bool {
    key.clear();
    if by.is_empty() != given.is_empty() {
        return false;
    }
    let mut enc = KeyEncoder::new(key);
    by.iter().all(|field| {
        match given.iter().find(|(name, _)| name == field) {
            Some((_, KeyValue::Str(s))) => enc.str(s),
            Some((_, KeyValue::Num(n))) => enc.num(*n),
            Some((_, KeyValue::Bool(b))) => enc.bool(*b),
            None => return false,
        }
        true
    })
}

/// Which key group a record is routed by in a serving cluster: that of its first entity key
/// (in the order of the pipeline's key specs; the global key only when the pipeline has no
/// other), so that the member owning that group computes the record.
#[derive(Debug)]
pub struct RouteKeys {
    extractor: Extractor,
    scratch: ParseScratch,
    /// Key specs in the order they are tried.
    order: Vec<usize>,
    /// Each key spec's `by` fields.
    by: Vec<Vec<String>>,
}

impl RouteKeys {
    /// The router of `plan`'s records.
    pub fn new(plan: &Plan, time_field: &str, time_format: TimeFormat) -> Self {
        let mut order: Vec<usize> = (0..plan.keys.len()).collect();
        order.sort_by_key(|&k| plan.keys[k].by.is_empty());
        RouteKeys {
            extractor: Extractor::new(plan, time_field, time_format),
            scratch: ParseScratch::default(),
            order,
            by: plan.keys.iter().map(|k| k.by.clone()).collect(),
        }
    }

    /// The key group a feature query for `given` is routed by: that of the first key spec
    /// (in the same order) whose `by` fields are all given; `None` if none is.
    pub fn query_group(&self, given: &[(String, KeyValue)]) -> Option<u32> {
        let mut key = Vec::new();
        self.order.iter().find_map(|&k| {
            encode_given(&self.by[k], given, &mut key)
                .then(|| sluice_core::group_of(sluice_core::key_hash(&key)))
        })
    }

    /// The key group of each record of `lines` (JSONL, one record per line); `None` for a
    /// record without a key (or one that will be a dead letter): it is computed where it
    /// arrives.
    pub fn groups(&mut self, lines: &[u8]) -> Vec<Option<u32>> {
        let raw = RawBatch::Lines {
            data: lines.to_vec(),
            first_line: 1,
        };
        let parsed = self.extractor.parse_batch(0, raw, &mut self.scratch);
        let n_keys = parsed.keys.len() / parsed.events.len().max(1);
        (0..parsed.events.len())
            .map(|i| {
                if parsed.events[i].rejection.is_some() {
                    return None;
                }
                self.order
                    .iter()
                    .map(|&k| &parsed.keys[i * n_keys + k])
                    .find(|key| key.present)
                    .map(|key| sluice_core::group_of(key.hash))
            })
            .collect()
    }
}

/// The serving engine: one logical shard over the configured state backend.
#[derive(Debug)]
pub struct ServeEngine {
    plan: Arc<Plan>,
    extractor: Extractor,
    scratch: ParseScratch,
    router: Router,
    backend: Backend,
    layout: OutputLayout,
    pool: BufferPool,
    source: String,
    seq: u64,
    next_line: u64,
}

impl ServeEngine {
    /// An engine for `plan` with its state in `state`; `source` names the records in dead
    /// letters (for example `http`).
    pub fn new(
        plan: Plan,
        time_field: &str,
        time_format: TimeFormat,
        state: &StateConfig,
        source: &str,
    ) -> Result<Self> {
        let backend = Backend::open(&plan, state, 0, 1, Vec::new(), i64::MIN)?;
        let plan = Arc::new(plan);
        Ok(ServeEngine {
            extractor: Extractor::new(&plan, time_field, time_format),
            scratch: ParseScratch::default(),
            router: Router::new(1, plan.lateness_ms).with_links(&plan, None, state)?,
            layout: OutputLayout::new(&plan),
            plan,
            backend,
            pool: BufferPool::new(4),
            source: source.to_owned(),
            seq: 0,
            next_line: 1,
        })
    }

    /// Keys held in state (for a remote backend: in its local cache).
    pub fn live_keys(&self) -> usize {
        self.backend.live_keys()
    }

    /// Round trips, commands, conflicts and cache hits of a remote state, so far.
    pub fn traffic(&self) -> Option<crate::state::redis::Traffic> {
        self.backend.traffic()
    }

    /// Processes JSONL records (each line one record), in order: each is enriched and added
    /// to state, or rejected with a dead letter, exactly as `sluice run` would. Records are
    /// numbered on from the previous batches, for the dead letters' `line`.
    pub fn process(&mut self, mut lines: Vec<u8>) -> Result<Processed> {
        if lines.last().is_some_and(|&b| b != b'\n') {
            lines.push(b'\n');
        }
        let raw = RawBatch::Lines {
            data: lines,
            first_line: self.next_line,
        };
        let parsed = self.extractor.parse_batch(self.seq, raw, &mut self.scratch);
        self.seq += 1;
        self.next_line += parsed.events.len() as u64;
        let routed = self.router.route(parsed, self.plan.keys.len())?;
        let values = crate::dataflow::shard::process(&self.plan, &mut self.backend, &routed, 0)?;
        let hub_nulls = routed.link_overflows;
        let job = FormatJob {
            batch: Arc::new(routed),
            results: vec![values],
        };
        let mut outcomes = Vec::new();
        let formatted = format_batch(
            &self.plan,
            &self.layout,
            None,
            &self.source,
            &self.pool,
            job,
            |w| outcomes.push(w),
        );
        Ok(Processed {
            events: formatted.events,
            dead: formatted.dead,
            outcomes,
            hub_nulls,
        })
    }

    /// A feature query: the values of every feature whose `by` fields are all in `given`, as
    /// of `at` (default: each key's newest event time), without adding an event. The global
    /// key (`by = []`) answers a query that gives no key field at all, and only such a query:
    /// a query for an entity does not also return the global features, and a misspelt key
    /// field is still an error, not an answer for the global key.
    pub fn query(
        &mut self,
        given: &[(String, KeyValue)],
        at: Option<i64>,
    ) -> Result<std::result::Result<Vec<KeyFeatures>, QueryError>> {
        if let (Some(at), Some(newest)) = (at, self.router.newest()) {
            let oldest = newest.saturating_sub(self.plan.lateness_ms);
            if at < oldest {
                return Ok(Err(QueryError::TooOld { oldest }));
            }
        }
        let plan = Arc::clone(&self.plan);
        let mut answers = Vec::new();
        let mut key = Vec::new();
        for (k, spec) in plan.keys.iter().enumerate() {
            if !encode_given(&spec.by, given, &mut key) {
                continue;
            }
            let mut values = vec![FeatureValue::Null; spec.features.len()];
            let hash = sluice_core::key_hash(&key);
            let used = self.backend.peek(&plan, k, hash, &key, at, &mut values)?;
            answers.push(KeyFeatures {
                text: self.backend.take_text(),
                by: spec.by.clone(),
                at: used,
                // Hidden parts of StreamFQL features are not features of the pipeline.
                features: spec
                    .features
                    .iter()
                    .zip(values)
                    .filter(|(f, _)| !plan.hidden.contains(f))
                    .map(|(&f, v)| (plan.features[f].name.clone(), v))
                    .collect(),
            });
        }
        self.query_relations(given, at, &mut answers)?;
        if answers.is_empty() {
            let mut valid: Vec<Vec<String>> = plan.keys.iter().map(|k| k.by.clone()).collect();
            for r in &plan.relations {
                let by: Vec<String> = r.by.iter().map(|&f| plan.fields[f].clone()).collect();
                if !valid.contains(&by) {
                    valid.push(by);
                }
            }
            return Ok(Err(QueryError::NoKey { valid }));
        }
        Ok(Ok(answers))
    }

    /// Adds the relation features whose `by` fields are all in `given` to `answers`: to the
    /// answer with the same `by` (at its time), or to a new one (at `at`, default the
    /// entity's newest link). Features stay in the pipeline's order.
    fn query_relations(
        &mut self,
        given: &[(String, KeyValue)],
        at: Option<i64>,
        answers: &mut Vec<KeyFeatures>,
    ) -> Result<()> {
        let plan = Arc::clone(&self.plan);
        let Some(stage) = self.router.links_mut() else {
            return Ok(());
        };
        let mut key = Vec::new();
        for (i, r) in plan.relations.iter().enumerate() {
            if plan.hidden.contains(&r.feature) {
                continue;
            }
            let by: Vec<String> = r.by.iter().map(|&f| plan.fields[f].clone()).collect();
            if !encode_given(&by, given, &mut key) {
                continue;
            }
            let slot = match answers.iter().position(|a| a.by == by) {
                Some(slot) => slot,
                None => {
                    answers.push(KeyFeatures {
                        by,
                        at,
                        features: Vec::new(),
                        text: Vec::new(),
                    });
                    answers.len() - 1
                }
            };
            let answer = &mut answers[slot];
            let (value, used) = stage.query(i, &key, answer.at)?;
            if answer.at.is_none() {
                answer.at = used;
            }
            answer
                .features
                .push((plan.features[r.feature].name.clone(), value));
            let position = |name: &str| plan.features.iter().position(|f| f.name == name);
            answer.features.sort_by_key(|(name, _)| position(name));
        }
        Ok(())
    }
}
