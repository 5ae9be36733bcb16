//! The language benchmark's pipeline (`sluice bench --language`) over `sluice gen --kind
//! nested` events: it loads, runs without a dead letter, its filtered counts agree with a
//! brute-force count, and the flattened CSV of the same events gives the same features.

use serde_json::Value;
use sluice::Pipeline;
use sluice_bench::gen::{write_nested, GenFormat, GenOptions};
use sluice_bench::language::{RELATION_FEATURES, RELATION_PIPELINE};
use sluice_bench::{LANGUAGE_FEATURES, LANGUAGE_PIPELINE};

const EVENTS: u64 = 20_000;
const HOUR_MS: i64 = 3_600_000;

fn nested(format: GenFormat) -> Vec<u8> {
    let mut out = Vec::new();
    let opts = GenOptions {
        events: EVENTS,
        users: 300,
        days: 2,
        seed: 7,
        disorder_ms: 2_000,
        start_ms: 1_767_225_600_000,
        format,
    };
    write_nested(&opts, &mut out).expect("generate");
    out
}

/// Runs `pipeline` over `input`; the output lines, parsed. No dead letter is allowed.
fn run(pipeline: &Pipeline, input: Vec<u8>) -> Vec<Value> {
    let (mut out, mut dead) = (Vec::new(), Vec::new());
    pipeline
        .run(std::io::Cursor::new(input), &mut out, &mut dead)
        .expect("run");
    assert!(dead.is_empty(), "{}", String::from_utf8_lossy(&dead));
    let out = String::from_utf8(out).expect("utf8");
    out.lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

#[test]
fn language_pipeline_runs_over_nested_events() {
    let pipeline = Pipeline::from_toml(LANGUAGE_PIPELINE).expect("the pipeline loads");
    let input = nested(GenFormat::Jsonl);
    let events: Vec<Value> = String::from_utf8(input.clone())
        .expect("utf8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    let out = run(&pipeline, input);
    assert_eq!(out.len(), events.len());

    // Failed logins by user: (arrival index, time).
    let mut failed_logins: std::collections::HashMap<&str, Vec<(usize, i64)>> = Default::default();
    for (i, e) in events.iter().enumerate() {
        if e["type"] == "login" && e["status"] == "failed" {
            let user = e["user"]["id"].as_str().expect("user.id");
            let t = e["ts"].as_i64().expect("ts");
            failed_logins.entry(user).or_default().push((i, t));
        }
    }
    let mut levels = [0usize; 3];
    for (i, (e, o)) in events.iter().zip(&out).enumerate() {
        let f = &o["features"];
        assert_eq!(
            f.as_object().map(|m| m.len()),
            Some(LANGUAGE_FEATURES),
            "{o}"
        );
        // Failed logins of the user in the past hour, among the events received so far,
        // counted by brute force.
        let user = e["user"]["id"].as_str().expect("user.id");
        let t = e["ts"].as_i64().expect("ts");
        let failed = failed_logins.get(user).map_or(0, |v| {
            v.iter()
                .filter(|&&(j, xt)| j <= i && (t - HOUR_MS..=t).contains(&xt))
                .count()
        });
        assert_eq!(
            f["user_failed_logins_1h"].as_u64(),
            Some(failed as u64),
            "{o}"
        );
        // Device features are null exactly when the event has no device.
        let has_device = e.get("device").is_some();
        assert_eq!(f["device_users_7d"].is_null(), !has_device, "{o}");
        assert_eq!(f["device_registers_1d"].is_null(), !has_device, "{o}");
        // The derived ratio needs the amount; the score is always there.
        if e["payload"].get("amount").is_none() {
            assert!(f["amount_vs_avg_7d"].is_null(), "{o}");
        }
        let score = f["risk_score"].as_f64().expect("risk_score is a number");
        assert!((0.0..=100.0).contains(&score), "{o}");
        let level = ["low", "medium", "high"]
            .iter()
            .position(|l| f["risk_level"] == *l)
            .expect("a risk level");
        levels[level] += 1;
    }
    assert!(
        levels.iter().all(|&n| n > 0),
        "every risk level occurs: {levels:?}"
    );
}

#[test]
fn flattened_csv_gives_the_same_features() {
    let jsonl = Pipeline::from_toml(LANGUAGE_PIPELINE).expect("the pipeline loads");
    let csv = format!("{LANGUAGE_PIPELINE}\n[source]\nkind = \"stdin\"\nformat = \"csv\"\n");
    let csv = Pipeline::from_toml(&csv).expect("the CSV pipeline loads");
    let a = run(&jsonl, nested(GenFormat::Jsonl));
    let b = run(&csv, nested(GenFormat::Csv));
    assert_eq!(a.len(), b.len());
    for (a, b) in a.iter().zip(&b) {
        assert_eq!(a["features"], b["features"], "{a}\n{b}");
    }
}

/// The relation benchmark's pipeline runs over the same events without a dead letter, and an
/// event with a user and a device is linked to at least its own user.
#[test]
fn relation_pipeline_runs_over_nested_events() {
    let pipeline = Pipeline::from_toml(RELATION_PIPELINE).expect("the pipeline loads");
    let input = nested(GenFormat::Jsonl);
    let out = run(&pipeline, input);
    assert_eq!(out.len(), EVENTS as usize);
    let mut linked = 0;
    for o in &out {
        let f = &o["features"];
        assert_eq!(
            f.as_object().map(|m| m.len()),
            Some(RELATION_FEATURES),
            "{o}"
        );
        let has = |path: &str| o.pointer(path).is_some_and(|v| !v.is_null());
        if has("/user/id") && has("/device/id") {
            let n = f["users_linked_by_device_1d"].as_u64().expect("a count");
            assert!(n >= 1, "{o}");
            linked += usize::from(n > 1);
        }
    }
    assert!(linked > 0, "no user shares a device with another");
}
