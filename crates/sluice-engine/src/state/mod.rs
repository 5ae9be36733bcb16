//! The state-backend seam: where the registers of each key live.
//!
//! A shard hands its backend the updates of one batch in input order and gets the feature
//! values back; the window math itself ([`KeyState`](sluice_core::KeyState)) is shared by
//! every backend. Batches (not single events) cross the seam so that a remote backend can
//! pipeline a whole batch per node. Backends are a closed set chosen in one place
//! ([`Backend`]), keeping the hot path monomorphic.

mod memory;
pub(crate) mod prefetch;
pub mod redis;
pub(crate) mod spill;

use sluice_core::{FeatureValue, FieldObs, Plan};

use crate::checkpoint::{GroupSnapshot, ShardSink};
use crate::error::{Error, Result};
pub(crate) use memory::peek_state;
pub use memory::MemoryBackend;
use redis::{RedisBackend, RedisOptions, Traffic};
pub use spill::EmbeddedOptions;
use spill::Spill;

/// One event's update of one key.
#[derive(Debug, Clone, Copy)]
pub struct Update<'a> {
    /// Index of the key spec in the plan.
    pub key_spec: usize,
    /// Hash of the encoded key ([`sluice_core::key_hash`]).
    pub hash: u64,
    /// The key group holding the key: `hash mod G` ([`sluice_core::group_of`]), or its
    /// partition's group when state follows the partitions of the source
    /// ([`sluice_core::partition_group`]).
    pub group: u32,
    /// The encoded key.
    pub key: &'a [u8],
    /// Event time in epoch milliseconds.
    pub ts: i64,
    /// The oldest event time a later event may have (newest time seen minus lateness).
    pub floor: i64,
    /// The event's `of` fields, indexed like the plan's fields.
    pub fields: &'a [FieldObs<'a>],
    /// The filters the event matched: bit `i` for [`sluice_core::Plan::filters`]`[i]`.
    pub matched: u64,
    /// The token of the event's id ([`sluice_core::id_token`]), when the pipeline names an
    /// `[event] id` and the event has one.
    pub id: Option<(u64, u64)>,
}

/// Where the registers of keys live.
pub trait StateBackend: Send {
    /// Applies `updates` in order, appending to `out` the values of each update's key spec
    /// features (`plan.keys[u.key_spec].features.len()` values per update).
    fn apply(
        &mut self,
        plan: &Plan,
        updates: &[Update<'_>],
        out: &mut Vec<FeatureValue>,
    ) -> Result<()>;

    /// Number of keys held.
    fn live_keys(&self) -> usize;

    /// Takes the text that the [`FeatureValue::Text`] values written since the last call point
    /// into (kept strings of `first`, `last` and `lag`).
    fn take_text(&mut self) -> Vec<u8>;

    /// A feature query: writes into `out` the values of key spec `key_spec`'s features for
    /// `key` at `at` (default: the key's newest event time), without adding an event. Returns
    /// the time used; `None` when neither `at` was given nor the key holds anything (the
    /// values are then those of an empty window).
    fn peek(
        &mut self,
        plan: &Plan,
        key_spec: usize,
        hash: u64,
        key: &[u8],
        at: Option<i64>,
        out: &mut [FeatureValue],
    ) -> Result<Option<i64>>;

    /// Round trips and commands sent to a remote store, if any.
    fn traffic(&self) -> Option<Traffic> {
        None
    }

    /// Encodes every key group this backend holds into `sink`, for a checkpoint. A backend
    /// whose state is durable elsewhere refuses.
    fn snapshot<S: ShardSink>(&self, plan: &Plan, sink: &mut S) -> Result<()> {
        let _ = (plan, sink);
        Err(Error::Checkpoint(
            "checkpoints need local state; this backend's state is durable elsewhere".into(),
        ))
    }

    /// Keys in a disk tier and moves between memory and disk, if the backend has a tier.
    fn tier_stats(&self) -> Option<TierStats> {
        None
    }
}

/// The disk tier of the embedded backend, as counted so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TierStats {
    /// Keys on disk now.
    pub on_disk: usize,
    /// Keys moved from memory to disk.
    pub evictions: u64,
    /// Keys moved from disk back to memory.
    pub loads: u64,
}

/// Where a pipeline keeps its state.
#[derive(Debug, Clone, Default)]
pub enum StateConfig {
    /// In process memory.
    #[default]
    Memory,
    /// In a Redis Cluster (or a single Redis).
    Redis(RedisOptions),
    /// In memory up to a budget, the rest in an embedded LSM store on disk.
    Embedded(EmbeddedOptions),
}

impl Backend {
    /// The backend of shard `shard` of `shards` for `config`, holding the restored key groups
    /// `groups` (local state only) with `floor` as the oldest time a later event may have.
    /// Remote backends connect here, so a bad address fails before any thread starts.
    /// Restored registers that do not fit the plan are an error
    /// ([`MemoryBackend::try_restore`]).
    pub fn open(
        plan: &Plan,
        config: &StateConfig,
        shard: usize,
        shards: usize,
        groups: Vec<GroupSnapshot>,
        floor: i64,
    ) -> Result<Backend> {
        Ok(match config {
            StateConfig::Memory => {
                Backend::Memory(MemoryBackend::try_restore(plan, groups, floor)?)
            }
            StateConfig::Embedded(options) => {
                let per_shard = EmbeddedOptions {
                    memory_cap: options.memory_cap / shards.max(1),
                    ..options.clone()
                };
                Backend::Memory(
                    MemoryBackend::try_restore(plan, groups, floor)?
                        .with_spill(Spill::open(&per_shard, shard)?)?,
                )
            }
            StateConfig::Redis(options) => {
                if !groups.is_empty() {
                    return Err(Error::Checkpoint(
                        "Redis state is durable in Redis; nothing to restore into it".into(),
                    ));
                }
                Backend::Redis(Box::new(RedisBackend::connect(
                    plan,
                    options,
                    shard as u64,
                )?))
            }
        })
    }
}

/// The state backends, chosen from configuration in one place.
#[derive(Debug)]
pub enum Backend {
    /// In-process memory (the default).
    Memory(MemoryBackend),
    /// A Redis Cluster shared by every process of the pipeline.
    Redis(Box<RedisBackend>),
}

impl StateBackend for Backend {
    fn apply(
        &mut self,
        plan: &Plan,
        updates: &[Update<'_>],
        out: &mut Vec<FeatureValue>,
    ) -> Result<()> {
        match self {
            Backend::Memory(m) => m.apply(plan, updates, out),
            Backend::Redis(r) => r.apply(plan, updates, out),
        }
    }

    fn live_keys(&self) -> usize {
        match self {
            Backend::Memory(m) => m.live_keys(),
            Backend::Redis(r) => r.live_keys(),
        }
    }

    fn take_text(&mut self) -> Vec<u8> {
        match self {
            Backend::Memory(m) => m.take_text(),
            Backend::Redis(r) => r.take_text(),
        }
    }

    fn peek(
        &mut self,
        plan: &Plan,
        key_spec: usize,
        hash: u64,
        key: &[u8],
        at: Option<i64>,
        out: &mut [FeatureValue],
    ) -> Result<Option<i64>> {
        match self {
            Backend::Memory(m) => m.peek(plan, key_spec, hash, key, at, out),
            Backend::Redis(r) => r.peek(plan, key_spec, hash, key, at, out),
        }
    }

    fn traffic(&self) -> Option<Traffic> {
        match self {
            Backend::Memory(_) => None,
            Backend::Redis(r) => Some(r.traffic()),
        }
    }

    fn snapshot<S: ShardSink>(&self, plan: &Plan, sink: &mut S) -> Result<()> {
        match self {
            Backend::Memory(m) => StateBackend::snapshot(m, plan, sink),
            Backend::Redis(r) => r.snapshot(plan, sink),
        }
    }

    fn tier_stats(&self) -> Option<TierStats> {
        match self {
            Backend::Memory(m) => m.tier_stats(),
            Backend::Redis(r) => r.tier_stats(),
        }
    }
}
