"""The ``outlay`` command, run in-process against real stores: a SQLite file and a real Redis
(its own namespace). The memory store is used only where a test needs a store that lacks a
method."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import anyio
import pytest

from outlay import LimitSpec, MemoryStore, Principals, Store, Window, store_from_url
from outlay.cli import main
from outlay.stores import SQLiteStore

from .pgserver import PostgresServer, drop_schema, fresh_schema
from .redisserver import RedisServer
from .storekit import REDIS_TEST_DB, drop_namespace

D = Decimal
DOC = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
WHEN = datetime(2026, 11, 23, 12, tzinfo=UTC).timestamp()


def run(argv: list[str], factory: object = None, env: dict[str, str] | None = None,
        stdout: io.StringIO | None = None) -> tuple[int, str, str]:
    out, err = stdout or io.StringIO(), io.StringIO()
    code = main(argv, store_factory=factory, stdout=out, stderr=err,  # type: ignore[arg-type]
                environ=env or {})
    return code, out.getvalue(), err.getvalue()


async def fill(store: Store, *, runs: int = 1) -> None:
    """Spend by three tenants, a child agent, a plain key and one live hold."""
    budgets = Principals(store, clock=lambda: WHEN, run_id="r1", template=[
        LimitSpec("usd", Window.month(), D("500")),
        LimitSpec("usd", Window.run(), D("50")),
        LimitSpec("tokens", Window.day(), 1_000_000),
    ])
    for name, cost in [("tenant:acme", "12.50"), ("tenant:beta", "3"), ("tenant:gamma", "7")]:
        await (await budgets.get(name).reserve({"usd": D(cost), "tokens": 100})).commit()
    agent = budgets.get("tenant:acme").child("agent:planner")
    await (await agent.reserve({"usd": D("1.25")})).commit()
    keys = budgets.get("tenant:beta").limits_at(["usd"])
    # a hold left live in the store, as a process still working would leave it
    assert (await store.reserve("live", dict.fromkeys(keys, D("2")), lease=3600)).admitted
    await store.set_limit("plain-calls", 10)


class Clock:
    """The SQLite store's clock (leases), starting at the real time, so a command that opens
    the file on the wall clock sees the same live hold; period ids come from ``WHEN``."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sqlite(tmp_path: Path) -> tuple[str, Clock]:
    """A filled SQLite file whose store clock the test holds; the URL is absolute."""
    clock = Clock()
    path = tmp_path / "budgets.db"

    async def go() -> None:
        store = SQLiteStore(path, clock=clock)
        try:
            await fill(store)
        finally:
            await store.aclose()

    anyio.run(go)
    clock.now += 65  # the hold is 65 s old
    return f"sqlite:///{path}", clock


def sqlite_factory(clock: Clock) -> object:
    return lambda url: SQLiteStore(url.removeprefix("sqlite:///"), create=False, clock=clock)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """A filled namespace of its own on the real Redis, deleted afterwards."""
    url = f"{redis_server.url(REDIS_TEST_DB)}?namespace=outlay-cli-{uuid.uuid4().hex[:10]}"

    async def go(work: str) -> None:
        store = store_from_url(url)
        try:
            if work == "fill":
                await fill(store)
            else:
                await drop_namespace(store)  # type: ignore[arg-type]
        finally:
            await store.aclose()

    anyio.run(go, "fill")
    try:
        yield url
    finally:
        anyio.run(go, "drop")


def rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines()]


# -- the store URL and options anywhere ----------------------------------------------------


def test_json_and_url_work_anywhere_and_from_the_environment(
    sqlite: tuple[str, Clock],
) -> None:
    url, _ = sqlite
    spellings = [
        ["--json", "top", url], ["top", url, "--json"], ["top", "--json", "--url", url],
        ["--url", url, "top", "--json"], ["--json", "--url", url, "top"],
    ]
    outputs = set()
    for argv in spellings:
        code, out, err = run(argv)
        assert code == 0, (argv, err)
        outputs.add(out)
    code, out, err = run(["top", "--json"], env={"OUTLAY_URL": url})
    assert code == 0, err
    outputs.add(out)
    assert len(outputs) == 1
    assert json.loads(outputs.pop())[0] == {"principal": "tenant:acme", "spent": "13.75",
                                            "held": "0", "window": "month", "periods": 1}
    # the positional URL wins over the environment
    code, _, err = run(["show", url], env={"OUTLAY_URL": "postgres://elsewhere"})
    assert code == 0, err


def test_the_readme_command_works(redis_url: str) -> None:
    """README: ``outlay top redis://127.0.0.1:6379/0 --json`` (it exited 2 before)."""
    code, out, err = run(["top", redis_url, "--json"])
    assert code == 0, err
    assert [r["principal"] for r in json.loads(out)][:1] == ["tenant:acme"]
    namespace = redis_url.rpartition("=")[2]
    assert err == f"outlay: Redis namespace {namespace!r}\n"  # named, even with --json


def test_version() -> None:
    from importlib.metadata import version

    code, out, _ = run(["--version"])
    assert (code, out) == (0, f"outlay {version('outlay')}\n")


# -- Redis: namespace named, misspelled options ---------------------------------------------


def test_the_redis_namespace_is_always_named(redis_url: str, redis_server: RedisServer) -> None:
    namespace = redis_url.rpartition("=")[2]
    code, out, err = run(["show", redis_url, "--prefix", "tenant:acme/usd/"])
    assert code == 0, err
    assert out.splitlines()[0] == f"Redis namespace {namespace!r}"
    assert rows(out)[2] == ["tenant:acme/usd/month:2026-11", "500", "13.75", "0", "486.25"]
    # The default namespace is named too: an empty answer says where it looked.
    other = f"{redis_server.url(REDIS_TEST_DB)}?namespace=outlay-cli-empty-{uuid.uuid4().hex}"
    code, out, _ = run(["show", other])
    assert (code, out.splitlines()) == (0, [f"Redis namespace {other.rpartition('=')[2]!r}",
                                            "no limits"])


def test_a_misspelled_url_option_is_one_line(redis_server: RedisServer) -> None:
    url = f"{redis_server.url(REDIS_TEST_DB)}?namepsace=outlay-cli-typo"
    code, out, err = run(["show", url])
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1
    assert "unknown option 'namepsace'" in err
    assert "did you mean 'namespace'?" in err
    # driver options are still passed through
    good = f"{redis_server.url(REDIS_TEST_DB)}?namespace=outlay-cli-{uuid.uuid4().hex}" \
           "&socket_timeout=5&max_connections=4"
    assert run(["show", good])[0] == 0


# -- figures: as written, same on every store, aligned --------------------------------------


def test_sqlite_and_redis_print_the_same_figures(sqlite: tuple[str, Clock],
                                                 redis_url: str) -> None:
    for command in (["show"], ["top"], ["top", "--unit", "tokens"], ["windows"]):
        _, on_sqlite, err = run([*command, sqlite[0]])
        assert not err
        _, on_redis, _ = run([*command, redis_url])
        assert on_redis.split("\n", 1)[1] == on_sqlite, command  # after the namespace line
        _, json_sqlite, _ = run([*command, sqlite[0], "--json"])
        _, json_redis, _ = run([*command, redis_url, "--json"])
        assert json.loads(json_sqlite) == json.loads(json_redis)


def test_amounts_print_as_written_and_numbers_right_aligned(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'caps.db'}"
    code, out, err = run(["set-cap", url, "a/usd", "1E+3", "--create"])
    assert code == 0, err
    assert out == "a/usd: new limit -> cap 1000 (spent 0, held 0, available 1000)\n"
    run(["set-cap", url, "b/usd", "7.50"])
    run(["set-cap", url, "c/calls", "12345"])
    _, out, _ = run(["show", url])
    assert out.splitlines() == [
        "KEY          CAP  SPENT  HELD  AVAILABLE",
        "a/usd    1000.00      0     0    1000.00",
        "b/usd       7.50      0     0       7.50",
        "c/calls    12345      0     0      12345",
    ]
    _, out, _ = run(["show", url, "--json"])
    assert [(r["cap"], r["available"]) for r in json.loads(out)] == [
        ("1000", "1000"), ("7.5", "7.5"), (12345, 12345)]


def test_colour_on_a_terminal_plain_when_piped(sqlite: tuple[str, Clock]) -> None:
    url, _ = sqlite

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    _, piped, _ = run(["show", url])
    assert "\x1b[" not in piped
    _, coloured, _ = run(["show", url], stdout=Terminal())
    assert "\x1b[1mKEY" in coloured  # bold header
    assert re.sub(r"\x1b\[\d+m", "", coloured) == piped
    _, no_color, _ = run(["show", url], env={"NO_COLOR": "1"}, stdout=Terminal())
    assert no_color == piped
    _, forced, _ = run(["show", url, "--color", "always"])
    assert forced == coloured
    _, never, _ = run(["--color", "never", "show", url], stdout=Terminal())
    assert never == piped


def test_an_exhausted_limit_is_red(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'full.db'}"
    run(["set-cap", url, "full/usd", "1.00", "--create"])

    async def spend() -> None:
        store = store_from_url(url)
        try:
            await store.reserve("x", {"full/usd": D("1")}, lease=60)
            await store.commit("x")
        finally:
            await store.aclose()

    anyio.run(spend)
    _, out, _ = run(["show", url, "--color", "always"])
    assert out.splitlines()[1].endswith("  \x1b[31m        0\x1b[0m")  # AVAILABLE, red


# -- holds, top ------------------------------------------------------------------------------


def test_holds_lists_reservations_not_limits(sqlite: tuple[str, Clock], redis_url: str) -> None:
    url, clock = sqlite
    code, out, err = run(["holds", url], sqlite_factory(clock))
    assert code == 0, err
    assert out.splitlines() == [
        "RESERVATION  KEY                            AMOUNT  LEASE LEFT  AGE",
        "live         tenant:beta/usd/month:2026-11       2  58m55s      1m05s",
        "             tenant:beta/usd/run:r1              2",
    ]
    _, out, _ = run(["holds", url, "--json"], sqlite_factory(clock))
    assert json.loads(out) == [{"id": "live", "amounts": {
        "tenant:beta/usd/month:2026-11": "2", "tenant:beta/usd/run:r1": "2"},
        "lease_left": 3535.0, "age": 65.0}]
    code, out, _ = run(["holds", redis_url, "--json"])  # on the server's own clock
    [hold] = json.loads(out)
    assert hold["id"] == "live"
    assert hold["amounts"] == {"tenant:beta/usd/month:2026-11": "2",
                               "tenant:beta/usd/run:r1": "2"}
    assert 3000 < hold["lease_left"] <= 3600
    assert 0 <= hold["age"] < 600
    _, out, _ = run(["holds", url, "--prefix", "tenant:acme/"], sqlite_factory(clock))
    assert out == "no live holds\n"


def test_top_stays_readable_with_many_runs(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"

    async def spend() -> None:
        budgets = Principals(url, clock=lambda: WHEN, run_id="r0", template=[
            LimitSpec("usd", Window.month(), D("500")), LimitSpec("usd", Window.run(), D("5"))])
        try:
            for n in range(40):
                budgets.new_run(f"r{n}")
                await (await budgets.get("tenant:acme").reserve({"usd": D("0.25")})).commit()
        finally:
            await budgets.aclose()
        store = store_from_url(url)
        try:  # a key made without Principals, as examples/research_agent.py makes
            await store.set_limit("run/usd", D("2"))
            await store.reserve("r", {"run/usd": D("0.98")}, lease=60)
            await store.commit("r")
        finally:
            await store.aclose()

    anyio.run(spend)
    _, out, _ = run(["top", url])
    assert rows(out) == [["PRINCIPAL", "SPENT", "HELD", "WINDOW", "PERIODS"],
                         ["tenant:acme", "10.00", "0", "month", "1"],
                         ["run", "0.98", "0", "-", "1"]]
    _, out, _ = run(["top", url, "--json"])
    assert json.loads(out)[0] == {"principal": "tenant:acme", "spent": "10", "held": "0",
                                  "window": "month", "periods": 1}
    # without the month window, the runs add up (periods of one window never overlap)
    _, out, _ = run(["top", url, "--json", "--period", "run:r7"])
    assert json.loads(out) == [{"principal": "tenant:acme", "spent": "0.25", "held": "0",
                                "window": "run", "periods": 1}]
    _, out, _ = run(["top", url, "--unit", "gpu-hours"])
    assert out == "no spend in 'gpu-hours' (units in the store: usd)\n"


def test_top_adds_up_the_runs_of_a_principal_without_a_longer_window(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"

    async def spend() -> None:
        budgets = Principals(url, run_id="a",
                             template=[LimitSpec("tokens", Window.run(), 1000)])
        try:
            for run_id, tokens in (("a", 10), ("b", 20), ("c", 30)):
                budgets.new_run(run_id)
                await (await budgets.get("agent:x").reserve({"tokens": tokens})).commit()
        finally:
            await budgets.aclose()

    anyio.run(spend)
    _, out, _ = run(["top", url, "--unit", "tokens", "--json"])
    assert json.loads(out) == [{"principal": "agent:x", "spent": 60, "held": 0,
                                "window": "run", "periods": 3}]


# -- set-cap, reset, windows -----------------------------------------------------------------


def test_set_cap_follows_the_limit_unit(sqlite: tuple[str, Clock]) -> None:
    url, _ = sqlite
    code, out, _ = run(["set-cap", url, "tenant:acme/usd/month:2026-11", "600"])
    assert code == 0
    assert "cap 500 -> cap 600" in out
    _, out, _ = run(["show", url, "--json", "--prefix", "tenant:acme/usd/month"])
    assert json.loads(out)[0]["cap"] == "600"  # still money
    code, _, err = run(["set-cap", url, "plain-calls", "2.5"])
    assert (code, "whole units" in err) == (2, True)
    code, _, err = run(["set-cap", url, "plain-calls", "-3"])
    assert (code, ">= 0" in err) == (2, True)
    code, out, _ = run(["set-cap", "--url", url, "new/usd", "5", "--money"])
    assert code == 0
    assert "new limit -> cap 5" in out


def test_reset_needs_the_explicit_flag(sqlite: tuple[str, Clock]) -> None:
    url, _ = sqlite
    key = "tenant:acme/usd/month:2026-11"
    code, _, err = run(["reset", url, key])
    assert code == 2
    assert "--zero-spend" in err
    code, out, _ = run(["reset", key, "--zero-spend"], env={"OUTLAY_URL": url})
    assert code == 0
    assert out == f"{key}: spent 13.75 -> 0 (cap 500, held 0)\n"
    code, _, err = run(["reset", url, "no/such/key", "--zero-spend"])
    assert code == 1
    assert "no/such/key" in err


def test_windows_without_and_with_a_store(sqlite: tuple[str, Clock]) -> None:
    code, out, _ = run(["--json", "windows", "--tz", "Asia/Tokyo", "--at", "2026-11-30T16:30Z"])
    assert code == 0
    periods = {r["window"]: r["period"] for r in json.loads(out)}
    assert periods == {"hour": "hour:2026-12-01T01:00+09:00", "day": "day:2026-12-01",
                       "week": "week:2026-11-30", "month": "month:2026-12"}
    code, out, _ = run(["--json", "windows", sqlite[0]])
    stored = json.loads(out)["stored"]
    month = next(r for r in stored if r["period"] == "month:2026-11")
    assert (month["unit"], month["limits"], month["spent"], month["held"]) == (
        "usd", 4, "23.75", "2")


# -- watch, prune ------------------------------------------------------------------------------


def test_watch_redraws_as_the_budget_changes(tmp_path: Path) -> None:
    path = tmp_path / "live.db"
    frames: list[int] = []

    class Spending(SQLiteStore):
        """A real SQLite store; before each frame after the first, a program spends 1."""

        async def limits(self, prefix: str = "") -> list:  # type: ignore[type-arg]
            if frames:
                await self.reserve(f"spend{len(frames)}", {"agent:x/calls": 1}, lease=60)
                await self.commit(f"spend{len(frames)}")
            frames.append(1)
            return await super().limits(prefix)

    anyio.run(lambda: _set(path))
    code, out, err = run(["watch", "--count", "3", "--interval", "0.001", "show",
                          f"sqlite:///{path}"], lambda url: Spending(path))
    assert code == 0, err
    shown = [line.split()[2] for line in out.splitlines() if line.startswith("agent:x/calls")]
    assert shown == ["0", "1", "2"]  # SPENT, frame by frame
    assert out.count("every 0.001s: outlay show") == 3


async def _set(path: Path) -> None:
    store = SQLiteStore(path)
    try:
        await store.set_limit("agent:x/calls", 10)
    finally:
        await store.aclose()


def test_watch_takes_the_url_and_json_from_outside(sqlite: tuple[str, Clock]) -> None:
    url, _ = sqlite
    code, out, err = run(["--url", url, "watch", "--count", "1", "top", "--json"])
    assert code == 0, err
    assert json.loads(out.split("\n", 1)[1])[0]["principal"] == "tenant:acme"


def test_prune_drops_only_idle_run_periods(sqlite: tuple[str, Clock]) -> None:
    url, clock = sqlite
    factory = sqlite_factory(clock)

    async def second_run() -> None:
        store = SQLiteStore(url.removeprefix("sqlite:///"), clock=clock)
        try:
            await store.reserve("r2", {"tenant:acme/usd/run:r2": D("1")}, lease=7200,
                                defaults={"tenant:acme/usd/run:r2": D("50")})
        finally:
            await store.aclose()

    clock.now += 3000
    anyio.run(second_run)  # run r2 starts 50 min after r1 ended, and holds
    clock.now += 1000
    code, out, err = run(["prune", url, "--older-than", "1h", "--json"], factory)
    assert code == 0, err
    assert json.loads(out) == {"dropped": [
        "tenant:acme/agent:planner/usd/run:r1", "tenant:acme/usd/run:r1",
        "tenant:gamma/usd/run:r1"], "periods": ["run:r1"], "kept": 2}
    # tenant:beta's run:r1 has a live hold; r2 is recent and held; months are never pruned
    _, out, _ = run(["show", url, "--json"], factory)
    keys = [r["key"] for r in json.loads(out)]
    assert "tenant:beta/usd/run:r1" in keys
    assert "tenant:acme/usd/run:r2" in keys
    assert "tenant:acme/usd/month:2026-11" in keys
    assert not [k for k in keys if k.endswith("/run:r1") and not k.startswith("tenant:beta")]
    code, out, _ = run(["prune", url, "--older-than", "1h"], factory)
    assert out == ("pruned 0 limits of 0 run periods idle for 1h00m; kept 2 run limits "
                   "(held or recent)\n")


def test_prune_on_redis(redis_url: str) -> None:
    code, out, err = run(["prune", redis_url, "--older-than", "0", "--json"])
    assert code == 0, err
    report = json.loads(out)
    assert report["dropped"] == ["tenant:acme/agent:planner/usd/run:r1",
                                 "tenant:acme/usd/run:r1", "tenant:gamma/usd/run:r1"]
    assert report["kept"] == 1  # tenant:beta's run holds
    code, out, err = run(["prune", redis_url, "--older-than", "7d", "--json"])
    assert json.loads(out)["dropped"] == []


# -- exit codes, errors ---------------------------------------------------------------------


def exit_table() -> list[tuple[int, list[str]]]:
    block = DOC.read_text().split("exits as the table says:", 1)[1]
    block = block.split("```text\n", 1)[1].split("```", 1)[0]
    table = []
    for line in block.strip().splitlines():
        code, command = line.split(None, 1)
        table.append((int(code), command.split()[1:]))
    return table


@pytest.mark.parametrize(("code", "argv"), exit_table(), ids=lambda v: " ".join(v)
                         if isinstance(v, list) else str(v))
def test_exit_codes_are_as_the_docs_say(
    code: int, argv: list[str], sqlite: tuple[str, Clock], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)  # sqlite:///budgets.db is the filled file
    got, out, err = run(argv)
    assert got == code, (out, err)
    if code:
        assert err.strip(), "a failure says why on stderr"
        assert "Traceback" not in err
    assert not (tmp_path / "missing.db").exists()


def test_store_without_a_method_is_reported() -> None:
    class Opaque(MemoryStore):
        limits = Store.limits
        holds = Store.holds

    for command in ("show", "holds"):
        code, _, err = run([command, "memory://"], lambda url: Opaque())
        assert code == 1
        assert "does not support" in err


def test_console_entry_point_runs_as_a_program() -> None:
    done = subprocess.run([sys.executable, "-m", "outlay.cli", "show", "memory://"],
                          capture_output=True, text=True, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, "no limits")
    done = subprocess.run([sys.executable, "-m", "outlay.cli", "show", "--bogus"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert "unrecognized arguments: --bogus" in done.stderr


def test_the_session_in_the_docs_is_real(
    sqlite: tuple[str, Clock], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/cli.md shows a session; every command in it prints exactly what the page says."""
    _, clock = sqlite
    session = DOC.read_text().split("## A session", 1)[1].split("```text\n", 1)[1]
    session = session.split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    commands = 0
    for chunk in session.strip().split("\n\n"):
        command, *expected = chunk.splitlines()
        argv = command.removeprefix("$ outlay ").split()
        uses_store = argv[0] != "windows" and "missing" not in argv[1]
        _, out, err = run(argv, sqlite_factory(clock) if uses_store else None)
        assert (out + err).splitlines() == expected, command
        commands += 1
    assert commands == 6


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
            ("tenant:acme/usd/month:2030-03", "5.25", "0.5")]
        code, out, _ = run(["--json", "holds", url])
        assert [(r["id"], r["amounts"]) for r in json.loads(out)] == [
            ("live", {"tenant:acme/usd/month:2030-03": "0.5"})]
        code, out, _ = run(["--json", "top", url, "-n", "1"])
        assert [r["principal"] for r in json.loads(out)] == ["tenant:acme"]
        code, out, err = run(["set-cap", url, "tenant:acme/usd/month:2030-03", "30"])
        assert code == 0, err
        assert "cap 20 -> cap 30" in out
        code, out, err = run(["reset", url, "tenant:acme/usd/month:2030-03", "--zero-spend"])
        assert code == 0, err
        assert "spent 5.25 -> 0 (cap 30, held 0.5)" in out
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
