"""Four worker processes share one durable $1.00 budget in a SQLite file.

    python examples/sqlite_workers.py [path/to/budgets.db]

Each worker keeps reserving 7 cents for a pretend model call and commits what it "cost" (5 or 6
cents) until the budget refuses. No worker can over-admit another: every reservation is one
write transaction on the file. Run it twice: the second run finds the budget spent.
"""

from __future__ import annotations

import multiprocessing
import sys
from decimal import Decimal

import anyio

from outlay import Budget

KEY = "team:research/usd"


async def work(url: str, worker: int) -> Decimal:
    budget = Budget(url)
    spent = Decimal(0)
    calls = 0
    while (held := await budget.try_reserve({KEY: Decimal("0.07")})) is not None:
        cost = Decimal("0.05") if calls % 2 else Decimal("0.06")  # the call's real price
        await held.commit({KEY: cost})
        spent += cost
        calls += 1
    await budget.aclose()
    return spent


def worker(url: str, n: int, results: multiprocessing.Queue[Decimal]) -> None:
    results.put(anyio.run(work, url, n))


async def set_up(url: str) -> None:
    budget = Budget(url)
    try:
        await budget.usage(KEY)
    except LookupError:  # first run: create the budget
        await budget.set_limit(KEY, Decimal("1.00"))
    await budget.aclose()


async def report(url: str) -> str:
    budget = Budget(url)
    usage = await budget.usage(KEY)
    await budget.aclose()
    return f"spent {usage.spent} of {usage.cap}, held {usage.held}"


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else "budgets.db"
    url = f"sqlite:///{path}"
    anyio.run(set_up, url)
    ctx = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[Decimal] = ctx.Queue()
    workers = [ctx.Process(target=worker, args=(url, n, results)) for n in range(4)]
    for process in workers:
        process.start()
    total = sum((results.get() for _ in workers), Decimal(0))
    for process in workers:
        process.join()
    print(f"workers spent {total}; the store says {anyio.run(report, url)}")


if __name__ == "__main__":
    main()
