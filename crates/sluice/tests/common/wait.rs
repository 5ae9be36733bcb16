//! Waiting on events instead of sleeping: the lines a child process writes (collected by a
//! reader thread that can be waited on and joined), and deadlines for polling loops.

use std::io::{BufRead, BufReader, Read};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A deadline for a loop that polls a condition: each [`Deadline::pause`] fails the test once
/// the deadline has passed, naming what was awaited, and otherwise sleeps a little before the
/// next check. The loop synchronises on the condition; the pause only spaces the checks.
pub struct Deadline {
    what: String,
    timeout: Duration,
    at: Instant,
}

impl Deadline {
    /// A deadline `timeout` from now for `what` (as in "timed out waiting for {what}").
    pub fn after(timeout: Duration, what: impl Into<String>) -> Deadline {
        Deadline {
            what: what.into(),
            timeout,
            at: Instant::now() + timeout,
        }
    }

    /// Whether the deadline has passed.
    pub fn passed(&self) -> bool {
        Instant::now() >= self.at
    }

    /// Fails with what was awaited and `details()` once the deadline has passed; otherwise
    /// sleeps `interval` before the caller checks its condition again.
    pub fn pause(&self, interval: Duration, details: impl FnOnce() -> String) {
        if self.passed() {
            panic!(
                "timed out after {:?} waiting for {}\n{}",
                self.timeout,
                self.what,
                details()
            );
        }
        std::thread::sleep(interval);
    }
}

#[derive(Default)]
struct Lines {
    lines: Vec<String>,
    /// The pipe reached its end (the writer and everything that inherited it closed it).
    closed: bool,
}

/// The lines read from a child's pipe (stderr or stdout) by a reader thread. Tests wait for a
/// line to appear ([`LineLog::wait_for`]) and, once the child has exited, for the reader to
/// reach the end of the pipe ([`LineLog::join`]), so that the log is complete.
pub struct LineLog {
    shared: Arc<(Mutex<Lines>, Condvar)>,
    reader: Option<JoinHandle<()>>,
}

impl LineLog {
    /// Starts reading `pipe` line by line.
    pub fn spawn(pipe: impl Read + Send + 'static) -> LineLog {
        let shared = Arc::new((Mutex::new(Lines::default()), Condvar::new()));
        let writer = Arc::clone(&shared);
        let reader = std::thread::spawn(move || {
            let (lock, changed) = &*writer;
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                lock.lock().expect("log").lines.push(line);
                changed.notify_all();
            }
            lock.lock().expect("log").closed = true;
            changed.notify_all();
        });
        LineLog {
            shared,
            reader: Some(reader),
        }
    }

    /// The lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.shared.0.lock().expect("log").lines.clone()
    }

    /// The lines so far, each ended by a newline.
    pub fn text(&self) -> String {
        let lines = self.shared.0.lock().expect("log");
        lines.lines.iter().map(|l| format!("{l}\n")).collect()
    }

    /// Waits until `check` finds what it looks for in the lines so far (it is called again on
    /// each new line) and returns it. Fails, showing `what` and the lines, after `timeout` or
    /// when the pipe ends first (the child exited: the line can no longer come).
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&[String]) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        let (lock, changed) = &*self.shared;
        let mut lines = lock.lock().expect("log");
        loop {
            if let Some(found) = check(&lines.lines) {
                return found;
            }
            let log = || lines.lines.join("\n");
            assert!(
                !lines.closed,
                "the process ended before {what}; it wrote:\n{}",
                log()
            );
            let now = Instant::now();
            assert!(
                now < deadline,
                "timed out after {timeout:?} waiting for {what}; the process wrote:\n{}",
                log()
            );
            lines = changed.wait_timeout(lines, deadline - now).expect("log").0;
        }
    }

    /// Waits (at most `timeout`) for the reader to reach the end of the pipe, which comes when
    /// the child has exited, and joins it: after this the log holds everything the child wrote.
    pub fn join(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let (lock, changed) = &*self.shared;
        let mut lines = lock.lock().expect("log");
        while !lines.closed {
            let now = Instant::now();
            assert!(
                now < deadline,
                "the process's output did not end within {timeout:?}"
            );
            lines = changed.wait_timeout(lines, deadline - now).expect("log").0;
        }
        drop(lines);
        if let Some(reader) = self.reader.take() {
            reader.join().expect("log reader thread");
        }
    }
}
