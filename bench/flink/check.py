"""Compares Flink's feature values with Sluice's, for bench/flink/run.sh.

Usage: python3 check.py INPUT.csv SLUICE_OUT.csv FLINK_OUT_DIR [SAMPLE]

Rows are matched by event_id. Compared: the events whose (user_id, ts) is unique in the input
(SQL's RANGE ... CURRENT ROW includes every row with the same time, where Sluice's value
includes only the rows that arrived before; docs/semantics.md). All such events are compared
if SAMPLE is 0 (the default), else every k-th one so that about SAMPLE are. Integers must be
equal, floats within a relative 1e-9. Also checks that both outputs have one row per input
event. Exits 1 on any difference.
"""
import csv
import glob
import os
import sys
from collections import Counter

FEATURES = [
    ("user_amount_1d", float),
    ("user_max_amount_1d", float),
    ("user_avg_amount_1d", float),
    ("user_txn_1d", int),
    ("user_txn_1h", int),
    ("user_devices_7d", int),
]
# Flink's CSV sink writes no header: its columns, as features.py declares them.
FLINK_COLUMNS = ["event_id", "user_id", "ts"] + [name for name, _ in FEATURES]


def same(a, b, kind):
    if kind is int:
        return int(a) == int(b)
    x, y = float(a), float(b)
    return abs(x - y) <= 1e-9 * max(abs(x), abs(y), 1.0)


def main():
    input_path, sluice_path, flink_dir = sys.argv[1:4]
    sample = int(sys.argv[4]) if len(sys.argv) > 4 else 0

    with open(input_path, newline="") as f:
        events = [(r["event_id"], r["user_id"], r["ts"]) for r in csv.DictReader(f)]
    times = Counter((u, t) for _, u, t in events)
    unique = [e for e, u, t in events if times[(u, t)] == 1]
    step = max(1, len(unique) // sample) if sample else 1
    chosen = set(unique[::step])

    with open(sluice_path, newline="") as f:
        sluice_rows = 0
        sluice = {}
        for r in csv.DictReader(f):
            sluice_rows += 1
            if r["event_id"] in chosen:
                sluice[r["event_id"]] = r
    flink_rows = 0
    flink = {}
    for part in sorted(glob.glob(os.path.join(flink_dir, "*"))):
        with open(part, newline="") as f:
            for values in csv.reader(f):
                flink_rows += 1
                r = dict(zip(FLINK_COLUMNS, values))
                if r["event_id"] in chosen:
                    flink[r["event_id"]] = r

    bad = 0
    for e in chosen:
        s, k = sluice.get(e), flink.get(e)
        if s is None or k is None:
            bad += 1
            if bad <= 5:
                print(f"{e}: missing from {'sluice' if s is None else 'flink'}")
            continue
        for name, kind in FEATURES:
            if not same(s[name], k[name], kind):
                bad += 1
                if bad <= 5:
                    print(f"{e} {name}: sluice {s[name]} flink {k[name]}")
    print(
        f"check: input {len(events)} events, sluice {sluice_rows} rows, flink {flink_rows} rows; "
        f"{len(unique)} events with a unique (user_id, ts), {len(chosen)} compared, "
        f"{bad} differences"
    )
    ok = bad == 0 and sluice_rows == len(events) and flink_rows == len(events)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
