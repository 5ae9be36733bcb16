//! `sluice bench --vs-duckdb`: Sluice against DuckDB computing the same features as SQL window
//! functions, on the same seeded transactions, file to file.
//!
//! DuckDB (from PyPI, installed once into a Python virtual environment under the target
//! directory, `<target>/duckdb-venv`) runs the benchmark pipeline's features as
//! `agg(..) OVER (PARTITION BY key ORDER BY time RANGE BETWEEN W PRECEDING AND CURRENT ROW)`
//! (the SQL is derived from the pipeline's plan by [`feature_columns`]). Two legs:
//!
//! - **JSONL**: DuckDB reads the JSONL input and writes newline-delimited JSON; Sluice runs
//!   `sluice run PIPELINE --input in.jsonl --output out.jsonl`.
//! - **Parquet**: both read a Parquet copy of the input (written by DuckDB, typed columns) and
//!   write Parquet. A `sluice` that cannot read or write Parquet has this leg reported as not
//!   supported, and the run goes on.
//!
//! Each leg runs `runs` rounds, DuckDB and Sluice as child processes, which goes first
//! alternating from round to round; the table gives the medians of the process wall times,
//! their ratio and the peak memory of both. DuckDB runs with as many threads as Sluice has
//! workers (the largest `--workers` value).
//!
//! After the first round of each leg, DuckDB cross-checks the two outputs: rows are matched by
//! `event_id` and their feature values compared (floats with a relative tolerance of 1e-9),
//! over the rows whose key and time are unique. Rows that share their key's timestamp are left
//! out: SQL's `RANGE ... CURRENT ROW` includes every row of the same time, where Sluice's
//! value includes only the rows that arrived before (docs/semantics.md).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sluice_core::agg::Agg;
use sluice_core::plan::{FeatureSpec, Plan};

use crate::e2e::{ensure_data, BenchOptions, RunReport};

/// The columns of the generated transactions (`sluice gen`) and their DuckDB types.
pub const TRANSACTION_COLUMNS: [(&str, &str); 6] = [
    ("event_id", "VARCHAR"),
    ("user_id", "VARCHAR"),
    ("device_id", "VARCHAR"),
    ("merchant_id", "VARCHAR"),
    ("amount", "DOUBLE"),
    ("ts", "BIGINT"),
];

/// What pip installs into the virtual environment.
const DUCKDB_REQUIREMENT: &str = "duckdb>=2.0,<3";

/// Relative tolerance of the cross-check's float comparison.
const TOLERANCE: f64 = 1e-9;

/// The Python driver, written into the bench directory at run time. It runs its SQL arguments
/// in one in-memory DuckDB with `threads` threads, times the last one alone (the earlier ones
/// are setup) and prints one JSON line: that time, the peak resident memory of the process, the
/// first row of the result and DuckDB's version.
const DRIVER: &str = r#""""Sluice's DuckDB bench driver (written by `sluice bench --vs-duckdb`).

Usage: python duckdb_bench.py THREADS SQL [SQL...]
"""
import json
import resource
import sys
import time

import duckdb


def main():
    threads = int(sys.argv[1])
    *setup, timed = sys.argv[2:]
    con = duckdb.connect()
    con.execute(f"SET threads={threads}")
    for sql in setup:
        con.execute(sql)
    started = time.perf_counter()
    row = con.execute(timed).fetchone()
    seconds = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({
        "seconds": seconds,
        "peak_memory_mb": peak_kb // 1024,
        "row": list(row) if row is not None else None,
        "version": duckdb.__version__,
    }, default=str))


main()
"#;

/// A leg of the comparison: the file format both read and write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Leg {
    /// JSONL in, JSONL out (DuckDB: newline-delimited JSON).
    Jsonl,
    /// Parquet in, Parquet out.
    Parquet,
}

impl Leg {
    /// The leg's name in the table.
    pub fn label(self) -> &'static str {
        match self {
            Leg::Jsonl => "JSONL",
            Leg::Parquet => "Parquet",
        }
    }

    /// The goal for DuckDB's wall time over Sluice's (issue 16).
    pub fn goal(self) -> f64 {
        match self {
            Leg::Jsonl => 3.0,
            Leg::Parquet => 5.0,
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Leg::Jsonl => "jsonl",
            Leg::Parquet => "parquet",
        }
    }
}

/// A file DuckDB reads: its path, its format and whether the features sit in a nested
/// `features` object (Sluice's JSONL output) or in columns of their own.
#[derive(Debug, Clone, Copy)]
struct Table<'a> {
    path: &'a Path,
    leg: Leg,
    nested_features: bool,
}

impl Table<'_> {
    /// The table function that reads it, with `columns` (name, DuckDB type) for JSON.
    fn read_sql(&self, columns: &[(String, String)]) -> String {
        let path = literal(&self.path.display().to_string());
        match self.leg {
            Leg::Jsonl => {
                let cols: Vec<String> = columns
                    .iter()
                    .map(|(name, ty)| format!("{}: {}", literal(name), literal(ty)))
                    .collect();
                format!(
                    "read_json({path}, format = 'newline_delimited', columns = {{{}}})",
                    cols.join(", ")
                )
            }
            Leg::Parquet => format!("read_parquet({path})"),
        }
    }

    /// The expression of feature `name`.
    fn feature(&self, name: &str) -> String {
        if self.nested_features {
            format!("features.{}", ident(name))
        } else {
            ident(name)
        }
    }
}

/// A SQL string literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A SQL identifier.
fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The transactions' columns, owned.
fn input_columns() -> Vec<(String, String)> {
    TRANSACTION_COLUMNS
        .iter()
        .map(|&(n, t)| (n.to_owned(), t.to_owned()))
        .collect()
}

/// The SQL aggregate of one feature, without its window: `sum("amount")`, `count(*)`,
/// `count(DISTINCT "device_id")`. Aggregations with no plain SQL equivalent are an error.
fn aggregate_sql(f: &FeatureSpec) -> Result<String> {
    let of = f.of.as_deref().map(ident);
    let func = match f.agg {
        Agg::Count => return Ok(format!("count({})", of.as_deref().unwrap_or("*"))),
        Agg::DistinctCount => {
            let of = of.context("distinct_count needs `of`")?;
            return Ok(format!("count(DISTINCT {of})"));
        }
        Agg::Sum => "sum",
        Agg::Avg => "avg",
        Agg::Min => "min",
        Agg::Max => "max",
        Agg::Variance => "var_samp",
        Agg::Stddev => "stddev_samp",
        Agg::VariancePop => "var_pop",
        Agg::StddevPop => "stddev_pop",
        other => bail!(
            "feature `{}`: {other} has no SQL window equivalent in this bench",
            f.name
        ),
    };
    let of = of.with_context(|| format!("feature `{}`: {func} needs `of`", f.name))?;
    Ok(format!("{func}({of})"))
}

/// The window clause of one feature: `PARTITION BY key ORDER BY time RANGE BETWEEN W PRECEDING
/// AND CURRENT ROW`, both bounds inclusive like Sluice's windows.
fn window_sql(f: &FeatureSpec, time_field: &str) -> Result<String> {
    if f.filter.is_some() {
        bail!("feature `{}`: `where` filters are not translated", f.name);
    }
    if f.granularity_ms != 1 {
        bail!("feature `{}`: only exact windows are translated", f.name);
    }
    if let Some(path) = f.by.iter().chain(&f.of).find(|p| p.contains('.')) {
        bail!(
            "feature `{}`: nested path `{path}` is not translated",
            f.name
        );
    }
    let partition = if f.by.is_empty() {
        String::new()
    } else {
        let by: Vec<String> = f.by.iter().map(|b| ident(b)).collect();
        format!("PARTITION BY {} ", by.join(", "))
    };
    Ok(format!(
        "{partition}ORDER BY {} RANGE BETWEEN {} PRECEDING AND CURRENT ROW",
        ident(time_field),
        f.window_ms
    ))
}

/// The select-list entry of each feature, in order: `sum("amount") OVER (PARTITION
/// BY "user_id" ORDER BY "ts" RANGE BETWEEN 86400000 PRECEDING AND CURRENT ROW) AS
/// "user_amount_1d"`. Relation features, filters, nested paths, bucketed windows and
/// aggregations without a SQL equivalent are an error.
pub fn feature_columns(features: &[FeatureSpec], time_field: &str) -> Result<Vec<String>> {
    features
        .iter()
        .map(|f| {
            Ok(format!(
                "{} OVER ({}) AS {}",
                aggregate_sql(f)?,
                window_sql(f, time_field)?,
                ident(&f.name)
            ))
        })
        .collect()
}

/// DuckDB's job: every input row with its features, from `source` (a table function).
pub fn feature_query(features: &[FeatureSpec], time_field: &str, source: &str) -> Result<String> {
    Ok(format!(
        "SELECT *, {} FROM {source}",
        feature_columns(features, time_field)?.join(", ")
    ))
}

/// `COPY (query) TO 'path' (FORMAT ...)`, newline-delimited JSON or Parquet.
fn copy_sql(query: &str, path: &Path, leg: Leg) -> String {
    let format = match leg {
        Leg::Jsonl => "json",
        Leg::Parquet => "parquet",
    };
    format!(
        "COPY ({query}) TO {} (FORMAT {format})",
        literal(&path.display().to_string())
    )
}

/// The cross-check: one row `(unique rows, rows compared, rows that differ)`. `sluice` rows
/// are matched with `duck` rows by `event_id`; only rows whose time is unique among the rows
/// of each of their keys are compared; a row missing from `duck` differs.
fn check_sql(
    features: &[FeatureSpec],
    time_field: &str,
    sluice: Table<'_>,
    duck: Table<'_>,
) -> String {
    let names: Vec<&str> = features.iter().map(|f| f.name.as_str()).collect();
    let mut keys: Vec<&Vec<String>> = features.iter().map(|f| &f.by).collect();
    keys.sort();
    keys.dedup();
    let time = ident(time_field);
    let unique: Vec<String> = keys
        .iter()
        .map(|by| {
            let cols: Vec<String> = by.iter().map(|b| ident(b)).chain([time.clone()]).collect();
            format!("count(*) OVER (PARTITION BY {}) = 1", cols.join(", "))
        })
        .collect();
    let sluice_cols: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{} AS s{i}", sluice.feature(n)))
        .collect();
    let duck_cols: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{} AS d{i}", duck.feature(n)))
        .collect();
    let same: Vec<String> = (0..names.len())
        .map(|i| {
            format!(
                "coalesce(s{i} IS NOT DISTINCT FROM d{i} \
                 OR abs(s{i} - d{i}) <= {TOLERANCE:e} * greatest(abs(s{i}), abs(d{i})), false)"
            )
        })
        .collect();
    let (sluice_read, duck_read) = check_reads(features, time_field, &names, sluice, duck);
    format!(
        "WITH s AS (SELECT event_id AS s_id, {}, {} AS unique_time FROM {sluice_read}), \
         d AS (SELECT event_id AS d_id, {} FROM {duck_read}) \
         SELECT count(*) FILTER (WHERE unique_time), \
                count(d_id) FILTER (WHERE unique_time), \
                count(*) FILTER (WHERE unique_time AND (d_id IS NULL OR NOT ({}))) \
         FROM s LEFT JOIN d ON s_id = d_id",
        sluice_cols.join(", "),
        unique.join(" AND "),
        duck_cols.join(", "),
        same.join(" AND ")
    )
}

/// The table functions that read Sluice's and DuckDB's outputs for the cross-check.
fn check_reads(
    features: &[FeatureSpec],
    time_field: &str,
    names: &[&str],
    sluice: Table<'_>,
    duck: Table<'_>,
) -> (String, String) {
    let doubles: Vec<(String, String)> = names
        .iter()
        .map(|n| ((*n).to_owned(), "DOUBLE".to_owned()))
        .collect();
    let mut keys: Vec<(String, String)> = vec![
        ("event_id".into(), "VARCHAR".into()),
        (time_field.into(), "BIGINT".into()),
    ];
    for f in features {
        for b in &f.by {
            if !keys.iter().any(|(k, _)| k == b) {
                keys.push((b.clone(), "VARCHAR".into()));
            }
        }
    }
    let mut sluice_cols = keys;
    if sluice.nested_features {
        let fields: Vec<String> = names
            .iter()
            .map(|n| format!("{} DOUBLE", ident(n)))
            .collect();
        sluice_cols.push(("features".into(), format!("STRUCT({})", fields.join(", "))));
    } else {
        sluice_cols.extend(doubles.iter().cloned());
    }
    let mut duck_cols = vec![("event_id".to_owned(), "VARCHAR".to_owned())];
    duck_cols.extend(doubles);
    (sluice.read_sql(&sluice_cols), duck.read_sql(&duck_cols))
}

/// What the driver prints.
#[derive(Debug, Deserialize)]
struct DriverReport {
    seconds: f64,
    peak_memory_mb: u64,
    row: Option<Vec<serde_json::Value>>,
}

/// One DuckDB child process: its report and its wall time.
struct DuckRun {
    report: DriverReport,
    wall: f64,
}

/// Runs the driver with `sqls` (the last one timed) and parses its report.
fn run_driver(duck: &Duck, threads: usize, sqls: &[String]) -> Result<DuckRun> {
    let started = Instant::now();
    let out = Command::new(&duck.python)
        .arg(&duck.driver)
        .arg(threads.to_string())
        .args(sqls)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start {}", duck.python.display()))?;
    let wall = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("DuckDB failed ({}): {}", out.status, tail(&out.stderr, 5));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let report = serde_json::from_str(line)
        .with_context(|| format!("cannot read the DuckDB driver's report: {line:?}"))?;
    Ok(DuckRun { report, wall })
}

/// The last `n` lines of a child's output.
fn tail(bytes: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The first error line of a child's stderr (`error: ...`), else its first non-empty line.
fn first_error_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.lines()
        .find(|l| l.starts_with("error"))
        .or_else(|| text.lines().find(|l| !l.trim().is_empty()))
        .unwrap_or("(no output)")
        .to_owned()
}

/// The installed DuckDB: the virtual environment's python, the driver script, its version.
struct Duck {
    python: PathBuf,
    driver: PathBuf,
    version: String,
}

/// The target directory: `CARGO_TARGET_DIR`, else the one this binary was built into
/// (`<target>/<profile>/sluice`, recognised by cargo's `CACHEDIR.TAG`), else the bench
/// directory.
fn target_dir(bench_dir: &Path) -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.to_path_buf()))
        .filter(|t| t.join("CACHEDIR.TAG").exists())
        .unwrap_or_else(|| bench_dir.to_path_buf())
}

/// The version of DuckDB importable by `python`, if any.
fn duckdb_version(python: &Path) -> Option<String> {
    let out = Command::new(python)
        .args(["-c", "import duckdb; print(duckdb.__version__)"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Runs `cmd` to completion, failing with `what` and the tail of its stderr.
fn checked(cmd: &mut Command, what: &str) -> Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("{what}: cannot start {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!("{what} failed ({}):\n{}", out.status, tail(&out.stderr, 10));
    }
    Ok(out)
}

/// The virtual environment at `venv` with DuckDB installed; created and installed on first
/// use (`python3 -m venv`, `pip install duckdb`). Returns its python.
fn ensure_venv(venv: &Path) -> Result<(PathBuf, String)> {
    let python = venv.join("bin").join("python");
    if let Some(version) = duckdb_version(&python) {
        eprintln!("bench: DuckDB {version} from {} (reused)", venv.display());
        return Ok((python, version));
    }
    match Command::new("python3").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        _ => bail!(
            "python3 not found on PATH: --vs-duckdb installs DuckDB from PyPI into a Python \
             virtual environment and needs python3 with its venv module and pip"
        ),
    }
    eprintln!(
        "bench: creating a Python virtual environment in {}",
        venv.display()
    );
    checked(
        Command::new("python3").arg("-m").arg("venv").arg(venv),
        "python3 -m venv (on Debian, the venv module is the package python3-venv)",
    )?;
    checked(
        Command::new(&python).args(["-m", "pip", "--version"]),
        "pip in the virtual environment (python3 -m ensurepip)",
    )?;
    eprintln!("bench: pip install '{DUCKDB_REQUIREMENT}' (from PyPI)");
    checked(
        Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            DUCKDB_REQUIREMENT,
        ]),
        "pip install duckdb",
    )?;
    let version = duckdb_version(&python).with_context(|| {
        format!(
            "duckdb installed into {} but not importable",
            venv.display()
        )
    })?;
    eprintln!("bench: DuckDB {version} installed");
    Ok((python, version))
}

/// Sets up DuckDB: the virtual environment and the driver script in the bench directory.
fn setup_duckdb(opts: &BenchOptions) -> Result<Duck> {
    let venv = target_dir(&opts.dir).join("duckdb-venv");
    let (python, version) = ensure_venv(&venv)?;
    let driver = opts.dir.join("duckdb_bench.py");
    std::fs::write(&driver, DRIVER)
        .with_context(|| format!("cannot write {}", driver.display()))?;
    Ok(Duck {
        python,
        driver,
        version,
    })
}

/// The Parquet copy of the JSONL input (`<same name>.parquet`, typed columns, same row
/// order), written by DuckDB on first use.
fn ensure_parquet(duck: &Duck, threads: usize, jsonl: &Path) -> Result<PathBuf> {
    let parquet = jsonl.with_extension("parquet");
    if parquet.exists() {
        return Ok(parquet);
    }
    eprintln!("bench: writing {} with DuckDB", parquet.display());
    let tmp = jsonl.with_extension("parquet.tmp");
    let read = Table {
        path: jsonl,
        leg: Leg::Jsonl,
        nested_features: false,
    }
    .read_sql(&input_columns());
    let sql = copy_sql(&format!("SELECT * FROM {read}"), &tmp, Leg::Parquet);
    run_driver(duck, threads, &[sql])?;
    std::fs::rename(&tmp, &parquet)
        .with_context(|| format!("cannot rename {} into place", tmp.display()))?;
    Ok(parquet)
}

/// One Sluice child process: its summary and its wall time.
struct SluiceRun {
    report: RunReport,
    wall: f64,
}

/// Runs `sluice run` from `input` to `output`; an error carries the first error line of its
/// stderr, or what was wrong with its summary.
fn run_sluice(
    exe: &Path,
    pipeline: &Path,
    input: &Path,
    output: &Path,
    opts: &BenchOptions,
    workers: usize,
) -> Result<SluiceRun> {
    let summary = opts.dir.join("duckdb-sluice-summary.json");
    let dead = opts.dir.join("duckdb-sluice-dead-letters.jsonl");
    for f in [output, &summary, &dead] {
        let _ = std::fs::remove_file(f);
    }
    let started = Instant::now();
    let out = Command::new(exe)
        .arg("run")
        .arg(pipeline)
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(output)
        .arg("--dead-letters")
        .arg(&dead)
        .arg("--workers")
        .arg(workers.to_string())
        .arg("--quiet")
        .arg("--summary-json")
        .arg(&summary)
        .stdin(Stdio::null())
        .output()
        .context("cannot start sluice run")?;
    let wall = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("{}", first_error_line(&out.stderr));
    }
    let report: RunReport = serde_json::from_str(
        &std::fs::read_to_string(&summary)
            .with_context(|| format!("cannot read {}", summary.display()))?,
    )?;
    if report.events != opts.events || report.dead_letters != 0 {
        bail!(
            "sluice run wrote {} events and {} dead letters, expected {} and 0 (first dead \
             letter: {})",
            report.events,
            report.dead_letters,
            opts.events,
            first_dead_letter(&dead)
        );
    }
    Ok(SluiceRun { report, wall })
}

/// The reason and error of the first record in a dead-letter file (not its raw bytes).
fn first_dead_letter(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let Some(line) = text.lines().next() else {
        return "none".to_owned();
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
        return line.chars().take(200).collect();
    };
    let field = |k: &str| v.get(k).and_then(serde_json::Value::as_str).unwrap_or("?");
    format!("{}: {}", field("reason"), field("error"))
}

/// Medians and peaks of one side of a leg.
#[derive(Debug, Default, Serialize)]
struct Side {
    /// Process wall times, seconds, one per round.
    walls: Vec<f64>,
    /// Times inside the process (DuckDB: the query alone; Sluice: its summary's), seconds.
    inner: Vec<f64>,
    /// Largest peak resident memory over the rounds, MB.
    peak_memory_mb: Option<u64>,
}

impl Side {
    fn add(&mut self, wall: f64, inner: f64, peak: Option<u64>) {
        self.walls.push(wall);
        self.inner.push(inner);
        self.peak_memory_mb = self.peak_memory_mb.max(peak);
    }

    fn median_wall(&self) -> Option<f64> {
        median(&self.walls)
    }

    fn median_inner(&self) -> Option<f64> {
        median(&self.inner)
    }
}

fn median(xs: &[f64]) -> Option<f64> {
    let mut xs = xs.to_vec();
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied()
}

/// The result of one leg.
#[derive(Debug, Serialize)]
struct LegResult {
    leg: Leg,
    duckdb: Side,
    sluice: Side,
    /// Why Sluice could not run the leg, when it could not.
    unsupported: Option<String>,
    /// The cross-check after the first round: rows compared and rows that differ.
    check: Option<Check>,
}

impl LegResult {
    /// DuckDB's median wall time over Sluice's.
    fn ratio(&self) -> Option<f64> {
        Some(self.duckdb.median_wall()? / self.sluice.median_wall()?)
    }
}

/// What the cross-check found.
#[derive(Debug, Clone, Copy, Serialize)]
struct Check {
    /// Rows whose key and time are unique.
    unique: u64,
    /// Of those, rows found in DuckDB's output.
    compared: u64,
    /// Rows missing from DuckDB's output or with a value that differs.
    differ: u64,
}

/// What one leg runs on.
struct LegSetup<'a> {
    leg: Leg,
    input: PathBuf,
    pipeline: &'a Path,
    features: &'a [FeatureSpec],
    time_field: &'a str,
    threads: usize,
}

impl LegSetup<'_> {
    fn sluice_output(&self, dir: &Path) -> PathBuf {
        dir.join(format!("duckdb-vs-sluice.{}", self.leg.extension()))
    }

    fn duck_output(&self, dir: &Path) -> PathBuf {
        let ext = match self.leg {
            Leg::Jsonl => "json",
            Leg::Parquet => "parquet",
        };
        dir.join(format!("duckdb-vs-duckdb.{ext}"))
    }

    /// DuckDB's job for this leg: `COPY (features query) TO output`.
    fn duck_sql(&self, dir: &Path) -> Result<String> {
        let read = Table {
            path: &self.input,
            leg: self.leg,
            nested_features: false,
        }
        .read_sql(&input_columns());
        let query = feature_query(self.features, self.time_field, &read)?;
        Ok(copy_sql(&query, &self.duck_output(dir), self.leg))
    }
}

/// Runs one leg: `opts.runs` rounds, the cross-check after the first.
fn run_leg(
    opts: &BenchOptions,
    duck: &Duck,
    exe: &Path,
    setup: &LegSetup<'_>,
) -> Result<LegResult> {
    let copy = setup.duck_sql(&opts.dir)?;
    // For people: the job as one SQL statement.
    let sql = opts
        .dir
        .join(format!("duckdb-{}.sql", setup.leg.extension()));
    std::fs::write(&sql, format!("{copy};\n"))
        .with_context(|| format!("cannot write {}", sql.display()))?;
    let mut result = LegResult {
        leg: setup.leg,
        duckdb: Side::default(),
        sluice: Side::default(),
        unsupported: None,
        check: None,
    };
    let label = setup.leg.label();
    for round in 1..=opts.runs {
        // Which goes first alternates, so that the machine's drift falls on both alike.
        let duck_first = round % 2 == 1;
        for duck_turn in [duck_first, !duck_first] {
            if duck_turn {
                let run = run_driver(duck, setup.threads, std::slice::from_ref(&copy))?;
                check_rows(&run, opts.events)?;
                result.duckdb.add(
                    run.wall,
                    run.report.seconds,
                    Some(run.report.peak_memory_mb),
                );
                continue;
            }
            let output = setup.sluice_output(&opts.dir);
            match run_sluice(
                exe,
                setup.pipeline,
                &setup.input,
                &output,
                opts,
                setup.threads,
            ) {
                Ok(run) => {
                    result
                        .sluice
                        .add(run.wall, run.report.seconds, run.report.peak_memory_mb)
                }
                // A failure of the first Parquet run means no Parquet support; a later one is
                // an error like any other.
                Err(e) if setup.leg == Leg::Parquet && result.sluice.walls.is_empty() => {
                    eprintln!("bench: {label}: not supported by this sluice binary: {e:#}");
                    result.unsupported = Some(format!("{e:#}"));
                }
                Err(e) => return Err(e.context(format!("{label} leg"))),
            }
        }
        log_round(&result, round, opts.runs);
        if result.unsupported.is_some() {
            break;
        }
        if round == 1 {
            result.check = Some(cross_check(duck, setup, &opts.dir)?);
        }
    }
    Ok(result)
}

/// Fails unless DuckDB's COPY wrote `events` rows.
fn check_rows(run: &DuckRun, events: u64) -> Result<()> {
    let rows = run
        .report
        .row
        .as_ref()
        .and_then(|r| r.first())
        .and_then(serde_json::Value::as_u64);
    if rows != Some(events) {
        bail!("DuckDB wrote {rows:?} rows, expected {events}");
    }
    Ok(())
}

/// The progress line of one round.
fn log_round(r: &LegResult, round: usize, runs: usize) {
    let last = |s: &Side| {
        let (Some(w), Some(i)) = (s.walls.last(), s.inner.last()) else {
            return "-".to_owned();
        };
        format!(
            "{w:.2} s ({i:.2} s inside, peak {} MB)",
            s.peak_memory_mb.unwrap_or(0)
        )
    };
    eprintln!(
        "bench: {} round {round}/{runs}: DuckDB {}, Sluice {}",
        r.leg.label(),
        last(&r.duckdb),
        last(&r.sluice)
    );
}

/// Compares the first round's outputs with DuckDB.
fn cross_check(duck: &Duck, setup: &LegSetup<'_>, dir: &Path) -> Result<Check> {
    let sluice_out = setup.sluice_output(dir);
    let duck_out = setup.duck_output(dir);
    let sql = check_sql(
        setup.features,
        setup.time_field,
        Table {
            path: &sluice_out,
            leg: setup.leg,
            nested_features: setup.leg == Leg::Jsonl,
        },
        Table {
            path: &duck_out,
            leg: setup.leg,
            nested_features: false,
        },
    );
    let file = dir.join(format!("duckdb-check-{}.sql", setup.leg.extension()));
    std::fs::write(&file, format!("{sql};\n"))
        .with_context(|| format!("cannot write {}", file.display()))?;
    let run = run_driver(duck, setup.threads, &[sql]).context("the cross-check failed")?;
    let row = run.report.row.unwrap_or_default();
    let n = |i: usize| row.get(i).and_then(serde_json::Value::as_u64).unwrap_or(0);
    let check = Check {
        unique: n(0),
        compared: n(1),
        differ: n(2),
    };
    eprintln!(
        "bench: {} cross-check: {} rows compared, {} differ ({} rows with a unique key and time, {} found in DuckDB's output)",
        setup.leg.label(),
        check.unique,
        check.differ,
        check.unique,
        check.compared
    );
    Ok(check)
}

/// The whole comparison, for `--json`.
#[derive(Debug, Serialize)]
struct DuckResult {
    events: u64,
    users: u64,
    days: u64,
    seed: u64,
    disorder_ms: u64,
    threads: usize,
    duckdb_version: String,
    legs: Vec<LegResult>,
}

/// Runs `sluice bench --vs-duckdb`: the `plan` (the benchmark pipeline, `pipeline_text`, with
/// its event time in `time_field`) in Sluice and as DuckDB SQL, for each of `legs`, and prints
/// a table.
pub fn run(
    opts: &BenchOptions,
    pipeline_text: &str,
    plan: &Plan,
    time_field: &str,
    legs: &[Leg],
) -> Result<()> {
    // Fail on an untranslatable plan before installing anything.
    if !plan.derived.is_empty() {
        bail!("derived features are not translated to SQL");
    }
    feature_columns(&plan.features, time_field)?;
    let data = ensure_data(opts)?;
    let pipeline = opts.dir.join("bench.toml");
    std::fs::write(&pipeline, pipeline_text)?;
    let duck = setup_duckdb(opts)?;
    let threads = opts.workers.iter().copied().max().unwrap_or(2).max(1);
    let exe = std::env::current_exe().context("cannot find the sluice executable")?;
    let mut results = Vec::new();
    for &leg in legs {
        let input = match leg {
            Leg::Jsonl => data.clone(),
            Leg::Parquet => ensure_parquet(&duck, threads, &data)?,
        };
        let setup = LegSetup {
            leg,
            input,
            pipeline: &pipeline,
            features: &plan.features,
            time_field,
            threads,
        };
        results.push(run_leg(opts, &duck, &exe, &setup)?);
    }
    let result = DuckResult {
        events: opts.events,
        users: opts.users,
        days: opts.days,
        seed: opts.seed,
        disorder_ms: opts.disorder_ms,
        threads,
        duckdb_version: duck.version.clone(),
        legs: results,
    };
    print_table(&result, opts.runs);
    if let Some(path) = &opts.json {
        std::fs::write(path, serde_json::to_string_pretty(&result)?)?;
    }
    Ok(())
}

fn print_table(r: &DuckResult, runs: usize) {
    println!(
        "{} events, {} users, {} days, seed {}, disorder {} ms; DuckDB {} with {} threads, \
         Sluice with {} workers; medians of {runs} interleaved rounds",
        r.events, r.users, r.days, r.seed, r.disorder_ms, r.duckdb_version, r.threads, r.threads
    );
    println!(
        "| leg | DuckDB wall | Sluice wall | DuckDB / Sluice | DuckDB query only | Sluice in-process | DuckDB peak | Sluice peak |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let secs = |s: Option<f64>| s.map_or("-".to_owned(), |s| format!("{s:.2} s"));
    let mb = |m: Option<u64>| m.map_or("-".to_owned(), |m| format!("{m} MB"));
    for l in &r.legs {
        let sluice = |s: String| {
            if l.unsupported.is_some() {
                "not supported".to_owned()
            } else {
                s
            }
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            l.leg.label(),
            secs(l.duckdb.median_wall()),
            sluice(secs(l.sluice.median_wall())),
            l.ratio().map_or("-".to_owned(), |x| format!("{x:.2}x")),
            secs(l.duckdb.median_inner()),
            sluice(secs(l.sluice.median_inner())),
            mb(l.duckdb.peak_memory_mb),
            sluice(mb(l.sluice.peak_memory_mb)),
        );
    }
    println!("Goals:");
    for l in &r.legs {
        print_goals(l);
    }
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "not met"
    }
}

fn print_goals(l: &LegResult) {
    let label = l.leg.label();
    if let Some(why) = &l.unsupported {
        println!("- {label}: not supported by this sluice binary: {why}");
        return;
    }
    if let Some(ratio) = l.ratio() {
        println!(
            "- {label} speed: {ratio:.2}x DuckDB's wall time (goal >= {:.0}x): {}",
            l.leg.goal(),
            met(ratio >= l.leg.goal())
        );
    }
    if let (Some(s), Some(d)) = (l.sluice.peak_memory_mb, l.duckdb.peak_memory_mb) {
        println!(
            "- {label} memory: Sluice {s} MB, DuckDB {d} MB (goal: at most DuckDB's): {}",
            met(s <= d)
        );
    }
    if let Some(c) = l.check {
        println!(
            "- {label} cross-check: {} rows compared, {} differ: {}",
            c.unique,
            c.differ,
            if c.differ == 0 { "ok" } else { "MISMATCH" }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::plan::FeatureSpec;

    fn feature(name: &str, agg: Agg, of: Option<&str>, window_ms: i64) -> FeatureSpec {
        FeatureSpec {
            name: name.into(),
            agg,
            of: of.map(Into::into),
            by: vec!["user_id".into()],
            window_ms,
            granularity_ms: 1,
            filter: None,
        }
    }

    #[test]
    fn features_become_range_windows() {
        let p = [
            feature("user_amount_1d", Agg::Sum, Some("amount"), 86_400_000),
            feature("user_txn_1h", Agg::Count, None, 3_600_000),
            feature(
                "user_devices_7d",
                Agg::DistinctCount,
                Some("device_id"),
                604_800_000,
            ),
        ];
        let cols = feature_columns(&p, "ts").expect("translated");
        assert_eq!(
            cols,
            [
                "sum(\"amount\") OVER (PARTITION BY \"user_id\" ORDER BY \"ts\" RANGE BETWEEN \
                 86400000 PRECEDING AND CURRENT ROW) AS \"user_amount_1d\"",
                "count(*) OVER (PARTITION BY \"user_id\" ORDER BY \"ts\" RANGE BETWEEN \
                 3600000 PRECEDING AND CURRENT ROW) AS \"user_txn_1h\"",
                "count(DISTINCT \"device_id\") OVER (PARTITION BY \"user_id\" ORDER BY \"ts\" \
                 RANGE BETWEEN 604800000 PRECEDING AND CURRENT ROW) AS \"user_devices_7d\"",
            ]
        );
        let q = feature_query(&p, "ts", "read_parquet('x.parquet')").expect("query");
        assert!(q.starts_with("SELECT *, sum(\"amount\") OVER"));
        assert!(q.ends_with("AS \"user_devices_7d\" FROM read_parquet('x.parquet')"));
    }

    #[test]
    fn untranslatable_features_are_errors() {
        let mut f = feature("last_device", Agg::Last, Some("device_id"), 1000);
        assert!(feature_columns(&[f.clone()], "ts").is_err());
        f.agg = Agg::Count;
        f.filter = Some("amount > 1".into());
        assert!(feature_columns(&[f.clone()], "ts").is_err());
        f.filter = None;
        f.granularity_ms = 60_000;
        assert!(feature_columns(&[f], "ts").is_err());
    }

    #[test]
    fn sql_quotes_names_and_paths() {
        assert_eq!(literal("it's.jsonl"), "'it''s.jsonl'");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        let t = Table {
            path: Path::new("/tmp/in.jsonl"),
            leg: Leg::Jsonl,
            nested_features: true,
        };
        assert_eq!(
            t.read_sql(&[("ts".into(), "BIGINT".into())]),
            "read_json('/tmp/in.jsonl', format = 'newline_delimited', columns = {'ts': 'BIGINT'})"
        );
        assert_eq!(t.feature("f"), "features.\"f\"");
    }

    #[test]
    fn the_check_matches_by_event_id_over_unique_times() {
        let p = [feature("n", Agg::Count, None, 1000)];
        let out = |leg, nested| Table {
            path: Path::new("o"),
            leg,
            nested_features: nested,
        };
        let sql = check_sql(&p, "ts", out(Leg::Jsonl, true), out(Leg::Jsonl, false));
        assert!(sql.contains("LEFT JOIN d ON s_id = d_id"));
        assert!(sql.contains("count(*) OVER (PARTITION BY \"user_id\", \"ts\") = 1"));
        assert!(sql.contains("features.\"n\" AS s0"));
        assert!(sql.contains("'features': 'STRUCT(\"n\" DOUBLE)'"));
        assert!(sql.contains("abs(s0 - d0) <= 1e-9 * greatest(abs(s0), abs(d0))"));
    }
}
