"""The Redis store: one budget shared by many processes and machines.

Every operation is one Lua script (``EVALSHA``), one round trip, atomic at the server. The
scripts ship as ``.lua`` files beside this module (``_redis_lua/``); after a Redis restart or
``SCRIPT FLUSH`` the first ``NOSCRIPT`` answer is followed by one ``EVAL`` of the source, which
runs the operation and caches the script again.

Exactness: Lua numbers are doubles, so nothing is counted in them. Every count is an integer
string changed by ``HINCRBY`` (exact 64-bit arithmetic in the server); ``int`` limits count
whole units, ``Decimal`` limits count money scaled by ``10**decimal_places``. An amount or cap
with more places than that, or above ``2**53 - 1`` once scaled, is refused with ``ValueError``
before anything is sent, which keeps the scripts' comparisons exact.

Cluster: every key of a store lives under one hash tag, ``{namespace}``, so any set of limits can
be reserved in one atomic script. A namespace therefore lives on one shard; spread load by giving
independent tenants their own namespaces (their own ``RedisStore``).

This module imports ``redis``; ``import outlay`` never does (``store_from_url`` loads it).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from typing import Any, Final, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .._core import (
    Amount,
    ConfigurationError,
    ReservationError,
    StoreError,
    StoreUnavailable,
    UnknownLimit,
    check_amount,
    log,
)
from ._base import Admission, LimitUsage, Store

MAX_UNITS: Final = 2**53 - 1
"""The largest count (units, or money scaled by ``10**decimal_places``) a limit can hold."""

DEFAULT_DECIMAL_PLACES: Final = 9
DEFAULT_RETAIN: Final = 86_400.0
DEFAULT_PERIOD_GRACE: Final = 86_400.0
OPENED_MEMORY: Final = 65_536
"""How many reservations admitted while failing open are remembered for their endings."""

T = TypeVar("T")

_NAMESPACE = re.compile(r"[^{}]+")
_OWN_QUERY = ("namespace", "decimal_places", "fail_open")


@dataclass(frozen=True, slots=True)
class _Script:
    name: str
    source: str
    sha: str


def _load_scripts() -> dict[str, _Script]:
    folder = resources.files(__package__ or "outlay.stores").joinpath("_redis_lua")
    common = folder.joinpath("common.lua").read_text(encoding="utf-8")
    scripts = {}
    for name in ("reserve", "commit", "release", "extend", "usage", "set_limit", "reset_spend",
                 "held"):
        source = common + "\n" + folder.joinpath(f"{name}.lua").read_text(encoding="utf-8")
        sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
        scripts[name] = _Script(name, source, sha)
    return scripts


_SCRIPTS: Final = _load_scripts()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _map_error(exc: BaseException) -> StoreError:
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError):
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
    ``StoreError`` (fail closed). With ``fail_open=True`` a failed ``reserve`` is admitted
    without counting and failed endings are dropped, each logged as the warning event
    ``outlay.store.failed_open``; a reservation admitted that way and committed once Redis is
    back records its spend then. A caller cancelled mid-operation leaves the store consistent:
    the script ran entirely or not at all, and the driver drops the connection it was using.
    Releasing an id the server has not seen remembers it as released, so a reserve that reaches
    the server after its own release is refused instead of left holding.
    """

    def __init__(
        self,
        client: aioredis.Redis | aioredis.RedisCluster,
        *,
        namespace: str = "outlay",
        decimal_places: int = DEFAULT_DECIMAL_PLACES,
        fail_open: bool = False,
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
        self._client = client
        self._owns_client = owns_client
        self._namespace = namespace
        self._prefix = "{" + namespace + "}:"
        self._places = decimal_places
        self._places_arg = str(decimal_places)
        self._scale = 10**decimal_places
        self._fail_open = bool(fail_open)
        self._retain_ms = str(math.ceil(retain * 1000))
        self._grace_ms = str(math.ceil(period_grace * 1000))
        self._abandoned: set[asyncio.Task[Any]] = set()
        self._bridge: _Bridge | None = None
        # Reservations admitted while failing open, so their endings can still be settled.
        self._opened: OrderedDict[str, dict[str, Amount]] = OrderedDict()
        # Limit keys of the reservations this store admitted, so endings declare every key
        # they touch (strict cluster proxies want that; Redis itself only needs one slot).
        self._touched: OrderedDict[str, list[str]] = OrderedDict()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisStore:
        """``redis://[user:pass@]host:port/db`` (or ``rediss://``, ``unix://``) -> a store.

        The query may carry ``namespace``, ``decimal_places`` and ``fail_open`` (true/false);
        every other query option goes to the driver's connection pool (``max_connections``,
        default 64, ``socket_timeout``, ...). Keyword ``options`` win over the URL. Connections
        are made on first use; tasks beyond ``max_connections`` wait for one. The store owns the
        client and closes it in ``aclose``.
        """
        parts = urlsplit(url)
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
                raise ConfigurationError(f"bad decimal_places in {_redact(url)!r}") from exc
        if "fail_open" in own:
            flag = own["fail_open"].lower()
            if flag not in ("true", "false", "1", "0", "yes", "no"):
                raise ConfigurationError(
                    f"bad fail_open in {_redact(url)!r}: {own['fail_open']!r}")
            own["fail_open"] = flag in ("true", "1", "yes")
        own.update(options)
        query = dict(rest)
        driver_url = urlunsplit(parts._replace(query=urlencode(rest)))
        kwargs: dict[str, Any] = {}
        if "socket_connect_timeout" not in query:
            kwargs["socket_connect_timeout"] = 5.0
        if "socket_timeout" not in query:
            kwargs["socket_timeout"] = 10.0
        # Endings are idempotent by reservation id, so the driver may retry a dropped call;
        # a short budget of retries keeps an unreachable server failing fast.
        kwargs["retry"] = Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.1), 2)
        # Tasks beyond max_connections wait (up to 20 s) for a connection instead of failing.
        kwargs["max_connections"] = 64
        kwargs["timeout"] = 20.0
        try:
            pool = aioredis.BlockingConnectionPool.from_url(driver_url, **kwargs)
            client = aioredis.Redis.from_pool(pool)
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(f"bad Redis URL {_redact(url)!r}: {exc}") from exc
        return cls(client, owns_client=True, **own)

    @property
    def client(self) -> aioredis.Redis | aioredis.RedisCluster:
        """The ``redis.asyncio`` client this store talks through."""
        return self._client

    @property
    def namespace(self) -> str:
        """The hash tag every key of this store lives under (``{namespace}:...``)."""
        return self._namespace

    @property
    def decimal_places(self) -> int:
        """Places kept for ``Decimal`` money; more precise amounts raise ``ValueError``."""
        return self._places

    # -- encoding --------------------------------------------------------------------------

    def _scaled(self, value: Decimal, name: str) -> int:
        sign, digits, exponent = value.as_tuple()
        assert isinstance(exponent, int)  # finite: checked by check_amount
        coefficient = int("".join(map(str, digits)) or "0")
        shift = exponent + self._places
        if shift >= 0:
            scaled: int = coefficient * 10**shift
        else:
            scaled, rest = divmod(coefficient, 10**-shift)
            if rest:
                raise ValueError(f"{name} {value} has more than {self._places} decimal places; "
                                 f"this RedisStore keeps {self._places} (decimal_places)")
        if sign and scaled:
            raise ValueError(f"{name} must be >= 0, got {value}")
        if scaled > MAX_UNITS:
            raise ValueError(f"{name} {value} is too large for a Redis limit: at most "
                             f"{self._unscale(MAX_UNITS)} with {self._places} decimal places")
        return scaled

    def _encode(self, amount: Amount, name: str) -> tuple[str, str, str]:
        """(kind, whole units or "", scaled money or "") for a checked amount."""
        if isinstance(amount, Decimal):
            return "d", "", str(self._scaled(amount, name))
        if amount > MAX_UNITS:
            raise ValueError(f"{name} {amount} is too large for a Redis limit "
                             f"(at most {MAX_UNITS})")
        scaled = amount * self._scale
        return "i", str(amount), str(scaled) if scaled <= MAX_UNITS else ""

    def _unscale(self, scaled: int) -> Decimal:
        value = Decimal(scaled).scaleb(-self._places).normalize()
        exponent = value.as_tuple().exponent
        return value.quantize(Decimal(1)) if isinstance(exponent, int) and exponent > 0 else value

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
            if self._bridge is None:
                self._bridge = _Bridge()
            return await self._bridge.call(work)
        return await work()

    async def _run(self, name: str, keys: Sequence[str], args: Sequence[str]) -> Any:
        """Run one script in one round trip; map driver errors to outlay errors."""
        script = _SCRIPTS[name]
        client = self._client

        async def run() -> Any:
            try:
                return await client.evalsha(script.sha, len(keys), *keys, *args)
            except NoScriptError:
                # Scripts were flushed (restart, failover, SCRIPT FLUSH): EVAL runs the
                # operation and caches the script again. NOSCRIPT means nothing ran.
                return await client.eval(script.source, len(keys), *keys, *args)

        try:
            return await self._call(run)
        except (RedisError, OSError) as exc:
            raise _map_error(exc) from exc

    def _failed_open(self, operation: str, exc: StoreError, **fields: Any) -> None:
        log.warn("outlay.store.failed_open", store="redis", operation=operation,
                  error=str(exc), error_type=type(exc).__name__, **fields)

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
        if code == "foreign":
            raise ValueError(f"actual names limits the reservation does not hold: [{name!r}]")
        raise StoreError(f"unexpected reply from Redis script: {reply!r}")

    # -- the Store protocol ----------------------------------------------------------------

    async def set_limit(self, key: str, cap: Amount) -> None:
        cap = check_amount(cap, "cap")
        kind, ival, dval = self._encode(cap, "cap")
        unit, value = ("d", dval) if kind == "d" else ("i", ival)
        reply = await self._run("set_limit", [self._key("l", key)],
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
        checked = {key: check_amount(amount) for key, amount in amounts.items()}
        keys = [self._key("r", rid)]
        args = [self._prefix, rid, _lease_ms(lease), self._retain_ms,
                self._places_arg, self._grace_ms, str(len(checked))]
        for key, amount in checked.items():
            kind, ival, dval = self._encode(amount, f"amount[{key!r}]")
            dkind = dcap = ""
            if defaults and key in defaults:
                cap = check_amount(defaults[key], "cap")
                ckind, cival, cdval = self._encode(cap, f"defaults[{key!r}]")
                dkind, dcap = ckind, cival if ckind == "i" else cdval
            end = ""
            if expire_at and key in expire_at:
                seconds = expire_at[key]
                if isinstance(seconds, bool) or not isinstance(seconds, int | float):
                    raise TypeError(f"expire_at[{key!r}] must be UNIX seconds, got {seconds!r}")
                if not math.isfinite(seconds):
                    raise ValueError(f"expire_at[{key!r}] must be finite, got {seconds!r}")
                end = str(math.ceil(seconds * 1000))
            keys += [self._key("l", key), self._key("z", key)]
            args += [key, kind, ival, dval, dkind, dcap, end]
        try:
            reply = await self._run("reserve", keys, args)
        except StoreError as exc:
            if not self._fail_open:
                raise
            self._failed_open("reserve", exc, reservation=rid, amounts=checked)
            self._opened[rid] = checked
            if len(self._opened) > OPENED_MEMORY:
                self._opened.popitem(last=False)
            return Admission(True)
        code = _text(reply[0])
        if code == "ok":
            self._touched[rid] = keys[1:]
            if len(self._touched) > OPENED_MEMORY:
                self._touched.popitem(last=False)
            return Admission(True)
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
        checked = {k: check_amount(v, f"actual[{k!r}]") for k, v in (actual or {}).items()}
        opened = self._opened.get(rid)
        if opened is not None and not checked.keys() <= opened.keys():
            unknown = sorted(checked.keys() - opened.keys())
            raise ValueError(f"actual names limits the reservation does not hold: {unknown}")
        args = [self._prefix, rid, self._retain_ms, self._places_arg, str(len(checked))]
        for key, amount in checked.items():
            args += [key, *self._encode(amount, f"actual[{key!r}]")]
        if opened is not None:
            # Admitted while failing open: if Redis is back, the spend is recorded now.
            args.append(str(len(opened)))
            for key, amount in opened.items():
                args += [key, *self._encode(amount, f"amount[{key!r}]")]
        try:
            reply = await self._run("commit", self._ending_keys(rid), args)
        except StoreError as exc:
            if not self._fail_open:
                raise
            self._opened.pop(rid, None)
            self._failed_open("commit", exc, reservation=rid, actual=checked)
            return True
        self._opened.pop(rid, None)
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
        opened = self._opened.pop(rid, None) is not None
        try:
            reply = await self._run("release", self._ending_keys(rid),
                                    [self._prefix, rid, self._retain_ms])
        except StoreError as exc:
            if not self._fail_open:
                raise
            self._failed_open("release", exc, reservation=rid)
            return opened
        self._touched.pop(rid, None)
        return bool(reply) or opened

    async def extend(self, rid: str, lease: float) -> bool:
        """See ``Store.extend``. One script; the new lease runs on the server's clock."""
        try:
            reply = await self._run("extend", self._ending_keys(rid),
                                    [self._prefix, rid, _lease_ms(lease),
                                     self._retain_ms, self._grace_ms])
        except StoreError as exc:
            if not self._fail_open:
                raise
            self._failed_open("extend", exc, reservation=rid)
            return True
        return bool(reply) or rid in self._opened

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
            pipe = self._client.pipeline(transaction=False)
            pipe.script_load(script.source)
            for name in names:
                pipe.evalsha(script.sha, 2, self._key("l", name), self._key("z", name))
            replies: list[Any] = await pipe.execute()
            return names, replies

        try:
            names, replies = await self._call(scan)
        except (RedisError, OSError) as exc:
            raise _map_error(exc) from exc
        if not names:
            return []
        return [self._usage(name, reply)
                for name, reply in zip(names, replies[1:], strict=True) if reply]

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
            pipe = self._client.pipeline(transaction=False)
            pipe.script_load(script.source)
            for start in range(0, len(found), 1000):
                chunk = found[start:start + 1000]
                pipe.evalsha(script.sha, len(chunk), *chunk)
            replies: list[Any] = await pipe.execute()
            return sum(int(reply) for reply in replies[1:])

        try:
            return await self._call(count)
        except (RedisError, OSError) as exc:
            raise _map_error(exc) from exc

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
        """Close the client if this store made it (``from_url``); a client passed in stays
        open. Stops the trio bridge thread, if one was started."""
        if self._owns_client:
            await self._call(self._client.aclose)
        bridge, self._bridge = self._bridge, None
        if bridge is not None:
            await bridge.stop()


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


def _redact(url: str) -> str:
    """``url`` without its password, for error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def _lease_ms(lease: float) -> str:
    if isinstance(lease, bool) or not isinstance(lease, int | float):
        raise TypeError(f"lease must be a number of seconds, got {type(lease).__name__}")
    if not math.isfinite(lease) or lease <= 0:
        raise ValueError(f"lease must be a positive, finite number of seconds, got {lease}")
    return str(max(1, math.ceil(lease * 1000)))


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)
