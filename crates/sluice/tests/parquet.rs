//! Parquet in and out with the `sluice` binary. The files are written and read back here by the
//! parquet crate. Every combination of JSONL, CSV and Parquet gives the features of the JSONL
//! run, for every feature type, nulls included, with any number of workers; bad Parquet input
//! gives dead letters or a clear error naming the file and the row group; a run over a Parquet
//! input killed after a checkpoint resumes to the uninterrupted run's output, byte for byte.

use std::fs::File;
use std::io::{BufReader, Seek};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use serde_json::{Map, Value};
use sluice_bench::gen::{write_nested, GenFormat, GenOptions};
use sluice_bench::language::RELATION_PIPELINE;
use sluice_bench::LANGUAGE_PIPELINE;

mod common;

use common::wait::Deadline;
use common::{assert_success, sluice_run};

/// Nested events (logins, transactions, registers) as JSONL, or flattened as CSV.
fn nested(format: GenFormat, events: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let opts = GenOptions {
        events,
        users: 200,
        days: 2,
        seed: 11,
        disorder_ms: 2_000,
        start_ms: 1_767_225_600_000,
        format,
    };
    write_nested(&opts, &mut out).expect("generate");
    out
}

/// Writes JSONL `input` as Parquet with `rows` rows per row group: nested objects become
/// struct columns (the schema is inferred from the records).
fn write_parquet(input: &Path, output: &Path, rows: usize) {
    let mut file = BufReader::new(File::open(input).expect("open input"));
    let (schema, _) =
        arrow_json::reader::infer_json_schema(&mut file, None).expect("infer the schema");
    file.rewind().expect("rewind");
    let schema = Arc::new(schema);
    let reader = arrow_json::ReaderBuilder::new(Arc::clone(&schema))
        .with_batch_size(rows)
        .build(file)
        .expect("reader");
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(rows))
        .build();
    let out = File::create(output).expect("create Parquet");
    let mut writer = ArrowWriter::try_new(out, schema, Some(props)).expect("writer");
    for batch in reader {
        writer.write(&batch.expect("decode JSON")).expect("write");
    }
    writer.close().expect("close");
}

/// The rows of a Parquet file as JSON objects.
fn read_parquet(path: &Path) -> Vec<Map<String, Value>> {
    let file = File::open(path).expect("open Parquet output");
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("a Parquet file")
        .build()
        .expect("reader");
    let batches: Vec<RecordBatch> = reader.map(|b| b.expect("decode")).collect();
    let mut json = arrow_json::ArrayWriter::new(Vec::new());
    for batch in &batches {
        json.write(batch).expect("to JSON");
    }
    json.finish().expect("finish");
    let text = json.into_inner();
    if text.is_empty() {
        return Vec::new();
    }
    serde_json::from_slice(&text).expect("JSON rows")
}

/// The rows of a CSV file as JSON objects of text (an empty cell is null).
fn read_csv(path: &Path) -> Vec<Map<String, Value>> {
    let mut reader = csv::Reader::from_path(path).expect("open CSV output");
    let header = reader.headers().expect("header").clone();
    reader
        .records()
        .map(|r| {
            let r = r.expect("a CSV row");
            header
                .iter()
                .zip(r.iter())
                .map(|(h, cell)| {
                    let v = match cell {
                        "" => Value::Null,
                        text => Value::String(text.to_owned()),
                    };
                    (h.to_owned(), v)
                })
                .collect()
        })
        .collect()
}

/// The lines of a JSONL file, parsed.
fn read_jsonl(path: &Path) -> Vec<Value> {
    common::lines(path)
        .iter()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// The feature names of a pipeline, in output order.
fn feature_names(jsonl: &[Value]) -> Vec<String> {
    jsonl[0]["features"]
        .as_object()
        .expect("features")
        .keys()
        .cloned()
        .collect()
}

/// Whether a Parquet cell holds the value a JSONL output wrote: numbers equal or equal as
/// printed (a computed value is printed to 15 significant digits), text columns hold a
/// string as it is and any other value as its JSON text.
fn same_value(parquet: Option<&Value>, json: &Value) -> bool {
    let parquet = parquet.unwrap_or(&Value::Null);
    match (parquet, json) {
        (Value::Number(p), Value::Number(j)) => {
            let (p, j) = (p.as_f64().expect("f64"), j.as_f64().expect("f64"));
            let mut printed = Vec::new();
            sluice_engine::codec::write_computed(&mut printed, p);
            p == j || String::from_utf8_lossy(&printed).parse::<f64>().ok() == Some(j)
        }
        (Value::String(p), Value::String(j)) => p == j,
        // A CSV cell: a number's text.
        (Value::String(p), Value::Number(_)) if p.parse::<f64>().is_ok() => {
            let number = serde_json::from_str::<Value>(p).ok();
            same_value(number.as_ref(), json)
        }
        (Value::String(p), j) => p.as_str() == j.to_string().as_str(),
        (p, j) => p == j,
    }
}

/// Checks that `rows` (a Parquet or CSV output) holds the features of `reference` (a JSONL output of
/// the same events) in the same order.
fn assert_same_features(what: &str, rows: &[Map<String, Value>], reference: &[Value]) {
    assert_eq!(rows.len(), reference.len(), "{what}: rows");
    let names = feature_names(reference);
    for (i, (row, json)) in rows.iter().zip(reference).enumerate() {
        for name in &names {
            let expected = &json["features"][name];
            assert!(
                same_value(row.get(name), expected),
                "{what}: row {i}, feature `{name}`: Parquet has {:?}, JSONL {expected}",
                row.get(name)
            );
        }
    }
}

/// The features of each line of a JSONL output.
fn features_of(lines: &[Value]) -> Vec<Value> {
    lines.iter().map(|l| l["features"].clone()).collect()
}

struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new() -> Case {
        Case {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, bytes).expect("write");
        path
    }

    /// Runs `pipeline` from `input` to `output` with `workers`; returns stderr.
    fn run(&self, pipeline: &Path, input: &Path, output: &str, workers: usize) -> String {
        let out = sluice_run(
            pipeline,
            input,
            &self.path(output),
            &self.path(&format!("{output}.dead")),
            workers,
        )
        .output()
        .expect("run sluice");
        assert_success(&out)
    }

    fn dead_letters(&self, output: &str) -> Vec<Value> {
        read_jsonl(&self.path(&format!("{output}.dead")))
    }
}

#[test]
fn every_format_gives_the_features_of_the_jsonl_run() {
    let case = Case::new();
    // The language benchmark's 27 features (filters, nested paths, derived features, kept
    // values, sketches, quantiles) and relation features over the same events.
    let relations = RELATION_PIPELINE
        .split_once("[[feature]]")
        .map(|(_, rest)| format!("[[feature]]{rest}"))
        .expect("relation features");
    let pipeline = case.write(
        "p.toml",
        format!("{LANGUAGE_PIPELINE}\n{relations}").as_bytes(),
    );
    let jsonl = case.write("in.jsonl", &nested(GenFormat::Jsonl, 6_000));
    let csv = case.write("in.csv", &nested(GenFormat::Csv, 6_000));
    let parquet = case.path("in.parquet");
    write_parquet(&jsonl, &parquet, 700);

    case.run(&pipeline, &jsonl, "ref.jsonl", 2);
    let reference = read_jsonl(&case.path("ref.jsonl"));
    assert_eq!(reference.len(), 6_000);
    assert!(case.dead_letters("ref.jsonl").is_empty());
    let names = feature_names(&reference);
    assert!(names.len() > 30, "{names:?}");
    let with_nulls = names
        .iter()
        .filter(|name| reference.iter().any(|l| l["features"][name].is_null()))
        .count();
    assert!(
        with_nulls >= 10,
        "nulls are part of the check ({with_nulls} features)"
    );
    for name in &names {
        assert!(
            reference.iter().any(|l| !l["features"][name].is_null()),
            "some `{name}` should have a value"
        );
    }

    for workers in [1, 2, 3] {
        // Parquet in, JSONL out: the same features (the input fields are Parquet's).
        let out = format!("pq-{workers}.jsonl");
        case.run(&pipeline, &parquet, &out, workers);
        let lines = read_jsonl(&case.path(&out));
        assert_eq!(features_of(&lines), features_of(&reference), "{out}");

        // Parquet in, Parquet out: the input columns as read, then the features.
        let out = format!("pq-{workers}.parquet");
        case.run(&pipeline, &parquet, &out, workers);
        let rows = read_parquet(&case.path(&out));
        assert_same_features(&out, &rows, &reference);
        let first = &rows[0];
        assert!(first.contains_key("user"), "struct columns pass through");
        assert_eq!(first["ts"], reference[0]["ts"]);

        // JSONL in, Parquet out: each record's text in `event`.
        let out = format!("json-{workers}.parquet");
        case.run(&pipeline, &jsonl, &out, workers);
        let rows = read_parquet(&case.path(&out));
        assert_same_features(&out, &rows, &reference);
        let event: Value =
            serde_json::from_str(rows[0]["event"].as_str().expect("text")).expect("JSON");
        let mut expected = reference[0].clone();
        expected.as_object_mut().expect("object").remove("features");
        assert_eq!(event, expected);

        // CSV in, Parquet out: the CSV columns as text.
        let out = format!("csv-{workers}.parquet");
        case.run(&pipeline, &csv, &out, workers);
        let rows = read_parquet(&case.path(&out));
        assert_same_features(&out, &rows, &reference);
        assert!(rows[0].contains_key("user.id"), "{:?}", rows[0].keys());

        // CSV out, from CSV and from JSONL: the same columns as text.
        for (input, out) in [(&csv, "csv"), (&jsonl, "json")] {
            let out = format!("{out}-{workers}.csv");
            case.run(&pipeline, input, &out, workers);
            assert_same_features(&out, &read_csv(&case.path(&out)), &reference);
        }
        // Parquet with struct columns cannot be CSV.
        let out = sluice_run(
            &pipeline,
            &parquet,
            &case.path("pq.csv"),
            &case.path("pq.csv.dead"),
            workers,
        )
        .output()
        .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            stderr.contains("a CSV output cannot hold the column"),
            "{stderr}"
        );
    }
}

/// A small pipeline over flat transactions.
const FLAT: &str = r#"
[event]
time = "ts"
lateness = "1m"

[[feature]]
name = "amount_1d"
agg = "sum"
of = "amount"
by = "user_id"
window = "1d"

[[feature]]
name = "devices_7d"
agg = "distinct_count"
of = "device_id"
by = "user_id"
window = "7d"
"#;

/// Generated flat transactions (out of order by up to 2 minutes) as JSONL, and as Parquet with
/// `rows` rows per row group.
fn transactions(case: &Case, events: u32, rows: usize) -> (PathBuf, PathBuf) {
    let jsonl = case.path("tx.jsonl");
    let out = common::sluice()
        .args(["gen", "--events", &events.to_string(), "--users", "500"])
        .args([
            "--days",
            "2",
            "--seed",
            "3",
            "--disorder",
            "120000",
            "--output",
        ])
        .arg(&jsonl)
        .output()
        .expect("run sluice gen");
    assert_success(&out);
    let parquet = case.path("tx.parquet");
    write_parquet(&jsonl, &parquet, rows);
    (jsonl, parquet)
}

#[test]
fn a_feature_named_like_an_input_column_is_refused_for_a_parquet_output() {
    let case = Case::new();
    let (jsonl, parquet) = transactions(&case, 200, 50);
    let pipeline = case.write("p.toml", FLAT.replace("amount_1d", "device_id").as_bytes());
    let out = sluice_run(
        &pipeline,
        &parquet,
        &case.path("o.parquet"),
        &case.path("o.dead"),
        1,
    )
    .output()
    .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("feature `device_id` has the name of an input column"),
        "{stderr}"
    );
    // To JSONL, the same pipeline is fine.
    case.run(&pipeline, &parquet, "o.jsonl", 1);
    case.run(&pipeline, &jsonl, "o2.jsonl", 1);
}

#[test]
fn bad_parquet_input_gives_dead_letters_or_an_error_naming_the_file() {
    let case = Case::new();
    let (_, parquet) = transactions(&case, 3_000, 500);
    let pipeline = case.write("p.toml", FLAT.as_bytes());

    // Truncated: the footer is gone.
    let bytes = std::fs::read(&parquet).expect("read");
    let truncated = case.write("truncated.parquet", &bytes[..bytes.len() / 2]);
    let out = sluice_run(
        &pipeline,
        &truncated,
        &case.path("t.jsonl"),
        &case.path("t.dead"),
        2,
    )
    .output()
    .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("truncated.parquet") && stderr.contains("not a readable Parquet file"),
        "{stderr}"
    );

    // Damaged in the middle: the rows of the row groups that cannot be read are dead letters
    // naming the row group, the others are processed.
    let mut damaged = bytes.clone();
    let middle = damaged.len() / 2;
    for b in &mut damaged[middle - 2_000..middle + 2_000] {
        *b = 0xA5;
    }
    let damaged = case.write("damaged.parquet", &damaged);
    let stderr = case.run(&pipeline, &damaged, "d.jsonl", 2);
    let dead = case.dead_letters("d.jsonl");
    let events = read_jsonl(&case.path("d.jsonl"));
    assert_eq!(events.len() + dead.len(), 3_000, "{stderr}");
    // (Some are `late`: the events are out of order by more than the lateness.)
    let malformed: Vec<&Value> = dead.iter().filter(|d| d["reason"] == "malformed").collect();
    let n = malformed.len();
    assert!(
        n > 0 && n.is_multiple_of(500),
        "{n} malformed rows: whole row groups"
    );
    for d in malformed {
        let error = d["error"].as_str().expect("error");
        assert!(
            error.contains("row group") && error.contains("damaged.parquet"),
            "{error}"
        );
    }

    // A wrong column type: `amount` as text gives `wrong_type` dead letters with their row
    // numbers; null times give `missing_time`; a missing time column is refused at start.
    let text = common::lines(&case.path("tx.jsonl"))
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let mut v: Value = serde_json::from_str(l).expect("JSON");
            let amount = v["amount"].to_string();
            v["amount"] = Value::String(if i % 100 == 7 { "n/a".into() } else { amount });
            if (10..20).contains(&i) {
                v.as_object_mut().expect("object").remove("ts");
            }
            v.to_string() + "\n"
        })
        .collect::<String>();
    let typed = case.write("typed.jsonl", text.as_bytes());
    let typed_parquet = case.path("typed.parquet");
    write_parquet(&typed, &typed_parquet, 500);
    let p2 = case.write("p2.toml", FLAT.replace("\"ts\"", "\"ts2\"").as_bytes());
    let out = sluice_run(
        &p2,
        &typed_parquet,
        &case.path("m.jsonl"),
        &case.path("m.dead"),
        1,
    )
    .output()
    .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("typed.parquet") && stderr.contains("has no column `ts2`"),
        "{stderr}"
    );
    case.run(&pipeline, &typed_parquet, "w.jsonl", 2);
    let dead = case.dead_letters("w.jsonl");
    let wrong: Vec<&Value> = dead
        .iter()
        .filter(|d| d["reason"] == "wrong_type")
        .collect();
    // A text column where numbers are expected: every row with a time is a dead letter.
    assert_eq!(wrong.len(), 2_990, "{} dead letters", dead.len());
    assert_eq!(wrong[7]["line"], 8, "row numbers are 1-based");
    assert!(wrong[7]["raw"].as_str().expect("raw").contains("n/a"));
    assert!(dead.iter().any(|d| d["reason"] == "missing_time"));
    // To a Parquet output (fields read from the columns), the same dead letters.
    case.run(&pipeline, &typed_parquet, "w.parquet", 2);
    assert_eq!(case.dead_letters("w.parquet"), dead);
    assert!(read_parquet(&case.path("w.parquet")).is_empty());
}

#[test]
fn a_run_over_parquet_killed_after_a_checkpoint_resumes_to_the_same_output() {
    let case = Case::new();
    // Row groups of 100k rows: the run cuts each into pieces, and checkpoints fall inside
    // row groups.
    let (jsonl, parquet) = transactions(&case, 200_000, 100_000);
    let reference = case.write("ref.toml", FLAT.as_bytes());
    case.run(&reference, &jsonl, "from-jsonl.jsonl", 2);
    case.run(&reference, &parquet, "from-parquet.jsonl", 2);
    assert_eq!(
        features_of(&read_jsonl(&case.path("from-parquet.jsonl"))),
        features_of(&read_jsonl(&case.path("from-jsonl.jsonl"))),
        "pieces of row groups give the features of the JSONL run"
    );
    // JSONL and CSV outputs are cut back to a checkpoint's length; Parquet's are refused.
    for ext in ["jsonl", "csv"] {
        let (out, dead) = (format!("out.{ext}"), format!("out.{ext}.dead"));
        case.run(&reference, &parquet, &format!("ref.{ext}"), 2);
        let expected = std::fs::read(case.path(&format!("ref.{ext}"))).expect("read");
        let expected_dead =
            std::fs::read(case.path(&format!("ref.{ext}.dead"))).unwrap_or_default();
        let pipeline = case.write(
            &format!("p-{ext}.toml"),
            format!("{FLAT}\n[checkpoint]\npath = \"ckpt-{ext}\"\ninterval = \"20ms\"\nkeep = 2\n")
                .as_bytes(),
        );
        for (round, workers) in [(1, 2), (2, 1), (3, 3)] {
            let mut child = sluice_run(
                &pipeline,
                &parquet,
                &case.path(&out),
                &case.path(&dead),
                workers,
            )
            .stderr(Stdio::null())
            .spawn()
            .expect("run");
            let deadline = Deadline::after(
                Duration::from_secs(120),
                format!("{ext}, round {round}: a new complete checkpoint"),
            );
            let root = case.path(&format!("ckpt-{ext}"));
            let before = checkpoints(&root);
            while checkpoints(&root) <= before {
                if child.try_wait().expect("try_wait").is_some() {
                    break;
                }
                deadline.pause(Duration::from_millis(2), String::new);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let stderr = case.run(&pipeline, &parquet, &out, 2);
        assert!(stderr.contains("resuming from checkpoint"), "{stderr}");
        let written = std::fs::read(case.path(&out)).expect("read");
        assert!(
            written == expected,
            "{ext}: the resumed output differs from one run"
        );
        let written_dead = std::fs::read(case.path(&dead)).unwrap_or_default();
        assert!(
            written_dead == expected_dead,
            "{ext}: the resumed dead letters differ"
        );
    }
    // A Parquet output with checkpoints is refused at start, naming the setting.
    let pipeline = case.write(
        "p-parquet.toml",
        format!("{FLAT}\n[checkpoint]\npath = \"ckpt\"\n[sink]\npath = \"o.parquet\"\n").as_bytes(),
    );
    let out = common::sluice()
        .args(["run"])
        .arg(&pipeline)
        .arg("--input")
        .arg(&parquet)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("p-parquet.toml") && stderr.contains("cannot be cut back"),
        "{stderr}"
    );
}

/// The newest complete checkpoint's number under `root` (0 for none).
fn checkpoints(root: &Path) -> u64 {
    std::fs::read_dir(root)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().join("manifest.json").is_file())
                .filter_map(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .trim_start_matches("chk-")
                        .parse()
                        .ok()
                })
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}
