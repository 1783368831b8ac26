"""``outlay jobs URL``: jobs by state with their holds, from a real SQLite file and a real
PostgreSQL schema."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import anyio
import pytest

from outlay import LimitSpec, Principals, Window, store_from_url
from outlay.cli import main
from outlay.jobs import JobQueue
from outlay.stores import SQLiteStore

from .pgserver import PostgresServer, drop_schema, fresh_schema


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(params=["postgres", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store with a queued, a leased, a completed and a failed job."""
    schema = None
    if request.param == "sqlite":
        store_url = f"sqlite:///{tmp_path / 'jobs.db'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        schema = fresh_schema()
        store_url = server.schema_url(schema)

    async def fill() -> None:
        store = store_from_url(store_url)
        budget = Principals(store, template=[LimitSpec("usd", Window.month(), Decimal("50"))]
                            ).get("team:ml")
        queue = JobQueue(store, budget=budget, max_attempts=1)
        for n, cost in enumerate(["4", "3", "2", "1"]):
            await queue.submit({"n": n}, cost={"usd": Decimal(cost)}, lane="gpu",
                               job_id=f"job-{n}")
        for _ in range(3):
            claim = await queue.claim(["gpu"])
            assert claim is not None
            if claim.job.id == "job-0":
                assert await claim.complete({"ok": True}, {"usd": Decimal("1.75")})
            elif claim.job.id == "job-1":
                assert await claim.fail("RuntimeError: out of memory")
        await store.aclose()

    anyio.run(fill)
    yield store_url
    if schema is not None:
        drop_schema(server.url, schema)


def test_jobs_are_listed_by_state_with_their_holds(url: str) -> None:
    code, out, err = run(["jobs", url])
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["STATE", "JOB", "LANE", "ATTEMPTS", "HOLD", "HELD", "ACTUAL",
                                "ERROR"]
    states = [line.split()[:2] for line in lines[1:-1]]
    assert states == [["queued", "job-3"], ["leased", "job-2"], ["completed", "job-0"],
                      ["failed", "job-1"]]
    queued, leased, completed, failed = (line.split()[3:] for line in lines[1:-1])
    assert queued[0] == "0/1"
    assert queued[2:] == ["held", "usd=1", "-"]
    assert leased[0] == "1/1"
    assert leased[2:] == ["held", "usd=2", "-"]
    assert completed[2:] == ["committed", "-", "usd=1.75"]
    assert failed[2:] == ["released", "-", "-", "RuntimeError:", "out", "of", "memory"]
    assert lines[-1] == "queued 1 holding usd=1; leased 1 holding usd=2; completed 1; failed 1"


def test_jobs_json_and_state_filter(url: str) -> None:
    code, out, _ = run(["--json", "jobs", url, "--state", "completed"])
    assert code == 0
    [row] = json.loads(out)
    assert row["job"] == "job-0"
    assert row["held"] is None
    assert row["actual"] == {"usd": "1.75"}
    assert row["hold"].endswith(" committed")


def test_jobs_on_a_budget_file_without_jobs_and_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "budget.db"

    async def budget_only() -> None:
        store = SQLiteStore(path)
        await store.set_limit("usd", Decimal("1"))
        await store.aclose()

    anyio.run(budget_only)
    assert run(["jobs", f"sqlite:///{path}"]) == (0, "no jobs\n", "")
    code, _, err = run(["jobs", f"sqlite:///{tmp_path / 'missing.db'}"])
    assert code == 1
    assert "no database at" in err


def test_jobs_on_a_postgres_schema_without_jobs(postgres_server: PostgresServer) -> None:
    schema = fresh_schema()
    url = postgres_server.schema_url(schema)

    async def budget_only() -> None:
        store = store_from_url(url)
        await store.set_limit("usd", Decimal("1"))
        await store.aclose()

    try:
        assert run(["jobs", url]) == (0, "no jobs\n", "")  # no schema yet: nothing created
        anyio.run(budget_only)
        assert run(["jobs", url]) == (0, "no jobs\n", "")
        import psycopg

        with psycopg.connect(postgres_server.url) as conn:
            assert conn.execute("SELECT to_regclass(%s)", (f'"{schema}".jobs',)
                                ).fetchone() == (None,)  # listing created no job tables
    finally:
        drop_schema(postgres_server.url, schema)
