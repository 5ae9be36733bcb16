#!/usr/bin/env bash
# Flink 2.3 (PyFlink, Flink SQL OVER windows) against Sluice on the benchmark pipeline's six
# features, same machine, same CSV file, interleaved. See BENCHMARKS.md ("Flink").
#
#   bench/flink/run.sh bench [ROUNDS]   # ROUNDS (default 3) rounds of: Flink -> blackhole,
#                                       # Sluice -> /dev/null; which goes first alternates
#   bench/flink/run.sh check            # Flink -> CSV files, Sluice -> CSV file, compare values
#
# Environment: SLUICE (default target/release/sluice; build it first with
# `cargo build --release -p sluice`), DIR (work directory, default target/flink-bench), VENV
# (default target/flink-venv; created with `pip install apache-flink==2.3.0` if missing).
# Input: `sluice gen --events 1000000 --users 100000 --days 7 --seed 42 --format csv`.
# Both engines run with 2-way parallelism. Wall time and peak memory (summed RSS of the process
# tree: for Flink the Python driver and its JVM) come from peak.py; the load average from
# /proc/loadavg just before each run.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SLUICE=${SLUICE:-$ROOT/target/release/sluice}
DIR=${DIR:-$ROOT/target/flink-bench}
VENV=${VENV:-$ROOT/target/flink-venv}
EVENTS=1000000
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
INPUT=$DIR/tx.csv

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q 'apache-flink==2.3.0'
fi
if [ ! -s "$INPUT" ]; then
    "$SLUICE" gen --events $EVENTS --users 100000 --days 7 --seed 42 --format csv --output "$INPUT"
fi

load() { cut -d' ' -f1-3 /proc/loadavg; }

# run NAME CMD...: runs CMD under peak.py, prints one result line.
run() {
    local name=$1; shift
    local before; before=$(load)
    python3 "$HERE/peak.py" "$DIR/$name.json" "$@" > "$DIR/$name.out" 2> "$DIR/$name.err" || {
        echo "$name failed, see $DIR/$name.err" >&2; exit 1; }
    python3 - "$DIR/$name.json" "$DIR/$name.out" "$name" "$before" $EVENTS <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
job = ""
for line in open(sys.argv[2]):
    if line.startswith("{") and "job_seconds" in line:
        job = f"  (job {json.loads(line)['job_seconds']:.1f} s)"
events = int(sys.argv[5])
print(f"{sys.argv[3]:<16} wall {m['wall_seconds']:8.2f} s  {events / m['wall_seconds']:>11,.0f} events/s"
      f"  peak {m['peak_tree_rss_mb']:>5} MB  load before {sys.argv[4]}{job}")
PY
}

flink() { run "$1" "$VENV/bin/python" "$HERE/features.py" "$INPUT" "${@:2}" --parallelism 2; }
sluice() { run "$1" "$SLUICE" run "$HERE/pipeline.toml" --input "$INPUT" --output "$2" --workers 2 --quiet; }

case "${1:-bench}" in
bench)
    rounds=${2:-3}
    echo "$(date -u +%FT%TZ) $(nproc) cores; $("$VENV/bin/pip" show apache-flink | grep ^Version); $("$SLUICE" --version)"
    for r in $(seq 1 "$rounds"); do
        if [ $((r % 2)) = 1 ]; then
            flink "flink-$r" blackhole
            sluice "sluice-$r" /dev/null
        else
            sluice "sluice-$r" /dev/null
            flink "flink-$r" blackhole
        fi
    done
    echo "$(date -u +%FT%TZ) done; load $(load)"
    ;;
check)
    rm -rf "$DIR/flink-csv" "$DIR/sluice.csv"
    flink flink-csv csv "$DIR/flink-csv"
    sluice sluice-csv "$DIR/sluice.csv"
    python3 "$HERE/check.py" "$INPUT" "$DIR/sluice.csv" "$DIR/flink-csv"
    ;;
*)
    sed -n '2,9p' "$0"; exit 2 ;;
esac
