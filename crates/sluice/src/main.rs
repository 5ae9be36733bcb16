//! `sluice`: exact real-time window features over streams of events.

mod cli;

fn main() -> std::process::ExitCode {
    cli::alloc::keep_freed_memory();
    cli::main()
}
