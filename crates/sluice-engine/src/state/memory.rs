//! Registers in process memory, one hash table per key group and key spec; with a disk tier
//! ([`super::spill`]) this is also the embedded backend.

use hashbrown::HashTable;
use sluice_core::{
    group_of, key_hash, DistinctScratch, FeatureValue, KeySpec, KeyState, Plan, KEY_GROUPS,
};
use smallvec::SmallVec;

use super::prefetch::prefetch;
use super::spill::{estimated_bytes, Spill};
use super::{StateBackend, TierStats, Update};
use crate::checkpoint::{GroupSnapshot, GroupSnapshotRef, ShardSink};
use crate::error::Result;

/// One key: its hash, the key inline (most encoded keys are short) and its registers.
///
/// The registers are boxed: a table entry stays small (48 bytes), so growing a table moves
/// little memory, and the registers are allocated once and never moved. The box costs one more
/// cache miss per update, which the prefetch hides.
#[derive(Debug)]
struct KeyEntry {
    hash: u64,
    key: SmallVec<[u8; 24]>,
    state: Box<KeyState>,
}

/// Keys of one key group, one table per key spec.
#[derive(Debug, Default)]
struct GroupState {
    tables: Vec<HashTable<KeyEntry>>,
}

/// Registers in process memory, organised by key group so that a group can be snapshotted or
/// handed to another shard as a unit.
#[derive(Debug)]
pub struct MemoryBackend {
    groups: Vec<Option<Box<GroupState>>>,
    scratch: DistinctScratch,
    live: usize,
    since_sweep: usize,
    floor: i64,
    /// The disk tier of the embedded backend.
    spill: Option<Box<Spill>>,
    since_check: usize,
}

impl Default for MemoryBackend {
    fn default() -> Self {
        MemoryBackend {
            groups: (0..KEY_GROUPS).map(|_| None).collect(),
            scratch: DistinctScratch::default(),
            live: 0,
            since_sweep: 0,
            floor: i64::MIN,
            spill: None,
            since_check: 0,
        }
    }
}

/// How many updates ahead a key's state is prefetched.
const PREFETCH_DISTANCE: usize = 8;

/// Fewest updates between two sweeps for cold keys.
const MIN_SWEEP_INTERVAL: usize = 1 << 16;

impl MemoryBackend {
    /// The same state with a disk tier: keys beyond its memory budget move to it (the
    /// embedded backend). Applies the budget at once (a restored state may exceed it).
    pub fn with_spill(mut self, spill: Spill) -> Result<Self> {
        self.spill = Some(Box::new(spill));
        self.enforce_cap()?;
        Ok(self)
    }

    /// Moves the coldest keys to the disk tier while memory is over budget.
    fn enforce_cap(&mut self) -> Result<()> {
        self.since_check = 0;
        let Some(spill) = self.spill.as_mut() else {
            return Ok(());
        };
        let mut total = 0usize;
        let mut keys = Vec::new();
        for (g, group) in self.groups.iter().enumerate() {
            let Some(group) = group else { continue };
            for (k, table) in group.tables.iter().enumerate() {
                for e in table {
                    let bytes = estimated_bytes(&e.state, e.key.len());
                    total += bytes;
                    keys.push((e.state.newest().unwrap_or(i64::MIN), g, k, e.hash, bytes));
                }
            }
        }
        if total <= spill.cap {
            return Ok(());
        }
        keys.sort_unstable_by_key(|&(newest, ..)| newest);
        let target = spill.cap / 4 * 3;
        for (_, g, k, hash, bytes) in keys {
            if total <= target {
                break;
            }
            let Some(group) = self.groups[g].as_mut() else {
                continue;
            };
            let table = &mut group.tables[k];
            // Several keys may share a hash: move them all (each is written under its key).
            while let Ok(entry) = table.find_entry(hash, |e| e.hash == hash) {
                let (e, _) = entry.remove();
                spill.put(g as u32, k, &e.key, &e.state)?;
                self.live -= 1;
            }
            total -= bytes;
        }
        Ok(())
    }

    /// Encodes every key, in memory or spilled, as a checkpoint shard file's body (after its
    /// header).
    fn encode_snapshot(&self, plan: &Plan, sink: &mut impl ShardSink) -> Result<()> {
        let Some(spill) = self.spill.as_ref().filter(|s| s.spilled > 0) else {
            return crate::checkpoint::encode_groups(&self.group_refs(), sink);
        };
        // Only groups holding keys: a shard's file must not mention another shard's groups.
        // The keys on disk are read one group at a time, while writing, and copied as stored.
        let mut groups = Vec::new();
        for g in 0..KEY_GROUPS {
            let cached = self.groups[g as usize]
                .as_ref()
                .is_some_and(|group| group.tables.iter().any(|t| !t.is_empty()));
            if cached || spill.has_group(g)? {
                groups.push(g);
            }
        }
        sink.groups(groups.len());
        for g in groups {
            let spilled = spill.group(g)?;
            sink.group(g, plan.keys.len());
            for k in 0..plan.keys.len() {
                let cached = self.groups[g as usize]
                    .as_ref()
                    .and_then(|group| group.tables.get(k));
                let on_disk = spilled.iter().filter(|d| d.spec == k);
                sink.table(cached.map_or(0, |t| t.len()) + on_disk.clone().count());
                for e in cached.into_iter().flatten() {
                    sink.key(&e.key, &e.state)?;
                }
                for d in on_disk {
                    sink.key_encoded(&d.key, &d.state)?;
                }
            }
        }
        Ok(())
    }

    /// A borrowed snapshot of every non-empty key group, for a checkpoint.
    pub fn group_refs(&self) -> Vec<GroupSnapshotRef<'_>> {
        self.groups
            .iter()
            .enumerate()
            .filter_map(|(g, group)| {
                let group = group.as_ref()?;
                Some(GroupSnapshotRef {
                    group: g as u32,
                    tables: group
                        .tables
                        .iter()
                        .map(|t| t.iter().map(|e| (e.key.as_slice(), &*e.state)).collect())
                        .collect(),
                })
            })
            .filter(|g| g.tables.iter().any(|t| !t.is_empty()))
            .collect()
    }

    /// Memory state holding `groups` (restored from a checkpoint), as of the stream's `floor`.
    pub fn restore(plan: &Plan, groups: Vec<GroupSnapshot>, floor: i64) -> Self {
        let mut backend = MemoryBackend {
            floor,
            ..MemoryBackend::default()
        };
        for snapshot in groups {
            let Some(slot) = backend.groups.get_mut(snapshot.group as usize) else {
                continue;
            };
            // A group may come in several parts (never from a consistent checkpoint, but
            // merging is as cheap as replacing).
            let group = slot.get_or_insert_with(|| {
                Box::new(GroupState {
                    tables: plan.keys.iter().map(|_| HashTable::new()).collect(),
                })
            });
            for (table, keys) in group.tables.iter_mut().zip(snapshot.tables) {
                for (key, state) in keys {
                    let hash = key_hash(&key);
                    backend.live += 1;
                    table.insert_unique(
                        hash,
                        KeyEntry {
                            hash,
                            key: SmallVec::from_vec(key),
                            state: Box::new(state),
                        },
                        |e| e.hash,
                    );
                }
            }
        }
        backend
    }

    /// Drops every key that no future window can reach. Runs after four times as many updates
    /// as there are live keys, so its cost is amortised O(1) per update (a quarter of a key
    /// check), and memory stays within a constant factor of the active keys.
    fn sweep(&mut self, plan: &Plan) {
        let floor = self.floor;
        let mut live = 0;
        for group in self.groups.iter_mut().flatten() {
            for (k, table) in group.tables.iter_mut().enumerate() {
                let spec = &plan.keys[k];
                table.retain(|e| !e.state.is_expired(spec, floor));
                live += table.len();
            }
        }
        self.live = live;
        self.since_sweep = 0;
    }
}

impl StateBackend for MemoryBackend {
    fn apply(
        &mut self,
        plan: &Plan,
        updates: &[Update<'_>],
        out: &mut Vec<FeatureValue>,
    ) -> Result<()> {
        self.apply_updates(plan, updates, out)?;
        self.since_sweep += updates.len();
        if self.since_sweep >= (4 * self.live).max(MIN_SWEEP_INTERVAL) {
            self.sweep(plan);
        }
        if self.spill.is_some() {
            self.since_check += updates.len();
            if self.since_check >= (self.live / 4).max(4) {
                self.enforce_cap()?;
            }
        }
        Ok(())
    }

    fn live_keys(&self) -> usize {
        self.live
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
        let group = group_of(hash);
        let cached = self.groups[group as usize].as_ref().and_then(|g| {
            g.tables[key_spec]
                .find(hash, |e| e.hash == hash && e.key.as_slice() == key)
                .map(|e| &*e.state)
        });
        if let Some(state) = cached {
            return Ok(peek_state(&plan.keys[key_spec], Some(state), at, out));
        }
        let on_disk = match self.spill.as_ref() {
            Some(spill) => spill.peek(group, key_spec, key)?,
            None => None,
        };
        Ok(peek_state(&plan.keys[key_spec], on_disk.as_ref(), at, out))
    }

    fn snapshot<S: ShardSink>(&self, plan: &Plan, sink: &mut S) -> Result<()> {
        self.encode_snapshot(plan, sink)
    }

    fn tier_stats(&self) -> Option<TierStats> {
        self.spill.as_ref().map(|s| TierStats {
            on_disk: s.spilled,
            evictions: s.evictions,
            loads: s.loads,
        })
    }
}

/// [`StateBackend::peek`] on a key's registers, if any.
pub(crate) fn peek_state(
    spec: &KeySpec,
    state: Option<&KeyState>,
    at: Option<i64>,
    out: &mut [FeatureValue],
) -> Option<i64> {
    let at = at.or_else(|| state.and_then(KeyState::newest));
    match state {
        Some(state) => state.peek(spec, at.unwrap_or(i64::MIN), out),
        None => KeyState::new(spec).peek(spec, at.unwrap_or(i64::MIN), out),
    }
    at
}

impl MemoryBackend {
    /// The entry of `u`'s key, or one sharing its hash tag (the table compares only the tag
    /// here, so no entry memory is read).
    #[inline]
    fn candidate(&self, u: &Update<'_>) -> Option<&KeyEntry> {
        let group = self.groups[u.group as usize].as_ref()?;
        group.tables[u.key_spec].iter_hash(u.hash).next()
    }

    /// Starts loading the entry of `u`'s key, without waiting for it.
    #[inline]
    fn prefetch_entry(&self, u: &Update<'_>) {
        if let Some(entry) = self.candidate(u) {
            prefetch(entry, 1);
        }
    }

    /// Starts loading the registers of `u`'s key (its entry was prefetched earlier).
    #[inline]
    fn prefetch_state(&self, u: &Update<'_>) {
        if let Some(entry) = self.candidate(u) {
            prefetch(
                &*entry.state,
                std::mem::size_of::<KeyState>().div_ceil(64).min(8),
            );
        }
    }

    fn apply_updates(
        &mut self,
        plan: &Plan,
        updates: &[Update<'_>],
        out: &mut Vec<FeatureValue>,
    ) -> Result<()> {
        for (i, u) in updates.iter().enumerate() {
            // Two stages: a key's table entry first, then (once that is likely in cache) the
            // registers it points to.
            if let Some(ahead) = updates.get(i + 2 * PREFETCH_DISTANCE) {
                self.prefetch_entry(ahead);
            }
            if let Some(ahead) = updates.get(i + PREFETCH_DISTANCE) {
                self.prefetch_state(ahead);
            }
            let spec = &plan.keys[u.key_spec];
            let group = self.groups[u.group as usize].get_or_insert_with(|| {
                Box::new(GroupState {
                    tables: plan.keys.iter().map(|_| HashTable::new()).collect(),
                })
            });
            let table = &mut group.tables[u.key_spec];
            // With a disk tier, a key not in memory may be there.
            let mut loaded = None;
            if let Some(spill) = self.spill.as_mut() {
                if table
                    .find(u.hash, |e| e.hash == u.hash && e.key.as_slice() == u.key)
                    .is_none()
                {
                    loaded = spill.take(u.group, u.key_spec, u.key)?;
                }
            }
            let entry = table
                .entry(
                    u.hash,
                    |e| e.hash == u.hash && e.key.as_slice() == u.key,
                    |e| e.hash,
                )
                .or_insert_with(|| {
                    self.live += 1;
                    KeyEntry {
                        hash: u.hash,
                        key: SmallVec::from_slice(u.key),
                        state: Box::new(loaded.take().unwrap_or_else(|| KeyState::new(spec))),
                    }
                })
                .into_mut();
            let start = out.len();
            out.resize(start + spec.features.len(), FeatureValue::Null);
            entry.state.observe(
                spec,
                u.ts,
                u.fields,
                u.floor,
                &mut self.scratch,
                &mut out[start..],
            );
            // The latest, not the highest: with lateness per partition the floor goes back
            // when a slower partition shows up, and its keys must not be swept meanwhile.
            self.floor = u.floor;
        }
        Ok(())
    }
}
