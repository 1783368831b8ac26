"""Group commit in the SQLite store: operations of one process that arrive while one is in the
worker thread share the next transaction, each still all-or-nothing in its own savepoint.

The interleaving is forced: another connection holds the file's write lock, so the first
operation waits in the worker thread while the others queue behind it."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest

from outlay import ReservationError, UnknownLimit
from outlay.stores import SQLiteStore

from .test_sqlite_store import write_lock

pytestmark = pytest.mark.anyio


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of operations in every worker-thread hop (one transaction each)."""
    sizes: list[int] = []
    real = SQLiteStore._call

    def spy(self: SQLiteStore, items: list[Any]) -> None:
        sizes.append(len(items))
        real(self, items)

    monkeypatch.setattr(SQLiteStore, "_call", spy)
    return sizes


async def test_queued_operations_share_one_transaction(tmp_path: Path, hops: list[int]) -> None:
    db = tmp_path / "b.db"
    store = SQLiteStore(db)
    try:
        await store.set_limit("calls", 15)
        admitted: list[bool] = []

        async def reserve(n: int) -> None:
            admitted.append((await store.reserve(f"r{n}", {"calls": 1}, lease=60)).admitted)

        with write_lock(db) as raw:
            async with anyio.create_task_group() as tg:
                for n in range(20):
                    tg.start_soon(reserve, n)
                await anyio.wait_all_tasks_blocked()  # one waits for the lock, 19 are queued
                raw.execute("COMMIT")
        assert hops[-2:] == [1, 19]  # the first ran alone; the 19 queued behind it shared one
        assert sorted(admitted) == [False] * 5 + [True] * 15  # never over the cap
        assert (await store.usage("calls")).held == 15
        assert await store.held_reservations() == 15
    finally:
        await store.aclose()


async def test_a_failing_operation_fails_alone_in_a_shared_transaction(
    tmp_path: Path, hops: list[int]
) -> None:
    db = tmp_path / "b.db"
    store = SQLiteStore(db)
    try:
        await store.set_limit("calls", 5)
        await store.set_limit("usd", Decimal(5))
        await store.reserve("held", {"calls": 1, "usd": Decimal(1)}, lease=60)
        outcomes: dict[str, object] = {}

        async def run(name: str, work: Any) -> None:
            try:
                outcomes[name] = await work
            except Exception as exc:  # each caller gets its own outcome
                outcomes[name] = type(exc)

        with write_lock(db) as raw:
            async with anyio.create_task_group() as tg:
                tg.start_soon(run, "first", store.set_limit("other", 1))  # waits for the lock
                await anyio.wait_all_tasks_blocked()
                tg.start_soon(run, "ok", store.reserve("ok", {"calls": 2}, lease=60))
                tg.start_soon(run, "unit", store.reserve("unit", {"calls": Decimal("0.5"),
                                                                  "usd": Decimal(1)}, lease=60))
                tg.start_soon(run, "unknown", store.commit("never"))
                tg.start_soon(run, "nolimit", store.reserve("x", {"nope": 1}, lease=60))
                tg.start_soon(run, "commit", store.commit("held", {"usd": Decimal("0.25")}))
                await anyio.wait_all_tasks_blocked()
                raw.execute("COMMIT")
        assert hops[-2:] == [1, 5]
        assert outcomes["unit"] is TypeError
        assert outcomes["unknown"] is ReservationError
        assert outcomes["nolimit"] is UnknownLimit
        assert outcomes["commit"] is True
        assert getattr(outcomes["ok"], "admitted", None) is True
        calls, usd = await store.usage("calls"), await store.usage("usd")
        assert (calls.spent, calls.held) == (1, 2)  # "held" settled, "ok" holds, "unit" nothing
        assert (usd.spent, usd.held) == (Decimal("0.25"), 0)
    finally:
        await store.aclose()
