//! `sluice bench --vs-duckdb` derives DuckDB's SQL from the benchmark pipeline's plan: the six
//! features become the six window functions of the comparison (no DuckDB needed here).

use std::path::Path;

use sluice::config;
use sluice_bench::duckdb::feature_columns;
use sluice_bench::BENCH_PIPELINE;

#[test]
fn the_bench_pipeline_becomes_six_range_windows() {
    let p = config::parse(Path::new("bench.toml"), BENCH_PIPELINE).expect("the bench pipeline");
    let cols = feature_columns(&p.plan.features, &p.time_field).expect("translated");
    let window = |ms: u64| {
        format!("OVER (PARTITION BY \"user_id\" ORDER BY \"ts\" RANGE BETWEEN {ms} PRECEDING AND CURRENT ROW)")
    };
    let (day, hour, week) = (window(86_400_000), window(3_600_000), window(604_800_000));
    assert_eq!(
        cols,
        [
            format!("sum(\"amount\") {day} AS \"user_amount_1d\""),
            format!("max(\"amount\") {day} AS \"user_max_amount_1d\""),
            format!("avg(\"amount\") {day} AS \"user_avg_amount_1d\""),
            format!("count(\"amount\") {day} AS \"user_txn_1d\""),
            format!("count(*) {hour} AS \"user_txn_1h\""),
            format!("count(DISTINCT \"device_id\") {week} AS \"user_devices_7d\""),
        ]
    );
}
