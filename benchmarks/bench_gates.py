"""Cost of the gates per invocation: ``ApprovalHook`` and ``EgressAuditHook`` vs a bare dispatch.

Run: ``python benchmarks/bench_gates.py [--quick]``. Prints a table (microseconds of event-loop
thread CPU time per invocation, best round) and writes ``benchmarks/results/gates.json``. The
tool is an async no-op, structlog is not configured (as in a library benchmark), so the figures
are the gates' own cost. Cases, all through one ``ToolDispatcher``:

- ``no hooks``: the baseline dispatch.
- ``approval, below threshold``: the common case, a cheap call (cost function evaluated).
- ``approval, policy approver``: above threshold, an approver that answers at once; includes
  the request, the ``ApprovalRecord`` and a ``MemoryApprovalLog``.
- ``approval, ApprovalQueue round trip``: above threshold, a reviewer task takes each request
  from ``next_request()`` and approves it (two task switches per call).
- ``egress, 1 secret``: ``EgressAuditHook`` and its wrapper resolving one environment variable.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio

from outlay import (
    ApprovalDecision,
    ApprovalHook,
    ApprovalQueue,
    ApprovalRequest,
    EgressAuditHook,
    MemoryApprovalLog,
    Secret,
    ToolDispatcher,
    ToolInvocation,
)


async def search(query: str) -> str:
    return query


class Policy:
    async def request_approval(self, request: ApprovalRequest) -> ApprovalDecision:
        return ApprovalDecision.approve("policy-bot", "under the cap")


def usd(invocation: ToolInvocation) -> Decimal:
    return Decimal("0.50")


async def per_call_us(run: Callable[[], Awaitable[Any]], n: int) -> float:
    cpu = time.thread_time()
    for _ in range(n):
        await run()
    return (time.thread_time() - cpu) / n * 1e6


async def measure(n: int, rounds: int) -> dict[str, float]:
    invocation = ToolInvocation("call_1", "search", {"query": "outlay"}, principal="u1")
    queue = ApprovalQueue()
    egress = EgressAuditHook(environ={"SEARCH_KEY": "k-123"})

    async def keyed_search(query: str, key: Secret) -> str:
        return query

    dispatchers = {
        "no hooks": ToolDispatcher({"search": search}),
        "approval, below threshold": ToolDispatcher(
            {"search": search}, [ApprovalHook(Policy(), threshold=Decimal(1), cost=usd)]),
        "approval, policy approver": ToolDispatcher(
            {"search": search}, [ApprovalHook(Policy(), threshold=Decimal(0), cost=usd,
                                              audit=MemoryApprovalLog())]),
        "approval, ApprovalQueue round trip": ToolDispatcher(
            {"search": search}, [ApprovalHook(queue, threshold=Decimal(0), cost=usd)]),
        "egress, 1 secret": ToolDispatcher(
            {"search": egress.tool(keyed_search, endpoint="https://search.invalid",
                                   secrets={"key": "SEARCH_KEY"}, name="search")}, [egress]),
    }
    best = dict.fromkeys(dispatchers, float("inf"))

    async def reviewer() -> None:
        while True:
            request = await queue.next_request()
            queue.approve(request.request_id, who="bench", why="auto")

    async with anyio.create_task_group() as tg:
        tg.start_soon(reviewer)
        for _ in range(rounds):
            for case, dispatcher in dispatchers.items():
                iterations = n // 4 if "approval," in case else n
                run = functools.partial(dispatcher.dispatch, invocation)
                best[case] = min(best[case], await per_call_us(run, iterations))
        tg.cancel_scope.cancel()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    args = parser.parse_args()
    n, rounds = (2_000, 3) if args.quick else (10_000, 10)
    results = {b: anyio.run(measure, n, rounds, backend=b) for b in ("asyncio", "trio")}
    print(f"{'case':36} {'asyncio us':>11} {'added':>8} {'trio us':>9} {'added':>8}")
    for case in results["asyncio"]:
        row = f"{case:36}"
        for backend in ("asyncio", "trio"):
            value = results[backend][case]
            added = value - results[backend]["no hooks"]
            row += f" {value:10.2f} {'' if case == 'no hooks' else f'{added:+8.2f}':>8}"
        print(row)
    out = Path(__file__).parent / "results" / "gates.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({
        "unit": "microseconds of event-loop thread CPU time per invocation (best round)",
        "iterations": n, "rounds": rounds, "python": platform.python_version(),
        "results": results,
    }, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
