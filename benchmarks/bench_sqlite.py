"""SQLite store throughput: reservations per second (reserve + commit), one process and four.

    python benchmarks/bench_sqlite.py [--quick]

Every row runs against the same database file in the same run:

- ``SQLiteStore``: ``reserve`` then ``commit`` through the store (a worker thread per call, one
  ``BEGIN IMMEDIATE`` transaction each, holds with leases, ending history, exact TEXT amounts);
  one task in a process, and 16 and 50 concurrent tasks in a process (concurrent operations
  share one transaction: group commit).
- ``raw UPDATE..RETURNING``: the floor, two autocommit statements on an integer counter with
  no holds table, no lease, no idempotency and no thread hop (5x as many rounds as the other
  rows, so that it runs for a comparable time):
  ``UPDATE raw SET held = held + 1 WHERE key = ? AND spent + held + 1 <= cap RETURNING held``,
  then ``UPDATE raw SET held = held - 1, spent = spent + 1 WHERE key = ? RETURNING spent``.
- ``raw via to_thread``: the same two statements, each sent through ``anyio.to_thread``, to
  separate the cost of the thread hop from the cost of the store's bookkeeping.
- ``MemoryStore``: the in-process store, for scale (one process only).

Processes start together behind a barrier; the rate is all reservations over the wall time
from the first start to the last finish. The whole plan runs three times in turn
(``--repeat``), so a noisy moment on a shared machine hits every row alike, and each row keeps
its best run. Every row checks its final spend is exact. A row's ``share`` is its rate over the
``raw UPDATE..RETURNING`` row with as many processes, measured in the same run (the goal: one
process with 50 tasks at half of it or more). Prints a table and writes
``benchmarks/results/sqlite.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sqlite3
import sys
import tempfile
import time
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import cast

import anyio

from outlay import MemoryStore, Store
from outlay._core._reservation import new_id  # the ids outlay's Budget makes
from outlay.stores import SQLiteStore

RESULTS = Path(__file__).with_name("results") / "sqlite.json"
CAP = 10**12

RAW_RESERVE = ("UPDATE raw SET held = held + 1 WHERE key = ? AND spent + held + 1 <= cap "
               "RETURNING held")
RAW_COMMIT = "UPDATE raw SET held = held - 1, spent = spent + 1 WHERE key = ? RETURNING spent"


def raw_connection(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def setup(path: str, key: str) -> None:
    async def main() -> None:
        store = SQLiteStore(path)
        await store.set_limit(key, CAP)
        await store.aclose()

    anyio.run(main)
    conn = raw_connection(path)
    conn.execute("CREATE TABLE IF NOT EXISTS raw (key TEXT PRIMARY KEY, cap INTEGER, "
                 "spent INTEGER, held INTEGER)")
    conn.execute("INSERT OR REPLACE INTO raw VALUES (?, ?, 0, 0)", (key, CAP))
    conn.close()


async def store_rounds(store: Store, key: str, ops: int, tasks: int) -> None:
    async def worker(count: int) -> None:
        for _ in range(count):
            rid = new_id()
            if not (await store.reserve(rid, {key: 1}, lease=60)).admitted:
                raise RuntimeError("refused")
            await store.commit(rid)

    async with anyio.create_task_group() as tg:
        for n in range(tasks):
            tg.start_soon(worker, ops // tasks + (1 if n < ops % tasks else 0))


def raw_rounds(conn: sqlite3.Connection, key: str, ops: int) -> None:
    for _ in range(ops):
        if conn.execute(RAW_RESERVE, (key,)).fetchone() is None:
            raise RuntimeError("refused")
        conn.execute(RAW_COMMIT, (key,)).fetchone()


async def raw_thread_rounds(conn: sqlite3.Connection, key: str, ops: int) -> None:
    def one(sql: str) -> object:
        return conn.execute(sql, (key,)).fetchone()

    for _ in range(ops):
        if await anyio.to_thread.run_sync(one, RAW_RESERVE) is None:
            raise RuntimeError("refused")
        await anyio.to_thread.run_sync(one, RAW_COMMIT)


def run_case(case: str, path: str, key: str, ops: int, tasks: int) -> tuple[float, float]:
    """Run ``ops`` reservations of ``case`` in this process; return (start, end)."""
    if case == "store":
        store = SQLiteStore(path)

        async def main() -> None:
            await store.usage(key)  # open the connection outside the timing
            start = time.monotonic()
            await store_rounds(store, key, ops, tasks)
            times.append((start, time.monotonic()))
            await store.aclose()
    elif case == "raw":
        conn = raw_connection(path)
        start = time.monotonic()
        raw_rounds(conn, key, ops)
        end = time.monotonic()
        conn.close()
        return start, end
    elif case == "raw_thread":
        conn = raw_connection(path)

        async def main() -> None:
            start = time.monotonic()
            await raw_thread_rounds(conn, key, ops)
            times.append((start, time.monotonic()))
            conn.close()
    else:  # memory
        memory = MemoryStore()
        memory.set_limit_nowait(key, CAP)

        async def main() -> None:
            start = time.monotonic()
            await store_rounds(memory, key, ops, tasks)
            times.append((start, time.monotonic()))

    times: list[tuple[float, float]] = []
    anyio.run(main)
    return times[0]


def child(case: str, path: str, key: str, ops: int, tasks: int, barrier: Barrier,
          out: multiprocessing.Queue[tuple[float, float]]) -> None:
    barrier.wait()
    out.put(run_case(case, path, key, ops, tasks))


def in_processes(case: str, path: str, key: str, ops: int, tasks: int, processes: int,
                 ) -> tuple[float, float]:
    if processes == 1:
        return run_case(case, path, key, ops, tasks)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(processes)
    out: multiprocessing.Queue[tuple[float, float]] = ctx.Queue()
    procs = [ctx.Process(target=child, args=(case, path, key, ops, tasks, barrier, out))
             for _ in range(processes)]
    for proc in procs:
        proc.start()
    spans = [out.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join()
        if proc.exitcode != 0:
            raise RuntimeError(f"{case} child failed with {proc.exitcode}")
    return min(s for s, _ in spans), max(e for _, e in spans)


def spent(case: str, path: str, key: str) -> int:
    if case == "memory":
        return -1
    if case.startswith("raw"):
        conn = raw_connection(path)
        (value,) = conn.execute("SELECT spent FROM raw WHERE key = ?", (key,)).fetchone()
        conn.close()
        return int(value)

    async def main() -> int:
        store = SQLiteStore(path)
        usage = await store.usage(key)
        await store.aclose()
        return int(usage.spent)

    return anyio.run(main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, for a smoke run")
    parser.add_argument("--repeat", type=int, default=None,
                        help="runs of the whole plan, each row keeps its best (default 3; "
                             "1 with --quick)")
    args = parser.parse_args()
    ops = 300 if args.quick else 3000  # per process
    repeat = args.repeat or (1 if args.quick else 3)
    labels: dict[str, str] = {
        "store": "SQLiteStore reserve+commit",
        "raw": "raw UPDATE..RETURNING",
        "raw_thread": "raw via to_thread",
        "memory": "MemoryStore reserve+commit",
    }
    plan: list[tuple[str, int, int]] = [
        ("store", 1, 1), ("store", 1, 16), ("store", 1, 50), ("store", 4, 1), ("store", 4, 16),
        ("raw", 1, 1), ("raw", 4, 1), ("raw_thread", 1, 1), ("raw_thread", 4, 1),
        ("memory", 1, 1),
    ]
    # The raw statements are fast: a raw row runs 5x the reservations, so that every row
    # measures a comparable stretch of time (0.1 s is one noisy moment on a shared machine).
    count = [ops * (5 if case == "raw" else 1) for case, _, _ in plan]
    rates: list[list[float]] = [[] for _ in plan]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.db")
        for run in range(repeat):
            for n, (case, processes, tasks) in enumerate(plan):
                key = f"bench/{run}/{n}"
                setup(path, key)
                start, end = in_processes(case, path, key, count[n], tasks, processes)
                total = count[n] * processes
                got = spent(case, path, key)
                if got not in (-1, total):
                    raise RuntimeError(f"{case}: spent {got}, expected {total}")
                rates[n].append(total / (end - start))
    raw = {processes: max(rates[n]) for n, (case, processes, _) in enumerate(plan)
           if case == "raw"}
    rows: list[dict[str, object]] = []
    for n, (case, processes, tasks) in enumerate(plan):
        best = max(rates[n])
        rows.append({"case": labels[case], "processes": processes, "tasks": tasks,
                     "reservations": count[n] * processes,
                     "seconds": round(count[n] * processes / best, 4),
                     "per_second": round(best), "runs": [round(r) for r in rates[n]],
                     "share_of_raw": round(best / raw[processes], 3)})
    report(rows)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "sqlite", "quick": args.quick, "repeat": repeat,
        "python": sys.version.split()[0], "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(), "cpus": os.cpu_count(), "rows": rows}, indent=2) + "\n")
    print(f"\nwrote {RESULTS}")


def report(rows: list[dict[str, object]]) -> None:
    header = (f"{'case':<28} {'procs':>5} {'tasks':>5} {'reservations':>12} {'s':>8} "
              f"{'per s':>9} {'share':>6}  runs (per s)")
    print(header)
    print("-" * len(header))
    for row in rows:
        runs = "/".join(str(r) for r in cast(list[int], row["runs"]))
        print(f"{row['case']!s:<28} {row['processes']!s:>5} {row['tasks']!s:>5} "
              f"{row['reservations']!s:>12} {row['seconds']!s:>8} {row['per_second']!s:>9} "
              f"{cast(float, row['share_of_raw']):>6.0%}  {runs}")


if __name__ == "__main__":
    main()
