#!/usr/bin/env bash
# Runs every test of the workspace: unit, property, golden pipelines, CLI and README tests.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked
# Criterion benches compile and run each benchmark once in test mode.
cargo bench --workspace --locked -- --test >/dev/null
