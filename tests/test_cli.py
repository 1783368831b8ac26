"""The ``outlay`` command, run in-process against a memory store it is handed."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import anyio
import pytest

from outlay import LimitSpec, MemoryStore, Principals, Store, Window, store_from_url
from outlay.cli import main

from .pgserver import PostgresServer, drop_schema, fresh_schema
from .redisserver import RedisServer
from .storekit import REDIS_TEST_DB, drop_namespace

D = Decimal


def run(argv: list[str], store: Store | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    factory = (lambda url: store) if store is not None else None
    code = main(argv, store_factory=factory, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def store() -> MemoryStore:
    """A store with spend by three tenants, a child agent, and one live hold."""
    store = MemoryStore()
    when = datetime(2026, 11, 23, 12, tzinfo=UTC).timestamp()
    budgets = Principals(store, clock=lambda: when, run_id="r1", template=[
        LimitSpec("usd", Window.month(), D("500")),
        LimitSpec("usd", Window.run(), D("50")),
        LimitSpec("tokens", Window.day(), 1_000_000),
    ])

    async def fill() -> None:
        for name, cost in [("tenant:acme", "12.50"), ("tenant:beta", "3"), ("tenant:gamma", "7")]:
            await (await budgets.get(name).reserve({"usd": D(cost), "tokens": 100})).commit()
        agent = budgets.get("tenant:acme").child("agent:planner")
        await (await agent.reserve({"usd": D("1.25")})).commit()
        keys = budgets.get("tenant:beta").limits_at(["usd"])
        # a hold left live in the store, as a process still working would leave it
        store.reserve_nowait("live", dict.fromkeys(keys, D("2")), lease=3600)

    anyio.run(fill)
    store.set_limit_nowait("plain-calls", 10)
    return store


def test_show_lists_every_limit_with_exact_money(store: MemoryStore) -> None:
    code, out, _ = run(["show", "memory://"], store)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["KEY", "CAP", "SPENT", "HELD", "AVAILABLE"]
    assert any(line.split() == ["tenant:acme/usd/month:2026-11", "500", "13.75", "0.00", "486.25"]
               for line in lines)
    assert any(line.startswith("plain-calls") for line in lines)
    code, out, _ = run(["--json", "show", "memory://", "--prefix", "tenant:acme/usd/"], store)
    rows = json.loads(out)
    assert [r["key"] for r in rows] == ["tenant:acme/usd/month:2026-11",
                                        "tenant:acme/usd/run:r1"]
    assert rows[0]["spent"] == "13.75"  # money stays a string in JSON: exact


def test_holds_shows_only_live_holds(store: MemoryStore) -> None:
    code, out, _ = run(["--json", "holds", "memory://"], store)
    assert code == 0
    assert {r["key"] for r in json.loads(out)} == {"tenant:beta/usd/month:2026-11",
                                                   "tenant:beta/usd/run:r1"}
    assert all(r["held"] == "2" for r in json.loads(out))


def test_top_ranks_principals_by_spend(store: MemoryStore) -> None:
    code, out, _ = run(["--json", "top", "memory://", "--period", "month:2026-11", "-n", "3"],
                       store)
    assert code == 0
    assert [(r["principal"], r["spent"]) for r in json.loads(out)] == [
        ("tenant:acme", "13.75"), ("tenant:gamma", "7"), ("tenant:beta", "3")]
    code, out, _ = run(["top", "memory://", "--unit", "tokens"], store)
    assert "tenant:acme" in out
    assert "100" in out
    code, out, _ = run(["top", "memory://", "--unit", "gpu-hours"], store)
    assert "no spend in 'gpu-hours'" in out


def test_windows_without_and_with_a_store(store: MemoryStore) -> None:
    code, out, _ = run(["--json", "windows", "--tz", "Asia/Tokyo", "--at", "2026-11-30T16:30Z"])
    assert code == 0
    periods = {r["window"]: r["period"] for r in json.loads(out)}
    assert periods == {"hour": "hour:2026-12-01T01:00+09:00", "day": "day:2026-12-01",
                       "week": "week:2026-11-30", "month": "month:2026-12"}
    code, out, _ = run(["--json", "windows", "memory://"], store)
    stored = json.loads(out)["stored"]
    month = next(r for r in stored if r["period"] == "month:2026-11")
    assert (month["unit"], month["limits"], month["spent"], month["held"]) == (
        "usd", 4, "23.75", "2.00")


def test_set_cap_follows_the_limit_unit(store: MemoryStore) -> None:
    code, out, _ = run(["set-cap", "memory://", "tenant:acme/usd/month:2026-11", "600"], store)
    assert code == 0
    assert "cap 500 -> cap 600" in out
    assert store.usage_nowait("tenant:acme/usd/month:2026-11").cap == D("600")  # still Decimal
    assert isinstance(store.usage_nowait("tenant:acme/usd/month:2026-11").cap, Decimal)
    code, _, err = run(["set-cap", "memory://", "plain-calls", "2.5"], store)
    assert code == 1
    assert "whole units" in err
    code, _, err = run(["set-cap", "memory://", "plain-calls", "-3"], store)
    assert code == 1
    assert ">= 0" in err
    code, out, _ = run(["set-cap", "memory://", "new/usd", "5", "--money"], store)
    assert code == 0
    assert "new limit -> cap 5" in out
    assert store.usage_nowait("new/usd").cap == D(5)


def test_reset_needs_the_explicit_flag(store: MemoryStore) -> None:
    key = "tenant:acme/usd/month:2026-11"
    code, out, _ = run(["reset", "memory://", key], store)
    assert code == 2
    assert "--zero-spend" in out
    assert store.usage_nowait(key).spent == D("13.75")
    code, out, _ = run(["reset", "memory://", key, "--zero-spend"], store)
    assert code == 0
    assert "spent 13.75 -> 0" in out
    assert store.usage_nowait(key).spent == 0
    code, _, err = run(["reset", "memory://", "no/such/key", "--zero-spend"], store)
    assert code == 1
    assert "no limit is set" in err


def test_bad_url_and_missing_database_are_clear_errors(tmp_path: Path) -> None:
    code, _, err = run(["show", "mysql://nowhere"])
    assert code == 1
    assert "unknown store URL" in err
    missing = tmp_path / "budgets.db"
    code, _, err = run(["show", f"sqlite:///{missing}"])
    assert code == 1
    assert "no database at" in err
    code, _, err = run(["top", f"sqlite:///{missing}"])
    assert code == 1
    assert "no database" in err
    assert not missing.exists()  # a read command never creates the file


def test_usage_errors_exit_2() -> None:
    assert run([])[0] == 2
    assert run(["show"])[0] == 2
    code, _, err = run(["windows", "--tz", "Mars/Base"])
    assert code == 1
    assert "time zone" in err


def test_store_without_enumeration_is_reported() -> None:
    class Opaque(MemoryStore):
        limits = Store.limits

    code, _, err = run(["show", "memory://"], Opaque())
    assert code == 1
    assert "does not support" in err
    assert "Store.limits" in err


def test_console_entry_point_runs_as_a_program() -> None:
    done = subprocess.run([sys.executable, "-m", "outlay.cli", "show", "memory://"],
                          capture_output=True, text=True, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, "no limits")


def test_the_session_in_the_docs_is_real(
    store: MemoryStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/cli.md shows a session; every command in it prints exactly what the page says."""
    page = (Path(__file__).resolve().parent.parent / "docs" / "cli.md").read_text()
    session = page.split("## A session", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    commands = 0
    for chunk in session.strip().split("\n\n"):
        command, *expected = chunk.splitlines()
        argv = command.removeprefix("$ outlay ").split()
        url = argv[1] if argv[0] != "windows" else None
        uses_store = url is not None and "missing" not in url
        _, out, err = run(argv, store if uses_store else None)
        assert (out + err).splitlines() == expected, command
        commands += 1
    assert commands == 6


def test_cli_against_a_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "budgets.db"
    url = f"sqlite:///{path}"  # an absolute path: sqlite:////tmp/.../budgets.db
    code, _, err = run(["show", url])
    assert code == 1
    assert "no database" in err
    assert not path.exists()
    code, out, err = run(["set-cap", url, "tenant:acme/usd/month:2026-11", "20.00", "--create"])
    assert code == 0, err
    assert path.exists()

    async def spend() -> None:
        when = datetime(2026, 11, 23, tzinfo=UTC).timestamp()
        budgets = Principals(url, clock=lambda: when, run_id="r1",
                             template=[LimitSpec("usd", Window.month(), D("500"))])
        try:
            held = await budgets.get("tenant:acme").reserve({"usd": D("5")})
            await held.commit({"usd": D("4.25")})
        finally:
            await budgets.aclose()

    anyio.run(spend)
    code, out, err = run(["--json", "show", url])
    assert code == 0, err
    assert [(r["key"], r["cap"], r["spent"]) for r in json.loads(out)] == [
        ("tenant:acme/usd/month:2026-11", "20.00", "4.25")]
    code, out, _ = run(["--json", "top", url])
    assert [r["principal"] for r in json.loads(out)] == ["tenant:acme"]
    code, out, err = run(["reset", url, "tenant:acme/usd/month:2026-11", "--zero-spend"])
    assert code == 0, err
    assert "spent 4.25 -> 0" in out
    code, out, _ = run(["--json", "show", url])
    assert json.loads(out)[0]["spent"] == "0"
    code, _, err = run(["show", f"sqlite:///{tmp_path / 'elsewhere.db'}"])
    assert code == 1
    assert not (tmp_path / "elsewhere.db").exists()


def test_cli_against_a_real_redis(redis_server: RedisServer) -> None:
    from outlay.stores._redis import RedisStore

    url = f"{redis_server.url(REDIS_TEST_DB)}?namespace=outlay-cli-{uuid.uuid4().hex[:10]}"

    async def fill() -> None:
        when = datetime(2030, 3, 10, tzinfo=UTC).timestamp()
        budgets = Principals(url, clock=lambda: when, run_id="r1",
                             template=[LimitSpec("usd", Window.month(), D("20"))])
        try:
            acme = budgets.get("tenant:acme")
            await (await acme.reserve({"usd": D("4.25")})).commit()
            await (await acme.child("agent:x").reserve({"usd": D("1")})).commit()
        finally:
            await budgets.aclose()

    async def drop() -> None:
        store = RedisStore.from_url(url)
        try:
            await drop_namespace(store)
        finally:
            await store.aclose()

    anyio.run(fill)
    try:
        code, out, err = run(["--json", "show", url])
        assert code == 0, err
        assert [(r["key"], r["spent"]) for r in json.loads(out)] == [
            ("tenant:acme/agent:x/usd/month:2030-03", "1"),
            ("tenant:acme/usd/month:2030-03", "5.25")]
        code, out, _ = run(["--json", "top", url, "-n", "1"])
        assert [r["principal"] for r in json.loads(out)] == ["tenant:acme"]
        code, out, err = run(["set-cap", url, "tenant:acme/usd/month:2030-03", "30"])
        assert code == 0, err
        assert "cap 20 -> cap 30" in out
        code, out, err = run(["reset", url, "tenant:acme/usd/month:2030-03", "--zero-spend"])
        assert code == 0, err
        assert "spent 5.25 -> 0 (cap 30, held 0)" in out
        code, out, err = run(["--json", "show", url])
        assert [(r["key"], r["cap"], r["spent"]) for r in json.loads(out)] == [
            ("tenant:acme/agent:x/usd/month:2030-03", "20", "1"),  # other limits keep theirs
            ("tenant:acme/usd/month:2030-03", "30", "0")]
        code, _, err = run(["reset", url, "no/such/key", "--zero-spend"])
        assert code == 1
        assert "no/such/key" in err
    finally:
        anyio.run(drop)


def test_cli_against_a_real_postgres(postgres_server: PostgresServer) -> None:
    schema = fresh_schema()
    url = postgres_server.schema_url(schema)

    async def fill() -> None:
        when = datetime(2030, 3, 10, tzinfo=UTC).timestamp()
        budgets = Principals(url, clock=lambda: when, run_id="r1",
                             template=[LimitSpec("usd", Window.month(), D("20"))])
        try:
            acme = budgets.get("tenant:acme")
            await (await acme.reserve({"usd": D("4.25")})).commit()
            await (await acme.child("agent:x").reserve({"usd": D("1")})).commit()
        finally:
            await budgets.aclose()
        store = store_from_url(url)  # a hold left live, as a working process would leave it
        try:
            await store.reserve("live", {"tenant:acme/usd/month:2030-03": D("0.50")},
                                lease=3600)
        finally:
            await store.aclose()

    try:
        code, out, err = run(["--json", "show", url])  # a read creates nothing
        assert (code, json.loads(out)) == (0, []), err
        assert not schema_exists(postgres_server, schema)
        anyio.run(fill)
        code, out, err = run(["--json", "show", url])
        assert code == 0, err
        assert [(r["key"], r["spent"], r["held"]) for r in json.loads(out)] == [
            ("tenant:acme/agent:x/usd/month:2030-03", "1", "0"),
            ("tenant:acme/usd/month:2030-03", "5.25", "0.50")]
        code, out, _ = run(["--json", "holds", url])
        assert [r["key"] for r in json.loads(out)] == ["tenant:acme/usd/month:2030-03"]
        code, out, _ = run(["--json", "top", url, "-n", "1"])
        assert [r["principal"] for r in json.loads(out)] == ["tenant:acme"]
        code, out, err = run(["set-cap", url, "tenant:acme/usd/month:2030-03", "30"])
        assert code == 0, err
        assert "cap 20 -> cap 30" in out
        code, out, err = run(["reset", url, "tenant:acme/usd/month:2030-03", "--zero-spend"])
        assert code == 0, err
        assert "spent 5.25 -> 0 (cap 30, held 0.50)" in out
        code, _, err = run(["reset", url, "no/such/key", "--zero-spend"])
        assert code == 1
        assert "no/such/key" in err
    finally:
        drop_schema(postgres_server.url, schema)


def schema_exists(server: PostgresServer, schema: str) -> bool:
    import psycopg

    with psycopg.connect(server.url) as conn:
        found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
        return found.fetchone() is not None
