//! `sluice serve` end to end: a real server process on a loopback port, real HTTP.

mod common;

use std::path::{Path, PathBuf};

use common::http::Server;
use serde_json::value::RawValue;

fn example_pipeline() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/transactions.toml")
}

/// `sluice gen` output: `events` transactions over `users` users, with some out of order and
/// some late (more than the example's five minutes behind).
fn generate(dir: &Path, events: u64, users: u64, disorder_ms: u64) -> PathBuf {
    let path = dir.join("events.jsonl");
    let (events, users, disorder) = (
        events.to_string(),
        users.to_string(),
        disorder_ms.to_string(),
    );
    common::gen_lines(
        &path,
        &[
            "--events",
            &events,
            "--users",
            &users,
            "--days",
            "1",
            "--seed",
            "7",
            "--disorder",
            &disorder,
        ],
    );
    path
}

/// `sluice run` on `input`: (enriched lines, dead-letter lines).
fn run(pipeline: &Path, input: &Path, dir: &Path) -> (Vec<String>, Vec<String>) {
    let (output, dead) = (dir.join("run.out"), dir.join("run.dead"));
    let out = common::sluice_run(pipeline, input, &output, &dead, 2)
        .output()
        .expect("run");
    common::assert_success(&out);
    (common::lines(&output), common::lines(&dead))
}

/// The items of an array response, as sent.
fn items(body: &[u8]) -> Vec<String> {
    let items: Vec<Box<RawValue>> = serde_json::from_slice(body).expect("a JSON array");
    items.iter().map(|i| i.get().to_owned()).collect()
}

fn is_dead_letter(item: &str) -> bool {
    item.starts_with("{\"reason\":")
}

#[test]
fn http_results_equal_sluice_run_on_the_same_events() {
    let dir = tempfile::tempdir().expect("tmp");
    let input = generate(dir.path(), 3_000, 40, 600_000);
    let (want_events, want_dead) = run(&example_pipeline(), &input, dir.path());
    assert!(!want_dead.is_empty(), "the stream should have late events");

    let server = Server::start(&example_pipeline(), &[], &[]);
    let mut http = server.connect();
    let lines: Vec<String> = common::lines(&input);
    let (mut events, mut dead) = (Vec::new(), Vec::new());
    let mut i = 0;
    let mut size = 0;
    while i < lines.len() {
        // Single events and arrays of 2 to 40, in turn.
        size = (size * 7 + 3) % 41;
        if size < 2 {
            let r = http.post_events(lines[i].as_bytes());
            let text = r.text();
            match r.status {
                200 => events.push(text),
                400 => dead.push(text),
                s => panic!("status {s}: {text}"),
            }
            i += 1;
        } else {
            let end = (i + size).min(lines.len());
            let body = format!("[{}]", lines[i..end].join(","));
            let r = http.post_events(body.as_bytes());
            assert_eq!(r.status, 200, "{}", r.text());
            for item in items(&r.body) {
                if is_dead_letter(&item) {
                    dead.push(item);
                } else {
                    events.push(item);
                }
            }
            i = end;
        }
    }
    assert_eq!(events.len(), want_events.len());
    for (n, (got, want)) in events.iter().zip(&want_events).enumerate() {
        assert_eq!(got, want, "enriched event {n}");
    }
    // Dead letters: the same records, reasons and positions (the source is `http`).
    assert_eq!(dead.len(), want_dead.len());
    for (got, want) in dead.iter().zip(&want_dead) {
        let got: serde_json::Value = serde_json::from_str(got).expect("json");
        let want: serde_json::Value = serde_json::from_str(want).expect("json");
        for field in ["reason", "error", "line", "raw"] {
            assert_eq!(got[field], want[field], "{field}");
        }
        assert_eq!(got["source"], "http");
    }

    // A feature query answers what the last event of a user saw, minus `last`-style values.
    let user = "u1";
    let q = http.get(&format!("/v1/features?user_id={user}"));
    assert_eq!(q.status, 200, "{}", q.text());
    let q: serde_json::Value = serde_json::from_slice(&q.body).expect("json");
    let last = want_events
        .iter()
        .rev()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
        .find(|e| e["user_id"] == user)
        .expect("an event of u1");
    let key = &q["keys"][0];
    assert_eq!(key["by"]["user_id"], user);
    // The newest event of the user may not be the last one written (out of order), so compare
    // at that event's own time only when it is the newest: counts and sums over a window are
    // then those the event saw.
    if key["at"] == last["ts"] {
        for f in [
            "user_amount_1d",
            "user_txn_1d",
            "user_txn_1h",
            "user_devices_7d",
        ] {
            assert_eq!(key["features"][f], last["features"][f], "{f}");
        }
    }
}

/// Eight clients at once, each with its own users, retrying when the queue is full: every
/// event gets the features `sluice run` gives it.
#[test]
fn concurrent_clients_get_the_same_results() {
    let dir = tempfile::tempdir().expect("tmp");
    let input = generate(dir.path(), 4_000, 64, 0);
    // Features by user only, and no event late: then the results of one user's events do not
    // depend on how the clients interleave.
    let pipeline = dir.path().join("users.toml");
    std::fs::write(
        &pipeline,
        r#"
[event]
time = "ts"
lateness = "400d"

[serve]
queue = 2

[[feature]]
name = "amount_1h"
agg = "sum"
of = "amount"
by = "user_id"
window = "1h"

[[feature]]
name = "max_10m"
agg = "max"
of = "amount"
by = "user_id"
window = "10m"

[[feature]]
name = "devices_1d"
agg = "distinct_count"
of = "device_id"
by = "user_id"
window = "1d"
"#,
    )
    .expect("pipeline");
    let (mut want, _) = run(&pipeline, &input, dir.path());
    let server = Server::start(&pipeline, &[], &[]);
    let lines: Vec<String> = common::lines(&input);
    let clients = 8;
    let user_of = |l: &str| -> usize {
        let v: serde_json::Value = serde_json::from_str(l).expect("json");
        let u = v["user_id"].as_str().expect("user");
        u.trim_start_matches('u').parse::<usize>().expect("number") % clients
    };
    let (got, overloaded): (Vec<Vec<String>>, Vec<usize>) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let mine: Vec<&String> = lines.iter().filter(|l| user_of(l) == c).collect();
                let addr = server.addr.clone();
                s.spawn(move || {
                    let mut http = common::http::Http::connect(&addr);
                    let (mut out, mut busy) = (Vec::new(), 0);
                    let mut i = 0;
                    while i < mine.len() {
                        let end = (i + 1 + (i * 13) % 20).min(mine.len());
                        let body: Vec<&str> = mine[i..end].iter().map(|s| s.as_str()).collect();
                        let r = http.post_events(format!("[{}]", body.join(",")).as_bytes());
                        match r.status {
                            200 => {
                                out.extend(items(&r.body));
                                i = end;
                            }
                            503 => {
                                busy += 1;
                                // Not synchronisation: a client's back-off before it retries
                                // a request refused because the queue was full.
                                std::thread::sleep(std::time::Duration::from_millis(1));
                            }
                            s => panic!("status {s}: {}", r.text()),
                        }
                    }
                    (out, busy)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client"))
            .unzip()
    });
    eprintln!(
        "503 (queue full) answers retried: {}",
        overloaded.iter().sum::<usize>()
    );
    let mut got: Vec<String> = got.into_iter().flatten().collect();
    got.sort();
    want.sort();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "the enriched events differ from sluice run's");
}

#[test]
fn bad_requests_get_clear_errors_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().expect("tmp");
    let pipeline = dir.path().join("p.toml");
    std::fs::write(
        &pipeline,
        "[event]\ntime = \"ts\"\n[serve]\nmax_body = \"1KB\"\n[[feature]]\nname = \"n\"\nagg = \"sum\"\nof = \"amount\"\nby = \"user_id\"\nwindow = \"1h\"\n",
    )
    .expect("pipeline");
    let dead = dir.path().join("dead.jsonl");
    let dead_arg = dead.to_str().expect("utf8");
    let server = Server::start(&pipeline, &["--dead-letters", dead_arg], &[]);
    let mut http = server.connect();
    let reason = |r: &common::http::Response| -> String {
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("a JSON error body");
        v["reason"].as_str().unwrap_or("").to_owned()
    };
    let cases: [(&[u8], u16, &str); 5] = [
        (b"{\"user_id\":\"a\",", 400, "malformed"),
        (b"{\"user_id\":\"a\",\"amount\":1}", 400, "missing_time"),
        (
            b"{\"user_id\":\"a\",\"amount\":\"ten\",\"ts\":5}",
            400,
            "wrong_type",
        ),
        (b"", 400, "malformed"),
        (b"[{\"ts\":1},", 400, "malformed"),
    ];
    for (body, status, why) in cases {
        let r = http.post_events(body);
        assert_eq!(
            (r.status, reason(&r).as_str()),
            (status, why),
            "{}",
            r.text()
        );
    }
    let big = format!(
        "[{}]",
        vec!["{\"user_id\":\"a\",\"amount\":1,\"ts\":1}"; 100].join(",")
    );
    let r = http.post_events(big.as_bytes());
    assert_eq!((r.status, reason(&r).as_str()), (413, "too_large"));
    let r = http.get("/v1/features?user_id=a&at=soon");
    assert_eq!((r.status, reason(&r).as_str()), (400, "bad_time"));
    let r = http.get("/v1/features?merchant=m1");
    assert_eq!((r.status, reason(&r).as_str()), (400, "no_key"));
    let r = http.get("/v1/nothing");
    assert_eq!((r.status, reason(&r).as_str()), (404, "not_found"));

    // Still serving, and nothing bad reached the state.
    let mut http = server.connect();
    let r = http.post_events(b"{\"user_id\":\"a\",\"amount\":2.5,\"ts\":1000}");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.text().ends_with("\"features\":{\"n\":2.5}}"),
        "{}",
        r.text()
    );
    let r = http.get("/v1/features?user_id=a&at=1000");
    assert_eq!(
        r.text(),
        "{\"keys\":[{\"by\":{\"user_id\":\"a\"},\"at\":1000,\"features\":{\"n\":2.5}}]}"
    );
    // Too old for the state kept: the default lateness is 5 minutes.
    let r = http.post_events(b"{\"user_id\":\"a\",\"amount\":1,\"ts\":900000}");
    assert_eq!(r.status, 200);
    let r = http.get("/v1/features?user_id=a&at=1000");
    assert_eq!((r.status, reason(&r).as_str()), (400, "too_old"));
    assert_eq!(http.get("/healthz").status, 200);
    let metrics = http.get("/metrics").text();
    assert!(metrics.contains("sluice_events_total 2\n"), "{metrics}");
    assert!(
        metrics.contains("sluice_dead_letters_total 3\n"),
        "{metrics}"
    );
    // The rejected records are in the dead-letter file, with their reasons.
    let mut server = server;
    assert!(server.terminate());
    let written = std::fs::read_to_string(&dead).expect("dead letters");
    let reasons: Vec<String> = written
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json")["reason"].to_string())
        .collect();
    assert_eq!(
        reasons,
        ["\"malformed\"", "\"missing_time\"", "\"wrong_type\""]
    );
}

#[test]
fn a_token_guards_every_route_but_healthz() {
    let server = Server::start(
        &example_pipeline(),
        &[],
        &[("SLUICE_SERVE_TOKEN", "s3cret")],
    );
    let mut http = server.connect();
    let event = b"{\"user_id\":\"u\",\"device_id\":\"d\",\"amount\":1,\"ts\":1}";
    assert_eq!(http.post_events(event).status, 401);
    let wrong = [("Authorization", "Bearer s3cre7")];
    assert_eq!(
        http.request("POST", "/v1/events", &wrong, event).status,
        401
    );
    let right = [("Authorization", "Bearer s3cret")];
    assert_eq!(
        http.request("POST", "/v1/events", &right, event).status,
        200
    );
    assert_eq!(http.get("/v1/features?user_id=u").status, 401);
    assert_eq!(
        http.request("GET", "/v1/features?user_id=u", &right, b"")
            .status,
        200
    );
    assert_eq!(http.get("/metrics").status, 401);
    assert_eq!(http.get("/healthz").status, 200);
}

#[test]
fn sigterm_stops_the_server_cleanly() {
    let mut server = Server::start(&example_pipeline(), &[], &[]);
    let mut http = server.connect();
    for ts in 0..20 {
        let body = format!("{{\"user_id\":\"u\",\"device_id\":\"d\",\"amount\":1,\"ts\":{ts}}}");
        assert_eq!(http.post_events(body.as_bytes()).status, 200);
    }
    assert!(server.terminate(), "{}", server.log());
    let log = server.log();
    assert!(log.contains("shutting down"), "{log}");
    assert!(log.contains("stopped; 20 events enriched"), "{log}");
}

/// The same API over Redis state (the engine then runs on a blocking thread): the results
/// equal `sluice run` with memory state, and a second server sees what the first one added.
#[test]
fn redis_state_serves_the_same_results() {
    let Some(urls) = common::redis_urls() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let input = generate(dir.path(), 400, 20, 0);
    let (want, _) = run(&example_pipeline(), &input, dir.path());
    let pipeline = dir.path().join("redis.toml");
    let text = std::fs::read_to_string(example_pipeline()).expect("example");
    let text = text.replace("path = \"transactions.jsonl\"", "path = \"unused.jsonl\"");
    std::fs::write(
        &pipeline,
        text + &common::redis_state(&urls, &common::unique_namespace("serve"), ""),
    )
    .expect("pipeline");
    let lines: Vec<String> = common::lines(&input);
    let half = lines.len() / 2;
    let mut got = Vec::new();
    for part in [&lines[..half], &lines[half..]] {
        // A fresh server for each half: the second reads the keys the first wrote.
        let server = Server::start(&pipeline, &[], &[]);
        let mut http = server.connect();
        for chunk in part.chunks(25) {
            let r = http.post_events(format!("[{}]", chunk.join(",")).as_bytes());
            assert_eq!(r.status, 200, "{}", r.text());
            got.extend(items(&r.body));
        }
    }
    assert_eq!(got, want);
}

/// Filters, derived features, nested fields, kept values and StreamFQL over HTTP: the golden
/// cases' events, posted as one array and one by one, get exactly the golden outputs of
/// `sluice run`.
#[test]
fn filters_and_derived_features_are_served_like_the_golden_runs() {
    let cases = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/pipelines");
    for case in [
        "filters",
        "derived",
        "nested_fields",
        "kept_values",
        "fql",
        "relations",
    ] {
        let dir = cases.join(case);
        let lines = common::lines(&dir.join("input.jsonl"));
        let want: Vec<String> = common::lines(&dir.join("expected.jsonl"));
        // Relation features also with their links in Redis (a fresh namespace per server).
        let redis = common::redis_urls().filter(|_| case == "relations");
        let tmp = tempfile::tempdir().expect("tmp");
        for (one_by_one, shared) in [(false, false), (true, false), (false, true), (true, true)] {
            let pipeline = match (&redis, shared) {
                (_, false) => dir.join("pipeline.toml"),
                (None, true) => continue,
                (Some(urls), true) => {
                    let text = std::fs::read_to_string(dir.join("pipeline.toml")).expect("read");
                    let namespace = common::unique_namespace("serve-relations");
                    let copy = tmp.path().join(format!("redis-{one_by_one}.toml"));
                    std::fs::write(&copy, text + &common::redis_state(urls, &namespace, ""))
                        .expect("write");
                    copy
                }
            };
            let server = Server::start(&pipeline, &[], &[]);
            let mut http = server.connect();
            let mut got = Vec::new();
            if one_by_one {
                for line in &lines {
                    let r = http.post_events(line.as_bytes());
                    if r.status == 200 {
                        got.push(r.text());
                    }
                }
            } else {
                let r = http.post_events(format!("[{}]", lines.join(",")).as_bytes());
                assert_eq!(r.status, 200, "{case}: {}", r.text());
                got = items(&r.body)
                    .into_iter()
                    .filter(|i| !is_dead_letter(i))
                    .collect();
            }
            assert_eq!(
                got, want,
                "{case} (one by one: {one_by_one}, Redis: {shared})"
            );
            if case == "relations" {
                // u2's newest event (70000) links it to d1, which u2, u3 and an event without
                // a user carry in the minute before.
                let q = http.get("/v1/features?user_id=u2");
                assert_eq!(q.status, 200, "{}", q.text());
                let q: serde_json::Value = serde_json::from_slice(&q.body).expect("json");
                assert_eq!(q["keys"][0]["at"], 70000, "{q}");
                let f = &q["keys"][0]["features"];
                assert_eq!(f["users_linked_by_device_1m"], 2, "{f}");
                assert_eq!(f["events_linked_by_device_1m"], 3, "{f}");
                assert_eq!(f["user_devices_1m"], serde_json::json!(["d1"]), "{f}");
                assert_eq!(f["users_linked_by_device_1m_approx"], 2, "{f}");
                let names: Vec<&String> = f.as_object().expect("object").keys().collect();
                assert_eq!(names.len(), 4, "{f}");
                let q = http.get("/v1/features?user_id=u1&at=70005");
                let q: serde_json::Value = serde_json::from_slice(&q.body).expect("json");
                let f = &q["keys"][0]["features"];
                assert_eq!(f["users_linked_by_device_1m"], 1, "{f}");
                assert_eq!(f["events_linked_by_device_1m"], 1, "{f}");
                let m = http.get("/metrics").text();
                assert!(m.contains("sluice_relation_hub_nulls_total 0"), "{m}");
            }
            if case == "kept_values" {
                // A query reads the windows at the newest time (12500) without adding an
                // event: the kept number and string of the newest event, for `lag` too.
                let q = http.get("/v1/features?user_id=u1");
                assert_eq!(q.status, 200, "{}", q.text());
                let q: serde_json::Value = serde_json::from_slice(&q.body).expect("json");
                let f = &q["keys"][0]["features"];
                assert_eq!(q["keys"][0]["at"], 12500);
                assert_eq!(f["first_amount"], 40);
                assert_eq!(f["prev_amount"], 40);
                assert_eq!(f["prev_device"], "d1");
                assert_eq!(f["p90_amount"], 40);
                assert_eq!(f["last_ok_device"], serde_json::Value::Null);
                let q = http.get("/v1/features?user_id=u1&at=9000");
                let q: serde_json::Value = serde_json::from_slice(&q.body).expect("json");
                let f = &q["keys"][0]["features"];
                assert_eq!(f["prev_device"], "d3", "{f}");
                assert_eq!(f["last_ok_device"], "d3", "{f}");
                assert_eq!(f["p50_amount"], 10, "{f}");
            }
        }
    }
}
