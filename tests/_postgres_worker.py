"""A child process for the multi-process PostgreSQL tests.

``hammer URL ATTEMPTS``: print ``ready``, wait for a line on stdin, then try ``ATTEMPTS``
reserve + commit rounds of one call and one cent from 10 concurrent tasks, and print how many
were admitted. ``hold URL``: commit 2 calls, hold 7 more under a 60 s lease, print ``held``,
then wait forever (the parent kills it with SIGKILL).
"""

from __future__ import annotations

import sys
import uuid
from decimal import Decimal

import anyio

from outlay.stores import PostgresStore


async def hammer(url: str, attempts: int) -> None:
    store = PostgresStore.from_url(url)
    print("ready", flush=True)
    sys.stdin.readline()
    admitted = 0

    async def one() -> None:
        nonlocal admitted
        rid = uuid.uuid4().hex
        answer = await store.reserve(rid, {"calls": 1, "usd": Decimal("0.01")}, lease=60)
        if answer.admitted:
            admitted += 1
            assert await store.commit(rid)

    async with anyio.create_task_group() as tg:
        for _ in range(attempts):
            tg.start_soon(one)
    await store.aclose()
    print(admitted, flush=True)


async def hold(url: str) -> None:
    store = PostgresStore.from_url(url)
    assert (await store.reserve("spent", {"calls": 2}, lease=60)).admitted
    assert await store.commit("spent")
    assert (await store.reserve("held", {"calls": 7}, lease=60)).admitted
    print("held", flush=True)
    await anyio.sleep_forever()


if __name__ == "__main__":
    if sys.argv[1] == "hammer":
        anyio.run(hammer, sys.argv[2], int(sys.argv[3]))
    else:
        anyio.run(hold, sys.argv[2])
