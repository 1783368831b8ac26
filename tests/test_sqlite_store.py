"""What only the SQLite store promises: durability, several processes on one file, a busy
database that waits, cancellation that leaves the database consistent, errors mapped at one
boundary, the WAL checkpointed apart from the operations. The shared contract is in
``test_store_behaviour.py``, which runs on SQLite too."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import closing, contextmanager
from decimal import Decimal
from pathlib import Path

import anyio
import anyio.abc
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream
from structlog.testing import capture_logs

import outlay
from outlay import (
    ConfigurationError,
    KeyedBudget,
    ReservationError,
    StoreError,
    StoreUnavailable,
    UnknownLimit,
    store_from_url,
)
from outlay.stores import SQLiteStore, _sqlite
from outlay.stores._sqlite import _PRUNE_EVERY, _Checkpointer

pytestmark = pytest.mark.anyio

WORKER = Path(__file__).with_name("_sqlite_worker.py")
SRC = Path(outlay.__file__).resolve().parents[1]
# The child processes are under test, not the parent's event loop.
ONLY_ASYNCIO = pytest.mark.parametrize("anyio_backend", ["asyncio"])


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "budgets.db"


@pytest.fixture
async def store(db: Path) -> AsyncIterator[SQLiteStore]:
    opened = SQLiteStore(db)
    yield opened
    await opened.aclose()


@contextmanager
def write_lock(db: Path) -> Iterator[sqlite3.Connection]:
    """Hold the database's write lock from another connection, as another process would."""
    with closing(sqlite3.connect(db, isolation_level=None)) as raw:
        raw.execute("BEGIN IMMEDIATE")
        try:
            yield raw
        finally:
            if raw.in_transaction:
                raw.execute("ROLLBACK")


def raw_rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(db)) as raw:
        return raw.execute(sql).fetchall()


# -- URLs and imports -------------------------------------------------------------------------


def test_urls_name_relative_and_absolute_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    relative = store_from_url("sqlite:///relative.db")
    assert isinstance(relative, SQLiteStore)
    assert relative.path == "relative.db"
    absolute = store_from_url(f"sqlite:///{tmp_path}/abs.db")  # four slashes: /tmp/...
    assert isinstance(absolute, SQLiteStore)
    assert absolute.path == f"{tmp_path}/abs.db"


async def test_a_relative_path_is_fixed_when_the_store_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = store_from_url("sqlite:///here.db")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    await store.set_limit("calls", 1)
    await store.aclose()
    assert (tmp_path / "here.db").exists()
    assert not (tmp_path / "elsewhere" / "here.db").exists()


async def test_memory_url_is_a_private_database() -> None:
    store = store_from_url("sqlite:///:memory:")
    await store.set_limit("calls", 2)
    assert (await store.reserve("r", {"calls": 2}, lease=60)).admitted
    assert (await store.usage("calls")).held == 2
    await store.aclose()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "sqlite://host/x.db",
                                 "sqlite:///x.db?mode=ro"])
def test_bad_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigurationError):
        store_from_url(url)


def test_import_outlay_imports_no_sqlite() -> None:
    code = ("import sys, outlay, outlay.stores; "
            "assert 'sqlite3' not in sys.modules, 'sqlite3'; "
            "assert 'outlay.stores._sqlite' not in sys.modules; "
            "outlay.stores.SQLiteStore; assert 'sqlite3' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ,
                   "PYTHONPATH": str(SRC)})


# -- durability -------------------------------------------------------------------------------


async def test_state_survives_a_restart(db: Path) -> None:
    first = SQLiteStore(db)
    await first.set_limit("usd", Decimal("10.00"))
    await first.set_limit("calls", 100)
    await first.reserve("spent", {"usd": Decimal("1.25"), "calls": 1}, lease=60)
    await first.commit("spent", {"usd": Decimal("1.3333")})
    await first.reserve("given-back", {"usd": Decimal("2")}, lease=60)
    await first.release("given-back")
    await first.reserve("open", {"usd": Decimal("0.50"), "calls": 5}, lease=600)
    await first.aclose()

    second = SQLiteStore(db)
    try:
        usd = await second.usage("usd")
        assert (usd.cap, usd.spent, usd.held) == (Decimal("10.00"), Decimal("1.3333"),
                                                 Decimal("0.50"))
        calls = await second.usage("calls")
        assert (calls.spent, calls.held) == (1, 5)
        assert await second.held_reservations() == 1
        # The history of endings survived: retries are still answered idempotently.
        assert await second.commit("spent") is False
        assert await second.release("given-back") is False
        with pytest.raises(ReservationError):
            await second.reserve("spent", {"calls": 1}, lease=60)
        # The hold made before the restart can be ended after it.
        assert await second.commit("open", {"calls": 4}) is True
        assert (await second.usage("calls")).spent == 5
        assert (await second.usage("usd")).spent == Decimal("1.8333")
    finally:
        await second.aclose()


async def test_amounts_are_stored_as_exact_text(store: SQLiteStore, db: Path) -> None:
    await store.set_limit("usd", Decimal("0.3"))
    await store.set_limit("tokens", 2**70)  # beyond SQLite's 64-bit INTEGER
    for n in range(3):
        await store.reserve(f"r{n}", {"usd": Decimal("0.1"), "tokens": 2**68}, lease=60)
        await store.commit(f"r{n}")
    assert (await store.usage("usd")).spent == Decimal("0.3")
    assert (await store.usage("tokens")).spent == 3 * 2**68
    types = raw_rows(db, "SELECT DISTINCT typeof(cap), typeof(spent), typeof(held) FROM limits")
    assert types == [("text", "text", "text")]


async def test_limits_lists_a_prefix_sorted_by_key(store: SQLiteStore) -> None:
    for key in ["tenant:b/usd", "tenant:a/usd", "tenant:a/calls", "other", "tenant%/x"]:
        await store.set_limit(key, 5)
    await store.reserve("r", {"tenant:a/usd": 2}, lease=60)
    listed = await store.limits("tenant:a")
    assert [(u.key, u.held) for u in listed] == [("tenant:a/calls", 0), ("tenant:a/usd", 2)]
    assert [u.key for u in await store.limits("tenant%")] == ["tenant%/x"]  # no LIKE wildcards
    assert len(await store.limits()) == 5


async def test_expire_at_is_recorded_on_the_created_limit(store: SQLiteStore, db: Path) -> None:
    await store.reserve("r", {"usd/month:2026-11": Decimal(1)}, lease=60,
                        defaults={"usd/month:2026-11": Decimal(5)},
                        expire_at={"usd/month:2026-11": 1_796_083_200.0})
    assert raw_rows(db, "SELECT key, expire_at FROM limits") == [
        ("usd/month:2026-11", 1_796_083_200.0)]


# -- leases on the injected wall clock --------------------------------------------------------


async def test_leases_follow_the_injected_clock(db: Path) -> None:
    clock = Clock()
    store = SQLiteStore(db, clock=clock)
    try:
        await store.set_limit("calls", 5)
        await store.reserve("a", {"calls": 3}, lease=10)
        await store.reserve("b", {"calls": 2}, lease=30)
        clock.now += 10  # "a" expires exactly now
        usage = await store.usage("calls")  # a read: not swept yet, but no longer counted
        assert usage.held == 2
        assert raw_rows(db, "SELECT count(*) FROM holds") == [(2,)]
        assert await store.extend("a", 60) is False
        assert await store.extend("b", 60) is True
        clock.now += 50
        assert (await store.usage("calls")).held == 2  # "b" was extended to now+60
        # A released expired hold is over: a late commit no longer counts.
        assert await store.release("a") is False
        assert await store.commit("a") is False
        assert (await store.usage("calls")).spent == 0
    finally:
        await store.aclose()


async def test_history_is_kept_for_its_retention(db: Path) -> None:
    clock = Clock()
    store = SQLiteStore(db, clock=clock, history=3600)
    try:
        await store.set_limit("calls", 5)
        await store.reserve("old", {"calls": 1}, lease=60)
        await store.commit("old")
        clock.now += 3599
        await store.reserve("new", {"calls": 1}, lease=60)
        assert await store.commit("old") is False  # still remembered
        clock.now += _PRUNE_EVERY + 2
        await store.reserve("newer", {"calls": 1}, lease=60)
        with pytest.raises(ReservationError):
            await store.commit("old")  # forgotten after the retention
        assert await store.commit("new") is True
    finally:
        await store.aclose()


# -- a busy database, cancellation, errors ----------------------------------------------------


async def test_a_busy_database_waits_instead_of_failing(store: SQLiteStore, db: Path) -> None:
    await store.set_limit("calls", 5)
    done = anyio.Event()
    answers = []

    async def reserve() -> None:
        answers.append(await store.reserve("r", {"calls": 2}, lease=60))
        done.set()

    with write_lock(db) as raw:
        async with anyio.create_task_group() as tg:
            tg.start_soon(reserve)
            await anyio.wait_all_tasks_blocked()
            with anyio.move_on_after(0.2):
                await done.wait()
            assert not done.is_set()  # waiting for the other writer, not failing
            raw.execute("COMMIT")
    assert answers[0].admitted
    assert (await store.usage("calls")).held == 2


async def test_a_new_file_opened_by_processes_at_once_waits_for_the_one_creating_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers opening a new file together (examples/fleet.py): while one holds the write lock
    to create the schema, SQLite answers another's switch to WAL with ``SQLITE_BUSY`` at once,
    without waiting in its busy handler, and that worker died with "database is locked". The
    store tries the switch again for up to its busy timeout. Forced here: the creator's lock is
    let go only once the store has been refused."""
    path = tmp_path / "new.db"
    path.touch()  # empty, as the creator's connect leaves it
    creator = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    creator.execute("BEGIN IMMEDIATE")
    refused = threading.Event()
    pause = _sqlite._pause

    def refused_then_let_go(seconds: float) -> None:
        if not refused.is_set():
            refused.set()
            creator.execute("COMMIT")
        pause(seconds)

    monkeypatch.setattr(_sqlite, "_pause", refused_then_let_go)
    store = SQLiteStore(path)
    try:
        await store.set_limit("calls", 3)
        assert refused.is_set()
        assert (await store.reserve("r1", {"calls": 1}, lease=60)).admitted
    finally:
        await store.aclose()
        creator.close()
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_file_that_cannot_use_wal_keeps_its_mode_and_says_so(tmp_path: Path) -> None:
    """Where SQLite cannot use WAL it answers the switch with the old mode, no error (here a
    connection without locks, as on a file system without shared memory): the store goes on
    in that mode at once, without waiting out the busy timeout, and logs it."""
    path = tmp_path / "nowal.db"
    path.touch()
    store = SQLiteStore(path, busy_timeout=30)
    with closing(sqlite3.connect(f"file:{path}?nolock=1", uri=True,
                                 isolation_level=None)) as conn, capture_logs() as logs:
        started = time.monotonic()
        store._to_wal(conn)
        assert time.monotonic() - started < 5
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    assert [(e["event"], e["journal_mode"]) for e in logs] == [("outlay.sqlite.no_wal", "delete")]


async def test_busy_past_the_timeout_is_store_unavailable(db: Path) -> None:
    store = SQLiteStore(db, busy_timeout=0.05)
    try:
        await store.set_limit("calls", 5)
        with write_lock(db), pytest.raises(StoreUnavailable) as info:
            await store.reserve("r", {"calls": 1}, lease=60)
        assert isinstance(info.value.__cause__, sqlite3.OperationalError)
        assert (await store.reserve("r", {"calls": 1}, lease=60)).admitted  # usable again
    finally:
        await store.aclose()


async def test_cancelled_reserve_finishes_its_transaction(store: SQLiteStore, db: Path) -> None:
    # Guards against a worker thread abandoned mid-transaction: the caller is cancelled while
    # the store waits for the write lock; the thread still commits, then the caller sees the
    # cancellation, and the hold it made is there to retry (idempotently) or release.
    await store.set_limit("calls", 5)
    scope = anyio.CancelScope()
    done = anyio.Event()
    answers = []

    async def reserve() -> None:
        with scope:
            answers.append(await store.reserve("r", {"calls": 3}, lease=60))
        done.set()

    with write_lock(db) as raw:
        async with anyio.create_task_group() as tg:
            tg.start_soon(reserve)
            await anyio.wait_all_tasks_blocked()
            scope.cancel()
            await anyio.wait_all_tasks_blocked()
            assert not done.is_set()  # the caller waits for its transaction to finish
            raw.execute("COMMIT")
            await done.wait()
    assert scope.cancelled_caught
    assert answers == []
    assert (await store.usage("calls")).held == 3
    assert (await store.reserve("r", {"calls": 3}, lease=60)).admitted  # a retry counts once
    assert (await store.usage("calls")).held == 3
    assert await store.release("r") is True


async def test_cancelled_while_queued_behind_another_operation_does_nothing(
    store: SQLiteStore, db: Path
) -> None:
    # Operations of one store queue in the event loop for its one worker thread; one cancelled
    # there never reaches the database.
    await store.set_limit("calls", 5)
    queued = anyio.CancelScope()
    first_done = anyio.Event()

    async def first() -> None:
        assert (await store.reserve("first", {"calls": 1}, lease=60)).admitted
        first_done.set()

    async def second() -> None:
        with queued:
            await store.reserve("second", {"calls": 1}, lease=60)

    with write_lock(db) as raw:
        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(second)
            await anyio.wait_all_tasks_blocked()
            queued.cancel()
            await anyio.wait_all_tasks_blocked()
            assert not first_done.is_set()
            raw.execute("COMMIT")
    assert queued.cancelled_caught
    assert (await store.usage("calls")).held == 1
    with pytest.raises(ReservationError, match="unknown"):
        await store.commit("second")


def test_one_store_serves_successive_event_loops(db: Path) -> None:
    store = SQLiteStore(db)

    async def reserve(rid: str) -> None:
        await store.set_limit("calls", 5)
        assert (await store.reserve(rid, {"calls": 1}, lease=60)).admitted

    anyio.run(reserve, "on-asyncio", backend="asyncio")
    anyio.run(reserve, "on-trio", backend="trio")

    async def check() -> None:
        assert (await store.usage("calls")).held == 2
        await store.aclose()

    anyio.run(check)


async def test_cancelled_budget_reserve_leaves_nothing_held(store: SQLiteStore, db: Path) -> None:
    budget = KeyedBudget(store)
    await budget.set_limit("calls", 5)
    scope = anyio.CancelScope()

    async def reserve() -> None:
        with scope:
            await budget.try_reserve({"calls": 5})
        assert scope.cancelled_caught

    with write_lock(db) as raw:
        async with anyio.create_task_group() as tg:
            tg.start_soon(reserve)
            await anyio.wait_all_tasks_blocked()
            scope.cancel()
            await anyio.wait_all_tasks_blocked()
            raw.execute("COMMIT")
    assert (await store.usage("calls")).held == 0
    assert raw_rows(db, "SELECT outcome FROM endings") == [("released",)]


async def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database, just some bytes" * 100)
    store = SQLiteStore(junk)
    with pytest.raises(StoreError) as info:
        await store.set_limit("calls", 1)
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)
    await store.aclose()


async def test_a_missing_database_is_unavailable_unless_created(tmp_path: Path) -> None:
    for store in (SQLiteStore(tmp_path / "absent.db", create=False),
                  SQLiteStore(tmp_path / "no-such-dir" / "x.db")):
        with pytest.raises(StoreUnavailable):
            await store.usage("calls")
        await store.aclose()
    assert not (tmp_path / "absent.db").exists()


async def test_a_closed_store_refuses_work(store: SQLiteStore) -> None:
    await store.set_limit("calls", 1)
    await store.aclose()
    await store.aclose()  # closing twice is fine
    with pytest.raises(StoreError, match="closed"):
        await store.usage("calls")


async def test_errors_inside_a_transaction_roll_it_back(store: SQLiteStore) -> None:
    await store.set_limit("calls", 5)
    with pytest.raises(UnknownLimit):
        await store.reserve("r", {"calls": 1, "nope": 1}, lease=60)
    await store.reserve("r2", {"calls": 2}, lease=60)
    with pytest.raises(ValueError, match="does not hold"):
        await store.commit("r2", {"other": 1})
    usage = await store.usage("calls")
    assert (usage.spent, usage.held) == (0, 2)
    with pytest.raises(TypeError):
        await store.set_limit("calls", Decimal(5))


# -- several OS processes ---------------------------------------------------------------------


async def _start(*args: str) -> tuple[anyio.abc.Process, BufferedByteReceiveStream]:
    process = await anyio.open_process(
        [sys.executable, str(WORKER), *args],
        env={**os.environ, "PYTHONPATH": str(SRC)}, stderr=None)
    assert process.stdout is not None
    return process, BufferedByteReceiveStream(process.stdout)


async def _line(stream: BufferedByteReceiveStream) -> str:
    with anyio.fail_after(30):
        return (await stream.receive_until(b"\n", 1024)).decode()


@ONLY_ASYNCIO
async def test_processes_hammering_one_budget_never_over_admit(db: Path) -> None:
    setup = SQLiteStore(db)
    await setup.set_limit("calls", 60)
    await setup.set_limit("usd", Decimal("0.50"))  # binds first: 50 reservations of a cent
    await setup.aclose()
    workers = [await _start("hammer", str(db), "50") for _ in range(4)]
    for _, out in workers:
        assert await _line(out) == "ready"
    for process, _ in workers:  # all four start together
        assert process.stdin is not None
        await process.stdin.send(b"go\n")
    admitted = [int(await _line(out)) for _, out in workers]
    for process, _ in workers:
        assert await process.wait() == 0
    assert sum(admitted) == 50
    check = SQLiteStore(db)
    try:
        usd, calls = await check.usage("usd"), await check.usage("calls")
        assert (usd.spent, usd.held) == (Decimal("0.50"), Decimal(0))
        assert (calls.spent, calls.held) == (50, 0)
    finally:
        await check.aclose()


@ONLY_ASYNCIO
async def test_a_sigkilled_holder_loses_nothing_once_its_lease_expires(db: Path) -> None:
    setup = SQLiteStore(db)
    await setup.set_limit("calls", 10)
    await setup.aclose()
    process, out = await _start("hold", str(db))
    try:
        assert await _line(out) == "held"
    finally:
        process.send_signal(signal.SIGKILL)
        assert await process.wait() == -signal.SIGKILL
    now = SQLiteStore(db)
    later = SQLiteStore(db, clock=lambda: time.time() + 61)  # past the child's 60 s lease
    try:
        usage = await now.usage("calls")
        assert (usage.spent, usage.held) == (2, 7)  # the dead process's hold still counts
        assert not (await now.reserve("x", {"calls": 2}, lease=60)).admitted
        usage = await later.usage("calls")
        assert (usage.spent, usage.held) == (2, 0)  # lease over: only the hold is gone
        assert (await later.reserve("y", {"calls": 8}, lease=60)).admitted
        assert (await later.usage("calls")).available == 0
    finally:
        await now.aclose()
        await later.aclose()


async def test_an_abandoned_reservation_is_released_without_blocking(db: Path) -> None:
    store = SQLiteStore(db)
    budget = KeyedBudget(store)
    await budget.set_limit("calls", 5)
    reservation = await budget.reserve({"calls": 5})
    with pytest.warns(ResourceWarning, match="garbage-collected"):
        del reservation  # the last reference: finalised here, on this thread
    await store.aclose()  # waits for the background release
    reopened = SQLiteStore(db)
    try:
        assert (await reopened.usage("calls")).held == 0
        assert raw_rows(db, "SELECT outcome FROM endings") == [("released",)]
    finally:
        await reopened.aclose()


async def test_a_reserve_answers_for_its_id_before_its_decision(store: SQLiteStore) -> None:
    # The id is checked in the statement that inserts the hold, or after a decision that
    # inserts nothing: a held id is admitted again and an ended one refused, whether the
    # amounts would fit, not fit, or name a limit that does not exist.
    await store.set_limit("calls", 5)
    assert (await store.reserve("held", {"calls": 4}, lease=60)).admitted
    assert (await store.reserve("held", {"calls": 4}, lease=60)).admitted  # would not fit
    assert (await store.reserve("held", {"nope": 1}, lease=60)).admitted  # unknown limit
    assert (await store.reserve("held", {"calls": 1}, lease=60)).admitted  # would fit
    await store.commit("held")
    for amounts in ({"calls": 1}, {"calls": 5}, {"nope": 1}):
        with pytest.raises(ReservationError, match="already ended"):
            await store.reserve("held", amounts, lease=60)
    assert await store.release("gone") is False  # an id never seen is remembered as ended
    with pytest.raises(ReservationError, match="already ended"):
        await store.reserve("gone", {"calls": 1}, lease=60)
    usage = await store.usage("calls")
    assert (usage.spent, usage.held) == (4, 0)
    assert await store.held_reservations() == 0


async def test_the_history_records_what_each_commit_spent(db: Path) -> None:
    # A commit without ``actual`` spends what was held (the history keeps the hold's own
    # text); one with ``actual``, or one that finds a held limit gone, records what it spent.
    clock = Clock()
    store = SQLiteStore(db, clock=clock)
    try:
        await store.set_limit("calls", 10)
        await store.set_limit("usd", Decimal("1.00"))
        await store.set_limit("gone", 10)
        held: dict[str, int | Decimal] = {"calls": 2, "usd": Decimal("0.50")}
        await store.reserve("whole", held, lease=60)
        await store.reserve("part", held, lease=60)
        await store.reserve("late", {"calls": 1, "gone": 1}, lease=5)
        assert await store.commit("whole") is True
        assert await store.commit("part", {"usd": Decimal("0.25")}) is True
        clock.now += 10  # "late" expires, then its limit "gone" is dropped
        assert await store.drop_idle_limit("gone", idle=0) is True
        assert await store.commit("late") is True
        spent = raw_rows(db, "SELECT rid, spent FROM endings")
        assert sorted(spent) == sorted({
            "whole": '{"calls": "2", "usd": "0.50"}',
            "part": '{"calls": "2", "usd": "0.25"}',
            "late": '{"calls": "1"}',
        }.items())
        assert (await store.usage("calls")).spent == 5
        assert (await store.usage("usd")).spent == Decimal("0.75")
    finally:
        await store.aclose()


# -- the WAL checkpoint: apart from the operations ---------------------------------------------
# What a checkpoint did is seen on the file itself: a connection opened ``immutable`` reads the
# main database file and ignores the WAL, so it sees a write only once a checkpoint copied it.
# Waits are on the checkpointer's own signal or its thread, never on a sleep.


def in_main_file(db: Path) -> list[tuple[str, str]]:
    """The limits as the main database file has them, without the WAL."""
    with closing(sqlite3.connect(f"{db.absolute().as_uri()}?mode=ro&immutable=1",
                                 uri=True)) as raw:
        try:
            return raw.execute("SELECT key, spent FROM limits ORDER BY key").fetchall()
        except sqlite3.OperationalError:  # not even the tables yet
            return []


def checkpointer(store: SQLiteStore) -> _Checkpointer:
    assert store._checkpointer is not None
    return store._checkpointer


async def wait_for_checkpoint(store: SQLiteStore) -> None:
    signal = checkpointer(store).checkpointed
    assert await anyio.to_thread.run_sync(signal.wait, 10)
    signal.clear()


async def checkpointed(store: SQLiteStore, db: Path, expected: list[tuple[str, str]]) -> None:
    """Wait for checkpoints until the main file shows ``expected``: one that began before the
    last write leaves it pending, so another follows."""
    for _ in range(5):
        await wait_for_checkpoint(store)
        if in_main_file(db) == expected:
            return
    assert in_main_file(db) == expected


async def test_writes_reach_the_database_file_through_the_checkpointer(
    db: Path, store: SQLiteStore
) -> None:
    # Guards against a WAL that only SQLite's automatic checkpoint (inside the COMMIT that
    # fills it past 1,000 pages) would copy: the store's own connection puts it off.
    await store.set_limit("calls", 10)
    await checkpointed(store, db, [("calls", "0")])
    await store.reserve("r1", {"calls": 3}, lease=60)
    await store.commit("r1")
    await checkpointed(store, db, [("calls", "3")])
    with closing(sqlite3.connect(db)) as raw:  # the WAL is whole: a reader sees the same
        assert raw.execute("SELECT key, spent FROM limits").fetchall() == [("calls", "3")]


async def test_an_operation_never_checkpoints_itself(db: Path, store: SQLiteStore) -> None:
    # With the checkpointer stopped, far more than 1,000 pages of commits stay in the WAL:
    # none of the operations' COMMITs copied them into the file.
    await store.set_limit("calls", 10**9)
    checkpointer(store).stop()
    before = in_main_file(db)
    async with anyio.create_task_group() as tg:
        for task in range(20):
            async def work(task: int = task) -> None:
                for n in range(100):
                    await store.reserve(f"r{task}-{n}", {"calls": 1}, lease=60)
                    await store.commit(f"r{task}-{n}")
            tg.start_soon(work)
    assert (await store.usage("calls")).spent == 2000
    assert in_main_file(db) == before
    assert (await anyio.Path(f"{db}-wal").stat()).st_size > 1000 * 4096


async def test_the_backstop_checkpoints_a_wal_the_thread_let_grow(
    db: Path, store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Should the checkpoint thread fall behind (or be unable to start), SQLite's own checkpoint
    # still bounds the WAL, at _WAL_BACKSTOP pages (made small here: it is set on connecting).
    monkeypatch.setattr(_sqlite, "_WAL_BACKSTOP", 20)
    await store.set_limit("calls", 10**9)
    checkpointer(store).stop()
    for n in range(200):
        await store.reserve(f"r{n}", {"calls": 1}, lease=60)
        await store.commit(f"r{n}")
    assert in_main_file(db) not in ([], [("calls", "0")])  # an operation's COMMIT copied it
    assert (await anyio.Path(f"{db}-wal").stat()).st_size < 200 * 4096


async def test_a_checkpoint_thread_that_cannot_start_fails_no_operation(
    db: Path, store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # After the COMMIT nothing may fail an operation or run it again: a transaction that had
    # committed used to be treated as failed when the thread could not start, so every one of
    # its operations ran again alone (a commit then answered False, appended events twice).
    start = threading.Thread.start

    def no_checkpoint_thread(thread: threading.Thread) -> None:
        if thread.name == "outlay-sqlite-checkpoint":
            raise RuntimeError("can't start new thread")
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", no_checkpoint_thread)
    await store.set_limit("calls", 100)
    for n in range(10):
        assert (await store.reserve(f"r{n}", {"calls": 1}, lease=60)).admitted
    committed: list[bool] = []
    async with anyio.create_task_group() as tg:  # one transaction for the ten commits
        for n in range(10):
            async def commit(n: int = n) -> None:
                committed.append(await store.commit(f"r{n}"))
            tg.start_soon(commit)
    assert committed == [True] * 10
    assert await store.commit("r0") is False  # a retry now
    usage = await store.usage("calls")
    assert (usage.spent, usage.held) == (10, 0)
    assert checkpointer(store)._thread is None  # none runs; the next write tries again


async def test_closing_stops_the_checkpointer_and_removes_the_wal(db: Path) -> None:
    store = SQLiteStore(db)
    await store.set_limit("calls", 10)
    await wait_for_checkpoint(store)
    thread = checkpointer(store)._thread
    await store.aclose()
    assert thread is None or not thread.is_alive()  # joined by aclose
    # The store's connection closed last: it checkpointed what was left and removed the WAL.
    assert sorted(p.name for p in db.parent.iterdir()) == ["budgets.db"]
    assert in_main_file(db) == [("calls", "0")]


async def test_an_idle_checkpointer_ends_and_the_next_write_starts_another(
    db: Path, store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_sqlite, "_CHECKPOINT_IDLE", 0.01)
    await store.set_limit("calls", 10)
    await wait_for_checkpoint(store)
    first = checkpointer(store)._thread
    assert first is not None
    await anyio.to_thread.run_sync(first.join, 10)
    assert not first.is_alive()
    await store.set_limit("calls", 20)
    await wait_for_checkpoint(store)
    second = checkpointer(store)._thread
    assert second is not None
    assert second is not first
    assert in_main_file(db) == [("calls", "0")]
    with closing(sqlite3.connect(db)) as raw:
        assert raw.execute("SELECT cap FROM limits").fetchall() == [("20",)]


async def test_a_memory_store_has_no_checkpointer() -> None:
    store = SQLiteStore(":memory:")
    await store.set_limit("calls", 1)
    assert store._checkpointer is None
    await store.aclose()
