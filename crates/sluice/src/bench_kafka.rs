//! `sluice bench --kafka BROKERS`: events per second topic to topic, with one process and with
//! two processes of one consumer group.
//!
//! The benchmark events (keyed by user) are produced once into a fresh input topic. Each
//! configuration then reads it to its end (`--until-end`) with a group of its own and writes a
//! fresh output topic; the figure is events over the wall time from start to the last exit,
//! group join included. The baseline in the same run: the same pipeline file to file.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use crate::bench::{ensure_data, BenchOptions, BENCH_PIPELINE};

/// Partitions of the benchmark topics.
const PARTITIONS: i32 = 4;

fn create_topics(brokers: &str, names: &[String]) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .context("cannot create a Kafka admin client")?;
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|n| NewTopic::new(n, PARTITIONS, TopicReplication::Fixed(1)))
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    for r in runtime.block_on(admin.create_topics(&topics, &AdminOptions::new()))? {
        if let Err((topic, e)) = r {
            bail!("cannot create topic {topic}: {e}");
        }
    }
    Ok(())
}

fn produce(brokers: &str, topic: &str, data: &Path, events: u64) -> Result<u64> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("linger.ms", "20")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .context("cannot create a Kafka producer")?;
    let text = std::fs::read_to_string(data)?;
    let mut n = 0;
    for line in text.lines().take(events as usize) {
        // The user id is the key: `"user_id":"u123"` in the generated records.
        let key = line
            .split("\"user_id\":\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("");
        let mut record = BaseRecord::to(topic).payload(line).key(key);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    producer.poll(Duration::from_millis(10));
                    record = back;
                }
            }
        }
        n += 1;
    }
    producer.flush(Duration::from_secs(60))?;
    Ok(n)
}

fn pipeline(brokers: &str, input: &str, output: &str, group: &str) -> String {
    format!(
        "{BENCH_PIPELINE}\n[source]\nkind = \"kafka\"\nbrokers = [\"{brokers}\"]\ntopic = \"{input}\"\ngroup = \"{group}\"\n\n[sink]\nkind = \"kafka\"\nbrokers = [\"{brokers}\"]\ntopic = \"{output}\"\nkey = \"user_id\"\n"
    )
}

/// Runs the configurations and prints a table.
pub fn run(opts: &BenchOptions, brokers: &str) -> Result<()> {
    let data = ensure_data(opts)?;
    let exe = std::env::current_exe().context("cannot find the sluice executable")?;
    let tag = format!(
        "bench-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    );
    let (input, out1, out2) = (
        format!("{tag}-in"),
        format!("{tag}-out1"),
        format!("{tag}-out2"),
    );
    create_topics(brokers, &[input.clone(), out1.clone(), out2.clone()])?;
    eprintln!("bench: producing {} events into {input}", opts.events);
    let n = produce(brokers, &input, &data, opts.events)?;

    let file_pipeline = opts.dir.join("bench.toml");
    std::fs::write(&file_pipeline, BENCH_PIPELINE)?;
    let started = Instant::now();
    let file = std::process::Command::new(&exe)
        .arg("run")
        .arg(&file_pipeline)
        .arg("--input")
        .arg(&data)
        .arg("--output")
        .arg(opts.dir.join("bench.out.jsonl"))
        .args(["--quiet", "--workers", "2"])
        .output()?;
    anyhow::ensure!(file.status.success(), "the file run failed");
    let file_secs = started.elapsed().as_secs_f64();

    let mut rows = Vec::new();
    for (processes, output) in [(1usize, &out1), (2, &out2)] {
        let path = opts.dir.join(format!("bench-kafka-{processes}.toml"));
        std::fs::write(
            &path,
            pipeline(brokers, &input, output, &format!("{tag}-g{processes}")),
        )?;
        let workers = (2 / processes).max(1).to_string();
        let started = Instant::now();
        let children: Vec<std::process::Child> = (0..processes)
            .map(|_| {
                std::process::Command::new(&exe)
                    .arg("run")
                    .arg(&path)
                    .args(["--until-end", "--quiet", "--workers", &workers])
                    .stderr(std::process::Stdio::piped())
                    .spawn()
            })
            .collect::<std::io::Result<_>>()?;
        let mut written = 0u64;
        for child in children {
            let out = child.wait_with_output()?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            anyhow::ensure!(out.status.success(), "a Kafka run failed: {stderr}");
            written += stderr
                .split("sluice: ")
                .nth(1)
                .and_then(|s| s.split(' ').next())
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0);
        }
        let secs = started.elapsed().as_secs_f64();
        eprintln!("bench: {processes} process(es): {written} events in {secs:.2} s");
        rows.push((processes, workers, written, secs));
    }
    println!("{n} events (100k users, six features), {PARTITIONS} partitions, topic to topic, until the end:");
    println!("| configuration | events written | wall time | events/s |");
    println!("|---|---|---|---|");
    println!(
        "| file to file, 1 process, 2 workers (baseline) | {n} | {file_secs:.2} s | {:.0} |",
        n as f64 / file_secs
    );
    for (processes, workers, written, secs) in rows {
        println!(
            "| Kafka, {processes} process(es) of one group, {workers} worker(s) each | {written} | {secs:.2} s | {:.0} |",
            written as f64 / secs
        );
    }
    Ok(())
}
