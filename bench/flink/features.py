"""Sluice's benchmark features computed by Flink SQL (PyFlink), for bench/flink/run.sh.

Usage: python features.py INPUT.csv {blackhole|csv} [OUTPUT_DIR] [--parallelism N]

The six features of Sluice's benchmark pipeline (crates/sluice-bench/src/e2e.rs,
BENCH_PIPELINE), by user_id, each a per-event value over the window [t - W, t]:

    user_amount_1d      sum(amount)                1 day
    user_max_amount_1d  max(amount)                1 day
    user_avg_amount_1d  avg(amount)                1 day
    user_txn_1d         count(amount)              1 day
    user_txn_1h         count(*)                   1 hour
    user_devices_7d     count(DISTINCT device_id)  7 days

Streaming mode, event time: `rt` is the rowtime made from `ts` (epoch ms) with a watermark
(the generated file is in time order, so no event is late). Flink SQL's streaming planner
computes one OVER window per aggregation ("All aggregates must be computed on the same
window"), so the three ranges are three OVER aggregations chained in one query, one inside
the other (each keeps the rowtime, so the next one is again an event-time OVER window):
one job, one scan of the file, one output row per event with all six features.

The middle SELECT lists its new column first on purpose: when a level's projection is the
identity, Flink 2.3's planner drops it and the outer OverAggregate's generated names (w0$o0)
collide with the inner one's, so the 1-day count and average silently read the 1-hour count
(seen in EXPLAIN: `w0$o0 AS user_txn_1d, w0$o0 AS user_txn_1h`). Check the plan with
--explain after any change to QUERY; run.sh's check compares the values with Sluice's.

Prints one JSON line on stdout: wall seconds of the job (submit to finish), the Flink
version and the settings.
"""
import json
import sys
import time

from pyflink.table import EnvironmentSettings, TableEnvironment

COLUMNS = """
    event_id STRING,
    user_id STRING,
    device_id STRING,
    merchant_id STRING,
    amount DOUBLE,
    ts BIGINT
"""

OUT_COLUMNS = """
    event_id STRING,
    user_id STRING,
    ts BIGINT,
    user_amount_1d DOUBLE,
    user_max_amount_1d DOUBLE,
    user_avg_amount_1d DOUBLE,
    user_txn_1d BIGINT,
    user_txn_1h BIGINT,
    user_devices_7d BIGINT
"""

# Innermost: 7 days; then 1 hour; outermost: 1 day. Each level passes rt on.
QUERY = """
SELECT event_id, user_id, ts,
       SUM(amount) OVER d AS user_amount_1d,
       MAX(amount) OVER d AS user_max_amount_1d,
       AVG(amount) OVER d AS user_avg_amount_1d,
       COUNT(amount) OVER d AS user_txn_1d,
       user_txn_1h,
       user_devices_7d
FROM (
    SELECT COUNT(*) OVER h AS user_txn_1h,
           user_devices_7d, event_id, user_id, amount, ts, rt
    FROM (
        SELECT event_id, user_id, amount, ts, rt,
               COUNT(DISTINCT device_id) OVER w AS user_devices_7d
        FROM transactions
        WHERE ts IS NOT NULL
        WINDOW w AS (PARTITION BY user_id ORDER BY rt
                     RANGE BETWEEN INTERVAL '7' DAY PRECEDING AND CURRENT ROW)
    )
    WINDOW h AS (PARTITION BY user_id ORDER BY rt
                 RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND CURRENT ROW)
)
WINDOW d AS (PARTITION BY user_id ORDER BY rt
             RANGE BETWEEN INTERVAL '1' DAY PRECEDING AND CURRENT ROW)
"""


def main():
    args = [a for a in sys.argv[1:]]
    parallelism = 2
    if "--parallelism" in args:
        i = args.index("--parallelism")
        parallelism = int(args[i + 1])
        del args[i : i + 2]
    if "--explain" in args:
        args.remove("--explain")
        explain = True
    else:
        explain = False
    input_path, sink = args[0], args[1]
    output_dir = args[2] if len(args) > 2 else None
    if sink not in ("blackhole", "csv") or (sink == "csv" and not output_dir):
        sys.exit(__doc__)

    env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    conf = env.get_config()
    conf.set("parallelism.default", str(parallelism))
    conf.set("pipeline.name", "sluice-bench-features")

    # Flink 2.3's CSV format cannot skip a header line: with ignore-parse-errors the header
    # becomes a row whose amount and ts are null; its rowtime is made epoch 0 (a null rowtime
    # fails the job) and QUERY drops it (ts IS NOT NULL). run.sh's check counts the rows.
    env.execute_sql(
        f"""
        CREATE TABLE transactions (
            {COLUMNS},
            rt AS TO_TIMESTAMP_LTZ(COALESCE(ts, 0), 3),
            WATERMARK FOR rt AS rt - INTERVAL '1' SECOND
        ) WITH (
            'connector' = 'filesystem',
            'path' = 'file://{input_path}',
            'format' = 'csv',
            'csv.ignore-parse-errors' = 'true'
        )
        """
    )
    if sink == "blackhole":
        env.execute_sql(f"CREATE TABLE out_features ({OUT_COLUMNS}) WITH ('connector' = 'blackhole')")
    else:
        env.execute_sql(
            f"""
            CREATE TABLE out_features ({OUT_COLUMNS}) WITH (
                'connector' = 'filesystem',
                'path' = 'file://{output_dir}',
                'format' = 'csv'
            )
            """
        )
    if explain:
        print(env.explain_sql(f"INSERT INTO out_features {QUERY}"))
        return

    started = time.perf_counter()
    env.execute_sql(f"INSERT INTO out_features {QUERY}").wait()
    seconds = time.perf_counter() - started

    import pyflink

    version = getattr(pyflink, "__version__", None)
    if version is None:
        from importlib.metadata import version as pkg_version

        version = pkg_version("apache-flink")
    print(
        json.dumps(
            {
                "flink": version,
                "mode": "streaming, event time",
                "parallelism": parallelism,
                "sink": sink,
                "job_seconds": round(seconds, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
