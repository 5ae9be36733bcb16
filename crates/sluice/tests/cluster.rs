//! A serving cluster end to end: `sluice serve` members of one `[cluster]` on loopback ports,
//! a real Redis Cluster for their state and membership, real HTTP.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::http::Server;
use common::wait::Deadline;
use serde_json::Value;

fn example_pipeline() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/transactions.toml")
}

/// The example pipeline on Redis state under a fresh namespace, as members of cluster `c`.
fn member_pipeline(dir: &Path, urls: &[String]) -> PathBuf {
    let text = std::fs::read_to_string(example_pipeline()).expect("example");
    let text = text.replace("path = \"transactions.jsonl\"", "path = \"unused.jsonl\"");
    let namespace = common::unique_namespace("cluster");
    let path = dir.join("member.toml");
    std::fs::write(
        &path,
        text + &common::redis_state(urls, &namespace, "")
            + "\n[cluster]\nname = \"c\"\nheartbeat = \"100ms\"\nttl = \"1s\"\n",
    )
    .expect("pipeline");
    path
}

/// `GET /v1/cluster` of `server`.
fn membership(server: &Server) -> Value {
    let r = server.connect().get("/v1/cluster");
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).expect("JSON")
}

/// Waits until every server sees `n` members.
fn wait_for_members(servers: &[&Server], n: usize) {
    let deadline = Deadline::after(Duration::from_secs(20), format!("{n} members"));
    loop {
        let seen: Vec<usize> = servers
            .iter()
            .map(|s| membership(s)["members"].as_array().map_or(0, Vec::len))
            .collect();
        if seen.iter().all(|&m| m == n) {
            return;
        }
        deadline.pause(Duration::from_millis(50), || {
            format!("members seen: {seen:?}")
        });
    }
}

/// Three members: a stream sent one event at a time to the members in turn gets, event for
/// event, the answers of one `sluice run` over it; the members agree on the owners of the 256
/// groups, requests are forwarded to them, and a feature query gives the same answer on
/// every member.
#[test]
fn three_members_answer_like_one_run() {
    let Some(urls) = common::redis_urls() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let input = dir.path().join("events.jsonl");
    let lines = common::gen_lines(
        &input,
        &[
            "--events", "300", "--users", "20", "--days", "1", "--seed", "11",
        ],
    );
    let (out, dead) = (dir.path().join("run.out"), dir.path().join("run.dead"));
    let run = common::sluice_run(&example_pipeline(), &input, &out, &dead, 1)
        .output()
        .expect("run");
    common::assert_success(&run);
    let want = common::lines(&out);

    let pipeline = member_pipeline(dir.path(), &urls);
    let servers: Vec<Server> = (0..3).map(|_| Server::start(&pipeline, &[], &[])).collect();
    wait_for_members(&servers.iter().collect::<Vec<_>>(), 3);
    let view = membership(&servers[0]);
    let groups: u64 = view["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["groups"].as_u64().expect("groups"))
        .sum();
    assert_eq!(groups, 256, "{view}");
    for m in view["members"].as_array().expect("members") {
        assert!(
            m["groups"].as_u64() > Some(30),
            "about a third each: {view}"
        );
    }

    let mut http: Vec<_> = servers.iter().map(Server::connect).collect();
    let mut got = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let r = http[i % 3].post_events(line.as_bytes());
        if r.status == 200 {
            got.push(r.text());
        }
    }
    assert_eq!(got.len(), want.len());
    assert!(got == want, "the members' answers differ from one run");

    let forwarded: u64 = http
        .iter_mut()
        .map(|h| {
            let m = h.get("/metrics").text();
            m.lines()
                .find_map(|l| l.strip_prefix("sluice_cluster_forwarded_total "))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .expect("the forwarded counter")
        })
        .sum();
    assert!(
        forwarded > 100,
        "about two thirds of 300 events are forwarded: {forwarded}"
    );

    let user: Value = serde_json::from_str(&lines[lines.len() - 1]).expect("JSON");
    let query = format!(
        "/v1/features?user_id={}",
        user["user_id"].as_str().expect("user")
    );
    let answers: Vec<String> = http.iter_mut().map(|h| h.get(&query).text()).collect();
    assert!(answers[0].contains("\"features\""), "{}", answers[0]);
    assert!(answers.iter().all(|a| a == &answers[0]), "{answers:?}");
}

/// Concurrent clients of one member on Redis state: their requests queue for the engine
/// thread, which commits them together (fewer engine batches than requests), and each
/// client's answers equal one `sluice run` over its own events (its users are its own).
#[test]
fn concurrent_requests_share_round_trips() {
    let Some(urls) = common::redis_urls() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    // The clients go through the day at their own pace: lateness is judged against the
    // newest time of all of them.
    let features = "[event]\ntime = \"ts\"\nlateness = \"2d\"\n\n[[feature]]\nname = \"amount_1h\"\nagg = \"sum\"\n\
                    of = \"amount\"\nby = \"user_id\"\nwindow = \"1h\"\n\n[[feature]]\nname = \"txns_1d\"\n\
                    agg = \"count\"\nby = \"user_id\"\nwindow = \"1d\"\n";
    let local = dir.path().join("local.toml");
    std::fs::write(&local, features).expect("pipeline");
    let shared = dir.path().join("shared.toml");
    let namespace = common::unique_namespace("batch");
    std::fs::write(
        &shared,
        format!("{features}{}", common::redis_state(&urls, &namespace, "")),
    )
    .expect("pipeline");
    let clients = 8;
    let streams: Vec<Vec<String>> = (0..clients)
        .map(|c| {
            let path = dir.path().join(format!("c{c}.jsonl"));
            let seed = (100 + c).to_string();
            let lines = common::gen_lines(
                &path,
                &[
                    "--events", "60", "--users", "5", "--days", "1", "--seed", &seed,
                ],
            );
            // Each client's users are its own.
            lines
                .iter()
                .map(|l| l.replace("\"user_id\":\"u", &format!("\"user_id\":\"c{c}u")))
                .collect()
        })
        .collect();
    let server = Server::start(&shared, &[], &[]);
    let answers: Vec<Vec<String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = streams
            .iter()
            .map(|lines| {
                let server = &server;
                scope.spawn(move || {
                    let mut http = server.connect();
                    lines
                        .iter()
                        .map(|l| http.post_events(l.as_bytes()))
                        .map(|r| {
                            assert_eq!(r.status, 200, "{}", r.text());
                            r.text()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client"))
            .collect()
    });
    for (c, lines) in streams.iter().enumerate() {
        let input = dir.path().join(format!("c{c}-own.jsonl"));
        std::fs::write(&input, lines.join("\n") + "\n").expect("input");
        let (out, dead) = (dir.path().join("out"), dir.path().join("dead"));
        let run = common::sluice_run(&local, &input, &out, &dead, 1)
            .output()
            .expect("run");
        common::assert_success(&run);
        assert_eq!(answers[c], common::lines(&out), "client {c}");
    }
    let metrics = server.connect().get("/metrics").text();
    let count = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    let (batches, events) = (
        count("sluice_engine_batches_total "),
        count("sluice_events_total "),
    );
    assert!(
        batches < events,
        "{batches} engine batches for {events} events"
    );
}
