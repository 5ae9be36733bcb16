//! Helpers shared by the integration tests.

#![allow(dead_code)]

pub mod http;
pub mod wait;

use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

/// Asserts that a finished command succeeded, showing its stderr if not; returns the stderr.
pub fn assert_success(out: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    stderr
}

/// The `sluice` binary under test.
pub fn sluice() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
}

/// `sluice run PIPELINE --input INPUT --output OUTPUT --dead-letters DEAD --quiet --workers N`.
pub fn sluice_run(
    pipeline: &Path,
    input: &Path,
    output: &Path,
    dead: &Path,
    workers: usize,
) -> Command {
    let mut c = sluice();
    c.arg("run")
        .arg(pipeline)
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(output)
        .arg("--dead-letters")
        .arg(dead)
        .args(["--quiet", "--workers", &workers.to_string()]);
    c
}

/// URLs of the test Redis Cluster (`SLUICE_REDIS_URLS`, comma-separated; `scripts/test.sh`
/// starts the cluster and sets it). Without it the test is skipped, unless
/// `SLUICE_REQUIRE_REDIS` or `CI` is set: then it fails, so CI cannot pass without Redis.
pub fn redis_urls() -> Option<Vec<String>> {
    match std::env::var("SLUICE_REDIS_URLS") {
        Ok(u) if !u.trim().is_empty() => Some(u.split(',').map(|s| s.trim().to_owned()).collect()),
        _ => {
            assert!(
                std::env::var_os("SLUICE_REQUIRE_REDIS").is_none()
                    && std::env::var_os("CI").is_none(),
                "this test needs a Redis Cluster but SLUICE_REDIS_URLS is not set; \
                 run scripts/test.sh, which starts one"
            );
            eprintln!("skipped: no Redis Cluster (SLUICE_REDIS_URLS is unset; scripts/test.sh starts one)");
            None
        }
    }
}

/// A namespace no other test run uses.
pub fn unique_namespace(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{tag}-{}-{nanos}", std::process::id())
}

/// A `[state]` section for the Redis backend.
pub fn redis_state(urls: &[String], namespace: &str, extra: &str) -> String {
    let urls: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        "\n[state]\nbackend = \"redis\"\nurls = [{}]\nnamespace = \"{namespace}\"\n{extra}",
        urls.join(", ")
    )
}

/// Bootstrap brokers of the test Kafka broker (`SLUICE_KAFKA_BROKERS`; `scripts/test.sh`
/// starts tansu and sets it). Without it the test is skipped, unless `SLUICE_REQUIRE_KAFKA` or
/// `CI` is set: then it fails.
pub fn kafka_brokers() -> Option<String> {
    match std::env::var("SLUICE_KAFKA_BROKERS") {
        Ok(b) if !b.trim().is_empty() => Some(b),
        _ => {
            assert!(
                std::env::var_os("SLUICE_REQUIRE_KAFKA").is_none()
                    && std::env::var_os("CI").is_none(),
                "this test needs a Kafka broker but SLUICE_KAFKA_BROKERS is not set; \
                 run scripts/test.sh, which starts one"
            );
            eprintln!("skipped: no Kafka broker (SLUICE_KAFKA_BROKERS is unset; scripts/test.sh starts one)");
            None
        }
    }
}

/// Runs `sluice gen ARGS --output PATH` and returns the lines written.
pub fn gen_lines(path: &Path, args: &[&str]) -> Vec<String> {
    let out = sluice()
        .arg("gen")
        .args(args)
        .arg("--output")
        .arg(path)
        .output()
        .expect("run sluice gen");
    assert!(
        out.status.success(),
        "gen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    lines(path)
}

/// The lines of a text file.
pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .lines()
        .map(str::to_owned)
        .collect()
}
