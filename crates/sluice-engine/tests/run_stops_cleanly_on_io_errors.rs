//! A failing input or output stops a run with that error, never a hang, and what was read
//! before an input failure is still processed and written.

use std::io::{self, Read, Write};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_core::{Agg, FeatureSpec, Plan};
use sluice_engine::{run, Error, InputFormat, Job, Outputs, Stats, StreamSource, TimeFormat};

fn job(workers: usize) -> Job {
    let plan = Plan::new(
        vec![FeatureSpec {
            name: "n".into(),
            agg: Agg::Count,
            of: None,
            by: vec!["u".into()],
            window_ms: 1000,
            granularity_ms: 1,
            filter: None,
        }],
        0,
    )
    .expect("valid plan");
    let mut job = Job::new(plan, "ts", TimeFormat::EpochMs, workers);
    job.batch_bytes = 1024; // many small batches
    job
}

fn lines(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| format!("{{\"u\":\"k{}\",\"ts\":{}}}\n", i % 7, i))
        .collect::<String>()
        .into_bytes()
}

/// Yields `data`, then fails.
struct FailingReader {
    data: io::Cursor<Vec<u8>>,
}

impl Read for FailingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.data.read(buf)? {
            0 => Err(io::Error::other("disk went away")),
            n => Ok(n),
        }
    }
}

/// Accepts `limit` bytes, then fails.
struct FailingWriter {
    limit: usize,
}

impl Write for FailingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() > self.limit {
            return Err(io::Error::other("disk full"));
        }
        self.limit -= buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Runs `f` on a thread and fails the test if it takes more than 30 s (a hang).
fn within_time<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the run hung instead of stopping")
}

#[test]
fn input_error_stops_the_run_after_writing_what_was_read() {
    for workers in [1, 3] {
        let out = Shared::default();
        let written = out.clone();
        let result = within_time(move || {
            let mut input = StreamSource::new(
                Box::new(FailingReader {
                    data: io::Cursor::new(lines(5000)),
                }),
                "in.jsonl",
                InputFormat::Jsonl,
            );
            let outputs = Outputs::writers(Box::new(out), Box::new(io::sink()));
            run(
                &job(workers),
                &mut input,
                outputs,
                Arc::new(Stats::default()),
            )
        });
        let err = result.expect_err("the input failed");
        assert!(matches!(err, Error::Input { .. }), "{err}");
        assert!(err.to_string().contains("disk went away"), "{err}");
        let text = String::from_utf8(written.0.lock().expect("lock").clone()).expect("utf8");
        let n = text.lines().count();
        assert!(
            n > 4000,
            "complete batches before the failure are written, got {n}"
        );
        for (i, line) in text.lines().enumerate() {
            assert!(
                line.contains(&format!("\"ts\":{i}}}")) || line.contains(&format!("\"ts\":{i},")),
                "{line}"
            );
        }
    }
}

#[test]
fn output_error_stops_the_run() {
    for workers in [1, 2] {
        let result = within_time(move || {
            let mut input = StreamSource::new(
                Box::new(io::Cursor::new(lines(20_000))),
                "in.jsonl",
                InputFormat::Jsonl,
            );
            let outputs = Outputs::writers(
                Box::new(FailingWriter { limit: 10_000 }),
                Box::new(io::sink()),
            );
            run(
                &job(workers),
                &mut input,
                outputs,
                Arc::new(Stats::default()),
            )
        });
        let err = result.expect_err("the output failed");
        assert!(matches!(err, Error::Output { what: "output", .. }), "{err}");
        assert!(err.to_string().contains("disk full"), "{err}");
    }
}
