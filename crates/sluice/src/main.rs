//! `sluice`: exact real-time window features over streams of events.

mod cli;
mod config;
mod gen;
mod progress;

/// mimalloc without transparent huge pages: batches are allocated and freed at a high rate by
/// several threads. With the system allocator, or mimalloc on huge pages, freed memory goes back
/// to the kernel and is faulted (and zeroed) in again: measured at 15-20% of a run's CPU.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
