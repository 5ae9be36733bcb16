//! The embedded backend's disk tier: keys beyond a memory budget live in an embedded LSM store
//! (fjall), and come back into memory when an event needs them.
//!
//! The memory backend stays the working set. Every so often it estimates the memory its keys
//! take (`KeyState::size` buckets and entries at 64 bytes, plus 768 bytes per key); above
//! `memory_cap` it moves the coldest keys (oldest newest event) to the store until it is back
//! under three quarters of the cap. A key an event needs that is not in memory is looked up in
//! the store first. Results are therefore those of the memory backend (tested).
//!
//! The store is scratch space for one run: durability comes from checkpoints, whose shard
//! files hold every key, in memory or on disk, in the same format.

use std::path::PathBuf;

use sluice_core::wire::{Wire, Writer};
use sluice_core::{KeySpec, KeyState};

use crate::error::{Error, Result};

/// Settings of the embedded backend.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Directory for the stores (one per shard and run, deleted at the end).
    pub dir: PathBuf,
    /// Memory budget for each shard's keys, in bytes.
    pub memory_cap: usize,
}

/// Estimated memory of one key: its table entry and registers (about 700 bytes for a key of
/// the benchmark pipeline) plus 64 bytes per bucket or entry held.
pub fn estimated_bytes(state: &KeyState, key_len: usize) -> usize {
    768 + key_len + 64 * state.size()
}

/// A key in the store.
#[derive(Debug)]
pub struct SpilledKey {
    /// Its key spec.
    pub spec: usize,
    /// The encoded key.
    pub key: Vec<u8>,
    /// Its registers in their binary form (`sluice_core::wire`), as in a checkpoint.
    pub state: Vec<u8>,
}

/// One shard's store of spilled keys.
pub struct Spill {
    _db: fjall::Database,
    store: fjall::Keyspace,
    /// Budget in bytes.
    pub cap: usize,
    /// Keys currently in the store.
    pub spilled: usize,
    /// Keys moved to the store so far.
    pub evictions: u64,
    /// Keys read back from the store so far.
    pub loads: u64,
}

impl std::fmt::Debug for Spill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spill")
            .field("cap", &self.cap)
            .field("spilled", &self.spilled)
            .field("evictions", &self.evictions)
            .field("loads", &self.loads)
            .finish()
    }
}

fn store_error(e: impl std::fmt::Display) -> Error {
    Error::Backend {
        backend: "embedded",
        message: e.to_string(),
    }
}

/// Decodes a stored key's registers and checks them against its key spec.
fn decode(
    group: u32,
    spec: usize,
    key_spec: &KeySpec,
    key: &[u8],
    value: &[u8],
) -> Result<KeyState> {
    KeyState::from_bytes(key_spec, value).map_err(|e| {
        store_error(format!(
            "key group {group}, key spec {spec}, key `{}`: cannot decode its registers from the disk tier: {e}",
            key.escape_ascii()
        ))
    })
}

/// The store key of a key: its group, key spec, then the encoded key (so that a group's keys
/// are one prefix).
fn store_key(group: u32, spec: usize, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 2);
    k.push(group as u8);
    k.push(spec as u8);
    k.extend_from_slice(key);
    k
}

impl Spill {
    /// Opens a fresh store for shard `shard` under `options.dir`.
    pub fn open(options: &EmbeddedOptions, shard: usize) -> Result<Self> {
        let dir = options
            .dir
            .join(format!("shard-{shard}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // The store's own buffers: a quarter of the budget each for its block cache, its
        // memtable and its write buffer, but at least 8 MB (smaller memtables flush into so many
        // tiny tables that compaction falls behind). fjall's default background threads (one
        // per core): with a single one, flushes fell behind the churn and memory grew to
        // several times the budget.
        let quarter = (options.memory_cap as u64 / 4).max(8 << 20);
        #[allow(deprecated)] // the write-buffer bound is hidden in fjall 3 but works
        let builder = fjall::Database::builder(&dir)
            .temporary(true)
            .cache_size(quarter)
            .max_write_buffer_size(Some(quarter))
            .max_journaling_size(64 << 20);
        let db = builder
            .open()
            .map_err(|e| store_error(format!("cannot open {}: {e}", dir.display())))?;
        let store = db
            .keyspace("keys", || {
                fjall::KeyspaceCreateOptions::default().max_memtable_size(quarter)
            })
            .map_err(store_error)?;
        Ok(Spill {
            _db: db,
            store,
            cap: options.memory_cap,
            spilled: 0,
            evictions: 0,
            loads: 0,
        })
    }

    /// Moves a key's registers to the store.
    pub fn put(&mut self, group: u32, spec: usize, key: &[u8], state: &KeyState) -> Result<()> {
        if spec > usize::from(u8::MAX) {
            return Err(store_error("more than 256 key specs"));
        }
        let mut value = Vec::new();
        state.put(&mut Writer::new(&mut value, 0));
        self.store
            .insert(store_key(group, spec, key), value)
            .map_err(store_error)?;
        self.spilled += 1;
        self.evictions += 1;
        Ok(())
    }

    /// Takes a key's registers out of the store, if they are there: key spec number `spec`
    /// of the plan, which is `key_spec`. Registers that do not decode or do not fit
    /// `key_spec` are an error naming the key.
    pub fn take(
        &mut self,
        group: u32,
        spec: usize,
        key_spec: &KeySpec,
        key: &[u8],
    ) -> Result<Option<KeyState>> {
        if self.spilled == 0 {
            return Ok(None);
        }
        let k = store_key(group, spec, key);
        let Some(value) = self.store.get(&k).map_err(store_error)? else {
            return Ok(None);
        };
        let state = decode(group, spec, key_spec, key, &value)?;
        self.store.remove(k).map_err(store_error)?;
        self.spilled -= 1;
        self.loads += 1;
        Ok(Some(state))
    }

    /// A copy of a key's registers, if they are in the store (left there); as
    /// [`Spill::take`].
    pub fn peek(
        &self,
        group: u32,
        spec: usize,
        key_spec: &KeySpec,
        key: &[u8],
    ) -> Result<Option<KeyState>> {
        if self.spilled == 0 {
            return Ok(None);
        }
        let Some(value) = self
            .store
            .get(store_key(group, spec, key))
            .map_err(store_error)?
        else {
            return Ok(None);
        };
        decode(group, spec, key_spec, key, &value).map(Some)
    }

    /// Whether any key of `group` is in the store.
    pub fn has_group(&self, group: u32) -> Result<bool> {
        if self.spilled == 0 {
            return Ok(false);
        }
        match self.store.prefix([group as u8]).next() {
            None => Ok(false),
            Some(kv) => kv.key().map(|_| true).map_err(store_error),
        }
    }

    /// The spilled keys of `group`, in store order.
    pub fn group(&self, group: u32) -> Result<Vec<SpilledKey>> {
        let mut out = Vec::new();
        if self.spilled == 0 {
            return Ok(out);
        }
        for kv in self.store.prefix([group as u8]) {
            let (k, v) = kv.into_inner().map_err(store_error)?;
            out.push(SpilledKey {
                spec: usize::from(k[1]),
                key: k[2..].to_vec(),
                state: v.to_vec(),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use sluice_core::{Agg, FeatureSpec, FeatureValue, FieldObs, Plan, Scratch};

    use super::*;

    fn plan(aggs: &[Agg]) -> Plan {
        let features = aggs
            .iter()
            .enumerate()
            .map(|(i, &agg)| FeatureSpec {
                name: format!("f{i}"),
                agg,
                of: Some("amount".into()),
                by: vec!["user".into()],
                window_ms: 60_000,
                granularity_ms: 1,
                filter: None,
            })
            .collect();
        Plan::new(features, 0).expect("valid")
    }

    #[test]
    fn registers_on_disk_must_fit_the_key_spec() {
        let dir = tempfile::tempdir().expect("temp dir");
        let options = EmbeddedOptions {
            dir: dir.path().to_owned(),
            memory_cap: 1 << 20,
        };
        let mut spill = Spill::open(&options, 0).expect("opens");
        let (sum, distinct) = (plan(&[Agg::Sum]), plan(&[Agg::DistinctCount]));
        let spec = &sum.keys[0];
        let mut state = KeyState::new(spec);
        let fields = [FieldObs {
            present: true,
            num: 1.5,
            bytes: b"1.5",
        }];
        let mut out = [FeatureValue::Null];
        state.observe(
            spec,
            1_000,
            &fields,
            0,
            0,
            &mut Scratch::default(),
            &mut out,
        );
        spill.put(7, 0, b"u1", &state).expect("stores");
        assert!(spill.peek(7, 0, spec, b"u1").expect("fits").is_some());
        let e = spill
            .take(7, 0, &distinct.keys[0], b"u1")
            .expect_err("another key spec")
            .to_string();
        assert!(
            e.contains("key group 7, key spec 0, key `u1`: cannot decode its registers from the disk tier: fewer distinct series than in the plan"),
            "{e}"
        );
        assert!(spill.take(7, 0, spec, b"u1").expect("fits").is_some());
    }
}
