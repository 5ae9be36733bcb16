//! `sluice`: exact real-time window features over streams of events.

mod cli;
mod config;
mod gen;
mod progress;

/// mimalloc: batches are allocated and freed at a high rate by several threads; the system
/// allocator returns large blocks to the kernel and faults them back in (measured: ~6% of a
/// run in page faults).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
