"""A worker process for the multi-process Redis test (``test_redis.py``); not a test itself.

``python -m tests.redisworker URL NAMESPACE WORKER TASKS OPS SEED`` runs TASKS tasks that each try
OPS reservations on the shared limits ``calls`` and ``usd`` (and ``worker/<n>``, created on first
use), cancelling some of them at random points, and prints one JSON line with exactly what it
committed. ``... hog`` instead holds budget with a short lease, prints ``HELD`` and waits to be
killed.
"""

from __future__ import annotations

import json
import random
import sys
from decimal import Decimal

import anyio

from outlay import Amount, KeyedBudget
from outlay.stores import store_from_url


async def hog(url: str) -> None:
    budget = KeyedBudget(store_from_url(url))
    held = await budget.try_reserve({"calls": 5, "usd": Decimal("1.00")}, lease=1.0)
    assert held is not None
    print("HELD", held.id, flush=True)
    await anyio.sleep(3600)  # killed with SIGKILL while holding


async def work(url: str, worker: int, tasks: int, ops: int, seed: int) -> None:
    budget = KeyedBudget(store_from_url(url))
    tally = {"calls": 0, "worker": 0, "admitted": 0, "refused": 0, "cancelled": 0,
             "released": 0}
    usd = Decimal(0)
    own = f"worker/{worker}"

    async def one_task(n: int) -> None:
        nonlocal usd
        rng = random.Random(seed * 1000 + n)
        for _ in range(ops):
            held_usd = Decimal(rng.randint(1, 50)) / 100
            amounts: dict[str, Amount] = {"calls": 1, "usd": held_usd, own: 1}
            reservation = None
            with anyio.move_on_after(rng.choice([0, 0.001, 1.0, 1.0])) as scope:
                reservation = await budget.try_reserve(amounts, lease=30,
                                                       defaults={own: 10_000})
            if reservation is None:
                tally["cancelled" if scope.cancelled_caught else "refused"] += 1
                continue
            tally["admitted"] += 1
            if rng.random() < 0.2:
                await reservation.release()
                tally["released"] += 1
                continue
            spent_usd = held_usd * rng.randint(0, 10) / 10
            actual: dict[str, Amount] = {"calls": 1, "usd": spent_usd, own: 1}
            with anyio.move_on_after(rng.choice([0, 1.0])):  # commit runs shielded
                await reservation.commit(actual)
            tally["calls"] += 1
            usd += spent_usd
            tally["worker"] += 1

    async with anyio.create_task_group() as tg:
        for n in range(tasks):
            tg.start_soon(one_task, n)
    await budget.aclose()
    print(json.dumps({"usd": str(usd), **{k: str(v) for k, v in tally.items()}}), flush=True)


def main(argv: list[str]) -> None:
    url, namespace = argv[0], argv[1]
    url += ("&" if "?" in url else "?") + f"namespace={namespace}"
    if argv[2] == "hog":
        anyio.run(hog, url, backend="asyncio")
    else:
        worker, tasks, ops, seed = (int(a) for a in argv[2:6])
        anyio.run(work, url, worker, tasks, ops, seed, backend="asyncio")


if __name__ == "__main__":
    main(sys.argv[1:])
