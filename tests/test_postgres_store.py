"""What only the PostgreSQL store promises: URLs and options, a schema of its own (refusing one
that is not, migrating an old one), exact NUMERIC money, leases on the server's clock, a lock
order that cannot deadlock, cancellation that leaves the database consistent, lost connections,
several processes (one SIGKILLed). The shared contract is in ``test_store_behaviour.py``, which
runs on PostgreSQL too; the differential test is ``test_postgres_model.py``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

import outlay
from outlay import (
    Budget,
    ConfigurationError,
    KeyedBudget,
    ReservationError,
    StoreError,
    StoreUnavailable,
    store_from_url,
)

from .pgserver import PostgresServer, drop_schema, free_port, fresh_schema
from .storekit import postgres_store_at

psycopg = pytest.importorskip("psycopg", reason="the psycopg driver is not installed "
                                                 "(outlay[postgresql])")

from outlay.stores import PostgresStore, _postgres  # noqa: E402 - after the driver check

pytestmark = pytest.mark.anyio

WORKER = Path(__file__).with_name("_postgres_worker.py")
SRC = Path(outlay.__file__).resolve().parents[1]
# The child processes are under test, not the parent's event loop.
ONLY_ASYNCIO = pytest.mark.parametrize("anyio_backend", ["asyncio"])


@pytest.fixture
async def store(postgres_server: PostgresServer) -> AsyncIterator[PostgresStore]:
    async with postgres_store_at(postgres_server) as opened:
        yield opened


@pytest.fixture
def schema(postgres_server: PostgresServer) -> Iterator[str]:
    """A schema name of this test's own, dropped afterwards (created by whoever uses it)."""
    name = fresh_schema()
    yield name
    drop_schema(postgres_server.url, name)


def raw(server: PostgresServer) -> Any:
    return psycopg.connect(server.url, autocommit=True)


def rows(server: PostgresServer, sql: str, *params: object) -> list[tuple[Any, ...]]:
    with raw(server) as conn:
        return list(conn.execute(sql, params).fetchall())


@contextmanager
def key_locked(server: PostgresServer, store: PostgresStore, key: str) -> Iterator[Any]:
    """Hold the advisory lock the store takes for ``key``, as another process in the middle of
    an operation on that limit would; yields the raw connection (unlock to let the store on)."""
    with raw(server) as conn:
        conn.execute("SELECT pg_advisory_lock(%s, %s)",
                     (store._schema_lock, _postgres._lock_id(key)))
        yield conn


def unlock(conn: Any, store: PostgresStore, key: str) -> None:
    conn.execute("SELECT pg_advisory_unlock(%s, %s)", (store._schema_lock, _postgres._lock_id(key)))


# -- URLs, options, imports -------------------------------------------------------------------


async def test_urls_and_budget_open_a_postgres_store(
    postgres_server: PostgresServer, schema: str
) -> None:
    url = postgres_server.schema_url(schema).replace("postgresql://", "postgres://")
    store = store_from_url(f"{url}&pool_size=3&application_name=outlay-url-test")
    assert isinstance(store, PostgresStore)
    assert (store.schema, store._pool_size) == (schema, 3)
    budget = Budget(requests=2, store=postgres_server.schema_url(schema), principal="agent:a")
    try:
        async with budget.reserve({"requests": 2}) as held:
            await held.commit()
        [key] = held.keys
        assert (await store.usage(key)).spent == 2  # the same schema through both
        seen = rows(postgres_server, "SELECT count(*) FROM pg_stat_activity "
                    "WHERE application_name = 'outlay-url-test'")
        assert seen == [(1,)]  # libpq options pass through
    finally:
        await store.aclose()
        await budget.aclose()


@pytest.mark.parametrize("url", [
    "postgresql://h/db?schema=1bad", "postgresql://h/db?schema=a-b", "postgresql://h/db?pool_size=0",
    "postgresql://h/db?pool_size=x", "postgresql://h/db?history=-1", "postgresqlx://h/db",
])
def test_bad_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigurationError):
        PostgresStore.from_url(url)


def test_errors_and_repr_never_show_the_password() -> None:
    store = PostgresStore.from_url("postgresql://u:s3cret@127.0.0.1:1/db")
    assert "s3cret" not in repr(store)
    with pytest.raises(ConfigurationError) as info:
        PostgresStore.from_url("postgresql://u:s3cret@127.0.0.1:1/db?pool_size=x")
    assert "s3cret" not in str(info.value)


def test_a_misspelled_option_is_refused_without_its_value() -> None:
    # the value of a misspelled option may be a credential: before, it was kept in the
    # connection string and shown by repr(store)
    with pytest.raises(ConfigurationError) as info:
        PostgresStore.from_url("postgresql://u:s3cret@127.0.0.1:1/db?pasword=t0psecret")
    assert "did you mean 'password'?" in str(info.value)
    assert "t0psecret" not in str(info.value)
    assert "s3cret" not in str(info.value)
    options = "sslmode=disable&keepalives=1&application_name=a&schema=s&pool_size=2"
    store = PostgresStore.from_url(f"postgresql://u@127.0.0.1:1/db?{options}")
    assert "keepalives=1" in repr(store)


def test_missing_driver_is_a_configuration_error() -> None:
    code = ("import sys; sys.modules['psycopg'] = None\n"
            "from outlay import store_from_url, ConfigurationError\n"
            "try: store_from_url('postgresql://h/db')\n"
            "except ConfigurationError as e: print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": str(SRC)})
    assert "outlay[postgresql]" in out.stdout


# -- its own schema -----------------------------------------------------------------------------


async def test_a_schema_that_is_not_ours_is_refused_untouched(
    postgres_server: PostgresServer, schema: str
) -> None:
    with raw(postgres_server) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(f'CREATE TABLE "{schema}".limits (key text, owner text)')
        conn.execute(f"INSERT INTO \"{schema}\".limits VALUES ('k', 'someone else')")
    store = PostgresStore(postgres_server.url, schema=schema)
    try:
        with pytest.raises(StoreError, match="not an outlay store"):
            await store.set_limit("k", 1)
        with pytest.raises(StoreError, match="not an outlay store"):
            await store.usage("k")
    finally:
        await store.aclose()
    assert rows(postgres_server, "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = %s", schema) == [("limits",)]
    assert rows(postgres_server, f'SELECT * FROM "{schema}".limits') == [("k", "someone else")]


async def test_a_newer_schema_is_refused_and_an_older_one_migrated(
    postgres_server: PostgresServer, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = PostgresStore(postgres_server.url, schema=schema)
    await store.set_limit("usd", Decimal("5"))
    await store.reserve("r", {"usd": Decimal("2")}, lease=60)
    await store.aclose()
    # The next outlay adds a column: its migration runs once, in one transaction; data stays.
    monkeypatch.setattr(_postgres, "SCHEMA_VERSION", 2)
    monkeypatch.setitem(_postgres._MIGRATIONS, 2, ("ALTER TABLE {s}.limits ADD COLUMN note text",))
    newer = PostgresStore(postgres_server.url, schema=schema)
    try:
        usage = await newer.usage("usd")
        assert (usage.cap, usage.held) == (Decimal("5"), Decimal("2"))
    finally:
        await newer.aclose()
    assert rows(postgres_server, f'SELECT version FROM "{schema}".meta') == [(2,)]
    assert rows(postgres_server, "SELECT column_name FROM information_schema.columns WHERE "
                "table_schema = %s AND table_name = 'limits' AND column_name = 'note'",
                schema) == [("note",)]
    # This outlay (version 1) refuses the newer schema and changes nothing in it.
    monkeypatch.setattr(_postgres, "SCHEMA_VERSION", 1)
    older = PostgresStore(postgres_server.url, schema=schema)
    try:
        with pytest.raises(StoreError, match="schema version 2"):
            await older.set_limit("usd", Decimal("9"))
    finally:
        await older.aclose()
    assert rows(postgres_server, f'SELECT cap FROM "{schema}".limits') == [(Decimal("5"),)]


async def test_held_reservations_and_limits_stay_in_their_schema(
    postgres_server: PostgresServer
) -> None:
    async with postgres_store_at(postgres_server) as one, \
            postgres_store_at(postgres_server) as other:
        await one.set_limit("calls", 5)
        await other.set_limit("calls", 5)
        await other.set_limit("other", 5)
        await one.reserve("r1", {"calls": 1}, lease=60)
        await other.reserve("r1", {"calls": 3}, lease=60)  # the same id, another schema
        await other.reserve("r2", {"calls": 1}, lease=60)
        assert await one.held_reservations() == 1
        assert await other.held_reservations() == 2
        assert [u.key for u in await one.limits()] == ["calls"]
        assert (await one.usage("calls")).held == 1


# -- exact money, the server's clock ---------------------------------------------------------------


async def test_money_is_numeric_and_exact_beyond_a_decimal_context(
    store: PostgresStore, postgres_server: PostgresServer
) -> None:
    cap = Decimal("123456789012345678901234567890.000000001")  # 39 digits, below 10**30
    await store.set_limit("usd", cap)
    assert (await store.reserve("all", {"usd": cap}, lease=60)).admitted
    refused = await store.reserve("more", {"usd": Decimal("0.000000001")}, lease=60)
    assert not refused.admitted
    await store.commit("all")
    assert (await store.usage("usd")).spent == cap
    for n in range(100):
        await store.set_limit(f"tiny{n % 2}", Decimal("1"))
    for n in range(100):
        await store.reserve(f"t{n}", {"tiny0": Decimal("0.01")}, lease=60)
        await store.commit(f"t{n}")
    assert (await store.usage("tiny0")).spent == Decimal("1.00")
    types = rows(postgres_server, "SELECT table_name, column_name, data_type FROM "
                 "information_schema.columns WHERE table_schema = %s AND column_name IN "
                 "('cap', 'spent', 'amount') ORDER BY 1, 2", store.schema)
    assert types == [("hold_items", "amount", "numeric"), ("limits", "cap", "numeric"),
                     ("limits", "spent", "numeric")]


async def test_leases_run_on_the_servers_clock(
    store: PostgresStore, postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.set_limit("calls", 5)
    # This process's clock is a day off; the lease is still 60 s on the server's clock.
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 86_400)
    await store.reserve("r", {"calls": 5}, lease=60)
    (left,), = rows(postgres_server, "SELECT expires_at - extract(epoch FROM clock_timestamp()) "
                    f'FROM "{store.schema}".reservations')
    assert 55 < left <= 60
    assert (await store.usage("calls")).held == 5


# -- locks: a fixed order, no deadlock ----------------------------------------------------------


async def test_limits_are_locked_in_one_fixed_order(
    store: PostgresStore, postgres_server: PostgresServer
) -> None:
    # Guards the deadlock-freedom argument: whatever order a reservation names its limits in,
    # the store takes their locks in sorted lock-id order, so it can wait only for a lock
    # above every lock it already holds.
    first, second = sorted(["tenant:a/usd", "tenant:a/calls", "x", "y"],
                           key=_postgres._lock_id)[:2]
    for key in (first, second):
        await store.set_limit(key, 10)
    ids = {_postgres._lock_id(k) % 2**32: k for k in (first, second)}

    def locks_of_others(me: int) -> tuple[list[str], list[str]]:
        found = rows(postgres_server, "SELECT objid::bigint, granted FROM pg_locks WHERE "
                     "locktype = 'advisory' AND classid::bigint = %s AND pid <> %s",
                     store._schema_lock % 2**32, me)
        return ([ids[o] for o, g in found if g and o in ids],
                [ids[o] for o, g in found if not g and o in ids])

    async def reserve() -> None:
        assert (await store.reserve(uuid.uuid4().hex, {second: 1, first: 1}, lease=60)).admitted

    for blocked, expect in ((second, ([first], [second])), (first, ([], [first]))):
        with key_locked(postgres_server, store, blocked) as conn:
            me = conn.info.backend_pid
            async with anyio.create_task_group() as tg:
                tg.start_soon(reserve)
                try:
                    with anyio.fail_after(10):  # until the store's transaction waits
                        while not (state := await anyio.to_thread.run_sync(  # noqa: ASYNC110
                                locks_of_others, me))[1]:  # polls the server's lock table
                            await anyio.sleep(0.01)
                finally:
                    unlock(conn, store, blocked)
                assert state == expect  # held: the locks below the one it waits for


async def test_opposite_orders_from_two_stores_never_deadlock(
    postgres_server: PostgresServer
) -> None:
    async with postgres_store_at(postgres_server) as one:
        other = PostgresStore(postgres_server.url, schema=one.schema)
        keys = [f"k{n}" for n in range(4)]
        for key in keys:
            await one.set_limit(key, 10_000)
        errors: list[BaseException] = []

        async def worker(store: PostgresStore, n: int) -> None:
            order = keys if n % 2 else keys[::-1]
            try:
                rid = f"{id(store)}-{n}"
                assert (await store.reserve(rid, dict.fromkeys(order, 1), lease=60)).admitted
                assert await store.commit(rid)
            except BaseException as exc:  # a deadlock would surface as StoreError
                errors.append(exc)

        try:
            async with anyio.create_task_group() as tg:
                for n in range(40):
                    tg.start_soon(worker, one if n < 20 else other, n)
        finally:
            await other.aclose()
        assert errors == []
        assert [(u.spent, u.held) for u in await one.limits()] == [(40, 0)] * 4


# -- cancellation, lost connections, errors --------------------------------------------------------


async def test_cancelled_reserve_finishes_its_transaction(
    store: PostgresStore, postgres_server: PostgresServer
) -> None:
    # Guards against a worker thread abandoned mid-transaction: the caller is cancelled while
    # the store waits for a limit's lock; the thread still commits, then the caller sees the
    # cancellation, and the hold it made is there to retry (idempotently) or release.
    await store.set_limit("calls", 5)
    scope = anyio.CancelScope()
    done = anyio.Event()
    answers = []

    async def reserve() -> None:
        with scope:
            answers.append(await store.reserve("r", {"calls": 3}, lease=60))
        done.set()

    with key_locked(postgres_server, store, "calls") as conn:
        async with anyio.create_task_group() as tg:
            tg.start_soon(reserve)
            await anyio.wait_all_tasks_blocked()
            scope.cancel()
            await anyio.wait_all_tasks_blocked()
            assert not done.is_set()  # the caller waits for its transaction to finish
            unlock(conn, store, "calls")
            await done.wait()
    assert scope.cancelled_caught
    assert answers == []
    assert (await store.usage("calls")).held == 3
    assert (await store.reserve("r", {"calls": 3}, lease=60)).admitted  # a retry counts once
    assert (await store.usage("calls")).held == 3
    assert await store.release("r") is True


async def test_cancelled_while_waiting_for_a_connection_does_nothing(
    postgres_server: PostgresServer
) -> None:
    async with postgres_store_at(postgres_server, pool_size=1) as store:
        await store.set_limit("calls", 5)
        queued = anyio.CancelScope()
        first_done = anyio.Event()

        async def first() -> None:
            assert (await store.reserve("first", {"calls": 1}, lease=60)).admitted
            first_done.set()

        async def second() -> None:
            with queued:
                await store.reserve("second", {"calls": 1}, lease=60)

        with key_locked(postgres_server, store, "calls") as conn:
            async with anyio.create_task_group() as tg:
                tg.start_soon(first)
                await anyio.wait_all_tasks_blocked()
                tg.start_soon(second)
                await anyio.wait_all_tasks_blocked()
                queued.cancel()
                await anyio.wait_all_tasks_blocked()
                assert not first_done.is_set()
                unlock(conn, store, "calls")
        assert queued.cancelled_caught
        assert (await store.usage("calls")).held == 1
        with pytest.raises(ReservationError, match="unknown"):
            await store.commit("second")


async def test_cancelled_budget_reserve_leaves_nothing_held(
    store: PostgresStore, postgres_server: PostgresServer
) -> None:
    budget = KeyedBudget(store)
    await budget.set_limit("calls", 5)
    scope = anyio.CancelScope()

    async def reserve() -> None:
        with scope:
            await budget.try_reserve({"calls": 5})
        assert scope.cancelled_caught

    with key_locked(postgres_server, store, "calls") as conn:
        async with anyio.create_task_group() as tg:
            tg.start_soon(reserve)
            await anyio.wait_all_tasks_blocked()
            scope.cancel()
            await anyio.wait_all_tasks_blocked()
            unlock(conn, store, "calls")
    assert (await store.usage("calls")).held == 0
    assert rows(postgres_server, f'SELECT outcome FROM "{store.schema}".endings') == [
        ("released",)]


async def test_a_lost_idle_connection_is_replaced(
    postgres_server: PostgresServer, schema: str
) -> None:
    name = f"outlay-{uuid.uuid4().hex[:12]}"
    store = PostgresStore.from_url(f"{postgres_server.schema_url(schema)}&application_name={name}")
    try:
        await store.set_limit("calls", 5)
        killed = rows(postgres_server, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE application_name = %s", name)
        assert killed == [(True,)]
        assert (await store.reserve("r", {"calls": 1}, lease=60)).admitted  # nothing lost
        assert (await store.usage("calls")).held == 1
    finally:
        await store.aclose()


async def test_unreachable_server_fails_closed() -> None:
    store = PostgresStore.from_url(f"postgresql://postgres@127.0.0.1:{free_port()}/test"
                                   "?connect_timeout=2")
    try:
        with pytest.raises(StoreUnavailable) as info:
            await store.reserve("r", {"calls": 1}, lease=60)
        assert isinstance(info.value.__cause__, psycopg.OperationalError)
        with pytest.raises(StoreUnavailable):  # a budget on it admits nothing
            await KeyedBudget(store).reserve({"calls": 1})
    finally:
        await store.aclose()


async def test_errors_inside_a_transaction_roll_it_back(store: PostgresStore) -> None:
    await store.set_limit("calls", 5)
    await store.set_limit("usd", Decimal(5))
    await store.reserve("r", {"calls": 2, "usd": Decimal(1)}, lease=60)
    with pytest.raises(TypeError):
        await store.commit("r", {"calls": Decimal("1.5")})
    with pytest.raises(ValueError, match="does not hold"):
        await store.commit("r", {"other": 1})
    usage = await store.usage("calls")
    assert (usage.spent, usage.held) == (0, 2)
    assert (await store.usage("usd")).spent == 0
    assert await store.commit("r") is True


async def test_a_closed_store_refuses_work(store: PostgresStore) -> None:
    await store.aclose()
    with pytest.raises(StoreError, match="closed"):
        await store.usage("calls")
    await store.aclose()


async def test_an_abandoned_reservation_is_released_without_blocking(
    postgres_server: PostgresServer, schema: str
) -> None:
    store = PostgresStore(postgres_server.url, schema=schema)
    budget = KeyedBudget(store)
    await budget.set_limit("calls", 5)
    reservation = await budget.reserve({"calls": 5})
    with pytest.warns(ResourceWarning, match="garbage-collected"):
        del reservation  # the last reference: finalised here, on this thread
    await store.aclose()  # waits for the background release
    assert rows(postgres_server, f'SELECT outcome FROM "{schema}".endings') == [("released",)]
    assert rows(postgres_server, f'SELECT count(*) FROM "{schema}".hold_items') == [(0,)]


# -- group commit: concurrent operations of one store share a transaction ---------------------


async def waiting(server: PostgresServer, store: PostgresStore, count: int) -> None:
    """Until ``count`` transactions wait for advisory locks of ``store`` (polls the server)."""

    def waiters() -> int:
        [(found,)] = rows(server, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                          "AND classid::bigint = %s AND NOT granted", store._schema_lock % 2**32)
        return int(found)

    with anyio.fail_after(10):
        while await anyio.to_thread.run_sync(waiters) < count:  # noqa: ASYNC110 - polls
            await anyio.sleep(0.01)


def created(server: PostgresServer, store: PostgresStore) -> dict[str, float]:
    """Reservation id -> its ``created_at``: the clock of the transaction that made it."""
    return dict(rows(server, f'SELECT rid, created_at FROM "{store.schema}".reservations'))


async def queue(tg: anyio.abc.TaskGroup, answers: dict[str, object], name: str,
                call: Any) -> None:
    """Start ``call()`` (its answer, or its error's type, into ``answers[name]``) and wait until
    it is queued, so operations queue in the order they are started."""

    async def run() -> None:
        try:
            answers[name] = await call()
        except Exception as exc:
            answers[name] = type(exc)

    tg.start_soon(run)
    await anyio.wait_all_tasks_blocked()


async def test_queued_operations_share_one_transaction_and_fail_alone(
    store: PostgresStore, postgres_server: PostgresServer
) -> None:
    # Guards the batch's rules: operations queued while a batch is in flight run in the next
    # one together (one transaction: one clock), each deciding on the figures the earlier ones
    # left; one that is refused or raises writes nothing and fails alone.
    for key, cap in (("gate", 10), ("calls", 10), ("usd", Decimal(1))):
        await store.set_limit(key, cap)
    answers: dict[str, object] = {}
    with key_locked(postgres_server, store, "gate") as conn:
        async with anyio.create_task_group() as tg:
            await queue(tg, answers, "first",
                        lambda: store.reserve("first", {"gate": 1}, lease=60))
            await waiting(postgres_server, store, 1)  # its batch is in flight, waiting
            for name, call in [
                ("a", lambda: store.reserve("a", {"calls": 3}, lease=60)),
                ("unknown", lambda: store.commit("nobody")),
                ("unit", lambda: store.reserve("unit", {"calls": Decimal("0.5")}, lease=60)),
                ("missing", lambda: store.reserve("missing", {"calls": 1, "nope": 1}, lease=60)),
                ("refused", lambda: store.reserve("refused", {"calls": 8, "usd": Decimal(0)},
                                                  lease=60)),
                ("b", lambda: store.reserve("b", {"calls": 7, "usd": Decimal("0.25")},
                                            lease=60)),
                ("full", lambda: store.reserve("full", {"calls": 1, "period": 1}, lease=60,
                                               defaults={"period": 5})),
                ("c", lambda: store.reserve("c", {"usd": Decimal("0.5"), "period": 2},
                                            lease=60, defaults={"period": 5})),
                ("d", lambda: store.reserve("d", {"period": 4}, lease=60,
                                            defaults={"period": 5})),
            ]:
                await queue(tg, answers, name, call)
            unlock(conn, store, "gate")
    admitted = {name for name, answer in answers.items()
                if isinstance(answer, outlay.stores.Admission) and answer.admitted}
    assert admitted == {"first", "a", "b", "c"}
    assert {name: answers[name] for name in ("unknown", "unit", "missing")} == {
        "unknown": ReservationError, "unit": TypeError, "missing": outlay.UnknownLimit}
    for name in ("refused", "full", "d"):
        assert not answers[name].admitted  # type: ignore[attr-defined]
    made = created(postgres_server, store)
    assert set(made) == {"first", "a", "b", "c"}
    assert made["a"] == made["b"] == made["c"] != made["first"]  # one transaction
    usage = {u.key: (u.spent, u.held) for u in await store.limits()}
    assert usage == {"gate": (0, 1), "calls": (0, 10), "usd": (0, Decimal("0.75")),
                     "period": (0, 2)}  # made by c, not by the refused "full"


async def test_the_callers_of_a_batch_go_on_in_one_batch(
    store: PostgresStore, postgres_server: PostgresServer
) -> None:
    # Guards against batches alternating with lone transactions: when a batch answers its
    # callers, the first to call again must not start a transaction of its own before the
    # others have called again too (they all become ready at once).
    await store.set_limit("gate", 10)
    await store.set_limit("calls", 10)
    answers: dict[str, object] = {}

    async def twice(n: int) -> None:
        answers[f"{n}"] = await store.reserve(f"{n}", {"calls": 1}, lease=60)
        answers[f"{n}+"] = await store.reserve(f"{n}+", {"calls": 1}, lease=60)

    with key_locked(postgres_server, store, "gate") as gate:
        async with anyio.create_task_group() as tg:
            await queue(tg, answers, "first",
                        lambda: store.reserve("first", {"gate": 1}, lease=60))
            await waiting(postgres_server, store, 1)
            for n in range(3):
                tg.start_soon(twice, n)
                await anyio.wait_all_tasks_blocked()
            unlock(gate, store, "gate")
    made = created(postgres_server, store)
    assert made["0"] == made["1"] == made["2"]
    assert made["0+"] == made["1+"] == made["2+"] != made["0"]
    assert (await store.usage("calls")).held == 6


async def test_a_batch_locks_again_for_reservations_another_store_made(
    store: PostgresStore, postgres_server: PostgresServer
) -> None:
    # Guards the lock rule inside a batch: this store does not know which limits another
    # store's reservations hold, so its batch did not lock them; those operations do nothing
    # there and run again with the limits locked, while their neighbours go on.
    other = PostgresStore(postgres_server.url, schema=store.schema)
    try:
        for key in ("gate", "calls", "usd"):
            await store.set_limit(key, 10)
        for rid in ("c", "e", "r"):
            assert (await other.reserve(rid, {"calls": 2, "usd": 1}, lease=60)).admitted
    finally:
        await other.aclose()
    answers: dict[str, object] = {}
    with key_locked(postgres_server, store, "gate") as gate:
        async with anyio.create_task_group() as tg:
            await queue(tg, answers, "first",
                        lambda: store.reserve("first", {"gate": 1}, lease=60))
            await waiting(postgres_server, store, 1)
            await queue(tg, answers, "commit", lambda: store.commit("c", {"usd": 3}))
            await queue(tg, answers, "extend", lambda: store.extend("e", 600))
            await queue(tg, answers, "release", lambda: store.release("r"))
            await queue(tg, answers, "mine", lambda: store.reserve("m", {"calls": 1}, lease=60))
            unlock(gate, store, "gate")
    assert [answers[n] for n in ("commit", "extend", "release")] == [True, True, True]
    assert answers["mine"].admitted  # type: ignore[attr-defined]
    usage = {u.key: (u.spent, u.held) for u in await store.limits()}
    assert usage == {"gate": (0, 1), "calls": (2, 3), "usd": (3, 1)}
    [(left,)] = rows(postgres_server, f'SELECT expires_at - extract(epoch FROM clock_timestamp())'
                     f' FROM "{store.schema}".reservations WHERE rid = %s', "e")
    assert 500 < left <= 600


async def test_a_batch_looks_up_endings_by_id_not_by_scanning_them(
    store: PostgresStore, postgres_server: PostgresServer
) -> None:
    # Guards the cost of every operation against the ending history it keeps for 30 days: the
    # statement that reads a batch's reservations and endings probes ``endings`` by primary
    # key per id. Planned as the store plans it (a generic plan, 10 ids assumed), an ``EXISTS``
    # there became a hashed subplan that read all 3,000 endings (1.3 ms a statement).
    await store.set_limit("calls", 10)
    assert (await store.reserve("live", {"calls": 1}, lease=60)).admitted
    schema = f'"{store.schema}"'
    conn, _ = store._acquire()  # with the store's session settings
    try:
        conn.execute(f"INSERT INTO {schema}.endings (rid, outcome, ended_at) SELECT 'e' || n, "
                     "'released', 0 FROM generate_series(1, 3000) AS n")
        conn.execute("PREPARE ids(text[]) AS " + store._sql.ids.replace("%s", "$1"))
        [(plan,)] = conn.execute("EXPLAIN (FORMAT JSON) EXECUTE ids(ARRAY['e1', 'live'])")
        ended = {row[0]: row[4] for row in conn.execute("EXECUTE ids(ARRAY['e1', 'live'])")}
    finally:
        conn.close()

    def scans(node: dict[str, Any]) -> list[tuple[str, str]]:
        found = [(node["Node Type"], node.get("Relation Name", ""))]
        for child in node.get("Plans", []):
            found += scans(child)
        return found

    used = {kind for kind, relation in scans(plan[0]["Plan"]) if relation == "endings"}
    assert used
    assert used <= {"Index Scan", "Index Only Scan"}, used
    assert ended == {"e1": True, "live": None}  # an ended id, and one that has not ended


async def test_a_database_error_in_a_batch_runs_its_operations_alone(
    store: PostgresStore, postgres_server: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Guards against one operation's database error failing its neighbours: another writer
    # inserts the id "dup" (uncommitted) that the batch then also inserts; the batch waits for
    # it, fails on the unique key when it commits, and each operation runs again alone: only
    # "dup" fails (it has ended, by the other writer's row).
    await store.set_limit("gate", 10)
    await store.set_limit("calls", 10)
    answers: dict[str, object] = {}
    with key_locked(postgres_server, store, "gate") as gate, raw(postgres_server) as other:
        other.execute("BEGIN")
        other.execute(f'INSERT INTO "{store.schema}".reservations VALUES (%s, 1, 1)', ("dup",))
        with caplog.at_level("WARNING", logger="outlay"):
            async with anyio.create_task_group() as tg:
                await queue(tg, answers, "first",
                            lambda: store.reserve("first", {"gate": 1}, lease=60))
                await waiting(postgres_server, store, 1)
                for name in ("a", "dup", "b"):
                    await queue(tg, answers, name,
                                lambda name=name: store.reserve(name, {"calls": 1}, lease=60))
                unlock(gate, store, "gate")
                with anyio.fail_after(10):  # until the batch waits for the other writer's row
                    while not await anyio.to_thread.run_sync(  # noqa: ASYNC110 - polls
                            rows, postgres_server, "SELECT 1 FROM pg_locks WHERE locktype = "
                            "'transactionid' AND NOT granted"):
                        await anyio.sleep(0.01)
                other.execute("COMMIT")
    assert answers["dup"] is ReservationError  # ended (expired), by the other writer
    assert [answers[n].admitted for n in ("first", "a", "b")] == [True] * 3  # type: ignore[attr-defined]
    made = created(postgres_server, store)
    assert made["a"] != made["b"]  # each ran alone
    assert [r.getMessage() for r in caplog.records
            if getattr(r, "event", None) == "outlay.postgres.batch_retried"]
    assert (await store.usage("calls")).held == 2


async def test_an_operation_cancelled_while_its_batch_is_in_flight_takes_effect_once(
    store: PostgresStore, postgres_server: PostgresServer
) -> None:
    # Guards against a batch dropping (or the caller losing track of) a cancelled operation:
    # the caller waits for the batch's transaction, then sees the cancellation; the hold is
    # there to retry idempotently or release, and its neighbour in the batch is unaffected.
    await store.set_limit("gate", 10)
    await store.set_limit("calls", 10)
    answers: dict[str, object] = {}
    scope = anyio.CancelScope()
    done = anyio.Event()

    async def cancelled() -> None:
        with scope:
            answers["r"] = await store.reserve("r", {"calls": 4}, lease=60)
        done.set()

    with key_locked(postgres_server, store, "gate") as gate, \
            key_locked(postgres_server, store, "calls") as calls:
        async with anyio.create_task_group() as tg:
            await queue(tg, answers, "first",
                        lambda: store.reserve("first", {"gate": 1}, lease=60))
            await waiting(postgres_server, store, 1)
            tg.start_soon(cancelled)
            await anyio.wait_all_tasks_blocked()
            await queue(tg, answers, "s", lambda: store.reserve("s", {"calls": 5}, lease=60))
            unlock(gate, store, "gate")
            await waiting(postgres_server, store, 1)  # the batch of r and s waits for "calls"
            scope.cancel()
            await anyio.wait_all_tasks_blocked()
            assert not done.is_set()  # the caller waits for its batch's transaction
            unlock(calls, store, "calls")
            await done.wait()
    assert scope.cancelled_caught
    assert "r" not in answers
    assert answers["s"].admitted  # type: ignore[attr-defined]
    made = created(postgres_server, store)
    assert made["r"] == made["s"]  # they were one batch
    assert (await store.usage("calls")).held == 9
    assert (await store.reserve("r", {"calls": 4}, lease=60)).admitted  # a retry counts once
    assert (await store.usage("calls")).held == 9
    assert await store.release("r") is True
    assert (await store.usage("calls")).held == 5


async def test_two_endings_of_one_reservation_never_share_a_batch(
    store: PostgresStore, postgres_server: PostgresServer
) -> None:
    # Guards the one-operation-per-id rule: a commit and a release of one reservation queued
    # together go into consecutive batches, so exactly one of them ends it.
    await store.set_limit("gate", 10)
    await store.set_limit("calls", 10)
    assert (await store.reserve("r", {"calls": 4}, lease=60)).admitted
    answers: dict[str, object] = {}
    with key_locked(postgres_server, store, "gate") as gate:
        async with anyio.create_task_group() as tg:
            await queue(tg, answers, "first",
                        lambda: store.reserve("first", {"gate": 1}, lease=60))
            await waiting(postgres_server, store, 1)
            await queue(tg, answers, "commit", lambda: store.commit("r"))
            await queue(tg, answers, "release", lambda: store.release("r"))
            await queue(tg, answers, "other", lambda: store.reserve("o", {"calls": 1}, lease=60))
            unlock(gate, store, "gate")
    assert (answers["commit"], answers["release"]) == (True, False)
    assert (await store.usage("calls")).spent == 4
    assert (await store.usage("calls")).held == 1
    assert rows(postgres_server, f'SELECT outcome FROM "{store.schema}".endings') == [
        ("committed",)]


async def test_two_stores_batches_over_keys_in_opposite_orders_never_deadlock(
    store: PostgresStore, postgres_server: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Guards the batch's lock order: two stores (two sets of sessions, as two processes) each
    # run a batch naming "a" then "b" and "b" then "a", both in flight at once. Each batch
    # takes every lock it needs sorted and up front, so neither can hold one the other waits
    # for while waiting itself: no deadlock (which would show as a batch run again alone).
    other = PostgresStore(postgres_server.url, schema=store.schema)
    for key in ("gate", "a", "b"):
        await store.set_limit(key, 10)
    answers: dict[str, object] = {}
    try:
        with key_locked(postgres_server, store, "gate") as gate, \
                key_locked(postgres_server, store, "a") as a, \
                key_locked(postgres_server, store, "b") as b, \
                caplog.at_level("WARNING", logger="outlay"):
            async with anyio.create_task_group() as tg:
                for n, (mine, first, second) in enumerate(((store, "a", "b"),
                                                           (other, "b", "a"))):
                    await queue(tg, answers, f"gate{n}",
                                lambda s=mine, n=n: s.reserve(f"g{n}", {"gate": 1}, lease=60))
                    await waiting(postgres_server, store, n + 1)
                    for key in (first, second):
                        await queue(tg, answers, f"{n}{key}", lambda s=mine, n=n, k=key:
                                    s.reserve(f"{n}{k}", {k: 1}, lease=60))
                unlock(gate, store, "gate")
                await waiting(postgres_server, store, 2)  # both batches wait for a or b
                unlock(a, store, "a")
                unlock(b, store, "b")
    finally:
        await other.aclose()
    assert all(answer.admitted for answer in answers.values())  # type: ignore[attr-defined]
    made = created(postgres_server, store)
    assert made["0a"] == made["0b"]
    assert made["1a"] == made["1b"]
    assert not [r for r in caplog.records
                if getattr(r, "event", None) == "outlay.postgres.batch_retried"]
    assert [(u.key, u.held) for u in await store.limits()] == [("a", 2), ("b", 2), ("gate", 2)]


# -- several OS processes -----------------------------------------------------------------------


async def _start(*args: str) -> tuple[anyio.abc.Process, BufferedByteReceiveStream]:
    process = await anyio.open_process(
        [sys.executable, str(WORKER), *args],
        env={**os.environ, "PYTHONPATH": str(SRC)}, stderr=None)
    assert process.stdout is not None
    return process, BufferedByteReceiveStream(process.stdout)


async def _line(stream: BufferedByteReceiveStream) -> str:
    with anyio.fail_after(60):
        return (await stream.receive_until(b"\n", 1024)).decode()


@ONLY_ASYNCIO
async def test_processes_hammering_one_budget_never_over_admit(
    postgres_server: PostgresServer, schema: str
) -> None:
    url = postgres_server.schema_url(schema)
    setup = PostgresStore.from_url(url)
    await setup.set_limit("calls", 60)
    await setup.set_limit("usd", Decimal("0.50"))  # binds first: 50 reservations of a cent
    await setup.aclose()
    workers = [await _start("hammer", url, "30") for _ in range(4)]
    for _, out in workers:
        assert await _line(out) == "ready"
    for process, _ in workers:  # all four start together
        assert process.stdin is not None
        await process.stdin.send(b"go\n")
    admitted = [int(await _line(out)) for _, out in workers]
    for process, _ in workers:
        assert await process.wait() == 0
    assert sum(admitted) == 50
    check = PostgresStore.from_url(url)
    try:
        usd, calls = await check.usage("usd"), await check.usage("calls")
        assert (usd.spent, usd.held) == (Decimal("0.50"), Decimal(0))
        assert (calls.spent, calls.held) == (50, 0)
    finally:
        await check.aclose()


@ONLY_ASYNCIO
async def test_a_sigkilled_holder_loses_nothing_once_its_lease_expires(
    postgres_server: PostgresServer, schema: str
) -> None:
    url = postgres_server.schema_url(schema)
    setup = PostgresStore.from_url(url)
    await setup.set_limit("calls", 10)
    await setup.aclose()
    process, out = await _start("hold", url)
    try:
        assert await _line(out) == "held"
    finally:
        process.send_signal(signal.SIGKILL)
        assert await process.wait() == -signal.SIGKILL
    now = PostgresStore.from_url(url)
    # Past the child's 60 s lease (this machine's clock is the server's).
    later = PostgresStore.from_url(url, clock=lambda: time.time() + 61)
    try:
        usage = await now.usage("calls")
        assert (usage.spent, usage.held) == (2, 7)  # the dead process's hold still counts
        assert not (await now.reserve("x", {"calls": 2}, lease=60)).admitted
        usage = await later.usage("calls")
        assert (usage.spent, usage.held) == (2, 0)  # lease over: only the hold is gone
        assert (await later.reserve("y", {"calls": 8}, lease=60)).admitted
        assert (await later.usage("calls")).available == 0
        assert await later.commit("held") is True  # the dead holder's late commit still counts
        assert (await later.usage("calls")).spent == 9
    finally:
        await now.aclose()
        await later.aclose()
