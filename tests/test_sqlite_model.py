"""The SQLite store behaves exactly like the in-memory store, operation by operation.

Hypothesis drives random sequences of operations (limits of both units, created on first use,
overshooting commits, releases, lease expiry on a shared injected clock, retried endings) into a
``MemoryStore`` and a ``SQLiteStore`` on a real file, and requires the same answer (or the same
exception class) and the same snapshot of every limit after every step, reads after a lease
ran out included. Sequences are at least ten steps long: shorter ones rarely reach the states
where the stores could disagree (a hold that expired, then was committed or extended).
"""

from __future__ import annotations

import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outlay import Amount, LimitUsage, MemoryStore, Store
from outlay.stores import SQLiteStore
from outlay.testing import FakeClock

KEYS = ["calls", "tokens", "usd", "fresh"]
RIDS = ["r0", "r1", "r2"]

units = st.integers(0, 4)
money = st.decimals(min_value=0, max_value=4, places=2, allow_nan=False, allow_infinity=False)
# Amounts in each limit's unit ("calls" and "tokens" count ints; "usd" and "fresh" are money,
# which also takes ints); unit mismatches are covered by the behaviour suite.
amount_maps = st.lists(st.one_of(
    st.tuples(st.just("calls"), units),
    st.tuples(st.just("tokens"), units),
    st.tuples(st.just("usd"), st.one_of(money, units)),
    st.tuples(st.just("fresh"), money),
), min_size=1, max_size=3).map(dict)
limit_caps = st.one_of(
    st.tuples(st.sampled_from(["calls", "tokens"]), st.integers(0, 12)),
    st.tuples(st.sampled_from(["usd", "fresh"]), st.decimals(
        min_value=0, max_value=12, places=1, allow_nan=False, allow_infinity=False)),
)
leases = st.sampled_from([1.0, 2.5, 10.0])

reserve = st.tuples(st.just("reserve"), st.sampled_from(RIDS), amount_maps, leases, st.booleans())
commit = st.tuples(st.just("commit"), st.sampled_from(RIDS), st.one_of(st.none(), amount_maps))
advance = st.tuples(st.just("advance"), st.sampled_from([0.5, 1.0, 2.5, 10.0]))
operations = st.lists(st.one_of(
    reserve, reserve, commit, advance,  # the interesting ones, twice or more as often
    limit_caps.map(lambda pair: ("set_limit", *pair)),
    st.tuples(st.just("release"), st.sampled_from(RIDS)),
    st.tuples(st.just("extend"), st.sampled_from(RIDS), leases),
), min_size=10, max_size=30)


async def apply(store: Store, op: tuple[Any, ...]) -> object:
    try:
        match op:
            case ("set_limit", key, cap):
                await store.set_limit(key, cap)
                return None
            case ("reserve", rid, wanted, lease, with_default):
                defaults: dict[str, Amount] | None = (
                    {"fresh": Decimal(5)} if with_default else None)
                admission = await store.reserve(rid, wanted, lease=lease, defaults=defaults)
                return (admission.admitted, admission.refused, admission.requested)
            case ("commit", rid, actual):
                return await store.commit(rid, actual)
            case ("release", rid):
                return await store.release(rid)
            case ("extend", rid, lease):
                return await store.extend(rid, lease)
    except Exception as exc:  # the same failure, by class
        return type(exc)
    raise AssertionError(op)


async def snapshot(store: Store) -> list[LimitUsage | type[Exception]]:
    seen: list[LimitUsage | type[Exception]] = []
    for key in KEYS:
        try:
            seen.append(await store.usage(key))
        except Exception as exc:
            seen.append(type(exc))
    return seen


@pytest.mark.slow
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations)
def test_sqlite_store_matches_the_memory_store(ops: list[tuple[Any, ...]]) -> None:
    clock = FakeClock()

    async def run(path: Path) -> None:
        memory = MemoryStore(clock=clock)
        sqlite = SQLiteStore(path, clock=clock)
        try:
            for store in (memory, sqlite):  # start with two int limits and one in money
                await store.set_limit("calls", 10)
                await store.set_limit("tokens", 12)
                await store.set_limit("usd", Decimal("10.0"))
            for op in ops:
                if op[0] == "advance":
                    clock.now += op[1]  # reads must leave out holds no write has swept yet
                else:
                    assert await apply(sqlite, op) == await apply(memory, op), op
                assert await snapshot(sqlite) == await snapshot(memory), op
                assert await sqlite.held_reservations() == await memory.held_reservations()
        finally:
            await sqlite.aclose()

    with tempfile.TemporaryDirectory() as tmp:
        anyio.run(run, Path(tmp) / "model.db")
