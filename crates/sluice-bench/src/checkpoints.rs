//! `sluice bench --checkpoints`: what checkpoints cost.
//!
//! 1. End to end: the benchmark pipeline file to file, without checkpoints and with one every
//!    second, interleaved runs; throughput, checkpoints taken, the longest time a shard stopped
//!    to snapshot, the size of the last checkpoint.
//! 2. In process, `--keys` keys (default 1M) of the benchmark pipeline with three events each,
//!    split over two shards handled on two threads (as with two workers): the time to snapshot
//!    (first, then with the buffers reused), write and sync, and read, decode and rebuild.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use sluice_core::{key_hash, FeatureValue, FieldObs, KeyEncoder, Plan};
use sluice_engine::checkpoint;
use sluice_engine::state::{MemoryBackend, StateBackend, Update};

use crate::e2e::{ensure_data, run_child, BenchOptions, RunReport, BENCH_PIPELINE};

/// Runs both parts and prints tables.
pub fn run(opts: &BenchOptions, plan: &Plan, keys: u64) -> Result<()> {
    let data = ensure_data(opts)?;
    let exe = std::env::current_exe().context("cannot find the sluice executable")?;
    let plain = opts.dir.join("bench.toml");
    std::fs::write(&plain, BENCH_PIPELINE)?;
    // Absolute: a relative path in a pipeline file is relative to the file.
    let ckpt_dir = std::fs::canonicalize(&opts.dir)?.join("ckpt");
    let with = opts.dir.join("bench-ckpt.toml");
    std::fs::write(
        &with,
        format!(
            "{BENCH_PIPELINE}\n[checkpoint]\npath = \"{}\"\ninterval = \"1s\"\nkeep = 2\n",
            ckpt_dir.display()
        ),
    )?;
    let workers = *opts.workers.iter().max().unwrap_or(&2);
    let (mut without, mut checkpointed): (Vec<RunReport>, Vec<RunReport>) = (vec![], vec![]);
    for run in 1..=opts.runs {
        let _ = checkpoint::clear(&ckpt_dir);
        let a = run_child(&exe, &plain, &data, &opts.dir, workers)?;
        let b = run_child(&exe, &with, &data, &opts.dir, workers)?;
        eprintln!(
            "bench: run {run}/{}: no checkpoints {:.0} events/s; every 1s {:.0} events/s, {} checkpoints, longest shard stall {:.0} ms",
            opts.runs,
            a.events_per_sec,
            b.events_per_sec,
            b.checkpoints.unwrap_or(0),
            b.longest_stall_ms.unwrap_or(0.0)
        );
        without.push(a);
        checkpointed.push(b);
    }
    let last_size: u64 = checkpoint::latest(&ckpt_dir)?
        .0
        .map_or(0, |m| m.files.iter().map(|f| f.bytes).sum());
    let median = |v: &mut Vec<RunReport>| {
        v.sort_by(|a, b| a.events_per_sec.total_cmp(&b.events_per_sec));
        v[v.len() / 2].events_per_sec
    };
    let stall = checkpointed
        .iter()
        .filter_map(|r| r.longest_stall_ms)
        .fold(0.0, f64::max);
    let count: u64 = checkpointed
        .iter()
        .filter_map(|r| r.checkpoints)
        .max()
        .unwrap_or(0);
    // This VM's speed drifts between runs: each checkpointed run is also compared with the
    // plain run just before it, and the median of those changes is printed too.
    let mut pairs: Vec<f64> = without
        .iter()
        .zip(&checkpointed)
        .map(|(a, b)| (b.events_per_sec / a.events_per_sec - 1.0) * 100.0)
        .collect();
    pairs.sort_by(f64::total_cmp);
    let (m0, m1) = (median(&mut without), median(&mut checkpointed));
    println!(
        "{} events, {} users, {} days, {workers} workers, {} interleaved runs each",
        opts.events, opts.users, opts.days, opts.runs
    );
    println!("| checkpoints | median events/s | checkpoints per run | longest shard stall | last checkpoint size |");
    println!("|---|---|---|---|---|");
    println!("| none | {m0:.0} | - | - | - |");
    println!(
        "| every 1 s | {m1:.0} ({:+.1}%) | {count} | {stall:.0} ms | {:.0} MB |",
        (m1 / m0 - 1.0) * 100.0,
        last_size as f64 / 1e6
    );
    let shown: Vec<String> = pairs.iter().map(|p| format!("{p:+.1}%")).collect();
    println!(
        "Change of each checkpointed run against the plain run before it, sorted: {}; median {:+.1}%",
        shown.join(", "),
        pairs[pairs.len() / 2]
    );

    in_process(plan, keys, &opts.dir)
}

/// Snapshot and restore timings for `keys` keys, in process.
fn in_process(plan: &Plan, keys: u64, dir: &Path) -> Result<()> {
    let field = |name: &str| plan.fields.iter().position(|f| f == name);
    let (amount, device) = (field("amount"), field("device_id"));
    eprintln!("bench: building {keys} keys in memory");
    let mut backend = MemoryBackend::default();
    let base = 1_767_225_600_000i64;
    let mut out = Vec::new();
    let mut encoded = Vec::new();
    let mut devices = Vec::new();
    let chunk = 4096u64;
    let mut ts = base;
    for start in (0..keys).step_by(chunk as usize) {
        let end = (start + chunk).min(keys);
        encoded.clear();
        devices.clear();
        let mut spans = Vec::new();
        for k in start..end {
            let from = encoded.len();
            KeyEncoder::new(&mut encoded).str(&format!("u{k}"));
            spans.push((from, encoded.len()));
            devices.push(format!("sd{}", k % 7).into_bytes());
        }
        let mut fields: Vec<Vec<FieldObs<'_>>> = Vec::new();
        for (i, _) in spans.iter().enumerate() {
            let mut f = vec![FieldObs::default(); plan.fields.len()];
            if let Some(a) = amount {
                f[a] = FieldObs {
                    present: true,
                    num: 10.0 + (i % 100) as f64 / 4.0,
                    bytes: b"",
                };
            }
            if let Some(d) = device {
                f[d] = FieldObs {
                    present: true,
                    num: 0.0,
                    bytes: &devices[i],
                };
            }
            fields.push(f);
        }
        for _round in 0..3 {
            let updates: Vec<Update<'_>> = spans
                .iter()
                .zip(&fields)
                .map(|(&(a, b), f)| {
                    ts += 1;
                    Update {
                        key_spec: 0,
                        hash: key_hash(&encoded[a..b]),
                        group: sluice_core::key_group(&encoded[a..b]),
                        key: &encoded[a..b],
                        ts,
                        floor: ts - plan.lateness_ms,
                        fields: f,
                        matched: 0,
                        id: None,
                    }
                })
                .collect();
            out.clear();
            backend.apply(plan, &updates, &mut out)?;
        }
    }
    let _: &[FeatureValue] = &out;
    let live = backend.live_keys();

    // Two shards, as with two workers: each half encoded, written and decoded on its own
    // thread. The first snapshot faults its buffer in; a running shard reuses the buffer of
    // its previous checkpoint, so the second is the steady state.
    let halves: Vec<MemoryBackend> = {
        let groups = checkpoint::decode_shard(
            &checkpoint::encode_shard(&backend.group_refs())?,
            Path::new("memory"),
        )?;
        drop(backend);
        let mut parts: Vec<Vec<_>> = vec![Vec::new(), Vec::new()];
        for g in groups {
            parts[sluice_core::shard_of(g.group, 2)].push(g);
        }
        parts
            .into_iter()
            .map(|p| MemoryBackend::restore(plan, p, ts - plan.lateness_ms))
            .collect()
    };
    let root = dir.join("ckpt-keys");
    let timed = |f: &(dyn Fn(usize) -> Result<()> + Sync)| -> Result<std::time::Duration> {
        let t = Instant::now();
        std::thread::scope(|scope| {
            let hs: Vec<_> = (0..2).map(|i| scope.spawn(move || f(i))).collect();
            hs.into_iter().try_for_each(|h| {
                h.join()
                    .unwrap_or_else(|_| anyhow::bail!("thread panicked"))
            })
        })?;
        Ok(t.elapsed())
    };
    let buffers: Vec<std::sync::Mutex<Vec<u8>>> =
        (0..2).map(|_| std::sync::Mutex::new(Vec::new())).collect();
    let encode_into = |i: usize| -> Result<()> {
        let mut b = buffers[i].lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        Ok(checkpoint::encode_shard_into(
            &halves[i].group_refs(),
            &mut b,
        )?)
    };
    let first_encode = timed(&encode_into)?;
    let encode = timed(&encode_into)?;
    let sizes: Vec<u64> = buffers
        .iter()
        .map(|b| b.lock().map_or(0, |b| b.len() as u64))
        .collect();
    let write = timed(&|i| {
        let b = buffers[i].lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        checkpoint::write_file(&root, &format!("shard-{i}.bin"), &b)?;
        Ok(())
    })?;
    drop(buffers);
    drop(halves);
    let decoded: Vec<std::sync::Mutex<Option<MemoryBackend>>> =
        (0..2).map(|_| std::sync::Mutex::new(None)).collect();
    let decode = timed(&|i| {
        let groups = checkpoint::read_shard(&root.join(format!("shard-{i}.bin")))?;
        let restored = MemoryBackend::restore(plan, groups, ts - plan.lateness_ms);
        if let Ok(mut d) = decoded[i].lock() {
            *d = Some(restored);
        }
        Ok(())
    })?;
    let restored: usize = decoded
        .iter()
        .map(|d| {
            d.lock()
                .map_or(0, |d| d.as_ref().map_or(0, |b| b.live_keys()))
        })
        .sum();
    anyhow::ensure!(restored == live, "restored {restored} keys of {live}");
    let _ = std::fs::remove_dir_all(&root);
    println!();
    println!("{live} keys, 3 events each, two shards on two threads, in process:");
    println!("| first snapshot (encode) | next snapshots | write + fsync | read + decode + rebuild | size |");
    println!("|---|---|---|---|---|");
    println!(
        "| {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} MB |",
        first_encode.as_secs_f64() * 1e3,
        encode.as_secs_f64() * 1e3,
        write.as_secs_f64() * 1e3,
        decode.as_secs_f64() * 1e3,
        sizes.iter().sum::<u64>() as f64 / 1e6
    );
    Ok(())
}
