//! `sluice bench`: the end-to-end benchmark. Generates seeded transactions, runs the benchmark
//! pipeline file to file as child `sluice run` processes (one per worker count, best of several
//! runs), measures a plain serde_json read-parse-write loop over the same file as a baseline in
//! the same run, and reports events/s, peak memory and ratios.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::gen::{self, GenFormat, GenKind, GenOptions};

/// The benchmark pipeline: six features by user_id (issue #2).
pub const BENCH_PIPELINE: &str = r#"# The benchmark pipeline: six features by user_id.
[event]
time = "ts"

[[feature]]
name = "user_amount_1d"
agg = "sum"
of = "amount"
by = ["user_id"]
window = "1d"

[[feature]]
name = "user_max_amount_1d"
agg = "max"
of = "amount"
by = ["user_id"]
window = "1d"

[[feature]]
name = "user_avg_amount_1d"
agg = "avg"
of = "amount"
by = ["user_id"]
window = "1d"

[[feature]]
name = "user_txn_1d"
agg = "count"
of = "amount"
by = ["user_id"]
window = "1d"

[[feature]]
name = "user_txn_1h"
agg = "count"
by = ["user_id"]
window = "1h"

[[feature]]
name = "user_devices_7d"
agg = "distinct_count"
of = "device_id"
by = ["user_id"]
window = "7d"
"#;

/// What `sluice run --summary-json` writes.
#[derive(Debug, Serialize, Deserialize)]
pub struct RunReport {
    /// Records read.
    pub records: u64,
    /// Enriched events written.
    pub events: u64,
    /// Dead letters written.
    pub dead_letters: u64,
    /// Worker threads.
    pub workers: usize,
    /// Wall time of the run in seconds (inside the process).
    pub seconds: f64,
    /// Records per second.
    pub events_per_sec: f64,
    /// Peak resident memory in MB.
    pub peak_memory_mb: Option<u64>,
    /// Round trips to remote state (flushes), when state is remote.
    #[serde(default)]
    pub round_trips: Option<u64>,
    /// Commands sent to remote state.
    #[serde(default)]
    pub commands: Option<u64>,
    /// Checkpoints completed.
    #[serde(default)]
    pub checkpoints: Option<u64>,
    /// Longest time a shard stopped to snapshot its state, in milliseconds.
    #[serde(default)]
    pub longest_stall_ms: Option<f64>,
}

/// Options of `sluice bench`.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Events to generate.
    pub events: u64,
    /// Distinct users.
    pub users: u64,
    /// Days of event time.
    pub days: u64,
    /// Generator seed.
    pub seed: u64,
    /// Out-of-order amount of the generated events, in milliseconds.
    pub disorder_ms: u64,
    /// Worker counts to run.
    pub workers: Vec<usize>,
    /// Runs per worker count (the best is reported).
    pub runs: usize,
    /// Working directory for the data and outputs.
    pub dir: PathBuf,
    /// Also write the results as JSON here.
    pub json: Option<PathBuf>,
    /// Another `sluice` binary (say, the previous commit's) to run interleaved with this one.
    pub against: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct BenchResult {
    events: u64,
    users: u64,
    days: u64,
    seed: u64,
    disorder_ms: u64,
    input_mb: f64,
    baseline_serde_json_lines_per_sec: f64,
    runs: Vec<WorkerResult>,
}

#[derive(Debug, Serialize)]
struct WorkerResult {
    workers: usize,
    best_events_per_sec: f64,
    median_events_per_sec: f64,
    peak_memory_mb: Option<u64>,
    vs_baseline: f64,
    vs_one_worker: Option<f64>,
}

/// Runs this binary and `other` in turn on the same data (which goes first alternates from run
/// to run, so that the machine's drift falls on both alike) and prints their ratio.
fn compare(opts: &BenchOptions, pipeline: &Path, data: &Path, other: &Path) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find the sluice executable")?;
    println!("this: {}\nother: {}", exe.display(), other.display());
    println!(
        "| workers | this median events/s | other median events/s | median ratio | best ratio |"
    );
    println!("|---|---|---|---|---|");
    for &workers in &opts.workers {
        let (mut this, mut that) = (Vec::new(), Vec::new());
        for run in 1..=opts.runs {
            let order = if run % 2 == 1 {
                [&exe, &other.to_path_buf()]
            } else {
                [&other.to_path_buf(), &exe]
            };
            for bin in order {
                let report = run_child(bin, pipeline, data, &opts.dir, workers)?;
                if report.events != opts.events {
                    bail!(
                        "{} wrote {} events, expected {}",
                        bin.display(),
                        report.events,
                        opts.events
                    );
                }
                let rates = if *bin == exe { &mut this } else { &mut that };
                rates.push(report.events_per_sec);
            }
            eprintln!(
                "bench: workers {workers} run {run}/{}: this {:.0}, other {:.0} events/s",
                opts.runs,
                this.last().copied().unwrap_or(0.0),
                that.last().copied().unwrap_or(0.0)
            );
        }
        this.sort_by(f64::total_cmp);
        that.sort_by(f64::total_cmp);
        let (m1, m2) = (this[this.len() / 2], that[that.len() / 2]);
        let (b1, b2) = (this[this.len() - 1], that[that.len() - 1]);
        println!(
            "| {workers} | {m1:.0} | {m2:.0} | {:.3}x | {:.3}x |",
            m1 / m2.max(1e-9),
            b1 / b2.max(1e-9)
        );
    }
    Ok(())
}

/// The benchmark data for `opts` (flat transactions), generated on first use.
pub fn ensure_data(opts: &BenchOptions) -> Result<PathBuf> {
    ensure_generated(opts, GenKind::Transactions)
}

/// Generated data of `kind` for `opts`, cached in `opts.dir` under a name that holds every
/// option (`transactions-…jsonl`, `nested-…jsonl`); generated on first use.
pub fn ensure_generated(opts: &BenchOptions, kind: GenKind) -> Result<PathBuf> {
    std::fs::create_dir_all(&opts.dir)
        .with_context(|| format!("cannot create {}", opts.dir.display()))?;
    let name = match kind {
        GenKind::Transactions => "transactions",
        GenKind::Nested => "nested",
    };
    let data = opts.dir.join(format!(
        "{name}-{}-{}-{}-{}-{}.jsonl",
        opts.events, opts.users, opts.days, opts.seed, opts.disorder_ms
    ));
    if !data.exists() {
        eprintln!(
            "bench: generating {} events into {}",
            opts.events,
            data.display()
        );
        let tmp = data.with_extension("tmp");
        let mut f = File::create(&tmp)?;
        gen::write_events(
            kind,
            &GenOptions {
                events: opts.events,
                users: opts.users,
                days: opts.days,
                seed: opts.seed,
                disorder_ms: opts.disorder_ms,
                start_ms: 1_767_225_600_000,
                format: GenFormat::Jsonl,
            },
            &mut f,
        )?;
        std::fs::rename(&tmp, &data)?;
    }
    Ok(data)
}

/// Runs the benchmark and prints a table.
pub fn run(opts: &BenchOptions) -> Result<()> {
    let data = ensure_data(opts)?;
    let pipeline = opts.dir.join("bench.toml");
    std::fs::write(&pipeline, BENCH_PIPELINE)?;
    if let Some(other) = &opts.against {
        return compare(opts, &pipeline, &data, other);
    }
    let input_mb = std::fs::metadata(&data)?.len() as f64 / 1e6;

    eprintln!("bench: baseline (single-threaded serde_json read-parse-write)");
    let baseline = baseline_lines_per_sec(&data, &opts.dir.join("baseline.out"))?;
    eprintln!("bench: baseline {:.0} lines/s", baseline);

    let exe = std::env::current_exe().context("cannot find the sluice executable")?;
    let mut results: Vec<WorkerResult> = Vec::new();
    for &workers in &opts.workers {
        let mut rates = Vec::new();
        let mut peak = None;
        for run in 1..=opts.runs {
            let report = run_child(&exe, &pipeline, &data, &opts.dir, workers)?;
            eprintln!(
                "bench: workers {workers} run {run}/{}: {:.0} events/s, peak {} MB",
                opts.runs,
                report.events_per_sec,
                report.peak_memory_mb.unwrap_or(0)
            );
            if report.events != opts.events {
                bail!(
                    "run wrote {} events, expected {}",
                    report.events,
                    opts.events
                );
            }
            rates.push(report.events_per_sec);
            peak = peak.max(report.peak_memory_mb);
        }
        rates.sort_by(f64::total_cmp);
        let best = *rates.last().unwrap_or(&0.0);
        let median = rates[rates.len() / 2];
        let one = results
            .iter()
            .find(|r| r.workers == 1)
            .map(|r| r.best_events_per_sec);
        results.push(WorkerResult {
            workers,
            best_events_per_sec: best,
            median_events_per_sec: median,
            peak_memory_mb: peak,
            vs_baseline: best / baseline,
            vs_one_worker: one.map(|o| best / o),
        });
    }

    let result = BenchResult {
        events: opts.events,
        users: opts.users,
        days: opts.days,
        seed: opts.seed,
        disorder_ms: opts.disorder_ms,
        input_mb,
        baseline_serde_json_lines_per_sec: baseline,
        runs: results,
    };
    println!(
        "{} events, {} users, {} days, seed {}, disorder {} ms ({:.0} MB of JSONL)",
        result.events, result.users, result.days, result.seed, result.disorder_ms, result.input_mb
    );
    println!(
        "baseline serde_json read-parse-write, 1 thread: {:.0} lines/s",
        baseline
    );
    println!(
        "| workers | best events/s | median events/s | peak memory | vs baseline | vs 1 worker |"
    );
    println!("|---|---|---|---|---|---|");
    for r in &result.runs {
        println!(
            "| {} | {:.0} | {:.0} | {} MB | {:.2}x | {} |",
            r.workers,
            r.best_events_per_sec,
            r.median_events_per_sec,
            r.peak_memory_mb.map_or("?".into(), |m| m.to_string()),
            r.vs_baseline,
            r.vs_one_worker.map_or("-".into(), |v| format!("{v:.2}x"))
        );
    }
    if let Some(path) = &opts.json {
        std::fs::write(path, serde_json::to_string_pretty(&result)?)?;
    }
    Ok(())
}

/// Runs `sluice run` as a child process and returns its summary.
pub fn run_child(
    exe: &Path,
    pipeline: &Path,
    data: &Path,
    dir: &Path,
    workers: usize,
) -> Result<RunReport> {
    let out = dir.join("bench.out.jsonl");
    let summary = dir.join("summary.json");
    let _ = std::fs::remove_file(&out);
    let status = Command::new(exe)
        .arg("run")
        .arg(pipeline)
        .arg("--input")
        .arg(data)
        .arg("--output")
        .arg(&out)
        .arg("--workers")
        .arg(workers.to_string())
        .arg("--quiet")
        .arg("--summary-json")
        .arg(&summary)
        .stderr(std::process::Stdio::null())
        .status()
        .context("cannot start sluice run")?;
    if !status.success() {
        bail!("sluice run failed: {status}");
    }
    let report: RunReport = serde_json::from_str(&std::fs::read_to_string(&summary)?)?;
    Ok(report)
}

/// A plain single-threaded loop: read a line, parse it into a `serde_json::Value`, write it
/// back. What a naive enrichment job costs before any feature is computed.
fn baseline_lines_per_sec(input: &Path, output: &Path) -> Result<f64> {
    let started = Instant::now();
    let reader = BufReader::with_capacity(1 << 20, File::open(input)?);
    let mut writer = BufWriter::with_capacity(1 << 20, File::create(output)?);
    let mut lines = 0u64;
    for line in reader.lines() {
        let line = line?;
        let value: serde_json::Value = serde_json::from_str(&line)?;
        serde_json::to_writer(&mut writer, &value)?;
        writer.write_all(b"\n")?;
        lines += 1;
    }
    writer.flush()?;
    let rate = lines as f64 / started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(output);
    Ok(rate)
}
