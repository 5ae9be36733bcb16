#!/usr/bin/env bash
# Runs every test of the workspace: unit, property, golden pipelines, CLI and README tests, the
# dashboard in headless Chromium (installed here if missing), the
# Redis Cluster integration tests against a real 3-master cluster that this script starts
# (scripts/redis-cluster.sh, loopback ports 7300-7302), and the Kafka tests against a real
# Kafka-protocol broker (scripts/kafka.sh, tansu on loopback port 9392). Both are stopped again
# by PID.
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

if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: installing chromium (needed by the dashboard's browser test)"
    apt-get install -y -qq chromium >/dev/null ||
      { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
  else
    echo "test.sh: chromium not found; install it: sudo apt-get install -y chromium" >&2
    exit 1
  fi
fi
# The browser test fails instead of skipping without it.
export SLUICE_REQUIRE_CHROMIUM=1

# shellcheck source=scripts/build-deps.sh
. scripts/build-deps.sh
ensure_build_deps test.sh

cluster_dir=target/redis-cluster-test
kafka_dir=target/kafka-test
export SLUICE_REDIS_PORT=7300
trap 'scripts/redis-cluster.sh stop "$cluster_dir"; scripts/kafka.sh stop "$kafka_dir"' EXIT
urls=$(scripts/redis-cluster.sh start "$cluster_dir" | paste -sd, -)
# Tests that need the cluster read these; without them they fail (SLUICE_REQUIRE_REDIS=1).
export SLUICE_REDIS_URLS="$urls" SLUICE_REQUIRE_REDIS=1
# The fault tests start clusters of their own from this port on.
export SLUICE_REDIS_SPARE_PORT=7400
brokers=$(SLUICE_KAFKA_PORT=9392 scripts/kafka.sh start "$kafka_dir")
export SLUICE_KAFKA_BROKERS="$brokers" SLUICE_REQUIRE_KAFKA=1

cargo test --workspace --locked
# Criterion benches compile and run each benchmark once in test mode.
cargo bench --workspace --locked -- --test >/dev/null
