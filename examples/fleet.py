"""A fleet of worker processes sharing one durable budget, never exceeding it together.

    python examples/fleet.py                                  # SQLite file in a temp dir
    python examples/fleet.py --store sqlite:///budgets.db     # a file you keep (run it twice)
    python examples/fleet.py --store redis://127.0.0.1:6379/0 # workers on many machines

Each worker process runs several tasks; each task keeps reserving 7 cents for a pretend model
call and commits what the call "cost" (5 or 6 cents), until the shared budget refuses. Every
reservation is one atomic step in the store (a write transaction on the SQLite file, one Lua
script on Redis), so however the workers interleave they never over-admit.
"""

from __future__ import annotations

import argparse
import multiprocessing
import queue
import tempfile
import uuid
from decimal import Decimal
from pathlib import Path

import anyio

from outlay import Budget, RecordingStore, SpendReport, Store, store_from_url

CAP = Decimal("1.00")
HOLD = Decimal("0.07")


def fleet_budget(store: Store | str, principal: str, run_id: str) -> Budget:
    """What every worker builds: the same principal and run id on the same store share it."""
    return Budget(usd=CAP, store=store, principal=principal, run_id=run_id)


async def work(url: str, principal: str, run_id: str, tasks: int) -> tuple[int, Decimal]:
    store = RecordingStore(store_from_url(url))  # events for the spend report
    budget = fleet_budget(store, principal, run_id)
    calls = 0
    spent = Decimal(0)

    async def task(n: int) -> None:
        nonlocal calls, spent
        while (held := await budget.try_reserve({"usd": HOLD})) is not None:
            cost = Decimal("0.05") if (n + calls) % 2 else Decimal("0.06")  # the real price
            await anyio.sleep(0.001)  # the model call
            await held.commit({"usd": cost})
            calls += 1
            spent += cost

    async with anyio.create_task_group() as tg:
        for n in range(tasks):
            tg.start_soon(task, n)
    await store.aclose()  # the budget closes only a store it opened from a URL
    return calls, spent


def worker(url: str, principal: str, run_id: str, tasks: int,
           results: multiprocessing.Queue[str]) -> None:
    calls, spent = anyio.run(work, url, principal, run_id, tasks)
    results.put(f"{calls} {spent}")


async def usage_line(url: str, principal: str, run_id: str) -> tuple[Decimal, Decimal]:
    budget = fleet_budget(url, principal, run_id)
    [usage] = await budget.usage()
    print((await SpendReport.from_store(budget.store, prefix=principal)).to_text())
    await budget.aclose()
    assert isinstance(usage.spent, Decimal)
    assert isinstance(usage.held, Decimal)
    return usage.spent, usage.held


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="store URL (default: a SQLite file in a temp dir)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=4, help="tasks per worker process")
    parser.add_argument("--run", default=None,
                        help="run id the workers share (default: 'fleet' on SQLite, a fresh "
                        "one on Redis)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.store or f"sqlite:///{Path(tmp) / 'fleet.db'}"
        # On a shared Redis, a fresh run id keeps runs apart unless you name one.
        run_id = args.run or ("fleet" if url.startswith("sqlite") else
                              f"fleet-{uuid.uuid4().hex[:8]}")
        principal = "team:research"
        ctx = multiprocessing.get_context("spawn")
        results: multiprocessing.Queue[str] = ctx.Queue()
        processes = [ctx.Process(target=worker, args=(url, principal, run_id, args.tasks, results))
                     for _ in range(args.workers)]
        for process in processes:
            process.start()
        reports: list[str] = []
        while len(reports) < len(processes):
            try:
                reports.append(results.get(timeout=1))
            except queue.Empty:  # a worker that died says nothing: do not wait for it
                if failed := [p.exitcode for p in processes if p.exitcode not in (None, 0)]:
                    raise SystemExit(f"a worker failed (exit code {failed[0]}); "
                                     "its traceback is above") from None
        for process in processes:
            process.join()
        total_calls, total_spent = 0, Decimal(0)
        for n, line in enumerate(reports):
            calls_text, spent_text = line.split()
            total_calls += int(calls_text)
            total_spent += Decimal(spent_text)
            print(f"worker {n}: {calls_text} calls, {spent_text} USD")
        spent, held = anyio.run(usage_line, url, principal, run_id)
        print(f"fleet: {total_calls} calls, {total_spent} USD committed by the workers")
        print(f"store: spent {spent} of {CAP}, held {held}")
        print("within budget" if spent <= CAP else "OVER BUDGET")


if __name__ == "__main__":
    main()
