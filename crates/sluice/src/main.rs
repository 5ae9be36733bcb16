//! `sluice`: exact real-time window features over streams of events.

mod alloc;
mod bench;
mod bench_checkpoint;
mod bench_kafka;
mod bench_redis;
mod bench_serve;
mod cli;
mod config;
mod gen;
mod kafka;
mod kafka_checkpoint;
mod progress;
mod resume;
mod serve;

fn main() -> std::process::ExitCode {
    alloc::keep_freed_memory();
    cli::main()
}
