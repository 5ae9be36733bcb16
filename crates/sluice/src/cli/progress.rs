//! Progress of a long run: a bar with events/s on a terminal, a log line every few seconds
//! otherwise.

use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use sluice_engine::Stats;

/// Interval between log lines when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// A running progress reporter; stops on [`Progress::finish`].
pub struct Progress {
    stop: Option<mpsc::Sender<()>>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Progress {
    /// Starts reporting on `stats`. `total_bytes` is the input size when known.
    pub fn start(stats: Arc<Stats>, total_bytes: Option<u64>, quiet: bool) -> Progress {
        let (tx, rx) = mpsc::channel::<()>();
        let terminal = std::io::stderr().is_terminal();
        let handle = thread::Builder::new()
            .name("sluice-progress".into())
            .spawn(move || {
                if terminal && !quiet {
                    bar(&stats, total_bytes, &rx);
                } else if !terminal {
                    log_lines(&stats, &rx);
                } else {
                    let _ = rx.recv();
                }
            })
            .ok();
        Progress {
            stop: Some(tx),
            handle,
        }
    }

    /// Stops reporting (clears the bar).
    pub fn finish(mut self) {
        self.stop.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn bar(stats: &Stats, total_bytes: Option<u64>, rx: &mpsc::Receiver<()>) {
    let pb = match total_bytes {
        Some(total) => ProgressBar::new(total).with_style(
            ProgressStyle::with_template("{bar:30} {percent:>3}% {msg} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::new_spinner(),
    };
    let started = Instant::now();
    while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(Duration::from_millis(200)) {
        let events = stats.records_read.load(Ordering::Relaxed);
        pb.set_position(stats.bytes_read.load(Ordering::Relaxed));
        pb.set_message(format!(
            "{events} events, {:.0} events/s, {} dead letters",
            events as f64 / started.elapsed().as_secs_f64(),
            stats.dead_letters.load(Ordering::Relaxed)
        ));
    }
    pb.finish_and_clear();
}

fn log_lines(stats: &Stats, rx: &mpsc::Receiver<()>) {
    let started = Instant::now();
    while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(LOG_EVERY) {
        let events = stats.events_written.load(Ordering::Relaxed);
        tracing::info!(
            events,
            dead_letters = stats.dead_letters.load(Ordering::Relaxed),
            events_per_sec = (events as f64 / started.elapsed().as_secs_f64()) as u64,
            "progress"
        );
    }
}
