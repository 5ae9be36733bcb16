//! Redis Cluster state end to end, with the `sluice` binary against real clusters:
//! concurrent writers lose no update, and a node killed mid-run is waited for (nothing lost,
//! nothing doubled) or reported when it does not come back.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

mod common;

use common::wait::{Deadline, LineLog};
use common::{sluice, sluice_run};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/redis-cluster.sh")
}

/// The benchmark's six features by user, with a given lateness.
fn features(lateness: &str) -> String {
    let mut s = format!("[event]\ntime = \"ts\"\nlateness = \"{lateness}\"\n");
    for (name, agg, of, window) in [
        ("amount_1d", "sum", Some("amount"), "1d"),
        ("max_1d", "max", Some("amount"), "1d"),
        ("avg_1d", "avg", Some("amount"), "1d"),
        ("txn_1d", "count", Some("amount"), "1d"),
        ("txn_1h", "count", None, "1h"),
        ("devices_7d", "distinct_count", Some("device_id"), "7d"),
    ] {
        s.push_str(&format!(
            "\n[[feature]]\nname = \"{name}\"\nagg = \"{agg}\"\nby = \"user_id\"\nwindow = \"{window}\"\n"
        ));
        if let Some(of) = of {
            s.push_str(&format!("of = \"{of}\"\n"));
        }
    }
    s
}

fn gen(dir: &Path, events: u32, users: u32) -> PathBuf {
    let path = dir.join(format!("gen-{events}-{users}.jsonl"));
    let out = sluice()
        .args([
            "gen",
            "--events",
            &events.to_string(),
            "--users",
            &users.to_string(),
        ])
        .args(["--days", "2", "--seed", "11", "--output"])
        .arg(&path)
        .output()
        .expect("run sluice gen");
    assert!(
        out.status.success(),
        "gen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

fn write_pipeline(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write pipeline");
    path
}

fn spawn_run(pipeline: &Path, input: &Path, output: &Path) -> Child {
    sluice()
        .arg("run")
        .arg(pipeline)
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(output)
        .args(["--quiet", "--workers", "2"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sluice run")
}

fn finish(child: Child, what: &str) -> String {
    let out = child.wait_with_output().expect("wait for sluice run");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{what} failed:\n{stderr}");
    stderr
}

/// The number before `label` in a summary line (`..., 12 conflicts`).
fn counter(summary: &str, label: &str) -> u64 {
    summary
        .split(", ")
        .find_map(|part| part.trim().strip_suffix(label)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `{label}` in {summary}"))
}

/// One probe event per user at the stream's newest time: its features show each user's whole
/// state (every window reaches back over the stream).
fn probes(input: &Path) -> String {
    let text = std::fs::read_to_string(input).expect("read input");
    let mut newest = 0i64;
    let mut users = BTreeMap::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("generated JSON");
        newest = newest.max(v["ts"].as_i64().expect("ts"));
        users.insert(v["user_id"].to_string(), ());
    }
    users
        .keys()
        .map(|u| {
            format!("{{\"user_id\":{u},\"ts\":{newest},\"amount\":0.01,\"device_id\":\"probe\"}}\n")
        })
        .collect()
}

#[test]
fn two_processes_on_one_cluster_lose_no_update() {
    let Some(urls) = common::redis_urls() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let input = gen(dir.path(), 60_000, 300);
    // Split the stream between two writers, alternating lines: both update the same users at
    // the same time. Generous lateness: nothing is trimmed or late in either split.
    let text = std::fs::read_to_string(&input).expect("read input");
    let (mut a, mut b) = (String::new(), String::new());
    for (i, line) in text.lines().enumerate() {
        let half = if i % 2 == 0 { &mut a } else { &mut b };
        half.push_str(line);
        half.push('\n');
    }
    let (half_a, half_b) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
    std::fs::write(&half_a, a).expect("write half");
    std::fs::write(&half_b, b).expect("write half");

    let shared_ns = common::unique_namespace("two-writers");
    let single_ns = common::unique_namespace("one-writer");
    let shared = write_pipeline(
        dir.path(),
        "shared.toml",
        &(features("30d") + &common::redis_state(&urls, &shared_ns, "")),
    );
    let single = write_pipeline(
        dir.path(),
        "single.toml",
        &(features("30d") + &common::redis_state(&urls, &single_ns, "")),
    );

    let first = spawn_run(&shared, &half_a, &dir.path().join("a.out"));
    let second = spawn_run(&shared, &half_b, &dir.path().join("b.out"));
    let first = finish(first, "writer A");
    let second = finish(second, "writer B");
    eprintln!("writer A: {first}writer B: {second}");
    let conflicts = counter(&first, "conflicts") + counter(&second, "conflicts");
    assert!(
        conflicts > 0,
        "the two writers never touched a key at the same time, so this test proved nothing:\n{first}\n{second}"
    );
    finish(
        spawn_run(&single, &input, &dir.path().join("single.out")),
        "single writer",
    );

    // Every key expires once no window can reach it: TTL = widest window (7d) + granularity
    // (1 ms) + lateness (30d), renewed by each write.
    let ttl: i64 = (7 + 30) * 86_400_000 + 1;
    let mut checked = 0;
    for url in &urls {
        let port = url.rsplit(':').next().expect("port");
        let cli = |args: &[&str]| {
            let out = Command::new("redis-cli")
                .args(["-p", port])
                .args(args)
                .output();
            String::from_utf8_lossy(&out.expect("redis-cli").stdout).into_owned()
        };
        let keys = cli(&["--scan", "--pattern", &format!("sluice:{shared_ns}:*")]);
        if let Some(key) = keys.lines().next() {
            let pttl: i64 = cli(&["pttl", key])
                .trim()
                .parse()
                .expect("PTTL is a number");
            assert!(
                pttl > ttl - 600_000 && pttl <= ttl,
                "{key}: PTTL {pttl}, expected about {ttl}"
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "no key of the run found in the cluster");

    // The state left by the two writers answers exactly like the state of one writer.
    let probe = dir.path().join("probe.jsonl");
    std::fs::write(&probe, probes(&input)).expect("write probes");
    finish(
        spawn_run(&shared, &probe, &dir.path().join("shared.probe")),
        "probe A+B",
    );
    finish(
        spawn_run(&single, &probe, &dir.path().join("single.probe")),
        "probe single",
    );
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).expect("read output");
    let (got, want) = (read("shared.probe"), read("single.probe"));
    assert!(got.lines().count() > 100, "too few probes: {got}");
    assert_eq!(
        got, want,
        "state after two concurrent writers differs from one writer's"
    );
}

/// A 3-master cluster of this test's own (ports from `SLUICE_REDIS_SPARE_PORT`), stopped on
/// drop.
struct OwnCluster {
    dir: tempfile::TempDir,
    port: u16,
    urls: Vec<String>,
}

impl OwnCluster {
    fn start(port: u16) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(dir.path())
            .env("SLUICE_REDIS_PORT", port.to_string())
            .output()
            .expect("run redis-cluster.sh");
        assert!(
            out.status.success(),
            "start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let urls = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        OwnCluster { dir, port, urls }
    }

    fn node(&self, action: &str, node: usize) -> Output {
        let out = Command::new("bash")
            .arg(script())
            .arg(action)
            .arg(node.to_string())
            .arg(self.dir.path())
            .env("SLUICE_REDIS_PORT", self.port.to_string())
            .output()
            .expect("run redis-cluster.sh");
        assert!(
            out.status.success(),
            "{action}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

impl OwnCluster {
    /// Moves `slots` slots from node `from` to node `to` with `redis-cli --cluster reshard`.
    fn reshard(&self, from: usize, to: usize, slots: u32) {
        let id = |node: usize| {
            let out = Command::new("redis-cli")
                .args([
                    "-p",
                    &(self.port + node as u16).to_string(),
                    "cluster",
                    "myid",
                ])
                .output()
                .expect("redis-cli");
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        let out = Command::new("redis-cli")
            .args(["--cluster", "reshard", &format!("127.0.0.1:{}", self.port)])
            .args(["--cluster-from", &id(from), "--cluster-to", &id(to)])
            .args(["--cluster-slots", &slots.to_string(), "--cluster-yes"])
            .args(["--cluster-pipeline", "10"])
            .output()
            .expect("redis-cli --cluster reshard");
        assert!(
            out.status.success(),
            "reshard: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.dir.path())
            .env("SLUICE_REDIS_PORT", self.port.to_string())
            .output();
    }
}

/// Runs the Redis pipeline over `input` fed slowly through stdin, calling `disturb` a third
/// of the way in, once the run has written the events of at least half the lines fed so far
/// (several full batches: the run is well into the stream); returns the output and the
/// summary line.
fn run_disturbed(
    pipeline: &Path,
    input: &Path,
    output: &Path,
    disturb: impl FnOnce(),
) -> (Vec<u8>, String) {
    let mut child = sluice()
        .arg("run")
        .arg(pipeline)
        .args(["--input", "-", "--output"])
        .arg(output)
        .args(["--quiet", "--workers", "2"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sluice run");
    let text = std::fs::read_to_string(input).expect("read input");
    let lines: Vec<&str> = text.lines().collect();
    let mut stdin = child.stdin.take().expect("stdin");
    let mut disturb = Some(disturb);
    for (i, chunk) in lines.chunks(500).enumerate() {
        for line in chunk {
            writeln!(stdin, "{line}").expect("feed sluice");
        }
        stdin.flush().expect("flush");
        // Pacing, not synchronisation: the input arrives slowly, so that the run is still
        // going (and sending requests) while `disturb` acts and after it.
        std::thread::sleep(Duration::from_millis(15));
        if i == lines.len() / 500 / 3 {
            // Wait until the run is well into the stream (a full batch is 256 KB, about 1,700
            // lines): its output holds the events of half the lines fed so far.
            let fed = (i + 1) * 500;
            let deadline = Deadline::after(
                Duration::from_secs(60),
                format!(
                    "the run to write the events of {} of the {fed} lines fed",
                    fed / 2
                ),
            );
            while count_lines(output) < fed / 2 {
                deadline.pause(Duration::from_millis(10), || {
                    format!("the output holds {} lines", count_lines(output))
                });
            }
            if let Some(d) = disturb.take() {
                d();
            }
        }
    }
    drop(stdin);
    let summary = finish(child, "disturbed Redis run");
    (std::fs::read(output).expect("read output"), summary)
}

/// The number of lines in a file (0 while it does not exist).
fn count_lines(path: &Path) -> usize {
    std::fs::read(path).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
}

#[test]
fn resharding_and_a_killed_node_are_survived_and_a_lost_node_reported() {
    if common::redis_urls().is_none() {
        return;
    }
    let port = std::env::var("SLUICE_REDIS_SPARE_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(7400);
    let cluster = OwnCluster::start(port);
    let dir = tempfile::tempdir().expect("temp dir");
    let input = gen(dir.path(), 40_000, 2_000);
    let memory = write_pipeline(dir.path(), "memory.toml", &features("5m"));
    let redis = write_pipeline(
        dir.path(),
        "redis.toml",
        &(features("5m") + &common::redis_state(&cluster.urls, "kill", "")),
    );
    finish(
        spawn_run(&memory, &input, &dir.path().join("memory.out")),
        "memory run",
    );

    let want = std::fs::read(dir.path().join("memory.out")).expect("read output");

    // Slots move while the run goes on: ASK during the migration, MOVED after it.
    let resharded = write_pipeline(
        dir.path(),
        "resharded.toml",
        &(features("5m") + &common::redis_state(&cluster.urls, "reshard", "")),
    );
    let (got, summary) = run_disturbed(&resharded, &input, &dir.path().join("reshard.out"), || {
        cluster.reshard(0, 1, 4000)
    });
    eprintln!("through a resharding: {summary}");
    assert!(
        counter(&summary, "retried") > 0,
        "no request was redirected, so no slot moved mid-run: {summary}"
    );
    assert!(
        got == want,
        "output through a resharding differs from the memory run"
    );

    // A master is killed and, a second later, started again with its append-only file.
    let (got, summary) = run_disturbed(&redis, &input, &dir.path().join("redis.out"), || {
        cluster.node("kill", 1);
        // Not synchronisation: the length of the outage, during which the run's requests to
        // the node fail and are retried.
        std::thread::sleep(Duration::from_millis(1000));
        cluster.node("restart", 1);
    });
    eprintln!("through a node restart: {summary}");
    assert!(
        counter(&summary, "retried") > 0,
        "no request was retried, so the node was not killed mid-run: {summary}"
    );
    assert!(
        got == want,
        "output through a node restart differs from the memory run ({} vs {} bytes)",
        got.len(),
        want.len()
    );

    // A node that does not come back: the run fails, naming the node, once retries run out.
    cluster.node("kill", 2);
    let failing = write_pipeline(
        dir.path(),
        "failing.toml",
        &(features("5m")
            + &common::redis_state(&cluster.urls, "kill-2", "retry_timeout = \"2s\"\n")),
    );
    let out = sluice()
        .arg("run")
        .arg(&failing)
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(dir.path().join("failing.out"))
        .arg("--quiet")
        .output()
        .expect("run sluice");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the run should fail: {stderr}");
    assert!(
        stderr.contains("giving up after retrying") && stderr.contains(&format!("{}", port + 2)),
        "unclear error: {stderr}"
    );
}

/// A plain Redis (cluster support off) is used as the owner of every slot.
#[test]
fn a_single_redis_works_too() {
    if common::redis_urls().is_none() {
        return;
    }
    let port = std::env::var("SLUICE_REDIS_SPARE_PORT")
        .ok()
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(7400)
        + 20;
    let dir = tempfile::tempdir().expect("temp dir");
    struct Server(Child);
    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut server = Server(
        Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start redis-server"),
    );
    // Its log goes to stdout: wait for its readiness line (and keep reading, so that it never
    // blocks on a full pipe).
    let redis_log = LineLog::spawn(server.0.stdout.take().expect("redis-server stdout"));
    redis_log.wait_for(
        "redis-server to be ready (\"Ready to accept connections\")",
        Duration::from_secs(30),
        |lines| {
            lines
                .iter()
                .any(|l| l.contains("Ready to accept connections"))
                .then_some(())
        },
    );
    let url = format!("redis://127.0.0.1:{port}");
    let input = gen(dir.path(), 5_000, 100);
    let memory = write_pipeline(dir.path(), "memory.toml", &features("5m"));
    let single = write_pipeline(
        dir.path(),
        "single.toml",
        &(features("5m") + &common::redis_state(&[url], "single", "retry_timeout = \"10s\"\n")),
    );
    finish(
        spawn_run(&memory, &input, &dir.path().join("memory.out")),
        "memory run",
    );
    let summary = finish(
        spawn_run(&single, &input, &dir.path().join("single.out")),
        "single Redis",
    );
    assert!(summary.contains("round trips"), "{summary}");
    let read = |name: &str| std::fs::read(dir.path().join(name)).expect("read output");
    assert!(
        read("memory.out") == read("single.out"),
        "single Redis differs from memory"
    );
}

/// A writer far behind another in event time: its events whose windows reach below what the
/// other already dropped go to the dead letters as `late` (never a wrong value, and the run
/// goes on); its other events are computed as usual.
#[test]
fn an_event_older_than_the_shared_state_is_a_late_dead_letter() {
    let Some(urls) = common::redis_urls() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let namespace = common::unique_namespace("behind");
    let pipeline = write_pipeline(
        dir.path(),
        "p.toml",
        &(String::from(
            "[event]\ntime = \"ts\"\nlateness = \"5m\"\n\n[[feature]]\nname = \"n_1h\"\nagg = \"count\"\nby = \"user_id\"\nwindow = \"1h\"\n",
        ) + &common::redis_state(&urls, &namespace, "")),
    );
    const DAY: i64 = 86_400_000;
    // The first writer runs through two days of one user, trimming as it goes.
    let ahead: String = (0..=48)
        .map(|h| format!("{{\"user_id\":\"u1\",\"ts\":{}}}\n", DAY + h * 3_600_000))
        .collect();
    std::fs::write(dir.path().join("ahead.jsonl"), ahead).expect("write");
    finish(
        spawn_run(
            &pipeline,
            &dir.path().join("ahead.jsonl"),
            &dir.path().join("ahead.out"),
        ),
        "the writer ahead",
    );
    // The second writer starts a day behind, then catches up.
    let behind = format!(
        "{{\"user_id\":\"u1\",\"ts\":{}}}\n{{\"user_id\":\"u1\",\"ts\":{}}}\n",
        2 * DAY,
        3 * DAY + 1
    );
    std::fs::write(dir.path().join("behind.jsonl"), behind).expect("write");
    let out = sluice_run(
        &pipeline,
        &dir.path().join("behind.jsonl"),
        &dir.path().join("behind.out"),
        &dir.path().join("behind.dead"),
        1,
    )
    .output()
    .expect("run");
    common::assert_success(&out);
    let dead = std::fs::read_to_string(dir.path().join("behind.dead")).expect("dead letters");
    assert!(
        dead.contains("\"reason\":\"late\"") && dead.contains("\"line\":1"),
        "{dead}"
    );
    let events = std::fs::read_to_string(dir.path().join("behind.out")).expect("output");
    // The event at day 3 sees the writer ahead's events of the last hour: day 3 + 0 ms.
    assert_eq!(events.lines().count(), 1, "{events}");
    assert!(events.contains("\"n_1h\":2"), "{events}");
}

/// With `[event] id`, events that keys have already applied are not applied again and get
/// their first values: a second run over the same input (each tenth event repeated at once,
/// as a client retry would) writes the first run's output, repeats included, and the state
/// afterwards is that of one pass (probes equal a memory run over the input once).
#[test]
fn event_ids_make_a_repeated_run_apply_nothing_twice() {
    let Some(urls) = common::redis_urls() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let input = gen(dir.path(), 2000, 50);
    let text = std::fs::read_to_string(&input).expect("input");
    // Each tenth line twice, as a client retry would send it.
    let repeat = |text: &str| -> String {
        text.lines()
            .enumerate()
            .map(|(i, l)| {
                if i % 10 == 3 {
                    format!("{l}\n{l}\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect()
    };
    let repeated = repeat(&text);
    let retried = dir.path().join("retried.jsonl");
    std::fs::write(&retried, &repeated).expect("write");
    let probe_input = dir.path().join("probes.jsonl");
    std::fs::write(&probe_input, probes(&input)).expect("write");

    let namespace = common::unique_namespace("ids");
    let shared = features("400d").replace("[event]\n", "[event]\nid = \"event_id\"\n")
        + &common::redis_state(&urls, &namespace, "");
    let shared = write_pipeline(dir.path(), "ids.toml", &shared);
    let run = |input: &Path, name: &str| {
        let output = dir.path().join(name);
        finish(spawn_run(&shared, input, &output), name);
        std::fs::read_to_string(&output).expect("output")
    };
    let first = run(&input, "first.jsonl");
    let second = run(&retried, "second.jsonl");
    let want = repeat(&first);
    if second != want {
        let diff = second
            .lines()
            .zip(want.lines())
            .enumerate()
            .find(|(_, (a, b))| a != b)
            .map(|(i, (a, b))| format!("line {i}:\n got  {a}\n want {b}"));
        panic!("a repeated run gives other values: {diff:?}");
    }

    let local = write_pipeline(dir.path(), "local.toml", &features("400d"));
    let both = dir.path().join("both.jsonl");
    std::fs::write(&both, text + &probes(&input)).expect("write");
    let once = dir.path().join("once.jsonl");
    let out = sluice_run(&local, &both, &once, &dir.path().join("dead"), 1)
        .output()
        .expect("memory run");
    common::assert_success(&out);
    let once = std::fs::read_to_string(&once).expect("output");
    let n_probes = probes(&input).lines().count();
    let want_probes: Vec<&str> = once.lines().skip(once.lines().count() - n_probes).collect();
    let got = run(&probe_input, "probes.out");
    assert_eq!(got.lines().collect::<Vec<_>>(), want_probes);
}
