//! The README's example must keep working: its `sluice run` command is run here as written
//! (with `out/` moved to a temporary directory), and the quick-start script must run the same.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Lines starting with `sluice ` inside the README's console blocks.
fn readme_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let mut in_console = false;
    let mut out = Vec::new();
    for line in readme.lines() {
        if line.starts_with("```") {
            in_console = line == "```console";
            continue;
        }
        if in_console && line.starts_with("sluice ") {
            out.push(line.to_owned());
        }
    }
    out
}

#[test]
fn readme_example_runs_as_written() {
    let commands = readme_commands();
    let run = commands
        .iter()
        .find(|c| c.starts_with("sluice run "))
        .expect("the README shows a `sluice run` command");
    let script =
        std::fs::read_to_string(repo_root().join("scripts/quickstart.sh")).expect("quickstart.sh");
    assert!(
        script.contains(&run.replacen("sluice", "./target/release/sluice", 1)),
        "scripts/quickstart.sh must run the README's command: {run}"
    );

    let tmp = tempfile::tempdir().expect("tempdir");
    let out_dir = tmp.path().join("out");
    std::fs::create_dir_all(&out_dir).expect("mkdir");
    let args: Vec<String> = run
        .split_whitespace()
        .skip(1)
        .map(|a| match a.strip_prefix("out/") {
            Some(rest) => out_dir.join(rest).display().to_string(),
            None => a.to_owned(),
        })
        .collect();
    let status = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(&args)
        .current_dir(repo_root())
        .output()
        .expect("run sluice");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let summary = String::from_utf8_lossy(&status.stderr);
    assert!(
        summary.contains("2000 events written, 3 dead letters (1 late)"),
        "{summary}"
    );

    let features = std::fs::read_to_string(out_dir.join("features.jsonl")).expect("output");
    let lines: Vec<&str> = features.lines().collect();
    assert_eq!(lines.len(), 2000);
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).expect("valid JSON");
        let f = &v["features"];
        assert!(
            f["user_amount_1d"].is_number() && f["user_devices_7d"].as_u64() >= Some(1),
            "{line}"
        );
    }
    let dead = std::fs::read_to_string(out_dir.join("dead_letters.jsonl")).expect("dead letters");
    let reasons: Vec<String> = dead
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["reason"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert_eq!(reasons, ["wrong_type", "malformed", "late"]);
}
