//! `sluice bench --kafka BROKERS`: events per second from a topic, to a topic with one process
//! and with two processes of one consumer group, and to a file with and without checkpoints
//! (at least once against exactly once).
//!
//! The benchmark events (keyed by user) are produced once into a fresh input topic. Each
//! configuration then reads it to its end (`--until-end`) with a group of its own; the figure
//! is events over the wall time from start to the last exit, group join included. The
//! baseline in the same run: the same pipeline file to file.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use crate::e2e::{ensure_data, BenchOptions, BENCH_PIPELINE};

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

/// The benchmark pipeline reading `input` with group `group`, writing topic `output` (or,
/// without one, the file given on the command line), with the extra sections `extra`.
fn pipeline(brokers: &str, input: &str, output: Option<&str>, group: &str, extra: &str) -> String {
    let sink = output.map_or(String::new(), |output| {
        format!("\n[sink]\nkind = \"kafka\"\nbrokers = [\"{brokers}\"]\ntopic = \"{output}\"\nkey = \"user_id\"\n")
    });
    format!(
        "{BENCH_PIPELINE}\n[source]\nkind = \"kafka\"\nbrokers = [\"{brokers}\"]\ntopic = \"{input}\"\ngroup = \"{group}\"\n{sink}{extra}"
    )
}

/// A configuration of the benchmark.
struct Config {
    name: &'static str,
    processes: usize,
    /// The sink topic (`None`: a file per process).
    output: Option<String>,
    /// More pipeline sections.
    extra: String,
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

    let ckpt = opts.dir.join(format!("{tag}-ckpt"));
    let configs = [
        Config {
            name: "topic to topic",
            processes: 1,
            output: Some(out1),
            extra: String::new(),
        },
        Config {
            name: "topic to topic",
            processes: 2,
            output: Some(out2),
            extra: String::new(),
        },
        Config {
            name: "topic to file, at least once",
            processes: 1,
            output: None,
            extra: String::new(),
        },
        Config {
            name: "topic to file, exactly once (checkpoint every 1 s)",
            processes: 1,
            output: None,
            extra: format!(
                "\n[checkpoint]\npath = \"{}\"\ninterval = \"1s\"\n",
                ckpt.display()
            ),
        },
    ];
    let mut rows = Vec::new();
    for (i, config) in configs.iter().enumerate() {
        let processes = config.processes;
        let path = opts.dir.join(format!("bench-kafka-{i}.toml"));
        std::fs::write(
            &path,
            pipeline(
                brokers,
                &input,
                config.output.as_deref(),
                &format!("{tag}-g{i}"),
                &config.extra,
            ),
        )?;
        let workers = (2 / processes).max(1).to_string();
        let started = Instant::now();
        let children: Vec<std::process::Child> = (0..processes)
            .map(|p| {
                let mut command = std::process::Command::new(&exe);
                command
                    .arg("run")
                    .arg(&path)
                    .args(["--until-end", "--quiet", "--workers", &workers])
                    .args(["--instance", &p.to_string()]);
                if config.output.is_none() {
                    command
                        .arg("--output")
                        .arg(opts.dir.join(format!("bench-kafka-{i}-{p}.out.jsonl")));
                }
                command.stderr(std::process::Stdio::piped()).spawn()
            })
            .collect::<std::io::Result<_>>()?;
        let mut written = 0u64;
        let mut first = f64::MAX;
        for child in children {
            let out = child.wait_with_output()?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            anyhow::ensure!(out.status.success(), "a Kafka run failed: {stderr}");
            written += stderr
                .lines()
                .find_map(|l| l.strip_prefix("sluice: ")?.split_once(" events written"))
                .and_then(|(n, _)| n.parse::<u64>().ok())
                .unwrap_or(0);
            let first_message = stderr
                .split(", first message after ")
                .nth(1)
                .and_then(|s| s.split('s').next())
                .and_then(|s| s.parse::<f64>().ok())
                .unwrap_or(0.0);
            first = first.min(first_message);
        }
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "bench: {}, {processes} process(es): {written} events in {secs:.2} s",
            config.name
        );
        // Reading proper: from the first message of any process to the end, less the second
        // for which the end must hold (a second process's rebalance is included).
        let reading = secs - first - sluice_connectors::kafka::QUIET.as_secs_f64();
        rows.push((config.name, processes, workers, written, secs, reading));
    }
    println!("{n} events (100k users, six features), {PARTITIONS} partitions, until the end:");
    println!("| configuration | events written | wall time | events/s | reading time | events/s reading |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| file to file, 1 process, 2 workers (baseline) | {n} | {file_secs:.2} s | {:.0} | | |",
        n as f64 / file_secs
    );
    for (name, processes, workers, written, secs, reading) in rows {
        println!(
            "| Kafka {name}, {processes} process(es), {workers} worker(s) each | {written} | {secs:.2} s | {:.0} | {reading:.2} s | {:.0} |",
            written as f64 / secs,
            written as f64 / reading.max(1e-3)
        );
    }
    Ok(())
}
