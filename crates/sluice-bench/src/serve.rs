//! `sluice bench --serve`: latency and throughput of `sluice serve`.
//!
//! A `sluice serve` child process runs the benchmark pipeline with memory state. The load
//! generator (here: a thread per keep-alive HTTP/1.1 connection) is open-loop: request
//! `k` of a phase is due at `start + k / rate` whether or not earlier ones were answered. When
//! its connection was still waiting for the previous answer at that time, its latency counts
//! from the due time: a server that falls behind shows the queueing it causes, instead of
//! slowing the generator down (no coordinated omission). Otherwise it counts from the moment
//! it was sent: a thread that wakes late delays its own request, not the server.
//!
//! 1. Single-event requests at fixed rates: p50, p99, p99.9, max, and the rate achieved.
//! 2. Arrays of `--batch` events, as fast as `--connections` clients can send them: events/s.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use std::io::{Read, Write};
use std::net::TcpStream;

use anyhow::{bail, Context, Result};

use crate::e2e::{ensure_data, BenchOptions, BENCH_PIPELINE};

/// Knobs of the serve benchmark.
#[derive(Debug, Clone)]
pub struct ServeBench {
    /// Single-event request rates to try, per second.
    pub rates: Vec<u64>,
    /// Seconds per rate.
    pub seconds: u64,
    /// Connections the load is spread over.
    pub connections: usize,
    /// Events per request in the batched phase.
    pub batch: usize,
    /// `[serve] batch_wait` of the servers (`--cluster`), if set.
    pub batch_wait: Option<String>,
}

/// The server under test, killed when dropped.
pub(crate) struct ServerProcess(pub(crate) Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs both phases and prints tables.
pub fn run(opts: &BenchOptions, bench: &ServeBench) -> Result<()> {
    let data = ensure_data(opts)?;
    let pipeline = opts.dir.join("bench-serve.toml");
    std::fs::write(
        &pipeline,
        format!("{BENCH_PIPELINE}\n[serve]\nqueue = 65536\nmax_body = \"16MB\"\n"),
    )?;
    let lines: Vec<String> = std::io::BufReader::new(std::fs::File::open(&data)?)
        .lines()
        .collect::<std::io::Result<_>>()?;
    let exe = std::env::current_exe().context("cannot find the sluice executable")?;
    let (child, addr) = start_server(&exe, &pipeline)?;
    let _server = ServerProcess(child);
    eprintln!(
        "bench: sluice serve on {addr}; {} events available",
        lines.len()
    );
    println!(
        "Single-event requests, open loop over {} connections, {} s per rate, memory state:",
        bench.connections, bench.seconds
    );
    println!("| target rate | achieved | p50 | p99 | p99.9 | max | errors |");
    println!("|---|---|---|---|---|---|---|");
    let mut next = 0usize;
    for &rate in &bench.rates {
        let n = (rate * bench.seconds) as usize;
        let r = fixed_rate(
            std::slice::from_ref(&addr),
            &lines,
            next,
            n,
            rate,
            bench.connections,
        )?;
        next += n;
        println!(
            "| {rate} | {:.0} | {} | {} | {} | {} | {} |",
            r.achieved,
            us(r.p(0.50)),
            us(r.p(0.99)),
            us(r.p(0.999)),
            us(r.p(1.0)),
            r.errors
        );
    }
    let events = (bench.batch * 2000).min(lines.len());
    let (per_sec, requests, p99) =
        batched(&addr, &lines, events, bench.batch, bench.connections.min(4))?;
    println!();
    println!(
        "Batched: {requests} requests of {} events over {} connections, closed loop: {per_sec:.0} events/s (p99 per request {})",
        bench.batch,
        bench.connections.min(4),
        us(p99)
    );
    Ok(())
}

pub(crate) fn us(d: Duration) -> String {
    let us = d.as_micros();
    if us >= 10_000 {
        format!("{:.1} ms", us as f64 / 1000.0)
    } else {
        format!("{us} µs")
    }
}

/// Starts `sluice serve` on a free loopback port; returns it and its address.
pub(crate) fn start_server(exe: &Path, pipeline: &Path) -> Result<(Child, String)> {
    let mut child = std::process::Command::new(exe)
        .arg("serve")
        .arg(pipeline)
        .args(["--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start sluice serve")?;
    let stderr = child.stderr.take().context("no stderr")?;
    let mut lines = std::io::BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        let line = line?;
        if let Some(rest) = line.split(" on http://").nth(1) {
            let addr = rest.split_whitespace().next().unwrap_or("").to_owned();
            // Keep draining stderr so the server never blocks on it.
            std::thread::spawn(move || lines.for_each(drop));
            return Ok((child, addr));
        }
    }
    let _ = child.kill();
    bail!("sluice serve exited before listening")
}

/// One keep-alive connection (blocking: each connection has its own thread, which sleeps
/// precisely until a request is due; tokio's timer rounds to whole milliseconds).
struct Conn {
    reader: std::io::BufReader<TcpStream>,
    line: String,
    body: Vec<u8>,
}

impl Conn {
    fn open(addr: &str) -> Result<Conn> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        Ok(Conn {
            reader: std::io::BufReader::new(s),
            line: String::new(),
            body: Vec::new(),
        })
    }

    /// Posts `body` to /v1/events; returns the status.
    fn post(&mut self, body: &[u8]) -> Result<u16> {
        let mut request = format!(
            "POST /v1/events HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        self.reader.get_mut().write_all(&request)?;
        self.line.clear();
        self.reader.read_line(&mut self.line)?;
        let status: u16 = self
            .line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .context("bad status line")?;
        let mut length = 0usize;
        loop {
            self.line.clear();
            if self.reader.read_line(&mut self.line)? == 0 {
                bail!("connection closed");
            }
            let l = self.line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse()?;
                }
            }
        }
        self.body.resize(length, 0);
        self.reader.read_exact(&mut self.body)?;
        Ok(status)
    }
}

/// Latencies of one phase.
pub(crate) struct Phase {
    latencies: Vec<Duration>,
    pub(crate) achieved: f64,
    pub(crate) errors: usize,
}

impl Phase {
    pub(crate) fn p(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() as f64 * q).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[i - 1]
    }
}

/// Runs `client(c)` for connections `c` in `0..conns`, each on a thread of its own; the
/// results in connection order, or the first error.
fn on_connections<T: Send>(
    conns: usize,
    client: impl Fn(usize) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    std::thread::scope(|scope| {
        let client = &client;
        let handles: Vec<_> = (0..conns).map(|c| scope.spawn(move || client(c))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("client panicked")))
            })
            .collect()
    })
}

/// `n` single-event requests (lines `from..`) due at `rate` per second, spread round-robin
/// over `conns` connections, connection `c` to server `addrs[c % addrs.len()]`.
pub(crate) fn fixed_rate(
    addrs: &[String],
    lines: &[String],
    from: usize,
    n: usize,
    rate: u64,
    conns: usize,
) -> Result<Phase> {
    let start = Instant::now() + Duration::from_millis(50);
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let results = on_connections(conns, |c| {
        let mut conn = Conn::open(&addrs[c % addrs.len()])?;
        let mut lat = Vec::with_capacity(n / conns + 1);
        let mut errors = 0;
        let mut free_since = start;
        let mut k = c;
        while k < n {
            let due = start + interval * k as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let from_time = if free_since > due {
                due
            } else {
                Instant::now()
            };
            let line = &lines[(from + k) % lines.len()];
            match conn.post(line.as_bytes()) {
                Ok(200) => lat.push(from_time.elapsed()),
                Ok(_) | Err(_) => errors += 1,
            }
            free_since = Instant::now();
            k += conns;
        }
        Ok((lat, errors))
    })?;
    let mut latencies = Vec::with_capacity(n);
    let mut errors = 0;
    for (l, e) in results {
        latencies.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort();
    Ok(Phase {
        achieved: latencies.len() as f64 / elapsed,
        latencies,
        errors,
    })
}

/// `events` events in arrays of `batch`, `conns` clients each sending as soon as answered.
/// Returns events per second, requests sent and the 99th percentile request time.
fn batched(
    addr: &str,
    lines: &[String],
    events: usize,
    batch: usize,
    conns: usize,
) -> Result<(f64, usize, Duration)> {
    let bodies: Vec<Vec<u8>> = lines[..events]
        .chunks(batch)
        .map(|c| format!("[{}]", c.join(",")).into_bytes())
        .collect();
    let bodies = &bodies;
    let started = Instant::now();
    let results = on_connections(conns, |c| {
        let mut conn = Conn::open(addr)?;
        let mut lat = Vec::new();
        let mut k = c;
        while k < bodies.len() {
            let t = Instant::now();
            let status = conn.post(&bodies[k])?;
            anyhow::ensure!(status == 200, "status {status}");
            lat.push(t.elapsed());
            k += conns;
        }
        Ok(lat)
    })?;
    let mut lat: Vec<Duration> = results.into_iter().flatten().collect();
    let secs = started.elapsed().as_secs_f64();
    lat.sort();
    let p99 = lat
        .get((lat.len() * 99 / 100).min(lat.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default();
    Ok((events as f64 / secs, bodies.len(), p99))
}
