"""What a job costs on top of the budget reservation it carries.

Per store (memory, a SQLite file, Redis if one answers on 127.0.0.1:6379, PostgreSQL if one
answers on 127.0.0.1:5432 as ``postgres``, database ``test``, in a schema of its own that is
dropped afterwards), one task:

- ``reserve + commit``: ``Budget.reserve`` then ``commit`` (the floor: the budget
  work a job's hold does, 2 store steps);
- ``job: submit + claim + complete``: the whole life of a job (8 store steps: reserve, extend
  and add at submit; claim and extend; finish, commit and settled).

Usage: ``python benchmarks/bench_jobs.py [--quick]``; writes ``benchmarks/results/jobs.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import socket
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path

import anyio

from outlay import JobQueue, LimitSpec, MemoryStore, Principals, Store, Window, store_from_url

ROUNDS = 3


async def timed(n: int, op: Callable[[], Awaitable[None]]) -> float:
    best = 0.0
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(n):
            await op()
        best = max(best, n / (time.perf_counter() - start))
    return best


def redis_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def postgres_answers() -> bool:
    try:
        import psycopg
    except ImportError:
        return False
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def drop_postgres_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def measure(store: Store, n: int) -> tuple[float, float]:
    budget = Principals(store, template=[LimitSpec("usd", Window.month(), Decimal("1000000"))]
                        ).get("team:bench")
    queue = JobQueue(store, budget=budget)

    async def reserve_commit() -> None:
        held = await budget.reserve({"usd": Decimal("1")})
        await held.commit({"usd": Decimal("0.5")})

    async def job() -> None:
        await queue.submit({"n": 1}, cost={"usd": Decimal("1")})
        claim = await queue.claim(["default"])
        assert claim is not None
        assert await claim.complete(None, {"usd": Decimal("0.5")})

    return await timed(n, reserve_commit), await timed(n, job)


async def main(quick: bool) -> None:
    n = 50 if quick else 300
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as folder:
        stores: list[tuple[str, Callable[[], Store]]] = [
            ("memory", MemoryStore),
            ("sqlite", lambda: store_from_url(f"sqlite:///{Path(folder) / 'bench.db'}")),
        ]
        namespace = f"outlay-bench-{uuid.uuid4().hex[:8]}"
        if redis_answers():
            stores.append(("redis", lambda: store_from_url(
                f"redis://127.0.0.1:6379/9?namespace={namespace}")))
        schema = f"outlay_bench_{uuid.uuid4().hex[:12]}"
        if postgres_answers():
            stores.append(("postgres", lambda: store_from_url(
                f"{POSTGRES_URL}?schema={schema}")))
        for name, make in stores:
            store = make()
            try:
                floor, jobs = await measure(store, n)
            finally:
                if name == "redis":
                    client = store.client  # type: ignore[attr-defined]
                    keys = [k async for k in client.scan_iter(match="{" + namespace + "}:*")]
                    if keys:
                        await client.delete(*keys)
                await store.aclose()
                if name == "postgres":
                    drop_postgres_schema(schema)
            rows.append({"store": name, "reserve_commit_per_s": round(floor),
                         "job_per_s": round(jobs), "job_vs_floor": round(floor / jobs, 2)})
    print(f"{'store':8}  {'reserve+commit /s':>18}  {'job (submit+claim+complete) /s':>31}  "
          f"{'x floor':>7}")
    for row in rows:
        print(f"{row['store']:8}  {row['reserve_commit_per_s']:>18}  {row['job_per_s']:>31}  "
              f"{row['job_vs_floor']:>7}")
    out = Path(__file__).parent / "results" / "jobs.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"machine": platform.platform(), "python": platform.python_version(),
                               "n": n, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    anyio.run(main, parser.parse_args().quick)
