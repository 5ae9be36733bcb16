//! The dashboard of `sluice serve` in a real browser: Debian's Chromium, headless, loads the
//! page from a running server that has received events (with a token), runs its scripts, and
//! the rendered page is checked: the pipeline's feature names, a non-zero event count, the dead
//! letters by reason and a key lookup's values. A screenshot is saved under `target/`.
//!
//! Without Chromium the test is skipped, unless `SLUICE_REQUIRE_CHROMIUM=1` (set by
//! `scripts/test.sh`, which installs it).

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use common::http::Server;

const PIPELINE: &str = r#"
[event]
time = "ts"

[[feature]]
name = "user_amount_1d"
agg = "sum"
of = "amount"
by = ["user_id"]
window = "1d"
where = "amount > 1"

[[feature]]
name = "user_txn_1h"
agg = "count"
by = ["user_id"]
window = "1h"

[[feature]]
name = "user_avg_ticket"
expr = "user_amount_1d / max(user_txn_1h, 1)"

[serve]
token = "dash-token"
"#;

/// Chromium, if installed.
fn chromium() -> Option<PathBuf> {
    let found = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() && std::env::var_os("SLUICE_REQUIRE_CHROMIUM").is_some() {
        panic!("SLUICE_REQUIRE_CHROMIUM is set but chromium is not installed");
    }
    found
}

/// Runs headless Chromium on `url` (its scripts get 5 s of virtual time) with `mode`
/// (`--dump-dom` or `--screenshot=PATH`); returns its standard output.
fn browse(chromium: &Path, profile: &Path, url: &str, mode: &str) -> String {
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=5000",
            "--window-size=1200,2000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(mode)
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text of the element with id `id` in `dom` (up to its first tag).
fn text_of<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no element {id} in the page"));
    let start = dom[at..].find('>').map_or(at, |i| at + i + 1);
    let end = dom[start..].find('<').map_or(dom.len(), |i| start + i);
    &dom[start..end]
}

#[test]
fn the_dashboard_shows_traffic_the_pipeline_and_a_lookup_in_a_browser() {
    let Some(chromium) = chromium() else {
        eprintln!("skipped: chromium is not installed (apt-get install chromium)");
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = dir.path().join("p.toml");
    std::fs::write(&pipeline, PIPELINE).expect("write pipeline");
    let server = Server::start(&pipeline, &[], &[]);
    let mut http = server.connect();
    let auth = [("Authorization", "Bearer dash-token")];
    for (i, amount) in [1.5, 2.5, 3.5].into_iter().enumerate() {
        let event = format!(r#"{{"user_id":"u1","amount":{amount},"ts":{}}}"#, 1_000 + i);
        let r = http.request("POST", "/v1/events", &auth, event.as_bytes());
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let r = http.request("POST", "/v1/events", &auth, br#"{"user_id":"u2"}"#);
    assert_eq!(r.status, 400, "a record without a time is a dead letter");
    // Without the token, the page is refused.
    assert_eq!(http.get("/").status, 401);

    let url = format!("http://{}/?token=dash-token&lookup=user_id=u1", server.addr);
    let dom = browse(&chromium, &dir.path().join("profile"), &url, "--dump-dom");
    // The pipeline, with definitions.
    for name in ["user_amount_1d", "user_txn_1h", "user_avg_ticket"] {
        assert!(dom.contains(name), "no feature {name} in the page");
    }
    assert!(dom.contains("amount &gt; 1"), "the filter is shown");
    assert!(
        dom.contains("user_amount_1d / max(user_txn_1h, 1)"),
        "the expression is shown"
    );
    // Live figures.
    let events: u64 = text_of(&dom, "events")
        .replace(',', "")
        .parse()
        .expect("an event count");
    assert_eq!(events, 3);
    assert_eq!(text_of(&dom, "keys"), "1");
    assert!(
        dom.contains("<td>missing_time</td><td>1</td>"),
        "dead letters by reason"
    );
    assert!(text_of(&dom, "status").starts_with("State: memory."));
    // The lookup of u1: 1.5 + 2.5 + 3.5 over three events.
    let table = dom
        .split("<table id=\"lookup-table\">")
        .nth(1)
        .expect("a lookup result");
    assert!(table.contains("<th scope=\"row\">user_amount_1d</th><td>7.5</td>"));
    assert!(table.contains("<th scope=\"row\">user_txn_1h</th><td>3</td>"));

    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    browse(
        &chromium,
        &dir.path().join("profile-shot"),
        &url,
        &format!("--screenshot={}", shot.display()),
    );
    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000);
}
