"""Where job state lives: in the budget's own SQLite file (own tables, own schema version) and
under the Redis store's own hash tag, never anywhere else; a detached hold is left to its job."""

from __future__ import annotations

import gc
import sqlite3
import uuid
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path

import pytest

from outlay import (
    Amount,
    JobQueue,
    LimitSpec,
    MemoryStore,
    Principals,
    ReservationError,
    StoreError,
    StoreUnavailable,
    Window,
)
from outlay.stores import SQLiteStore
from outlay.stores._sqlite import SCHEMA_VERSION

from .redisserver import RedisServer
from .storekit import redis_store_at

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
