"""Graph executor overhead against hand-written code doing the same work.

Run: ``python benchmarks/bench_graph.py [--quick]``. Prints a table and writes
``benchmarks/results/graph.json``. Every case is timed in the same process, best of several
repeats, per stage (Sequential) or per branch (Parallel):

- ``Sequential`` of N no-op stages against awaiting the same N functions directly;
- ``Parallel`` of N no-op branches against a hand-written anyio task group, and (asyncio only)
  ``asyncio.TaskGroup``, each without and with a budget (one hold for all branches);
- peak traced memory per branch of each ``Parallel`` variant (``tracemalloc``).

Cases run round-robin and the best time of each is kept; the load average is recorded, since
on a busy machine the ratios between cases are what is worth reading.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

from outlay import Budget, LimitSpec, MemoryStore, Window
from outlay.graph import (
    BudgetedExecutor,
    Cost,
    Executor,
    Parallel,
    Plan,
    Sequential,
    Stage,
    StageRegistry,
)

RESULTS = Path(__file__).parent / "results" / "graph.json"


async def noop(value: Any) -> Any:
    return value


def registry() -> StageRegistry:
    reg = StageRegistry()
    reg.register("noop", noop)
    reg.register("paid", noop, cost=Cost(calls=1))
    return reg


async def fresh_budget(n: int) -> Budget:
    return Budget(caps=[LimitSpec("calls", Window.run(), 10 * n * 1000)], store=MemoryStore())


Case = Callable[[], Awaitable[Any]]


async def best_of(cases: dict[str, Case], repeats: int) -> dict[str, float]:
    """Best time of each case, running the cases round-robin so that load drifting on the
    machine hits every case alike."""
    for case in cases.values():
        await case()  # warm up
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(repeats):
        for name, case in cases.items():
            gc.collect()
            start = time.perf_counter()
            await case()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


async def peak_bytes(case: Case) -> int:
    await case()
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        await case()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - base


# -- Sequential -------------------------------------------------------------------------------


def sequential_cases(n: int, budget: Budget) -> dict[str, Case]:
    reg = registry()
    fns = [noop] * n
    free_plan: Plan = Executor(reg).prepare(Sequential([Stage("noop")] * n))
    free = Executor(reg)
    paid = BudgetedExecutor(reg, budget)
    paid_plan = paid.prepare(Sequential([Stage("paid")] * n))
    composition = Sequential([Stage("noop")] * n)

    async def direct() -> None:
        value = 0
        for fn in fns:
            value = await fn(value)

    async def direct_budget() -> None:
        value = 0
        for fn in fns:
            reservation = await budget.reserve({"calls": 1})
            value = await fn(value)
            await reservation.commit({"calls": 1})

    async def executor() -> None:
        await free.run(free_plan, 0)

    async def executor_with_prepare() -> None:
        await free.run(composition, 0)

    async def executor_budget() -> None:
        await paid.run(paid_plan, 0)

    return {
        "direct awaits": direct,
        "executor (prepared)": executor,
        "executor (incl. prepare)": executor_with_prepare,
        "direct awaits + budget": direct_budget,
        "executor + budget": executor_budget,
    }


# -- Parallel ---------------------------------------------------------------------------------


def parallel_cases(n: int, budget: Budget, backend: str) -> dict[str, Case]:
    reg = registry()
    names = [f"b{i}" for i in range(n)]
    free = Executor(reg)
    free_plan = free.prepare(Parallel(dict.fromkeys(names, Stage("noop"))))
    paid = BudgetedExecutor(reg, budget)
    paid_plan = paid.prepare(Parallel(dict.fromkeys(names, Stage("paid"))))

    async def anyio_group() -> None:
        results: dict[str, Any] = {}

        async def branch(name: str) -> None:
            results[name] = await noop(0)

        async with anyio.create_task_group() as group:
            for name in names:
                group.start_soon(branch, name)

    async def anyio_group_budget() -> None:
        async with budget.reserve({"calls": n}) as reservation:
            await anyio_group()
            await reservation.commit({"calls": n})

    async def asyncio_group() -> None:
        results: dict[str, Any] = {}

        async def branch(name: str) -> None:
            results[name] = await noop(0)

        async with asyncio.TaskGroup() as group:
            for name in names:
                group.create_task(branch(name))

    async def asyncio_group_budget() -> None:
        async with budget.reserve({"calls": n}) as reservation:
            await asyncio_group()
            await reservation.commit({"calls": n})

    async def executor() -> None:
        await free.run(free_plan, 0)

    async def executor_budget() -> None:
        await paid.run(paid_plan, 0)

    cases: dict[str, Case] = {"anyio task group": anyio_group}
    if backend == "asyncio":
        cases["asyncio TaskGroup"] = asyncio_group
    cases["executor"] = executor
    cases["anyio task group + budget"] = anyio_group_budget
    if backend == "asyncio":
        cases["asyncio TaskGroup + budget"] = asyncio_group_budget
    cases["executor + budget"] = executor_budget
    return cases


async def measure(backend: str, n: int, repeats: int) -> dict[str, Any]:
    budget = await fresh_budget(n)
    out: dict[str, Any] = {"sequential": {}, "parallel": {}}
    for name, seconds in (await best_of(sequential_cases(n, budget), repeats)).items():
        out["sequential"][name] = {"us_per_stage": seconds / n * 1e6}
    cases = parallel_cases(n, budget, backend)
    for name, seconds in (await best_of(cases, repeats)).items():
        out["parallel"][name] = {"us_per_branch": seconds / n * 1e6,
                                 "peak_bytes_per_branch": await peak_bytes(cases[name]) / n}
    return out


def ratios(results: dict[str, Any]) -> dict[str, float]:
    seq = results["sequential"]
    par = results["parallel"]
    base = par["anyio task group"]["us_per_branch"]
    out = {
        "sequential executor / direct": seq["executor (prepared)"]["us_per_stage"]
        / seq["direct awaits"]["us_per_stage"],
        "sequential executor incl. prepare / direct": seq["executor (incl. prepare)"][
            "us_per_stage"] / seq["direct awaits"]["us_per_stage"],
        "sequential executor+budget / direct+budget": seq["executor + budget"]["us_per_stage"]
        / seq["direct awaits + budget"]["us_per_stage"],
        "parallel executor / anyio": par["executor"]["us_per_branch"] / base,
        "parallel executor+budget / anyio": par["executor + budget"]["us_per_branch"] / base,
        "parallel executor+budget / anyio+budget": par["executor + budget"]["us_per_branch"]
        / par["anyio task group + budget"]["us_per_branch"],
    }
    if "asyncio TaskGroup" in par:
        tg = par["asyncio TaskGroup"]["us_per_branch"]
        out["parallel executor / asyncio TaskGroup"] = par["executor"]["us_per_branch"] / tg
        out["parallel executor+budget / asyncio TaskGroup"] = (
            par["executor + budget"]["us_per_branch"] / tg)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 stages, fewer repeats")
    args = parser.parse_args()
    n, repeats = (1_000, 3) if args.quick else (10_000, 7)
    report: dict[str, Any] = {
        "n": n, "repeats": repeats, "python": sys.version.split()[0],
        "platform": platform.platform(), "cpus": os.cpu_count(),
        "load_average": os.getloadavg(), "backends": {},
    }
    for backend in ("asyncio", "trio"):
        results = anyio.run(measure, backend, n, repeats, backend=backend)
        results["ratios"] = ratios(results)
        report["backends"][backend] = results
        print(f"\n== {backend}: n = {n:,}, best of {repeats} ==")
        print(f"{'Sequential':<34}{'us/stage':>10}")
        for name, row in results["sequential"].items():
            print(f"  {name:<32}{row['us_per_stage']:>10.3f}")
        print(f"{'Parallel':<34}{'us/branch':>10}{'peak B/branch':>15}")
        for name, row in results["parallel"].items():
            print(f"  {name:<32}{row['us_per_branch']:>10.3f}"
                  f"{row['peak_bytes_per_branch']:>15.0f}")
        print("ratios")
        for name, value in results["ratios"].items():
            print(f"  {name:<48}{value:>6.2f}x")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
