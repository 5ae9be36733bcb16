//! Registers in process memory, one hash table per key group and key spec; with a disk tier
//! ([`super::spill`]) this is also the embedded backend.

use hashbrown::hash_table::Entry;
use hashbrown::HashTable;
use sluice_core::{group_of, key_hash, FeatureValue, KeySpec, KeyState, Plan, Scratch, KEY_GROUPS};
use smallvec::SmallVec;

use super::prefetch::prefetch;
use super::spill::{estimated_bytes, Spill};
use super::{StateBackend, TierStats, Update};
use crate::checkpoint::{GroupSnapshot, GroupSnapshotRef, ShardSink};
use crate::error::{Error, Result};

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
    scratch: Scratch,
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
            scratch: Scratch::default(),
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
    ///
    /// Every key's registers are checked against the plan ([`KeyState::check`]): registers
    /// that do not fit it (another plan's, or damaged before their checksum was taken), a key
    /// spec the plan does not have, or a key stored twice is an error naming the key group,
    /// the key spec and the key.
    pub fn try_restore(plan: &Plan, groups: Vec<GroupSnapshot>, floor: i64) -> Result<Self> {
        Self::restore_checked(plan, groups, floor, Err)
    }

    /// [`MemoryBackend::try_restore`] for groups known to come from this plan (for example
    /// encoded by a backend of it in the same process): a key that does not fit the plan is
    /// left out, with a warning, rather than failing.
    pub fn restore(plan: &Plan, groups: Vec<GroupSnapshot>, floor: i64) -> Self {
        let restored = Self::restore_checked(plan, groups, floor, |e| {
            tracing::warn!("restore: {e}; the key is left out");
            Ok::<(), std::convert::Infallible>(())
        });
        match restored {
            Ok(backend) => backend,
            Err(never) => match never {},
        }
    }

    /// Restores `groups`, handing every key that does not fit the plan to `misfit`, which
    /// stops the restore with its error or skips the key.
    fn restore_checked<E>(
        plan: &Plan,
        groups: Vec<GroupSnapshot>,
        floor: i64,
        mut misfit: impl FnMut(Error) -> std::result::Result<(), E>,
    ) -> std::result::Result<Self, E> {
        let mut backend = MemoryBackend {
            floor,
            ..MemoryBackend::default()
        };
        for snapshot in groups {
            let g = snapshot.group;
            let Some(slot) = backend.groups.get_mut(g as usize) else {
                misfit(restore_error(g, None, None, "no such key group"))?;
                continue;
            };
            // A group may come in several parts (never from a consistent checkpoint, but
            // merging is as cheap as replacing).
            let group = slot.get_or_insert_with(|| {
                Box::new(GroupState {
                    tables: plan.keys.iter().map(|_| HashTable::new()).collect(),
                })
            });
            for (k, keys) in snapshot.tables.into_iter().enumerate() {
                let (Some(spec), Some(table)) = (plan.keys.get(k), group.tables.get_mut(k)) else {
                    if !keys.is_empty() {
                        misfit(restore_error(
                            g,
                            Some(k),
                            None,
                            "the plan has no such key spec",
                        ))?;
                    }
                    continue;
                };
                for (key, state) in keys {
                    let hash = key_hash(&key);
                    if let Err(e) = state.check(spec) {
                        let message = format!("the registers do not fit the plan: {e}");
                        misfit(restore_error(g, Some(k), Some(&key), &message))?;
                        continue;
                    }
                    match table.entry(
                        hash,
                        |e| e.hash == hash && e.key.as_slice() == key,
                        |e| e.hash,
                    ) {
                        Entry::Occupied(_) => {
                            misfit(restore_error(
                                g,
                                Some(k),
                                Some(&key),
                                "the key is stored twice",
                            ))?;
                        }
                        Entry::Vacant(v) => {
                            v.insert(KeyEntry {
                                hash,
                                key: SmallVec::from_vec(key),
                                state: Box::new(state),
                            });
                            backend.live += 1;
                        }
                    }
                }
            }
        }
        Ok(backend)
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

    fn take_text(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.scratch.values.text)
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
            return Ok(peek_state(
                &plan.keys[key_spec],
                Some(state),
                at,
                &mut self.scratch,
                out,
            ));
        }
        let on_disk = match self.spill.as_ref() {
            Some(spill) => spill.peek(group, key_spec, &plan.keys[key_spec], key)?,
            None => None,
        };
        Ok(peek_state(
            &plan.keys[key_spec],
            on_disk.as_ref(),
            at,
            &mut self.scratch,
            out,
        ))
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

/// A key of a checkpoint that cannot be restored: where it is and why.
fn restore_error(group: u32, spec: Option<usize>, key: Option<&[u8]>, why: &str) -> Error {
    let mut at = format!("key group {group}");
    if let Some(k) = spec {
        at.push_str(&format!(", key spec {k}"));
    }
    if let Some(key) = key {
        at.push_str(&format!(", key `{}`", key.escape_ascii()));
    }
    Error::Checkpoint(format!("cannot restore {at}: {why}"))
}

/// [`StateBackend::peek`] on a key's registers, if any.
pub(crate) fn peek_state(
    spec: &KeySpec,
    state: Option<&KeyState>,
    at: Option<i64>,
    scratch: &mut Scratch,
    out: &mut [FeatureValue],
) -> Option<i64> {
    let at = at.or_else(|| state.and_then(KeyState::newest));
    match state {
        Some(state) => state.peek(spec, at.unwrap_or(i64::MIN), scratch, out),
        None => KeyState::new(spec).peek(spec, at.unwrap_or(i64::MIN), scratch, out),
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
                    loaded = spill.take(u.group, u.key_spec, spec, u.key)?;
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
                u.matched,
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use sluice_core::{Agg, FeatureSpec, FieldObs, KeyEncoder};

    use super::*;
    use crate::checkpoint;

    /// Features by `user` over an hour.
    fn plan(features: &[(&str, Agg, Option<&str>)]) -> Plan {
        let features = features
            .iter()
            .map(|&(name, agg, of)| FeatureSpec {
                name: name.into(),
                agg,
                of: of.map(Into::into),
                by: vec!["user".into()],
                window_ms: 3_600_000,
                granularity_ms: 1,
                filter: None,
            })
            .collect();
        Plan::new(features, 0).expect("valid")
    }

    fn count_and_max() -> Plan {
        plan(&[("n", Agg::Count, None), ("m", Agg::Max, Some("amount"))])
    }

    fn count_only() -> Plan {
        plan(&[("n", Agg::Count, None)])
    }

    /// A backend holding `users` keys of key spec 0, one event each.
    fn backend_with_keys(plan: &Plan, users: u32) -> MemoryBackend {
        let fields = vec![
            FieldObs {
                present: true,
                num: 2.5,
                bytes: b"2.5",
            };
            plan.fields.len()
        ];
        let keys: Vec<Vec<u8>> = (0..users)
            .map(|u| {
                let mut k = Vec::new();
                KeyEncoder::new(&mut k).str(&format!("u{u}"));
                k
            })
            .collect();
        let updates: Vec<Update<'_>> = keys
            .iter()
            .enumerate()
            .map(|(i, key)| {
                let hash = key_hash(key);
                Update {
                    key_spec: 0,
                    hash,
                    group: group_of(hash),
                    key,
                    ts: 1_000 + i as i64,
                    floor: 0,
                    fields: &fields,
                    matched: 0,
                    id: None,
                }
            })
            .collect();
        let mut backend = MemoryBackend::default();
        backend
            .apply(plan, &updates, &mut Vec::new())
            .expect("applies");
        backend
    }

    /// The backend's groups through a checkpoint shard file's bytes.
    fn snapshot(backend: &MemoryBackend) -> Vec<GroupSnapshot> {
        let bytes = checkpoint::encode_shard(&backend.group_refs()).expect("encodes");
        checkpoint::decode_shard(&bytes, Path::new("shard-0.bin")).expect("decodes")
    }

    #[test]
    fn restored_registers_must_fit_the_plan() {
        let taken = backend_with_keys(&count_and_max(), 20);
        let restored =
            MemoryBackend::try_restore(&count_and_max(), snapshot(&taken), 0).expect("same plan");
        assert_eq!(restored.live_keys(), 20);
        // Registers of two series read into a plan of one: an error naming where.
        let e = MemoryBackend::try_restore(&count_only(), snapshot(&taken), 0)
            .expect_err("another plan")
            .to_string();
        for part in [
            "checkpoint: cannot restore key group ",
            ", key spec 0, key `s",
            "the registers do not fit the plan: more numeric series than in the plan",
        ] {
            assert!(e.contains(part), "missing `{part}` in {e}");
        }
        // And the other way round; the lenient restore leaves such keys out.
        let taken = backend_with_keys(&count_only(), 20);
        let e = MemoryBackend::try_restore(&count_and_max(), snapshot(&taken), 0)
            .expect_err("another plan")
            .to_string();
        assert!(e.contains("fewer numeric series than in the plan"), "{e}");
        let lenient = MemoryBackend::restore(&count_and_max(), snapshot(&taken), 0);
        assert_eq!(lenient.live_keys(), 0);
    }

    #[test]
    fn a_key_stored_twice_or_in_an_unknown_key_spec_is_an_error() {
        let plan = count_only();
        let taken = backend_with_keys(&plan, 3);
        let mut twice = snapshot(&taken);
        let first = twice[0].tables[0][0].clone();
        twice[0].tables[0].push(first);
        let e = MemoryBackend::try_restore(&plan, twice, 0).expect_err("twice");
        assert!(e.to_string().contains("the key is stored twice"), "{e}");
        let mut extra = snapshot(&taken);
        let first = extra[0].tables[0][0].clone();
        extra[0].tables.push(vec![first]);
        let e = MemoryBackend::try_restore(&plan, extra, 0).expect_err("extra");
        assert!(
            e.to_string()
                .contains(", key spec 1: the plan has no such key spec"),
            "{e}"
        );
    }
}
