"""One failover scenario for every replicated Redis topology (a cluster, Sentinel).

``run_through_failover`` builds a budget state on ``store``, waits until the replica has it all
(``replicate``), then kills the master (``kill``) while an application reserves and commits, and
asserts what the application sees and what is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING

import anyio

from outlay import KeyedBudget, Reservation, ReservationError, StoreUnavailable

if TYPE_CHECKING:
    from outlay.stores._redis import RedisStore


async def run_through_failover(store: RedisStore, *, replicate: Callable[[], None],
                               kill: Callable[[], tuple[int, int]]) -> None:
    """What an application sees when the master holding its namespace dies: operations raise
    ``StoreUnavailable`` (budgets fail closed) until the replica takes over, then succeed again
    on the same store, with no restart. What was replicated before the crash is kept: spend,
    live holds and the memory of ended ids."""
    budget = KeyedBudget(store)
    await budget.set_limit("usd", Decimal("10"))
    await budget.set_limit("stream", 1_000_000)
    for _ in range(3):
        async with budget.reserve({"usd": Decimal("1.25")}) as spent:
            await spent.commit()
    held = await budget.reserve({"usd": Decimal("2")}, lease=600)
    released = await budget.reserve({"usd": Decimal("0.5")})
    await released.release()
    ended = released.id
    await anyio.to_thread.run_sync(replicate)  # all of it is on the replica

    outcomes = {"ok": 0, "unavailable": 0, "ok_after": 0}
    failed_over = anyio.Event()
    stop = anyio.Event()

    unsettled: list[Reservation] = []  # commits whose outcome is unknown

    async def stream() -> None:  # an application working through the failover
        while not stop.is_set():
            try:
                reservation = await budget.try_reserve({"stream": 1})
            except StoreUnavailable:
                outcomes["unavailable"] += 1
                await anyio.sleep(0.02)
                continue
            assert reservation is not None
            try:
                await reservation.commit()
            except StoreUnavailable:
                outcomes["unavailable"] += 1
                unsettled.append(reservation)  # retried later, never released
                continue
            outcomes["ok_after" if failed_over.is_set() else "ok"] += 1
            if outcomes["ok_after"] >= 20:
                stop.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(stream)
        with anyio.fail_after(90):
            while outcomes["ok"] < 20:  # noqa: ASYNC110 - until the stream runs
                await anyio.sleep(0.01)
            old, new = await anyio.to_thread.run_sync(kill)
            failed_over.set()
            await stop.wait()
    assert new != old
    assert outcomes["unavailable"] > 0  # the failover window, seen as StoreUnavailable
    assert outcomes["ok_after"] >= 20  # and the same store works again afterwards

    usd = await store.usage("usd")  # what was replicated before the crash is kept
    assert (usd.spent, usd.held) == (Decimal("3.75"), Decimal("2"))
    assert await store.release(ended) is False  # ended ids are still remembered
    await held.commit({"usd": Decimal("1.5")})  # a hold from before the crash settles
    usd = await store.usage("usd")
    assert (usd.spent, usd.held) == (Decimal("5.25"), Decimal("0"))
    # The stream: a commit that failed is retried once the replica serves (idempotent by
    # id: it counts once). What the old master acknowledged but had not replicated may be
    # lost (replication is asynchronous), a hold included; the call in flight at the crash
    # may have run without an answer (a hold then waits for its lease).
    settled = 0
    for reservation in unsettled:
        try:
            await reservation.commit()
            settled += 1
        except ReservationError:  # its hold was never replicated: nothing to settle
            await reservation.release()
    stream_usage = await store.usage("stream")
    assert outcomes["ok_after"] + settled <= stream_usage.spent
    assert stream_usage.spent <= outcomes["ok"] + outcomes["ok_after"] + len(unsettled)
    assert stream_usage.held <= 1
