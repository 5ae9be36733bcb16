#!/usr/bin/env bash
# Builds sluice and runs the bundled example pipeline: a few enriched events and a summary.
# Needs a Rust toolchain (cargo), and cmake with the libcurl headers to build the Kafka client's
# vendored librdkafka: installed with apt-get when missing and run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust from https://rustup.rs (stable), then run this again" >&2
  exit 1
fi

# shellcheck source=scripts/build-deps.sh
. scripts/build-deps.sh
ensure_build_deps quickstart

cargo build --release --quiet -p sluice
mkdir -p out
# The example command (also run by crates/sluice/tests/readme.rs):
./target/release/sluice run examples/transactions.toml --output out/features.jsonl --dead-letters out/dead_letters.jsonl
echo
echo "last enriched events (out/features.jsonl; earlier events of the same users are in their windows):"
tail -n 3 out/features.jsonl
echo
echo "dead letters (out/dead_letters.jsonl):"
head -n 3 out/dead_letters.jsonl
