#!/usr/bin/env bash
# Runs every test of the workspace: unit, property, golden pipelines, CLI and README tests, and
# the Redis Cluster integration tests against a real 3-master cluster that this script starts
# (scripts/redis-cluster.sh, loopback ports 7300-7302) and stops again by PID.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: installing redis-server (needed by the Redis Cluster tests)"
    apt-get install -y -qq redis-server redis-tools >/dev/null ||
      { apt-get update -qq && apt-get install -y -qq redis-server redis-tools >/dev/null; }
  else
    echo "test.sh: redis-server not found; install it: sudo apt-get install -y redis-server redis-tools" >&2
    exit 1
  fi
fi

cluster_dir=target/redis-cluster-test
export SLUICE_REDIS_PORT=7300
trap 'scripts/redis-cluster.sh stop "$cluster_dir"' EXIT
urls=$(scripts/redis-cluster.sh start "$cluster_dir" | paste -sd, -)
# Tests that need the cluster read these; without them they fail (SLUICE_REQUIRE_REDIS=1).
export SLUICE_REDIS_URLS="$urls" SLUICE_REQUIRE_REDIS=1
# The fault tests start clusters of their own from this port on.
export SLUICE_REDIS_SPARE_PORT=7400

cargo test --workspace --locked
# Criterion benches compile and run each benchmark once in test mode.
cargo bench --workspace --locked -- --test >/dev/null
