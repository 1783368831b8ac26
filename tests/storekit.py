"""Store factories for the behavioural suite (``test_store_behaviour.py``).

Each factory opens a fresh, empty store on real infrastructure (a real SQLite file, a real Redis
server) and closes it afterwards. A store that cannot run here calls ``pytest.skip`` with the
reason. Add a store by adding a factory to ``STORE_FACTORIES``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest

from outlay import MemoryStore, Store
from outlay.stores import SQLiteStore


@asynccontextmanager
async def memory_store(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    store = MemoryStore()
    yield store
    await store.aclose()


@asynccontextmanager
async def sqlite_store(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    store = SQLiteStore(tmp_path / "outlay.db")
    try:
        yield store
    finally:
        await store.aclose()


StoreFactory = Callable[[Path, pytest.FixtureRequest], AbstractAsyncContextManager[Store]]

STORE_FACTORIES: dict[str, StoreFactory] = {
    "memory": memory_store,
    "sqlite": sqlite_store,
}
