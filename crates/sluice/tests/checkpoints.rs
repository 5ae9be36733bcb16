//! Checkpoints end to end with the `sluice` binary: `kill -9` at random moments and restart,
//! restore with another number of workers, damaged checkpoints, `--fresh`. The final outputs
//! (events and dead letters) must equal an uninterrupted run's, byte for byte.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;

use common::wait::Deadline;
use common::{sluice, sluice_run};

const FEATURES: &str = r#"
[event]
time = "ts"
lateness = "1m"

[[feature]]
name = "amount_1d"
agg = "sum"
of = "amount"
by = "user_id"
window = "1d"

[[feature]]
name = "max_1h"
agg = "max"
of = "amount"
by = "user_id"
window = "1h"

[[feature]]
name = "devices_7d"
agg = "distinct_count"
of = "device_id"
by = "user_id"
window = "7d"

[[feature]]
name = "merchant_txn_1h"
agg = "count"
by = ["merchant_id"]
window = "1h"
"#;

/// [`FEATURES`] and relation features over the same events: users linked to a user through
/// shared devices, and their events, in the past hour; users linked through merchants
/// (hubs: hundreds of users an hour), approximately.
const RELATION_FEATURES: &str = r#"
[event]
time = "ts"
lateness = "1m"

[[feature]]
name = "amount_1d"
agg = "sum"
of = "amount"
by = "user_id"
window = "1d"

[[feature]]
name = "users_linked_by_device_1h"
agg = "linked_distinct_count"
by = "user_id"
via = "device_id"
of = "user_id"
window = "1h"

[[feature]]
name = "events_linked_by_merchant_1h"
agg = "linked_count"
by = "user_id"
via = "merchant_id"
window = "1h"
where = "amount > 50"

[[feature]]
name = "users_linked_by_merchant_1h"
agg = "linked_distinct_count_approx"
by = "user_id"
via = "merchant_id"
of = "user_id"
window = "1h"
granularity = "1m"
"#;

struct Case {
    dir: tempfile::TempDir,
    input: PathBuf,
    pipeline: PathBuf,
    features: &'static str,
}

impl Case {
    /// Generated transactions (out of order by up to 2 s, so some are late) with a bad line
    /// every 997 lines, and a pipeline checkpointing every `interval`.
    fn new(events: u32, interval: &str) -> Case {
        Case::with_state(events, interval, "")
    }

    /// The same with a `[state]` section.
    fn with_state(events: u32, interval: &str, state: &str) -> Case {
        Case::with(events, interval, state, FEATURES)
    }

    /// The same with other features.
    fn with(events: u32, interval: &str, state: &str, features: &'static str) -> Case {
        let dir = tempfile::tempdir().expect("temp dir");
        let generated = dir.path().join("gen.jsonl");
        let out = sluice()
            .args([
                "gen",
                "--events",
                &events.to_string(),
                "--users",
                "3000",
                "--days",
                "2",
            ])
            .args(["--seed", "5", "--disorder", "120000", "--output"])
            .arg(&generated)
            .output()
            .expect("run sluice gen");
        assert!(out.status.success(), "gen failed");
        let text = std::fs::read_to_string(&generated).expect("read");
        let mut input = String::with_capacity(text.len() + 1000);
        for (i, line) in text.lines().enumerate() {
            input.push_str(line);
            input.push('\n');
            if i % 997 == 0 {
                input.push_str("{\"user_id\": \"broken\n");
            }
        }
        let input_path = dir.path().join("in.jsonl");
        std::fs::write(&input_path, input).expect("write input");
        let pipeline = dir.path().join("p.toml");
        std::fs::write(
            &pipeline,
            format!(
                "{features}\n[checkpoint]\npath = \"ckpt\"\ninterval = \"{interval}\"\nkeep = 2\n{state}"
            ),
        )
        .expect("write pipeline");
        Case {
            dir,
            input: input_path,
            pipeline,
            features,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self, tag: &str, workers: usize, extra: &[&str]) -> Command {
        let mut c = sluice_run(
            &self.pipeline,
            &self.input,
            &self.path(&format!("{tag}.out")),
            &self.path(&format!("{tag}.dead")),
            workers,
        );
        c.args(extra);
        c
    }

    /// The outputs of one uninterrupted run (no checkpoint section involved: `--fresh` on its
    /// own checkpoint directory is the same pipeline).
    fn reference(&self) -> (Vec<u8>, Vec<u8>) {
        let pipeline = self.path("reference.toml");
        std::fs::write(&pipeline, self.features).expect("write");
        let out = sluice_run(
            &pipeline,
            &self.input,
            &self.path("reference.out"),
            &self.path("reference.dead"),
            2,
        )
        .output()
        .expect("run");
        common::assert_success(&out);
        (self.read("reference.out"), self.read("reference.dead"))
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap_or_default()
    }

    fn assert_same(&self, tag: &str, reference: &(Vec<u8>, Vec<u8>)) {
        let (out, dead) = (
            self.read(&format!("{tag}.out")),
            self.read(&format!("{tag}.dead")),
        );
        assert!(
            out == reference.0,
            "{tag}: events differ from the uninterrupted run ({} vs {} bytes)",
            out.len(),
            reference.0.len()
        );
        assert!(
            !reference.1.is_empty(),
            "the input should produce dead letters"
        );
        assert!(
            dead == reference.1,
            "{tag}: dead letters differ from the uninterrupted run"
        );
    }

    /// Runs to the end (after a kill: resumes), returning stderr.
    fn finish(&self, tag: &str, workers: usize, extra: &[&str]) -> String {
        let out = self.command(tag, workers, extra).output().expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{tag}: {stderr}");
        stderr
    }

    /// Starts a run and kills it with SIGKILL once a new complete checkpoint exists.
    fn kill_after_a_checkpoint(&self, tag: &str, workers: usize, extra: &[&str]) {
        let before = if extra.contains(&"--fresh") {
            // The run deletes the old ones; do it first so that they are not mistaken for new.
            let _ = std::fs::remove_dir_all(self.path("ckpt"));
            0
        } else {
            complete_checkpoints(&self.path("ckpt"))
        };
        let mut child = self
            .command(tag, workers, extra)
            .stderr(Stdio::null())
            .spawn()
            .expect("run");
        // Polls the checkpoint directory for the new manifest (the event awaited).
        let deadline = Deadline::after(
            Duration::from_secs(120),
            format!("{tag}: a new complete checkpoint (no checkpoint was taken)"),
        );
        while complete_checkpoints(&self.path("ckpt")) <= before {
            if child.try_wait().expect("try_wait").is_some() {
                panic!("{tag}: the run ended before a checkpoint (make the input longer)");
            }
            deadline.pause(Duration::from_millis(5), String::new);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn complete_checkpoints(root: &Path) -> usize {
    std::fs::read_dir(root)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().join("manifest.json").is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .max()
                .and_then(|n| n.trim_start_matches("chk-").parse().ok())
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// A small deterministic generator for the kill moments.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn killed_at_random_moments_and_restarted_the_output_is_byte_identical() {
    let case = Case::new(300_000, "50ms");
    let reference = case.reference();
    let total = reference.0.len() as u64;
    let out_path = case.path("killed.out");
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let (mut kills, mut resumed) = (0, 0);
    let mut finished = false;
    // Kill points spread over the output, jittered; every fourth kill instead lands in the
    // first milliseconds of a run (while it loads its checkpoint or cuts its outputs back).
    let mut target = 0u64;
    for attempt in 0..200 {
        let extra: &[&str] = if attempt == 0 { &["--fresh"] } else { &[] };
        let mut child = case
            .command("killed", 2, extra)
            .stderr(Stdio::piped())
            .spawn()
            .expect("run");
        if kills < 24 {
            if kills % 4 == 3 {
                // Not synchronisation: a random delay of 0-19 ms, so that the kill lands at an
                // arbitrary moment early in the run (loading its checkpoint, cutting its outputs
                // back). Nothing needs to have happened by then.
                std::thread::sleep(Duration::from_millis(next_random(&mut seed) % 20));
            } else {
                // Wait for the event: the output has grown to the (randomly placed) target, or
                // the run has ended.
                target += total / 32 + next_random(&mut seed) % (total / 32);
                let deadline = Deadline::after(
                    Duration::from_secs(120),
                    format!(
                        "the run's output to reach {target} bytes (kill {kills}) or the run to end"
                    ),
                );
                while child.try_wait().expect("try_wait").is_none()
                    && std::fs::metadata(&out_path).map_or(0, |m| m.len()) < target
                {
                    deadline.pause(Duration::from_micros(500), || {
                        let len = std::fs::metadata(&out_path).map_or(0, |m| m.len());
                        format!("the output holds {len} bytes")
                    });
                }
            }
            if child.try_wait().expect("try_wait").is_none() {
                let _ = child.kill();
                let _ = child.wait();
                kills += 1;
                continue;
            }
        }
        let out = child.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "a restart failed: {stderr}");
        resumed += usize::from(stderr.contains("resuming from checkpoint"));
        finished = true;
        break;
    }
    assert!(finished, "the run never finished");
    assert!(kills >= 20, "the run finished after only {kills} kills");
    assert!(resumed > 0, "the last run did not resume from a checkpoint");
    eprintln!("{kills} kills, then a clean finish");
    case.assert_same("killed", &reference);
}

#[test]
fn a_checkpoint_restores_with_another_number_of_workers() {
    let case = Case::new(200_000, "20ms");
    let reference = case.reference();
    for (tag, from, to) in [("four-to-one", 4, 1), ("one-to-three", 1, 3)] {
        case.kill_after_a_checkpoint(tag, from, &["--fresh"]);
        let stderr = case.finish(tag, to, &[]);
        assert!(
            stderr.contains("resuming from checkpoint"),
            "{tag}: {stderr}"
        );
        case.assert_same(tag, &reference);
    }
}

/// Relation features keep their links in the router: a checkpoint holds them (`links.bin`),
/// and a run killed after a checkpoint and resumed with another number of workers writes what
/// an uninterrupted run writes.
#[test]
fn relation_features_checkpoint_and_restore_their_links() {
    let case = Case::with(150_000, "20ms", "", RELATION_FEATURES);
    let reference = case.reference();
    for (tag, from, to) in [
        ("relations-two-to-one", 2, 1),
        ("relations-one-to-three", 1, 3),
    ] {
        case.kill_after_a_checkpoint(tag, from, &["--fresh"]);
        let latest = complete_checkpoints(&case.path("ckpt"));
        let links = case
            .path("ckpt")
            .join(format!("chk-{latest:010}"))
            .join("links.bin");
        assert!(links.is_file(), "{tag}: {} is missing", links.display());
        let stderr = case.finish(tag, to, &[]);
        assert!(
            stderr.contains("resuming from checkpoint"),
            "{tag}: {stderr}"
        );
        case.assert_same(tag, &reference);
    }
}

#[test]
fn damaged_checkpoints_are_reported_and_the_previous_one_is_used() {
    let case = Case::new(200_000, "20ms");
    let reference = case.reference();
    case.kill_after_a_checkpoint("damaged", 2, &["--fresh"]);
    case.kill_after_a_checkpoint("damaged", 2, &[]);
    // Flip a byte in a shard file of the newest complete checkpoint.
    let root = case.path("ckpt");
    let newest = root.join(format!("chk-{:010}", complete_checkpoints(&root)));
    let shard = newest.join("shard-0.bin");
    let mut bytes = std::fs::read(&shard).expect("read shard file");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&shard, bytes).expect("write");
    let stderr = case.finish("damaged", 2, &[]);
    assert!(
        stderr.contains("skipping a checkpoint") && stderr.contains("CRC"),
        "the damage was not reported: {stderr}"
    );
    assert!(stderr.contains("resuming from checkpoint"), "{stderr}");
    case.assert_same("damaged", &reference);
}

#[test]
fn fresh_starts_over_and_another_pipeline_is_refused() {
    let case = Case::new(100_000, "20ms");
    let reference = case.reference();
    case.kill_after_a_checkpoint("fresh", 2, &["--fresh"]);
    let stderr = case.finish("fresh", 2, &["--fresh"]);
    assert!(stderr.contains("--fresh: deleted"), "{stderr}");
    assert!(!stderr.contains("resuming"), "{stderr}");
    case.assert_same("fresh", &reference);

    // The checkpoints now belong to this pipeline; other features cannot use them.
    case.kill_after_a_checkpoint("other", 2, &["--fresh"]);
    let text = std::fs::read_to_string(&case.pipeline).expect("read");
    std::fs::write(&case.pipeline, text.replace("\"1h\"", "\"2h\"")).expect("write");
    let out = case.command("other", 2, &[]).output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("--fresh"), "{stderr}");
}

/// The embedded backend, with most keys on disk: its checkpoints hold every key, wherever it
/// is, and restore (with another worker count) to the same output.
#[test]
fn embedded_state_with_keys_on_disk_checkpoints_and_restores() {
    let case = Case::with_state(
        200_000,
        "20ms",
        "\n[state]\nbackend = \"embedded\"\nmemory_cap = \"1MB\"\npath = \"store\"\n",
    );
    let reference = case.reference();
    case.kill_after_a_checkpoint("embedded", 2, &["--fresh"]);
    let stderr = case.finish("embedded", 3, &[]);
    assert!(stderr.contains("resuming from checkpoint"), "{stderr}");
    assert!(
        !stderr.contains(" 0 keys on disk"),
        "no key went to disk, so this proved nothing: {stderr}"
    );
    case.assert_same("embedded", &reference);
}

/// A resumed run reads the input the checkpoint was taken on: another file of the same length
/// is refused (not only a shorter one), and the same file with lines appended resumes.
#[test]
fn a_resume_refuses_another_input_of_the_same_length() {
    let case = Case::new(100_000, "20ms");
    case.kill_after_a_checkpoint("swap", 2, &["--fresh"]);
    let original = std::fs::read(&case.input).expect("read");
    // One digit of the first line changed: the same length, other bytes.
    let mut other = original.clone();
    let at = original
        .iter()
        .position(u8::is_ascii_digit)
        .expect("a digit");
    other[at] = if original[at] == b'1' { b'2' } else { b'1' };
    std::fs::write(&case.input, &other).expect("write");
    let out = case.command("swap", 2, &[]).output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("not the input the checkpoint was taken on") && stderr.contains("--fresh"),
        "{stderr}"
    );

    // The same input, grown: the run resumes.
    let mut grown = original;
    grown.extend_from_slice(b"{\"ts\":1,\"user_id\":\"late\"}\n");
    std::fs::write(&case.input, &grown).expect("write");
    let stderr = case.finish("swap", 2, &[]);
    assert!(stderr.contains("resuming from checkpoint"), "{stderr}");
}
