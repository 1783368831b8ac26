"""Best-of-rounds throughput timers shared by the single-task benchmarks."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

ROUNDS = 3  # best of three: the figures are for a quiet machine, not a loaded one


async def timed(n: int, op: Callable[[int], Awaitable[object]]) -> float:
    """Operations per second of ``n`` awaited calls of ``op(i)``, best of ``ROUNDS`` rounds
    (each round with fresh indexes, so ids never repeat)."""
    best = 0.0
    for r in range(ROUNDS):
        start = time.perf_counter()
        for i in range(r * n, (r + 1) * n):
            await op(i)
        best = max(best, n / (time.perf_counter() - start))
    return best


def timed_sync(n: int, op: Callable[[int], object]) -> float:
    """``timed`` for a plain function."""
    best = 0.0
    for r in range(ROUNDS):
        start = time.perf_counter()
        for i in range(r * n, (r + 1) * n):
            op(i)
        best = max(best, n / (time.perf_counter() - start))
    return best
