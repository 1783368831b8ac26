"""A store works from one event loop after another, and one used before ``os.fork`` works in
the child while the parent's keeps working.

A client's connections belong to the event loop (and the process) that made them. A forked
child inherits the parent's connections (an SQLite connection whose locks it does not
hold, PostgreSQL sockets the parent still talks on), a lock a parent's thread may hold and the
parent's checkpoint thread, which does not run in the child. Each test forces the state the
fork copies (a held lock, pooled connections, a running checkpointer), forks, and has the
child and the parent reserve and commit on the same store object; the spend must be exact.
"""

from __future__ import annotations

import gc
import os
import select
import signal
import traceback
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

from outlay import Store
from outlay.stores import PostgresStore, RedisStore, SQLiteStore

from .pgserver import PostgresServer, drop_schema, fresh_schema
from .redisserver import RedisServer
from .storekit import REDIS_TEST_DB, drop_namespace

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")

ROUNDS = 50


async def reserve_and_commit(store: Store, tag: str) -> None:
    for n in range(ROUNDS):
        rid = f"{tag}-{n}-{uuid.uuid4().hex}"
        assert (await store.reserve(rid, {"calls": 1}, lease=60)).admitted
        assert await store.commit(rid) is True


def in_child(work: Callable[[], None]) -> str:
    """Run ``work`` in a forked child (with a time limit); its error text, or ``""``."""
    read, write = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns of fork in a process with threads (the test run's, a store's).
        warnings.filterwarnings("ignore", ".*multi-threaded.*fork", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        os.close(read)
        text = ""
        try:
            work()
            gc.collect()  # finalisers of anything the child dropped run here, not at _exit
        except BaseException:
            text = traceback.format_exc() or "failed"
        os.write(write, text.encode() or b"ok")
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        if not select.select([pipe], [], [], 60)[0]:  # a deadlocked child never answers
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "the child hung (killed after 60 s)"
        answer = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return "" if answer == "ok" else answer or "the child died without an answer"


def child_run(store: Store, tag: str) -> Callable[[], None]:
    def work() -> None:
        async def main() -> None:
            with anyio.fail_after(20):  # a child that deadlocks fails instead of hanging
                await reserve_and_commit(store, tag)

        anyio.run(main)

    return work


def spent(store: Store) -> int:
    async def main() -> int:
        return int((await store.usage("calls")).spent)

    return anyio.run(main)


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "fork.db")
    anyio.run(store.set_limit, "calls", 10**6)
    yield store
    anyio.run(store.aclose)


@needs_fork
def test_a_forked_child_does_not_inherit_a_held_sqlite_lock(sqlite_store: SQLiteStore) -> None:
    # A parent's worker thread holds the store's lock at the moment of the fork: in the child
    # no thread will ever release it.
    with sqlite_store._lock:
        failure = in_child(child_run(sqlite_store, "child"))
    assert failure == ""
    anyio.run(reserve_and_commit, sqlite_store, "parent")
    assert spent(sqlite_store) == 2 * ROUNDS


@needs_fork
def test_a_forked_child_checkpoints_its_own_writes(sqlite_store: SQLiteStore) -> None:
    anyio.run(reserve_and_commit, sqlite_store, "before")  # the parent's checkpointer runs
    checkpointer = sqlite_store._checkpointer
    assert checkpointer is not None
    assert checkpointer._thread is not None  # it runs here

    def work() -> None:
        child_run(sqlite_store, "child")()
        own = sqlite_store._checkpointer
        assert own is not None
        own.checkpointed.clear()  # (set in the parent, copied by the fork)
        anyio.run(sqlite_store.set_limit, "calls", 10**6 + 1)
        assert own.checkpointed.wait(10), "no checkpoint ran in the child"

    assert in_child(work) == ""
    assert spent(sqlite_store) == 2 * ROUNDS


@needs_fork
def test_a_forked_child_uses_its_own_postgres_connections(
    postgres_server: PostgresServer,
) -> None:
    schema = fresh_schema()
    store = PostgresStore.from_url(postgres_server.schema_url(schema), pool_size=4)
    try:
        async def setup() -> None:
            await store.set_limit("calls", 10**6)
            async with anyio.create_task_group() as tg:
                for n in range(4):
                    tg.start_soon(reserve_and_commit, store, f"before{n}")

        anyio.run(setup)
        parents = {conn.info.backend_pid for conn in store._idle}  # the server's sessions
        assert parents

        def work() -> None:
            child_run(store, "child")()
            # The child talked to the server in sessions of its own: on the parent's sockets
            # its statements and the parent's would interleave.
            own = {conn.info.backend_pid for conn in store._idle}
            assert own
            assert not own & parents, (own, parents)

        # Two children in turn, then the parent on its pooled connections: a child that
        # closed them would have ended the parent's sessions.
        assert [in_child(work) for _ in range(2)] == ["", ""]
        assert {conn.info.backend_pid for conn in store._idle} == parents
        anyio.run(reserve_and_commit, store, "after")
        assert spent(store) == 7 * ROUNDS
    finally:
        anyio.run(store.aclose)
        drop_schema(postgres_server.url, schema)



@pytest.fixture
def redis_store(redis_server: RedisServer) -> Iterator[RedisStore]:
    namespace = f"outlay-test-{uuid.uuid4().hex[:12]}"
    store = RedisStore.from_url(redis_server.url(REDIS_TEST_DB), namespace=namespace)
    anyio.run(store.set_limit, "calls", 10**6)
    yield store

    async def drop() -> None:
        await drop_namespace(store)
        await store.aclose()

    anyio.run(drop)


@needs_fork
def test_a_forked_child_uses_its_own_redis_connections(redis_store: RedisStore) -> None:
    async def client_id() -> int:
        return int(await redis_store.client.client_id())

    anyio.run(reserve_and_commit, redis_store, "before")
    parent = anyio.run(client_id)

    def work() -> None:
        child_run(redis_store, "child")()
        assert anyio.run(client_id) != parent  # a connection of the child's own

    assert in_child(work) == ""
    anyio.run(reserve_and_commit, redis_store, "after")
    assert spent(redis_store) == 3 * ROUNDS


@pytest.mark.parametrize("kind", ["sqlite", "postgres", "redis"])
def test_a_store_serves_one_event_loop_after_another(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # One anyio.run after another (a CLI, a task runner, a test suite): every store made from
    # a URL or a path keeps working, on asyncio and on trio, without being made again.
    if kind == "sqlite":
        store: Store = request.getfixturevalue("sqlite_store")
    elif kind == "redis":
        store = request.getfixturevalue("redis_store")
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        schema = fresh_schema()
        store = PostgresStore.from_url(server.schema_url(schema))
        request.addfinalizer(lambda: drop_schema(server.url, schema))
        request.addfinalizer(lambda: anyio.run(store.aclose))
        anyio.run(store.set_limit, "calls", 10**6)
    for n, backend in enumerate(["asyncio", "asyncio", "trio", "asyncio", "trio"]):
        anyio.run(reserve_and_commit, store, f"run{n}", backend=backend)
    assert spent(store) == 5 * ROUNDS
