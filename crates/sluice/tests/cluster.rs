//! A serving cluster end to end: `sluice serve` members of one `[cluster]` on loopback ports,
//! a real Redis Cluster for their state and membership, real HTTP.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
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
    member_pipeline_with(dir, urls, "")
}

/// [`member_pipeline`] with `[event]` settings `event` added.
fn member_pipeline_with(dir: &Path, urls: &[String], event: &str) -> PathBuf {
    let text = std::fs::read_to_string(example_pipeline()).expect("example");
    let text = text.replacen("[event]\n", &format!("[event]\n{event}"), 1);
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

/// `events` generated transactions of `users` users (seed `seed`), and the enriched lines of
/// one `sluice run` of the example pipeline over them: what a cluster must answer.
fn one_run(dir: &Path, events: u32, users: u32, seed: u32) -> (Vec<String>, Vec<String>) {
    let input = dir.join("events.jsonl");
    let (events, users, seed) = (events.to_string(), users.to_string(), seed.to_string());
    let lines = common::gen_lines(
        &input,
        &[
            "--events", &events, "--users", &users, "--days", "1", "--seed", &seed,
        ],
    );
    let (out, dead) = (dir.join("run.out"), dir.join("run.dead"));
    let run = common::sluice_run(&example_pipeline(), &input, &out, &dead, 1)
        .output()
        .expect("run");
    common::assert_success(&run);
    (lines, common::lines(&out))
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
    let (lines, want) = one_run(dir.path(), 300, 20, 11);

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

/// One `POST /v1/events` on a fresh connection; `None` when the member cannot be reached or
/// the connection breaks.
fn try_post(addr: &str, body: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(body.as_bytes()).ok()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let status = line.split_whitespace().nth(1)?.parse().ok()?;
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        if line.trim_end().is_empty() {
            break;
        }
    }
    let mut body = String::new();
    reader.read_to_string(&mut body).ok()?;
    Some((status, body))
}

/// `kill -9` of one of three members while a client sends a stream one event at a time to
/// the members in turn, each event with its id: what fails (the killed member, or a request
/// it was computing) is sent again to another member, some events are sent twice anyway (a
/// client that timed out), and every answer equals one `sluice run` over the stream (a
/// retried event is applied once, with its first answer). The others take the dead member's
/// groups.
#[test]
fn a_killed_member_loses_nothing_and_retries_apply_once() {
    let Some(urls) = common::redis_urls() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let (lines, want) = one_run(dir.path(), 400, 25, 12);

    let pipeline = member_pipeline_with(dir.path(), &urls, "id = \"event_id\"\n");
    let mut servers: Vec<Server> = (0..3).map(|_| Server::start(&pipeline, &[], &[])).collect();
    wait_for_members(&servers.iter().collect::<Vec<_>>(), 3);
    let addrs: Vec<String> = servers.iter().map(|s| s.addr().to_owned()).collect();
    let mut alive = [true; 3];
    let mut got = Vec::new();
    let mut retries = 0;
    // The kill comes from another thread, at a moment of its own: a request may be in
    // flight on the member (as the one asked, or as the owner of a forwarded event).
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let pid = servers[1].pid();
    let killer = {
        let sent = std::sync::Arc::clone(&sent);
        std::thread::spawn(move || {
            while sent.load(std::sync::atomic::Ordering::Relaxed) < 150 {
                std::thread::sleep(Duration::from_micros(200));
            }
            std::thread::sleep(Duration::from_micros(1500));
            let status = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status()
                .expect("kill");
            assert!(status.success());
        })
    };
    for (i, line) in lines.iter().enumerate() {
        sent.store(i, std::sync::atomic::Ordering::Relaxed);
        let mut answer = None;
        for attempt in 0..6 {
            let m = (i + attempt) % 3;
            if !alive[m] {
                continue;
            }
            match try_post(&addrs[m], line) {
                Some((status, body)) if status < 500 => {
                    answer = Some((status, body));
                    break;
                }
                Some(_) => retries += 1,
                None => {
                    alive[m] = false;
                    retries += 1;
                }
            }
        }
        let (status, body) = answer.unwrap_or_else(|| panic!("event {i} got no answer"));
        if i % 20 == 7 {
            // A client that timed out sends it again, to another member: applied once, the
            // first answer again.
            let other = (0..3)
                .map(|k| (i + 1 + k) % 3)
                .find(|&m| alive[m])
                .expect("a member");
            if let Some((again_status, again)) = try_post(&addrs[other], line) {
                assert_eq!(
                    (again_status, &again),
                    (status, &body),
                    "event {i} sent again"
                );
            }
        }
        if status == 200 {
            got.push(body);
        }
    }
    killer.join().expect("the killer");
    servers[1].kill();
    assert!(retries > 0, "the killed member's requests were sent again");
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "event {i}");
    }
    wait_for_members(&[&servers[0], &servers[2]], 2);
    let view = membership(&servers[0]);
    let groups: u64 = view["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["groups"].as_u64().expect("groups"))
        .sum();
    assert_eq!(groups, 256, "the two left own every group: {view}");
}

/// A fourth member joins while a client sends a stream to the three others in turn: no
/// request fails, every answer equals one `sluice run` over the stream, and the newcomer
/// ends up owning about a quarter of the 256 groups (rendezvous hashing moves only those).
#[test]
fn a_member_joins_under_load() {
    let Some(urls) = common::redis_urls() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let (lines, want) = one_run(dir.path(), 400, 25, 13);

    let pipeline = member_pipeline_with(dir.path(), &urls, "id = \"event_id\"\n");
    let mut servers: Vec<Server> = (0..3).map(|_| Server::start(&pipeline, &[], &[])).collect();
    wait_for_members(&servers.iter().collect::<Vec<_>>(), 3);
    let before = membership(&servers[0]);
    let owners_before: Vec<(String, u64)> = before["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            (
                m["address"].as_str().expect("address").to_owned(),
                m["groups"].as_u64().expect("groups"),
            )
        })
        .collect();
    let mut http: Vec<_> = servers.iter().map(Server::connect).collect();
    let mut got = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if i == 100 {
            servers.push(Server::start(&pipeline, &[], &[]));
        }
        let r = http[i % 3].post_events(line.as_bytes());
        assert!(r.status < 500, "event {i}: {} {}", r.status, r.text());
        if r.status == 200 {
            got.push(r.text());
        }
    }
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "event {i}");
    }
    wait_for_members(&servers.iter().collect::<Vec<_>>(), 4);
    let after = membership(&servers[3]);
    let newcomer = after["self"].as_str().expect("self").to_owned();
    let members = after["members"].as_array().expect("members");
    let groups = |address: &str| {
        members
            .iter()
            .find(|m| m["address"] == address)
            .and_then(|m| m["groups"].as_u64())
            .expect("a member")
    };
    let taken = groups(&newcomer);
    assert!((40..=90).contains(&taken), "about 64 of 256: {after}");
    // Each old member gave up only groups to the newcomer.
    let kept: u64 = owners_before.iter().map(|(a, _)| groups(a)).sum();
    assert_eq!(kept + taken, 256, "{after}");
    for (address, had) in &owners_before {
        assert!(
            groups(address) <= *had,
            "{address} gained groups: {before} then {after}"
        );
    }
}
