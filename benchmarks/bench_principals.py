"""What windows, principals and nesting cost on top of the reservation primitive.

Runs on the memory store (plus one row on SQLite; the stores' own figures are in their own
benchmarks), one task, reserve + commit per operation:

- ``store, 1 key``: ``MemoryStore.reserve`` + ``commit`` directly (the floor);
- ``KeyedBudget, 3 keys``: ``KeyedBudget.reserve`` + ``commit`` of three fixed keys;
- ``Budget one-liner, 3 units``: ``Budget(usd=..., tokens=..., requests=..., tool_calls=...)``
  reserving usd, tokens and a request and committing the actual usage (3 keys, run window);
- ``Principals, 3 windows``: one principal, run + month in USD and tokens per day (3 keys, with
  period ids computed per call);
- ``Principals, depth 3``: an agent under a user under a tenant (4 keys across the chain);
- ``Principals, 3 windows, SQLite``: the same as the second row on a SQLite file (durable);
- and the pure parts: ``admits`` decisions, ``Window.period`` lookups, ``UsageLedger.record``
  under churn.

Usage: ``python benchmarks/bench_principals.py [--quick]``; writes
``benchmarks/results/principals.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import anyio
from _timing import ROUNDS, timed, timed_sync

from outlay import (
    Budget,
    BudgetCap,
    KeyedBudget,
    LimitSpec,
    MemoryStore,
    Principals,
    UsageLedger,
    Window,
    WindowState,
    admits,
)

D = Decimal
NOW = datetime(2026, 11, 23, 12, tzinfo=UTC).timestamp()
TEMPLATE = [
    LimitSpec("usd", Window.run(), D("1e12")),
    LimitSpec("usd", Window.month("Europe/Paris"), D("1e12")),
    LimitSpec("tokens", Window.day(), 10**15),
]




async def run(n: int) -> dict[str, float]:
    results: dict[str, float] = {}

    store = MemoryStore()
    await store.set_limit("k", 10**15)

    async def raw(i: int) -> None:
        await store.reserve(f"r{i}", {"k": 1}, lease=60)
        await store.commit(f"r{i}")

    results["store, 1 key"] = await timed(n, raw)

    budget = KeyedBudget(MemoryStore())
    for key in ("a", "b", "c"):
        await budget.set_limit(key, 10**15)

    async def three(i: int) -> None:
        await (await budget.reserve({"a": 1, "b": 1, "c": 1})).commit()

    results["KeyedBudget, 3 keys"] = await timed(n, three)

    one_liner = Budget(usd=D("1e12"), tokens=10**15, requests=10**15, tool_calls=10**15,
                       clock=lambda: NOW)

    async def by_unit(i: int) -> None:
        held = await one_liner.reserve({"usd": D("0.01"), "tokens": 100, "requests": 1})
        await held.commit({"usd": D("0.008"), "tokens": 90})

    results["Budget one-liner, 3 units"] = await timed(n, by_unit)

    budgets = Principals(MemoryStore(), template=TEMPLATE, clock=lambda: NOW, run_id="bench")
    acme = budgets.get("tenant:acme")

    async def windows(i: int) -> None:
        await (await acme.reserve({"usd": D("0.01"), "tokens": 100})).commit()

    results["Principals, 3 windows"] = await timed(n, windows)

    month = [LimitSpec("usd", Window.month(), D("1e12"))]
    nested = (Principals(MemoryStore(), clock=lambda: NOW, run_id="bench")
              .get("tenant:acme", caps=month)
              .child("user:ann", caps=month)
              .child("agent:planner", caps=[LimitSpec("usd", Window.run(), D("1e12")),
                                            *month]))

    async def deep(i: int) -> None:
        await (await nested.reserve({"usd": D("0.01")})).commit()

    results["Principals, depth 3 (4 keys)"] = await timed(n, deep)

    with tempfile.TemporaryDirectory() as directory:
        on_disk = Principals(f"sqlite:///{directory}/bench.db", template=TEMPLATE,
                             clock=lambda: NOW, run_id="bench")
        durable = on_disk.get("tenant:acme")

        async def sqlite_windows(i: int) -> None:
            await (await durable.reserve({"usd": D("0.01"), "tokens": 100})).commit()

        results["Principals, 3 windows, SQLite"] = await timed(max(n // 10, 200), sqlite_windows)
        await on_disk.aclose()

    cap = BudgetCap(run=D("50"), month=D("500"), day=D("20"))
    states = {"run": WindowState(D("10"), D("1")), "month": WindowState(D("400"), D("2"))}
    results["admits (pure)"] = timed_sync(n * 5, lambda i: admits(D("0.25"), states, cap))

    paris = Window.month("Europe/Paris")
    results["Window.period month/tz"] = timed_sync(n * 5, lambda i: paris.period(NOW + i))

    ledger = UsageLedger(1_000)
    results["UsageLedger.record churn"] = timed_sync(
        n * 5, lambda i: ledger.record(f"agent:{i}", i % 97))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    args = parser.parse_args()
    n = 2_000 if args.quick else 10_000
    results = anyio.run(run, n)
    floor = results["store, 1 key"]
    print(f"{'operation':<32} {'ops/s':>12} {'vs store':>9}")
    for name, rate in results.items():
        reserves = any(word in name for word in ("key", "Principals", "Budget"))
        ratio = f"{rate / floor:.2f}x" if reserves else ""
        print(f"{name:<32} {rate:>12,.0f} {ratio:>9}")
    out = Path(__file__).parent / "results" / "principals.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"n": n, "rounds": ROUNDS, "python": platform.python_version(),
                               "ops_per_second": results}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
