//! Golden pipelines: every directory under `testdata/pipelines/` holds a `pipeline.toml`, an
//! input (`input.jsonl` or `input.csv`), the expected output `expected.jsonl` and, when some
//! records are rejected, `expected_dead_letters.jsonl` (absent: no dead letters).
//!
//! Each case runs the built binary from its own directory (so dead letters name the input as
//! given, `input.jsonl`) with 1, 2 and 3 workers, and both outputs must match byte for byte.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/pipelines")
}

/// Every case directory, sorted by name.
fn cases() -> Vec<PathBuf> {
    let dir = cases_dir();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    cases
}

fn input_name(case: &Path) -> &'static str {
    for name in ["input.jsonl", "input.csv"] {
        if case.join(name).is_file() {
            return name;
        }
    }
    panic!("{}: no input.jsonl or input.csv", case.display());
}

fn name_of(case: &Path) -> String {
    case.file_name().map_or_else(
        || case.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// A readable account of how `actual` differs from `expected`, line by line.
fn diff(what: &str, expected: &[u8], actual: &[u8]) -> Option<String> {
    if expected == actual {
        return None;
    }
    let exp = String::from_utf8_lossy(expected);
    let act = String::from_utf8_lossy(actual);
    let exp_lines: Vec<&str> = exp.split_inclusive('\n').collect();
    let act_lines: Vec<&str> = act.split_inclusive('\n').collect();
    let mut out = format!(
        "{what} differs ({} expected lines, {} actual lines):\n",
        exp_lines.len(),
        act_lines.len()
    );
    let mut shown = 0;
    for i in 0..exp_lines.len().max(act_lines.len()) {
        let e = exp_lines.get(i).copied();
        let a = act_lines.get(i).copied();
        if e == a {
            continue;
        }
        if shown == 8 {
            out.push_str("  ... (more differences)\n");
            break;
        }
        shown += 1;
        let show = |l: Option<&str>| match l {
            None => "<no line>".to_owned(),
            Some(l) if l.ends_with('\n') => l.trim_end_matches('\n').to_owned(),
            Some(l) => format!("{l}<no newline at end>"),
        };
        let _ = write!(
            out,
            "  line {}:\n    expected: {}\n    actual:   {}\n",
            i + 1,
            show(e),
            show(a)
        );
    }
    Some(out)
}

/// Runs one case with `workers` workers; returns a description of every mismatch. With
/// `state`, that section is appended to the pipeline (a copy in a temp dir).
fn run_case(case: &Path, workers: usize, state: Option<&str>) -> Vec<String> {
    let tmp = tempfile::tempdir().expect("temp dir");
    let out = tmp.path().join("out.jsonl");
    let dead = tmp.path().join("dead.jsonl");
    let input = input_name(case);
    let pipeline = match state {
        None => case.join("pipeline.toml"),
        Some(section) => {
            let text = std::fs::read_to_string(case.join("pipeline.toml")).expect("pipeline");
            let copy = tmp.path().join("pipeline.toml");
            std::fs::write(&copy, text + section).expect("write the pipeline copy");
            copy
        }
    };
    let result = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .current_dir(case)
        .arg("run")
        .arg(&pipeline)
        .args(["--input", input])
        .arg("--output")
        .arg(&out)
        .arg("--dead-letters")
        .arg(&dead)
        .args(["--workers", &workers.to_string(), "--quiet"])
        .output()
        .expect("run the sluice binary");
    let mut problems = Vec::new();
    if !result.status.success() {
        problems.push(format!(
            "exit status {}; stderr:\n{}",
            result.status,
            String::from_utf8_lossy(&result.stderr)
        ));
        return problems;
    }
    let read = |p: &Path| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let expected_out = read(&case.join("expected.jsonl"));
    let expected_dead_path = case.join("expected_dead_letters.jsonl");
    let expected_dead = if expected_dead_path.is_file() {
        read(&expected_dead_path)
    } else {
        Vec::new()
    };
    let actual_out = std::fs::read(&out).unwrap_or_default();
    let actual_dead = std::fs::read(&dead).unwrap_or_default();
    problems.extend(diff("output (expected.jsonl)", &expected_out, &actual_out));
    problems.extend(diff(
        "dead letters (expected_dead_letters.jsonl)",
        &expected_dead,
        &actual_dead,
    ));
    problems
}

fn check_all(workers: usize) {
    check_all_with(workers, |_| None);
}

fn check_all_with(workers: usize, state: impl Fn(&Path) -> Option<String>) {
    let cases = cases();
    assert!(
        cases.len() >= 7,
        "expected at least 7 golden cases in {}, found {}",
        cases_dir().display(),
        cases.len()
    );
    let mut report = String::new();
    for case in &cases {
        let problems = run_case(case, workers, state(case).as_deref());
        if !problems.is_empty() {
            let _ = writeln!(
                report,
                "=== case `{}` with --workers {workers}:",
                name_of(case)
            );
            for p in problems {
                report.push_str(&p);
            }
        }
    }
    assert!(
        report.is_empty(),
        "golden pipelines failed:\n{report}\n(expected files live in {})",
        cases_dir().display()
    );
}

#[test]
fn golden_pipelines_one_worker() {
    check_all(1);
}

#[test]
fn golden_pipelines_two_workers() {
    check_all(2);
}

#[test]
fn golden_pipelines_three_workers() {
    check_all(3);
}

/// The same cases with state in the Redis Cluster: the same outputs, byte for byte. Each case
/// gets a fresh namespace, so it starts from empty state like the memory runs.
#[test]
fn golden_pipelines_on_redis() {
    let Some(urls) = common::redis_urls() else {
        return;
    };
    for workers in [1, 2] {
        check_all_with(workers, |case| {
            let tag = format!("golden-{}-{workers}", name_of(case));
            Some(common::redis_state(
                &urls,
                &common::unique_namespace(&tag),
                "",
            ))
        });
    }
}

/// The same cases with the embedded backend and a 1 KB memory budget: keys move to disk and
/// back all the time, and the outputs are the same, byte for byte.
#[test]
fn golden_pipelines_on_embedded_state() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = format!(
        "\n[state]\nbackend = \"embedded\"\nmemory_cap = \"1KB\"\npath = \"{}\"\n",
        dir.path().display()
    );
    for workers in [1, 2] {
        check_all_with(workers, |_| Some(state.clone()));
    }
}

#[test]
fn every_case_is_complete() {
    for case in cases() {
        for file in ["pipeline.toml", "expected.jsonl", "README.md"] {
            assert!(
                case.join(file).is_file(),
                "{}: missing {file}",
                case.display()
            );
        }
        input_name(&case);
    }
}

#[test]
fn diff_names_the_first_differing_line() {
    assert_eq!(diff("x", b"a\nb\n", b"a\nb\n"), None);
    let d = diff("x", b"a\nb\n", b"a\nc\n").expect("differs");
    assert!(
        d.contains("line 2:\n    expected: b\n    actual:   c"),
        "{d}"
    );
    let d = diff("x", b"a\n", b"a").expect("differs");
    assert!(d.contains("<no newline at end>"), "{d}");
}

/// Each StreamFQL feature of `fql/` and `relations_fql/` equals its TOML form (`as_toml.toml`,
/// as `sluice check` prints it): the same value on every event.
#[test]
fn fql_features_equal_their_toml_form() {
    for dir in ["fql", "relations_fql"] {
        let case = cases_dir().join(dir);
        let run = |pipeline: &str| -> Vec<serde_json::Value> {
            let tmp = tempfile::tempdir().expect("temp dir");
            let out = tmp.path().join("out.jsonl");
            let result = Command::new(env!("CARGO_BIN_EXE_sluice"))
                .current_dir(&case)
                .args(["run", pipeline, "--input", "input.jsonl", "--quiet"])
                .arg("--output")
                .arg(&out)
                .output()
                .expect("run the sluice binary");
            assert!(result.status.success(), "{dir}/{pipeline}: {result:?}");
            std::fs::read_to_string(&out)
                .expect("output")
                .lines()
                .map(|l| {
                    serde_json::from_str::<serde_json::Value>(l).expect("json")["features"].clone()
                })
                .collect()
        };
        let written = std::fs::read_to_string(case.join("pipeline.toml"))
            .expect("pipeline")
            .matches("[[feature]]")
            .count();
        let fql = run("pipeline.toml");
        let toml = run("as_toml.toml");
        assert_eq!(fql.len(), toml.len());
        assert!(!fql.is_empty());
        for (i, (f, t)) in fql.iter().zip(&toml).enumerate() {
            let f = f.as_object().expect("features");
            assert_eq!(
                f.len(),
                written,
                "{dir} line {}: hidden parts are not written",
                i + 1
            );
            for (name, value) in f {
                assert_eq!(Some(value), t.get(name), "{dir} line {}: `{name}`", i + 1);
            }
        }
    }
}
