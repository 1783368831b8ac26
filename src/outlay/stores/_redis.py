"""The Redis store: one budget shared by many processes and machines.

Every operation is one Lua script (``EVALSHA``), atomic at the server, in at most one round
trip: a lone operation is sent at once, and reserves and endings that arrive while others are
in flight share one ``batch`` script (group commit, ``RedisStore._grouped``). The
scripts ship as ``.lua`` files beside this module (``_redis_lua/``); after a Redis restart or
``SCRIPT FLUSH`` the first ``NOSCRIPT`` answer is followed by one ``EVAL`` of the source, which
runs the operation and caches the script again.

Exactness: every count is an integer (stored as a decimal string): ``int`` limits count whole
units, ``Decimal`` limits count money scaled by ``10**decimal_places``. An amount or cap with
more places than that, or above ``2**53 - 1`` once scaled, is refused with ``ValueError``
before anything is sent, and a commit refuses spend beyond it, so the scripts' Lua numbers
(doubles) hold every count, sum and comparison exactly.

Cluster: every key of a store lives under one hash tag, ``{namespace}``, so any set of limits can
be reserved in one atomic script. A namespace therefore lives on one shard; spread load by giving
independent tenants their own namespaces (their own ``RedisStore``).

This module imports ``redis``; ``import outlay`` never does (``store_from_url`` loads it).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import decimal
import functools
import hashlib
import inspect
import json
import math
import re
import threading
import time
from asyncio import _get_running_loop as _running_loop
from collections import OrderedDict
from collections.abc import (
    AsyncGenerator,
    Awaitable,
    Callable,
    Coroutine,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from decimal import Decimal
from importlib import resources
from typing import Any, ClassVar, Final, TypeVar
from urllib.parse import SplitResult, parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import anyio
import redis.asyncio as aioredis
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import (
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import (
    ClusterError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .._core import (
    EXACT,
    Amount,
    ConfigurationError,
    ReservationError,
    StoreError,
    StoreUnavailable,
    UnknownLimit,
    check_amount,
    check_count,
    check_lease,
    log,
    named,
)
from ._base import (
    ADMITTED,
    DEFAULT_RETAIN,
    Admission,
    HoldUsage,
    LimitUsage,
    Store,
    check_seconds,
    oldest_first,
)
from ._events import SpendEvent, decode_event, encode_event
from ._fork import track
from ._group import PerLoop
from ._url import check_query, redact_url

MAX_UNITS: Final = 2**53 - 1
"""The largest count (units, or money scaled by ``10**decimal_places``) a limit can hold."""

MAX_EXPIRE_AT: Final = 253_402_300_799
"""The latest ``expire_at`` a period may name (UNIX seconds: the end of year 9999)."""

DEFAULT_DECIMAL_PLACES: Final = 9
DEFAULT_PERIOD_GRACE: Final = 86_400.0
TOUCHED_MEMORY: Final = 65_536
"""How many reservations' limit keys are remembered, so their endings can declare them."""

BATCH_MAX: Final = 128
"""The most operations one ``batch`` script runs; more queued wait for the next round trip."""
PIPELINE: Final = 2
"""Round trips of queued operations in flight at once (each on its own connection)."""

T = TypeVar("T")

_SHIFT: Final = decimal.Context(prec=64, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN, traps=[])
"""Shifts a checked amount's exponent: exact, since ``check_amount`` leaves at most 48
digits, and a zero of any exponent stays zero (no signal is trapped)."""

_NAMESPACE = re.compile(r"[^{}]+")
_OWN_QUERY = ("namespace", "decimal_places", "fail_open")


@dataclass(frozen=True, slots=True)
class _Script:
    name: str
    source: str
    sha: str


_quote: Final[Callable[[str], str]] = json.encoder.encode_basestring
"""A str as a JSON string (C; non-ASCII kept), as ``json`` writes it without a JSON encoder
built per call."""


def _frame(name: str, args: list[str]) -> str:
    """``[name, args]`` as JSON, an element of ``batch.lua``'s ``ARGV[5]``. Arguments without
    a quote, a backslash or an unprintable character (ids, names and numbers, as a rule) need no
    escaping and are framed as they are; others are quoted one by one."""
    text = "".join(args)
    if '"' in text or "\\" in text or not text.isprintable():
        return f'["{name}",[{",".join(map(_quote, args))}]]'
    if not args:
        return f'["{name}",[]]'
    plain = '","'.join(args)
    return f'["{name}",["{plain}"]]'


_BATCHED: Final = ("reserve", "commit", "release", "extend")
"""The operations that may share one script and round trip (``batch.lua``)."""


_LUA: Final = resources.files(__package__ or "outlay.stores").joinpath("_redis_lua")
_CLOCK_LUA: Final = _LUA.joinpath("clock.lua").read_text(encoding="utf-8")
"""``clock.lua`` (the server's clock, ``int_str``): first in every script of this store and of
jobs (``outlay/jobs/_redis.py``)."""


def _load_scripts() -> dict[str, _Script]:
    """Each operation's ``.lua`` body becomes a function ``op_<name>(KEYS, ARGV)`` after the
    shared helpers; its own script runs it once (``alone``: then writes its limits back),
    ``batch`` runs those of ``_BATCHED`` and writes the limits back once at its end. Those
    read the store's settings first (``store.lua``) and get ``KEYS`` nil: they build their
    keys, so a batch need not name each one."""
    common = _CLOCK_LUA + "\n" + _LUA.joinpath("common.lua").read_text(encoding="utf-8")
    store = _LUA.joinpath("store.lua").read_text(encoding="utf-8")

    def function(name: str) -> str:
        body = _LUA.joinpath(f"{name}.lua").read_text(encoding="utf-8")
        return f"local function op_{name}(KEYS, ARGV)\n{body}\nend\n"

    def script(name: str, source: str) -> _Script:
        return _Script(name, source, hashlib.sha1(source.encode(),
                                                  usedforsecurity=False).hexdigest())

    scripts = {}
    for name in _BATCHED:
        scripts[name] = script(name, f"{common}\n{store}\n{function(name)}"
                                     f"return alone(op_{name}, nil, own())\n")
    for name in ("usage", "set_limit", "reset_spend", "held", "holds", "drop_idle"):
        scripts[name] = script(name, f"{common}\n{function(name)}"
                                     f"return alone(op_{name}, KEYS, ARGV)\n")
    batch = _LUA.joinpath("batch.lua").read_text(encoding="utf-8")
    scripts["batch"] = script("batch", "\n".join([common, store, *map(function, _BATCHED),
                                                   batch]))
    return scripts


_SCRIPTS: Final = _load_scripts()


@dataclass(slots=True)
class _Queued:
    """An operation waiting for (or in) a round trip it shares with others."""

    script: _Script
    keys: list[str]
    """The keys the client knows it touches: declared, not read, by the scripts."""
    args: list[str]
    """Its own arguments (after the store's settings)."""
    payload: bytes
    """``[name, args]`` as JSON: an element of ``batch.lua``'s ``ARGV[5]``. Every key is
    made of the namespace and names that are among ``args``, so the keys encode if these do."""
    future: asyncio.Future[Any]

    def done(self) -> bool:
        """Settled, or its caller was cancelled."""
        return self.future.done()

    def fail(self, error: StoreError, cause: BaseException | None = None) -> None:
        if not self.future.done():
            error.__cause__ = cause
            self.future.set_exception(error)


@dataclass(slots=True)
class _Group:
    """A store's operations in one event loop: those queued, and the round trips in flight."""

    queue: list[_Queued] = field(default_factory=list)
    in_flight: int = 0
    carrying: int = 0
    """Operations in the round trips in flight."""
    draining: bool = False
    """A drain is scheduled."""


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


#: What the driver raises: ``RedisError`` and its subclasses, socket errors, and the cluster
#: client's own exceptions (no node reachable, a slot served by no node).
_DRIVER_ERRORS: Final = (RedisError, OSError, RedisClusterException)


def _map_error(exc: BaseException) -> StoreError:
    # A cluster mid-failover (CLUSTERDOWN, TRYAGAIN, MASTERDOWN, a slot nobody serves yet) is
    # unreachable for now, like a server that is down: the operation did not run.
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError | ClusterError
                  | TryAgainError | RedisClusterException):
        return StoreUnavailable(f"Redis is unreachable: {exc}")
    return StoreError(f"Redis failed: {exc}")


class RedisStore(Store):
    """Limits, holds and spend in Redis, shared by every process that uses the same namespace.

    Build it with ``RedisStore.from_url("redis://host:6379/0")`` (or ``store_from_url``), or
    around your own ``redis.asyncio.Redis`` client (which ``aclose`` then leaves open). On
    asyncio it calls the client directly; from trio it runs the client on an asyncio loop in a
    thread of its own (started on first use, stopped by ``aclose``). Use one store instance
    from one kind of event loop.

    Leases run on the Redis server's clock (``TIME``); an expired hold stops counting at the next
    script that touches its limit, with no sweeper. Ended reservation ids are remembered for
    ``retain`` seconds, so retried endings count once; a commit after the lease expired still
    records its spend within that time. A limit reserved with ``expire_at`` is deleted by Redis
    ``period_grace`` seconds after its period (or the last hold on it) ends.

    Failures: Redis unreachable raises ``StoreUnavailable``, any other Redis failure
    ``StoreError`` (fail closed); to admit instead, wrap it in ``FailOpenStore`` (as
    ``store_from_url`` does for ``?fail_open=true``). A caller cancelled mid-operation
    leaves the store consistent: the script ran entirely or not at all, and the driver drops
    the connection it was using.
    Releasing an id the server has not seen remembers it as released, so a reserve that reaches
    the server after its own release is refused instead of left holding.
    """

    def __init__(
        self,
        client: aioredis.Redis | aioredis.RedisCluster,
        *,
        namespace: str = "outlay",
        decimal_places: int = DEFAULT_DECIMAL_PLACES,
        retain: float = DEFAULT_RETAIN,
        period_grace: float = DEFAULT_PERIOD_GRACE,
        owns_client: bool = False,
    ) -> None:
        if not isinstance(client, aioredis.Redis | aioredis.RedisCluster):
            raise TypeError("client must be a redis.asyncio.Redis or RedisCluster, got "
                            f"{type(client).__name__}")
        if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
            raise ConfigurationError(
                f"namespace must be a non-empty str without braces, got {namespace!r}"
            )
        if type(decimal_places) is not int or not 0 <= decimal_places <= 15:
            raise ConfigurationError(f"decimal_places must be an int in 0..15, got "
                                     f"{decimal_places!r}")
        for name, seconds in (("retain", retain), ("period_grace", period_grace)):
            if (isinstance(seconds, bool) or not isinstance(seconds, int | float)
                    or not math.isfinite(seconds) or seconds <= 0):
                raise ConfigurationError(f"{name} must be positive seconds, got {seconds!r}")
        self._given = client
        #: Fixed by the client given: every client made for another loop is of the same kind.
        self._cluster = isinstance(client, aioredis.RedisCluster)
        #: Makes another client like ``client`` (``from_url``): each event loop gets its own.
        self._remake: Callable[[], aioredis.Redis | aioredis.RedisCluster] | None = None
        #: loop -> (its client, the async generator that closes it when the loop shuts down)
        self._clients: dict[asyncio.AbstractEventLoop, tuple[
            aioredis.Redis | aioredis.RedisCluster, AsyncGenerator[None, None]]] = {}
        self._given_bound = False
        self._encoder = client.get_encoder()
        self._owns_client = owns_client
        self._namespace = namespace
        self._prefix = "{" + namespace + "}:"
        self._places = decimal_places
        self._places_arg = str(decimal_places)
        self._scale = 10**decimal_places
        self._retain_ms = str(math.ceil(retain * 1000))
        self._grace_ms = str(math.ceil(period_grace * 1000))
        #: ARGV[1..4] of the operations that may share a batch (``_redis_lua/store.lua``).
        self._settings = [self._prefix, self._retain_ms, self._places_arg, self._grace_ms]
        self._abandoned: set[asyncio.Task[Any]] = set()
        self._bridge: _Bridge | None = None
        self._cluster_lock = PerLoop(asyncio.Lock)
        self._groups = PerLoop(_Group)
        # Limit keys of the reservations this store admitted, so endings declare every key
        # they touch (strict cluster proxies want that; Redis itself only needs one slot).
        self._touched: OrderedDict[str, list[str]] = OrderedDict()
        track(self)

    def _after_fork(self) -> list[object]:
        """In a forked child: the parent's connections, bridge thread (not running here) and
        tasks are left alone, never used or closed here; the child connects anew on first use
        (``stores/_fork.py``) if this store made its client (``from_url``)."""
        kept: list[object] = [self._bridge, self._clients, self._abandoned, self._given]
        self._bridge, self._clients, self._abandoned = None, {}, set()
        if self._remake is not None:
            self._given_bound = True  # the parent's client: the child makes its own
        return kept

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisStore:
        """A store from a URL; the store owns the client and closes it in ``aclose``.

        - ``redis://[user:pass@]host:port/db`` (``rediss://`` for TLS, ``unix:///path``): one
          server.
        - ``redis+cluster://[user:pass@]host:port`` (``rediss+cluster://``): a Redis Cluster,
          through any one of its nodes; the client discovers the others and follows failovers.
        - ``redis+sentinel://[user:pass@]host:port[,host:port...]/service[/db]``
          (``rediss+sentinel://``): the master of ``service`` as the sentinels name it (port
          26379 by default), asked again after a connection fails, so a failover is followed.
          ``user:pass`` authenticate to the master; ``sentinel_username`` /
          ``sentinel_password`` in the query to the sentinels; ``min_other_sentinels`` is the
          driver's. Socket and TLS options apply to both.
        - ``valkey`` / ``valkeys`` in place of ``redis`` / ``rediss`` in any of these: the same
          client (Valkey speaks the protocol).

        The query may carry ``namespace`` and ``decimal_places`` (``fail_open`` belongs to
        ``store_from_url``, which wraps the store in ``FailOpenStore``); every other option
        goes to the driver's connection pool (``max_connections``, default 64,
        ``socket_timeout``, ...); an option none of them takes is refused, naming the closest.
        Keyword ``options`` win over the URL. Connections are made on first use; tasks beyond
        ``max_connections`` wait for one.
        """
        parts = urlsplit(url)
        base, topology = _scheme(parts.scheme, url)
        own: dict[str, Any] = {}
        rest = []
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key in _OWN_QUERY:
                own[key] = value
            else:
                rest.append((key, value))
        if "decimal_places" in own:
            try:
                own["decimal_places"] = int(own["decimal_places"])
            except ValueError as exc:
                raise ConfigurationError(f"bad decimal_places in {redact_url(url)!r}") from exc
        if "fail_open" in own or "fail_open" in options:
            raise ConfigurationError(
                f"fail_open in {redact_url(url)!r}: RedisStore.from_url does not fail open; "
                "use store_from_url(url) or FailOpenStore(store)")
        own.update(options)
        check_query(url, [key for key, _ in rest], _accepted_query(base, topology), "Redis")
        query = dict(rest)
        kwargs: dict[str, Any] = {"retry": _retry(), "max_connections": 64}
        if "socket_connect_timeout" not in query:
            kwargs["socket_connect_timeout"] = 5.0
        if "socket_timeout" not in query:
            kwargs["socket_timeout"] = 10.0
        driver_url = urlunsplit(parts._replace(scheme=base, query=urlencode(rest)))

        def make() -> aioredis.Redis | aioredis.RedisCluster:
            if topology == "cluster":
                # Per node. After a connection error or MOVED the client re-reads the slot map
                # and retries on the new master (its retry budget), then gives up.
                return aioredis.RedisCluster.from_url(driver_url, **kwargs)
            if topology == "sentinel":
                return _sentinel_client(parts, base, rest, kwargs)
            # Tasks beyond max_connections wait (up to 20 s) for a connection.
            pool = aioredis.BlockingConnectionPool.from_url(driver_url, timeout=20.0, **kwargs)
            return aioredis.Redis.from_pool(pool)

        try:
            client = make()
        except (ValueError, TypeError, RedisClusterException) as exc:
            raise ConfigurationError(f"bad Redis URL {redact_url(url)!r}: {exc}") from exc
        store = cls(client, owns_client=True, **own)
        store._remake = make
        return store

    @property
    def client(self) -> aioredis.Redis | aioredis.RedisCluster:
        """The ``redis.asyncio`` client this store talks through in the running event loop.

        A client's connections belong to the event loop they were made on. A store made by
        ``from_url`` makes a client for each event loop it is used from (one ``anyio.run``
        after another, a forked child's loop; under trio, its bridge's loop) and forgets those
        of loops that have closed. A client passed to the constructor is the only one: use it
        from one loop, or make a store per loop.
        """
        return self._client

    @property
    def _client(self) -> aioredis.Redis | aioredis.RedisCluster:
        if self._remake is None:
            return self._given
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # trio: the call runs on the bridge's loop
            loop = self._bridge_or_new().loop
        bound = self._clients.get(loop)
        if bound is None:
            # A closed loop's connections can neither be used nor closed: forget them.
            self._clients = {at: b for at, b in self._clients.items() if not at.is_closed()}
            if self._given_bound:
                client = self._remake()
            else:
                client, self._given_bound = self._given, True
            bound = self._clients[loop] = (client, _closing_with(loop, client))
        return bound[0]

    @property
    def namespace(self) -> str:
        """The hash tag every key of this store lives under (``{namespace}:...``)."""
        return self._namespace

    @property
    def decimal_places(self) -> int:
        """Places kept for ``Decimal`` money; more precise amounts raise ``ValueError``."""
        return self._places

    # -- encoding --------------------------------------------------------------------------

    def _scaled(self, value: Decimal, what: str, key: str | None = None) -> int:
        """``value`` (checked by ``check_amount``) in units of ``10**-decimal_places``. Errors
        name it ``what`` (``what[key]`` with a key: built only then)."""
        shifted = value.scaleb(self._places, _SHIFT)
        scaled = int(shifted)
        if scaled == shifted and 0 <= scaled <= MAX_UNITS:
            return scaled
        name = named(what, key)
        if scaled != shifted:
            raise ValueError(f"{name} {value} has more than {self._places} decimal places; "
                             f"this RedisStore keeps {self._places} (decimal_places)")
        if scaled < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
        raise ValueError(f"{name} {value} is too large for a Redis limit: at most "
                         f"{self._unscale(MAX_UNITS)} with {self._places} decimal places")

    def _encode(self, amount: Amount, what: str, key: str | None = None) -> tuple[str, str, str]:
        """(kind, whole units or "", scaled money or "") for a checked amount (errors name it
        as ``_scaled`` does)."""
        if isinstance(amount, Decimal):
            return "d", "", str(self._scaled(amount, what, key))
        if amount > MAX_UNITS:
            raise ValueError(f"{named(what, key)} {amount} is too large for a Redis limit "
                             f"(at most {MAX_UNITS})")
        scaled = amount * self._scale
        return "i", str(amount), str(scaled) if scaled <= MAX_UNITS else ""

    def _unscale(self, scaled: int) -> Decimal:
        # In outlay's exact context, whatever the caller's is (a prec=4 context rounds 999.99).
        value = EXACT.scaleb(Decimal(scaled), -self._places).normalize(EXACT)
        exponent = value.as_tuple().exponent
        if isinstance(exponent, int) and exponent > 0:
            return value.quantize(Decimal(1), context=EXACT)
        return value

    def _decode(self, unit: str, value: object) -> Amount:
        count = int(_text(value))
        return count if unit == "i" else self._unscale(count)

    def _key(self, kind: str, name: str) -> str:
        return f"{self._prefix}{kind}:{name}"

    # -- running scripts -------------------------------------------------------------------

    async def _call(self, work: Callable[[], Awaitable[T]]) -> T:
        """Await ``work()`` on asyncio; from trio, on the store's bridge thread."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return await self._bridge_or_new().call(work)
        return await work()

    def _bridge_or_new(self) -> _Bridge:
        if self._bridge is None:
            self._bridge = _Bridge()
        return self._bridge

    def _eval(self, script: _Script, keys: Sequence[str | bytes], args: Sequence[str | bytes]
              ) -> Callable[[], Awaitable[Any]]:
        """``script`` as one ``EVALSHA``. After a ``NOSCRIPT`` answer (scripts flushed by a
        restart, failover or ``SCRIPT FLUSH``; nothing ran) one ``EVAL`` runs the operation and
        caches the script again."""
        client = self._client

        async def run() -> Any:
            try:
                return await client.evalsha(script.sha, len(keys), *keys, *args)
            except NoScriptError:
                return await client.eval(script.source, len(keys), *keys, *args)

        return run

    async def _run(self, name: str | _Script, keys: Sequence[str], args: Sequence[str]) -> Any:
        """Run one script (by name, or one of another module: jobs) in one round trip; map
        driver errors to outlay errors."""
        script = _SCRIPTS[name] if isinstance(name, str) else name
        work = self._eval(script, keys, args)
        if self._cluster:
            work = self._detached(work)
        try:
            return await self._call(work)
        except _DRIVER_ERRORS as exc:
            raise _map_error(exc) from exc

    def _grouped(self, name: str, keys: list[str], args: list[str]) -> Awaitable[Any]:
        """Run one operation of ``_BATCHED`` with its own ``args`` (the store's settings go
        first on the wire), sharing a round trip with others (group commit): returns what to
        await at once for its reply (its place in the queue, or the call that runs it alone).

        A lone operation runs at once as its own script (``_run``). Operations that arrive while
        one is in flight queue; up to ``PIPELINE`` round trips of them are in flight at once,
        each running its share of the queue (at most ``BATCH_MAX``) in one ``batch`` script,
        in arrival order, each with its own reply or error. Every key of a store is under its
        one hash tag, so a batch is one cluster slot.

        Failures and cancellation, as for a lone operation: a driver error (a lost reply, a
        dropped connection) fails every operation of that round trip with the same error as
        alone (each may or may not have run; each is idempotent by reservation id). Cancelled
        while queued: it is never sent. Cancelled in flight: the script runs to its end and
        the reply is dropped.
        """
        loop = _running_loop()
        if loop is None:  # trio: on the store's bridge loop
            return self._bridged(name, keys, args)
        group = self._groups.get(loop)  # this store's operations in this loop
        if not group.in_flight and not group.queue:
            return self._alone(group, name, keys, args)
        # Encoded here, so an id or key the client cannot encode fails this call alone.
        encoder = self._encoder
        future = loop.create_future()
        group.queue.append(_Queued(_SCRIPTS[name], keys, args,
                                   _frame(name, args).encode(encoder.encoding,
                                                             encoder.encoding_errors), future))
        self._pump(group)
        return future

    async def _alone(self, group: _Group, name: str, keys: list[str], args: list[str]) -> Any:
        """``_grouped`` for an operation that finds nothing in flight: its own script, now."""
        group.in_flight, group.carrying = 1, 1
        try:
            return await self._run(name, keys, [*self._settings, *args])
        finally:
            group.in_flight -= 1
            group.carrying -= 1
            self._pump(group)

    async def _bridged(self, name: str, keys: list[str], args: list[str]) -> Any:
        """``_grouped`` from trio: on the store's bridge loop."""
        try:
            return await self._bridge_or_new().call(
                functools.partial(self._grouped, name, keys, args))
        except _DRIVER_ERRORS as exc:  # from a bridge that is gone, say
            raise _map_error(exc) from exc

    def _pump(self, group: _Group) -> None:
        """If operations are queued and a round trip is free, drain the queue soon: after the
        tasks already woken (by the replies just in) have run and queued their next ones."""
        if group.queue and group.in_flight < PIPELINE and not group.draining:
            group.draining = True
            asyncio.get_running_loop().call_soon(self._drain, group)

    def _drain(self, group: _Group) -> None:
        """Send queued operations while a round trip is free, each round trip its own task, so
        no caller's cancellation reaches a round trip that carries others. Each takes its share
        of what is queued and in flight, so the round trips in flight carry alike and the
        client prepares one while the server runs the other."""
        group.draining = False
        loop = asyncio.get_running_loop()
        while group.queue and group.in_flight < PIPELINE:
            share = -(-(len(group.queue) + group.carrying) // PIPELINE)
            count = min(len(group.queue), BATCH_MAX, max(1, share))
            taken = [op for op in group.queue[:count] if not op.done()]
            del group.queue[:count]
            if taken:
                group.in_flight += 1
                group.carrying += len(taken)
                task = loop.create_task(self._send(taken))
                self._abandoned.add(task)
                task.add_done_callback(functools.partial(self._sent, group, len(taken)))

    def _sent(self, group: _Group, count: int, task: asyncio.Task[None]) -> None:
        self._abandoned.discard(task)
        if not task.cancelled():
            task.exception()  # _send settles its operations; nothing is left to raise
        group.in_flight -= 1
        group.carrying -= count
        self._pump(group)

    async def _send(self, taken: list[_Queued]) -> None:
        """One round trip for ``taken``; settle each one's future with its own outcome."""
        if len(taken) == 1:
            op = taken[0]
            work = self._eval(op.script, op.keys, [*self._settings, *op.args])
        else:
            # The scripts build their keys; the first operation's name the slot (framing
            # every key of a batch cost the client a tenth of its time).
            work = self._eval(_SCRIPTS["batch"], taken[0].keys, [
                *self._settings, b"[" + b",".join([op.payload for op in taken]) + b"]"])
        try:
            if self._cluster:
                await self._cluster_initialized()
            reply = await work()
        except BaseException as exc:
            for op in taken:  # a fresh error each: every caller raises its own
                if isinstance(exc, _DRIVER_ERRORS):
                    op.fail(_map_error(exc), exc)
                elif isinstance(exc, Exception):
                    op.fail(StoreError(f"Redis failed: {exc!r}"), exc)
                else:
                    op.fail(StoreUnavailable("the Redis store stopped with this operation in "
                                             "flight; it may or may not have run"), exc)
            if not isinstance(exc, Exception):
                raise
            return
        replies = [reply] if len(taken) == 1 else reply
        if not isinstance(replies, list) or len(replies) != len(taken):
            for op in taken:
                op.fail(StoreError(f"unexpected reply from Redis batch script: {reply!r}"))
            return
        for op, one in zip(taken, replies, strict=True):
            if isinstance(one, list) and len(one) == 2 and _text(one[0]) == "error":
                op.fail(StoreError(f"Redis failed: {_text(one[1])}"))
            elif not op.done():
                op.future.set_result(one)

    async def _cluster_initialized(self) -> None:
        """Let one task (re)read the cluster's slot map while the others wait. The cluster
        client reads it lazily, in every task that finds it missing or stale (first use, after
        a failover); several reads at once replace nodes whose connections other tasks are
        using, which then fail (``Connection closed``, ``AttributeError``)."""
        client = self._client
        assert isinstance(client, aioredis.RedisCluster)
        if not getattr(client, "_initialize", False):  # redis-py's "slot map is stale" flag
            return
        async with self._cluster_lock.get():
            if getattr(client, "_initialize", False):
                await client.initialize()

    def _detached(self, run: Callable[[], Awaitable[T]]) -> Callable[[], Awaitable[T]]:
        """``run`` as its own task that a cancelled caller does not cancel. The cluster client
        can put a connection cancelled mid-connect back in its free list, broken (its next user
        fails with ``AttributeError``); a script that is never cancelled runs to its end and
        leaves every connection sound. The caller still sees its cancellation at once; the
        script's outcome is the same as for a caller cancelled after sending it."""

        async def detached() -> T:
            await self._cluster_initialized()
            task = asyncio.ensure_future(run())
            self._abandoned.add(task)
            task.add_done_callback(_forget(self._abandoned))
            return await asyncio.shield(task)

        return detached

    def _raise_code(self, reply: Sequence[Any], amounts: Mapping[str, Amount]) -> None:
        code = _text(reply[0])
        name = _text(reply[1]) if len(reply) > 1 else ""
        if code == "unknown":
            raise UnknownLimit(name)
        if code == "unit":
            raise TypeError(f"limit {name!r} counts whole units (int); got {amounts.get(name)!r}")
        if code == "range":
            raise ValueError(f"amount {amounts.get(name)!r} for money limit {name!r} is too large "
                             f"once scaled to {self._places} decimal places (max {MAX_UNITS})")
        if code == "places":
            raise ConfigurationError(
                f"limit {name!r} was created with {_text(reply[2])} decimal places; this "
                f"RedisStore uses {self._places} (decimal_places must match across clients)")
        if code == "overflow":
            raise ValueError(f"limit {name!r} cannot count that much spend exactly (at most "
                             f"{MAX_UNITS} units once scaled); nothing was recorded")
        if code == "expire":
            raise ValueError(f"expire_at for limit {name!r} is out of range")
        if code == "foreign":
            raise ValueError(f"actual names limits the reservation does not hold: [{name!r}]")
        raise StoreError(f"unexpected reply from Redis script: {reply!r}")

    # -- the Store protocol ----------------------------------------------------------------

    async def set_limit(self, key: str, cap: Amount) -> None:
        cap = check_amount(cap, "cap")
        kind, ival, dval = self._encode(cap, "cap")
        unit, value = ("d", dval) if kind == "d" else ("i", ival)
        reply = await self._run("set_limit", [self._key("l", key), self._key("z", key)],
                                [unit, value, self._places_arg])
        code = _text(reply[0])
        if code == "unit":
            old = "int" if _text(reply[1]) == "i" else "Decimal"
            raise TypeError(f"limit {key!r} cannot change unit from {old} to "
                            f"{type(cap).__name__}")
        if code != "ok":
            self._raise_code([code, key, *reply[1:]], {})

    async def reserve(
        self,
        rid: str,
        amounts: Mapping[str, Amount],
        *,
        lease: float,
        defaults: Mapping[str, Amount] | None = None,
        expire_at: Mapping[str, float] | None = None,
    ) -> Admission:
        """See ``Store.reserve``. One script; all or nothing."""
        checked: dict[str, Amount] = {}
        keys = [self._key("r", rid)]
        args = [rid, _lease_ms(lease), str(len(amounts))]
        for key, amount in amounts.items():
            checked[key] = amount = check_amount(amount, "amount", key)
            kind, ival, dval = self._encode(amount, "amount", key)
            dkind = dcap = ""
            if defaults and key in defaults:
                cap = check_amount(defaults[key], "defaults", key)
                ckind, cival, cdval = self._encode(cap, "defaults", key)
                dkind, dcap = ckind, cival if ckind == "i" else cdval
            end = ""
            if expire_at and key in expire_at:
                seconds = expire_at[key]
                if isinstance(seconds, bool) or not isinstance(seconds, int | float):
                    raise TypeError(f"expire_at[{key!r}] must be UNIX seconds, got {seconds!r}")
                if not math.isfinite(seconds) or not 0 <= seconds <= MAX_EXPIRE_AT:
                    raise ValueError(f"expire_at[{key!r}] must be UNIX seconds in 0.."
                                     f"{MAX_EXPIRE_AT}, got {seconds!r}")
                end = str(math.ceil(seconds * 1000))
            keys += (self._key("l", key), self._key("z", key))
            args += (key, kind, ival, dval, dkind, dcap, end)
        reply = await self._grouped("reserve", keys, args)
        code = _text(reply[0])
        if code == "ok":
            self._touched[rid] = keys[1:]
            if len(self._touched) > TOUCHED_MEMORY:
                self._touched.popitem(last=False)
            return ADMITTED
        if code == "refused":
            name = _text(reply[1])
            unit = _text(reply[6])
            usage = LimitUsage(name, self._decode(unit, reply[2]), self._decode(unit, reply[3]),
                               self._decode(unit, reply[4]))
            return Admission(False, usage, checked[name])
        if code == "ended":
            raise ReservationError(f"reservation {rid!r} has already ended")
        self._raise_code(reply, checked)
        raise AssertionError("unreachable")  # pragma: no cover

    async def commit(self, rid: str, actual: Mapping[str, Amount] | None = None) -> bool:
        """See ``Store.commit``. One script; the spend counts even after the lease expired."""
        checked: dict[str, Amount] = {}
        args = [rid, str(len(actual)) if actual else "0"]
        for key, amount in (actual or {}).items():
            checked[key] = amount = check_amount(amount, "actual", key)
            args += (key, *self._encode(amount, "actual", key))
        reply = await self._grouped("commit", self._ending_keys(rid), args)
        self._touched.pop(rid, None)
        code = _text(reply[0])
        if code == "ok":
            return True
        if code == "ended":
            return False
        if code == "unknown":
            raise ReservationError(f"unknown reservation {rid!r} (never reserved, or ended "
                                   "longer ago than this store remembers)")
        self._raise_code(reply, checked)
        raise AssertionError("unreachable")  # pragma: no cover

    async def release(self, rid: str) -> bool:
        """See ``Store.release``. One script."""
        reply = await self._grouped("release", self._ending_keys(rid), [rid])
        self._touched.pop(rid, None)
        return bool(reply)

    async def extend(self, rid: str, lease: float) -> bool:
        """See ``Store.extend``. One script; the new lease runs on the server's clock."""
        reply = await self._grouped("extend", self._ending_keys(rid), [rid, _lease_ms(lease)])
        return bool(reply)

    def _ending_keys(self, rid: str) -> list[str]:
        """The reservation's key, then the limit keys it holds if this store admitted it (from
        elsewhere the script finds them in the reservation, all in the same slot)."""
        return [self._key("r", rid), *self._touched.get(rid, ())]

    async def usage(self, key: str) -> LimitUsage:
        """See ``Store.usage``. One script (drops the limit's expired holds first)."""
        reply = await self._run("usage", [self._key("l", key), self._key("z", key)], [])
        if not reply:
            raise UnknownLimit(key)
        return self._usage(key, reply)

    def _usage(self, key: str, reply: Sequence[Any]) -> LimitUsage:
        unit = _text(reply[3])
        return LimitUsage(key, self._decode(unit, reply[0]), self._decode(unit, reply[1]),
                          self._decode(unit, reply[2]))

    async def limits(self, prefix: str = "") -> list[LimitUsage]:
        """Every limit whose key starts with ``prefix``, sorted by key.

        Cost: a ``SCAN`` over the whole Redis database (``O(all keys)``, in pages of 1000, not
        atomic: a limit created or expiring meanwhile may be missed) plus one pipelined round
        trip running the usage script for each match. Meant for dashboards and reports, not for
        the hot path.
        """
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
        head = self._key("l", "")
        pattern = _glob_escape(head + prefix) + "*"
        script = _SCRIPTS["usage"]

        async def scan() -> tuple[list[str], list[Any]]:
            names = sorted({_text(found)[len(head):] async for found in
                            self._client.scan_iter(match=pattern, count=1000)})
            if not names:
                return [], []
            replies = await self._eval_many(
                script, [[self._key("l", name), self._key("z", name)] for name in names])
            return names, replies

        try:
            names, replies = await self._call(scan)
        except _DRIVER_ERRORS as exc:
            raise _map_error(exc) from exc
        if not names:
            return []
        return [self._usage(name, reply)
                for name, reply in zip(names, replies, strict=True) if reply]

    async def reset_spend(self, key: str) -> LimitUsage:
        """See ``Store.reset_spend``. One script: drops the limit's expired holds, then sets
        its spend to zero; the cap, live holds and any period expiry are kept. Returns the usage
        as it was before."""
        reply = await self._run("reset_spend", [self._key("l", key), self._key("z", key)], [])
        if not reply:
            raise UnknownLimit(key)
        return self._usage(key, reply)

    async def held_reservations(self) -> int:
        """See ``Store.held_reservations``: reservations of this namespace held right now.

        Cost: the holds are spread over per-reservation keys under the namespace's hash tag,
        with no namespace-wide index (keeping one would put an extra write on every reserve and
        ending), so this ``SCAN``s the whole Redis database (``O(all keys)``, pages of 1000)
        for ``{namespace}:r:*``, then runs one read-only script per 1000 matches in one
        pipelined round trip, each checking state and lease on the server's clock. Not atomic
        across pages: a reservation made or ended meanwhile may or may not be counted. Holds
        admitted while failing open (never stored) are not counted. For tests and diagnostics,
        not the hot path.
        """
        pattern = _glob_escape(self._key("r", "")) + "*"
        script = _SCRIPTS["held"]

        async def count() -> int:
            found = sorted({_text(name) async for name in
                            self._client.scan_iter(match=pattern, count=1000)})
            if not found:
                return 0
            replies = await self._eval_many(
                script, [found[start:start + 1000] for start in range(0, len(found), 1000)])
            return sum(int(reply) for reply in replies)

        try:
            return await self._call(count)
        except _DRIVER_ERRORS as exc:
            raise _map_error(exc) from exc

    async def holds(self, prefix: str = "") -> list[HoldUsage]:
        """See ``Store.holds``: the live reservations of this namespace, oldest first.

        Cost as ``held_reservations``: a ``SCAN`` of the whole database for ``{namespace}:r:*``
        and one read-only script per 1000 matches in one pipelined round trip; lease and age
        are on the server's clock. Not atomic across pages. Reservations made before outlay
        recorded their time have ``age`` ``None``.
        """
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
        head = self._key("r", "")
        pattern = _glob_escape(head) + "*"
        script = _SCRIPTS["holds"]

        async def read() -> list[Any]:
            found = sorted({_text(name) async for name in
                            self._client.scan_iter(match=pattern, count=1000)})
            if not found:
                return []
            return await self._eval_many(script, [found[start:start + 1000]
                                                  for start in range(0, len(found), 1000)])

        try:
            replies = await self._call(read)
        except _DRIVER_ERRORS as exc:
            raise _map_error(exc) from exc
        result = []
        for reply in replies:
            now = int(_text(reply[0]))
            i = 1
            while i < len(reply):
                rid = _text(reply[i])[len(head):]
                exp, at, n = int(_text(reply[i + 1])), _text(reply[i + 2]), int(_text(reply[i + 3]))
                i += 4
                amounts: dict[str, Amount] = {}
                for _ in range(n):
                    amounts[_text(reply[i])] = self._decode(_text(reply[i + 2]), reply[i + 1])
                    i += 3
                if any(key.startswith(prefix) for key in amounts):
                    age = (now - int(at)) / 1000 if at else None
                    result.append(HoldUsage(rid, amounts, (exp - now) / 1000, age))
        return oldest_first(result)

    async def drop_idle_limit(self, key: str, *, idle: float) -> bool:
        """See ``Store.drop_idle_limit``. One script, on the server's clock; a limit made
        before outlay recorded its last change (the ``t`` field) is never dropped."""
        idle = check_seconds(idle, "idle")
        reply = await self._run("drop_idle", [self._key("l", key), self._key("z", key)],
                                [str(math.ceil(idle * 1000))])
        return bool(reply)

    async def append_events(self, events: Sequence[SpendEvent], *, keep: int) -> None:
        """Append to the list ``{namespace}:e:log`` and trim it to the newest ``keep``, in
        one ``MULTI`` transaction."""
        keep = check_count(keep, "keep")
        bodies = [encode_event(event) for event in events]
        if not bodies:
            return
        key = self._key("e", "log")

        async def push() -> None:
            pipe = self._client.pipeline(transaction=True)
            pipe.rpush(key, *bodies)
            if keep:
                pipe.ltrim(key, -keep, -1)
            else:
                pipe.delete(key)
            await pipe.execute()

        try:
            await self._call(push)
        except _DRIVER_ERRORS as exc:
            raise _map_error(exc) from exc

    async def events(self, *, limit: int | None = None) -> list[SpendEvent]:
        """The list ``{namespace}:e:log``, oldest first."""
        start = 0 if limit is None else -check_count(limit, "limit")
        if start == 0 and limit == 0:
            return []
        key = self._key("e", "log")

        async def read() -> list[Any]:
            found: list[Any] = await self._client.lrange(key, start, -1)
            return found

        try:
            bodies = await self._call(read)
        except _DRIVER_ERRORS as exc:
            raise _map_error(exc) from exc
        return [decode_event(body) for body in bodies]

    async def _eval_many(self, script: _Script, calls: list[list[str]]) -> list[Any]:
        """Run ``script`` once per key list and return the replies in order. On one server:
        one pipelined round trip whose first command loads the script (so no ``NOSCRIPT``).
        A cluster client pipelines neither ``SCRIPT LOAD`` nor ``EVALSHA``: the script is
        loaded on every master, then the calls run concurrently."""
        if self._cluster:
            client = self._client
            await client.script_load(script.source)
            return list(await asyncio.gather(
                *(client.evalsha(script.sha, len(keys), *keys) for keys in calls)))
        pipe = self._client.pipeline(transaction=False)
        pipe.script_load(script.source)
        for keys in calls:
            pipe.evalsha(script.sha, len(keys), *keys)
        replies: list[Any] = await pipe.execute()
        return replies[1:]

    def release_abandoned(self, rid: str) -> None:
        """Schedule a release on the running asyncio loop (or the trio bridge's) if there is
        one; else the lease reclaims the hold."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            if self._bridge is not None:
                self._bridge.submit(self._release_quietly(rid))
            return
        task = loop.create_task(self._release_quietly(rid))
        self._abandoned.add(task)
        task.add_done_callback(self._abandoned.discard)

    async def _release_quietly(self, rid: str) -> None:
        try:
            await self.release(rid)
        except Exception as exc:  # the lease reclaims the hold
            log.warn("outlay.store.abandoned_release_failed", store="redis", reservation=rid,
                      error=str(exc))

    async def aclose(self) -> None:
        """Close this store's clients (``from_url``) of the running event loop and of the trio
        bridge, and stop the bridge thread, if one was started; those of other loops close
        with their loop. A client passed in stays open."""
        if self._owns_client:
            await self._call(self._close_client)
        bridge, self._bridge = self._bridge, None
        if bridge is not None:
            if self._owns_client:  # the bridge's loop, on its thread, from either backend
                await anyio.to_thread.run_sync(bridge.submit(self._close_client()).result)
            await bridge.stop()

    async def _close_client(self) -> None:
        """Close the running loop's client."""
        bound = self._clients.pop(asyncio.get_running_loop(), None)
        if bound is None:
            if not self._given_bound:
                await _shut(self._given)
            return
        client, closer = bound
        await closer.aclose()
        await _shut(client)  # (the closer had not started yet; closing twice is fine)


class _Bridge:
    """An asyncio loop on a daemon thread, so trio code can drive ``redis.asyncio``.

    A call runs on the bridge's loop; the trio task waits for it without blocking a thread. If
    the trio task is cancelled, the call still runs to its end on the bridge (a script runs
    entirely or not at all either way) and its answer is dropped.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                        name="outlay-redis-bridge")
        self._thread.start()

    def submit(self, work: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(work, self.loop)

    async def call(self, work: Callable[[], Awaitable[T]]) -> T:
        import trio  # only a trio caller gets here

        async def run() -> T:
            return await work()

        token = trio.lowlevel.current_trio_token()
        done = anyio.Event()

        def wake(_: object) -> None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(done.set)

        future = self.submit(run())
        future.add_done_callback(wake)
        await done.wait()
        return future.result()

    async def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        await anyio.to_thread.run_sync(self._thread.join)
        self.loop.close()


#: The scheme's part before ``+`` -> the driver's scheme for one node (Valkey is the protocol's
#: other server: same client).
_BASES: Final = {"redis": "redis", "rediss": "rediss", "valkey": "redis", "valkeys": "rediss",
                 "unix": "unix"}
_TOPOLOGIES: Final = ("", "cluster", "sentinel")
#: Query options of a Sentinel URL that configure the sentinels, not the master's pool.
_SENTINEL_QUERY: Final = ("sentinel_username", "sentinel_password", "min_other_sentinels")
#: Pool and connection arguments a Sentinel URL cannot set: the sentinels choose the address.
_SENTINEL_FIXED: Final = ("service_name", "sentinel_manager", "connection_class", "host", "port")
DEFAULT_SENTINEL_PORT: Final = 26379


def _scheme(scheme: str, url: str) -> tuple[str, str]:
    """``redis+sentinel`` -> (``redis``, ``sentinel``): the driver's scheme and the topology."""
    base, _, topology = scheme.partition("+")
    if base not in _BASES or topology not in _TOPOLOGIES or (base == "unix" and topology):
        raise ConfigurationError(f"unknown Redis URL scheme {scheme!r} in {redact_url(url)!r}")
    return _BASES[base], topology


def _retry() -> Retry:
    """The driver's retry budget for one client. Endings are idempotent by reservation id, so
    the driver may retry a dropped call; two quick retries keep an unreachable server failing
    fast."""
    return Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.1), 2)


class _SentinelPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """The master's pool behind the sentinels, blocking like the one-server pool (tasks beyond
    ``max_connections`` wait for a connection); closing it closes the sentinels' clients.

    It asks the sentinels who the master is at most every ``ASK_EVERY`` seconds, in a task of
    its own started by a call that takes a connection (which never waits for the answer). Once
    they name another master, idle connections to the old one are dropped at once and busy
    ones when they come back, so after a switch with the old master alive (``SENTINEL
    FAILOVER``) writes stop reaching it within about a second, not when the sentinels demote it
    (some 10 s later). The driver alone asks only when it opens a connection."""

    ASK_EVERY: ClassVar[float] = 1.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # redis-py's pools are unannotated.
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self._asked = -math.inf
        self._asking: asyncio.Task[None] | None = None
        self._unanswered = False

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        now = time.monotonic()
        if now - self._asked >= self.ASK_EVERY and (self._asking is None
                                                     or self._asking.done()):
            self._asked = now
            self._asking = asyncio.get_running_loop().create_task(self._ask())
        return await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]

    async def _ask(self) -> None:
        try:
            # Drops the idle connections if the master moved.
            await self.get_master_address()  # type: ignore[no-untyped-call]
        except Exception as exc:  # connections go on as they are; opening one asks again
            # Said once, and only while connections to a master go on (with none, every call
            # fails with the driver's own error).
            if self.master_address is not None:
                if not self._unanswered:
                    log.warn("outlay.redis.sentinels_unanswered", service=self.service_name,
                             error=type(exc).__name__)
                self._unanswered = True
        else:
            self._unanswered = False

    async def release(self, connection: Any) -> None:
        address = self.master_address
        if address is not None and (connection.host, connection.port) != address:
            await connection.disconnect()  # to a master the sentinels no longer name
        await super().release(connection)

    async def aclose(self) -> None:
        asking, self._asking = self._asking, None
        try:
            if asking is not None and not asking.done():
                asking.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await asking
            await super().aclose()
        finally:
            await self.sentinel_manager.aclose()


def _sentinel_client(parts: SplitResult, base: str, query: list[tuple[str, str]],
                     defaults: dict[str, Any]) -> aioredis.Redis:
    """The client of a ``redis+sentinel://`` URL's master (see ``RedisStore.from_url``).
    Raises ``ValueError`` for a malformed URL, never showing its credentials."""
    userinfo, at, hosts = parts.netloc.rpartition("@")
    sentinels = [_sentinel_address(host) for host in hosts.split(",")]
    path = parts.path.split("/")[1:]
    if path[-1:] == [""]:
        path.pop()
    service = unquote(path[0]) if path else ""
    if not service or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError("a Sentinel URL names its service and optionally a database: "
                         "/service[/db]")
    mine = dict(pair for pair in query if pair[0] in _SENTINEL_QUERY)
    # The master's options, read by the driver's own URL parser as for redis:// URLs.
    node_url = urlunsplit((base, f"{userinfo}{at}sentinel", "/" + "/".join(path[1:]),
                           urlencode([p for p in query if p[0] not in _SENTINEL_QUERY]), ""))
    node: dict[str, Any] = {**defaults, **parse_url(node_url)}
    del node["host"]
    node.pop("connection_class", None)
    tls = base == "rediss"
    # The sentinels' own clients: the same socket and TLS options, their own credentials.
    takes = inspect.signature(aioredis.Redis.__init__).parameters
    asked: dict[str, Any] = {key: value for key, value in node.items()
                             if key.startswith(("socket_", "ssl_")) and key in takes}
    asked.update(retry=_retry(), ssl=tls)
    for option in ("username", "password"):
        if f"sentinel_{option}" in mine:
            asked[option] = mine[f"sentinel_{option}"]
    try:
        quorum = int(mine.get("min_other_sentinels", "0"))
    except ValueError:
        raise ValueError("min_other_sentinels must be an integer") from None
    manager = Sentinel(  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        sentinels, min_other_sentinels=quorum, sentinel_kwargs=asked)
    client: aioredis.Redis = manager.master_for(
        service, connection_pool_class=_SentinelPool, ssl=tls, **{"timeout": 20.0, **node})
    return client


def _sentinel_address(text: str) -> tuple[str, int]:
    """``host``, ``host:port`` or ``[v6]:port`` -> (host, port), 26379 by default."""
    if text.startswith("["):
        host, _, tail = text[1:].partition("]")
        port = tail.removeprefix(":") if tail.startswith(":") or not tail else "!"
    else:
        host, colon, port = text.rpartition(":")
        if not colon:
            host, port = text, ""
    if not host or (port and not (port.isdigit() and 0 < int(port) < 65536)):
        raise ValueError(f"bad sentinel address {text!r}")
    return unquote(host), int(port or DEFAULT_SENTINEL_PORT)


def _accepted_query(base: str, topology: str) -> set[str]:
    """The query options a URL of this kind takes: outlay's own, and every argument of the
    driver's pool and connection classes (and the sentinels' options)."""
    connection: type = {"rediss": aioredis.SSLConnection,
                        "unix": aioredis.UnixDomainSocketConnection}.get(base, aioredis.Connection)
    classes: tuple[type, ...] = (aioredis.BlockingConnectionPool, connection)
    if topology == "cluster":
        classes = (aioredis.RedisCluster, aioredis.Connection)
    elif topology == "sentinel":
        classes = (_SentinelPool, SentinelManagedSSLConnection if base == "rediss"
                   else SentinelManagedConnection)
    accepted = set(_OWN_QUERY)
    for cls in (c for driver_class in classes for c in driver_class.__mro__):
        init = cls.__dict__.get("__init__")
        if init is not None:
            accepted.update(name for name, param in inspect.signature(init).parameters.items()
                            if param.kind is not param.VAR_KEYWORD and name != "self")
    if topology == "sentinel":
        accepted = (accepted - set(_SENTINEL_FIXED)) | set(_SENTINEL_QUERY)
    return accepted


async def _shut(client: aioredis.Redis | aioredis.RedisCluster) -> None:
    """Close ``client`` and every connection it opened. The cluster client's own ``aclose``
    closes nothing while its slot map is stale (after any connection error, until a call reads
    the map again): its nodes are closed here first, as its ``aclose`` would."""
    if isinstance(client, aioredis.RedisCluster):
        await client.nodes_manager.aclose()
        await client.nodes_manager.aclose("startup_nodes")
    await client.aclose()


def _closing_with(loop: asyncio.AbstractEventLoop, client: aioredis.Redis | aioredis.RedisCluster
                  ) -> AsyncGenerator[None, None]:
    """An async generator, started on ``loop``, that closes ``client`` when ``loop`` shuts
    down (``asyncio.run`` and ``anyio.run`` close every live async generator of a loop before
    they close it), so a client's connections end with the loop they belong to. Keep it."""

    async def closer() -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                await _shut(client)

    def start() -> None:  # its first step, on loop's thread: from now on the loop knows it
        with contextlib.suppress(StopIteration):  # it stops at its yield, awaiting nothing
            generator.asend(None).send(None)

    generator = closer()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        start()  # now: a task would not run if the loop ended first
    else:
        loop.call_soon_threadsafe(start)  # the trio bridge's loop, on its thread
    return generator


def _forget(tasks: set[asyncio.Task[Any]]) -> Callable[[asyncio.Future[Any]], None]:
    """A done-callback that drops a finished task from ``tasks`` and retrieves its exception
    (nobody awaits a task whose caller was cancelled)."""

    def done(task: asyncio.Future[Any]) -> None:
        tasks.discard(task)
        if not task.cancelled():
            task.exception()

    return done


_LEASES: dict[float, str] = {}
"""Leases already encoded by ``_lease_ms`` (at most 64, forgotten all at once when full): a
lease is a setting, the same few values on every reservation."""


def _lease_ms(lease: float) -> str:
    """``lease`` (checked) as whole milliseconds, at least 1."""
    kept = type(lease) is float or type(lease) is int  # not bool: True == 1, still refused
    text = _LEASES.get(lease) if kept else None
    if text is None:
        text = str(max(1, math.ceil(check_lease(lease) * 1000)))
        if kept:
            if len(_LEASES) >= 64:
                _LEASES.clear()
            _LEASES[lease] = text
    return text


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)
