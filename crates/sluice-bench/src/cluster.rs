//! `sluice bench --cluster --redis URLS`: single-event requests at fixed rates, open loop (as
//! `--serve`), through one server, through three members of a serving cluster (each record
//! computed by the owner of its key), and through three plain servers on the same Redis
//! state (no routing: every server caches and commits every key it sees). Each setup and rate
//! starts its servers afresh under a new namespace; the servers' `/metrics` give the Redis
//! round trips, the cache hits and the conflicts.

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sluice_engine::state::redis::{Cluster, ClusterOptions};

use crate::e2e::{ensure_data, BenchOptions, BENCH_PIPELINE};
use crate::redis::delete_matching;
use crate::serve::{fixed_rate, start_server, us, ServeBench, ServerProcess};

/// One way of serving: how many servers, and whether they form a cluster.
struct Setup {
    name: &'static str,
    servers: usize,
    cluster: bool,
}

const SETUPS: [Setup; 3] = [
    Setup {
        name: "1 server",
        servers: 1,
        cluster: false,
    },
    Setup {
        name: "3 members, routed",
        servers: 3,
        cluster: true,
    },
    Setup {
        name: "3 servers, not routed",
        servers: 3,
        cluster: false,
    },
];

/// `GET path` on a fresh connection; the body.
fn get(addr: &str, path: &str) -> Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    )?;
    let mut reader = std::io::BufReader::new(s);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            bail!("no answer from {addr}");
        }
        if line.trim_end().is_empty() {
            break;
        }
    }
    let mut body = String::new();
    reader.read_to_string(&mut body)?;
    Ok(body)
}

/// The value of gauge or counter `name` in a `/metrics` text.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

/// Runs every setup at every rate and prints a table.
pub fn run(opts: &BenchOptions, bench: &ServeBench, urls: &[String]) -> Result<()> {
    let data = ensure_data(opts)?;
    let lines: Vec<String> = std::io::BufReader::new(std::fs::File::open(&data)?)
        .lines()
        .collect::<std::io::Result<_>>()?;
    let exe = std::env::current_exe().context("cannot find the sluice executable")?;
    let redis = Cluster::connect(urls, &[], ClusterOptions::default())?;
    let quoted: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    println!(
        "Single-event requests, open loop over {} connections spread over the servers, {} s per rate, Redis state ({} masters), batch_wait {}:",
        bench.connections,
        bench.seconds,
        redis.masters().len(),
        bench.batch_wait.as_deref().unwrap_or("0")
    );
    println!("| setup | target rate | achieved | p50 | p99 | p99.9 | errors | events per round trip | cache hit rate | conflicts |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for setup in &SETUPS {
        for &rate in &bench.rates {
            let namespace = format!("bench-cluster-{stamp}-{}-{rate}", setup.servers);
            let cluster = if setup.cluster {
                "\n[cluster]\nname = \"bench\"\nheartbeat = \"200ms\"\nttl = \"2s\"\n"
            } else {
                ""
            };
            let pipeline = opts.dir.join("bench-cluster.toml");
            std::fs::write(
                &pipeline,
                format!(
                    "{BENCH_PIPELINE}\n[serve]\nqueue = 65536\n{}\n[state]\nbackend = \"redis\"\nurls = [{}]\nnamespace = \"{namespace}\"\n{cluster}",
                    bench
                        .batch_wait
                        .as_ref()
                        .map_or(String::new(), |w| format!("batch_wait = \"{w}\"\n")),
                    quoted.join(", ")
                ),
            )?;
            let mut servers = Vec::new();
            let mut addrs = Vec::new();
            for _ in 0..setup.servers {
                let (child, addr) = start_server(&exe, &pipeline)?;
                servers.push(ServerProcess(child));
                addrs.push(addr);
            }
            if setup.cluster {
                let deadline = Instant::now() + Duration::from_secs(20);
                while addrs.iter().any(|a| {
                    get(a, "/v1/cluster")
                        .map_or(true, |b| b.matches("\"address\"").count() < setup.servers)
                }) {
                    if Instant::now() > deadline {
                        bail!("the members did not see each other within 20 s");
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            let n = (rate * bench.seconds) as usize;
            eprintln!("bench: {} at {rate}/s", setup.name);
            let phase = fixed_rate(&addrs, &lines, 0, n, rate, bench.connections)?;
            let (mut events, mut trips, mut hits, mut misses, mut conflicts) = (0, 0, 0, 0, 0);
            for a in &addrs {
                let m = get(a, "/metrics")?;
                events += metric(&m, "sluice_events_total");
                trips += metric(&m, "sluice_redis_round_trips");
                hits += metric(&m, "sluice_redis_cache_hits");
                misses += metric(&m, "sluice_redis_cache_misses");
                conflicts += metric(&m, "sluice_redis_conflicts");
            }
            drop(servers);
            delete_matching(&redis, &format!("sluice:{namespace}:*"))?;
            println!(
                "| {} | {rate} | {:.0} | {} | {} | {} | {} | {:.1} | {:.1}% | {conflicts} |",
                setup.name,
                phase.achieved,
                us(phase.p(0.50)),
                us(phase.p(0.99)),
                us(phase.p(0.999)),
                phase.errors,
                events as f64 / trips.max(1) as f64,
                100.0 * hits as f64 / (hits + misses).max(1) as f64,
            );
        }
    }
    Ok(())
}
