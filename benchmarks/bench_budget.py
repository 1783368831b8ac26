"""Reserve+release cost of AtomicBudget against the baselines users would pick instead.

Run: ``python benchmarks/bench_budget.py [--quick]``. Prints a table and writes
``benchmarks/results/budget.json``. Every row is timed in the same run, on asyncio, as CPU time
of the event-loop thread (so other load on the machine does not count), best of several rounds
taken round-robin over the rows. The floor is a bare ``async def`` over a
``threading.Lock``-guarded counter (what any thread-safe async budget must at least pay).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

from outlay import AtomicBudget

Bench = Callable[[int], Awaitable[float]]
clock = time.thread_time


async def floor_threading_lock(n: int) -> float:
    lock = threading.Lock()
    state = [10]

    async def reserve(cost: int) -> bool:
        with lock:
            if state[0] >= cost:
                state[0] -= cost
                return True
            return False

    async def release(cost: int) -> None:
        with lock:
            state[0] += cost

    start = clock()
    for _ in range(n):
        await reserve(1)
        await release(1)
    return clock() - start


async def asyncio_lock_counter(n: int) -> float:
    lock = asyncio.Lock()
    state = [10]

    async def reserve(cost: int) -> bool:
        async with lock:
            if state[0] >= cost:
                state[0] -= cost
                return True
            return False

    async def release(cost: int) -> None:
        async with lock:
            state[0] += cost

    start = clock()
    for _ in range(n):
        await reserve(1)
        await release(1)
    return clock() - start


async def aiolimiter_acquire(n: int) -> float:
    from aiolimiter import AsyncLimiter

    limiter = AsyncLimiter(max_rate=10 * n, time_period=3600)  # never throttles here
    start = clock()
    for _ in range(n):
        await limiter.acquire(1)  # a rate limiter has no release: its cost is acquire alone
    return clock() - start


async def anyio_capacity_limiter(n: int) -> float:
    limiter = anyio.CapacityLimiter(10)
    start = clock()
    for _ in range(n):
        await limiter.acquire()
        limiter.release()
    return clock() - start


async def atomic_nowait(n: int) -> float:
    budget = AtomicBudget(10)
    reserve, release = budget.try_reserve_nowait, budget.release_nowait
    start = clock()
    for _ in range(n):
        reserve(1)
        release(1)
    return clock() - start


async def atomic_await(n: int) -> float:
    budget = AtomicBudget(10)
    start = clock()
    for _ in range(n):
        await budget.try_reserve(1)
        await budget.release(1)
    return clock() - start


async def atomic_hold(n: int) -> float:
    budget = AtomicBudget(10)
    start = clock()
    for _ in range(n):
        async with budget.hold(1):
            pass
    return clock() - start


def contended(kind: str) -> Bench:
    """1,000 tasks, each taking 1 unit of a capacity-10 budget ``n // 1000`` times, waiting."""

    async def run(n: int) -> float:
        tasks = 1000
        rounds = max(n // tasks, 1)
        if kind == "atomic":
            budget = AtomicBudget(10)

            async def worker() -> None:
                for _ in range(rounds):
                    async with budget.hold(1):
                        await asyncio.sleep(0)
        elif kind == "capacity_limiter":
            limiter = anyio.CapacityLimiter(10)

            async def worker() -> None:
                for _ in range(rounds):
                    async with limiter:
                        await asyncio.sleep(0)
        else:
            semaphore = asyncio.Semaphore(10)

            async def worker() -> None:
                for _ in range(rounds):
                    async with semaphore:
                        await asyncio.sleep(0)

        start = clock()
        async with anyio.create_task_group() as tg:
            for _ in range(tasks):
                tg.start_soon(worker)
        elapsed = clock() - start
        return elapsed * n / (tasks * rounds)

    return run


UNCONTENDED: dict[str, Bench] = {
    "floor: async def + threading.Lock counter": floor_threading_lock,
    "asyncio.Lock counter": asyncio_lock_counter,
    "aiolimiter.AsyncLimiter.acquire": aiolimiter_acquire,
    "anyio.CapacityLimiter acquire+release": anyio_capacity_limiter,
    "AtomicBudget try_reserve_nowait+release_nowait": atomic_nowait,
    "AtomicBudget await try_reserve+release": atomic_await,
    "AtomicBudget async with hold()": atomic_hold,
}
CONTENDED: dict[str, Bench] = {
    "contended 1,000 tasks: AtomicBudget.hold": contended("atomic"),
    "contended 1,000 tasks: anyio.CapacityLimiter": contended("capacity_limiter"),
    "contended 1,000 tasks: asyncio.Semaphore": contended("semaphore"),
}


async def main(quick: bool) -> dict[str, object]:
    n, repeats = (20_000, 3) if quick else (100_000, 9)
    benches = {**UNCONTENDED, **CONTENDED}
    sizes = {name: n if name in UNCONTENDED else n // 4 for name in benches}
    for name, bench in benches.items():
        await bench(min(sizes[name], 1000))  # warm up
    best = dict.fromkeys(benches, float("inf"))
    for _ in range(repeats):  # round-robin, so drifting machine load hits every row alike
        for name, bench in benches.items():
            best[name] = min(best[name], await bench(sizes[name]))
    rows = {name: best[name] / sizes[name] * 1e9 for name in benches}
    floor = rows["floor: async def + threading.Lock counter"]
    width = max(map(len, rows))
    print(f"{'benchmark (asyncio)':<{width}}  {'ns/pair':>9}  {'x floor':>8}")
    for name, ns in rows.items():
        print(f"{name:<{width}}  {ns:>9.0f}  {ns / floor:>8.2f}")
    ratio = rows["AtomicBudget await try_reserve+release"] / floor
    target = "met" if ratio <= 1.3 else "MISSED"
    print(f"\ntarget: await try_reserve+release within 1.3x of the floor: {ratio:.2f}x ({target})")
    return {
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "iterations": n,
        "repeats": repeats,
        "ns_per_pair": rows,
        "ratio_to_floor": {name: ns / floor for name, ns in rows.items()},
        "median_ns": statistics.median(rows.values()),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer iterations (CI smoke run)")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "budget.json")
    args = parser.parse_args()
    result = asyncio.run(main(args.quick))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
