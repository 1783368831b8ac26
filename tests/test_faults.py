"""Regression tests for the failures fault injection found (issue 17), one scenario each.

Each test forces its scenario on real parts (a real Redis, in its own namespace; real SQLite
files; a loopback proxy that holds back requests or drops replies) and names the item of
issue 17 it guards in its docstring.
"""

from __future__ import annotations

import asyncio
import decimal
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import anyio
import pytest

from outlay import (
    AtomicBudget,
    ConfigurationError,
    KeyedBudget,
    Store,
    StoreError,
    StoreUnavailable,
    UnknownLimit,
)
from outlay.stores import MemoryStore, SQLiteStore
from outlay.stores._redis import _SCRIPTS, MAX_UNITS, RedisStore

from .loops import every_loop  # noqa: F401 - anyio_backend: asyncio, trio and uvloop
from .netproxy import Proxy
from .redisserver import RedisServer
from .storekit import REDIS_TEST_DB, STORE_FACTORIES, redis_store_at

pytestmark = pytest.mark.anyio


@pytest.fixture(params=sorted(STORE_FACTORIES))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with STORE_FACTORIES[request.param](tmp_path, request) as opened:
        yield opened


@pytest.fixture
async def redis_store(redis_server: RedisServer) -> AsyncIterator[RedisStore]:
    async with redis_store_at(redis_server, period_grace=1) as opened:
        yield opened


async def raw(store: RedisStore, *command: str | int) -> object:
    """Run one Redis command on the store's own client (on its bridge loop under trio)."""

    async def run() -> object:
        return await store.client.execute_command(*command)

    return await store._call(run)


# -- 1-6: spend lost or counted wrong --------------------------------------------------------


async def test_commit_with_unknown_outcome_is_never_released(
    redis_server: RedisServer, redis_store: RedisStore
) -> None:
    """Item 1: every attempt of a commit is delayed past the client's timeout, so ``commit``
    raises ``StoreUnavailable``; ``async with`` must not then release the hold, because the
    delayed commit reaches Redis afterwards and must still count."""
    with Proxy(redis_server.host, redis_server.port) as proxy:
        url = (f"redis://127.0.0.1:{proxy.port}/{REDIS_TEST_DB}?socket_timeout=0.3"
               "&socket_connect_timeout=2")
        slow = RedisStore.from_url(url, namespace=redis_store.namespace)
        try:
            budget = KeyedBudget(slow)
            await budget.set_limit("usd", Decimal("10"))
            # The held EVALSHAs must find the script cached: on a server that has not run it
            # yet they would answer NOSCRIPT when flushed and run nothing (their client gone,
            # none falls back to EVAL), whatever ran before this test.
            await raw(redis_store, "SCRIPT", "LOAD", _SCRIPTS["commit"].source)
            commit_sha = _SCRIPTS["commit"].sha.encode()
            with pytest.raises(StoreUnavailable):
                async with budget.reserve({"usd": Decimal("1")}) as reservation:
                    proxy.hold_when(lambda chunk: commit_sha in chunk)
                    await reservation.commit({"usd": Decimal("2")})
            proxy.hold_when(None)
            assert reservation.state == "held"  # neither committed nor released, as far as known
            assert proxy.flush() >= 1  # the delayed commits reach Redis now
        finally:
            await slow.aclose()
    usage = await redis_store.usage("usd")
    assert (usage.spent, usage.held) == (Decimal("2"), 0)


async def test_a_commit_whose_reply_is_lost_is_retried_and_counted_once(
    redis_server: RedisServer, redis_store: RedisStore
) -> None:
    """Item 1 (lost replies): the commit runs but every reply is lost, so it raises
    ``StoreUnavailable``; retried once the network is back it answers as a retry, and the
    spend is counted exactly once (nothing released, nothing doubled)."""
    with Proxy(redis_server.host, redis_server.port) as proxy:
        url = (f"redis://127.0.0.1:{proxy.port}/{REDIS_TEST_DB}?socket_timeout=0.3"
               "&socket_connect_timeout=2")
        lossy = RedisStore.from_url(url, namespace=redis_store.namespace)
        try:
            budget = KeyedBudget(lossy)
            await budget.set_limit("usd", Decimal("10"))
            async with budget.reserve({"usd": Decimal("1")}) as reservation:
                proxy.drop_replies = True
                with pytest.raises(StoreUnavailable):
                    await reservation.commit({"usd": Decimal("3")})
                proxy.drop_replies = False
                await reservation.commit({"usd": Decimal("3")})
            assert reservation.state == "committed"
        finally:
            await lossy.aclose()
    usage = await redis_store.usage("usd")
    assert (usage.spent, usage.held) == (Decimal("3"), 0)


async def test_a_shorter_hold_does_not_cut_a_period_limits_expiry(
    redis_store: RedisStore,
) -> None:
    """Item 2: a reserve with a short lease must not move a period limit's expiry in under a
    live hold with a longer lease (the limit would vanish and its spend restart from zero)."""
    budget = KeyedBudget(redis_store)
    period_end = {"usd/day": time.time()}  # the period is ending now
    defaults = {"usd/day": Decimal("10")}
    long = await budget.reserve({"usd/day": Decimal("1")}, lease=600, defaults=defaults,
                                expire_at=period_end)
    short = await budget.reserve({"usd/day": Decimal("1")}, lease=1, defaults=defaults,
                                 expire_at=period_end)
    ttl = await raw(redis_store, "PTTL", redis_store._key("l", "usd/day"))
    assert isinstance(ttl, int)
    assert ttl > 590_000  # outlives the long hold, not just the short one
    await short.release()
    await long.commit()
    assert (await budget.usage("usd/day")).spent == Decimal("1")


async def test_a_bad_expire_at_takes_nothing_on_redis(redis_store: RedisStore) -> None:
    """Item 3 (first half): an out-of-range ``expire_at`` is refused before anything is
    written; no hold of 1 is left on the first limit without a reservation record."""
    await redis_store.set_limit("calls", 5)
    with pytest.raises(ValueError, match="expire_at"):
        await redis_store.reserve("r1", {"calls": 1, "day": 1}, lease=60,
                                  defaults={"day": 5}, expire_at={"day": 1e17})
    assert (await redis_store.usage("calls")).held == 0
    assert await raw(redis_store, "EXISTS", redis_store._key("r", "r1")) == 0


async def test_a_commit_that_overflows_a_limit_adds_nothing_anywhere(
    redis_store: RedisStore,
) -> None:
    """Item 3 (second half): a commit whose second limit cannot take the spend (its counter
    would overflow) must not have added spend to the first, nor add it again on retry."""
    await redis_store.set_limit("a", 100)
    await redis_store.set_limit("b", MAX_UNITS)
    assert (await redis_store.reserve("r1", {"a": 1, "b": 0}, lease=60)).admitted
    await raw(redis_store, "HSET", redis_store._key("l", "b"), "spent", str(2**63 - 1))
    for _ in range(2):  # the commit, then its retry
        with pytest.raises(ValueError, match="cannot count"):
            await redis_store.commit("r1", {"a": 1, "b": 1})
    usage = await redis_store.usage("a")
    assert (usage.spent, usage.held) == (0, 1)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_commit_that_raises_changes_nothing(kind: str, tmp_path: Path) -> None:
    """Item 4: a commit that raises (an amount too large to count) must not have subtracted
    the hold already; the release that follows gives it back once, and the cap holds."""
    store: Store = MemoryStore() if kind == "memory" else SQLiteStore(tmp_path / "o.db")
    budget = KeyedBudget(store)
    try:
        await budget.set_limit("usd", Decimal("10"))
        with pytest.raises(ValueError, match="too large"):
            async with budget.reserve({"usd": Decimal("1")}) as reservation:
                await reservation.commit({"usd": Decimal("1E+9999999")})
        usage = await budget.usage("usd")
        assert (usage.spent, usage.held) == (0, 0)
        assert await budget.try_reserve({"usd": Decimal("10.5")}) is None
    finally:
        await store.aclose()


async def test_admission_ignores_the_callers_decimal_context(store: Store) -> None:
    """Item 5: under ``decimal.localcontext(prec=4)`` 999.99 is recorded as 999.99 (not 1000),
    no phantom hold is left, and the 0.01 that remains is all that can still be admitted."""
    budget = KeyedBudget(store)
    await budget.set_limit("usd", Decimal("1000"))
    with decimal.localcontext() as context:
        context.prec = 4
        async with budget.reserve({"usd": Decimal("999.99")}) as reservation:
            await reservation.commit()
        usage = await budget.usage("usd")
        assert (usage.spent, usage.held) == (Decimal("999.99"), 0)
        assert usage.available == Decimal("0.01")
        assert await budget.try_reserve({"usd": Decimal("0.02")}) is None
        last = await budget.try_reserve({"usd": Decimal("0.01")})
        assert last is not None
        await last.release()


def test_money_policy_ignores_the_callers_decimal_context() -> None:
    """Item 5 (money policy): ``admits`` adds in outlay's exact context, so under
    ``prec=4`` 999.99 + 0.02 is not rounded to 1000 and admitted on a cap of 1000."""
    from outlay import BudgetCap, WindowState, admits

    cap = BudgetCap(month=Decimal("1000"))
    with decimal.localcontext() as context:
        context.prec = 4
        decision = admits(Decimal("0.02"), {"month": WindowState(spent=Decimal("999.99"))}, cap)
        assert not decision.admitted
        assert "over the cap by 0.01" in decision.reason


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_native_cancel_right_after_an_uncontended_grant_gives_it_back() -> None:
    """Item 6: ``Task.cancel()`` landing on the shielded checkpoint right after an uncontended
    grant (anyio #398: a native cancel passes it) must give the unit back."""
    budget = AtomicBudget(1)
    task = asyncio.get_running_loop().create_task(budget.acquire(1))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert budget.available == 1
    assert budget.statistics().reserved == 0


# -- 9: other people's SQLite files --------------------------------------------------------


def _snapshot(path: Path) -> dict[str, bytes]:
    """Every file of the database (main file, WAL, shared memory, journal) with its bytes."""
    return {p.name: p.read_bytes() for p in sorted(path.parent.glob(path.name + "*"))}


def _cli(argv: list[str]) -> tuple[int, str]:
    import io

    from outlay.cli import main

    err = io.StringIO()
    code = main(argv, stdout=io.StringIO(), stderr=err)
    return code, err.getvalue()


async def test_an_application_database_is_refused_and_left_untouched(tmp_path: Path) -> None:
    """Item 9: a SQLite file that is not outlay's (an application's, with its own ``limits``
    table) is refused by the library and by the CLI's read commands, byte for byte untouched:
    no outlay tables, no ``user_version``, no switch to WAL."""
    path = _application_database(tmp_path)
    before = _snapshot(path)
    store = SQLiteStore(path)
    try:
        with pytest.raises(ConfigurationError, match="not an outlay database"):
            await store.set_limit("usd", Decimal("5"))
        with pytest.raises(ConfigurationError, match="not an outlay database"):
            await store.limits()
    finally:
        await store.aclose()
    assert _snapshot(path) == before


def test_the_cli_refuses_an_application_database_untouched(tmp_path: Path) -> None:
    """Item 9: the CLI's read commands refuse another application's database, untouched."""
    path = _application_database(tmp_path)
    before = _snapshot(path)
    for command in ("show", "holds", "top"):
        code, err = _cli([command, f"sqlite:///{path}"])
        assert code == 1
        assert "not an outlay database" in err
    assert _snapshot(path) == before


def _application_database(tmp_path: Path) -> Path:
    import sqlite3

    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE limits (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO limits (name) VALUES ('theirs')")
    conn.close()
    return path


async def test_a_newer_schema_is_refused_before_switching_to_wal(tmp_path: Path) -> None:
    """Item 9: an outlay database of a newer schema is refused without being switched to WAL
    (or changed in any other way) first."""
    import sqlite3

    from outlay.stores._sqlite import APPLICATION_ID

    path = tmp_path / "newer.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("PRAGMA user_version = 99")
        conn.execute("CREATE TABLE future (x)")
    conn.close()
    before = _snapshot(path)
    store = SQLiteStore(path)
    try:
        with pytest.raises(ConfigurationError, match="schema version 99"):
            await store.usage("usd")
    finally:
        await store.aclose()
    assert _snapshot(path) == before
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()


def test_show_on_an_empty_file_does_not_make_it_a_database(tmp_path: Path) -> None:
    """Item 9: ``outlay show`` on an empty file reports it and leaves it empty."""
    path = tmp_path / "empty.db"
    path.touch()
    code, err = _cli(["show", f"sqlite:///{path}"])
    assert code == 1
    assert "empty, not an outlay database" in err
    assert _snapshot(path) == {"empty.db": b""}


async def test_an_outlay_database_is_still_opened(tmp_path: Path) -> None:
    """Item 9 (the other side): a database outlay made, and one made before outlay stamped its
    ``application_id`` (schema 1, exactly outlay's tables), open as before."""
    import sqlite3

    path = tmp_path / "ours.db"
    store = SQLiteStore(path)
    await store.set_limit("usd", Decimal("5"))
    await store.aclose()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA application_id = 0")  # as an older outlay left it
    conn.close()
    reopened = SQLiteStore(path, create=False)
    try:
        assert (await reopened.usage("usd")).cap == Decimal("5")
    finally:
        await reopened.aclose()


def test_sqlite_errors_are_mapped_by_result_code_not_message() -> None:
    """Store contract (issue 12): a SQLite error is classified by ``sqlite_errorcode``; its
    message text (which varies by version and locale) plays no part."""
    import sqlite3

    from outlay.stores._sqlite import _map_error

    def error(message: str, code: int) -> sqlite3.Error:
        exc = sqlite3.OperationalError(message)
        exc.sqlite_errorcode = code  # what the driver sets on every error it raises
        return exc

    assert type(_map_error(error("database is locked", sqlite3.SQLITE_CONSTRAINT), "x")) \
        is StoreError
    assert type(_map_error(error("no message here", sqlite3.SQLITE_BUSY), "x")) \
        is StoreUnavailable
    assert type(_map_error(error("", sqlite3.SQLITE_IOERR_SHORT_READ), "x")) is StoreUnavailable


# -- 10-13: other people's secrets -----------------------------------------------------------

SECRET = "sk-live-9f8e7d6c5b4a"


def _chained(how: str) -> BaseException:
    """An SDK-style error whose own message is clean but which carries the key elsewhere."""
    if how == "cause":
        try:
            raise ConnectionError(f"POST /v1 failed: Authorization: Bearer {SECRET}")
        except ConnectionError as inner:
            try:
                raise RuntimeError("transport failed") from inner
            except RuntimeError as outer:
                return outer
    if how == "context":
        try:
            raise ConnectionError(f"bad key {SECRET}")
        except ConnectionError:
            try:
                raise RuntimeError("transport failed")
            except RuntimeError as outer:
                return outer
    if how == "note":
        error = RuntimeError("transport failed")
        error.add_note(f"request headers: {{'x-api-key': '{SECRET}'}}")
        return error
    return ExceptionGroup("several failures", [ValueError(f"key={SECRET}")])


@pytest.mark.parametrize("how", ["cause", "context", "note", "group"])
async def test_a_secret_in_an_exception_chain_never_reaches_a_traceback(how: str) -> None:
    """Item 10: a secret in an exception's ``__cause__``, ``__context__``, notes or group
    members (how SDKs wrap transport errors) is caught like one in its message: the tool
    raises ``SecretLeak`` with nothing chained, so a logged traceback cannot show the key."""
    import traceback

    from outlay import EgressAuditHook, SecretLeak

    hook = EgressAuditHook(environ={"API_KEY": SECRET})

    @hook.tool(endpoint="https://api.invalid/v1", secrets={"key": "API_KEY"})
    async def send(key: object) -> str:
        raise _chained(how)

    with pytest.raises(SecretLeak) as info:
        await send()
    rendered = "".join(traceback.format_exception(info.value))
    assert SECRET not in rendered
    assert info.value.__cause__ is None
    assert info.value.__context__ is None


@pytest.mark.parametrize("endpoint", [
    "http://api.example.invalid/v1", "ftp://files.invalid/", "api.example.invalid",
    "http://127.0.0.1:8080/v1",
])
def test_a_non_https_endpoint_is_refused_at_declaration(endpoint: str) -> None:
    """Item 12: egress is TLS-only and fails closed: a tool declared with a non-https
    endpoint is refused (loopback http too, unless explicitly allowed)."""
    from outlay import EgressAuditHook

    hook = EgressAuditHook(environ={"API_KEY": SECRET})
    with pytest.raises(ValueError, match="https"):
        hook.tool(lambda key: "ok", endpoint=endpoint, secrets={"key": "API_KEY"}, name="t")


async def test_a_computed_http_endpoint_is_refused_at_call_time() -> None:
    """Item 12: an endpoint computed per invocation is checked before each call; an http://
    one is refused and the tool does not run."""
    from structlog.testing import capture_logs

    from outlay import EgressAuditHook, ToolDispatcher, ToolInvocation

    hook = EgressAuditHook(environ={"API_KEY": SECRET})
    ran: list[str] = []

    @hook.tool(endpoint=lambda inv: f"{inv.arguments['scheme']}://files.invalid/up",
               secrets={"key": "API_KEY"})
    def upload(scheme: str, key: object) -> str:
        ran.append(scheme)
        return "sent"

    dispatcher = ToolDispatcher([upload], [hook])
    with capture_logs() as events:
        refused = await dispatcher.dispatch(ToolInvocation("c1", "upload", {"scheme": "http"}))
        sent = await dispatcher.dispatch(ToolInvocation("c2", "upload", {"scheme": "https"}))
    assert refused.skipped
    assert "not https" in str(refused.output)
    assert sent.output == "sent"
    assert ran == ["https"]
    assert [e["event"] for e in events if e["event"] == "outlay.egress.refused"] == [
        "outlay.egress.refused"]


def test_loopback_http_needs_an_explicit_logged_opt_in(caplog: pytest.LogCaptureFixture
                                                       ) -> None:
    """Item 12: ``allow_insecure_loopback=True`` admits http:// to loopback only, and says so
    as a warning; a non-loopback http endpoint is still refused."""
    import logging

    from outlay import EgressAuditHook

    with caplog.at_level(logging.WARNING, logger="outlay"):
        hook = EgressAuditHook(environ={"API_KEY": SECRET}, allow_insecure_loopback=True)
        hook.tool(lambda key: "ok", endpoint="http://127.0.0.1:8080/v1",
                  secrets={"key": "API_KEY"}, name="local")
        with pytest.raises(ValueError, match="https"):
            hook.tool(lambda key: "ok", endpoint="http://api.invalid/v1",
                      secrets={"key": "API_KEY"}, name="remote")
    events = [getattr(r, "event", None) for r in caplog.records]
    assert "outlay.egress.insecure_loopback_allowed" in events
    assert "outlay.egress.insecure_endpoint" in events


@pytest.mark.parametrize("url", [
    "redis://127.0.0.1:6379/0?password=hunter2-pw&decimal_places=many",
    "redis://127.0.0.1:6379/0?password=hunter2-pw&fail_open=perhaps",
    "redis+tls://:hunter2-pw@cache.invalid:6380/0",
    "sqlite://:hunter2-pw@host/x.db",
])
def test_a_password_in_a_store_url_is_never_echoed(url: str) -> None:
    """Item 11: a password in a Redis URL's query (``?password=...``) or user info, in a URL
    outlay refuses, appears neither in the ``ConfigurationError`` nor in the CLI's output."""
    import io

    from outlay.cli import main
    from outlay.stores import store_from_url

    with pytest.raises(ConfigurationError) as info:
        store_from_url(url)
    assert "hunter2" not in str(info.value)
    out, err = io.StringIO(), io.StringIO()
    assert main(["show", url], stdout=out, stderr=err) == 1
    assert "hunter2" not in out.getvalue() + err.getvalue()
    assert "***" in err.getvalue()


async def test_a_fail_open_admission_is_a_warning_in_stdlib_logging(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Item 13: with structlog not configured (``logging.basicConfig(level=DEBUG)``-style
    applications), a Redis store with ``fail_open`` that admits while Redis is down logs a
    WARNING through stdlib logging, and outlay's info events reach it too."""
    import logging

    from outlay.stores import store_from_url

    from .redisserver import free_port

    down = store_from_url(f"redis://127.0.0.1:{free_port()}/0?fail_open=true"
                          "&socket_connect_timeout=0.5")
    budget = KeyedBudget(down)
    try:
        with caplog.at_level(logging.DEBUG):
            reservation = await budget.reserve({"usd": Decimal("1000")})
            await reservation.release()
    finally:
        await down.aclose()
    warnings = [r for r in caplog.records
                if r.levelno == logging.WARNING and r.name == "outlay"
                and getattr(r, "event", None) == "outlay.store.failed_open"]
    assert [getattr(r, "fields", {})["operation"] for r in warnings] == ["reserve", "release"]
    assert "outlay.store.failed_open" in warnings[0].getMessage()
    assert any(getattr(r, "event", None) == "outlay.reservation.reserved"
               for r in caplog.records)


# -- 7-8: hangs and crashes on bad input -----------------------------------------------------

HUGE = [Decimal("1E+99999999"), 10**4000, Decimal("1." + "1" * 100_000)]


@pytest.mark.parametrize("huge", HUGE, ids=["exponent", "int", "digits"])
async def test_an_unbounded_amount_or_cap_is_refused_at_once(store: Store, huge: object) -> None:
    """Item 7: ``Decimal("1E+99999999")`` (or a 4000-digit int, or 100,000 decimal places) as
    an amount or cap is refused at once with ``ValueError``, before a store expands it
    (Redis spent seconds building the scaled integer; memory and SQLite raised a raw
    ``decimal.Overflow``), and nothing is taken."""
    money = isinstance(huge, Decimal)
    await store.set_limit("cap", Decimal("10") if money else 10)
    with pytest.raises(ValueError, match=r"too large|decimal places"):
        await store.set_limit("huge", huge)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"too large|decimal places"):
        await store.reserve("r1", {"cap": huge}, lease=60)  # type: ignore[dict-item]
    assert (await store.reserve("r2", {"cap": 1}, lease=60)).admitted
    with pytest.raises(ValueError, match=r"too large|decimal places"):
        await store.commit("r2", {"cap": huge})  # type: ignore[dict-item]
    usage = await store.usage("cap")
    assert (usage.spent, usage.held) == (0, 1)


async def test_spend_past_what_a_store_can_count_is_refused_and_the_limit_stays_readable(
    store: Store,
) -> None:
    """Item 7: overshooting commits cannot push spend past what the store counts exactly (the
    SQLite limit would then be unreadable); the commit is refused and changes nothing."""
    top = 2**53 - 1 if isinstance(store, RedisStore) else 10**30
    await store.set_limit("calls", top)
    assert (await store.reserve("r1", {"calls": 1}, lease=60)).admitted
    assert await store.commit("r1", {"calls": top}) is True
    assert (await store.reserve("r2", {"calls": 0}, lease=60)).admitted
    with pytest.raises(ValueError, match="cannot count"):
        await store.commit("r2", {"calls": 1})
    usage = await store.usage("calls")
    assert (usage.spent, usage.held) == (top, 0)
    assert [u.key for u in await store.limits()] == ["calls"]


@pytest.mark.parametrize(("bad", "error"), [(0.5, TypeError), (True, TypeError), (-1, ValueError),
                                          (Decimal("NaN"), ValueError),
                                          (Decimal("1e-40"), ValueError)])
async def test_a_bad_amount_is_named_by_its_limit_and_takes_nothing(
    store: Store, bad: object, error: type[Exception]
) -> None:
    """Every store names a bad amount by where it was given (``amount['usd']``,
    ``defaults['new']``, ``actual['calls']``), and the call takes nothing."""
    await store.set_limit("calls", 5)
    await store.set_limit("usd", Decimal(5))
    with pytest.raises(error, match=r"amount\['usd'\]"):
        await store.reserve("r1", {"calls": 1, "usd": bad}, lease=60)  # type: ignore[dict-item]
    with pytest.raises(error, match=r"defaults\['new'\]"):
        await store.reserve("r2", {"new": 1}, lease=60, defaults={"new": bad})  # type: ignore[dict-item]
    assert (await store.reserve("r3", {"calls": 1}, lease=60)).admitted
    with pytest.raises(error, match=r"actual\['calls'\]"):
        await store.commit("r3", {"calls": bad})  # type: ignore[dict-item]
    assert (await store.usage("calls")).held == 1
    assert (await store.usage("usd")).held == 0
    with pytest.raises(UnknownLimit):
        await store.usage("new")
    assert await store.commit("r3") is True
    assert (await store.usage("calls")).spent == 1


@pytest.mark.parametrize("lease", [1e308, 1e12, float("inf")])
async def test_an_unbounded_lease_is_a_clear_error(store: Store, lease: float) -> None:
    """Item 8: a lease of ``1e308`` seconds gave the Redis store a raw ``OverflowError``; every
    store, and ``KeyedBudget``, refuses it with ``ValueError``."""
    await store.set_limit("calls", 5)
    with pytest.raises(ValueError, match="lease"):
        await store.reserve("r1", {"calls": 1}, lease=lease)
    with pytest.raises(ValueError, match="lease"):
        KeyedBudget(store, lease=lease)
    assert (await store.usage("calls")).held == 0


async def test_a_lease_seen_before_is_checked_again_by_its_type(store: Store) -> None:
    """A store may remember the leases it has encoded (the Redis store does: leases are a
    handful of settings); ``True`` equals ``1`` and hashes alike, and is still refused after a
    lease of ``1`` (and ``1.0``) passed, taking nothing; so is ``False`` after ``0``'s error."""
    await store.set_limit("calls", 5)
    for rid, lease in (("r1", 1), ("r2", 1.0)):
        assert (await store.reserve(rid, {"calls": 1}, lease=lease)).admitted
    with pytest.raises(TypeError, match="lease"):
        await store.reserve("r3", {"calls": 1}, lease=True)
    with pytest.raises(ValueError, match="lease"):
        await store.reserve("r4", {"calls": 1}, lease=0)
    with pytest.raises(TypeError, match="lease"):
        await store.reserve("r5", {"calls": 1}, lease=False)
    assert (await store.usage("calls")).held == 2
    with pytest.raises(TypeError, match="lease"):
        await store.extend("r1", True)


async def test_a_nul_in_a_key_is_listed_by_prefix(store: Store) -> None:
    """Item 8: a NUL character in a limit key broke SQLite's prefix listing; every store lists
    such keys exactly by prefix."""
    for n, key in enumerate(["a\x00b", "a\x00c", "a", "ab", "b\x00"]):
        await store.set_limit(key, n)
    assert [u.key for u in await store.limits("a\x00")] == ["a\x00b", "a\x00c"]
    assert [u.key for u in await store.limits("a")] == ["a", "a\x00b", "a\x00c", "ab"]
    assert [u.key for u in await store.limits("b\x00")] == ["b\x00"]


@pytest.mark.parametrize("amount", ["9" * 4000, "1e99999999", "1E+31", "1." + "1" * 30,
                                    "9" * 5000])
def test_set_cap_refuses_a_huge_amount_without_a_traceback(tmp_path: Path, amount: str) -> None:
    """Item 8: ``outlay set-cap`` with a huge int or exponent printed a traceback (or hung on
    Redis); it is refused as bad usage (exit status 2, as docs/cli.md says), nothing stored."""
    url = f"sqlite:///{tmp_path / 'caps.db'}"
    code, err = _cli(["set-cap", url, "usd", amount, "--create"])
    assert code == 2
    assert err.startswith("outlay: error:")
    assert "Traceback" not in err
    assert not (tmp_path / "caps.db").exists()  # refused before the store was created


def test_show_reports_a_stored_cap_outlay_cannot_count(tmp_path: Path) -> None:
    """Item 8: a huge cap already stored in a SQLite file (written by an older outlay) made
    every ``outlay show`` on that file crash with a traceback; it is a clear error naming the
    limit."""
    import asyncio as aio
    import sqlite3

    path = tmp_path / "old.db"

    async def make() -> None:
        store = SQLiteStore(path)
        await store.set_limit("usd", Decimal("5"))
        await store.aclose()

    aio.run(make())
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE limits SET cap = '1E+99999999' WHERE key = 'usd'")
    conn.close()
    code, err = _cli(["show", f"sqlite:///{path}"])
    assert code == 1
    assert "'usd'" in err
    assert "cannot count" in err


# -- 14-15: memory that grows forever --------------------------------------------------------


async def test_token_budget_memory_follows_live_holds() -> None:
    """Item 14: ``AtomicTokenBudget`` kept an expiry-queue entry per call forever (its holds
    never expire by time, so nothing popped them): after many ended reserve+record cycles the
    store holds entries only for the live holds."""
    from outlay import AtomicTokenBudget

    budget = AtomicTokenBudget(10**9)
    live = [budget.try_reserve_tokens_nowait(1) for _ in range(10)]
    for _ in range(3_000):
        reservation = budget.try_reserve_tokens_nowait(5)
        assert reservation is not None
        await budget.record_usage(reservation, 2, 2)
    store = budget._store  # white-box: the queue is what grew
    assert len(store._holds) == 10
    assert len(store._expiry) <= 2 * 10 + 64
    for reservation in live:
        assert reservation is not None
        await reservation.release()


async def test_memory_store_memory_follows_live_holds_not_call_rate() -> None:
    """Item 15: the memory store kept every ended hold's expiry entry until its lease time
    (300 s by default): 3,000 committed reservations leave entries for live holds only."""
    store = MemoryStore()
    budget = KeyedBudget(store)
    await budget.set_limit("calls", 10**9)
    for _ in range(3_000):
        async with budget.reserve({"calls": 1}) as reservation:
            await reservation.commit()
    assert len(store._holds) == 0
    assert len(store._expiry) <= 64
    assert (await budget.usage("calls")).spent == 3_000


# -- the store contract (issue 12, issue 17 "Also wanted") ---------------------------------


async def test_every_store_remembers_a_released_unknown_id(store: Store) -> None:
    """Store contract: releasing an id the store never saw returns False and remembers it as
    released, so a reserve of that id arriving later is refused instead of holding budget
    nobody will end (Redis did this; memory and SQLite admitted it)."""
    from outlay import ReservationError

    await store.set_limit("calls", 5)
    assert await store.release("late") is False
    with pytest.raises(ReservationError, match="ended"):
        await store.reserve("late", {"calls": 5}, lease=60)
    assert (await store.usage("calls")).held == 0
    with pytest.raises(ReservationError, match="unknown"):
        await store.commit("never-seen")


async def test_memory_store_remembers_ended_ids_for_the_retention_time() -> None:
    """Store contract: an ended id is remembered for ``DEFAULT_RETAIN`` seconds (a retry is
    answered as a retry), then forgotten, on the store's own clock."""
    from outlay import ReservationError
    from outlay.stores._base import DEFAULT_RETAIN

    now = [0.0]
    store = MemoryStore(clock=lambda: now[0])
    await store.set_limit("calls", 5)
    assert (await store.reserve("r1", {"calls": 1}, lease=60)).admitted
    assert await store.commit("r1") is True
    now[0] = DEFAULT_RETAIN - 1
    assert await store.commit("r1") is False  # a retry, counted once
    now[0] = DEFAULT_RETAIN + 1
    with pytest.raises(ReservationError, match="unknown"):
        await store.commit("r1")
    assert (await store.usage("calls")).spent == 1


# -- AtomicBudget.hold(): the generator-free context manager -------------------------------


async def test_hold_checks_its_cost_and_waits_and_cancels_like_reserve() -> None:
    """``hold()`` (no longer a generator context manager) refuses bad costs before taking
    anything, waits FIFO when the units are taken, and a waiter cancelled before its grant
    takes nothing."""
    from outlay import BudgetExceeded

    budget = AtomicBudget(2)
    with pytest.raises(TypeError):
        async with budget.hold(1.0):  # type: ignore[arg-type]
            pass
    with pytest.raises(BudgetExceeded):
        async with budget.hold(3):
            pass
    entered: list[str] = []
    async with budget.hold(2), anyio.create_task_group() as tg:

        async def waiter() -> None:
            async with budget.hold(1):
                entered.append("waiter")

        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        assert budget.statistics().tasks_waiting == 1
        tg.cancel_scope.cancel()
    assert entered == []
    assert budget.available == 2
    assert budget.statistics().tasks_waiting == 0


async def test_any_store_can_fail_open_and_every_admission_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Store contract (issue 12): ``FailOpenStore`` wraps any store (here SQLite, whose file
    another process holds locked): a reserve it cannot make is admitted and logged as a
    warning, and its commit once the store answers again records the spend."""
    import logging
    import sqlite3
    from contextlib import closing

    from outlay import FailOpenStore
    from outlay.stores import store_from_url

    path = tmp_path / "open.db"
    inner = SQLiteStore(path, busy_timeout=0.05)
    store = FailOpenStore(inner)
    budget = KeyedBudget(store)
    try:
        await budget.set_limit("usd", Decimal("1"))
        with closing(sqlite3.connect(path, isolation_level=None)) as other, \
                caplog.at_level(logging.WARNING, logger="outlay"):
            other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            during = await budget.reserve({"usd": Decimal("0.40")})
            other.execute("ROLLBACK")
        warned = [r for r in caplog.records if getattr(r, "event", "") ==
                  "outlay.store.failed_open"]
        assert [r.fields["operation"] for r in warned] == ["reserve"]  # type: ignore[attr-defined]
        assert warned[0].fields["store"] == "SQLiteStore"  # type: ignore[attr-defined]
        assert (await budget.usage("usd")).held == 0  # admitted without being counted
        await during.commit({"usd": Decimal("0.25")})
        usage = await budget.usage("usd")
        assert (usage.spent, usage.held) == (Decimal("0.25"), 0)
        assert await store.commit(during.id) is False  # a retry counts once
    finally:
        await store.aclose()
    wrapped = store_from_url(f"sqlite:///{tmp_path / 'url.db'}?fail_open=true")
    assert isinstance(wrapped, FailOpenStore)
    assert isinstance(wrapped.inner, SQLiteStore)
    await wrapped.aclose()


# -- 16: the suite sees leaks ----------------------------------------------------------------


def test_the_suite_fails_a_test_that_leaks_a_reservation(tmp_path: Path) -> None:
    """Item 16: outlay's leaked-reservation ``ResourceWarning`` arrives from ``__del__`` as an
    unraisable exception; under the project's warnings filter a test that leaks one fails
    (the filter used to ignore ``PytestUnraisableExceptionWarning`` wholesale)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    (tmp_path / "test_leak.py").write_text(
        "import gc\n"
        "import anyio\n"
        "from outlay import KeyedBudget\n\n"
        "def test_leaks() -> None:\n"
        "    async def main() -> None:\n"
        "        budget = KeyedBudget()\n"
        "        await budget.set_limit('calls', 1)\n"
        "        await budget.reserve({'calls': 1})  # dropped without commit or release\n"
        "    anyio.run(main)\n"
        "    gc.collect()\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-c",
         str(root / "pyproject.toml"), "--rootdir", str(tmp_path), str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 1, done.stdout
    assert "ResourceWarning" in done.stdout
    assert "1 failed" in done.stdout


def _read_limits_as_another_user(path: Path) -> str:
    """``limits()`` of the SQLite file at ``path`` by a process that may read it but write
    neither it nor its directory: as root, a forked child that becomes ``nobody``; otherwise
    this process, with the directory made read-only for the call."""
    import os

    import anyio._backends._asyncio

    async def read() -> str:
        store = SQLiteStore(path)
        try:
            return repr([(u.key, u.cap) for u in await store.limits()])
        except Exception as exc:
            return f"error: {type(exc).__name__}: {exc}"
        finally:
            await store.aclose()

    if os.geteuid() != 0:
        path.parent.chmod(0o555)
        try:
            return anyio.run(read)
        finally:
            path.parent.chmod(0o755)
    readable, writable = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe and exits
        os.close(readable)
        try:
            os.setgid(65534)
            os.setuid(65534)
            answer = anyio.run(read)
        except BaseException as exc:
            answer = f"child failed: {exc!r}"
        os.write(writable, answer.encode())
        os._exit(0)
    os.close(writable)
    os.waitpid(pid, 0)
    with os.fdopen(readable, "rb") as pipe:
        return pipe.read().decode()


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")  # the child only reads, exits
def test_a_database_in_a_read_only_directory_can_still_be_read() -> None:
    """Item 9: a read-only outlay database (a WAL file in a directory the reader cannot
    write, so SQLite cannot make its shared-memory file) could not even be read; it is read
    as a snapshot, and nothing is written next to it."""
    import asyncio as aio
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="outlay-ro-"))  # in /tmp: any user may traverse it
    try:
        folder.chmod(0o755)
        path = folder / "budgets.db"

        async def make() -> None:
            store = SQLiteStore(path)
            await store.set_limit("usd", Decimal("5"))
            await store.aclose()

        aio.run(make())
        path.chmod(0o644)
        assert _read_limits_as_another_user(path) == "[('usd', Decimal('5'))]"
        assert sorted(p.name for p in folder.iterdir()) == ["budgets.db"]
    finally:
        shutil.rmtree(folder)


async def test_a_fail_open_store_passes_inspection_through_to_its_store() -> None:
    """``FailOpenStore`` is a ``DelegatingStore``: what it does not fake (holds, the event log,
    pruning) reaches the wrapped store instead of raising ``NotImplementedError``."""
    from outlay import FailOpenStore, MemoryStore

    inner = MemoryStore()
    store = FailOpenStore(inner)
    await store.set_limit("k", 5)
    assert (await store.reserve("r1", {"k": 2}, lease=60)).admitted
    assert [(h.rid, dict(h.amounts)) for h in await store.holds()] == [("r1", {"k": 2})]
    assert await store.drop_idle_limit("k", idle=0) is False  # held: kept
    assert await store.events() == []
    await store.aclose()
