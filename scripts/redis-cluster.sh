#!/usr/bin/env bash
# A 3-master Redis Cluster on loopback, from Debian's redis-server, for tests and benchmarks.
#
#   scripts/redis-cluster.sh start [DIR]   start it (ports $SLUICE_REDIS_PORT.., default 7000-7002)
#   scripts/redis-cluster.sh stop  [DIR]   stop it by the PIDs recorded at start
#   scripts/redis-cluster.sh kill N [DIR]  kill -9 node N (0-2), for fault tests
#   scripts/redis-cluster.sh restart N [DIR]  start node N again with its saved state
#
# DIR (default target/redis-cluster) holds each node's config, append-only file, log and pid.
# Nodes keep an append-only file (fsync every second), so a killed node restarts with what it
# had acknowledged. Prints the node URLs on start.
set -euo pipefail

cmd=${1:-}
case "$cmd" in
  kill|restart) node=${2:?node index}; dir=${3:-target/redis-cluster} ;;
  *) dir=${2:-target/redis-cluster} ;;
esac
mkdir -p "$dir" && dir=$(cd "$dir" && pwd)
base=${SLUICE_REDIS_PORT:-7000}
ports=("$base" "$((base + 1))" "$((base + 2))")

need() {
  command -v "$1" >/dev/null || {
    echo "redis-cluster.sh: $1 not found; install it with: apt-get install -y redis-server redis-tools" >&2
    exit 1
  }
}

start_node() {
  local port=$1 d="$dir/$1"
  mkdir -p "$d"
  redis-server --port "$port" --bind 127.0.0.1 --protected-mode no \
    --cluster-enabled yes --cluster-config-file "$d/nodes.conf" --cluster-node-timeout 2000 \
    --dir "$d" --appendonly yes --appendfsync everysec --save "" \
    --daemonize yes --pidfile "$d/redis.pid" --logfile "$d/redis.log"
}

wait_ping() {
  for _ in $(seq 100); do
    redis-cli -p "$1" ping >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "redis-cluster.sh: node on port $1 did not start; see $dir/$1/redis.log" >&2
  exit 1
}

wait_ok() {
  for _ in $(seq 200); do
    local ok=1
    for p in "${ports[@]}"; do
      info=$(redis-cli -p "$p" cluster info 2>/dev/null || true)
      grep -q 'cluster_state:ok' <<<"$info" && grep -q 'cluster_slots_ok:16384' <<<"$info" &&
        grep -q 'cluster_known_nodes:3' <<<"$info" || ok=0
    done
    [ "$ok" = 1 ] && return 0
    sleep 0.1
  done
  echo "redis-cluster.sh: cluster did not reach cluster_state:ok" >&2
  exit 1
}

stop_node() {
  local pidfile="$dir/$1/redis.pid"
  [ -f "$pidfile" ] || return 0
  local pid
  pid=$(cat "$pidfile")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

case "$cmd" in
  start)
    need redis-server; need redis-cli
    for p in "${ports[@]}"; do stop_node "$p"; rm -rf "${dir:?}/$p"; done
    for p in "${ports[@]}"; do start_node "$p"; done
    for p in "${ports[@]}"; do wait_ping "$p"; done
    redis-cli --cluster create "${ports[@]/#/127.0.0.1:}" --cluster-yes >"$dir/create.log" 2>&1 || {
      cat "$dir/create.log" >&2; exit 1; }
    wait_ok
    for p in "${ports[@]}"; do echo "redis://127.0.0.1:$p"; done
    ;;
  stop)
    for p in "${ports[@]}"; do stop_node "$p"; done
    ;;
  kill)
    p=${ports[$node]}
    kill -9 "$(cat "$dir/$p/redis.pid")"
    rm -f "$dir/$p/redis.pid"
    ;;
  restart)
    p=${ports[$node]}
    start_node "$p"; wait_ping "$p"; wait_ok
    ;;
  *)
    echo "usage: $0 start|stop [DIR] | kill|restart N [DIR]" >&2
    exit 2
    ;;
esac
