"""Where job state lives: in the budget's own SQLite file and PostgreSQL schema (own tables, own
schema version) and under the Redis store's own hash tag, never anywhere else; PostgreSQL claims
skip a job another transaction holds; a detached hold is left to its job."""

from __future__ import annotations

import gc
import sqlite3
import uuid
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path

import anyio
import pytest

from outlay import (
    Amount,
    Budget,
    JobQueue,
    LimitSpec,
    MemoryStore,
    Principals,
    ReservationError,
    Store,
    StoreError,
    StoreUnavailable,
    Window,
)
from outlay.stores import SQLiteStore
from outlay.stores._sqlite import SCHEMA_VERSION

from .pgserver import PostgresServer
from .redisserver import RedisServer
from .storekit import postgres_store_at, redis_store_at

pytestmark = pytest.mark.anyio


async def test_sqlite_jobs_share_the_budget_file_with_their_own_schema_version(
        tmp_path: Path) -> None:
    path = tmp_path / "outlay.db"
    store = SQLiteStore(path)
    budget = Principals(store, template=[LimitSpec("usd", Window.month(), Decimal("5"))]
                        ).get("team:a")
    queue = JobQueue(store, budget=budget)
    await queue.submit("x", cost={"usd": Decimal("1")})
    await store.aclose()
    with sqlite3.connect(path) as conn:
        tables = {name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"limits", "holds", "endings", "jobs", "jobs_schema"} <= tables
        assert conn.execute("SELECT version FROM jobs_schema").fetchall() == [(1,)]
        # the budget tables' own version is left alone
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        conn.execute("UPDATE jobs_schema SET version = 99")
    newer = SQLiteStore(path)
    try:
        with pytest.raises(StoreError, match="job schema version 99"):
            await JobQueue(newer).submit("y", cost={"usd": Decimal("1")}, budget=Principals(
                newer, template=[LimitSpec("usd", Window.month(), Decimal("5"))]).get("team:a"))
    finally:
        await newer.aclose()


async def test_redis_jobs_live_under_the_store_hash_tag_only(
        redis_server: RedisServer) -> None:
    from outlay.stores._redis import _text

    async with redis_store_at(redis_server) as store:
        neighbour = f"not-outlay-{uuid.uuid4().hex[:8]}"

        async def setup() -> None:
            await store.client.set(neighbour, "theirs")

        await store._call(setup)
        budget = Principals(store, template=[LimitSpec("usd", Window.month(), Decimal("5"))]
                            ).get("team:a")
        queue = JobQueue(store, budget=budget)
        await queue.submit("x", cost={"usd": Decimal("1")}, lane="gpu")
        claim = await queue.claim(["gpu"])
        assert claim is not None
        assert await claim.complete("ok", {"usd": Decimal("0.5")})
        await queue.submit("y", cost={"usd": Decimal("1")}, lane="cpu")

        async def keys() -> tuple[list[str], str | None]:
            found = [_text(k) async for k in store.client.scan_iter(
                match="{" + store.namespace + "}:*")]
            other = await store.client.get(neighbour)
            await store.client.delete(neighbour)
            return found, None if other is None else _text(other)

        found, other = await store._call(keys)
        assert other == "theirs"
        prefix = "{" + store.namespace + "}:"
        kinds = {k[len(prefix):].split(":")[0] for k in found}
        assert {"j", "jq", "jall", "jseq", "l", "r"} <= kinds  # jobs beside limits and holds


def _budget(store: Store) -> Budget:
    return Principals(store, template=[LimitSpec("usd", Window.month(), Decimal("5"))]
                      ).get("team:a")


async def test_postgres_jobs_live_in_the_store_schema_with_their_own_version(
        postgres_server: PostgresServer) -> None:
    import psycopg

    from outlay.stores._postgres import SCHEMA_VERSION as STORE_VERSION

    async with postgres_store_at(postgres_server) as store:
        budget = _budget(store)
        queue = JobQueue(store, budget=budget)
        assert await queue.jobs() == []  # a read creates nothing
        done = await queue.submit("x", cost={"usd": Decimal("1")}, lane="gpu")
        claim = await queue.claim(["gpu"])
        assert claim is not None
        assert await claim.complete("ok", {"usd": Decimal("0.50")})
        await queue.submit("y", cost={"usd": Decimal("1")}, lane="cpu")
        schema = store.schema
        with psycopg.connect(postgres_server.url, autocommit=True) as conn:
            tables = {name for (name,) in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))}
            assert tables == {"meta", "limits", "reservations", "hold_items", "endings",
                              "jobs", "jobs_actual", "jobs_schema"}
            assert conn.execute(f'SELECT version FROM "{schema}".jobs_schema').fetchall() == [(1,)]
            # the budget tables' own version is left alone
            assert conn.execute(f'SELECT version FROM "{schema}".meta').fetchall() == [
                (STORE_VERSION,)]
            # money is NUMERIC: exact, and summable in SQL
            assert conn.execute(
                "SELECT data_type FROM information_schema.columns WHERE table_schema = %s "
                "AND table_name = 'jobs_actual' AND column_name = 'amount'", (schema,)
            ).fetchone() == ("numeric",)
            assert conn.execute(f'SELECT id, unit, whole, amount FROM "{schema}".jobs_actual'
                                ).fetchall() == [(done.id, "usd", False, Decimal("0.50"))]
            conn.execute(f'UPDATE "{schema}".jobs_schema SET version = 99')
        newer = JobQueue(store, budget=budget)
        with pytest.raises(StoreError, match="job schema version 99"):
            await newer.submit("z", cost={"usd": Decimal("1")})
        with pytest.raises(StoreError, match="job schema version 99"):
            await newer.jobs()
        [usd] = await budget.usage()
        assert (usd.spent, usd.held) == (Decimal("0.50"), Decimal("1"))  # z's hold released


async def test_postgres_jobs_refuse_a_jobs_table_that_is_not_theirs(
        postgres_server: PostgresServer) -> None:
    import psycopg

    async with postgres_store_at(postgres_server) as store:
        budget = _budget(store)
        await store.migrate()  # the budget tables are outlay's
        with psycopg.connect(postgres_server.url, autocommit=True) as conn:
            conn.execute(f'CREATE TABLE "{store.schema}".jobs (theirs text)')
            conn.execute(f'INSERT INTO "{store.schema}".jobs VALUES (%s)', ("kept",))
            queue = JobQueue(store, budget=budget)
            with pytest.raises(StoreError, match="without an outlay job schema version"):
                await queue.submit("x", cost={"usd": Decimal("1")})
            with pytest.raises(StoreError, match="without an outlay job schema version"):
                await queue.jobs()
            assert conn.execute(f'SELECT * FROM "{store.schema}".jobs').fetchall() == [
                ("kept",)]
            assert conn.execute("SELECT to_regclass(%s)", (f'"{store.schema}".jobs_schema',)
                                ).fetchone() == (None,)
        [usd] = await budget.usage()
        assert usd.held == 0  # the refused job's hold was released


async def test_postgres_processes_creating_the_job_tables_at_once_create_them_once(
        postgres_server: PostgresServer) -> None:
    """Two stores (two pools, as two processes) touch jobs for the first time while the job
    tables' setup lock is held elsewhere: both wait for it, then one creates the tables and
    the other finds them; both jobs are stored."""
    import psycopg

    from outlay.jobs._postgres import _JOBS_SETUP_LOCK
    from outlay.stores._postgres import PostgresStore

    async with postgres_store_at(postgres_server) as first:
        second = PostgresStore.from_url(postgres_server.schema_url(first.schema))
        try:
            for store in (first, second):
                await store.migrate()  # the budget tables exist; the job tables do not
            queues = [JobQueue(store, budget=_budget(store)) for store in (first, second)]
            ids: list[str] = []
            with psycopg.connect(postgres_server.url, autocommit=True) as holder:
                holder.execute("SELECT pg_advisory_lock(%s, %s)",
                               (first._schema_lock, _JOBS_SETUP_LOCK))

                async def submit(queue: JobQueue) -> None:
                    ids.append((await queue.submit(1, cost={"usd": Decimal("1")})).id)

                async with anyio.create_task_group() as tg:
                    for queue in queues:
                        tg.start_soon(submit, queue)
                    with anyio.fail_after(10):
                        while holder.execute(  # noqa: ASYNC110 - polls the server
                                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                "AND NOT granted AND objid = %s AND classid = %s",
                                (_JOBS_SETUP_LOCK, first._schema_lock & 0xFFFFFFFF)
                        ).fetchone() != (2,):
                            await anyio.sleep(0.01)  # until both wait for the setup lock
                    holder.execute("SELECT pg_advisory_unlock(%s, %s)",
                                   (first._schema_lock, _JOBS_SETUP_LOCK))
                assert holder.execute(f'SELECT version FROM "{first.schema}".jobs_schema'
                                      ).fetchall() == [(1,)]
            assert sorted(job.id for job in await queues[0].jobs()) == sorted(ids)
        finally:
            await second.aclose()


async def test_postgres_job_leases_run_on_the_store_clock(
        postgres_server: PostgresServer) -> None:
    """Leases are read from the store's clock (the server's by default; here a fake one the
    store was given), not from the worker's: a lease ends when that clock says so."""
    from outlay.stores._postgres import PostgresStore

    now = [1_000_000.0]
    async with postgres_store_at(postgres_server) as opened:
        store = PostgresStore.from_url(postgres_server.schema_url(opened.schema),
                                       clock=lambda: now[0])
        try:
            queue = JobQueue(store, budget=_budget(store), lease=30.0)
            await queue.submit(1, cost={"usd": Decimal("1")})
            claim = await queue.claim(["default"])
            assert claim is not None
            assert claim.job.lease_until == 1_000_030.0
            now[0] += 29.0
            assert (await queue.recover()).requeued == 0
            assert await claim.heartbeat()
            assert (await queue.get(claim.job.id)).lease_until == 1_000_059.0
            now[0] += 31.0
            assert (await queue.recover()).requeued == 1
            assert not await claim.complete("late")  # a stale claim is refused
        finally:
            await store.aclose()


async def test_postgres_a_claim_skips_a_job_another_transaction_holds_locked(
        postgres_server: PostgresServer) -> None:
    """FOR UPDATE SKIP LOCKED: a claim does not wait for the oldest job while another
    transaction holds it; it takes the next one, and the held one once it is free."""
    import psycopg

    async with postgres_store_at(postgres_server) as store:
        queue = JobQueue(store, budget=_budget(store))
        first = await queue.submit(1, cost={"usd": Decimal("1")}, lane="gpu")
        second = await queue.submit(2, cost={"usd": Decimal("1")}, lane="gpu")
        with psycopg.connect(postgres_server.url) as holder:  # a transaction, left open
            holder.execute(f'SELECT 1 FROM "{store.schema}".jobs WHERE id = %s FOR UPDATE',
                           (first.id,))
            async with anyio.create_task_group() as tg:

                async def unblock() -> None:  # only acts if the claim waits for the lock
                    await anyio.sleep(10)
                    holder.rollback()

                tg.start_soon(unblock)
                claim = await queue.claim(["gpu"])
                tg.cancel_scope.cancel()
            assert claim is not None
            assert claim.job.id == second.id
            holder.rollback()
        claim = await queue.claim(["gpu"])
        assert claim is not None
        assert claim.job.id == first.id
        assert await queue.claim(["gpu"]) is None


async def test_a_detached_hold_is_not_released_when_its_handle_is_dropped() -> None:
    store = MemoryStore()
    budget = Principals(store, template=[LimitSpec("usd", Window.month(), Decimal("5"))]
                        ).get("team:a")
    held = await budget.reserve({"usd": Decimal("2")})
    rid = held.detach()
    assert held.state == "detached"
    assert held.ended
    with pytest.raises(ReservationError, match="already detached"):
        await held.commit()
    del held
    gc.collect()  # no ResourceWarning (an error under this suite's filters), no release
    assert store.held_reservations_nowait() == 1
    assert await store.commit(rid, None)  # ended by id, from anywhere
    [usd] = await budget.usage()
    assert (usd.spent, usd.held) == (Decimal("2"), 0)


class LostCommitStore(MemoryStore):
    """A memory store whose first commit counts the spend and then fails as a lost reply."""

    def __init__(self) -> None:
        super().__init__()
        self.lose_next = True

    async def commit(self, rid: str, actual: Mapping[str, Amount] | None = None) -> bool:
        done = await super().commit(rid, actual)
        if self.lose_next:
            self.lose_next = False
            raise StoreUnavailable("reply lost")
        return done


async def test_a_hold_whose_commit_outcome_is_unknown_cannot_be_detached() -> None:
    """The commit may have counted (here it did): handing the hold to a job, which could
    release it by id, must be refused; only a retried commit ends it."""
    store = LostCommitStore()
    budget = Principals(store, template=[LimitSpec("usd", Window.month(), Decimal("5"))]
                        ).get("team:a")
    held = await budget.reserve({"usd": Decimal("2")})
    with pytest.raises(StoreUnavailable):
        await held.commit()
    with pytest.raises(ReservationError, match="unknown outcome"):
        held.detach()
    assert held.state == "held"
    await held.commit()  # the retry is idempotent by id: counted once
    [usd] = await budget.usage()
    assert (usd.spent, usd.held) == (Decimal("2"), 0)
