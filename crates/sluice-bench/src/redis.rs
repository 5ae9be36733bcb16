//! `sluice bench --redis URLS`: the benchmark pipeline with its state in a Redis Cluster, side
//! by side in one run with the memory backend and with a naive layout.
//!
//! The naive layout is the seed's first design: one Redis key per user, feature and hourly
//! (for 7 days: daily) bucket, no hash tags, so a user's buckets are spread over the nodes;
//! every command is its own round trip. Per event it writes the current buckets (sum, count,
//! max, the device set) and reads 24 hourly buckets for each 1-day feature, the current hour for
//! the 1-hour count and 7 daily device sets: about 85 round trips. It only approximates the
//! windows (whole buckets), so it is timed, not compared.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use redis::Value;
use sluice_engine::state::redis::slot_of;
use sluice_engine::state::redis::{Cluster, ClusterOptions, Request};

use crate::e2e::{
    ensure_data, ensure_generated, run_child, BenchOptions, RunReport, BENCH_PIPELINE,
};
use crate::gen::GenKind;
use crate::language::RELATION_PIPELINE;

/// Runs the Redis benchmark and prints a table.
pub fn run(opts: &BenchOptions, urls: &[String], naive_events: u64) -> Result<()> {
    let data = ensure_data(opts)?;
    let exe = std::env::current_exe().context("cannot find the sluice executable")?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let quoted: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    let mut cluster = Cluster::connect(urls, &[], ClusterOptions::default())?;

    // The memory backend, for reference.
    let memory_pipeline = opts.dir.join("bench.toml");
    std::fs::write(&memory_pipeline, BENCH_PIPELINE)?;
    let workers = *opts.workers.iter().max().unwrap_or(&2);
    eprintln!("bench: memory state, {workers} workers");
    let memory = run_child(&exe, &memory_pipeline, &data, &opts.dir, workers)?;

    // Sluice on Redis, per worker count, each run under a fresh namespace.
    let mut rows: Vec<(usize, RunReport)> = Vec::new();
    for &w in &opts.workers {
        let mut best: Option<RunReport> = None;
        for run in 1..=opts.runs {
            let namespace = format!("bench-{stamp}-{w}-{run}");
            let pipeline = opts.dir.join("bench-redis.toml");
            std::fs::write(
                &pipeline,
                format!(
                    "{BENCH_PIPELINE}\n[state]\nbackend = \"redis\"\nurls = [{}]\nnamespace = \"{namespace}\"\n",
                    quoted.join(", ")
                ),
            )?;
            let report = run_child(&exe, &pipeline, &data, &opts.dir, w);
            let deleted = delete_matching(&cluster, &format!("sluice:{namespace}:*"))?;
            let report = report?;
            eprintln!(
                "bench: redis state, workers {w} run {run}/{}: {:.0} events/s, {} round trips, {} commands ({deleted} keys deleted)",
                opts.runs,
                report.events_per_sec,
                report.round_trips.unwrap_or(0),
                report.commands.unwrap_or(0),
            );
            if report.events != opts.events {
                bail!(
                    "run wrote {} events, expected {}",
                    report.events,
                    opts.events
                );
            }
            if best
                .as_ref()
                .is_none_or(|b| report.events_per_sec > b.events_per_sec)
            {
                best = Some(report);
            }
        }
        if let Some(b) = best {
            rows.push((w, b));
        }
    }

    // The naive layout over the first events of the same data.
    eprintln!("bench: naive layout over {naive_events} events");
    let namespace = format!("naive-{stamp}");
    let naive = naive_layout(&mut cluster, &data, naive_events, &namespace);
    let deleted = delete_matching(&cluster, &format!("naive:{namespace}:*"))?;
    eprintln!("bench: naive layout done ({deleted} keys deleted)");
    let (naive_rate, naive_trips) = naive?;

    println!(
        "{} events, {} users, {} days, seed {}; Redis Cluster with {} masters at {}",
        opts.events,
        opts.users,
        opts.days,
        opts.seed,
        cluster.masters().len(),
        urls.join(",")
    );
    println!("| state | workers | events/s | round trips/event | commands/event | vs naive |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| memory | {workers} | {:.0} | - | - | {:.0}x |",
        memory.events_per_sec,
        memory.events_per_sec / naive_rate
    );
    for (w, r) in &rows {
        let per = |x: Option<u64>| x.unwrap_or(0) as f64 / r.events.max(1) as f64;
        println!(
            "| redis, sluice layout | {w} | {:.0} | {:.4} | {:.3} | {:.0}x |",
            r.events_per_sec,
            per(r.round_trips),
            per(r.commands),
            r.events_per_sec / naive_rate
        );
    }
    println!(
        "| redis, naive layout ({naive_events} events) | 1 | {naive_rate:.0} | {naive_trips:.1} | {naive_trips:.1} | 1x |"
    );
    Ok(())
}

/// `sluice bench --relations --redis URLS`: the relation pipeline with its links in memory and
/// in the Redis Cluster, interleaved per run (each Redis run under a fresh namespace, deleted
/// after it), and prints a table.
pub fn run_relations(opts: &BenchOptions, urls: &[String]) -> Result<()> {
    let data = ensure_generated(opts, GenKind::Nested)?;
    let exe = std::env::current_exe().context("cannot find the sluice executable")?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let quoted: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    let cluster = Cluster::connect(urls, &[], ClusterOptions::default())?;
    let memory_pipeline = opts.dir.join("relations.toml");
    std::fs::write(&memory_pipeline, RELATION_PIPELINE)?;
    let mut rows = Vec::new();
    for &w in &opts.workers {
        let (mut memory, mut redis) = (Vec::new(), Vec::new());
        for run in 1..=opts.runs {
            let namespace = format!("bench-relations-{stamp}-{w}-{run}");
            let pipeline = opts.dir.join("relations-redis.toml");
            std::fs::write(
                &pipeline,
                format!(
                    "{RELATION_PIPELINE}\n[state]\nbackend = \"redis\"\nurls = [{}]\nnamespace = \"{namespace}\"\n",
                    quoted.join(", ")
                ),
            )?;
            // Which goes first alternates, so that the machine's drift falls on both alike.
            let order = if run % 2 == 1 {
                [false, true]
            } else {
                [true, false]
            };
            for shared in order {
                let report = if shared {
                    let report = run_child(&exe, &pipeline, &data, &opts.dir, w);
                    delete_matching(&cluster, &format!("sluice:{namespace}:*"))?;
                    report?
                } else {
                    run_child(&exe, &memory_pipeline, &data, &opts.dir, w)?
                };
                if report.events != opts.events || report.dead_letters != 0 {
                    bail!(
                        "a run wrote {} events and {} dead letters, expected {} and 0",
                        report.events,
                        report.dead_letters,
                        opts.events
                    );
                }
                if shared { &mut redis } else { &mut memory }.push(report);
            }
            eprintln!(
                "bench: relations, workers {w} run {run}/{}: memory {:.0}, redis {:.0} events/s",
                opts.runs,
                memory.last().map_or(0.0, |r: &RunReport| r.events_per_sec),
                redis.last().map_or(0.0, |r: &RunReport| r.events_per_sec),
            );
        }
        rows.push((w, memory, redis));
    }
    println!(
        "{} nested events, {} users, {} days, seed {}; Redis Cluster with {} masters",
        opts.events,
        opts.users,
        opts.days,
        opts.seed,
        cluster.masters().len()
    );
    println!(
        "| workers | links in | best events/s | median events/s | peak memory | median vs memory |"
    );
    println!("|---|---|---|---|---|---|");
    let median = |runs: &[RunReport]| {
        let mut rates: Vec<f64> = runs.iter().map(|r| r.events_per_sec).collect();
        rates.sort_by(f64::total_cmp);
        (
            rates.last().copied().unwrap_or(0.0),
            rates.get(rates.len() / 2).copied().unwrap_or(0.0),
        )
    };
    for (w, memory, redis) in &rows {
        let (_, base) = median(memory);
        for (name, runs) in [("memory", memory), ("redis", redis)] {
            let (best, med) = median(runs);
            let peak = runs.iter().filter_map(|r| r.peak_memory_mb).max();
            println!(
                "| {w} | {name} | {best:.0} | {med:.0} | {} | {:.2}x |",
                peak.map_or("?".into(), |m| format!("{m} MB")),
                med / base.max(1e-9)
            );
        }
    }
    Ok(())
}

/// One command, one round trip.
fn call(cluster: &mut Cluster, cmd: redis::Cmd, key: &[u8]) -> Result<Value> {
    let mut replies = cluster.exec(&[Request {
        slot: slot_of(key),
        cmd,
    }])?;
    Ok(replies.pop().unwrap_or(Value::Nil))
}

fn number(v: &Value) -> f64 {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).parse().unwrap_or(0.0),
        Value::Int(i) => *i as f64,
        _ => 0.0,
    }
}

/// Runs the naive layout over the first `events` events; returns events/s and round trips
/// per event.
fn naive_layout(
    cluster: &mut Cluster,
    data: &Path,
    events: u64,
    namespace: &str,
) -> Result<(f64, f64)> {
    const HOUR: i64 = 3_600_000;
    const DAY: i64 = 24 * HOUR;
    let text = std::fs::read_to_string(data)?;
    let before = cluster.traffic().flushes;
    let started = Instant::now();
    let mut done = 0u64;
    for line in text.lines().take(events as usize) {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let user = v["user_id"].to_string();
        let ts = v["ts"].as_i64().unwrap_or(0);
        let amount = v["amount"].as_f64().unwrap_or(0.0);
        let device = v["device_id"].to_string();
        let (hour, day) = (ts.div_euclid(HOUR), ts.div_euclid(DAY));
        let key = |what: &str, bucket: i64| format!("naive:{namespace}:{what}:{user}:{bucket}");

        // Write the current buckets.
        let k = key("sum", hour);
        call(
            cluster,
            redis::cmd("INCRBYFLOAT").arg(&k).arg(amount).clone(),
            k.as_bytes(),
        )?;
        let k = key("cnt", hour);
        call(cluster, redis::cmd("INCR").arg(&k).clone(), k.as_bytes())?;
        let k = key("max", hour);
        let old = call(cluster, redis::cmd("GET").arg(&k).clone(), k.as_bytes())?;
        if matches!(old, Value::Nil) || number(&old) < amount {
            call(
                cluster,
                redis::cmd("SET").arg(&k).arg(amount).clone(),
                k.as_bytes(),
            )?;
        }
        let k = key("dev", day);
        call(
            cluster,
            redis::cmd("SADD").arg(&k).arg(&device).clone(),
            k.as_bytes(),
        )?;

        // Read the windows bucket by bucket.
        let (mut sum, mut count, mut max) = (0.0, 0.0, f64::MIN);
        for h in hour - 23..=hour {
            let k = key("sum", h);
            sum += number(&call(
                cluster,
                redis::cmd("GET").arg(&k).clone(),
                k.as_bytes(),
            )?);
            let k = key("cnt", h);
            count += number(&call(
                cluster,
                redis::cmd("GET").arg(&k).clone(),
                k.as_bytes(),
            )?);
            let k = key("max", h);
            let m = call(cluster, redis::cmd("GET").arg(&k).clone(), k.as_bytes())?;
            if !matches!(m, Value::Nil) {
                max = f64::max(max, number(&m));
            }
        }
        let k = key("cnt", hour);
        let last_hour = number(&call(
            cluster,
            redis::cmd("GET").arg(&k).clone(),
            k.as_bytes(),
        )?);
        let mut devices = std::collections::HashSet::new();
        for d in day - 6..=day {
            let k = key("dev", d);
            if let Value::Array(members) = call(
                cluster,
                redis::cmd("SMEMBERS").arg(&k).clone(),
                k.as_bytes(),
            )? {
                devices.extend(members.into_iter().map(|m| format!("{m:?}")));
            }
        }
        std::hint::black_box((
            sum,
            count,
            max,
            sum / count.max(1.0),
            last_hour,
            devices.len(),
        ));
        done += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    let trips = (cluster.traffic().flushes - before) as f64 / done.max(1) as f64;
    Ok((done as f64 / seconds.max(1e-9), trips))
}

/// Deletes every key matching `pattern` on every master; returns how many.
pub(crate) fn delete_matching(cluster: &Cluster, pattern: &str) -> Result<u64> {
    let mut deleted = 0;
    for addr in cluster.masters() {
        let client = redis::Client::open(format!("redis://{addr}"))?;
        let mut conn = client
            .get_connection()
            .with_context(|| format!("cannot connect to {addr} to delete benchmark keys"))?;
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000)
                .query(&mut conn)?;
            if !keys.is_empty() {
                let mut pipe = redis::pipe();
                for k in &keys {
                    pipe.cmd("UNLINK").arg(k).ignore();
                }
                pipe.exec(&mut conn)?;
                deleted += keys.len() as u64;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    Ok(deleted)
}
