//! `sluice`: exact real-time window features over streams of events.

mod cli;
mod config;
mod gen;
mod progress;

fn main() -> std::process::ExitCode {
    cli::main()
}
