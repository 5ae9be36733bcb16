use std::collections::BTreeMap;

use serde_json::Value;

use super::*;

const START: i64 = 1_767_225_600_000;

fn opts(events: u64, seed: u64, disorder_ms: u64, format: GenFormat) -> GenOptions {
    GenOptions {
        events,
        users: 1_000,
        days: 7,
        seed,
        disorder_ms,
        start_ms: START,
        format,
    }
}

fn gen_string(o: &GenOptions) -> String {
    let mut out = Vec::new();
    let n = write_nested(o, &mut out).expect("write to Vec");
    assert_eq!(n, o.events);
    String::from_utf8(out).expect("utf8")
}

fn parse_lines(s: &str) -> Vec<Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Counts of lines per type, and per type the lines where `pred` holds.
fn count_by_type(rows: &[Value], pred: impl Fn(&Value) -> bool) -> BTreeMap<String, (u64, u64)> {
    let mut counts: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for v in rows {
        let t = v["type"].as_str().expect("type").to_owned();
        let c = counts.entry(t).or_default();
        c.0 += 1;
        c.1 += u64::from(pred(v));
    }
    counts
}

fn permille(part: u64, whole: u64) -> u64 {
    part * 1000 / whole.max(1)
}

#[test]
fn same_options_same_bytes() {
    for format in [GenFormat::Jsonl, GenFormat::Csv] {
        let o = opts(5_000, 42, 250, format);
        assert_eq!(gen_string(&o), gen_string(&o));
    }
    let a = gen_string(&opts(1_000, 1, 0, GenFormat::Jsonl));
    let b = gen_string(&opts(1_000, 2, 0, GenFormat::Jsonl));
    assert_ne!(a, b);
}

#[test]
fn golden_prefix_is_stable() {
    // Pins the exact output so that any change to the generator is noticed.
    let s = gen_string(&GenOptions {
        events: 10,
        users: 100_000,
        days: 7,
        seed: 42,
        disorder_ms: 0,
        start_ms: START,
        format: GenFormat::Jsonl,
    });
    assert_eq!(s, GOLDEN);
}

/// Ten events: all three types, a failed login, a transaction without a device, a register
/// from a hub device (`d200001`, above the 200,000 regular ids).
const GOLDEN: &str = concat!(
    r#"{"type":"transaction","ts":1767225600000,"user":{"id":"u97013","country":"GB"},"device":{"id":"d52774","os":"windows"},"payload":{"amount":88.06,"currency":"GBP","merchant":"m5145"},"channel":"web"}"#,
    "\n",
    r#"{"type":"transaction","ts":1767322489847,"user":{"id":"u4591","country":"IT"},"device":{"id":"d196470","os":"android"},"payload":{"amount":170.75,"currency":"EUR","merchant":"m8810"},"channel":"app"}"#,
    "\n",
    r#"{"type":"transaction","ts":1767394011878,"user":{"id":"u24412","country":"NL"},"device":{"id":"d112121","os":"linux"},"payload":{"amount":14.34,"currency":"EUR","merchant":"m8740"},"channel":"web"}"#,
    "\n",
    r#"{"type":"transaction","ts":1767457096800,"user":{"id":"u65194","country":"GB"},"device":{"id":"d45015","os":"windows"},"payload":{"amount":56.28,"currency":"GBP","merchant":"m4053"},"channel":"app"}"#,
    "\n",
    r#"{"type":"transaction","ts":1767480772876,"user":{"id":"u7506","country":"FR"},"payload":{"amount":35.21,"currency":"EUR","merchant":"m3266"},"channel":"web"}"#,
    "\n",
    r#"{"type":"login","ts":1767555955868,"user":{"id":"u57931","country":"ES"},"device":{"id":"d172061","os":"android"},"status":"ok","ip":"10.252.32.170"}"#,
    "\n",
    r#"{"type":"login","ts":1767612527801,"user":{"id":"u46541","country":"FR"},"device":{"id":"d167076","os":"windows"},"status":"failed","ip":"10.195.206.58"}"#,
    "\n",
    r#"{"type":"transaction","ts":1767662413978,"user":{"id":"u48364","country":"FR"},"device":{"id":"d6288","os":"windows"},"payload":{"amount":54.93,"currency":"EUR","merchant":"m1903"},"channel":"web"}"#,
    "\n",
    r#"{"type":"register","ts":1767713517484,"user":{"id":"u79734","country":"DE"},"device":{"id":"d18761","os":"android"},"channel":"partner"}"#,
    "\n",
    r#"{"type":"register","ts":1767777877834,"user":{"id":"u91992","country":"FR"},"device":{"id":"d200001","os":"android"},"channel":"web"}"#,
    "\n",
);

/// Every line is a JSON object with the documented fields, in the documented order.
#[test]
fn every_line_is_valid_json_of_its_type() {
    let s = gen_string(&opts(20_000, 9, 100, GenFormat::Jsonl));
    for line in s.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let obj = v.as_object().expect("object");
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let tail: &[&str] = match obj["type"].as_str() {
            Some("login") => &["status", "ip"],
            Some("transaction") => &["payload", "channel"],
            Some("register") => &["channel"],
            other => panic!("type {other:?}: {line}"),
        };
        let mut expected = vec!["type", "ts", "user"];
        if obj.contains_key("device") {
            expected.push("device");
        }
        expected.extend_from_slice(tail);
        let mut sorted = expected.clone();
        sorted.sort_unstable();
        assert_eq!(keys, sorted, "{line}");
        let pos: Vec<usize> = expected
            .iter()
            .map(|k| line.find(&format!("\"{k}\":")).expect("key"))
            .collect();
        assert!(pos.windows(2).all(|w| w[0] < w[1]), "field order: {line}");
        assert!(obj["ts"].is_i64(), "{line}");
        let user = obj["user"]["id"].as_str().expect("user.id");
        assert!(
            user[1..].parse::<u64>().expect("user number") < 1_000,
            "{line}"
        );
        assert_eq!(obj["user"]["country"].as_str().map(str::len), Some(2));
        if let Some(device) = obj.get("device") {
            assert!(device["id"].as_str().expect("device.id").starts_with('d'));
            assert!(device["os"].is_string(), "{line}");
        }
        if let Some(payload) = obj.get("payload") {
            assert!(payload["currency"].is_string() && payload["merchant"].is_string());
            if let Some(amount) = payload.get("amount") {
                assert!(amount.as_f64().expect("amount") > 0.0, "{line}");
            }
        }
        if let Some(ip) = obj.get("ip") {
            let ip = ip.as_str().expect("ip");
            let parts: Vec<u8> = ip.split('.').map(|p| p.parse().expect("octet")).collect();
            assert_eq!((parts.len(), parts[0]), (4, 10), "{line}");
        }
    }
}

#[test]
fn type_mix_within_tolerance() {
    let rows = parse_lines(&gen_string(&opts(100_000, 21, 0, GenFormat::Jsonl)));
    let counts = count_by_type(&rows, |_| false);
    let n = rows.len() as u64;
    for (t, want) in [("transaction", 600), ("login", 300), ("register", 100)] {
        let got = permille(counts[t].0, n);
        assert!(got.abs_diff(want) <= 10, "{t}: {got} per mille");
    }
}

#[test]
fn missing_field_rates_as_designed() {
    let rows = parse_lines(&gen_string(&opts(200_000, 5, 0, GenFormat::Jsonl)));
    let n = rows.len() as u64;
    let no_device = rows.iter().filter(|v| v.get("device").is_none()).count() as u64;
    let got = permille(no_device, n);
    assert!(got.abs_diff(NO_DEVICE_PERMILLE) <= 4, "no device: {got}");

    let no_amount = count_by_type(&rows, |v| v["payload"].get("amount").is_none());
    let (tx, missing) = no_amount["transaction"];
    let got = permille(missing, tx);
    assert!(got.abs_diff(NO_AMOUNT_PERMILLE) <= 3, "no amount: {got}");

    let status = |s: Value| move |v: &Value| v.get("status") == Some(&s);
    let (logins, nulls) = count_by_type(&rows, status(Value::Null))["login"];
    let got = permille(nulls, logins);
    assert!(
        got.abs_diff(NULL_STATUS_PERMILLE) <= 3,
        "null status: {got}"
    );
    let (_, failed) = count_by_type(&rows, status("failed".into()))["login"];
    let got = permille(failed, logins);
    assert!(got.abs_diff(FAILED_PERMILLE) <= 8, "failed: {got}");
}

#[test]
fn users_skewed_devices_shared_and_hubs() {
    let o = opts(100_000, 8, 0, GenFormat::Jsonl);
    let rows = parse_lines(&gen_string(&o));
    let mut per_user: BTreeMap<&str, u64> = BTreeMap::new();
    let mut users_of: BTreeMap<u64, BTreeMap<&str, ()>> = BTreeMap::new();
    for v in &rows {
        let user = v["user"]["id"].as_str().expect("user");
        if v["type"] != "register" {
            *per_user.entry(user).or_default() += 1;
        }
        if let Some(d) = v.get("device") {
            let id: u64 = d["id"].as_str().expect("id")[1..].parse().expect("num");
            users_of.entry(id).or_default().insert(user, ());
        }
    }
    let mut counts: Vec<u64> = per_user.into_values().collect();
    counts.sort_unstable();
    let (max, median) = (counts[counts.len() - 1], counts[counts.len() / 2]);
    assert!(max > 20 * median.max(1), "max {max}, median {median}");

    let space = 2 * o.users;
    let hubs: Vec<usize> = (space..space + HUB_DEVICES)
        .map(|d| users_of.get(&d).map_or(0, BTreeMap::len))
        .collect();
    assert!(hubs.iter().all(|&u| u > 100), "hub users {hubs:?}");
    // Regular devices seen often enough to count (not only drawn at random): most belong to
    // one user, a good share to a few.
    let regular: Vec<usize> = users_of
        .range(..space)
        .map(|(_, u)| u.len())
        .filter(|&u| u >= 1)
        .collect();
    let shared = regular.iter().filter(|&&u| (2..=10).contains(&u)).count();
    assert!(
        shared * 10 > regular.len(),
        "{shared} of {} shared",
        regular.len()
    );
    assert!(
        regular.iter().filter(|&&u| u > 40).count() < 5,
        "no hubs among regular devices"
    );
}

#[test]
fn csv_flattens_with_dotted_headers() {
    let c = gen_string(&opts(3_000, 5, 10, GenFormat::Csv));
    let j = parse_lines(&gen_string(&opts(3_000, 5, 10, GenFormat::Jsonl)));
    let mut lines = c.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    assert_eq!(
        header.join(","),
        std::str::from_utf8(CSV_HEADER).expect("ascii").trim_end()
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), j.len());
    for (row, v) in rows.iter().zip(&j) {
        let cells: Vec<&str> = row.split(',').collect();
        assert_eq!(cells.len(), header.len(), "{row}");
        for (path, cell) in header.iter().zip(&cells) {
            let value = path.split('.').fold(v, |v, k| &v[k]);
            let text = match value {
                Value::Null => String::new(),
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => panic!("{other} at {path}"),
            };
            if *path == "payload.amount" && !cell.is_empty() {
                let want = value.as_f64().expect("amount");
                assert_eq!(cell.parse::<f64>().ok(), Some(want), "{row}");
            } else {
                assert_eq!(*cell, text, "{path} in {row}");
            }
        }
    }
}

#[test]
fn event_times_as_in_transactions() {
    let ts = |o: &GenOptions| -> Vec<i64> {
        parse_lines(&gen_string(o))
            .iter()
            .map(|v| v["ts"].as_i64().expect("ts"))
            .collect()
    };
    let ordered = ts(&opts(20_000, 11, 0, GenFormat::Jsonl));
    assert_eq!(ordered[0], START);
    assert!(ordered.windows(2).all(|w| w[0] <= w[1]));
    assert!(*ordered.last().expect("non-empty") > START + 6 * 86_400_000);
    let d = 5_000;
    let mut newest = i64::MIN;
    let mut late = 0;
    for t in ts(&opts(20_000, 12, d, GenFormat::Jsonl)) {
        assert!(
            newest == i64::MIN || t >= newest - d as i64,
            "{t} vs {newest}"
        );
        late += usize::from(t < newest);
        newest = newest.max(t);
    }
    assert!(late > 500, "actually disordered: {late}");
}

#[test]
fn degenerate_options() {
    let o = GenOptions {
        events: 200,
        users: 0,
        days: 0,
        seed: 0,
        disorder_ms: u64::MAX,
        start_ms: i64::MIN + 5,
        format: GenFormat::Jsonl,
    };
    let rows = parse_lines(&gen_string(&o));
    assert_eq!(rows.len(), 200);
    assert!(rows.iter().all(|v| v["user"]["id"] == "u0"));
    assert_eq!(
        gen_string(&opts(0, 1, 0, GenFormat::Csv)).as_bytes(),
        CSV_HEADER
    );
}
