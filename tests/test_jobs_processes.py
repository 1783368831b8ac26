"""Many worker processes on one store, SIGKILLed mid-job at random (real SQLite file, real
Redis, real PostgreSQL schema): every job completes exactly once or fails after its maximum
attempts, no hold is left once the leases end, and the spend is the sum of the actual costs of
the completed jobs."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import closing
from decimal import Decimal
from pathlib import Path

import anyio
import anyio.abc
import pytest
from anyio.streams.text import TextReceiveStream

from outlay import JobQueue, LimitSpec, Principals, Store, Window, store_from_url

from ._jobs_worker import actual_cost
from .pgserver import PostgresServer, drop_schema, fresh_schema
from .redisserver import RedisServer
from .storekit import REDIS_TEST_DB, drop_namespace

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

WORKER = Path(__file__).with_name("_jobs_worker.py")
SRC = Path(__file__).resolve().parents[1] / "src"
JOBS, POISON, WORKERS, KILLS, MAX_ATTEMPTS = 24, 3, 4, 6, 3


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the parent only drives subprocesses; the workers run asyncio too


@pytest.fixture(params=["postgres", "redis", "sqlite"])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.db'}"
        return
    if request.param == "postgres":
        postgres: PostgresServer = request.getfixturevalue("postgres_server")
        schema = fresh_schema()
        yield postgres.schema_url(schema)
        drop_schema(postgres.url, schema)
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    url = f"{server.url(REDIS_TEST_DB)}?namespace=outlay-test-{uuid.uuid4().hex[:12]}"
    yield url
    from outlay.stores._redis import RedisStore

    store = store_from_url(url)
    assert isinstance(store, RedisStore)
    try:
        await drop_namespace(store)
    finally:
        await store.aclose()


class Fleet:
    """Worker processes and every line they printed."""

    def __init__(self, url: str, tg: anyio.abc.TaskGroup) -> None:
        self.url = url
        self.tg = tg
        self.live: dict[int, anyio.abc.Process] = {}
        self.last: dict[int, str] = {}
        self.lines: list[str] = []
        self.started = 0

    async def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(SRC)}
        process = await anyio.open_process([sys.executable, str(WORKER), self.url], env=env,
                                           stderr=subprocess.DEVNULL)
        self.started += 1
        self.live[process.pid] = process
        self.tg.start_soon(self._read, process)

    async def _read(self, process: anyio.abc.Process) -> None:
        assert process.stdout is not None
        buffer = ""
        async for chunk in TextReceiveStream(process.stdout):
            buffer += chunk
            *done, buffer = buffer.split("\n")
            for line in done:
                self.lines.append(line)
                self.last[process.pid] = line
        await process.wait()
        self.live.pop(process.pid, None)

    def mid_job(self) -> list[anyio.abc.Process]:
        return [p for pid, p in self.live.items() if self.last.get(pid, "").startswith("started")]

    async def stop(self) -> None:
        for process in list(self.live.values()):
            process.kill()
        with anyio.fail_after(10):
            for process in list(self.live.values()):
                await process.wait()


async def test_killed_workers_lose_no_job_and_no_money(store_url: str) -> None:
    store: Store = store_from_url(store_url)
    budget = Principals(store, template=[LimitSpec("usd", Window.month(), Decimal("100"))]
                        ).get("team:ml")
    queue = JobQueue(store, budget=budget, lease=1.0, max_attempts=MAX_ATTEMPTS)
    rng = random.Random(1515)
    poison: set[str] = set()
    for n in range(JOBS + POISON):
        payload = {"n": n, "seconds": rng.uniform(0.3, 0.6), "poison": n >= JOBS}
        job = await queue.submit(payload, cost={"usd": Decimal("1.00")}, lane="gpu")
        if n >= JOBS:
            poison.add(job.id)
    kills = 0
    try:
        async with anyio.create_task_group() as tg:
            fleet = Fleet(store_url, tg)
            for _ in range(WORKERS):
                await fleet.start()
            with anyio.fail_after(240):
                while True:
                    jobs = await queue.jobs()
                    if all(job.state in ("completed", "failed") for job in jobs):
                        break
                    await queue.recover()
                    holds_add_up(store_url)
                    victims = fleet.mid_job()
                    if kills < KILLS and victims and rng.random() < 0.3:
                        victims[0].send_signal(signal.SIGKILL)  # dies holding a lease
                        kills += 1
                    while len(fleet.live) < WORKERS:  # replace the dead (killed or poisoned)
                        await fleet.start()
                    await anyio.sleep(0.05)
            await fleet.stop()
            tg.cancel_scope.cancel()
        assert kills == KILLS

        jobs = await queue.jobs()
        applied = Counter(line.split()[1] for line in fleet.lines if line.startswith("applied"))
        completed = [job for job in jobs if job.state == "completed"]
        for job in jobs:
            assert applied[job.id] <= 1, job  # never completed twice
            if job.state == "failed":
                assert job.attempts == MAX_ATTEMPTS, job
                assert job.error == f"lease expired on attempt {MAX_ATTEMPTS} of {MAX_ATTEMPTS}"
                assert applied[job.id] == 0
            else:
                assert job.id not in poison
                # completed by its last claim, at that attempt's actual cost
                assert job.result["attempt"] == job.attempts, job
                assert job.actual == {"usd": actual_cost(job.payload["n"], job.attempts)}
        assert poison <= {job.id for job in jobs if job.state == "failed"}
        assert len(completed) >= JOBS - KILLS // MAX_ATTEMPTS
        # some killed job was recovered and completed by another worker
        assert any(job.attempts > 1 for job in completed)
        holds_add_up(store_url)
        assert await store.held_reservations() == 0
        [usd] = await budget.usage()
        assert usd.held == 0
        assert usd.spent == sum(job.actual["usd"] for job in completed if job.actual)
    finally:
        await store.aclose()


def holds_add_up(url: str) -> None:
    """On SQLite, at any moment, every limit's ``held`` is the sum of its hold rows (read in
    one transaction of the file, while the workers write), so a count that drifts fails where
    it drifts, not only at the end."""
    if not url.startswith("sqlite:///"):
        return
    sums: dict[str, Decimal] = {}
    with closing(sqlite3.connect(f"file:{url.removeprefix('sqlite:///')}?mode=ro", uri=True,
                                 timeout=30, isolation_level=None)) as conn:
        conn.execute("BEGIN")
        held = {key: Decimal(text) for key, text in conn.execute("SELECT key, held FROM limits")}
        for (amounts,) in conn.execute("SELECT amounts FROM holds"):
            for key, text in json.loads(amounts).items():
                sums[key] = sums.get(key, Decimal(0)) + Decimal(text)
        conn.execute("COMMIT")
    assert {key: sums.get(key, Decimal(0)) for key in held} == held
