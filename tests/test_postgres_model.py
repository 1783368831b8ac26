"""The PostgreSQL store behaves exactly like the in-memory store, operation by operation.

The same random sequences as ``test_sqlite_model.py`` (limits of both units, created on first
use, overshooting commits, releases, lease expiry, retried endings) run against a
``MemoryStore`` and a ``PostgresStore`` in a fresh schema of a real server, both on one injected
clock, and must give the same answer (or the same exception class) and the same snapshot of
every limit after every step.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings

from outlay import MemoryStore
from outlay.testing import FakeClock

from .pgserver import PostgresServer, drop_schema, fresh_schema
from .test_sqlite_model import apply, operations, snapshot


@pytest.mark.slow
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(ops=operations)
def test_postgres_store_matches_the_memory_store(
    postgres_server: PostgresServer, ops: list[tuple[Any, ...]]
) -> None:
    from outlay.stores import PostgresStore

    clock = FakeClock()
    schema = fresh_schema()

    async def run() -> None:
        memory = MemoryStore(clock=clock)
        postgres = PostgresStore(postgres_server.url, schema=schema, clock=clock)
        try:
            for store in (memory, postgres):  # start with two int limits and one in money
                await store.set_limit("calls", 10)
                await store.set_limit("tokens", 12)
                await store.set_limit("usd", Decimal("10.0"))
            for op in ops:
                if op[0] == "advance":
                    clock.now += op[1]
                else:
                    assert await apply(postgres, op) == await apply(memory, op), op
                assert await snapshot(postgres) == await snapshot(memory), op
                assert await postgres.held_reservations() == await memory.held_reservations()
        finally:
            await postgres.aclose()

    try:
        anyio.run(run)
    finally:
        drop_schema(postgres_server.url, schema)
