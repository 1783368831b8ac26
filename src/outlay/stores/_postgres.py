"""The PostgreSQL store: one budget for a team or fleet that already runs PostgreSQL.

Limits, holds, spend and a history of endings live in tables of one schema of their own
(``outlay`` unless ``schema=`` says otherwise), so every process and machine that opens the same
database and schema shares one budget, and it survives restarts of everything.

How it stays exact and atomic:

- Every operation runs inside **one transaction** (``READ COMMITTED``); concurrent
  ``reserve``/``commit``/``release``/``extend`` calls of one store share one (group commit,
  ``_call_batch``), each still all-or-nothing and failing alone. Before it reads anything, a
  writing transaction takes one transaction-scoped advisory lock per limit any of its
  operations touches, **all up front, in one fixed order** (sorted lock ids, one ``SELECT``
  over a sorted list). Two processes therefore never wait on each other in a cycle: no
  deadlock, whatever keys their reservations share. The locks also cover limits that do not
  exist yet, so a reservation that creates a period limit from ``defaults`` and is then refused
  leaves nothing behind (nothing of it is written).
- A reservation is admitted only if ``spent + held + amount <= cap`` for **every** limit it
  names; otherwise nothing is written (all-or-nothing). The decision is the one every
  Python-side store makes (``_decide``), on the figures read under the locks. ``held`` is
  not a counter that could drift: it is the sum of the live hold rows of the limit (an index
  on ``(key, expires_at)``).
- Money is ``NUMERIC``: exact decimal arithmetic in the server, never floating point; sums
  are the server's, and the decision adds in outlay's exact decimal context. ``int``
  limits count whole units in the same type, with the unit in its own column.
- Leases run on the **server's clock** (``clock_timestamp()``, read after the locks are held),
  so processes on machines whose clocks disagree still agree on when a hold expires. An expired
  hold stops counting at once (reads filter it out); its row is kept, so a late commit still
  records the spend, until ``history`` seconds have passed.
- Endings are idempotent by reservation id: a retried commit or release after a timeout counts
  once (``endings`` remembers every ended id for ``history`` seconds).
- Its own schema, versioned (``meta`` table). A schema that holds tables outlay did not create,
  or one from a newer outlay, is refused untouched. An older one is migrated on first use, in
  one transaction, under a lock (see ``docs/postgresql.md``).

The driver is psycopg 3 (``outlay[postgresql]``), used synchronously in worker threads through
``anyio.to_thread.run_sync``: psycopg's and asyncpg's async APIs run on asyncio only, while a
thread works the same from asyncio and trio. Each store keeps a small pool of connections, one
per worker thread in use (``pool_size``, default 8). Once an operation has its thread it is
never abandoned: a caller cancelled then sees the cancellation after the transaction finished
(committed or rolled back), so the operation may have taken effect; every operation is
idempotent by reservation id, and ``Budget`` releases a reservation whose ``reserve`` was
cancelled. Cancelled while waiting for a thread, or queued for the next shared transaction,
nothing happened.

This module imports ``psycopg``; ``import outlay`` never does (``store_from_url`` loads it).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final, TypeVar, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
import anyio.lowlevel
import psycopg
import psycopg.pq

from .._core import (
    Amount,
    ConfigurationError,
    ReservationError,
    StoreError,
    StoreUnavailable,
    UnknownLimit,
    _log,
    check_amount,
    check_amounts,
    check_count,
    check_lease,
    plus,
)
from ._base import ADMITTED, Admission, HoldUsage, LimitUsage, Store, check_seconds, oldest_first
from ._decide import ReserveDecision, decide_commit, decide_release, decide_reserve
from ._events import SpendEvent, decode_event, encode_event
from ._fork import track
from ._group import Group, PerLoop, Queued
from ._url import check_query, redact_url

T = TypeVar("T")

SCHEMA_VERSION: Final = 1
"""The version of the tables this outlay creates and reads (``meta.version``)."""

DEFAULT_SCHEMA: Final = "outlay"
DEFAULT_POOL_SIZE: Final = 8

#: How long ended reservation ids (and expired holds) are kept, in seconds. A retried ending
#: older than this is answered as unknown (``commit`` raises, ``release`` returns False).
DEFAULT_HISTORY: Final = 30 * 24 * 3600.0

#: How often (seconds, per store) old history is pruned.
_PRUNE_EVERY: Final = 3600.0

_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_OWN_QUERY = ("schema", "pool_size", "history")
_OWNER = "outlay"

#: version -> the statements that bring a schema at ``version - 1`` to ``version``; ``{s}`` is
#: the quoted schema. Version 1 creates the tables. A new version appends an entry here.
_MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    1: (
        """CREATE TABLE {s}.meta (
            one     boolean PRIMARY KEY DEFAULT true CHECK (one),
            owner   text    NOT NULL CHECK (owner = 'outlay'),
            version integer NOT NULL)""",
        """CREATE TABLE {s}.limits (
            key        text PRIMARY KEY,
            unit       text NOT NULL CHECK (unit IN ('int', 'decimal')),
            cap        numeric NOT NULL CHECK (cap >= 0),
            spent      numeric NOT NULL,
            expire_at  double precision,
            updated_at double precision NOT NULL)""",
        """CREATE TABLE {s}.reservations (
            rid        text PRIMARY KEY,
            expires_at double precision NOT NULL,
            created_at double precision NOT NULL)""",
        "CREATE INDEX reservations_by_expiry ON {s}.reservations (expires_at)",
        """CREATE TABLE {s}.hold_items (
            rid        text NOT NULL,
            key        text NOT NULL,
            amount     numeric NOT NULL CHECK (amount >= 0),
            expires_at double precision NOT NULL,
            PRIMARY KEY (rid, key))""",
        "CREATE INDEX hold_items_live ON {s}.hold_items (key, expires_at) INCLUDE (amount)",
        """CREATE TABLE {s}.endings (
            rid      text PRIMARY KEY,
            outcome  text NOT NULL CHECK (outcome IN ('committed', 'released')),
            ended_at double precision NOT NULL)""",
        "CREATE INDEX endings_by_time ON {s}.endings (ended_at)",
    ),
}

#: How many admitted reservations' limit keys a store remembers, so an ending takes its locks
#: in one transaction (others first read the keys).
_TOUCHED_MEMORY: Final = 65_536

#: Taken (transaction-scoped) while a schema is created or migrated.
_SETUP_LOCK: Final = 0x6F75746C  # "outl"


@functools.cache
def _libpq_options() -> frozenset[str]:
    """The connection options this libpq accepts, as ``?name=`` in a URL."""
    return frozenset(o.keyword.decode() for o in psycopg.pq.Conninfo.get_defaults())


class _NoSchema(Exception):
    """A read found no schema yet (nothing was created): it answers as for an empty store."""


def _unit(cap: Amount) -> str:
    return "decimal" if isinstance(cap, Decimal) else "int"


def _value(unit: str, number: Decimal) -> Amount:
    return int(number) if unit == "int" else number


#: A reservation as ``_hold`` reads it: its expiry and its amounts by limit key.
_Hold = tuple[float, dict[str, Decimal]]


def _rows(cursor: psycopg.Cursor[Any]) -> dict[str, LimitUsage]:
    """The limits a ``load`` statement returned, by key."""
    return {(k := _dec(key)): LimitUsage(k, _value(unit, cap), _value(unit, spent),
                                         _value(unit, held))
            for key, unit, cap, spent, held in cursor}


def _enc(key: str) -> str:
    """``key`` as stored: PostgreSQL text holds no NUL, so ``\\`` and NUL are escaped. Escaping
    character by character keeps prefixes: ``_enc(a + b) == _enc(a) + _enc(b)``."""
    return key.replace("\\", "\\\\").replace("\x00", "\\0")


def _dec(stored: str) -> str:
    """The key ``_enc`` stored as ``stored``."""
    return re.sub(r"\\(.)", lambda m: "\x00" if m.group(1) == "0" else m.group(1), stored,
                  flags=re.DOTALL)


def _lock_id(text: str) -> int:
    """A stable signed 32-bit id for ``text`` (an advisory-lock key)."""
    digest = hashlib.blake2b(text.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


def _seconds(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive, finite number of seconds, got {value}")
    return float(value)


#: An operation's answer, or the error it raises.
_Outcome = tuple[object, BaseException | None]

#: The most operations one batch (one transaction) takes; more wait for the next.
_BATCH_MAX: Final = 128


@dataclass(frozen=True, slots=True)
class _Op:
    """One operation of a batch: its reservation id, the limits whose locks it needs, and its
    decision (``decide(view)``: reads and changes the batch's ``_View``; it changes nothing
    before it is sure to succeed, so one that raises leaves no trace)."""

    rid: str
    keys: frozenset[str]
    decide: Callable[[_View], object]


@dataclass(frozen=True, slots=True)
class _Relock:
    """What an operation answers when the reservation holds limits its batch did not lock:
    it did nothing, and must run again with ``keys`` locked."""

    keys: frozenset[str]


def _rid(item: _Queued) -> str:
    """A batch takes at most one operation per reservation id (a second one waits for the
    next batch, so no operation sees another's effect on the same id)."""
    return item.op.rid


class _Queued(Queued):
    """An operation of ``_Op`` in the event loop, queued for its batch (``stores/_group.py``)."""

    __slots__ = ("op",)

    def __init__(self, op: _Op) -> None:
        super().__init__()
        self.op = op


@dataclass(slots=True)
class _View:
    """A batch's transaction as its operations see it, one after the other: what it read under
    its locks (``limits`` as the earlier operations left them; the reservations and endings of
    its ids), and the writes they add up to (``writes``)."""

    now: float
    locked: frozenset[str]
    limits: dict[str, LimitUsage]
    holds: dict[str, _Hold]
    ended: set[str]
    created: dict[str, float | None] = field(default_factory=dict)
    new_holds: list[tuple[str, float, Mapping[str, Amount]]] = field(default_factory=list)
    spend: dict[str, Amount] = field(default_factory=dict)
    endings: dict[str, str] = field(default_factory=dict)
    remembered: list[str] = field(default_factory=list)
    extended: dict[str, float] = field(default_factory=dict)

    def current(self, keys: Iterable[str]) -> dict[str, LimitUsage]:
        """The limits among ``keys`` that exist."""
        return {key: self.limits[key] for key in keys if key in self.limits}

    def covers(self, hold: _Hold) -> bool:
        """Whether the batch holds the lock of every limit ``hold`` names."""
        return hold[1].keys() <= self.locked

    def holding(self, hold: _Hold) -> tuple[dict[str, LimitUsage], dict[str, Amount]]:
        """The limits ``hold`` names that exist, and its amounts in their units."""
        current = self.current(hold[1])
        return current, {key: _value(_unit(current[key].cap), amount) if key in current
                         else amount for key, amount in hold[1].items()}

    def hold(self, rid: str, expires_at: float, amounts: Mapping[str, Amount],
             decision: ReserveDecision, ends: Mapping[str, float]) -> None:
        """An admitted reservation: its hold, and the limits it creates."""
        for key in decision.created:
            self.created[key] = ends.get(key)
        self.limits.update(decision.after)
        self.new_holds.append((rid, expires_at, amounts))

    def end(self, rid: str, outcome: str, after: Mapping[str, LimitUsage],
            spend: Mapping[str, Amount]) -> None:
        """The reservation ``rid`` ends (``committed``/``released``) with these figures."""
        self.limits.update(after)
        for key, amount in spend.items():
            self.spend[key] = plus(self.spend[key], amount) if key in self.spend else amount
        self.endings[rid] = outcome

    def writes(self, sql: _Statements) -> list[tuple[str, tuple[object, ...]]]:
        """The statements that write everything the operations did: a few, whatever their
        number; rows in id order, so two batches lock index entries in one order."""
        out: list[tuple[str, tuple[object, ...]]] = []
        now = self.now
        if self.new_holds:
            holds = sorted(self.new_holds, key=lambda h: h[0])
            items = [(rid, key, amount, expires_at) for rid, expires_at, amounts in holds
                     for key, amount in amounts.items()]
            parameters: tuple[object, ...] = (
                now, [h[0] for h in holds], [h[1] for h in holds], [i[0] for i in items],
                [_enc(i[1]) for i in items], [str(i[2]) for i in items], [i[3] for i in items])
            if self.created:  # only reservations create limits: in the same statement
                made = sorted(self.created)
                out.append((sql.insert_holds_made, (
                    [_enc(k) for k in made], [_unit(self.limits[k].cap) for k in made],
                    [str(self.limits[k].cap) for k in made], [self.created[k] for k in made],
                    now, *parameters)))
            else:
                out.append((sql.insert_holds, parameters))
        if self.endings:
            rids = sorted(self.endings)
            parameters = (rids, rids, now, rids, [self.endings[r] for r in rids])
            if self.spend:  # only commits spend: in the same statement
                keys = sorted(self.spend)
                out.append((sql.end_spending, (now, [_enc(k) for k in keys],
                                               [str(self.spend[k]) for k in keys], *parameters)))
            else:
                out.append((sql.end, parameters))
        if self.remembered:
            out.append((sql.remember_release, (now, sorted(self.remembered))))
        if self.extended:
            rids = sorted(self.extended)
            expires = [self.extended[r] for r in rids]
            out.append((sql.extend, (rids, expires, rids, expires)))
        return out


def _ids(cursor: psycopg.Cursor[Any]) -> tuple[dict[str, _Hold], set[str]]:
    """What an ``ids`` statement returned: the reservations by id, and the ids that ended."""
    found: dict[str, _Hold] = {}
    ended: set[str] = set()
    for rid, expires_at, key, amount, over in cursor:
        if over:
            ended.add(rid)
        if expires_at is not None:
            entry = found.setdefault(rid, (float(expires_at), {}))
            if key is not None:
                entry[1][_dec(key)] = amount
    return found, ended


def _copy(error: StoreError) -> StoreError:
    """Another ``error`` of the same kind and message, for each operation a batch fails."""
    copy = type(error)(str(error))
    copy.__cause__ = error.__cause__
    return copy


class PostgresStore(Store):
    """Limits, holds, spend and ending history in one PostgreSQL schema (see the module
    docstring for how it stays exact).

    ``conninfo`` is a libpq connection string or URL (``postgresql://user@host:5432/db``);
    ``PostgresStore.from_url`` (and ``store_from_url``) also read ``schema``, ``pool_size`` and
    ``history`` from the URL's query. ``schema`` is created on first use if missing; one that
    holds other tables is refused. ``pool_size`` is how many connections (and worker threads)
    one store uses at most. ``history`` is how many seconds ended reservation ids are kept for
    idempotent retries. ``clock`` replaces the server's clock with UNIX seconds from Python
    (tests); by default leases run on the server's clock.

    ``expire_at`` passed to ``reserve`` is recorded on the limit it creates, for inspection;
    limits are never deleted, so the spend of a finished period stays readable.

    Errors: the server unreachable (or a connection lost mid-operation) raises
    ``StoreUnavailable``, any other driver error ``StoreError``, each with the ``psycopg`` error
    as ``__cause__``; a transaction that fails is rolled back, so nothing of it is kept.
    """

    def __init__(
        self,
        conninfo: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        pool_size: int = DEFAULT_POOL_SIZE,
        history: float = DEFAULT_HISTORY,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if not isinstance(conninfo, str) or not conninfo:
            raise TypeError("conninfo must be a non-empty str")
        if not isinstance(schema, str) or not _SCHEMA_NAME.fullmatch(schema):
            raise ConfigurationError(
                f"schema must be a name of letters, digits and underscores (at most 63, not "
                f"starting with a digit), got {schema!r}")
        if type(pool_size) is not int or not 1 <= pool_size <= 1024:
            raise ConfigurationError(f"pool_size must be an int in 1..1024, got {pool_size!r}")
        try:
            self._history = _seconds(history, "history")
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(str(exc)) from exc
        self._conninfo = conninfo
        self._schema = schema
        self._pool_size = pool_size
        self._clock = clock
        self._sql = _Statements('"' + schema + '"')
        self._schema_lock = _lock_id(f"outlay-schema:{schema}")
        self._ready = False
        self._closed = False
        self._pruned_at = float("-inf")
        self._touched: OrderedDict[str, frozenset[str]] = OrderedDict()
        self._fresh()
        track(self)

    def _fresh(self) -> None:
        """The per-process parts: the lock, the pool, the event-loop queues, the threads."""
        self._lock = threading.Lock()
        self._idle: list[psycopg.Connection[Any]] = []
        self._abandoned: list[threading.Thread] = []
        self._group = PerLoop(lambda: Group[_Queued](
            most=_BATCH_MAX, distinct=_rid, limiter=anyio.CapacityLimiter(self._pool_size),
            settle=True))

    def _after_fork(self) -> list[object]:
        """In a forked child: the parent's connections (its sockets, its sessions) are left
        alone, never used or closed here; the child connects anew (``stores/_fork.py``)."""
        kept: list[object] = list(self._idle)
        self._fresh()
        return kept

    @classmethod
    def from_url(cls, url: str, **options: Any) -> PostgresStore:
        """``postgresql://[user[:password]@]host[:port]/database?schema=...`` -> a store.

        ``schema`` (default ``outlay``), ``pool_size`` and ``history`` are the store's own
        options; every other query option goes to libpq (``sslmode``, ``connect_timeout``,
        ``application_name``, ...) and must be one libpq knows: a misspelled one is refused with
        its closest match, without its value (it may be a credential). Keyword ``options`` win
        over the URL. ``postgres://`` is accepted too. Connections are made on first use.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres") or not url.startswith(
                f"{parts.scheme}://"):
            raise ConfigurationError(f"bad PostgreSQL URL {redact_url(url)!r}; expected "
                                     "postgresql://user@host:port/database?schema=...")
        own: dict[str, Any] = {}
        rest = []
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key in _OWN_QUERY:
                own[key] = value
            else:
                rest.append((key, value))
        check_query(url, [key for key, _ in rest], _libpq_options(), "PostgreSQL")
        for name, kind in (("pool_size", int), ("history", float)):
            if name in own:
                try:
                    own[name] = kind(own[name])
                except ValueError as exc:
                    raise ConfigurationError(f"bad {name} in {redact_url(url)!r}") from exc
        own.update(options)
        if not any(key == "connect_timeout" for key, _ in rest):
            rest.append(("connect_timeout", "10"))
        conninfo = urlunsplit(parts._replace(scheme="postgresql", query=urlencode(rest)))
        return cls(conninfo, **own)

    @property
    def schema(self) -> str:
        """The schema whose tables this store reads and writes."""
        return self._schema

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {redact_url(self._conninfo)!r} schema={self._schema!r}>"

    # -- the one boundary: threads, connections, the schema, error mapping ------------------

    async def _run(self, op: Callable[[psycopg.Connection[Any], float], T],
                   keys: Iterable[str] = (), *, write: bool = True) -> T:
        """Run ``op(conn, now)`` in one transaction in a worker thread, holding the locks of
        ``keys``. ``write`` false: a read, which raises ``_NoSchema`` instead of creating the
        schema.

        Cancelled while waiting for a thread: nothing happened. Cancelled once in the thread:
        the transaction finishes, one way or the other, and then the cancellation is raised.
        """
        locks = sorted({_lock_id(key) for key in keys})
        result = await anyio.to_thread.run_sync(self._call, op, locks, write,
                                                limiter=self._group.get().limiter)
        await anyio.lowlevel.checkpoint_if_cancelled()
        return result

    def _call(self, op: Callable[[psycopg.Connection[Any], float], T],
              locks: Sequence[int], write: bool,
              reads: Callable[[psycopg.Connection[Any]], object] | None = None) -> T:
        """``op(conn, now)`` in one transaction holding ``locks`` (sorted), committed unless
        ``op`` ended it; ``reads(conn)`` first issues statements that go in the same round trip
        as ``BEGIN`` and the locks (``op`` reads their cursors). Driver errors are mapped
        (``_error``); a transaction that fails is rolled back."""
        conn, now = self._begin(write, locks, reads)
        try:
            try:
                result = op(conn, now)
            except BaseException:
                with contextlib.suppress(psycopg.Error):  # a broken connection is dropped below
                    conn.execute("ROLLBACK")
                raise
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.execute("COMMIT")
            return result
        except psycopg.Error as exc:
            raise self._error(exc, conn) from exc
        finally:
            self._give_back(conn)

    def _error(self, exc: psycopg.Error, conn: psycopg.Connection[Any] | None) -> StoreError:
        """``StoreUnavailable`` if the server could not be reached or the connection broke (a
        commit's outcome is then unknown), else ``StoreError`` (rolled back, nothing kept)."""
        lost = conn is None or conn.broken or conn.closed
        kind = StoreUnavailable if lost else StoreError
        return kind(f"PostgreSQL store {self!r}: {exc}")

    def _begin(self, write: bool, locks: Sequence[int],
               reads: Callable[[psycopg.Connection[Any]], object] | None
               ) -> tuple[psycopg.Connection[Any], float]:
        """A connection in a fresh transaction holding the advisory locks ``locks`` (sorted),
        and the time after they are held (also set as ``outlay.now`` for the statements of the
        transaction): ``BEGIN``, the locking statement and ``reads`` go in one round trip
        (pipeline mode). A pooled connection that turns out dead (server restarted, backend
        terminated, network cut while idle) is dropped and the next one tried: nothing ran on
        it, so nothing ran twice."""
        while True:
            try:
                conn, pooled = self._acquire()
            except psycopg.Error as exc:
                raise self._error(exc, None) from exc
            try:
                if not self._ready:
                    self._setup(conn, write)
                self._prune(conn)
                clock = self._clock() if self._clock is not None else None
                with conn.pipeline():
                    conn.execute("BEGIN")
                    cursor = conn.execute(self._sql.lock, (self._schema_lock, clock, list(locks)))
                    if reads is not None:
                        reads(conn)
                row = cursor.fetchone()
                assert row is not None
                return conn, float(row[-1])
            except psycopg.Error as exc:
                broken = conn.broken or conn.closed
                if broken and pooled:
                    conn.close()
                    continue
                error = self._error(exc, conn)
                with contextlib.suppress(psycopg.Error):
                    conn.execute("ROLLBACK")
                self._give_back(conn)
                raise error from exc
            except _NoSchema:
                self._give_back(conn)
                raise
            except BaseException:
                conn.close()
                raise

    def _acquire(self) -> tuple[psycopg.Connection[Any], bool]:
        """An idle pooled connection (and True), or a new one (and False)."""
        with self._lock:
            if self._closed:
                raise StoreError(f"{self!r} is closed")
            if self._idle:
                return self._idle.pop(), True
        conn: psycopg.Connection[Any] = psycopg.connect(self._conninfo, autocommit=True)
        try:
            # A plain index scan marks the index entries of ended holds dead as it passes them
            # (a bitmap scan never does), so summing a busy limit's live holds does not slow
            # down with every hold ended since the last vacuum. The statements are few and
            # index lookups: planned once (a generic plan), not on every execution, which the
            # server otherwise chooses for those with array parameters (PostgreSQL 12+).
            conn.execute("SET enable_bitmapscan = off")
            if conn.info.server_version >= 120000:
                conn.execute("SET plan_cache_mode = force_generic_plan")
        except BaseException:
            conn.close()
            raise
        return conn, False

    def _give_back(self, conn: psycopg.Connection[Any]) -> None:
        healthy = not conn.closed and (
            conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE)
        with self._lock:
            if healthy and not self._closed:
                self._idle.append(conn)
                return
        conn.close()

    def _setup(self, conn: psycopg.Connection[Any], create: bool) -> None:
        """Check the schema is ours and current; create or migrate it, in one transaction
        under a lock, so processes opening a fresh database at once do it once. A read
        (``create`` false) of a schema that does not exist yet creates nothing: it raises
        ``_NoSchema`` and the read answers as for an empty store."""
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (self._schema_lock, _SETUP_LOCK))
            version = self._version(conn)
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"PostgreSQL schema {self._schema!r} has outlay schema version {version}; "
                    f"this outlay knows up to {SCHEMA_VERSION} (upgrade outlay)")
            if version == 0 and not create:
                raise _NoSchema
            if version < SCHEMA_VERSION:
                conn.execute(self._sql.create_schema)
                for step in range(version + 1, SCHEMA_VERSION + 1):
                    for statement in _MIGRATIONS[step]:
                        conn.execute(statement.format(s=self._sql.schema))
                conn.execute(self._sql.set_version, (_OWNER, SCHEMA_VERSION))
        self._ready = True

    def _version(self, conn: psycopg.Connection[Any]) -> int:
        """0 for a missing or empty schema, else the outlay version; raises for a schema
        that is not outlay's."""
        tables = {name for (name,) in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s", (self._schema,))}
        if not tables:
            return 0
        if "meta" in tables:
            row = conn.execute(self._sql.version).fetchone()
            if row is not None and row[0] == _OWNER:
                return int(row[1])
        raise StoreError(
            f"PostgreSQL schema {self._schema!r} holds tables that are not an outlay store "
            f"({', '.join(sorted(tables)[:5])}); refusing to touch it: pick another schema= ")

    def _prune(self, conn: psycopg.Connection[Any]) -> None:
        """Forget ended ids and expired holds older than ``history`` (its own transaction)."""
        if time.monotonic() - self._pruned_at < _PRUNE_EVERY:
            return
        with conn.transaction():
            row = conn.execute(self._sql.now).fetchone()
            assert row is not None
            before = (self._clock() if self._clock is not None else float(row[0])) \
                - self._history
            conn.execute(self._sql.prune, (before, before))
        self._pruned_at = time.monotonic()

    # -- group commit (in the event loop) ----------------------------------------------------

    async def _submit(self, op: _Op) -> object:
        """Run ``op`` in the next batch of this store: the answer of its ``decide`` (or its
        error).

        Group commit: operations that arrive while a batch is in the worker thread queue in the
        event loop; the next batch takes all of them (one per reservation id, at most
        ``_BATCH_MAX``) into **one** transaction (``_call_batch``). A lone operation runs at
        once, as a batch of one.

        Cancelled while queued: nothing happened. Cancelled once taken into a batch: the
        transaction finishes, one way or the other, and then the cancellation is raised.
        """
        return await self._group.get().submit(_Queued(op), self._call_batch)

    async def _on_hold(self, rid: str, decide: Callable[[_View], object]) -> object:
        """Submit ``decide`` for the reservation ``rid`` under the locks of the limits it
        holds: known for a reservation this store admitted; otherwise the first try takes
        none, and if the reservation holds limits the batch did not lock (another process
        made it, or the reserve landed meanwhile), it did nothing and runs again with them."""
        keys = self._touched.get(rid, frozenset())
        while True:
            result = await self._submit(_Op(rid, keys, decide))
            if not isinstance(result, _Relock):
                return result
            keys = result.keys

    # -- group commit (in the worker thread) -------------------------------------------------

    def _call_batch(self, items: list[_Queued]) -> None:
        """Run the operations ``items`` in one transaction: ``BEGIN``, the advisory locks of
        every limit any of them names (sorted, all up front), one statement for those limits
        and one for their reservations (row-locked, in id order) and endings, in one round
        trip; then each decides in turn on the figures the earlier ones left (``_View``), in
        Python; then the writes of all of them (a few statements, whatever their number) and
        ``COMMIT`` in a second round trip. An operation that raises or is refused writes
        nothing and fails alone.

        If the transaction fails as a whole on a database error that leaves no doubt about
        its outcome (a deadlock, a conflict with another writer, data the server refuses),
        nothing of it was kept: each operation runs again alone, so the error fails only the
        operations it touches. A lost connection fails every operation in it (a commit's
        outcome is unknown; each is idempotent by reservation id)."""
        keys = frozenset().union(*(item.op.keys for item in items))
        rids = sorted(item.op.rid for item in items)
        cursors: list[psycopg.Cursor[Any]] = []

        def reads(conn: psycopg.Connection[Any]) -> None:  # again on another connection
            cursors[:] = [conn.execute(self._sql.load, ([_enc(key) for key in keys],)),
                          conn.execute(self._sql.ids, (rids,))]

        def run(conn: psycopg.Connection[Any], now: float) -> list[_Outcome]:
            limits, ids = cursors
            view = _View(now, keys, _rows(limits), *_ids(ids))
            outcomes: list[_Outcome] = []
            for item in items:
                try:
                    outcomes.append((item.op.decide(view), None))
                except Exception as exc:  # bad input, unknown limit or id: this one fails
                    outcomes.append((None, exc))
            with conn.pipeline():  # one round trip
                for statement, parameters in view.writes(self._sql):
                    conn.execute(statement, parameters)
                conn.execute("COMMIT")
            return outcomes

        try:
            outcomes = self._call(run, sorted({_lock_id(key) for key in keys}), True, reads)
        except StoreError as exc:
            if len(items) > 1 and not isinstance(exc, StoreUnavailable):
                _log.warn("outlay.postgres.batch_retried", store=repr(self),
                          operations=len(items), error=str(exc))
                for item in items:
                    self._call_batch([item])
                return
            outcomes = [(None, _copy(exc)) for _ in items]
        except BaseException as exc:
            outcomes = [(None, exc) for _ in items]
        for item, (result, error) in zip(items, outcomes, strict=True):
            item.result, item.error = result, error

    # -- helpers (in the worker thread, inside the operation's transaction) -----------------

    def _load(self, conn: psycopg.Connection[Any], keys: Iterable[str]) -> dict[str, LimitUsage]:
        return _rows(conn.execute(self._sql.load, ([_enc(key) for key in keys],)))

    # -- the Store protocol -----------------------------------------------------------------

    async def set_limit(self, key: str, cap: Amount) -> None:
        cap = check_amount(cap, "cap")
        unit = _unit(cap)

        def op(conn: psycopg.Connection[Any], now: float) -> None:
            found = conn.execute(self._sql.unit, (_enc(key),)).fetchone()
            if found is None:
                conn.execute(self._sql.create, ([_enc(key)], [unit], [str(cap)], [None], now))
            elif found[0] != unit:
                raise TypeError(f"limit {key!r} cannot change unit from {found[0]} "
                                f"to {type(cap).__name__}")
            else:
                conn.execute(self._sql.set_cap, (str(cap), now, _enc(key)))

        await self._run(op, [key])

    async def reserve(
        self,
        rid: str,
        amounts: Mapping[str, Amount],
        *,
        lease: float,
        defaults: Mapping[str, Amount] | None = None,
        expire_at: Mapping[str, float] | None = None,
    ) -> Admission:
        """See ``Store.reserve``. One transaction (shared with concurrent operations of this
        store, see ``_call_batch``); all or nothing; a refusal writes nothing."""
        checked = check_amounts(amounts, "amount")
        caps = check_amounts(defaults or {}, "defaults")
        seconds = check_lease(lease)
        ends: dict[str, float] = {}
        for key, end in (expire_at or {}).items():
            if isinstance(end, bool) or not isinstance(end, int | float):
                raise TypeError(f"expire_at[{key!r}] must be UNIX seconds, got {end!r}")
            if not math.isfinite(end):
                raise ValueError(f"expire_at[{key!r}] must be finite, got {end!r}")
            ends[key] = float(end)

        def decide(view: _View) -> Admission:
            hold = view.holds.get(rid)
            if hold is not None and hold[0] > view.now:
                return ADMITTED  # a retried reserve
            if hold is not None or rid in view.ended:
                raise ReservationError(f"reservation {rid!r} has already ended")
            decision = decide_reserve(view.current(checked), checked, caps)
            if decision.admission.admitted:
                view.hold(rid, view.now + seconds, checked, decision, ends)
            return decision.admission

        admission = cast(Admission, await self._submit(_Op(rid, frozenset(checked), decide)))
        if admission.admitted:
            self._touched[rid] = frozenset(checked)
            if len(self._touched) > _TOUCHED_MEMORY:
                self._touched.popitem(last=False)
        return admission

    async def commit(self, rid: str, actual: Mapping[str, Amount] | None = None) -> bool:
        """See ``Store.commit``. One transaction (shared, see ``_call_batch``); the spend
        counts even after the lease expired (within ``history``)."""
        checked = check_amounts(actual or {}, "actual")

        def decide(view: _View) -> bool | _Relock:
            hold = view.holds.get(rid)
            if hold is None:
                if rid not in view.ended:
                    raise ReservationError(f"unknown reservation {rid!r} (never reserved, or "
                                           "ended longer ago than this store remembers)")
                return False
            if not view.covers(hold):
                return _Relock(frozenset(hold[1]))
            current, held = view.holding(hold)
            after, spend = decide_commit(current, held, checked, live=hold[0] > view.now)
            view.end(rid, "committed", after, spend)
            return True

        result = cast(bool, await self._on_hold(rid, decide))
        self._touched.pop(rid, None)
        return result

    async def release(self, rid: str) -> bool:
        def decide(view: _View) -> bool | _Relock:
            hold = view.holds.get(rid)
            if hold is None:
                # Remembered as released (unless it ended already): a reserve of this id that
                # arrives later, overtaken by its own release, is refused instead of holding.
                view.remembered.append(rid)
                return False
            if not view.covers(hold):
                return _Relock(frozenset(hold[1]))
            # An expired hold that is released is over: a later commit no longer counts.
            live = hold[0] > view.now
            view.end(rid, "released", decide_release(*view.holding(hold)) if live else {}, {})
            return live

        result = cast(bool, await self._on_hold(rid, decide))
        self._touched.pop(rid, None)
        return result

    def release_abandoned(self, rid: str) -> None:
        """Release a garbage-collected reservation from a short-lived background thread, so the
        finaliser never blocks; ``aclose`` waits for it. If it cannot run (the store is closed,
        the server is unreachable), the lease reclaims the hold."""

        def run() -> None:
            with contextlib.suppress(Exception):  # best effort; the lease is the fallback
                anyio.run(self.release, rid)

        thread = threading.Thread(target=run, name=f"outlay-postgres-release-{rid}",
                                  daemon=True)
        thread.start()
        self._abandoned = [t for t in self._abandoned if t.is_alive()]
        self._abandoned.append(thread)

    async def extend(self, rid: str, lease: float) -> bool:
        seconds = check_lease(lease)

        def decide(view: _View) -> bool | _Relock:
            hold = view.holds.get(rid)
            if hold is None or hold[0] <= view.now:
                return False  # an expired hold is not revived
            if not view.covers(hold):
                return _Relock(frozenset(hold[1]))
            view.extended[rid] = view.now + seconds
            return True

        return cast(bool, await self._on_hold(rid, decide))

    async def usage(self, key: str) -> LimitUsage:
        def op(conn: psycopg.Connection[Any], now: float) -> LimitUsage:
            rows = self._load(conn, [key])
            if key not in rows:
                raise UnknownLimit(key)
            row = rows[key]
            return LimitUsage(key, row.cap, row.spent, row.held)

        try:
            return await self._run(op, write=False)
        except _NoSchema:
            raise UnknownLimit(key) from None

    async def limits(self, prefix: str = "") -> list[LimitUsage]:
        """Snapshot every limit whose key starts with ``prefix``, sorted by key (one query)."""
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")

        def op(conn: psycopg.Connection[Any], now: float) -> list[LimitUsage]:
            rows = conn.execute(self._sql.listing, (_enc(prefix),))
            return sorted((LimitUsage(_dec(key), _value(unit, cap), _value(unit, spent),
                                      _value(unit, held)) for key, unit, cap, spent, held in rows),
                          key=lambda usage: usage.key)  # by code point, not by collation

        try:
            return await self._run(op, write=False)
        except _NoSchema:
            return []

    async def reset_spend(self, key: str) -> LimitUsage:
        """See ``Store.reset_spend``: one transaction under the limit's lock. Returns the usage
        as it was before."""

        def op(conn: psycopg.Connection[Any], now: float) -> LimitUsage:
            rows = self._load(conn, [key])
            if key not in rows:
                raise UnknownLimit(key)
            conn.execute(self._sql.reset, (now, _enc(key)))
            row = rows[key]
            return LimitUsage(key, row.cap, row.spent, row.held)

        return await self._run(op, [key])

    async def held_reservations(self) -> int:
        """How many holds are live right now (for diagnostics and tests)."""

        def op(conn: psycopg.Connection[Any], now: float) -> int:
            row = conn.execute(self._sql.held_count, (now,)).fetchone()
            assert row is not None
            return int(row[0])

        try:
            return await self._run(op, write=False)
        except _NoSchema:
            return 0

    async def holds(self, prefix: str = "") -> list[HoldUsage]:
        """See ``Store.holds``: every live reservation with a limit starting with ``prefix``,
        oldest first; lease and age on the server's clock (one query)."""
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")

        def op(conn: psycopg.Connection[Any], now: float) -> list[HoldUsage]:
            found: dict[str, tuple[float, float, dict[str, Amount]]] = {}
            for rid, expires_at, created_at, key, unit, amount in conn.execute(
                    self._sql.holds, (now,)):
                entry = found.setdefault(rid, (expires_at, created_at, {}))
                entry[2][_dec(key)] = _value(unit, amount)
            return [HoldUsage(rid, amounts, expires_at - now, now - created_at)
                    for rid, (expires_at, created_at, amounts) in found.items()
                    if any(key.startswith(prefix) for key in amounts)]

        try:
            return oldest_first(await self._run(op, write=False))
        except _NoSchema:
            return []

    async def drop_idle_limit(self, key: str, *, idle: float) -> bool:
        """See ``Store.drop_idle_limit``: delete ``key`` if it has no live hold and has not
        changed for ``idle`` seconds (its ``updated_at``), in one transaction under its lock."""
        idle = check_seconds(idle, "idle")

        def op(conn: psycopg.Connection[Any], now: float) -> bool:
            row = conn.execute(self._sql.drop_idle, (_enc(key), now - idle, _enc(key), now))
            return row.rowcount == 1

        try:
            return await self._run(op, [key])
        except _NoSchema:  # pragma: no cover - a write creates the schema
            return False

    async def append_events(self, events: Sequence[SpendEvent], *, keep: int) -> None:
        """Append to the ``events`` table (made on first use, like SQLite's, so a schema with
        no events has none), keeping the newest ``keep`` rows; one transaction."""
        keep = check_count(keep, "keep")
        bodies = [encode_event(event) for event in events]
        if not bodies:
            return

        def op(conn: psycopg.Connection[Any], now: float) -> None:
            conn.execute(self._sql.events_table)
            conn.execute(self._sql.add_events, (bodies,))
            conn.execute(self._sql.trim_events, (keep,))

        await self._run(op, ["\0events"])

    async def events(self, *, limit: int | None = None) -> list[SpendEvent]:
        """The ``events`` table, oldest first (the newest ``limit``); ``[]`` before any."""
        count = None if limit is None else check_count(limit, "limit")

        def op(conn: psycopg.Connection[Any], now: float) -> list[str]:
            if conn.execute(self._sql.events_exist, (self.schema,)).fetchone() is None:
                return []
            return [body for (body,) in conn.execute(self._sql.read_events, (count,))]

        try:
            return [decode_event(body) for body in await self._run(op, write=False)]
        except _NoSchema:
            return []

    async def migrate(self) -> int:
        """Create the schema, or bring an older one to this outlay's version, now (every
        write does it on first use anyway); returns the version. For a deploy step that runs
        before the new version serves traffic. Refuses a newer or a foreign schema untouched."""

        def op(conn: psycopg.Connection[Any], now: float) -> int:
            row = conn.execute(self._sql.version).fetchone()
            assert row is not None
            return int(row[1])

        return await self._run(op)

    async def aclose(self) -> None:
        """Finish pending releases of abandoned reservations, then close the connections.
        Later operations raise ``StoreError``; closing twice is fine."""

        def close() -> None:
            pending, self._abandoned = self._abandoned, []
            for thread in pending:
                thread.join()
            with self._lock:
                self._closed = True
                idle, self._idle = self._idle, []
            for conn in idle:
                conn.close()

        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(close)


class _Statements:
    """Every statement the store runs, with the schema filled in once."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        s = schema  # a validated name in double quotes: safe to put into SQL
        self.create_schema = (f"CREATE SCHEMA IF NOT EXISTS {s}")
        self.version = (f"SELECT owner, version FROM {s}.meta")
        self.set_version = (f"INSERT INTO {s}.meta (owner, version) VALUES (%s, %s) "
                              "ON CONFLICT (one) DO UPDATE SET version = EXCLUDED.version")
        self.now = "SELECT extract(epoch FROM clock_timestamp())::float8"
        # The aggregate takes the locks row by row in the subquery's sorted order; the clock (or
        # the test clock's reading, parameter 2) is read when the aggregate is done, so after
        # every lock is held, and kept as ``outlay.now`` for the rest of the transaction.
        self.lock = (
            "SELECT count(pg_advisory_xact_lock(%s, k)), set_config('outlay.now', "
            "COALESCE(%s::float8, extract(epoch FROM clock_timestamp())::float8)::text, "
            "true)::float8 FROM (SELECT k FROM unnest(%s::int[]) AS k ORDER BY k) AS sorted")
        now = "(SELECT current_setting('outlay.now')::float8)"
        live = (f"SELECT sum(h.amount) FROM {s}.hold_items h "
                f"WHERE h.key = l.key AND h.expires_at > {now}")
        # Parameters: keys. The held sum is exact NUMERIC arithmetic.
        self.load = (
            f"SELECT l.key, l.unit, l.cap, l.spent, COALESCE(({live}), 0) "
            f"FROM {s}.limits l WHERE l.key = ANY(%s::text[])")
        # Parameters: prefix.
        self.listing = (
            f"SELECT l.key, l.unit, l.cap, l.spent, COALESCE(({live}), 0) "
            f"FROM {s}.limits l WHERE starts_with(l.key, %s)")
        self.unit = (f"SELECT unit FROM {s}.limits WHERE key = %s")
        # Parameters: keys, units, caps, expire_ats, now.
        self.create = (
            f"INSERT INTO {s}.limits (key, unit, cap, spent, expire_at, updated_at) "
            "SELECT k, u, c::numeric, 0, e, n FROM unnest("
            "%s::text[], %s::text[], %s::text[], %s::float8[]) AS t(k, u, c, e), "
            "(SELECT %s::float8 AS n) AS at")
        self.set_cap = (
            f"UPDATE {s}.limits SET cap = %s::numeric, updated_at = %s WHERE key = %s")
        self.reset = (f"UPDATE {s}.limits SET spent = 0, updated_at = %s WHERE key = %s")
        # Parameters: rids (sorted). Per id: its reservation (row-locked, in the order of the
        # ids), one row per hold item, and whether it has ended (true, else NULL). The ending
        # is a scalar subquery, one primary-key probe per id: an ``EXISTS`` may be planned
        # hashed, as a scan of all of ``endings`` per statement (1.3 ms at 3,600 endings).
        self.ids = (
            f"SELECT u.rid, r.expires_at, h.key, h.amount, "
            f"(SELECT true FROM {s}.endings e WHERE e.rid = u.rid) "
            "FROM unnest(%s::text[]) AS u(rid) "
            f"LEFT JOIN LATERAL (SELECT rid, expires_at FROM {s}.reservations "
            "WHERE rid = u.rid FOR UPDATE) AS r ON true "
            f"LEFT JOIN {s}.hold_items h ON h.rid = r.rid")
        # Parameters: now, rids, expires_ats; then per item: rids, keys, amounts, expires_ats.
        # ``insert_holds_made``: first those of ``create`` (the limits they create).
        holds = (
            f"hold AS (INSERT INTO {s}.reservations (rid, expires_at, created_at) "
            "SELECT r, e, %s FROM unnest(%s::text[], %s::float8[]) AS t(r, e)) "
            f"INSERT INTO {s}.hold_items (rid, key, amount, expires_at) "
            "SELECT r, k, a::numeric, e "
            "FROM unnest(%s::text[], %s::text[], %s::text[], %s::float8[]) AS t(r, k, a, e)")
        self.insert_holds = f"WITH {holds}"
        self.insert_holds_made = f"WITH made AS ({self.create}), {holds}"
        # Parameters: rids, rids, now, rids, outcomes. ``end_spending``: first now, keys,
        # amounts (the spend of the commits).
        ending = (
            f"items AS (DELETE FROM {s}.hold_items WHERE rid = ANY(%s::text[])), "
            f"hold AS (DELETE FROM {s}.reservations WHERE rid = ANY(%s::text[])) "
            f"INSERT INTO {s}.endings (rid, outcome, ended_at) "
            "SELECT r, o, %s FROM unnest(%s::text[], %s::text[]) AS t(r, o) "
            "ON CONFLICT (rid) DO UPDATE SET outcome = EXCLUDED.outcome, "
            "ended_at = EXCLUDED.ended_at")
        self.end = f"WITH {ending}"
        self.end_spending = (
            f"WITH spend AS (UPDATE {s}.limits AS l SET spent = l.spent + t.a::numeric, "
            "updated_at = n FROM (SELECT %s::float8 AS n) AS at, "
            f"unnest(%s::text[], %s::text[]) AS t(k, a) WHERE l.key = t.k), {ending}")
        # Parameters: rids, expires_ats, rids, expires_ats.
        self.extend = (
            f"WITH hold AS (UPDATE {s}.reservations r SET expires_at = t.e "
            "FROM unnest(%s::text[], %s::float8[]) AS t(id, e) WHERE r.rid = t.id) "
            f"UPDATE {s}.hold_items h SET expires_at = t.e "
            "FROM unnest(%s::text[], %s::float8[]) AS t(id, e) WHERE h.rid = t.id")
        # Parameters: now, rids.
        self.remember_release = (
            f"INSERT INTO {s}.endings (rid, outcome, ended_at) "
            "SELECT r, 'released', %s FROM unnest(%s::text[]) AS r ON CONFLICT (rid) DO NOTHING")
        # Parameters: now.
        self.holds = (
            f"SELECT r.rid, r.expires_at, r.created_at, h.key, l.unit, h.amount "
            f"FROM {s}.reservations r JOIN {s}.hold_items h ON h.rid = r.rid "
            f"JOIN {s}.limits l ON l.key = h.key WHERE r.expires_at > %s ORDER BY r.rid, h.key")
        # Parameters: key, changed before, key, now.
        self.drop_idle = (
            f"DELETE FROM {s}.limits l WHERE l.key = %s AND l.updated_at <= %s "
            f"AND NOT EXISTS (SELECT 1 FROM {s}.hold_items h WHERE h.key = %s "
            "AND h.expires_at > %s)")
        self.events_table = (f"CREATE TABLE IF NOT EXISTS {s}.events ("
                             "seq bigserial PRIMARY KEY, body text NOT NULL)")
        self.events_exist = ("SELECT 1 FROM pg_tables WHERE schemaname = %s "
                             "AND tablename = 'events'")
        self.add_events = (f"INSERT INTO {s}.events (body) SELECT unnest(%s::text[])")
        # Parameters: keep.
        self.trim_events = (
            f"DELETE FROM {s}.events WHERE seq <= "
            f"(SELECT seq FROM {s}.events ORDER BY seq DESC OFFSET %s LIMIT 1)")
        # Parameters: limit (NULL: all).
        self.read_events = (
            f"SELECT body FROM (SELECT seq, body FROM {s}.events ORDER BY seq DESC "
            "LIMIT %s) AS newest ORDER BY seq")
        self.held_count = (f"SELECT count(*) FROM {s}.reservations WHERE expires_at > %s")
        # Parameters: before, before.
        self.prune = (
            f"WITH gone AS (DELETE FROM {s}.reservations WHERE expires_at < %s RETURNING rid), "
            f"items AS (DELETE FROM {s}.hold_items WHERE rid IN (SELECT rid FROM gone)) "
            f"DELETE FROM {s}.endings WHERE ended_at < %s")
