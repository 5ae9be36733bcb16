//! Kafka topic to topic, through a real Kafka-protocol broker (tansu, started by
//! `scripts/kafka.sh` in `scripts/test.sh`).

mod common;

use std::path::Path;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use common::wait::{Deadline, LineLog};

const TIMEOUT: Duration = Duration::from_secs(30);

fn create_topics(brokers: &str, topics: &[(&str, i32)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|&(name, partitions)| NewTopic::new(name, partitions, TopicReplication::Fixed(1)))
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let results = runtime
        .block_on(admin.create_topics(&new, &AdminOptions::new()))
        .expect("create topics");
    for r in results {
        r.expect("topic created");
    }
}

/// Produces each line keyed by its `user_id`, and waits for the acknowledgements.
fn produce(brokers: &str, topic: &str, lines: &[String]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .create()
        .expect("producer");
    for line in lines {
        let key = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v["user_id"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let mut record = BaseRecord::to(topic)
            .payload(line.as_str())
            .key(key.as_str());
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    producer.poll(Duration::from_millis(10));
                    record = back;
                }
            }
        }
    }
    producer.flush(TIMEOUT).expect("flush");
}

/// Every message of `topic`: read from the beginning of each partition until each reports
/// its end (the broker's end offsets can lag behind its last batch, so they are not used).
fn consume_all(brokers: &str, topic: &str) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "sluice-test-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", "10")
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), TIMEOUT)
        .expect("metadata");
    let mut tpl = TopicPartitionList::new();
    let partitions: Vec<i32> = metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| p.id())
        .collect();
    for &p in &partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("offset");
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let mut ended = std::collections::HashSet::new();
    while ended.len() < partitions.len() {
        match consumer.poll(TIMEOUT) {
            Some(Ok(m)) => {
                ended.remove(&m.partition());
                out.push(String::from_utf8_lossy(m.payload().unwrap_or(b"")).into_owned());
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                ended.insert(p);
            }
            Some(Err(e)) => panic!("consume {topic}: {e}"),
            None => panic!("nothing from {topic} within {TIMEOUT:?}"),
        }
    }
    out
}

/// Fresh topics `<tag>-in` (4 partitions), `-out` (2) and `-dead` (1); returns the tag.
fn topics(brokers: &str, prefix: &str) -> String {
    let tag = common::unique_namespace(prefix);
    create_topics(
        brokers,
        &[
            (&format!("{tag}-in"), 4),
            (&format!("{tag}-out"), 2),
            (&format!("{tag}-dead"), 1),
        ],
    );
    tag
}

fn write_pipeline(dir: &Path, brokers: &str, tag: &str) -> std::path::PathBuf {
    let path = dir.join("kafka.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[event]
time = "ts"
lateness = "400d"

[source]
kind = "kafka"
brokers = ["{brokers}"]
topic = "{tag}-in"
group = "{tag}-group"

[sink]
kind = "kafka"
brokers = ["{brokers}"]
topic = "{tag}-out"
key = "user_id"

[dead_letters]
kind = "kafka"
brokers = ["{brokers}"]
topic = "{tag}-dead"

[[feature]]
name = "amount_1h"
agg = "sum"
of = "amount"
by = "user_id"
window = "1h"

[[feature]]
name = "devices_1d"
agg = "distinct_count"
of = "device_id"
by = "user_id"
window = "1d"
"#
        ),
    )
    .expect("pipeline");
    path
}

/// Topic to topic with `--until-end`: the enriched events are those of `sluice run` on the
/// same events in a file (the topic is keyed by user, and every feature is by user, so each
/// user's events keep their order); bad records reach the dead-letter topic; the offsets are
/// committed, so a second run of the same group finds nothing new.
#[test]
fn topic_to_topic_equals_a_file_run() {
    let Some(brokers) = common::kafka_brokers() else {
        return;
    };
    let tag = topics(&brokers, "k");
    let dir = tempfile::tempdir().expect("tmp");
    let input = dir.path().join("events.jsonl");
    let mut lines = common::gen_lines(
        &input,
        &[
            "--events", "3000", "--users", "60", "--days", "1", "--seed", "3",
        ],
    );
    // Three bad records, each in a user's stream.
    lines.insert(10, "{\"user_id\":\"u1\",\"amount\":".to_owned());
    lines.insert(
        500,
        "{\"user_id\":\"u2\",\"amount\":\"ten\",\"ts\":1767225600000}".to_owned(),
    );
    lines.insert(2000, "{\"user_id\":\"u3\",\"amount\":1}".to_owned());
    std::fs::write(&input, lines.join("\n") + "\n").expect("input");
    produce(&brokers, &format!("{tag}-in"), &lines);

    let pipeline = write_pipeline(dir.path(), &brokers, &tag);
    let want = file_run_sorted(&pipeline, &input, dir.path());
    let kafka_run = |expect_events: &str| {
        let out = common::sluice()
            .arg("run")
            .arg(&pipeline)
            .args(["--until-end", "--quiet", "--workers", "2"])
            .output()
            .expect("kafka run");
        let stderr = common::assert_success(&out);
        assert!(stderr.contains(expect_events), "{stderr}");
    };
    kafka_run("3000 events written, 3 dead letters");

    let mut got = consume_all(&brokers, &format!("{tag}-out"));
    got.sort();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "topic output differs from the file run");
    let dead = consume_all(&brokers, &format!("{tag}-dead"));
    let mut reasons: Vec<String> = dead
        .iter()
        .map(|d| serde_json::from_str::<serde_json::Value>(d).expect("json")["reason"].to_string())
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        ["\"malformed\"", "\"missing_time\"", "\"wrong_type\""]
    );

    // The offsets were committed: the same group has nothing left to read.
    kafka_run("0 events written, 0 dead letters");
}

/// Relation features cross keys, so with a Kafka source (whose group may split the
/// partitions) they need Redis state and are refused without it. With it, a topic of one
/// partition gives the output of a file run in memory, event for event.
#[test]
fn relation_features_from_a_topic_on_redis_equal_a_file_run() {
    let (Some(brokers), Some(urls)) = (common::kafka_brokers(), common::redis_urls()) else {
        return;
    };
    let tag = common::unique_namespace("kr");
    create_topics(
        &brokers,
        &[(&format!("{tag}-in"), 1), (&format!("{tag}-out"), 1)],
    );
    let dir = tempfile::tempdir().expect("tmp");
    let input = dir.path().join("events.jsonl");
    let lines = common::gen_lines(
        &input,
        &[
            "--events", "2000", "--users", "50", "--days", "1", "--seed", "8",
        ],
    );
    produce(&brokers, &format!("{tag}-in"), &lines);
    let features = r#"
[event]
time = "ts"

[[feature]]
name = "users_sharing_devices_1d"
agg = "linked_distinct_count"
of = "user_id"
by = "user_id"
via = "device_id"
window = "1d"

[[feature]]
name = "linked_events_1h"
agg = "linked_count"
by = "user_id"
via = "device_id"
window = "1h"
"#;
    let topics = format!(
        "[source]\nkind = \"kafka\"\nbrokers = [\"{brokers}\"]\ntopic = \"{tag}-in\"\n\
         group = \"{tag}-group\"\n[sink]\nkind = \"kafka\"\nbrokers = [\"{brokers}\"]\n\
         topic = \"{tag}-out\"\n"
    );
    let local = dir.path().join("local.toml");
    std::fs::write(&local, format!("{topics}{features}")).expect("pipeline");
    let out = common::sluice()
        .arg("check")
        .arg(&local)
        .output()
        .expect("check");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("backend = \"redis\""), "{stderr}");

    let file = dir.path().join("file.toml");
    std::fs::write(&file, features).expect("pipeline");
    let want = file_run_sorted(&file, &input, dir.path());

    let shared = dir.path().join("shared.toml");
    let state = common::redis_state(&urls, &tag, "");
    std::fs::write(&shared, format!("{topics}{features}{state}")).expect("pipeline");
    let out = common::sluice()
        .arg("run")
        .arg(&shared)
        .args(["--until-end", "--quiet", "--workers", "2"])
        .output()
        .expect("kafka run");
    let stderr = common::assert_success(&out);
    assert!(stderr.contains("2000 events written"), "{stderr}");
    let mut got = consume_all(&brokers, &format!("{tag}-out"));
    got.sort();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "topic output differs from the file run");
}

/// A `sluice run` process whose stderr is collected; killed when dropped.
struct Run {
    child: std::process::Child,
    log: LineLog,
}

impl Run {
    fn start(pipeline: &Path) -> Run {
        Run::start_with(pipeline, &[])
    }

    fn start_with(pipeline: &Path, args: &[&std::ffi::OsStr]) -> Run {
        let mut child = common::sluice()
            .arg("run")
            .arg(pipeline)
            .args(["--quiet", "--workers", "1"])
            .args(args)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("sluice run");
        let log = LineLog::spawn(child.stderr.take().expect("stderr"));
        Run { child, log }
    }

    /// The partitions of its latest assignment (empty after a revocation).
    fn assigned(&self) -> Vec<i32> {
        let log = self.log.lines();
        for line in log.iter().rev() {
            if line.contains("revoked partitions") {
                return Vec::new();
            }
            if let Some(list) = line.split("assigned partitions [").nth(1) {
                return list
                    .trim_end_matches(']')
                    .split(", ")
                    .filter_map(|p| p.trim().parse().ok())
                    .collect();
            }
        }
        Vec::new()
    }

    /// Sends SIGTERM, waits for the process to exit and for its stderr to be read to the end;
    /// returns that stderr.
    fn terminate(&mut self) -> String {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let status = self.child.wait().expect("wait");
        self.log.join(TIMEOUT);
        let log = self.log.lines().join("\n");
        assert!(status.success(), "{log}");
        log
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The pipeline on `tag`'s topics, and two `sluice run` processes of its group once they
/// have split the four partitions between them.
fn two_processes(dir: &Path, brokers: &str, tag: &str) -> (std::path::PathBuf, Run, Run) {
    let pipeline = write_pipeline(dir, brokers, tag);
    let (a, b) = (Run::start(&pipeline), Run::start(&pipeline));
    wait_for_split(&[&a, &b], 4);
    (pipeline, a, b)
}

/// Waits until `runs` together hold all `partitions`, each some.
/// (Polls the processes' logs for their "assigned partitions" lines.)
fn wait_for_split(runs: &[&Run], partitions: usize) {
    let deadline = Deadline::after(
        Duration::from_secs(60),
        format!("the group to split the {partitions} partitions"),
    );
    loop {
        let held: Vec<Vec<i32>> = runs.iter().map(|r| r.assigned()).collect();
        let total: usize = held.iter().map(Vec::len).sum();
        if total == partitions && held.iter().all(|h| !h.is_empty()) {
            return;
        }
        deadline.pause(Duration::from_millis(100), || {
            format!("the group did not split the partitions: {held:?}")
        });
    }
}

/// Waits until `topic` holds at least `n` messages; returns them.
fn wait_for_messages(brokers: &str, topic: &str, n: usize) -> Vec<String> {
    wait_until(brokers, topic, |got| got.len() >= n)
}

/// Waits until the messages of `topic` satisfy `done`, reading the topic every half second;
/// returns them. Gives up after two minutes and returns what was there: the caller's
/// assertions then fail, saying what is missing.
fn wait_until(brokers: &str, topic: &str, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Deadline::after(Duration::from_secs(120), format!("messages in {topic}"));
    loop {
        let got = consume_all(brokers, topic);
        if done(&got) || deadline.passed() {
            return got;
        }
        // The interval between reads of the topic (each reads it all from the beginning).
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn events_of(n: u64, seed: u64, dir: &Path) -> (std::path::PathBuf, Vec<String>) {
    let input = dir.join(format!("events-{seed}.jsonl"));
    let (n, seed) = (n.to_string(), seed.to_string());
    let lines = common::gen_lines(
        &input,
        &[
            "--events", &n, "--users", "80", "--days", "1", "--seed", &seed,
        ],
    );
    (input, lines)
}

/// Two processes of one group share the topic's partitions; each user's events stay in one
/// partition and so with one process, and the output equals a file run's.
#[test]
fn two_processes_split_the_partitions() {
    let Some(brokers) = common::kafka_brokers() else {
        return;
    };
    let tag = topics(&brokers, "k2");
    let dir = tempfile::tempdir().expect("tmp");
    let (pipeline, mut a, mut b) = two_processes(dir.path(), &brokers, &tag);
    let (input, lines) = events_of(4000, 11, dir.path());
    produce(&brokers, &format!("{tag}-in"), &lines);
    let mut got = wait_for_messages(&brokers, &format!("{tag}-out"), lines.len());
    let (log_a, log_b) = (a.terminate(), b.terminate());
    for log in [&log_a, &log_b] {
        assert!(
            !log.contains(" 0 events written"),
            "a process did no work:\n{log}"
        );
    }
    let want = file_run_sorted(&pipeline, &input, dir.path());
    got.sort();
    assert!(
        got == want,
        "the two processes' output differs from the file run"
    );
}

/// One of two processes is killed with -9 mid-stream: the other takes its partitions over
/// from the last committed offsets, and every event is in the output at least once.
#[test]
fn a_killed_process_loses_nothing() {
    let Some(brokers) = common::kafka_brokers() else {
        return;
    };
    let tag = topics(&brokers, "k3");
    let dir = tempfile::tempdir().expect("tmp");
    let (_, mut a, mut b) = two_processes(dir.path(), &brokers, &tag);
    let (_, lines) = events_of(6000, 12, dir.path());
    let (first, second) = lines.split_at(3000);
    produce(&brokers, &format!("{tag}-in"), first);
    // The kill comes after progress: the output topic holds a thousand events.
    let before_kill = wait_for_messages(&brokers, &format!("{tag}-out"), 1000).len();
    assert!(
        before_kill >= 1000,
        "timed out waiting for 1000 messages in {tag}-out before the kill: {before_kill}"
    );
    a.child.kill().expect("kill -9");
    a.child.wait().expect("wait");
    produce(&brokers, &format!("{tag}-in"), second);
    let id = |l: &str| {
        serde_json::from_str::<serde_json::Value>(l).expect("json")["event_id"]
            .as_str()
            .expect("event_id")
            .to_owned()
    };
    // Duplicates are allowed (at least once): wait for every event, not for a count.
    let all: std::collections::HashSet<String> = lines.iter().map(|l| id(l)).collect();
    let got = wait_until(&brokers, &format!("{tag}-out"), |got| {
        got.iter()
            .map(|l| id(l))
            .collect::<std::collections::HashSet<_>>()
            == all
    });
    let log_b = b.terminate();
    assert!(
        log_b.contains("assigned partitions [0, 1, 2, 3]"),
        "{log_b}"
    );
    let seen: std::collections::HashSet<String> = got.iter().map(|l| id(l)).collect();
    let missing: Vec<String> = lines
        .iter()
        .map(|l| id(l))
        .filter(|e| !seen.contains(e))
        .collect();
    assert!(
        missing.is_empty(),
        "{} events lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    eprintln!(
        "{} events, {} messages out: {} delivered twice",
        lines.len(),
        got.len(),
        got.len() - seen.len()
    );
}

/// A file run into a topic (no Kafka source): every message is acknowledged before the run
/// ends, so the topic holds them all.
#[test]
fn a_file_run_into_a_topic_delivers_everything() {
    let Some(brokers) = common::kafka_brokers() else {
        return;
    };
    let tag = topics(&brokers, "k4");
    let dir = tempfile::tempdir().expect("tmp");
    let pipeline = write_pipeline(dir.path(), &brokers, &tag);
    let (input, lines) = events_of(5000, 13, dir.path());
    let out = common::sluice()
        .arg("run")
        .arg(&pipeline)
        .arg("--input")
        .arg(&input)
        .args(["--quiet", "--workers", "2"])
        .output()
        .expect("run");
    common::assert_success(&out);
    assert_eq!(
        consume_all(&brokers, &format!("{tag}-out")).len(),
        lines.len()
    );
}

/// The pipeline with checkpoints every 300 ms in `dir/ckpt`, reading `tag`'s topic; outputs
/// go to files given on the command line.
fn write_checkpointed_pipeline(dir: &Path, brokers: &str, tag: &str) -> std::path::PathBuf {
    write_checkpointed_pipeline_with(dir, brokers, tag, "")
}

/// The same, with more sections (`[state]`).
fn write_checkpointed_pipeline_with(
    dir: &Path,
    brokers: &str,
    tag: &str,
    more: &str,
) -> std::path::PathBuf {
    let path = write_pipeline(dir, brokers, tag);
    let text = std::fs::read_to_string(&path).expect("pipeline");
    let source_end = text.find("[sink]").expect("sink section");
    let features = text.find("[[feature]]").expect("features");
    let text = format!(
        "{}[checkpoint]\npath = \"{}\"\ninterval = \"300ms\"\n{more}\n{}",
        &text[..source_end],
        dir.join("ckpt").display(),
        &text[features..]
    );
    let path = dir.join("checkpointed.toml");
    std::fs::write(&path, text).expect("pipeline");
    path
}

/// Event ids of a file's lines (enriched events carry the input's `event_id`).
fn ids_in(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            serde_json::from_str::<serde_json::Value>(l).ok()?["event_id"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

/// Complete checkpoints of an instance.
fn checkpoints_of(dir: &Path, instance: &str) -> usize {
    std::fs::read_dir(dir.join("ckpt").join(format!("instance-{instance}")))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().join("manifest.json").is_file())
                .count()
        })
        .unwrap_or(0)
}

/// Waits until `check` holds, for at most two minutes; then fails with the logs of `runs`.
fn wait_for(what: &str, runs: &[&Run], check: impl Fn() -> bool) {
    let deadline = Deadline::after(Duration::from_secs(120), what);
    while !check() {
        deadline.pause(Duration::from_millis(100), || {
            let logs: Vec<String> = runs.iter().map(|r| r.log.text()).collect();
            logs.join("-----\n")
        });
    }
}

/// The enriched events and dead letters of a file run of `input`, sorted.
fn file_run_sorted(pipeline: &Path, input: &Path, dir: &Path) -> Vec<String> {
    let (out, dead) = (dir.join("file.out"), dir.join("file.dead"));
    let run = common::sluice_run(pipeline, input, &out, &dead, 2)
        .output()
        .expect("file run");
    common::assert_success(&run);
    let mut want = common::lines(&out);
    want.sort();
    want
}

/// With checkpoints, a Kafka run killed with -9 and started again writes exactly what an
/// uninterrupted run writes: its output file is cut back to its newest checkpoint, each
/// partition resumes at that checkpoint's offset with that checkpoint's state, and nothing is
/// missing or doubled.
#[test]
fn checkpointed_kill_and_restart_is_exactly_once() {
    kill_and_restart("k5", "");
}

/// The same with the embedded state mostly on disk: a partition's keys on disk are in its
/// key group there too, and its checkpoints hold them.
#[test]
fn checkpointed_kill_and_restart_with_embedded_state_is_exactly_once() {
    kill_and_restart(
        "k7",
        "\n[state]\nbackend = \"embedded\"\nmemory_cap = \"256KB\"\npath = \"store\"\n",
    );
}

fn kill_and_restart(prefix: &str, more: &str) {
    let Some(brokers) = common::kafka_brokers() else {
        return;
    };
    let tag = topics(&brokers, prefix);
    let dir = tempfile::tempdir().expect("tmp");
    let pipeline = write_checkpointed_pipeline_with(dir.path(), &brokers, &tag, more);
    let (input, lines) = events_of(20000, 14, dir.path());
    let out = dir.path().join("kafka.out");
    let dead = dir.path().join("kafka.dead");
    let args: Vec<std::ffi::OsString> = vec![
        "--output".into(),
        out.clone().into_os_string(),
        "--dead-letters".into(),
        dead.into_os_string(),
    ];
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let mut first = Run::start_with(&pipeline, &args);
    // The events arrive over a few seconds, and the run is killed while they do.
    let producer = {
        let (brokers, topic, lines) = (brokers.clone(), format!("{tag}-in"), lines.clone());
        std::thread::spawn(move || {
            for chunk in lines.chunks(1000) {
                produce(&brokers, &topic, chunk);
                // Pacing, not synchronisation: spreads the input over a few seconds. The kill
                // waits for its own event below (output and checkpoints written).
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };
    wait_for(
        "a third of the events and two checkpoints",
        &[&first],
        || ids_in(&out).len() >= lines.len() / 3 && checkpoints_of(dir.path(), "0") >= 2,
    );
    first.child.kill().expect("kill -9");
    first.child.wait().expect("wait");
    let written_before = ids_in(&out).len();
    producer.join().expect("producer");
    assert!(
        written_before < lines.len(),
        "killed too late to test anything"
    );

    let second = common::sluice()
        .arg("run")
        .arg(&pipeline)
        .args(["--quiet", "--workers", "2", "--until-end"])
        .args(&args)
        .output()
        .expect("second run");
    let log = common::assert_success(&second);
    if more.contains("embedded") {
        let on_disk: u64 = log
            .split(" keys on disk")
            .next()
            .and_then(|s| s.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(on_disk > 0, "no key went to disk: {log}");
    }
    assert!(
        log.contains("partition restored from its newest checkpoint"),
        "{log}"
    );

    let mut got = common::lines(&out);
    got.sort();
    let want = file_run_sorted(&pipeline, &input, dir.path());
    assert_eq!(got.len(), want.len(), "events missing or doubled");
    assert!(got == want, "the resumed output differs from a file run");
    eprintln!(
        "{} events: {written_before} written before the kill, the rest after a restart",
        lines.len()
    );
}

/// Two processes with checkpoints in one shared directory. One is killed with -9 mid-stream:
/// the other takes its partitions over and restores their state from the killed process's
/// newest checkpoint (feature values stay exact). The killed one is started again, cuts its
/// output back to its newest checkpoint and rejoins. Together their outputs hold every event
/// once, with the values of a file run.
#[test]
fn checkpointed_takeover_restores_the_partitions_state() {
    let Some(brokers) = common::kafka_brokers() else {
        return;
    };
    let tag = topics(&brokers, "k6");
    let dir = tempfile::tempdir().expect("tmp");
    let pipeline = write_checkpointed_pipeline(dir.path(), &brokers, &tag);
    let (input, lines) = events_of(12000, 15, dir.path());
    let process = |name: &str| -> (Vec<std::ffi::OsString>, std::path::PathBuf) {
        let out = dir.path().join(format!("{name}.out"));
        let args = vec![
            "--instance".into(),
            name.into(),
            "--output".into(),
            out.clone().into_os_string(),
            "--dead-letters".into(),
            dir.path().join(format!("{name}.dead")).into_os_string(),
        ];
        (args, out)
    };
    let start = |args: &[std::ffi::OsString]| {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        Run::start_with(&pipeline, &args)
    };
    let ((args_a, out_a), (args_b, out_b)) = (process("a"), process("b"));
    let (mut a, mut b) = (start(&args_a), start(&args_b));
    wait_for_split(&[&a, &b], 4);
    let (first, second) = lines.split_at(6000);
    produce(&brokers, &format!("{tag}-in"), first);
    wait_for("output and a checkpoint from both", &[&a, &b], || {
        ids_in(&out_a).len() + ids_in(&out_b).len() >= 3000
            && checkpoints_of(dir.path(), "a") >= 1
            && checkpoints_of(dir.path(), "b") >= 1
    });
    a.child.kill().expect("kill -9");
    a.child.wait().expect("wait");
    produce(&brokers, &format!("{tag}-in"), second);
    wait_for("the survivor to take every partition", &[&b], || {
        b.assigned() == [0, 1, 2, 3]
    });
    // The survivor catches up with everything (some of the killed one's uncommitted tail is
    // written again meanwhile).
    let all: std::collections::HashSet<String> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["event_id"]
                .as_str()
                .expect("event_id")
                .to_owned()
        })
        .collect();
    let union = || -> Vec<String> {
        let mut ids = ids_in(&out_a);
        ids.extend(ids_in(&out_b));
        ids
    };
    wait_for("every event written", &[&b], || {
        union()
            .into_iter()
            .collect::<std::collections::HashSet<_>>()
            == all
    });
    // The killed process comes back: its output is cut back to its newest checkpoint, the
    // group rebalances, and both go on from their checkpoints.
    let mut a = start(&args_a);
    wait_for_split(&[&a, &b], 4);
    wait_for("every event exactly once", &[&a, &b], || {
        union().len() == all.len()
    });
    let (log_a, log_b) = (a.terminate(), b.terminate());
    // The survivor restored partitions from the killed process's checkpoints.
    assert!(
        log_b.lines().any(
            |l| l.contains("partition restored from its newest checkpoint")
                && l.contains("instance-a")
        ),
        "{log_b}"
    );
    assert!(
        log_a.contains("partition restored from its newest checkpoint"),
        "{log_a}"
    );
    let mut got = common::lines(&out_a);
    got.extend(common::lines(&out_b));
    got.sort();
    let want = file_run_sorted(&pipeline, &input, dir.path());
    assert_eq!(got.len(), want.len(), "events missing or doubled");
    assert!(
        got == want,
        "the processes' output differs from a file run: state did not follow the partitions"
    );
}
