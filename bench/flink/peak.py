"""Runs a command and reports its wall time and peak memory, for bench/flink/run.sh.

Usage: python3 peak.py OUT.json CMD [ARGS...]

Polls /proc every 50 ms: the peak of the summed resident memory (VmRSS) of the command's
whole process tree (for PyFlink: the Python driver and the JVM it starts) and the peak of its
largest single process. Stdlib only. Writes one JSON object to OUT.json; the command's own
stdout and stderr pass through.
"""
import json
import os
import subprocess
import sys
import time


def children_map():
    kids = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(pid))
    return kids


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree(root):
    kids = children_map()
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def main():
    out_path, cmd = sys.argv[1], sys.argv[2:]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd)
    peak_sum = peak_one = 0
    while proc.poll() is None:
        sizes = [rss_kb(p) for p in tree(proc.pid)]
        peak_sum = max(peak_sum, sum(sizes))
        peak_one = max(peak_one, max(sizes, default=0))
        time.sleep(0.05)
    wall = time.perf_counter() - started
    with open(out_path, "w") as f:
        json.dump(
            {
                "exit": proc.returncode,
                "wall_seconds": round(wall, 3),
                "peak_tree_rss_mb": round(peak_sum / 1024),
                "peak_process_rss_mb": round(peak_one / 1024),
            },
            f,
        )
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
