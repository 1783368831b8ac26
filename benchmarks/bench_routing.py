"""What a routing decision costs on top of the budget it charges.

Runs on the in-memory budget object, one task:

- ``Budget reserve + commit``: the raw engine every routed call ends in (the floor);
- ``select_backend (pure), 4 candidates``: the decision alone (a GPU job: order, requirements,
  exact ``estimate_cost`` worst cases, budgets given);
- ``Router.decide, 4 candidates``: reading what remains of the budget, then the decision;
- ``Router.run, model call, 3 candidates``: decide + hold the worst case + call + commit;
- ``Router.run, 3 candidates, 2 budgets``: the same with a budget per candidate;
- ``estimate_cost exact``: one exact GPU-job worst case.

Usage: ``python benchmarks/bench_routing.py [--quick]``; writes ``benchmarks/results/routing.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
from decimal import Decimal
from pathlib import Path

import anyio
from _timing import ROUNDS, timed, timed_sync

from outlay import (
    Accelerator,
    Backend,
    BackendKind,
    Budget,
    CostRates,
    RemainingBudget,
    RouteChoice,
    Router,
    TokenPrices,
    Work,
    estimate_cost,
    select_backend,
)

D = Decimal
NOW = 1_764_547_200.0
GPU = CostRates(per_vcpu_second=D("0.0000125"), per_gib_second=D("0.0000015"),
                per_accelerator_second=D("0.0011"), idle_tail_s=60, billing_increment_s=60)
BACKENDS = [
    Backend("managed", BackendKind.SDK, tools={"t"}, rates=CostRates(per_job=D("4"),
            per_accelerator_second=D(0)), accelerators=(Accelerator("m", 80),)),
    Backend("cloud", BackendKind.CLOUD, tools={"t"}, rates=GPU,
            accelerators=(Accelerator("h100", 80),)),
    Backend("lab", BackendKind.LAN, tools={"t"}, accelerators=(Accelerator("a100", 40, False),)),
    Backend("ws", BackendKind.LOCAL, tools={"t"}, accelerators=(Accelerator("rtx", 24),)),
]
JOB = Work(tool="t", accelerator_memory_gib=40, max_runtime_s=3600, vcpus=16, memory_gib=64)
CALL = Work(input_tokens=2_000, max_output_tokens=500)


async def run(n: int) -> dict[str, float]:
    results: dict[str, float] = {}
    budget = Budget(usd=D("1e12"), clock=lambda: NOW)

    async def raw(i: int) -> None:
        held = await budget.reserve({"usd": D("0.01")})
        await held.commit({"usd": D("0.008")})

    results["Budget reserve + commit"] = await timed(n, raw)

    rooms = {"cloud": RemainingBudget("usd", D("100"), D("1"), "k"),
             "managed": RemainingBudget("usd", D("100"), D("1"), "k")}
    results["select_backend (pure), 4 candidates"] = timed_sync(
        n, lambda i: select_backend(BACKENDS, JOB, budgets=rooms))

    gpu_router = Router(BACKENDS, budget=budget)
    results["Router.decide, 4 candidates"] = await timed(n, lambda i: gpu_router.decide(JOB))

    models = Router([Backend("premium", BackendKind.CLOUD, prices=TokenPrices(D("5"), D("25"))),
                     Backend("cheap", BackendKind.CLOUD, prices=TokenPrices(D("1"), D("5"))),
                     Backend("local", BackendKind.LOCAL)], budget=budget, order="listed")

    async def answer(choice: RouteChoice) -> str:
        choice.report(D("0.004"))
        return choice.backend.name

    results["Router.run, model call, 3 candidates"] = await timed(
        n, lambda i: models.run(CALL, answer))

    second = Budget(usd=D("1e12"), clock=lambda: NOW, principal="key:cheap")
    keyed = Router([Backend("premium", BackendKind.CLOUD, prices=TokenPrices(D("5"), D("25"))),
                    Backend("cheap", BackendKind.CLOUD, prices=TokenPrices(D("1"), D("5")),
                            budget=second),
                    Backend("local", BackendKind.LOCAL)], budget=budget, order="listed")
    results["Router.run, 3 candidates, 2 budgets"] = await timed(
        n, lambda i: keyed.run(CALL, answer))

    results["estimate_cost exact"] = timed_sync(
        n * 5, lambda i: estimate_cost(GPU, max_runtime_s=3600 + i % 7, vcpus=16,
                                       memory_gib=64, accelerators=1))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    args = parser.parse_args()
    n = 1_000 if args.quick else 5_000
    results = anyio.run(run, n)
    floor = results["Budget reserve + commit"]
    print(f"{'operation':<40} {'ops/s':>12} {'vs reserve+commit':>18}")
    for name, rate in results.items():
        print(f"{name:<40} {rate:>12,.0f} {rate / floor:>17.2f}x")
    out = Path(__file__).parent / "results" / "routing.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"n": n, "rounds": ROUNDS, "python": platform.python_version(),
                               "ops_per_second": results}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
