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
    let tag = common::unique_namespace("k");
    create_topics(
        &brokers,
        &[
            (&format!("{tag}-in"), 4),
            (&format!("{tag}-out"), 2),
            (&format!("{tag}-dead"), 1),
        ],
    );
    let dir = tempfile::tempdir().expect("tmp");
    let input = dir.path().join("events.jsonl");
    let out = common::sluice()
        .args([
            "gen", "--events", "3000", "--users", "60", "--days", "1", "--seed", "3",
        ])
        .arg("--output")
        .arg(&input)
        .output()
        .expect("gen");
    assert!(out.status.success());
    let mut lines: Vec<String> = std::fs::read_to_string(&input)
        .expect("input")
        .lines()
        .map(str::to_owned)
        .collect();
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
    let (file_out, file_dead) = (dir.path().join("file.out"), dir.path().join("file.dead"));
    let run = common::sluice_run(&pipeline, &input, &file_out, &file_dead, 2)
        .output()
        .expect("file run");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    let kafka_run = |expect_events: &str| {
        let out = common::sluice()
            .arg("run")
            .arg(&pipeline)
            .args(["--until-end", "--quiet", "--workers", "2"])
            .output()
            .expect("kafka run");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.contains(expect_events), "{stderr}");
    };
    kafka_run("3000 events written, 3 dead letters");

    let mut want: Vec<String> = std::fs::read_to_string(&file_out)
        .expect("file output")
        .lines()
        .map(str::to_owned)
        .collect();
    let mut got = consume_all(&brokers, &format!("{tag}-out"));
    want.sort();
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
