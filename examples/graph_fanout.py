"""A research agent as a graph: three searches in parallel, a summary, all inside a budget.

Run: ``python examples/graph_fanout.py``. The parallel searches are held all at once, the
summary reports what it really cost, and a second, wider fan-out is refused before it starts.
"""

from __future__ import annotations

from decimal import Decimal

import anyio

from outlay import Budget, BudgetExceeded
from outlay.graph import (
    BudgetedExecutor,
    Cost,
    Merge,
    Parallel,
    Reported,
    Stage,
    StageRegistry,
    estimate,
)

registry = StageRegistry()


@registry.stage("search", cost=Cost(usd=Decimal("0.01")))
async def search(query: str, config: str) -> str:
    await anyio.sleep(0.01)  # stands in for an HTTP call
    return f"{config} results for {query!r}"


@registry.stage("summarise", cost=Cost(usd=Decimal("0.05"), tokens=4000))
async def summarise(results: list[str]) -> Reported:
    summary = " | ".join(results)
    return Reported(summary, Cost(usd=Decimal("0.02"), tokens=len(summary)))


async def main() -> None:
    budget = Budget(usd=Decimal("0.10"), tokens=10_000)
    executor = BudgetedExecutor(registry, budget)

    agent = Merge([Stage("search", e) for e in ("web", "news", "papers")], Stage("summarise"))
    print("worst case:", estimate(agent, registry).cost)
    print(await executor.run(agent, "LLM budgets"))
    print("left:", (await budget.remaining())["usd"], "USD")

    wide = Parallel({f"q{n}": Stage("search", "web") for n in range(6)})
    try:
        await executor.run(wide, "more")
    except BudgetExceeded as exc:
        print("refused before any branch started:", exc.reason)


if __name__ == "__main__":
    anyio.run(main)
