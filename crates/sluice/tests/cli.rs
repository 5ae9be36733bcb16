//! The command line, end to end: `sluice check`, configuration errors, `sluice gen`, and
//! `sluice run` (determinism across worker counts, stdin, bad input).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn sluice() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: exit status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

fn lines(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'\n').count()
}

fn write(path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ------------------------------------------------------------------------------------ check

#[test]
fn check_prints_the_plan_of_the_example() {
    let out = sluice()
        .current_dir(workspace())
        .args(["check", "examples/transactions.toml"])
        .output()
        .expect("run sluice check");
    assert_success(&out, "sluice check examples/transactions.toml");
    let plan = text(&out.stdout);
    for expected in [
        "pipeline examples/transactions.toml: ok",
        "event time: field `ts` (epoch_ms), lateness 5m",
        "7 features over 2 keys",
        "key [user_id]",
        "key [device_id]",
    ] {
        assert!(plan.contains(expected), "missing `{expected}` in:\n{plan}");
    }
    // Every feature of the file appears with its aggregation.
    let file: toml::Value = toml::from_str(&text(&read(
        &workspace().join("examples/transactions.toml"),
    )))
    .expect("the example parses as TOML");
    let features = file["feature"].as_array().expect("[[feature]] array");
    assert_eq!(features.len(), 7);
    for f in features {
        let entry = format!(
            "{} ({})",
            f["name"].as_str().expect("name"),
            f["agg"].as_str().expect("agg")
        );
        assert!(plan.contains(&entry), "missing `{entry}` in:\n{plan}");
    }
}

#[test]
fn check_prints_a_global_key_and_the_series_with_squares() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("p.toml");
    write(
        &path,
        "[[feature]]\nname = \"all_spread_1h\"\nagg = \"stddev\"\nof = \"amount\"\nby = []\n\
         window = \"1h\"\n[[feature]]\nname = \"all_max_1h\"\nagg = \"max\"\nof = \"amount\"\n\
         by = []\nwindow = \"1h\"\n[[feature]]\nname = \"n\"\nagg = \"count\"\nby = \"u\"\n\
         window = \"1h\"\n",
    );
    let out = sluice()
        .arg("check")
        .arg(&path)
        .output()
        .expect("run sluice check");
    assert_success(&out, "sluice check");
    let plan = text(&out.stdout);
    for expected in [
        "3 features over 2 keys",
        "  key [] (global: one key that every event has)\n",
        "    numeric registers with sums of squares of `amount` (exact), shared by:\n",
        "      window 1h: all_spread_1h (stddev), all_max_1h (max)\n",
        "  key [u]\n    numeric registers of events (exact)",
    ] {
        assert!(plan.contains(expected), "missing `{expected}` in:\n{plan}");
    }
}

/// Writes `contents` as a pipeline file, runs `sluice check` on it, expects a failure and
/// returns stderr. The message must name `file:line:col`.
fn check_fails(contents: &str, line: usize, col: usize) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.toml");
    write(&path, contents);
    let out = sluice()
        .arg("check")
        .arg(&path)
        .output()
        .expect("run sluice check");
    let stderr = text(&out.stderr);
    assert!(
        !out.status.success(),
        "check of an invalid pipeline succeeded:\n{contents}\nstdout:\n{}",
        text(&out.stdout)
    );
    let at = format!("{}:{line}:{col}:", path.display());
    assert!(
        stderr.contains(&at),
        "the message should name `{at}`:\n{stderr}"
    );
    // `run` refuses the same file, with the same message.
    let run = sluice()
        .arg("run")
        .arg(&path)
        .args(["--input", "-", "--quiet"])
        .stdin(Stdio::null())
        .output()
        .expect("run sluice run");
    assert!(
        !run.status.success(),
        "run of an invalid pipeline succeeded"
    );
    assert!(text(&run.stderr).contains(&at), "{}", text(&run.stderr));
    stderr
}

fn assert_mentions(stderr: &str, parts: &[&str]) {
    for p in parts {
        assert!(stderr.contains(p), "missing `{p}` in:\n{stderr}");
    }
}

#[test]
fn unknown_aggregation_is_rejected_with_the_valid_ones() {
    let e = check_fails(
        "[[feature]]\nname = \"f\"\nby = [\"user_id\"]\nagg = \"median\"\nwindow = \"1d\"\n",
        4,
        7,
    );
    assert_mentions(
        &e,
        &[
            "unknown aggregation `median`",
            "count, sum, avg, min, max, distinct_count, last",
        ],
    );
}

#[test]
fn invalid_window_is_rejected_with_the_valid_units() {
    let e = check_fails(
        "[[feature]]\nname = \"f\"\nby = [\"user_id\"]\nagg = \"count\"\nwindow = \"7x\"\n",
        5,
        10,
    );
    assert_mentions(&e, &["invalid duration `7x`", "valid:", "ms, s, m, h or d"]);
}

#[test]
fn sum_without_of_is_rejected() {
    let e = check_fails(
        "[[feature]]\nname = \"total\"\nby = [\"user_id\"]\nagg = \"sum\"\nwindow = \"1d\"\n",
        4,
        7,
    );
    assert_mentions(&e, &["feature `total`", "`sum` needs `of`", "of = \""]);
}

#[test]
fn unknown_feature_key_is_rejected_with_the_known_ones() {
    let e = check_fails(
        "[[feature]]\nname = \"f\"\nby = [\"user_id\"]\nagg = \"count\"\nwindow = \"1d\"\nwindw = \"1h\"\n",
        6,
        1,
    );
    assert_mentions(
        &e,
        &["unknown field `windw`", "expected one of", "`window`"],
    );
}

#[test]
fn unknown_section_is_rejected_with_the_known_ones() {
    let e = check_fails(
        "[sourc]\npath = \"x.jsonl\"\n[[feature]]\nname = \"f\"\nby = \"user_id\"\nagg = \"count\"\nwindow = \"1d\"\n",
        1,
        2,
    );
    assert_mentions(&e, &["unknown field `sourc`", "`source`", "`feature`"]);
}

#[test]
fn unknown_state_backend_is_rejected_with_the_valid_ones() {
    let e = check_fails(
        "[state]\nbackend = \"cassandra\"\n[[feature]]\nname = \"f\"\nby = \"user_id\"\nagg = \"count\"\nwindow = \"1d\"\n",
        2,
        11,
    );
    assert_mentions(&e, &["unknown state backend `cassandra`", "valid: memory"]);
}

#[test]
fn unknown_time_format_is_rejected_with_the_valid_ones() {
    let e = check_fails(
        "[event]\ntime_format = \"iso\"\n[[feature]]\nname = \"f\"\nby = \"user_id\"\nagg = \"count\"\nwindow = \"1d\"\n",
        2,
        15,
    );
    assert_mentions(&e, &["`iso`", "epoch_ms, epoch_s, rfc3339"]);
}

// -------------------------------------------------------------------------------------- gen

fn gen(args: &[&str]) -> Vec<u8> {
    let out = sluice()
        .arg("gen")
        .args(args)
        .output()
        .expect("run sluice gen");
    assert_success(&out, &format!("sluice gen {}", args.join(" ")));
    out.stdout
}

#[test]
fn gen_is_deterministic_and_writes_the_requested_count() {
    let a = gen(&["--events", "1000", "--seed", "42", "--disorder", "500"]);
    let b = gen(&["--events", "1000", "--seed", "42", "--disorder", "500"]);
    assert_eq!(a, b, "same arguments must give the same bytes");
    assert_eq!(lines(&a), 1000);
    let c = gen(&["--events", "1000", "--seed", "43", "--disorder", "500"]);
    assert_ne!(a, c, "a different seed must give different events");
    assert_eq!(lines(&c), 1000);
    for line in text(&a).lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("gen writes JSON lines");
        for field in ["user_id", "device_id", "merchant_id", "amount", "ts"] {
            assert!(v.get(field).is_some(), "no `{field}` in {line}");
        }
    }

    // --output writes the same bytes as stdout.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("gen.jsonl");
    let out = sluice()
        .args([
            "gen",
            "--events",
            "1000",
            "--seed",
            "42",
            "--disorder",
            "500",
        ])
        .arg("--output")
        .arg(&path)
        .output()
        .expect("run sluice gen");
    assert_success(&out, "sluice gen --output");
    assert_eq!(read(&path), a);

    // CSV: a header and one row per event.
    let csv = gen(&["--events", "250", "--seed", "42", "--format", "csv"]);
    assert_eq!(lines(&csv), 251);
    assert_eq!(
        csv,
        gen(&["--events", "250", "--seed", "42", "--format", "csv"])
    );
}

#[test]
fn gen_kind_nested_writes_nested_events_and_keeps_the_default() {
    let args = ["--events", "500", "--seed", "42", "--disorder", "500"];
    let default = gen(&args);
    let mut explicit = vec!["--kind", "transactions"];
    explicit.extend_from_slice(&args);
    assert_eq!(
        gen(&explicit),
        default,
        "--kind transactions is the default"
    );

    let mut nested_args = vec!["--kind", "nested"];
    nested_args.extend_from_slice(&args);
    let nested = gen(&nested_args);
    assert_eq!(nested, gen(&nested_args), "same arguments, same bytes");
    assert_eq!(lines(&nested), 500);
    for line in text(&nested).lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("gen writes JSON lines");
        assert!(v["user"]["id"].is_string(), "no `user.id` in {line}");
        assert!(
            ["login", "transaction", "register"].contains(&v["type"].as_str().unwrap_or("")),
            "{line}"
        );
    }
    nested_args.extend_from_slice(&["--format", "csv"]);
    let csv = gen(&nested_args);
    assert_eq!(lines(&csv), 501);
    assert!(text(&csv).starts_with("type,ts,user.id,user.country,device.id,"));
}

// -------------------------------------------------------------------------------------- run

/// (name, agg, of, by, window, granularity) of a feature.
type FeatureRow<'a> = (
    &'a str,
    &'a str,
    Option<&'a str>,
    &'a str,
    &'a str,
    Option<&'a str>,
);

/// A pipeline with several features by one-field and two-field keys, two of them bucketed.
fn many_features(lateness: &str) -> String {
    let mut p = format!("[event]\ntime = \"ts\"\nlateness = \"{lateness}\"\n");
    let features: &[FeatureRow<'_>] = &[
        (
            "u_sum_1h",
            "sum",
            Some("amount"),
            "[\"user_id\"]",
            "1h",
            None,
        ),
        (
            "u_avg_1h",
            "avg",
            Some("amount"),
            "[\"user_id\"]",
            "1h",
            None,
        ),
        (
            "u_max_1h",
            "max",
            Some("amount"),
            "[\"user_id\"]",
            "1h",
            None,
        ),
        (
            "u_min_10m",
            "min",
            Some("amount"),
            "[\"user_id\"]",
            "10m",
            None,
        ),
        ("u_n_10m", "count", None, "[\"user_id\"]", "10m", None),
        ("u_n_1d", "count", None, "[\"user_id\"]", "1d", Some("1m")),
        (
            "u_devices_1d",
            "distinct_count",
            Some("device_id"),
            "[\"user_id\"]",
            "1d",
            None,
        ),
        (
            "u_last",
            "last",
            Some("amount"),
            "[\"user_id\"]",
            "1h",
            None,
        ),
        (
            "d_users_1d",
            "distinct_count",
            Some("user_id"),
            "[\"device_id\"]",
            "1d",
            None,
        ),
        ("d_n_1h", "count", None, "[\"device_id\"]", "1h", None),
        (
            "um_n_1h",
            "count",
            None,
            "[\"user_id\", \"merchant_id\"]",
            "1h",
            None,
        ),
        (
            "um_sum_1d",
            "sum",
            Some("amount"),
            "[\"user_id\", \"merchant_id\"]",
            "1d",
            Some("10m"),
        ),
    ];
    for (name, agg, of, by, window, granularity) in features {
        p.push_str(&format!(
            "\n[[feature]]\nname = \"{name}\"\nagg = \"{agg}\"\nby = {by}\nwindow = \"{window}\"\n"
        ));
        if let Some(of) = of {
            p.push_str(&format!("of = \"{of}\"\n"));
        }
        if let Some(g) = granularity {
            p.push_str(&format!("granularity = \"{g}\"\n"));
        }
    }
    p
}

/// Runs `pipeline` over `input` with `workers` workers; returns (output, dead letters).
fn run_file(dir: &Path, pipeline: &Path, input: &Path, workers: usize) -> (Vec<u8>, Vec<u8>) {
    let out = dir.join(format!("out-{workers}.jsonl"));
    let dead = dir.join(format!("dead-{workers}.jsonl"));
    let result = sluice()
        .arg("run")
        .arg(pipeline)
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(&out)
        .arg("--dead-letters")
        .arg(&dead)
        .args(["--workers", &workers.to_string(), "--quiet"])
        .output()
        .expect("run sluice run");
    assert_success(&result, &format!("sluice run --workers {workers}"));
    (read(&out), read(&dead))
}

#[test]
fn output_is_identical_across_worker_counts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("events.jsonl");
    let out = sluice()
        .args([
            "gen",
            "--events",
            "20000",
            "--users",
            "300",
            "--seed",
            "7",
            "--disorder",
            "2000",
        ])
        .arg("--output")
        .arg(&input)
        .output()
        .expect("run sluice gen");
    assert_success(&out, "sluice gen");

    // Default-like lateness: the 2 s disorder is within it, every event is computed.
    let pipeline = dir.path().join("features.toml");
    write(&pipeline, &many_features("5m"));
    let (out1, dead1) = run_file(dir.path(), &pipeline, &input, 1);
    assert_eq!(lines(&out1), 20_000, "one output line per event");
    assert!(dead1.is_empty(), "no dead letters: {}", text(&dead1));
    for workers in [2, 4] {
        let (out, dead) = run_file(dir.path(), &pipeline, &input, workers);
        assert!(
            out == out1,
            "output with --workers {workers} differs from --workers 1"
        );
        assert_eq!(dead, dead1);
    }

    // A lateness shorter than the disorder: some events are late, the same ones every time.
    let strict = dir.path().join("strict.toml");
    write(&strict, &many_features("1s"));
    let (out1, dead1) = run_file(dir.path(), &strict, &input, 1);
    let late = lines(&dead1);
    assert!(
        late > 0,
        "a 1s lateness under a 2s disorder must reject some events"
    );
    assert_eq!(lines(&out1) + late, 20_000);
    assert_eq!(
        text(&dead1)
            .lines()
            .filter(|l| l.starts_with("{\"reason\":\"late\""))
            .count(),
        late
    );
    for workers in [2, 4] {
        let (out, dead) = run_file(dir.path(), &strict, &input, workers);
        assert!(
            out == out1,
            "output with --workers {workers} differs from --workers 1 (lateness 1s)"
        );
        assert!(
            dead == dead1,
            "dead letters with --workers {workers} differ from --workers 1"
        );
    }
}

#[test]
fn reads_stdin_and_writes_stdout() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut events = gen(&["--events", "500", "--seed", "3", "--disorder", "1000"]);
    events.extend_from_slice(b"{\"user_id\":\"u1\",\"ts\":\n");
    let input = dir.path().join("events.jsonl");
    std::fs::write(&input, &events).expect("write input");
    let pipeline = dir.path().join("features.toml");
    write(&pipeline, &many_features("5m"));
    let (from_file, dead_from_file) = run_file(dir.path(), &pipeline, &input, 2);
    assert_eq!(lines(&from_file), 500);
    assert_eq!(lines(&dead_from_file), 1);

    let dead = dir.path().join("stdin-dead.jsonl");
    let mut child = sluice()
        .arg("run")
        .arg(&pipeline)
        .args(["--input", "-", "--output", "-", "--workers", "2", "--quiet"])
        .arg("--dead-letters")
        .arg(&dead)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluice run");
    let mut stdin = child.stdin.take().expect("stdin");
    let feeder = std::thread::spawn(move || {
        // In small pieces, so that records span reads.
        for chunk in events.chunks(777) {
            stdin.write_all(chunk).expect("write to sluice's stdin");
        }
    });
    let out = child.wait_with_output().expect("wait for sluice run");
    feeder.join().expect("feeder thread");
    assert_success(&out, "sluice run --input - --output -");
    assert!(
        out.stdout == from_file,
        "output read from stdin differs from the output read from the file"
    );
    let dead = text(&read(&dead));
    assert_eq!(dead.lines().count(), 1, "{dead}");
    let letter: serde_json::Value = serde_json::from_str(dead.trim_end()).expect("JSON");
    assert_eq!(letter["reason"], "malformed");
    assert_eq!(letter["line"], 501);
    assert_eq!(letter["raw"], "{\"user_id\":\"u1\",\"ts\":");
}

#[test]
fn bad_lines_go_to_the_dead_letters_and_the_run_succeeds() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = dir.path().join("p.toml");
    write(
        &pipeline,
        "[[feature]]\nname = \"sum_1h\"\nagg = \"sum\"\nof = \"amount\"\nby = \"user_id\"\nwindow = \"1h\"\n",
    );
    // (line text, rejected?)
    let records: &[(&str, bool)] = &[
        (r#"{"user_id":"u1","amount":1,"ts":1000}"#, false),
        (r#"{"user_id":"u1","amount":2,"ts":"#, true),
        (r#"{"user_id":"u1","amount":3}"#, true),
        (r#"{"user_id":"u1","amount":"4","ts":4000}"#, true),
        (r#"{"user_id":"u2","amount":5,"ts":5000}"#, false),
        ("not json at all", true),
        (r#"["user_id","u1"]"#, true),
        (r#"{"user_id":"u1","amount":8,"ts":"later"}"#, true),
        (
            r#"{"user_id":"u1","amount":9,"ts":9000,"features":{}}"#,
            true,
        ),
        (r#"{"user_id":"u1","amount":10,"ts":10000}"#, false),
        // Out of order, but within the default lateness (5m): accepted.
        (r#"{"user_id":"u1","amount":11,"ts":1}"#, false),
    ];
    let input = dir.path().join("in.jsonl");
    let mut data = String::new();
    for (l, _) in records {
        data.push_str(l);
        data.push('\n');
    }
    write(&input, &data);
    let (out, dead) = run_file(dir.path(), &pipeline, &input, 3);
    let bad_lines: Vec<usize> = records
        .iter()
        .enumerate()
        .filter(|(_, (_, bad))| *bad)
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(
        lines(&out),
        records.len() - bad_lines.len(),
        "{}",
        text(&out)
    );
    let dead = text(&dead);
    assert_eq!(dead.lines().count(), bad_lines.len(), "{dead}");
    let mut seen = Vec::new();
    for letter in dead.lines() {
        let v: serde_json::Value = serde_json::from_str(letter).expect("dead letters are JSON");
        let line = v["line"].as_u64().expect("line") as usize;
        assert!(
            v["reason"].is_string() && v["error"].is_string(),
            "{letter}"
        );
        assert_eq!(v["raw"], records[line - 1].0, "{letter}");
        seen.push(line);
    }
    assert_eq!(seen, bad_lines, "dead letters in input order");
}

/// A live input (a pipe that stays open) is processed as it arrives: the first event's output
/// comes out while stdin is still open, instead of after a batch fills or the input ends.
#[test]
fn a_live_input_is_not_held_back_until_a_batch_fills() {
    let mut child = sluice()
        .arg("run")
        .arg(workspace().join("examples/transactions.toml"))
        .args(["--input", "-", "--output", "-", "--quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sluice");
    let mut stdin = child.stdin.take().expect("stdin");
    writeln!(
        stdin,
        r#"{{"ts":1,"user_id":"u1","amount":2.50,"device_id":"d1"}}"#
    )
    .expect("write");
    stdin.flush().expect("flush");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line);
        let _ = tx.send(line);
    });
    // Generous: this checks that the line comes at all while the input is open, not how fast.
    let line = rx.recv_timeout(std::time::Duration::from_secs(60));
    drop(stdin);
    let _ = child.wait();
    let line = line.expect("no output while the input stayed open");
    assert!(line.contains(r#""user_amount_1d":2.5"#), "{line}");
}
