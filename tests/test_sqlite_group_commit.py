"""Group commit in the SQLite store: operations of one process that arrive while one is in the
worker thread share the next transaction, each still all-or-nothing (without savepoints: one
that fails after it wrote rolls the transaction back and the others run again).

The interleaving is forced: another connection holds the file's write lock, or an operation
blocks the worker thread on a gate, so the first operation waits in the worker thread while
the others queue behind it. Failures part-way are real SQLite errors, raised by triggers."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import closing
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest

from outlay import ReservationError, StoreError, StoreUnavailable, UnknownLimit
from outlay.stores import SQLiteStore

from .test_sqlite_store import write_lock

pytestmark = pytest.mark.anyio


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "b.db"


@pytest.fixture
async def store(db: Path) -> AsyncIterator[SQLiteStore]:
    opened = SQLiteStore(db)
    yield opened
    await opened.aclose()


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of operations in every worker-thread hop (one transaction each)."""
    sizes: list[int] = []
    real = SQLiteStore._call

    def spy(self: SQLiteStore, items: list[Any], *rest: Any, **options: Any) -> None:
        real(self, items, *rest, **options)
        sizes.append(len(items))  # with those it took in while it ran

    monkeypatch.setattr(SQLiteStore, "_call", spy)
    return sizes


async def test_queued_operations_share_one_transaction(
    db: Path, store: SQLiteStore, hops: list[int]
) -> None:
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
    assert hops[-1] == 20  # the first waited for the lock; the 19 queued behind it joined
    assert sorted(admitted) == [False] * 5 + [True] * 15  # never over the cap
    assert (await store.usage("calls")).held == 15
    assert await store.held_reservations() == 15


async def test_a_failing_operation_fails_alone_in_a_shared_transaction(
    db: Path, store: SQLiteStore, hops: list[int]
) -> None:
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
    assert hops[-1] == 6
    assert outcomes["unit"] is TypeError
    assert outcomes["unknown"] is ReservationError
    assert outcomes["nolimit"] is UnknownLimit
    assert outcomes["commit"] is True
    assert getattr(outcomes["ok"], "admitted", None) is True
    calls, usd = await store.usage("calls"), await store.usage("usd")
    assert (calls.spent, calls.held) == (1, 2)  # "held" settled, "ok" holds, "unit" nothing
    assert (usd.spent, usd.held) == (Decimal("0.25"), 0)


def sql(db: Path, statement: str) -> None:
    with closing(sqlite3.connect(db, isolation_level=None)) as raw:
        raw.execute(statement)


async def outcome(work: Awaitable[Any]) -> Any:
    """The result of ``work``, or the type of the exception it raised."""
    try:
        return await work
    except Exception as exc:
        return type(exc)


async def run_batch(db: Path, first: Awaitable[Any],
                    queued: dict[str, Callable[[], Awaitable[Any]]]) -> dict[str, Any]:
    """Run ``first`` alone (it waits for another connection's write lock), queue every one of
    ``queued`` behind it, in order, then let the lock go: they share the next transaction."""
    outcomes: dict[str, Any] = {}

    async def run(name: str, work: Callable[[], Awaitable[Any]]) -> None:
        outcomes[name] = await outcome(work())

    with write_lock(db) as raw:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, "first", lambda: first)
            await anyio.wait_all_tasks_blocked()
            for name, work in queued.items():
                tg.start_soon(run, name, work)
                await anyio.wait_all_tasks_blocked()  # queued in this order
            raw.execute("COMMIT")
    return outcomes


async def test_one_that_fails_after_it_wrote_is_undone_and_the_others_run_again(
    db: Path, store: SQLiteStore, hops: list[int]
) -> None:
    # The commit of "bad" deletes its hold, then its history row is refused (a trigger): the
    # shared transaction is rolled back, "bad" fails alone with its hold intact, and every
    # other operation runs again and counts exactly once.
    await store.set_limit("calls", 10)
    for rid in ("bad", "good"):
        await store.reserve(rid, {"calls": 1}, lease=60)
    sql(db, "CREATE TRIGGER refuse BEFORE INSERT ON endings WHEN NEW.rid = 'bad' "
            "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END")
    got = await run_batch(db, store.set_limit("other", 1), {
        "before": lambda: store.reserve("before", {"calls": 2}, lease=60),
        "bad": lambda: store.commit("bad"),
        "good": lambda: store.commit("good"),
        "after": lambda: store.reserve("after", {"calls": 3}, lease=60),
    })
    assert hops[-1] == 5  # one hop for all; inside it, two transactions
    assert got["bad"] is StoreError
    assert got["good"] is True
    assert got["before"].admitted
    assert got["after"].admitted
    calls = await store.usage("calls")
    assert (calls.spent, calls.held) == (1, 1 + 2 + 3)  # "good" spent; bad, before, after
    assert {h.rid for h in await store.holds()} == {"bad", "before", "after"}
    sql(db, "DROP TRIGGER refuse")
    assert await store.commit("bad") is True  # its hold was kept: it can still end
    assert (await store.usage("calls")).spent == 2


async def test_a_failing_shared_step_is_run_again_alone_by_each_operation(
    db: Path, store: SQLiteStore, hops: list[int]
) -> None:
    # Writing back one limit's figures fails (a trigger), which happens after every operation
    # of the transaction ran: each runs again in a transaction of its own, so only the one
    # that touches that limit fails, and nothing of it was kept.
    await store.set_limit("calls", 10)
    await store.set_limit("poison", 10)
    sql(db, "CREATE TRIGGER refuse BEFORE UPDATE OF held ON limits WHEN NEW.key = 'poison' "
            "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END")
    got = await run_batch(db, store.set_limit("other", 1), {
        "a": lambda: store.reserve("a", {"calls": 1}, lease=60),
        "p": lambda: store.reserve("p", {"poison": 1, "calls": 1}, lease=60),
        "b": lambda: store.reserve("b", {"calls": 2}, lease=60),
    })
    assert hops[-1] == 4
    assert got["p"] is StoreError
    assert got["a"].admitted
    assert got["b"].admitted
    assert {h.rid for h in await store.holds()} == {"a", "b"}
    assert (await store.usage("calls")).held == 3
    assert (await store.usage("poison")).held == 0


async def test_operations_in_one_transaction_see_those_before_them(
    db: Path, store: SQLiteStore, hops: list[int]
) -> None:
    # The figures of reserve/commit are kept in memory and written once per transaction; a read
    # or a cap change in the same transaction sees them, and what comes after sees the cap.
    await store.set_limit("calls", 5)
    got = await run_batch(db, store.set_limit("other", 1), {
        "a": lambda: store.reserve("a", {"calls": 3}, lease=60),
        "seen": lambda: store.usage("calls"),
        "cap": lambda: store.set_limit("calls", 10),
        "b": lambda: store.reserve("b", {"calls": 5}, lease=60),
        "c": lambda: store.reserve("c", {"calls": 3}, lease=60),
        "end": lambda: store.commit("a", {"calls": 1}),
        "last": lambda: store.usage("calls"),
    })
    assert hops[-1] == 8
    assert got["seen"].held == 3
    assert got["b"].admitted  # 3 + 5 <= 10: the new cap counts at once
    assert not got["c"].admitted  # 3 + 5 + 3 > 10
    assert got["end"] is True
    last = got["last"]
    assert (last.cap, last.spent, last.held) == (10, 1, 5)
    assert await store.usage("calls") == last  # as committed


async def test_another_process_holding_the_lock_past_the_timeout_fails_the_batch_untouched(
    tmp_path: Path, hops: list[int]
) -> None:
    db = tmp_path / "b.db"
    # The busy timeout leaves the three others time to queue behind the first on a loaded
    # machine (0.1 s failed there once).
    store = SQLiteStore(db, busy_timeout=0.5)
    try:
        await store.set_limit("calls", 5)
        await store.reserve("held", {"calls": 1}, lease=60)
        got: dict[str, Any] = {}

        async def run(name: str, work: Awaitable[Any]) -> None:
            got[name] = await outcome(work)

        with write_lock(db):  # never let go while the store tries
            async with anyio.create_task_group() as tg:
                tg.start_soon(run, "first", store.reserve("first", {"calls": 1}, lease=60))
                await anyio.wait_all_tasks_blocked()
                tg.start_soon(run, "r", store.reserve("r", {"calls": 1}, lease=60))
                tg.start_soon(run, "c", store.commit("held"))
                tg.start_soon(run, "u", store.usage("calls"))
        assert hops[-1] == 3
        assert got == {"first": StoreUnavailable, "r": StoreUnavailable,
                       "c": StoreUnavailable, "u": StoreUnavailable}
        calls = await store.usage("calls")
        assert (calls.spent, calls.held) == (0, 1)
        assert await store.commit("held") is True  # usable again, nothing half-done
    finally:
        await store.aclose()


async def test_cancelled_while_its_shared_transaction_is_in_flight(
    tmp_path: Path, hops: list[int]
) -> None:
    # The caller of "a" is cancelled after its batch reached the worker thread (a gate holds
    # the thread inside that transaction): the transaction still commits, "a" is held, and the
    # caller sees the cancellation once it is over. "queued", cancelled before any hop took
    # it, never reaches the database.
    db = tmp_path / "b.db"
    store = SQLiteStore(db)
    first, first_gate = threading.Event(), threading.Event()
    inside, gate = threading.Event(), threading.Event()
    try:
        await store.set_limit("calls", 5)
        scope, queued_scope = anyio.CancelScope(), anyio.CancelScope()
        got: dict[str, Any] = {}

        def blocker(entered: threading.Event, until: threading.Event) -> Callable[[Any], None]:
            def op(tx: Any) -> None:
                entered.set()
                until.wait(10)

            return op

        async def reserve(name: str, within: anyio.CancelScope | None = None) -> None:
            with within or anyio.CancelScope():
                got[name] = await store.reserve(name, {"calls": 1}, lease=60)

        async with anyio.create_task_group() as tg:
            tg.start_soon(store._run, blocker(first, first_gate))
            await anyio.to_thread.run_sync(first.wait)  # the worker is held in the first hop
            tg.start_soon(reserve, "a", scope)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(store._run, blocker(inside, gate))
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(reserve, "b")
            await anyio.wait_all_tasks_blocked()
            first_gate.set()  # the first blocker ends; its hop takes a, the second blocker, b
            await anyio.to_thread.run_sync(inside.wait)
            tg.start_soon(reserve, "queued", queued_scope)  # behind the hop in flight
            await anyio.wait_all_tasks_blocked()
            scope.cancel()
            queued_scope.cancel()
            await anyio.wait_all_tasks_blocked()
            assert "b" not in got  # the hop with "a" in it is still in the worker thread
            gate.set()
        assert hops[-1] == 4  # both blockers, a and b; not "queued"
        assert scope.cancelled_caught
        assert queued_scope.cancelled_caught
        assert "a" not in got
        assert got["b"].admitted
        assert {h.rid for h in await store.holds()} == {"a", "b"}  # "a" took effect
        with pytest.raises(ReservationError, match="unknown"):
            await store.commit("queued")
    finally:
        first_gate.set()
        gate.set()
        await store.aclose()


async def test_operations_queued_while_a_transaction_runs_join_it(
    tmp_path: Path, hops: list[int]
) -> None:
    # A gate holds the worker thread inside a transaction; operations queued meanwhile are
    # taken into that transaction when the gate opens (one hop, one commit), and each caller
    # gets its own answer.
    db = tmp_path / "b.db"
    store = SQLiteStore(db)
    entered, gate = threading.Event(), threading.Event()
    try:
        await store.set_limit("calls", 2)
        got: dict[str, Any] = {}

        def blocker(tx: Any) -> str:
            entered.set()
            gate.wait(10)
            return "blocker"

        async def run(name: str, work: Callable[[], Awaitable[Any]]) -> None:
            got[name] = await outcome(work())

        async with anyio.create_task_group() as tg:
            tg.start_soon(run, "blocker", lambda: store._run(blocker))
            await anyio.to_thread.run_sync(entered.wait)
            for n in range(3):
                tg.start_soon(run, f"r{n}", lambda n=n: store.reserve(f"r{n}", {"calls": 1},
                                                                       lease=60))
                await anyio.wait_all_tasks_blocked()  # queued in this order
            tg.start_soon(run, "bad", lambda: store.commit("never"))
            await anyio.wait_all_tasks_blocked()
            gate.set()
        assert hops[-1] == 5  # the blocker's hop took the four queued behind it
        assert got["blocker"] == "blocker"
        assert [got[f"r{n}"].admitted for n in range(3)] == [True, True, False]
        assert got["bad"] is ReservationError
        assert (await store.usage("calls")).held == 2
    finally:
        gate.set()
        await store.aclose()
