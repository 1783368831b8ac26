"""PostgreSQL store throughput: reservations per second (reserve + commit) from one process.

    python benchmarks/bench_postgres.py [--quick] [--url postgresql://user@host:port/db]

Every row runs against the same server and database in the same run, on one limit (the case
near the limit: every operation contends for the same counter):

- ``PostgresStore``: ``reserve`` then ``commit`` through the store (sorted advisory locks, hold
  rows with leases on the server's clock, ending history, NUMERIC), with 1 task and with 50
  concurrent tasks (``pool_size`` connections, default 8). Concurrent operations of the store
  share transactions (group commit); a lone one runs in its own.
- ``raw conditional UPDATE``: the engine's own limit through the same driver (psycopg 3), two
  autocommit statements (each its own transaction and WAL flush) on a NUMERIC counter with no
  holds, lease or idempotency, as an application would write it without outlay:
  ``UPDATE raw SET held = held + 1 WHERE key = %s AND spent + held + 1 <= cap RETURNING held``,
  then ``UPDATE raw SET held = held - 1, spent = spent + 1 WHERE key = %s RETURNING spent``;
  from one connection in a loop; from 50 tasks over the store's number of connections and
  worker threads; and from 50 connections, each looping in a thread of its own (no per-call
  thread hop: the most the server does for 50 concurrent clients).

Every row runs ``--rounds`` times (default 3), the rows interleaved, and reports its median;
the share column is each row's median against the best raw row's median of the same run.
Every row checks its final spend is exact. The schema it creates is dropped afterwards.
Prints a table and writes ``benchmarks/results/postgres.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import psycopg

from outlay._core._reservation import new_id  # the ids outlay's Budget makes
from outlay.stores import PostgresStore

RESULTS = Path(__file__).with_name("results") / "postgres.json"
DEFAULT_URL = os.environ.get("OUTLAY_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
CAP = 10**12
KEY = "bench/calls"
POOL = 8
TASKS = 50

RAW_RESERVE = ("UPDATE {s}.raw SET held = held + 1 WHERE key = %s AND spent + held + 1 <= cap "
               "RETURNING held")
RAW_COMMIT = "UPDATE {s}.raw SET held = held - 1, spent = spent + 1 WHERE key = %s RETURNING spent"


async def store_case(url: str, schema: str, ops: int, tasks: int) -> float:
    store = PostgresStore(url, schema=schema, pool_size=POOL)
    try:
        await store.set_limit(KEY, CAP)
        before = (await store.usage(KEY)).spent

        async def worker(count: int) -> None:
            for _ in range(count):
                rid = new_id()
                if not (await store.reserve(rid, {KEY: 1}, lease=60)).admitted:
                    raise RuntimeError("refused")
                await store.commit(rid)

        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for n in range(tasks):
                tg.start_soon(worker, ops // tasks + (1 if n < ops % tasks else 0))
        elapsed = time.perf_counter() - start
        usage = await store.usage(KEY)
        assert (usage.spent - before, usage.held) == (ops, 0), usage
        return ops / elapsed
    finally:
        await store.aclose()


def raw_setup(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        conn.execute(f'CREATE TABLE IF NOT EXISTS "{schema}".raw (key text PRIMARY KEY, '
                     "cap numeric, spent numeric, held numeric)")
        conn.execute(f'INSERT INTO "{schema}".raw VALUES (%s, %s, 0, 0) ON CONFLICT (key) '
                     "DO UPDATE SET spent = 0, held = 0", (KEY, CAP))


def raw_spent(url: str, schema: str) -> Any:
    with psycopg.connect(url) as conn:
        return conn.execute(f'SELECT spent, held FROM "{schema}".raw').fetchone()


def raw_round(conn: psycopg.Connection[Any], schema: str) -> None:
    s = f'"{schema}"'
    if conn.execute(RAW_RESERVE.format(s=s), (KEY,)).fetchone() is None:
        raise RuntimeError("refused")
    conn.execute(RAW_COMMIT.format(s=s), (KEY,)).fetchone()


def raw_loop(url: str, schema: str, ops: int) -> float:
    raw_setup(url, schema)
    with psycopg.connect(url, autocommit=True) as conn:
        start = time.perf_counter()
        for _ in range(ops):
            raw_round(conn, schema)
        elapsed = time.perf_counter() - start
    assert raw_spent(url, schema) == (ops, 0)
    return ops / elapsed


async def raw_tasks(url: str, schema: str, ops: int, tasks: int, connections: int) -> float:
    """``tasks`` tasks, each round one hop to a worker thread, over ``connections`` pooled
    connections; or, with as many connections as tasks, each task's own connection looping in
    its own thread."""
    raw_setup(url, schema)
    idle = [psycopg.connect(url, autocommit=True) for _ in range(connections)]
    own = connections == tasks
    limiter = anyio.CapacityLimiter(connections)

    def one() -> None:
        conn = idle.pop()
        try:
            raw_round(conn, schema)
        finally:
            idle.append(conn)

    def loop(conn: psycopg.Connection[Any], count: int) -> None:
        for _ in range(count):
            raw_round(conn, schema)

    async def worker(n: int, count: int) -> None:
        if own:
            await anyio.to_thread.run_sync(loop, idle[n], count, limiter=limiter)
            return
        for _ in range(count):
            await anyio.to_thread.run_sync(one, limiter=limiter)

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for n in range(tasks):
            tg.start_soon(worker, n, ops // tasks + (1 if n < ops % tasks else 0))
    elapsed = time.perf_counter() - start
    for conn in idle:
        conn.close()
    assert raw_spent(url, schema) == (ops, 0)
    return ops / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few hundred operations a row")
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--rounds", type=int, default=None,
                        help="run every row this many times, interleaved, and report each "
                             "row's median (default 3, 1 with --quick)")
    args = parser.parse_args()
    ops = 300 if args.quick else 3000
    rounds = args.rounds or (1 if args.quick else 3)
    schema = f"outlay_bench_{uuid.uuid4().hex[:12]}"
    cases: list[tuple[str, int, Callable[[], float]]] = [
        ("PostgresStore", 1, lambda: anyio.run(store_case, args.url, schema, ops, 1)),
        ("PostgresStore", TASKS, lambda: anyio.run(store_case, args.url, schema, ops, TASKS)),
        ("raw conditional UPDATE, 1 connection", 1, lambda: raw_loop(args.url, schema, ops)),
        (f"raw conditional UPDATE, {POOL} connections", TASKS,
         lambda: anyio.run(raw_tasks, args.url, schema, ops, TASKS, POOL)),
        (f"raw conditional UPDATE, {TASKS} connections", TASKS,
         lambda: anyio.run(raw_tasks, args.url, schema, ops, TASKS, TASKS)),
    ]
    samples: list[list[float]] = [[] for _ in cases]
    try:
        for _ in range(rounds):  # interleaved, so a busy spell on the machine hits every row
            for found, (_, _, run) in zip(samples, cases, strict=True):
                found.append(run())
    finally:
        with psycopg.connect(args.url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    rows: list[dict[str, Any]] = [
        {"case": name, "tasks": tasks, "ops": ops, "per_second": round(statistics.median(found)),
         "samples": [round(rate) for rate in found]}
        for (name, tasks, _), found in zip(cases, samples, strict=True)]
    raw_best = max(r["per_second"] for r in rows if r["case"].startswith("raw"))
    for row in rows:
        row["share_of_raw"] = round(row["per_second"] / raw_best, 3)
    print(f"{'case':<40} {'tasks':>5} {'reserve+commit/s':>17} {'share of raw':>13}")
    for row in rows:
        print(f"{row['case']:<40} {row['tasks']:>5} {row['per_second']:>17,} "
              f"{row['share_of_raw']:>12.0%}")
    grouped = next(r for r in rows if r["case"] == "PostgresStore" and r["tasks"] == TASKS)
    print(f"PostgresStore with {TASKS} tasks: {grouped['share_of_raw']:.0%} of the best raw row "
          f"({raw_best:,}/s) of this run; goal >= 50%; medians of {rounds} interleaved rounds")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({
        "python": platform.python_version(), "cpus": os.cpu_count(),
        "psycopg": psycopg.__version__, "rounds": rounds, "raw_best_per_second": raw_best,
        "rows": rows},
        indent=2) + "\n")


if __name__ == "__main__":
    main()
