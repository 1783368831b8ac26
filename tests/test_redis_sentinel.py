"""RedisStore behind Redis Sentinel (a master, its replica and three sentinels, started by the
tests, with passwords): URLs, credentials kept out of every message, the CLI, a master killed
mid-run, and the ``valkey`` schemes.

The behaviour suite runs behind Sentinel too (``storekit``'s ``redis-sentinel`` factory)."""

from __future__ import annotations

import math
import traceback
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import anyio
import pytest
from structlog.testing import capture_logs

from outlay import (
    ConfigurationError,
    FailOpenStore,
    KeyedBudget,
    StoreError,
    StoreUnavailable,
    store_from_url,
)

from .failover import run_through_failover
from .redissentinel import (
    PASSWORD,
    SENTINEL_PASSWORD,
    SERVICE,
    SentinelDeployment,
    binaries_present,
    cli,
    start_sentinels,
)
from .redisserver import HOST, RedisServer, free_port
from .storekit import REDIS_TEST_DB, drop_namespace, redis_store_at
from .test_cli import run
from .test_redis import check_fleet

redis = pytest.importorskip("redis", reason="the redis driver is not installed (outlay[redis])")

from redis.asyncio import Redis, RedisCluster, SSLConnection  # noqa: E402 - after importorskip

from outlay.stores._redis import RedisStore, _SentinelPool  # noqa: E402


@pytest.fixture
def anyio_backend() -> str:
    """These checks are about Sentinel, not the caller's loop (the behaviour suite covers trio
    behind Sentinel)."""
    return "asyncio"


@pytest.fixture(scope="module")
def doomed_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelDeployment]:
    """A deployment of this module's own, for the test that kills its master; the sentinels
    call a master down after 3 s of silence, room for a loaded machine before a live master
    looks dead (a spurious failover would lose acknowledged writes)."""
    if not binaries_present():
        pytest.skip("no redis-server/redis-cli binaries on PATH: cannot start Redis Sentinel")
    deployment = start_sentinels(tmp_path_factory.mktemp("doomed-sentinel"), down_after_ms=3000)
    try:
        yield deployment
    finally:
        deployment.stop()


def assert_hidden(text: str) -> None:
    """Neither password of the test deployment appears in ``text``."""
    assert PASSWORD not in text
    assert SENTINEL_PASSWORD not in text


def shown(exc: BaseException) -> str:
    """Everything a traceback of ``exc`` prints, causes included."""
    return "".join(traceback.format_exception(exc))


def spent_on(store: RedisStore, port: int) -> str:
    """The ``usd`` limit's spend as the data node on ``port`` has it (scaled, as stored)."""
    key = f"{{{store.namespace}}}:l:usd"
    return cli(port, "-n", str(REDIS_TEST_DB), "hget", key, "spent").strip()


def pool_of(store: RedisStore) -> _SentinelPool:
    assert isinstance(store.client, Redis)
    pool = store.client.connection_pool
    assert isinstance(pool, _SentinelPool)
    return pool


# -- URLs ----------------------------------------------------------------------------------


def test_a_sentinel_url_names_sentinels_service_database_and_both_credentials() -> None:
    store = RedisStore.from_url(
        "redis+sentinel://app:p%40ss@10.0.0.1:26380,sentinel-b,[::1]:26381/pay-main/4"
        "?sentinel_username=watch&sentinel_password=s3cret&socket_timeout=2"
        "&max_connections=8&min_other_sentinels=1&namespace=acme")
    pool = pool_of(store)
    assert (pool.service_name, pool.is_master, pool.max_connections) == ("pay-main", True, 8)
    node = pool.connection_kwargs
    assert (node["username"], node["password"], node["db"]) == ("app", "p@ss", 4)
    assert node["socket_timeout"] == 2.0
    manager = pool.sentinel_manager
    assert manager.min_other_sentinels == 1
    asked = [s.connection_pool.connection_kwargs for s in manager.sentinels]
    assert [(k["host"], k["port"]) for k in asked] == [
        ("10.0.0.1", 26380), ("sentinel-b", 26379), ("::1", 26381)]
    assert {(k["username"], k["password"], k["socket_timeout"]) for k in asked} == {
        ("watch", "s3cret", 2.0)}
    assert store.namespace == "acme"
    tls = RedisStore.from_url("rediss+sentinel://h/svc?ssl_cert_reqs=none")
    assert issubclass(pool_of(tls).connection_class, SSLConnection)
    assert all(issubclass(s.connection_pool.connection_class, SSLConnection)
               for s in pool_of(tls).sentinel_manager.sentinels)


@pytest.mark.parametrize(("query", "hint"), [
    ("sentinel_pasword=x", "did you mean 'sentinel_password'?"),
    ("socket_timout=1", "did you mean 'socket_timeout'?"),
    ("namepsace=acme", "did you mean 'namespace'?"),
    ("service_name=other", ""),  # the path names the service
    ("host=elsewhere", ""),  # the sentinels name the master's address
])
def test_unknown_sentinel_url_options_are_refused(query: str, hint: str) -> None:
    with pytest.raises(ConfigurationError, match="unknown option") as raised:
        RedisStore.from_url(f"redis+sentinel://:{PASSWORD}@h1,h2/svc?{query}")
    assert hint in str(raised.value)
    assert_hidden(shown(raised.value))


@pytest.mark.parametrize("url", [
    f"redis+sentinel://:{PASSWORD}@h1,h2",  # no service
    f"redis+sentinel://:{PASSWORD}@h1,h2/",
    f"redis+sentinel://:{PASSWORD}@h1/svc/zero",  # the database is a number
    f"redis+sentinel://:{PASSWORD}@h1/svc/0/more",
    f"redis+sentinel://:{PASSWORD}@h1:99999/svc",
    f"redis+sentinel://:{PASSWORD}@h1,/svc",
    f"redis+sentinel://:{PASSWORD}@h1/svc?min_other_sentinels=two",
    f"unix+sentinel://:{PASSWORD}@h1/svc",
    f"redis+sentry://:{PASSWORD}@h1/svc",
])
def test_malformed_sentinel_urls_are_refused_without_showing_the_password(url: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        RedisStore.from_url(url)
    assert_hidden(shown(raised.value))


@pytest.mark.anyio
async def test_a_sentinel_url_reaches_the_master(redis_sentinel: SentinelDeployment) -> None:
    namespace = f"url-{uuid.uuid4().hex[:8]}"
    store = store_from_url(redis_sentinel.url(REDIS_TEST_DB, query=f"namespace={namespace}"))
    try:
        assert isinstance(store, RedisStore)
        await store.set_limit("calls", 3)
        assert (await store.usage("calls")).cap == 3
        key = f"{{{namespace}}}:l:calls"
        master = redis_sentinel.master()
        assert cli(master, "-n", str(REDIS_TEST_DB), "exists", key).strip() == "1"
        assert_hidden(repr(store) + repr(store.client) + repr(pool_of(store))
                      + repr(pool_of(store).sentinel_manager))
        await drop_namespace(store)
        sentinels = [s.connection_pool for s in pool_of(store).sentinel_manager.sentinels]
        assert any(pool._available_connections for pool in sentinels)  # asked for the master
    finally:
        await store.aclose()
    # aclose closed the sentinels' connections too
    assert not any(connection.is_connected for pool in sentinels
                   for connection in pool._available_connections)


@pytest.mark.anyio
async def test_credentials_never_reach_an_error_or_a_log(
    redis_sentinel: SentinelDeployment,
) -> None:
    """A wrong data password, a wrong sentinel password and sentinels that do not answer: each
    fails as ``StoreUnavailable`` / ``StoreError`` whose message, causes and traceback name
    neither password; failing open, the warnings do not either."""
    dead = f"127.0.0.1:{free_port()}"
    urls = [
        redis_sentinel.url().replace(f":{PASSWORD}@", f":{PASSWORD}-wrong@"),
        redis_sentinel.url().replace(f"={SENTINEL_PASSWORD}", f"={SENTINEL_PASSWORD}-wrong"),
        f"redis+sentinel://:{PASSWORD}@{dead}/{SERVICE}?sentinel_password={SENTINEL_PASSWORD}",
    ]
    for url in urls:
        store = store_from_url(url + "&socket_connect_timeout=1")
        try:
            with pytest.raises(StoreError) as raised:
                await store.set_limit("calls", 1)
            assert_hidden(shown(raised.value))
        finally:
            await store.aclose()
        failing_open = store_from_url(url + "&fail_open=true")
        assert isinstance(failing_open, FailOpenStore)
        try:
            with capture_logs() as logs:
                admission = await failing_open.reserve("r1", {"calls": 1}, lease=5)
            assert admission.admitted
            assert [entry["event"] for entry in logs] == ["outlay.store.failed_open"]
            assert_hidden(repr(logs))
        finally:
            await failing_open.aclose()
    unreachable = store_from_url(urls[2])
    try:
        with pytest.raises(StoreUnavailable, match="No master found"):
            await unreachable.usage("calls")
    finally:
        await unreachable.aclose()


# -- the CLI -------------------------------------------------------------------------------


def test_the_cli_reads_a_store_behind_sentinel(redis_sentinel: SentinelDeployment) -> None:
    namespace = f"outlay-cli-{uuid.uuid4().hex[:10]}"
    url = redis_sentinel.url(REDIS_TEST_DB, query=f"namespace={namespace}")

    async def fill() -> None:
        store = store_from_url(url)
        try:
            await KeyedBudget(store).set_limit("tenant:acme/calls", 7)
        finally:
            await store.aclose()

    anyio.run(fill)
    try:
        code, out, err = run(["show", "--url", url])
        assert (code, err) == (0, "")
        assert out.splitlines()[0] == f"Redis namespace {namespace!r}"
        assert "tenant:acme/calls" in out
        code, out, err = run(["show", url.replace("sentinel_password", "sentinel_pasword")])
        assert (code, out, err.count("\n")) == (1, "", 1)
        assert "did you mean 'sentinel_password'?" in err
        assert_hidden(err)
    finally:
        cli(redis_sentinel.master(), "-n", str(REDIS_TEST_DB), "del",
            f"{{{namespace}}}:l:tenant:acme/calls")


# -- a master killed mid-run ---------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.slow
async def test_a_master_killed_mid_run_fails_over_through_the_sentinels(
    doomed_sentinel: SentinelDeployment,
) -> None:
    """The master is SIGKILLed mid-run; the sentinels promote its replica and the same store
    finds it through them (``failover`` says what the application sees and what is kept)."""
    async with redis_store_at(doomed_sentinel) as store:
        first = doomed_sentinel.master()
        await run_through_failover(store, replicate=doomed_sentinel.replicate,
                                   kill=doomed_sentinel.kill_master)
        assert doomed_sentinel.master() != first
        assert pool_of(store).master_address == ("127.0.0.1", doomed_sentinel.master())


#: What the docs advise against losing writes in a switch: a master refuses writes once no
#: replica has acknowledged it for a second.
GUARDED = ("--min-replicas-to-write", "1", "--min-replicas-max-lag", "1")


@pytest.fixture(params=[pytest.param((), id="plain"), pytest.param(GUARDED, id="guarded")])
def switched_sentinel(request: pytest.FixtureRequest,
                      tmp_path: Path) -> Iterator[SentinelDeployment]:
    """A deployment of the test's own, for a switch of master with the old one alive: plain,
    or with the data nodes' ``min-replicas-to-write 1`` / ``min-replicas-max-lag 1``."""
    if not binaries_present():
        pytest.skip("no redis-server/redis-cli binaries on PATH: cannot start Redis Sentinel")
    deployment = start_sentinels(tmp_path / "sentinel", data_options=request.param)
    try:
        yield deployment
    finally:
        deployment.stop()


@pytest.mark.anyio
@pytest.mark.slow
@pytest.mark.parametrize("switched_sentinel", [()], ids=["plain"], indirect=True)
async def test_a_switch_with_the_old_master_alive_loses_what_it_accepted_meanwhile(
    switched_sentinel: SentinelDeployment, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``SENTINEL FAILOVER`` (maintenance: the old master alive). The sentinels promote the
    replica and only seconds later demote the old master (at their next look at it); until
    the store next asks the sentinels (at most a second later, see the next test) a
    connection it already holds reaches the old master, which still accepts writes: a commit
    is acknowledged there and lost when it becomes a replica of the new master (the hold it
    settled is back until its lease ends). No error reaches the application: a call that meets
    the demoted master's ``READONLY`` (the script wrote nothing) is sent again to the new one.
    That window is forced here: the pool asks the sentinels at its first call, then never."""
    monkeypatch.setattr(_SentinelPool, "ASK_EVERY", math.inf)
    async with redis_store_at(switched_sentinel) as store:
        budget = KeyedBudget(store)
        await budget.set_limit("usd", Decimal("10"))
        held = await budget.reserve({"usd": Decimal("2")}, lease=600)
        pool = pool_of(store)
        assert pool.master_address == (HOST, switched_sentinel.master())
        await anyio.to_thread.run_sync(switched_sentinel.replicate)
        old, new = await anyio.to_thread.run_sync(switched_sentinel.switch_master)
        await held.commit({"usd": Decimal("1.5")})  # acknowledged...
        # ...by the old master:
        assert (spent_on(store, old), spent_on(store, new)) == ("1500000000", "0")
        await anyio.to_thread.run_sync(switched_sentinel.demoted, old)
        assert spent_on(store, old) == "0"  # the commit is gone: the old master took the new's data

        after = await budget.reserve({"usd": Decimal("1")})  # READONLY, then the new master
        assert pool.master_address == (HOST, new)
        usage = await store.usage("usd")
        assert (usage.spent, usage.held) == (Decimal("0"), Decimal("3"))  # the lost commit's
        await after.release()                                            # hold is back
        assert await store.commit(held.id, {"usd": Decimal("1.5")})  # a retry would count
        usage = await store.usage("usd")
        assert (usage.spent, usage.held) == (Decimal("1.5"), Decimal("0"))


@pytest.mark.anyio
@pytest.mark.slow
@pytest.mark.parametrize("switched_sentinel", [()], ids=["plain"], indirect=True)
async def test_a_switch_with_the_old_master_alive_is_followed_once_the_sentinels_are_asked(
    switched_sentinel: SentinelDeployment, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The store's pool asks the sentinels who the master is (at most every ``ASK_EVERY``
    seconds; here on every call, so the test need not wait a second) in a task of its own.
    Once they name the new master, the idle connections to the old one are dropped and a busy
    one is dropped when it comes back: the next commit reaches the new master while the old one
    still accepts writes, and nothing is lost when it is demoted."""
    monkeypatch.setattr(_SentinelPool, "ASK_EVERY", 0.0)
    async with redis_store_at(switched_sentinel) as store:
        budget = KeyedBudget(store)
        await budget.set_limit("usd", Decimal("10"))
        held = await budget.reserve({"usd": Decimal("2")}, lease=600)
        pool = pool_of(store)
        busy = await pool.get_connection()  # in use across the switch
        await anyio.to_thread.run_sync(switched_sentinel.replicate)
        old, new = await anyio.to_thread.run_sync(switched_sentinel.switch_master)
        assert (busy.host, busy.port) == (HOST, old)
        await store.usage("usd")  # a read on the old master; the pool asks meanwhile
        asking = pool._asking
        assert asking is not None
        await asking
        assert pool.master_address == (HOST, new)
        await pool.release(busy)
        assert not busy.is_connected  # it reached a master the sentinels no longer name
        await held.commit({"usd": Decimal("1.5")})
        # The new master's:
        assert (spent_on(store, old), spent_on(store, new)) == ("0", "1500000000")
        await anyio.to_thread.run_sync(switched_sentinel.demoted, old)
        assert spent_on(store, old) == "1500000000"  # the demoted master took the new one's data
        usage = await store.usage("usd")
        assert (usage.spent, usage.held) == (Decimal("1.5"), Decimal("0"))  # nothing lost


@pytest.mark.anyio
@pytest.mark.slow
@pytest.mark.parametrize("switched_sentinel", [()], ids=["plain"], indirect=True)
async def test_sentinels_that_stop_answering_leave_the_master_in_use_and_say_so_once(
    switched_sentinel: SentinelDeployment, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every sentinel gone, the master alive: the store goes on through its connections to the
    master, and the pool's unanswered asks are one warning (naming no password), not one a
    call."""
    monkeypatch.setattr(_SentinelPool, "ASK_EVERY", 0.0)
    async with redis_store_at(switched_sentinel) as store:
        await store.set_limit("calls", 10)
        pool = pool_of(store)
        for port in switched_sentinel.sentinel_ports:
            switched_sentinel.processes[port].kill()
            switched_sentinel.processes[port].wait()
        with capture_logs() as logs:
            for i in range(3):
                assert (await store.reserve(f"r{i}", {"calls": 1}, lease=60)).admitted
                asking = pool._asking
                assert asking is not None
                await asking  # this call's ask, unanswered
        assert [entry["event"] for entry in logs] == ["outlay.redis.sentinels_unanswered"]
        assert_hidden(repr(logs))
        assert (await store.usage("calls")).held == 3


@pytest.mark.anyio
@pytest.mark.slow
@pytest.mark.parametrize("switched_sentinel", [GUARDED], ids=["guarded"], indirect=True)
async def test_min_replicas_to_write_makes_the_old_master_refuse_instead_of_losing(
    switched_sentinel: SentinelDeployment, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With ``min-replicas-to-write 1``, once the old master has had no replica acknowledging
    it for ``min-replicas-max-lag`` seconds it refuses writes (``NOREPLICAS``): the commit
    raises ``StoreError`` (fail closed) and changes nothing, instead of being acknowledged and
    lost; retried once the old master is demoted and replicates from the new one, it counts
    once on the new master. (Within that second the old master still acknowledges writes
    that will be lost.) The store is held in the window before its pool asks the sentinels
    again (it asks at its first call, then never), so the commit reaches the old master."""
    monkeypatch.setattr(_SentinelPool, "ASK_EVERY", math.inf)
    async with redis_store_at(switched_sentinel) as store:
        budget = KeyedBudget(store)
        await budget.set_limit("usd", Decimal("10"))
        held = await budget.reserve({"usd": Decimal("2")}, lease=600)
        await anyio.to_thread.run_sync(switched_sentinel.replicate)
        old, new = await anyio.to_thread.run_sync(switched_sentinel.switch_master)
        await anyio.to_thread.run_sync(switched_sentinel.await_good_replicas, old, 0)
        with pytest.raises(StoreError, match="NOREPLICAS") as refused:
            await held.commit({"usd": Decimal("1.5")})
        assert not isinstance(refused.value, StoreUnavailable)
        assert spent_on(store, old) == "0"
        # The new master has no replica either until the old one is demoted and synced: it
        # refuses writes too (with one replica, this setting trades availability after a
        # failover for not losing writes).
        assert switched_sentinel.good_replicas(new) == 0
        await anyio.to_thread.run_sync(switched_sentinel.demoted, old)
        await anyio.to_thread.run_sync(switched_sentinel.await_good_replicas, new, 1)
        await held.commit({"usd": Decimal("1.5")})  # READONLY, then the new master
        assert pool_of(store).master_address == (HOST, new)
        usage = await store.usage("usd")
        assert (usage.spent, usage.held) == (Decimal("1.5"), Decimal("0"))


@pytest.mark.anyio
@pytest.mark.slow
async def test_many_processes_one_budget_behind_sentinel(
    redis_sentinel: SentinelDeployment,
) -> None:
    async with redis_store_at(redis_sentinel) as store:
        await check_fleet(store, redis_sentinel.url(REDIS_TEST_DB))


# -- Valkey: the same client -----------------------------------------------------------------


def same_client(url: str, twin: str) -> None:
    """``url`` and ``twin`` build the same client: class, pool and connection arguments."""
    one, two = RedisStore.from_url(url), RedisStore.from_url(twin)
    assert type(one.client) is type(two.client)
    if isinstance(one.client, RedisCluster):
        assert isinstance(two.client, RedisCluster)
        assert ([(n.host, n.port) for n in one.client.nodes_manager.startup_nodes.values()]
                == [(n.host, n.port) for n in two.client.nodes_manager.startup_nodes.values()])
        assert (one.client.nodes_manager.connection_kwargs.get("connection_class")
                is two.client.nodes_manager.connection_kwargs.get("connection_class"))
        return
    assert isinstance(one.client, Redis)
    assert isinstance(two.client, Redis)
    pools = one.client.connection_pool, two.client.connection_pool
    assert type(pools[0]) is type(pools[1])
    assert pools[0].connection_class is pools[1].connection_class
    plain = [{k: v for k, v in pool.connection_kwargs.items() if k in (
        "host", "port", "db", "username", "password", "socket_timeout", "ssl_cert_reqs")}
        for pool in pools]
    assert plain[0] == plain[1]


@pytest.mark.parametrize(("valkey", "redis_url"), [
    ("valkey://u:pw@h:6390/2?socket_timeout=3", "redis://u:pw@h:6390/2?socket_timeout=3"),
    ("valkeys://h:6390/2?ssl_cert_reqs=none", "rediss://h:6390/2?ssl_cert_reqs=none"),
    ("valkey+cluster://h:7000", "redis+cluster://h:7000"),
    ("valkeys+cluster://h:7000", "rediss+cluster://h:7000"),
    ("valkey+sentinel://:pw@h1,h2/svc/1", "redis+sentinel://:pw@h1,h2/svc/1"),
    ("valkeys+sentinel://h1/svc", "rediss+sentinel://h1/svc"),
])
def test_valkey_schemes_build_the_redis_client(valkey: str, redis_url: str) -> None:
    same_client(valkey, redis_url)


@pytest.mark.anyio
async def test_a_valkey_url_opens_a_working_store(redis_server: RedisServer) -> None:
    """Through ``store_from_url`` and against a server speaking the protocol (Redis here: no
    Valkey server runs in these tests)."""
    url = redis_server.url(REDIS_TEST_DB).replace("redis://", "valkey://", 1)
    store = store_from_url(f"{url}?namespace=valkey-{uuid.uuid4().hex[:8]}")
    try:
        assert isinstance(store, RedisStore)
        await store.set_limit("calls", 2)
        assert (await store.reserve("r1", {"calls": 2}, lease=5)).admitted
        assert await store.commit("r1")
        assert (await store.usage("calls")).spent == 2
        await drop_namespace(store)
    finally:
        await store.aclose()
