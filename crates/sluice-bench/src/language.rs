//! `sluice bench --language`: what the feature language costs. The six-feature pipeline over
//! the flat transactions and a pipeline of about twenty features over nested events (filters,
//! nested paths, derived features, every aggregation), run interleaved as child `sluice run`
//! processes for each worker count, with the events/s and peak memory of both and their ratio.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::e2e::{ensure_data, ensure_generated, run_child, BenchOptions, BENCH_PIPELINE};
use crate::gen::GenKind;

/// Number of features written by [`LANGUAGE_PIPELINE`].
pub const LANGUAGE_FEATURES: usize = 27;

/// The language benchmark pipeline: [`LANGUAGE_FEATURES`] features over `sluice gen --kind
/// nested` events.
pub const LANGUAGE_PIPELINE: &str = r#"# The language benchmark pipeline: 27 features over nested logins, transactions and
# registers (`sluice gen --kind nested`): where filters, nested paths, derived features and
# every aggregation.
[event]
time = "ts"

# By user, logins.
[[feature]]
name = "user_failed_logins_1h"
agg = "count"
by = "user.id"
window = "1h"
where = "type == 'login' && status == 'failed'"

[[feature]]
name = "user_logins_1d"
agg = "count"
by = "user.id"
window = "1d"
where = "type == 'login'"

[[feature]]
name = "user_login_devices_7d"
agg = "distinct_count"
of = "device.id"
by = "user.id"
window = "7d"
where = "type == 'login'"

[[feature]]
name = "user_login_ips_1d"
agg = "distinct_count"
of = "ip"
by = "user.id"
window = "1d"
where = "type == 'login'"

# By user, transactions.
[[feature]]
name = "user_tx_count_1h"
agg = "count"
of = "payload.amount"
by = "user.id"
window = "1h"
where = "type == 'transaction'"

[[feature]]
name = "user_tx_sum_1h"
agg = "sum"
of = "payload.amount"
by = "user.id"
window = "1h"
where = "type == 'transaction'"

[[feature]]
name = "user_tx_sum_1d"
agg = "sum"
of = "payload.amount"
by = "user.id"
window = "1d"
where = "type == 'transaction'"

[[feature]]
name = "user_tx_avg_7d"
agg = "avg"
of = "payload.amount"
by = "user.id"
window = "7d"
where = "type == 'transaction'"

[[feature]]
name = "user_tx_min_1d"
agg = "min"
of = "payload.amount"
by = "user.id"
window = "1d"
where = "type == 'transaction'"

[[feature]]
name = "user_tx_max_1d"
agg = "max"
of = "payload.amount"
by = "user.id"
window = "1d"
where = "type == 'transaction'"

[[feature]]
name = "user_big_tx_1d"
agg = "count"
of = "payload.amount"
by = "user.id"
window = "1d"
where = "type == 'transaction' && payload.amount > 100"

[[feature]]
name = "user_merchants_1d"
agg = "distinct_count"
of = "payload.merchant"
by = "user.id"
window = "1d"
where = "type == 'transaction'"

[[feature]]
name = "user_tx_p90_7d"
agg = "quantile"
q = 0.9
of = "payload.amount"
by = "user.id"
window = "7d"
where = "type == 'transaction'"

[[feature]]
name = "user_tx_stddev_7d"
agg = "stddev"
of = "payload.amount"
by = "user.id"
window = "7d"
where = "type == 'transaction'"

[[feature]]
name = "user_prev_device"
agg = "lag"
of = "device.id"
by = "user.id"
window = "1d"

[[feature]]
name = "user_channel"
agg = "last"
of = "channel"
by = "user.id"
window = "1d"
where = "type in ['transaction', 'register']"

[[feature]]
name = "user_ips_approx_7d"
agg = "distinct_count_approx"
of = "ip"
by = "user.id"
window = "7d"
granularity = "1h"

# Every event: one global key (a hot key by nature).
[[feature]]
name = "active_users_approx_1d"
agg = "distinct_count_approx"
of = "user.id"
by = []
window = "1d"
granularity = "1m"

# By device.
[[feature]]
name = "device_users_7d"
agg = "distinct_count"
of = "user.id"
by = "device.id"
window = "7d"

[[feature]]
name = "device_registers_1d"
agg = "count"
by = "device.id"
window = "1d"
where = "type == 'register'"

[[feature]]
name = "device_failed_logins_1h"
agg = "count"
by = "device.id"
window = "1h"
where = "type == 'login' && status == 'failed'"

# By merchant.
[[feature]]
name = "merchant_tx_sum_1h"
agg = "sum"
of = "payload.amount"
by = "payload.merchant"
window = "1h"
where = "type == 'transaction'"

# Derived.
[[feature]]
name = "amount_vs_avg_7d"
expr = "payload.amount / user_tx_avg_7d"

[[feature]]
name = "user_tx_share_1h"
expr = "user_tx_sum_1h / max(user_tx_sum_1d, 1)"

[[feature]]
name = "risk_score"
expr = """min(100,
    min(user_failed_logins_1h, 5) * 10
    + (coalesce(amount_vs_avg_7d, 1) > 5 ? 25 : 0)
    + (user_login_devices_7d > 3 ? 15 : 0)
    + max(coalesce(device_registers_1d, 0) - 2, 0) * 5
    + (has(device.id) ? 0 : 10))"""

[[feature]]
name = "device_changed"
expr = "has(device.id) && has(user_prev_device) && device.id != user_prev_device"

[[feature]]
name = "risk_level"
expr = "risk_score >= 50 ? 'high' : (risk_score >= 20 ? 'medium' : 'low')"
"#;

/// Number of features written by [`RELATION_PIPELINE`].
pub const RELATION_FEATURES: usize = 4;

/// The relation benchmark pipeline (`sluice bench --relations`): relation features over the
/// nested events' shared devices (1% of logins and transactions come from eight hub devices),
/// with a per-user feature beside them.
pub const RELATION_PIPELINE: &str = r#"# The relation benchmark pipeline: 4 features over nested events
# (`sluice gen --kind nested`), links between users through shared devices.
[event]
time = "ts"

[[feature]]
name = "users_linked_by_device_1d"
agg = "linked_distinct_count"
by = "user.id"
via = "device.id"
of = "user.id"
window = "1d"

[[feature]]
name = "logins_linked_by_device_1d"
agg = "linked_count"
by = "user.id"
via = "device.id"
window = "1d"
where = "type == 'login'"

[[feature]]
name = "devices_of_device_users_7d"
agg = "linked_distinct_count"
by = "device.id"
via = "user.id"
of = "device.id"
window = "7d"
via_where = "type == 'register'"
where = "type == 'login'"

[[feature]]
name = "user_devices_1d"
agg = "set"
of = "device.id"
by = "user.id"
window = "1d"
"#;

/// One pipeline's runs at one worker count.
#[derive(Debug, Default, Serialize)]
struct Side {
    best_events_per_sec: f64,
    median_events_per_sec: f64,
    peak_memory_mb: Option<u64>,
    #[serde(skip)]
    rates: Vec<f64>,
}

impl Side {
    fn finish(&mut self) {
        self.rates.sort_by(f64::total_cmp);
        self.best_events_per_sec = self.rates.last().copied().unwrap_or(0.0);
        self.median_events_per_sec = self.rates.get(self.rates.len() / 2).copied().unwrap_or(0.0);
    }
}

#[derive(Debug, Serialize)]
struct Row {
    workers: usize,
    six_features: Side,
    language: Side,
    median_ratio: f64,
    best_ratio: f64,
}

#[derive(Debug, Serialize)]
struct LanguageResult {
    events: u64,
    users: u64,
    days: u64,
    seed: u64,
    disorder_ms: u64,
    transactions_mb: f64,
    nested_mb: f64,
    runs: Vec<Row>,
}

/// One pipeline of the comparison: its file, its data, its name in the log.
struct Case {
    name: &'static str,
    pipeline: PathBuf,
    data: PathBuf,
}

/// Which pipeline runs against the six-feature one.
#[derive(Debug, Clone, Copy)]
pub struct Contender {
    /// Its name in the log.
    pub name: &'static str,
    /// Its label in the table.
    pub label: &'static str,
    /// Its number of features.
    pub features: usize,
    /// Its pipeline file.
    pub pipeline: &'static str,
    /// The file name it is written to under the bench directory.
    pub file: &'static str,
}

/// The language pipeline ([`LANGUAGE_PIPELINE`]).
pub const LANGUAGE: Contender = Contender {
    name: "language",
    label: "language",
    features: LANGUAGE_FEATURES,
    pipeline: LANGUAGE_PIPELINE,
    file: "language.toml",
};

/// The relation pipeline ([`RELATION_PIPELINE`]).
pub const RELATIONS: Contender = Contender {
    name: "relations",
    label: "relations",
    features: RELATION_FEATURES,
    pipeline: RELATION_PIPELINE,
    file: "relations.toml",
};

/// Runs the language benchmark and prints a table.
pub fn run(opts: &BenchOptions) -> Result<()> {
    run_against(opts, LANGUAGE)
}

/// Runs `contender` over the nested events against the six-feature pipeline over the
/// transactions, interleaved, and prints a table.
pub fn run_against(opts: &BenchOptions, contender: Contender) -> Result<()> {
    let cases = [
        Case {
            name: "six-feature",
            pipeline: opts.dir.join("bench.toml"),
            data: ensure_data(opts)?,
        },
        Case {
            name: contender.name,
            pipeline: opts.dir.join(contender.file),
            data: ensure_generated(opts, GenKind::Nested)?,
        },
    ];
    std::fs::write(&cases[0].pipeline, BENCH_PIPELINE)?;
    std::fs::write(&cases[1].pipeline, contender.pipeline)?;
    let exe = std::env::current_exe().context("cannot find the sluice executable")?;
    let mut rows = Vec::new();
    for &workers in &opts.workers {
        let [mut six, mut language] = [Side::default(), Side::default()];
        for run in 1..=opts.runs {
            // Which goes first alternates, so that the machine's drift falls on both alike.
            let order = if run % 2 == 1 { [0, 1] } else { [1, 0] };
            for i in order {
                let side = if i == 0 { &mut six } else { &mut language };
                measure(&exe, opts, &cases[i], workers, side)?;
            }
            eprintln!(
                "bench: workers {workers} run {run}/{}: six-feature {:.0}, {} {:.0} events/s",
                opts.runs,
                six.rates.last().copied().unwrap_or(0.0),
                contender.name,
                language.rates.last().copied().unwrap_or(0.0)
            );
        }
        six.finish();
        language.finish();
        rows.push(Row {
            workers,
            median_ratio: language.median_events_per_sec / six.median_events_per_sec.max(1e-9),
            best_ratio: language.best_events_per_sec / six.best_events_per_sec.max(1e-9),
            six_features: six,
            language,
        });
    }
    let result = LanguageResult {
        events: opts.events,
        users: opts.users,
        days: opts.days,
        seed: opts.seed,
        disorder_ms: opts.disorder_ms,
        transactions_mb: megabytes(&cases[0].data)?,
        nested_mb: megabytes(&cases[1].data)?,
        runs: rows,
    };
    print_table(&result, contender);
    if let Some(path) = &opts.json {
        std::fs::write(path, serde_json::to_string_pretty(&result)?)?;
    }
    Ok(())
}

/// One `sluice run` of `case`, checked and added to `side`.
fn measure(
    exe: &Path,
    opts: &BenchOptions,
    case: &Case,
    workers: usize,
    side: &mut Side,
) -> Result<()> {
    let report = run_child(exe, &case.pipeline, &case.data, &opts.dir, workers)?;
    if report.events != opts.events || report.dead_letters != 0 {
        bail!(
            "the {} run wrote {} events and {} dead letters, expected {} and 0",
            case.name,
            report.events,
            report.dead_letters,
            opts.events
        );
    }
    side.rates.push(report.events_per_sec);
    side.peak_memory_mb = side.peak_memory_mb.max(report.peak_memory_mb);
    Ok(())
}

fn megabytes(path: &Path) -> Result<f64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len() as f64
        / 1e6)
}

fn print_table(r: &LanguageResult, contender: Contender) {
    println!(
        "{} events, {} users, {} days, seed {}, disorder {} ms \
         ({:.0} MB of transactions JSONL, {:.0} MB of nested JSONL)",
        r.events, r.users, r.days, r.seed, r.disorder_ms, r.transactions_mb, r.nested_mb
    );
    println!(
        "| workers | pipeline | best events/s | median events/s | peak memory | median vs six-feature | best vs six-feature |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mb = |m: Option<u64>| m.map_or("?".into(), |m| format!("{m} MB"));
    for row in &r.runs {
        let (s, l) = (&row.six_features, &row.language);
        println!(
            "| {} | six features, transactions | {:.0} | {:.0} | {} | - | - |",
            row.workers,
            s.best_events_per_sec,
            s.median_events_per_sec,
            mb(s.peak_memory_mb)
        );
        println!(
            "| {} | {}, {} features, nested | {:.0} | {:.0} | {} | {:.2}x | {:.2}x |",
            row.workers,
            contender.label,
            contender.features,
            l.best_events_per_sec,
            l.median_events_per_sec,
            mb(l.peak_memory_mb),
            row.median_ratio,
            row.best_ratio
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{LANGUAGE_FEATURES, LANGUAGE_PIPELINE};
    use sluice_core::agg::AGG_NAMES;

    /// The pipeline's behaviour is tested in `sluice` (which can parse and run it:
    /// `crates/sluice/tests/language_pipeline.rs`); here, its shape.
    #[test]
    fn language_pipeline_has_its_features_and_every_aggregation() {
        assert_eq!(
            LANGUAGE_PIPELINE.matches("[[feature]]").count(),
            LANGUAGE_FEATURES
        );
        assert!(LANGUAGE_PIPELINE.contains(&format!("{LANGUAGE_FEATURES} features")));
        assert_eq!(LANGUAGE_PIPELINE.matches("expr = ").count(), 5);
        // Variants that share the registers of a benchmarked one (`stddev`, `lag`,
        // `distinct_count`).
        let alike = ["variance", "variance_pop", "stddev_pop", "first", "set"];
        // Relation features have a benchmark of their own.
        let linked = |a: &&str| a.starts_with("linked_");
        for agg in AGG_NAMES
            .into_iter()
            .filter(|a| !alike.contains(a) && !linked(a))
        {
            assert!(
                LANGUAGE_PIPELINE.contains(&format!("agg = \"{agg}\"")),
                "{agg} is not benchmarked"
            );
        }
    }
}
