"""The SQLite store: embedded, durable, shared by several processes on one host.

Limits, live holds (with their leases), spend and a history of endings live in one SQLite file,
so they survive a restart, and several processes opening the same file share one budget.

How it stays exact and atomic:

- Every operation is **one transaction**. Writes start with ``BEGIN IMMEDIATE``, which takes
  the database's single write lock before reading anything, so check-then-update cannot
  interleave with another process (a deferred transaction could read, then fail to upgrade).
  Reads (``usage``, ``limits``) are one read transaction over a consistent snapshot.
- The file is in WAL mode, so readers never block the writer. ``busy_timeout`` makes an
  operation that finds the database busy wait (default 30 s) instead of failing; only past it
  does the store raise ``StoreUnavailable``.
- Amounts are stored as exact decimal TEXT (``int`` units and ``Decimal`` money alike, the
  limit's unit in its own column) and added up in Python: never ``REAL``, never rounded, no
  64-bit overflow.
- Leases are absolute times on the **wall clock** (``time.time()``), recorded in the database.
  Every process on one host reads the same wall clock, and it survives a reboot, unlike a
  monotonic clock, whose zero is per boot. The cost: a step of the system clock moves every
  lease with it. ``clock=`` replaces it (tests).
- Expired holds stop counting at once: write operations move them into the history (first
  thing in their transaction) and reads subtract them from ``held`` without writing.

The ``sqlite3`` driver is synchronous; every call runs in a worker thread via
``anyio.to_thread.run_sync`` over **one connection per store, guarded by a lock**. SQLite lets one
writer at a time into a file anyway, so a pool would only add parallel readers while every
connection paid for its own cache and WAL bookkeeping. Each store also takes one worker-thread
slot per event loop (an ``anyio.CapacityLimiter(1)``): concurrent operations of one store queue
in the event loop, where they can still be cancelled with no effect, instead of parking threads
of anyio's shared pool on the lock. Once an operation has its thread it is never abandoned: if
the caller is cancelled then, the thread finishes (commits or rolls back) the transaction and
the caller sees the cancellation afterwards. The operation may therefore have taken effect;
every operation is idempotent by reservation id, so a retry is safe, and ``Budget`` releases a
reservation whose ``reserve`` was cancelled.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote

import anyio
import anyio.lowlevel

from .._core import (
    Amount,
    ConfigurationError,
    ReservationError,
    StoreError,
    StoreUnavailable,
    UnknownLimit,
    check_amount,
    check_unit,
)
from ._base import Admission, LimitUsage, Store

T = TypeVar("T")

SCHEMA_VERSION = 1

#: How long the history of endings is kept (seconds). A retried ending older than this is
#: answered as unknown (``commit`` raises ``ReservationError``, ``release`` returns False).
DEFAULT_HISTORY = 30 * 24 * 3600.0

#: How often (seconds, per store) old history is pruned.
_PRUNE_EVERY = 3600.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS limits (
    key        TEXT PRIMARY KEY,
    unit       TEXT NOT NULL CHECK (unit IN ('int', 'decimal')),
    cap        TEXT NOT NULL,
    spent      TEXT NOT NULL,
    held       TEXT NOT NULL,
    expire_at  REAL,
    updated_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS holds (
    rid        TEXT PRIMARY KEY,
    amounts    TEXT NOT NULL,
    expires_at REAL NOT NULL,
    created_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS holds_by_expiry ON holds (expires_at);
CREATE TABLE IF NOT EXISTS endings (
    rid      TEXT PRIMARY KEY,
    outcome  TEXT NOT NULL CHECK (outcome IN ('committed', 'released', 'expired')),
    amounts  TEXT NOT NULL,
    spent    TEXT,
    ended_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS endings_by_time ON endings (ended_at);
"""

_BUSY_MESSAGES = ("locked", "busy", "unable to open", "disk i/o", "readonly", "read-only")


@dataclass(slots=True)
class _Row:
    unit: str
    cap: Amount
    spent: Amount
    held: Amount


def _parse(unit: str, text: str) -> Amount:
    return int(text) if unit == "int" else Decimal(text)


def _unit(cap: Amount) -> str:
    return "decimal" if isinstance(cap, Decimal) else "int"


def _zero(unit: str) -> Amount:
    return 0 if unit == "int" else Decimal(0)


class SQLiteStore(Store):
    """Limits, holds, spend and ending history in one SQLite file (see the module docstring).

    ``path`` is a file path (created on first use unless ``create=False``) or ``":memory:"``
    (private to this store, not durable). ``busy_timeout`` is how long an operation waits for
    another process's write lock before raising ``StoreUnavailable``. ``synchronous`` is
    SQLite's setting: ``"NORMAL"`` (default; in WAL mode every committed transaction survives a
    crash of the process, the last ones may be lost on power failure) or ``"FULL"`` (also
    survives power failure, slower). ``history`` is how many seconds ended reservation ids are
    kept for idempotent retries. ``clock`` returns wall-clock UNIX seconds for leases.

    ``expire_at`` passed to ``reserve`` is recorded on the limit it creates, for inspection;
    limits are never deleted, so the spend of a finished period stays readable.

    The connection opens lazily in a worker thread on the first operation; every driver error
    is raised as ``StoreUnavailable`` (busy past the timeout, cannot open, I/O) or
    ``StoreError`` (anything else), with the ``sqlite3`` error as ``__cause__``.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        create: bool = True,
        busy_timeout: float = 30.0,
        synchronous: str = "NORMAL",
        history: float = DEFAULT_HISTORY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(path, str | Path) or not str(path):
            raise TypeError(f"path must be a non-empty str or Path, got {path!r}")
        if isinstance(busy_timeout, bool) or not isinstance(busy_timeout, int | float) \
                or not busy_timeout >= 0:
            raise ValueError(f"busy_timeout must be seconds >= 0, got {busy_timeout!r}")
        if not isinstance(synchronous, str) or synchronous.upper() not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be 'NORMAL' or 'FULL', got {synchronous!r}")
        if isinstance(history, bool) or not isinstance(history, int | float) or not history > 0:
            raise ValueError(f"history must be positive seconds, got {history!r}")
        self._path = str(path)
        # Resolved now: a relative path names a file in the working directory of construction.
        self._uri = None if self._path == ":memory:" else Path(path).absolute().as_uri()
        self._create = create
        self._busy_timeout = float(busy_timeout)
        self._synchronous = synchronous.upper()
        self._history = float(history)
        self._clock = clock
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._pruned_at = float("-inf")
        self._bound_limiter: tuple[object, anyio.CapacityLimiter] | None = None
        self._abandoned: list[threading.Thread] = []

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        """``sqlite:///relative.db`` (relative to the working directory) or
        ``sqlite:////absolute/path.db``; raises ``ConfigurationError`` for anything else."""
        scheme, sep, rest = url.partition("://")
        if scheme != "sqlite" or not sep or not rest.startswith("/") or len(rest) < 2:
            raise ConfigurationError(
                f"bad SQLite URL {url!r}; expected sqlite:///relative.db or "
                "sqlite:////absolute/path.db")
        if "?" in rest or "#" in rest:
            raise ConfigurationError(f"SQLite URL {url!r} takes no query or fragment; "
                                     "pass options to SQLiteStore(...) instead")
        return cls(unquote(rest[1:]))

    @property
    def path(self) -> str:
        """The database file this store opens."""
        return self._path

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._path!r}>"

    # -- the one boundary: threads, the lock, the connection, error mapping -----------------

    async def _run(self, op: Callable[[sqlite3.Connection, float], T]) -> T:
        """Run ``op(conn, now)`` in a worker thread under the lock, mapping driver errors.

        Cancelled while queued for the thread: nothing happened. Cancelled once in the thread:
        the transaction finishes, one way or the other, and then the cancellation is raised.
        """
        result = await anyio.to_thread.run_sync(self._call, op, limiter=self._limiter())
        await anyio.lowlevel.checkpoint_if_cancelled()
        return result

    def _limiter(self) -> anyio.CapacityLimiter:
        """This store's one worker-thread slot in the running event loop."""
        loop = anyio.lowlevel.current_token().native_token
        bound = self._bound_limiter
        if bound is None or bound[0] is not loop:
            bound = self._bound_limiter = (loop, anyio.CapacityLimiter(1))
        return bound[1]

    def _call(self, op: Callable[[sqlite3.Connection, float], T]) -> T:
        with self._lock:
            if self._closed:
                raise StoreError(f"{self!r} is closed")
            try:
                conn = self._connection()
                try:
                    return op(conn, self._clock())
                finally:
                    if conn.in_transaction:
                        conn.rollback()
            except sqlite3.Error as exc:
                self._discard_if_broken()
                message = str(exc).lower()
                if isinstance(exc, sqlite3.OperationalError) and any(
                        m in message for m in _BUSY_MESSAGES):
                    raise StoreUnavailable(f"SQLite store {self._path!r}: {exc}") from exc
                raise StoreError(f"SQLite store {self._path!r}: {exc}") from exc

    def _discard_if_broken(self) -> None:
        conn = self._conn
        if conn is not None and conn.in_transaction:
            self._conn = None
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        if self._uri is None:
            conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        else:
            uri = f"{self._uri}?mode={'rwc' if self._create else 'rw'}"
            conn = sqlite3.connect(uri, uri=True, isolation_level=None,
                                   check_same_thread=False, timeout=self._busy_timeout)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            conn.execute("BEGIN IMMEDIATE")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(f"SQLite store {self._path!r} has schema version {version}; "
                                 f"this outlay knows up to {SCHEMA_VERSION}")
            if version < SCHEMA_VERSION:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    # -- helpers (run in the worker thread, inside a transaction) -----------------------------

    def _sweep(self, conn: sqlite3.Connection, now: float) -> None:
        """Move holds whose lease has expired into the history; prune old history."""
        expired = conn.execute(
            "SELECT rid, amounts FROM holds WHERE expires_at <= ?", (now,)).fetchall()
        if expired:
            for rid, amounts_json in expired:
                amounts: dict[str, str] = json.loads(amounts_json)
                rows = _load(conn, amounts)
                for key, text in amounts.items():
                    row = rows[key]
                    row.held -= _parse(row.unit, text)
                    conn.execute("UPDATE limits SET held = ?, updated_at = ? WHERE key = ?",
                                 (str(row.held), now, key))
                conn.execute("INSERT OR REPLACE INTO endings VALUES (?, 'expired', ?, NULL, ?)",
                             (rid, amounts_json, now))
            conn.executemany("DELETE FROM holds WHERE rid = ?", [(r,) for r, _ in expired])
        if now - self._pruned_at >= _PRUNE_EVERY:
            conn.execute("DELETE FROM endings WHERE ended_at < ?", (now - self._history,))
            self._pruned_at = now

    def _settle(
        self,
        rows: Mapping[str, _Row],
        held: Mapping[str, str],
        actual: Mapping[str, Amount],
    ) -> dict[str, Amount]:
        unknown = sorted(actual.keys() - held.keys())
        if unknown:
            raise ValueError(f"actual names limits the reservation does not hold: {unknown}")
        spend: dict[str, Amount] = {}
        for key, text in held.items():
            row = rows[key]
            amount = actual[key] if key in actual else _parse(row.unit, text)
            check_unit(row.cap, amount, key)
            spend[key] = amount
        return spend

    # -- the Store protocol ------------------------------------------------------------------

    async def set_limit(self, key: str, cap: Amount) -> None:
        cap = check_amount(cap, "cap")

        def op(conn: sqlite3.Connection, now: float) -> None:
            conn.execute("BEGIN IMMEDIATE")
            found = conn.execute("SELECT unit FROM limits WHERE key = ?", (key,)).fetchone()
            if found is None:
                zero = str(_zero(_unit(cap)))
                conn.execute("INSERT INTO limits VALUES (?, ?, ?, ?, ?, NULL, ?)",
                             (key, _unit(cap), str(cap), zero, zero, now))
            else:
                if found[0] != _unit(cap):
                    raise TypeError(f"limit {key!r} cannot change unit from {found[0]} "
                                    f"to {type(cap).__name__}")
                conn.execute("UPDATE limits SET cap = ?, updated_at = ? WHERE key = ?",
                             (str(cap), now, key))
            conn.execute("COMMIT")

        await self._run(op)

    async def reserve(
        self,
        rid: str,
        amounts: Mapping[str, Amount],
        *,
        lease: float,
        defaults: Mapping[str, Amount] | None = None,
        expire_at: Mapping[str, float] | None = None,
    ) -> Admission:
        checked = {key: check_amount(amount) for key, amount in amounts.items()}
        caps = {key: check_amount(cap, "cap") for key, cap in (defaults or {}).items()}
        ends = dict(expire_at or {})

        def op(conn: sqlite3.Connection, now: float) -> Admission:
            conn.execute("BEGIN IMMEDIATE")
            self._sweep(conn, now)
            if conn.execute("SELECT 1 FROM holds WHERE rid = ?", (rid,)).fetchone():
                conn.execute("COMMIT")
                return Admission(True)
            if conn.execute("SELECT 1 FROM endings WHERE rid = ?", (rid,)).fetchone():
                raise ReservationError(f"reservation {rid!r} has already ended")
            rows = _load(conn, checked)
            created: set[str] = set()
            for key, amount in checked.items():
                row = rows.get(key)
                if row is None:
                    if key not in caps:
                        raise UnknownLimit(key)
                    unit = _unit(caps[key])
                    row = rows[key] = _Row(unit, caps[key], _zero(unit), _zero(unit))
                    created.add(key)
                check_unit(row.cap, amount, key)
            for key, amount in checked.items():
                row = rows[key]
                if row.spent + row.held + amount > row.cap:
                    conn.execute("COMMIT")  # keep the sweep; nothing else was written
                    return Admission(False, LimitUsage(key, row.cap, row.spent, row.held),
                                     amount)
            for key, amount in checked.items():
                row = rows[key]
                row.held += amount
                if key in created:
                    conn.execute("INSERT INTO limits VALUES (?, ?, ?, ?, ?, ?, ?)",
                                 (key, row.unit, str(row.cap), str(row.spent), str(row.held),
                                  ends.get(key), now))
                else:
                    conn.execute("UPDATE limits SET held = ?, updated_at = ? WHERE key = ?",
                                 (str(row.held), now, key))
            conn.execute("INSERT INTO holds VALUES (?, ?, ?, ?)",
                         (rid, _dump(checked), now + lease, now))
            conn.execute("COMMIT")
            return Admission(True)

        return await self._run(op)

    async def commit(self, rid: str, actual: Mapping[str, Amount] | None = None) -> bool:
        checked = {k: check_amount(v, f"actual[{k!r}]") for k, v in (actual or {}).items()}

        def op(conn: sqlite3.Connection, now: float) -> bool:
            conn.execute("BEGIN IMMEDIATE")
            self._sweep(conn, now)
            found = conn.execute("SELECT amounts FROM holds WHERE rid = ?", (rid,)).fetchone()
            live = found is not None
            if not live:
                found = conn.execute("SELECT amounts, outcome FROM endings WHERE rid = ?",
                                     (rid,)).fetchone()
                if found is None:
                    raise ReservationError(f"unknown reservation {rid!r}")
                if found[1] != "expired":
                    conn.execute("COMMIT")
                    return False
                # The lease expired before the commit: the hold is gone, the spend still counts.
            held: dict[str, str] = json.loads(found[0])
            rows = _load(conn, held)
            spend = self._settle(rows, held, checked)
            for key, text in held.items():
                row = rows[key]
                if live:
                    row.held -= _parse(row.unit, text)
                row.spent += spend[key]
                conn.execute("UPDATE limits SET spent = ?, held = ?, updated_at = ? "
                             "WHERE key = ?", (str(row.spent), str(row.held), now, key))
            if live:
                conn.execute("DELETE FROM holds WHERE rid = ?", (rid,))
            conn.execute("INSERT OR REPLACE INTO endings VALUES (?, 'committed', ?, ?, ?)",
                         (rid, found[0], _dump(spend), now))
            conn.execute("COMMIT")
            return True

        return await self._run(op)

    async def release(self, rid: str) -> bool:
        return await self._run(self._release_op(rid))

    def release_abandoned(self, rid: str) -> None:
        """Release a garbage-collected reservation from a short-lived background thread, so the
        finaliser never blocks; ``aclose`` waits for it. If it cannot run (the store is closed,
        the interpreter is exiting), the lease reclaims the hold."""
        op = self._release_op(rid)

        def run() -> None:
            with contextlib.suppress(Exception):  # best effort; the lease is the fallback
                self._call(op)

        thread = threading.Thread(target=run, name=f"outlay-sqlite-release-{rid}", daemon=True)
        # No lock here: a finaliser can run inside any critical section of this thread.
        thread.start()
        self._abandoned = [t for t in self._abandoned if t.is_alive()]
        self._abandoned.append(thread)

    def _release_op(self, rid: str) -> Callable[[sqlite3.Connection, float], bool]:
        def op(conn: sqlite3.Connection, now: float) -> bool:
            conn.execute("BEGIN IMMEDIATE")
            self._sweep(conn, now)
            found = conn.execute("SELECT amounts FROM holds WHERE rid = ?", (rid,)).fetchone()
            if found is None:
                # An expired hold that is released is over: a later commit no longer counts.
                conn.execute("UPDATE endings SET outcome = 'released', ended_at = ? "
                             "WHERE rid = ? AND outcome = 'expired'", (now, rid))
                conn.execute("COMMIT")
                return False
            held: dict[str, str] = json.loads(found[0])
            rows = _load(conn, held)
            for key, text in held.items():
                row = rows[key]
                row.held -= _parse(row.unit, text)
                conn.execute("UPDATE limits SET held = ?, updated_at = ? WHERE key = ?",
                             (str(row.held), now, key))
            conn.execute("DELETE FROM holds WHERE rid = ?", (rid,))
            conn.execute("INSERT OR REPLACE INTO endings VALUES (?, 'released', ?, NULL, ?)",
                         (rid, found[0], now))
            conn.execute("COMMIT")
            return True

        return op

    async def extend(self, rid: str, lease: float) -> bool:
        def op(conn: sqlite3.Connection, now: float) -> bool:
            conn.execute("BEGIN IMMEDIATE")
            self._sweep(conn, now)
            cursor = conn.execute("UPDATE holds SET expires_at = ? WHERE rid = ?",
                                  (now + lease, rid))
            conn.execute("COMMIT")
            return cursor.rowcount > 0

        return await self._run(op)

    async def usage(self, key: str) -> LimitUsage:
        def op(conn: sqlite3.Connection, now: float) -> LimitUsage:
            found = _snapshot(conn, now, key)
            if not found:
                raise UnknownLimit(key)
            return found[0]

        return await self._run(op)

    async def limits(self, prefix: str = "") -> list[LimitUsage]:
        """Snapshot every limit whose key starts with ``prefix``, sorted by key."""
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
        return await self._run(lambda conn, now: _snapshot(conn, now, prefix, prefix=True))

    async def reset_spend(self, key: str) -> LimitUsage:
        """Set the committed spend of ``key`` to zero, keeping its cap and live holds; one write
        transaction (see ``Store.reset_spend``). Returns the usage as it was before."""

        def op(conn: sqlite3.Connection, now: float) -> LimitUsage:
            conn.execute("BEGIN IMMEDIATE")
            self._sweep(conn, now)
            row = conn.execute("SELECT unit, cap, spent, held FROM limits WHERE key = ?",
                               (key,)).fetchone()
            if row is None:
                raise UnknownLimit(key)
            unit, cap, spent, held = row
            conn.execute("UPDATE limits SET spent = ?, updated_at = ? WHERE key = ?",
                         (str(_zero(unit)), now, key))
            conn.execute("COMMIT")
            return LimitUsage(key, _parse(unit, cap), _parse(unit, spent), _parse(unit, held))

        return await self._run(op)

    async def held_reservations(self) -> int:
        """How many holds are live right now (for diagnostics and tests)."""

        def op(conn: sqlite3.Connection, now: float) -> int:
            count: int = conn.execute("SELECT count(*) FROM holds WHERE expires_at > ?",
                                      (now,)).fetchone()[0]
            return count

        return await self._run(op)

    async def aclose(self) -> None:
        """Finish pending releases of abandoned reservations, then close the connection. Later
        operations raise ``StoreError``; closing twice is fine."""

        def close() -> None:
            pending, self._abandoned = self._abandoned, []
            for thread in pending:
                thread.join()
            with self._lock:
                self._closed = True
                conn, self._conn = self._conn, None
                if conn is not None:
                    conn.close()

        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(close)


def _dump(amounts: Mapping[str, Amount]) -> str:
    return json.dumps({key: str(amount) for key, amount in amounts.items()}, sort_keys=True)


def _load(conn: sqlite3.Connection, keys: Iterable[str]) -> dict[str, _Row]:
    wanted = list(keys)
    marks = ",".join("?" * len(wanted))
    rows = conn.execute(
        f"SELECT key, unit, cap, spent, held FROM limits WHERE key IN ({marks})", wanted)
    return {key: _Row(unit, _parse(unit, cap), _parse(unit, spent), _parse(unit, held))
            for key, unit, cap, spent, held in rows}


def _snapshot(
    conn: sqlite3.Connection, now: float, key: str, *, prefix: bool = False
) -> list[LimitUsage]:
    """Read limits in one read transaction, not counting holds whose lease has expired but
    which no write has swept yet (so a read never needs the write lock)."""
    conn.execute("BEGIN")
    try:
        if prefix:
            rows = conn.execute(
                "SELECT key, unit, cap, spent, held FROM limits "
                "WHERE substr(key, 1, ?) = ? ORDER BY key", (len(key), key)).fetchall()
        else:
            rows = conn.execute("SELECT key, unit, cap, spent, held FROM limits WHERE key = ?",
                                (key,)).fetchall()
        stale: dict[str, list[str]] = {}
        if rows:
            for (amounts_json,) in conn.execute(
                    "SELECT amounts FROM holds WHERE expires_at <= ?", (now,)):
                for k, text in json.loads(amounts_json).items():
                    stale.setdefault(k, []).append(text)
    finally:
        conn.execute("COMMIT")
    result = []
    for k, unit, cap, spent, held in rows:
        held_now = _parse(unit, held)
        for text in stale.get(k, ()):
            held_now -= _parse(unit, text)
        result.append(LimitUsage(k, _parse(unit, cap), _parse(unit, spent), held_now))
    return result
