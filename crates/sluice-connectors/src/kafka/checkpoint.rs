//! Checkpoints of a Kafka run: exactly-once state and file outputs, and state that follows
//! partitions from process to process.
//!
//! - The keys of each partition live in that partition's key group
//!   ([`sluice_core::partition_group`]), so a checkpoint holds every partition's state apart.
//! - Every process of a group writes its checkpoints under `<dir>/instance-<name>/` of one
//!   shared directory; each manifest records where each of its partitions stood (next offset,
//!   newest event time).
//! - When partitions are assigned, each is positioned at the offset of its newest checkpoint
//!   in the whole directory (any instance's: the highest offset wins), and the run restores
//!   that partition's key group from that checkpoint. A partition no checkpoint holds starts
//!   where the group's committed offset (or `start`) says, with empty state.
//! - Every rebalance ends the run and starts it again from the checkpoints: the outputs are
//!   cut back to this instance's newest checkpoint and the state reloaded. When partitions are
//!   revoked, the process first stops completing checkpoints (the fence), so the next owner
//!   never sees a checkpoint newer than the one it restored.
//!
//! See `docs/kafka.md` for the guarantees.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{Error, Result};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::OwnedMessage;
use rdkafka::{Offset, TopicPartitionList};
use sluice_core::{partition_group, Plan, KEY_GROUPS};
use sluice_engine::checkpoint::{
    self, CheckpointConfig, GroupSnapshot, Manifest, PartitionPosition, SinkPosition,
    SourceCheckpoint,
};
use sluice_engine::{plan_fingerprint, Position, Resume};

use super::client::Quiet;

/// Name of the lock file that keeps two processes from using one instance directory.
const LOCK: &str = "LOCK";

/// The checkpoint that holds a partition's newest state.
#[derive(Debug, Clone)]
pub struct Found {
    /// Where the partition stood.
    pub position: PartitionPosition,
    /// The instance directory of the checkpoint.
    pub root: PathBuf,
    /// Its number.
    pub id: u64,
}

/// The assignment one run reads.
#[derive(Debug, Clone)]
pub struct Assignment {
    /// Changes with every rebalance.
    pub generation: u64,
    /// Partitions assigned.
    pub partitions: Vec<i32>,
    /// For each assigned partition with a checkpoint: where it is restored from.
    pub restore: BTreeMap<i32, Found>,
}

#[derive(Default)]
struct Inner {
    /// Set when partitions are revoked: this process completes no checkpoint until a run of
    /// the next assignment starts.
    fenced: bool,
    assigned: Vec<i32>,
    restore: BTreeMap<i32, Found>,
    /// A message served after a rebalance, for the next run: `(generation, message)`.
    stash: Option<(u64, OwnedMessage)>,
    /// A problem found while positioning an assignment, reported by the run.
    error: Option<String>,
}

/// A process's partitions and checkpoints, shared by the consumer's rebalance callback, the
/// reader and the writer.
pub struct Partitions {
    /// The shared checkpoint directory.
    shared: PathBuf,
    /// This process's directory in it.
    own: PathBuf,
    plan: String,
    topic: String,
    inner: Mutex<Inner>,
    /// Changes with every rebalance; changed only with `inner` locked, read by the reader for
    /// every message without it.
    generation: AtomicU64,
    /// Held for the life of the process.
    _lock: fs::File,
}

impl Partitions {
    /// Takes instance `instance` of the checkpoint directory `config.dir` for a run of `plan`
    /// reading `topic`; fails when another process holds it.
    pub fn open(
        config: &CheckpointConfig,
        instance: &str,
        plan: &Plan,
        topic: &str,
    ) -> Result<Partitions> {
        let valid = !instance.is_empty()
            && instance
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(Error::Refused(format!(
                "--instance must be letters, digits, '-' or '_', not `{instance}`"
            )));
        }
        let own = config.dir.join(format!("instance-{instance}"));
        fs::create_dir_all(&own).map_err(Error::io("create checkpoint directory", &own))?;
        let lock_path = own.join(LOCK);
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(Error::io("open", &lock_path))?;
        if !try_lock(&lock) {
            return Err(Error::Refused(format!(
                "instance `{instance}` of {} is in use by another process; give each process of \
                 the group its own --instance NAME",
                config.dir.display()
            )));
        }
        Ok(Partitions {
            shared: config.dir.clone(),
            own,
            plan: plan_fingerprint(plan),
            topic: topic.to_string(),
            inner: Mutex::default(),
            generation: AtomicU64::new(0),
            _lock: lock,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This process's checkpoint directory.
    pub fn own_dir(&self) -> &Path {
        &self.own
    }

    /// Changes with every rebalance.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// A rebalance: the next assignment (`inner` is locked).
    fn next_generation(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Rebalance callback: partitions `tpl` are assigned. Positions each at the offset of its
    /// newest checkpoint (left to the group's committed offset when there is none).
    pub fn assigned(&self, tpl: &mut TopicPartitionList) {
        let mut inner = self.lock();
        self.next_generation();
        inner.fenced = true;
        inner.assigned = tpl.elements().iter().map(|e| e.partition()).collect();
        inner.restore.clear();
        let manifests = match all_manifests(&self.shared) {
            Ok(m) => m,
            Err(e) => {
                inner.error = Some(format!("{e:#}"));
                return;
            }
        };
        if let Some((root, m)) = manifests.iter().find(|(_, m)| m.plan != self.plan) {
            inner.error = Some(format!(
                "checkpoint {} in {} was taken with other features or lateness; stop every \
                 process of the group and delete {} to start over",
                m.id,
                root.display(),
                self.shared.display()
            ));
            return;
        }
        for p in inner.assigned.clone() {
            if p < 0 || p as u32 >= KEY_GROUPS {
                inner.error = Some(format!(
                    "partition {p} of {}: checkpoints support topics of up to {KEY_GROUPS} \
                     partitions",
                    self.topic
                ));
                return;
            }
            let Some(found) = newest_for(&manifests, p) else {
                continue;
            };
            if let Err(e) =
                tpl.set_partition_offset(&self.topic, p, Offset::Offset(found.position.offset))
            {
                inner.error = Some(format!("cannot position partition {p}: {e}"));
                return;
            }
            tracing::info!(
                partition = p,
                offset = found.position.offset,
                checkpoint = %checkpoint::checkpoint_dir(&found.root, found.id).display(),
                "kafka: partition restored from its newest checkpoint"
            );
            inner.restore.insert(p, found);
        }
    }

    /// Rebalance callback: every partition is revoked. Waits for a checkpoint being completed
    /// and stops any other from completing.
    pub fn revoked(&self) {
        let mut inner = self.lock();
        self.next_generation();
        inner.fenced = true;
        inner.assigned.clear();
        inner.restore.clear();
    }

    /// Keeps `message`, served after a rebalance, for the run of the new assignment.
    pub fn stash(&self, message: OwnedMessage) {
        let mut inner = self.lock();
        inner.stash = Some((self.generation(), message));
    }

    /// The stashed message, if it belongs to assignment `generation`.
    pub fn take_stashed(&self, generation: u64) -> Option<OwnedMessage> {
        let mut inner = self.lock();
        match inner.stash.take() {
            Some((g, m)) if g == generation => Some(m),
            _ => None,
        }
    }

    /// Starts a run of the current assignment: lifts the fence and returns what it restores.
    pub fn start_run(&self) -> Result<Assignment> {
        let mut inner = self.lock();
        if let Some(e) = inner.error.take() {
            return Err(Error::Refused(e));
        }
        inner.fenced = false;
        Ok(Assignment {
            generation: self.generation(),
            partitions: inner.assigned.clone(),
            restore: inner.restore.clone(),
        })
    }

    /// What a run of `assignment` resumes from: each partition's key group from its newest
    /// checkpoint, and this instance's newest checkpoint for the lengths of its outputs (`None`:
    /// nothing to restore and nothing written yet).
    pub fn resume(&self, assignment: &Assignment) -> Result<Option<Resume>> {
        let (own_latest, skipped) = checkpoint::latest(&self.own)?;
        for reason in &skipped {
            eprintln!("sluice: skipping a checkpoint: {reason}");
        }
        if own_latest.is_none() && assignment.restore.is_empty() {
            return Ok(None);
        }
        // One load per checkpoint, keeping the groups of the partitions taken from it.
        let mut by_checkpoint: BTreeMap<(PathBuf, u64), Vec<u32>> = BTreeMap::new();
        for (&p, found) in &assignment.restore {
            by_checkpoint
                .entry((found.root.clone(), found.id))
                .or_default()
                .push(partition_group(p as u32));
        }
        let mut groups: Vec<GroupSnapshot> = Vec::new();
        for ((root, id), wanted) in by_checkpoint {
            let manifest = checkpoint::verify(&root, id)?;
            let loaded = checkpoint::load_groups(&root, &manifest)?;
            groups.extend(loaded.into_iter().filter(|g| wanted.contains(&g.group)));
        }
        let partitions: Vec<PartitionPosition> =
            assignment.restore.values().map(|f| f.position).collect();
        // The next checkpoint number follows every one of this instance, complete or not.
        let last_id = checkpoint::list(&self.own)?.into_iter().max().unwrap_or(0);
        Ok(Some(Resume {
            id: last_id,
            position: Position::Partitions(
                partitions.iter().map(|p| (p.partition, p.offset)).collect(),
            ),
            digest: None,
            sink: own_latest.map_or(SinkPosition::default(), |m| m.sink),
            newest: partitions.iter().filter_map(|p| p.newest).max(),
            newest_by: partitions
                .iter()
                .filter_map(|p| Some((p.partition, p.newest?)))
                .collect(),
            groups,
            // Relation features are refused with a Kafka source.
            links: None,
        }))
    }

    /// Deletes this instance's checkpoints older than its `keep` newest complete ones, except
    /// one that still holds the newest state of a partition (another process may restore it).
    fn prune(&self, keep: usize) -> Result<()> {
        let mut ids = checkpoint::list(&self.own)?;
        ids.sort_unstable_by(|a, b| b.cmp(a));
        let complete: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|&id| {
                checkpoint::checkpoint_dir(&self.own, id)
                    .join("manifest.json")
                    .is_file()
            })
            .collect();
        let Some(&oldest_kept) = complete.get(keep.max(1) - 1).or(complete.last()) else {
            return Ok(());
        };
        let old: Vec<u64> = ids.into_iter().filter(|&id| id < oldest_kept).collect();
        if old.is_empty() {
            return Ok(());
        }
        let manifests = all_manifests(&self.shared)?;
        for id in old {
            let needed = manifests
                .iter()
                .filter(|(root, m)| root == &self.own && m.id == id)
                .any(|(_, m)| {
                    m.partitions.iter().any(|p| {
                        newest_for(&manifests, p.partition as i32)
                            .is_some_and(|f| f.root == self.own && f.id == id)
                    })
                });
            if !needed {
                let _ = fs::remove_dir_all(checkpoint::checkpoint_dir(&self.own, id));
            }
        }
        Ok(())
    }
}

/// Every complete-looking manifest (it parses and has this format) of every instance under
/// `shared`, with its instance directory. Files are verified only when a checkpoint is loaded.
fn all_manifests(shared: &Path) -> Result<Vec<(PathBuf, Manifest)>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(shared) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io("read", shared)(e)),
    };
    for entry in entries.flatten() {
        let is_instance = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with("instance-"));
        if !is_instance {
            continue;
        }
        let root = entry.path();
        for id in checkpoint::list(&root)? {
            let path = checkpoint::checkpoint_dir(&root, id).join("manifest.json");
            let Ok(text) = fs::read(&path) else { continue };
            match serde_json::from_slice::<Manifest>(&text) {
                Ok(m) if checkpoint::readable(m.format) && m.id == id => {
                    out.push((root.clone(), m))
                }
                _ => continue,
            }
        }
    }
    Ok(out)
}

/// The checkpoint holding partition `p`'s newest state: the highest offset, ties broken by
/// instance and number so that every process picks the same one.
fn newest_for(manifests: &[(PathBuf, Manifest)], p: i32) -> Option<Found> {
    manifests
        .iter()
        .filter_map(|(root, m)| {
            let position = m.partitions.iter().find(|q| q.partition as i32 == p)?;
            Some(Found {
                position: *position,
                root: root.clone(),
                id: m.id,
            })
        })
        .max_by(|a, b| (a.position.offset, &a.root, a.id).cmp(&(b.position.offset, &b.root, b.id)))
}

/// Takes `file`'s exclusive lock without waiting; `false` when another process holds it.
fn try_lock(file: &fs::File) -> bool {
    file.try_lock().is_ok()
}

/// The Kafka source's part in one run's checkpoints: completes a checkpoint only while the
/// run's assignment holds (the writer has made the outputs before it durable). Afterwards it
/// commits the same offsets to the group (for lag monitoring; the checkpoints are what
/// positions partitions) and prunes old checkpoints.
pub struct PartitionCheckpoints {
    partitions: Arc<Partitions>,
    generation: u64,
    /// Next offset of each partition as restored, for partitions not read since.
    restored: BTreeMap<u32, i64>,
    /// Newest event time of each partition, as restored.
    restored_newest: HashMap<u32, i64>,
    consumer: Arc<BaseConsumer<Quiet>>,
    keep: usize,
}

impl PartitionCheckpoints {
    /// For a run of `assignment`.
    pub fn new(
        partitions: Arc<Partitions>,
        assignment: &Assignment,
        consumer: Arc<BaseConsumer<Quiet>>,
        keep: usize,
    ) -> PartitionCheckpoints {
        PartitionCheckpoints {
            partitions,
            generation: assignment.generation,
            restored: assignment
                .restore
                .iter()
                .map(|(&p, f)| (p as u32, f.position.offset))
                .collect(),
            restored_newest: assignment
                .restore
                .iter()
                .filter_map(|(&p, f)| Some((p as u32, f.position.newest?)))
                .collect(),
            consumer,
            keep,
        }
    }
}

impl SourceCheckpoint for PartitionCheckpoints {
    fn complete(
        &mut self,
        offsets: &BTreeMap<u32, i64>,
        newest_by: &[(u32, i64)],
        commit: &mut dyn FnMut(Vec<PartitionPosition>) -> sluice_engine::Result<()>,
    ) -> sluice_engine::Result<bool> {
        let mut next = self.restored.clone();
        next.extend(offsets.iter().map(|(&p, &o)| (p, o)));
        let newest: HashMap<u32, i64> = newest_by.iter().copied().collect();
        let positions: Vec<PartitionPosition> = next
            .iter()
            .map(|(&p, &offset)| PartitionPosition {
                partition: p,
                offset,
                newest: newest.get(&p).or(self.restored_newest.get(&p)).copied(),
            })
            .collect();
        {
            // Held while the manifest is written: a revocation waits for it, and once revoked
            // nothing more is written.
            let inner = self.partitions.lock();
            if inner.fenced || self.partitions.generation() != self.generation {
                return Ok(false);
            }
            commit(positions.clone())?;
        }
        let mut tpl = TopicPartitionList::new();
        for p in &positions {
            let _ = tpl.add_partition_offset(
                &self.partitions.topic,
                p.partition as i32,
                Offset::Offset(p.offset),
            );
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            tracing::debug!("kafka: cannot commit offsets to the group: {e}");
        }
        if let Err(e) = self.partitions.prune(self.keep) {
            tracing::warn!("cannot delete old checkpoints: {e:#}");
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A complete-looking checkpoint `id` of `instance` holding `partitions` at these offsets.
    fn checkpoint(shared: &Path, instance: &str, id: u64, plan: &str, partitions: &[(u32, i64)]) {
        let manifest = Manifest {
            format: checkpoint::FORMAT_VERSION,
            id,
            created_ms: 0,
            plan: plan.to_string(),
            shards: 1,
            source: None,
            sink: SinkPosition::default(),
            newest: None,
            files: Vec::new(),
            partitions: partitions
                .iter()
                .map(|&(partition, offset)| PartitionPosition {
                    partition,
                    offset,
                    newest: None,
                })
                .collect(),
        };
        checkpoint::commit(
            &shared.join(format!("instance-{instance}")),
            &manifest,
            usize::MAX,
        )
        .expect("commit");
    }

    fn present(shared: &Path, instance: &str) -> Vec<u64> {
        let mut ids = checkpoint::list(&shared.join(format!("instance-{instance}"))).expect("list");
        ids.sort_unstable();
        ids
    }

    #[test]
    fn the_newest_checkpoint_of_a_partition_wins_and_survives_pruning() {
        let dir = tempfile::tempdir().expect("tmp");
        let plan = Plan::new(
            vec![sluice_core::FeatureSpec {
                name: "n".into(),
                agg: sluice_core::Agg::Count,
                of: None,
                by: vec!["user_id".into()],
                window_ms: 3_600_000,
                granularity_ms: 1,
                filter: None,
            }],
            300_000,
        )
        .expect("plan");
        let config = CheckpointConfig {
            dir: dir.path().to_path_buf(),
            interval: std::time::Duration::from_secs(1),
            keep: 1,
        };
        let a = Partitions::open(&config, "a", &plan, "t").expect("instance a");
        assert!(
            Partitions::open(&config, "a", &plan, "t").is_err(),
            "two processes on one instance"
        );
        let plan = plan_fingerprint(&plan);
        // `a` held partitions 0 and 1, then gave 1 up; `b` restored 1 from `a`'s checkpoint 2
        // and has not got further yet.
        checkpoint(dir.path(), "a", 1, &plan, &[(0, 10), (1, 20)]);
        checkpoint(dir.path(), "a", 2, &plan, &[(0, 15), (1, 25)]);
        checkpoint(dir.path(), "a", 3, &plan, &[(0, 30)]);
        checkpoint(dir.path(), "a", 4, &plan, &[(0, 40)]);
        checkpoint(dir.path(), "b", 1, &plan, &[(1, 25)]);
        let manifests = all_manifests(dir.path()).expect("manifests");
        let newest = |p| newest_for(&manifests, p).map(|f| (f.position.offset, f.id));
        assert_eq!(newest(0), Some((40, 4)));
        // A tie between `a`'s 2 and `b`'s 1: every process picks the same, `b`'s.
        let for_1 = newest_for(&manifests, 1).expect("partition 1");
        assert!(for_1.root.ends_with("instance-b") && for_1.id == 1);
        assert_eq!(newest(2), None);

        // Keeping one: 1 and 3 go; 2 holds partition 1 at the same offset as `b`'s newest, so
        // it goes too, as `b`'s wins the tie.
        a.prune(1).expect("prune");
        assert_eq!(present(dir.path(), "a"), [4]);

        // Had `b` not checkpointed partition 1, `a`'s checkpoint 2 would be kept for it.
        checkpoint(dir.path(), "a", 5, &plan, &[(0, 50), (2, 7)]);
        checkpoint(dir.path(), "a", 6, &plan, &[(0, 60)]);
        a.prune(1).expect("prune");
        assert_eq!(present(dir.path(), "a"), [5, 6]);
    }
}
