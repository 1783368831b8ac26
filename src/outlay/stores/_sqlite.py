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
- The WAL is copied into the database file (checkpointed) by a thread and a connection of the
  store's own (``_Checkpointer``), not inside an operation's ``COMMIT``: SQLite's automatic
  checkpoint (in the commit that fills the WAL past 1,000 pages, fsyncs included) is put off
  on the store's connection to ``_WAL_BACKSTOP`` pages, which the thread keeps the WAL far
  below. What is committed is in the WAL either way, so durability is as ``synchronous``
  says; closing the store closes that connection first, so the store's own, the last,
  checkpoints the rest and removes the WAL.
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
``anyio.to_thread.run_sync`` over **one connection per store, guarded by a lock** (the
checkpoint thread has its own). SQLite lets one writer at a time into a file anyway, so a
pool would only add parallel readers while every connection paid for its own cache and WAL
bookkeeping. Each store sends at most one hop at a time
per event loop: concurrent operations of one store queue in the event loop, where they can still
be cancelled with no effect, instead of parking threads of anyio's shared pool on the lock. Once
an operation is taken into a hop it is never abandoned: if the caller is cancelled then, the
thread finishes (commits or rolls back) the transaction and the caller sees the cancellation
afterwards. The operation may therefore have taken effect; every operation is idempotent by
reservation id, so a retry is safe, and ``Budget`` releases a reservation whose ``reserve`` was
cancelled.

Group commit: the operations that queue while a hop is in the worker thread join its
transaction before it commits (up to 256 in one), or else go into the next hop together: **one**
transaction (``BEGIN IMMEDIATE`` if any of them writes), which sweeps expired holds once. The
limit rows it reads are parsed once and kept in memory (``_Tx``); each operation's new figures
are written back together, once per transaction (and before an operation that reads the
``limits`` table with its own SQL). There are no savepoints: each
operation is still all-or-nothing and idempotent by reservation id because (``_call``)

- an operation decides before it writes, so one that fails before its first write (a refusal,
  bad input, an unknown or ended id) has changed nothing and fails alone;
- one that fails after it wrote (``total_changes`` moved), or an error that ends the
  transaction, rolls the transaction back; that one fails, and the others run again in a new
  transaction (their answers are those of the transaction that commits);
- if a step of the transaction itself fails (the sweep, the write-back, the commit), it is
  rolled back and every operation runs again in a transaction of its own, so an error is the
  answer of exactly the operations it comes from;
- if the transaction cannot start (busy past ``busy_timeout``), every operation in it fails
  and none took effect.

A lone operation is a transaction of its own, as before.

Statements per operation: ``reserve`` one (the insert of its hold checks that the id is
neither held nor ended; the id is looked up apart only after a refusal or an error), ``commit``
three (its hold, deleting it, its history row); each transaction adds its sweep, the limits it
reads and their write-back.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar, cast
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
    _log,
    check_amount,
    check_amounts,
    check_count,
    check_lease,
    minus,
)
from ._base import ADMITTED, Admission, HoldUsage, LimitUsage, Store, check_seconds
from ._decide import decide_commit, decide_release, decide_reserve, decide_set_limit
from ._events import SpendEvent, decode_event, encode_event
from ._fork import track
from ._group import Group, PerLoop, Queued
from ._url import redact_url

T = TypeVar("T")

SCHEMA_VERSION = 1

#: How long the history of endings is kept (seconds). A retried ending older than this is
#: answered as unknown (``commit`` raises ``ReservationError``, ``release`` returns False).
DEFAULT_HISTORY = 30 * 24 * 3600.0

#: How often (seconds, per store) old history is pruned.
_PRUNE_EVERY = 3600.0

#: The least time (seconds) between two checkpoints of a store's WAL while it writes.
_CHECKPOINT_EVERY = 0.05

#: A checkpoint thread with no write to follow for this long (seconds) closes its connection
#: and ends; the next write starts another.
_CHECKPOINT_IDLE = 1.0

#: WAL pages past which an operation's ``COMMIT`` checkpoints after all (SQLite's automatic
#: checkpoint, 1,000 pages by default): a backstop that bounds the WAL (about 40 MB) should the
#: checkpoint thread fall that far behind or be unable to start.
_WAL_BACKSTOP = 10_000

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

#: ``PRAGMA application_id`` of an outlay database ("outl"): how a file is known to be ours.
APPLICATION_ID = 0x6F75746C

_TABLES = frozenset({"limits", "holds", "endings"})

#: SQLITE_READONLY_DIRECTORY: the file is readable, but its directory is not writable.
_SQLITE_READONLY_DIRECTORY = 1544

#: Primary SQLite result codes (``sqlite_errorcode & 0xff``) that mean "cannot be reached right
#: now": busy or locked past the timeout, cannot open, I/O, read-only, disk full, protocol.
_UNAVAILABLE_CODES = frozenset({
    sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_READONLY, sqlite3.SQLITE_FULL, sqlite3.SQLITE_PROTOCOL,
})

#: The event log (``Store.append_events``), made on first use: files that never record events
#: keep schema version 1 as it was.
_EVENTS_TABLE = ("CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                 "body TEXT NOT NULL)")


def _parse(unit: str, text: str, key: str = "") -> Amount:
    """A stored amount, refused (``StoreError``) if it is outside what outlay counts."""
    try:
        return check_amount(int(text) if unit == "int" else Decimal(text))
    except (ValueError, TypeError, ArithmeticError) as exc:
        raise StoreError(f"limit {key!r} holds a value outlay cannot count exactly "
                         f"({unit} {text[:40]!r})") from exc


def _unit(cap: Amount) -> str:
    return "decimal" if isinstance(cap, Decimal) else "int"


class SQLiteStore(Store):
    """Limits, holds, spend and ending history in one SQLite file (see the module docstring).

    ``path`` is a file path or ``":memory:"`` (private to this store, not durable).
    ``busy_timeout`` is how long an operation waits for
    another process's write lock before raising ``StoreUnavailable``. ``synchronous`` is
    SQLite's setting: ``"NORMAL"`` (default; in WAL mode every committed transaction survives a
    crash of the process, the last ones may be lost on power failure) or ``"FULL"`` (also
    survives power failure, slower). ``history`` is how many seconds ended reservation ids are
    kept for idempotent retries. ``clock`` returns wall-clock UNIX seconds for leases.

    The file is opened only if it is outlay's (its ``application_id``) or empty; another
    application's database, or one of a newer schema, is refused with ``ConfigurationError``
    before anything is written to it. An empty or missing file becomes an outlay database on
    first use, unless ``create=False`` (then it must already be one).

    ``expire_at`` passed to ``reserve`` is recorded on the limit it creates, for inspection;
    limits are deleted only by ``drop_idle_limit`` (``outlay prune``), so the spend of a
    finished period stays readable.

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
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._pruned_at = float("-inf")
        self._fresh()
        track(self)

    def _fresh(self) -> None:
        """The per-process parts: the lock, the event-loop queues, the background threads."""
        self._lock = threading.Lock()
        self._group = PerLoop(lambda: Group[_Op](most=_MAX_BATCH))
        self._abandoned: list[threading.Thread] = []
        self._checkpointer = None if self._uri is None else _Checkpointer(self._uri, self._path)

    def _after_fork(self) -> list[object]:
        """In a forked child: the parent's connection to the file (and its checkpointer's)
        are left alone, never used or closed here, and the child opens its own
        (``stores/_fork.py``); a ``":memory:"`` database is the child's own copy and stays."""
        kept: list[object] = [self._checkpointer]
        if self._uri is not None:
            kept.append(self._conn)
            self._conn = None
        self._fresh()
        return kept

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SQLiteStore:
        """``sqlite:///relative.db`` (relative to the working directory) or
        ``sqlite:////absolute/path.db``; raises ``ConfigurationError`` for anything else.
        Keyword ``options`` go to the constructor (``create=False``, ...)."""
        scheme, sep, rest = url.partition("://")
        if scheme != "sqlite" or not sep or not rest.startswith("/") or len(rest) < 2:
            raise ConfigurationError(
                f"bad SQLite URL {redact_url(url)!r}; expected sqlite:///relative.db or "
                "sqlite:////absolute/path.db")
        if "?" in rest or "#" in rest:
            raise ConfigurationError(f"SQLite URL {redact_url(url)!r} takes no query or fragment; "
                                     "pass options to SQLiteStore(...) instead")
        return cls(unquote(rest[1:]), **options)

    @property
    def path(self) -> str:
        """The database file this store opens."""
        return self._path

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._path!r}>"

    # -- the one boundary: threads, the lock, the connection, error mapping -----------------

    async def _run(self, op: Callable[[_Tx], T], *, write: bool = True,
                   direct: bool = False) -> T:
        """Run ``op(tx)`` in a worker thread under the lock, in a transaction (``write``: one
        that holds the write lock and has swept expired holds; else a read transaction), with
        driver errors mapped. ``op`` must not begin or end the transaction itself. ``direct``:
        ``op`` reads or writes the ``limits`` table with its own SQL, not through ``tx``.

        Group commit (``stores/_group.py``): operations of this store that arrive while a hop
        is in the worker thread queue in the event loop; the running hop takes them into its
        transaction before it commits (``_attempt``), and the next hop takes those that came
        too late (``_call``). A lone operation is a transaction of its own. Cancelled while
        queued: nothing happened; once taken into a hop: the transaction finishes, then the
        cancellation is raised.
        """
        group = self._group.get()
        return cast(T, await group.submit(_Op(op, write, direct),
                                          functools.partial(self._call, queue=group)))

    def _call(self, items: list[_Op], queue: Group[_Op] | None = None) -> None:
        """Run ``items`` under the lock in one transaction, with the operations queued
        meanwhile (``Group.take``), and record each one's outcome; never raises. Each
        operation is all-or-nothing on its own, without savepoints:

        - one that fails before it writes (a refusal, bad input, an unknown id) fails alone,
          the others go on;
        - one that fails after it wrote, or an error that ends the transaction, rolls the
          whole transaction back; it fails, and all the others run again in a new one (their
          outcomes are those of the transaction that commits);
        - if a step of the transaction itself fails (the sweep, writing back the limits, the
          commit), it is rolled back and each operation runs again in a transaction of its own,
          so an error is the answer of exactly the operations it comes from;
        - if the transaction cannot start (busy past ``busy_timeout``), every operation in it
          fails and none took effect.
        """
        with self._lock:
            runs = [items]
            while runs:
                run = runs[0]
                runs[:1] = self._attempt(run, queue if run is items else None)

    def _attempt(self, items: list[_Op], queue: Group[_Op] | None = None) -> list[list[_Op]]:
        """One transaction over ``items``; returns the groups to run next (see ``_call``)."""
        for item in items:  # outcomes of an earlier attempt do not count
            item.reset()
        write = any(item.write for item in items)
        try:
            if self._closed:
                raise StoreError(f"{self!r} is closed")
            conn = self._connection_mapped()
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        except BaseException as exc:
            error = self._mapped(exc) if isinstance(exc, sqlite3.Error) else exc
            readonly = getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_READONLY
            for item in items:
                if item.write or not readonly:
                    item.error = error
            # A read-only snapshot: the writes fail, the reads run in a read transaction.
            reads = [item for item in items if not item.write] if readonly else []
            return [reads] if reads else []
        tx = _Tx(conn, self._clock())
        try:
            if write:
                self._sweep(tx)
            n = 0
            while n < len(items) or (queue is not None and queue.take(items)):
                item = items[n]
                n += 1
                if item.direct:
                    tx.flush()
                before = conn.total_changes
                try:
                    item.result = item.op(tx)
                except BaseException as exc:
                    tx.drop()
                    item.error = self._mapped(exc) if isinstance(exc, sqlite3.Error) else exc
                    if conn.total_changes != before or not conn.in_transaction:
                        # Part of it was written (or the transaction is gone): undo it all.
                        if conn.in_transaction:
                            conn.rollback()
                        rest = items[:n - 1] + items[n:]
                        return [rest] if rest else []
                else:
                    tx.keep()
                if item.direct:
                    tx.flush()  # it may have changed the table: read it afresh
            tx.flush()
            conn.execute("COMMIT")
        except BaseException as exc:  # the transaction's own steps: sweep, write-back, commit
            failure: BaseException = self._mapped(exc) if isinstance(exc, sqlite3.Error) else exc
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.rollback()
            self._discard_if_broken()
            if len(items) > 1:  # find out whose error it is: each one again, alone
                return [[item] for item in items]
            if items[0].error is None:  # an operation that failed alone keeps its own error
                items[0].error = failure
            return []
        # Committed: nothing after this point may fail the operations (or run them again).
        if write and self._checkpointer is not None:
            self._checkpointer.wrote()
        return []

    def _mapped(self, exc: sqlite3.Error) -> StoreError:
        error = _map_error(exc, self._path)
        error.__cause__ = exc
        return error

    def _connection_mapped(self) -> sqlite3.Connection:
        try:
            return self._connection()
        except sqlite3.Error as exc:
            self._discard_if_broken()
            raise self._mapped(exc) from exc

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
            # Nothing is written to the file before it is known to be ours (or empty and ours
            # to create): another application's database is left byte for byte as it was.
            try:
                state = self._inspect(conn)
            except sqlite3.OperationalError as exc:
                snapshot = self._read_only_snapshot(exc)
                if snapshot is None:
                    raise
                conn.close()
                conn = snapshot
                self._inspect(conn)
                self._conn = conn
                return conn
            if state == "empty":
                self._to_wal(conn)
                conn.execute("BEGIN IMMEDIATE")
                if self._inspect(conn) == "empty":  # still empty under the write lock
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
            else:
                self._to_wal(conn)
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            # _Checkpointer does it, apart; SQLite's own only if the WAL outgrows it by far.
            conn.execute(f"PRAGMA wal_autocheckpoint = {_WAL_BACKSTOP}")
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _to_wal(self, conn: sqlite3.Connection) -> None:
        """Switch the file to WAL (a no-op once it is), trying again for up to the busy timeout
        while another connection holds a lock: there SQLite answers ``SQLITE_BUSY`` at once,
        without waiting in its busy handler (processes opening a new file together: one takes
        the write lock to create the schema while another switches). Where SQLite cannot use
        WAL at all (a file system without the shared memory it needs) it keeps the old mode
        without an error: the store then works in that mode, and logs it."""
        if self._uri is None:
            return  # in memory: no WAL
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                    raise
                _pause(_WAL_RETRY)
                continue
            if mode != "wal":
                _log.warn("outlay.sqlite.no_wal", path=self._path, journal_mode=mode)
            return

    def _read_only_snapshot(self, exc: sqlite3.OperationalError) -> sqlite3.Connection | None:
        """A read-only connection to a WAL database in a directory this process cannot write
        (SQLite cannot make the shared-memory file it needs), or None for any other error.

        Opened ``immutable`` only while no ``-wal`` file exists, i.e. no process has the
        database open for writing and every commit is in the main file: reads see that state;
        writes raise ``StoreUnavailable`` (read-only)."""
        if self._uri is None or getattr(exc, "sqlite_errorcode", None) not in (
                _SQLITE_READONLY_DIRECTORY, sqlite3.SQLITE_CANTOPEN):
            return None
        if Path(self._path + "-wal").exists():
            return None
        return sqlite3.connect(f"{self._uri}?mode=ro&immutable=1", uri=True,
                               isolation_level=None, check_same_thread=False)

    def _inspect(self, conn: sqlite3.Connection) -> str:
        """``"ours"`` or ``"empty"`` (a file with nothing in it, ours to create when
        ``create``); raises ``ConfigurationError`` for anything else. Reads only."""
        application_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if application_id == 0 and version == 0 and not tables:
            if not self._create:
                raise ConfigurationError(f"SQLite file {self._path!r} is empty, not an outlay "
                                         "database (create=False never creates one)")
            return "empty"
        # Files made before outlay stamped its application_id: version 1, exactly our tables.
        legacy = application_id == 0 and version == 1 and tables == _TABLES
        if application_id != APPLICATION_ID and not legacy:
            raise ConfigurationError(f"SQLite file {self._path!r} is not an outlay database; "
                                     "outlay leaves it untouched")
        if version > SCHEMA_VERSION:
            raise ConfigurationError(f"SQLite store {self._path!r} has schema version "
                                     f"{version}; this outlay knows up to {SCHEMA_VERSION}")
        return "ours"

    # -- helpers (run in the worker thread, inside a transaction) -----------------------------

    def _sweep(self, tx: _Tx) -> None:
        """Move holds whose lease has expired into the history; prune old history."""
        conn, now = tx.conn, tx.now
        expired = conn.execute(
            "SELECT rid, amounts FROM holds WHERE expires_at <= ?", (now,)).fetchall()
        if expired:
            for _, amounts_json in expired:
                stored = json.loads(amounts_json)
                rows = tx.load(stored)
                tx.write(decide_release(rows, _amounts(rows, stored)))
            conn.executemany("INSERT OR REPLACE INTO endings VALUES (?, 'expired', ?, NULL, ?)",
                             [(rid, amounts_json, now) for rid, amounts_json in expired])
            conn.executemany("DELETE FROM holds WHERE rid = ?", [(r,) for r, _ in expired])
            tx.keep()
        if now - self._pruned_at >= _PRUNE_EVERY:
            conn.execute("DELETE FROM endings WHERE ended_at < ?", (now - self._history,))
            self._pruned_at = now

    # -- the Store protocol ------------------------------------------------------------------

    async def set_limit(self, key: str, cap: Amount) -> None:
        cap = check_amount(cap, "cap")

        def op(tx: _Tx) -> None:
            current = tx.load([key]).get(key)
            after = decide_set_limit(current, key, cap)
            if current is None:
                tx.conn.execute("INSERT INTO limits VALUES (?, ?, ?, ?, ?, NULL, ?)",
                                (key, _unit(cap), str(cap), str(after.spent), str(after.held),
                                 tx.now))
            else:
                tx.conn.execute("UPDATE limits SET cap = ?, updated_at = ? WHERE key = ?",
                                (str(cap), tx.now, key))

        await self._run(op, direct=True)

    async def reserve(
        self,
        rid: str,
        amounts: Mapping[str, Amount],
        *,
        lease: float,
        defaults: Mapping[str, Amount] | None = None,
        expire_at: Mapping[str, float] | None = None,
    ) -> Admission:
        checked = check_amounts(amounts, "amount")
        caps = check_amounts(defaults or {}, "defaults")
        ends = dict(expire_at or {})
        check_lease(lease)
        text = _dump(checked)

        def op(tx: _Tx) -> Admission:
            conn, now = tx.conn, tx.now
            # A held id is admitted again and an ended one refused, whatever the decision.
            try:
                decision = decide_reserve(tx.load(checked), checked, caps)
            except (StoreError, UnknownLimit, TypeError, ValueError):
                if _held(conn, rid):
                    return ADMITTED
                raise
            if not decision.admission.admitted:
                # A refusal keeps the sweep; nothing else was written.
                return ADMITTED if _held(conn, rid) else decision.admission
            # One statement checks the id and holds; it inserts nothing (writes nothing) if
            # the id is held or has ended.
            if conn.execute(_HOLD, (rid, text, now + lease, now, rid)).rowcount == 0:
                _held(conn, rid)  # not inserted: held (admitted again) or ended (raises)
                return ADMITTED
            for key in decision.created:
                limit = decision.after[key]
                conn.execute("INSERT INTO limits VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (key, _unit(limit.cap), str(limit.cap), str(limit.spent),
                              str(limit.held), ends.get(key), now))
            tx.write({k: v for k, v in decision.after.items() if k not in decision.created}
                     if decision.created else decision.after)
            return decision.admission

        return await self._run(op)

    async def commit(self, rid: str, actual: Mapping[str, Amount] | None = None) -> bool:
        checked = check_amounts(actual or {}, "actual")

        def op(tx: _Tx) -> bool:
            conn = tx.conn
            found = conn.execute("SELECT amounts FROM holds WHERE rid = ?", (rid,)).fetchone()
            live = found is not None
            if live:
                (amounts_json,) = found
            else:
                ended = conn.execute("SELECT amounts, outcome FROM endings WHERE rid = ?",
                                     (rid,)).fetchone()
                if ended is None:
                    raise ReservationError(f"unknown reservation {rid!r}")
                if ended[1] != "expired":
                    return False
                # The lease expired before the commit: the hold is gone, the spend still counts.
                amounts_json = ended[0]
            stored: dict[str, str] = json.loads(amounts_json)
            rows = tx.load(stored)
            # A limit dropped since (drop_idle_limit) stays a held key, so an ``actual`` naming
            # it is not refused as foreign; decide_commit gives it no spend (it is not in rows).
            held: dict[str, Amount] = {**dict.fromkeys(stored, 0), **_amounts(rows, stored)}
            after, spend = decide_commit(rows, held, checked, live=live)
            if live:
                conn.execute("DELETE FROM holds WHERE rid = ?", (rid,))
            # Spent what was held, on every limit it held: the spend is the hold's own text.
            spent = amounts_json if not checked and len(spend) == len(stored) else _dump(spend)
            conn.execute("INSERT OR REPLACE INTO endings VALUES (?, 'committed', ?, ?, ?)",
                         (rid, amounts_json, spent, tx.now))
            tx.write(after)
            return True

        return await self._run(op)

    async def release(self, rid: str) -> bool:
        return await self._run(self._release_op(rid))

    def release_abandoned(self, rid: str) -> None:
        """Release a garbage-collected reservation from a short-lived background thread, so the
        finaliser never blocks; ``aclose`` waits for it. If it cannot run (the store is closed,
        the interpreter is exiting), the lease reclaims the hold."""
        op = _Op(self._release_op(rid), write=True, direct=False)
        # Best effort: _call records an error instead of raising; the lease is the fallback.
        thread = threading.Thread(target=self._call, args=([op],),
                                  name=f"outlay-sqlite-release-{rid}", daemon=True)
        # No lock here: a finaliser can run inside any critical section of this thread.
        thread.start()
        self._abandoned = [t for t in self._abandoned if t.is_alive()]
        self._abandoned.append(thread)

    @staticmethod
    def _release_op(rid: str) -> Callable[[_Tx], bool]:
        def op(tx: _Tx) -> bool:
            conn, now = tx.conn, tx.now
            found = conn.execute("SELECT amounts FROM holds WHERE rid = ?", (rid,)).fetchone()
            if found is None:
                # An expired hold that is released is over: a later commit no longer counts.
                # An id never seen is remembered as released: a late reserve of it is refused.
                conn.execute("UPDATE endings SET outcome = 'released', ended_at = ? "
                             "WHERE rid = ? AND outcome = 'expired'", (now, rid))
                conn.execute("INSERT OR IGNORE INTO endings VALUES (?, 'released', '{}', NULL, ?)",
                             (rid, now))
                return False
            stored = json.loads(found[0])
            rows = tx.load(stored)
            after = decide_release(rows, _amounts(rows, stored))
            conn.execute("DELETE FROM holds WHERE rid = ?", (rid,))
            conn.execute("INSERT OR REPLACE INTO endings VALUES (?, 'released', ?, NULL, ?)",
                         (rid, found[0], now))
            tx.write(after)
            return True

        return op

    async def extend(self, rid: str, lease: float) -> bool:
        check_lease(lease)

        def op(tx: _Tx) -> bool:
            cursor = tx.conn.execute("UPDATE holds SET expires_at = ? WHERE rid = ?",
                                     (tx.now + lease, rid))
            return cursor.rowcount > 0

        return await self._run(op)

    async def usage(self, key: str) -> LimitUsage:
        def op(tx: _Tx) -> LimitUsage:
            found = _snapshot(tx, key)
            if not found:
                raise UnknownLimit(key)
            return found[0]

        return await self._run(op, write=False, direct=True)

    async def limits(self, prefix: str = "") -> list[LimitUsage]:
        """Snapshot every limit whose key starts with ``prefix``, sorted by key."""
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
        return await self._run(lambda tx: _snapshot(tx, prefix, prefix=True),
                               write=False, direct=True)

    async def reset_spend(self, key: str) -> LimitUsage:
        """Set the committed spend of ``key`` to zero, keeping its cap and live holds; one write
        transaction (see ``Store.reset_spend``). Returns the usage as it was before."""

        def op(tx: _Tx) -> LimitUsage:
            row = tx.conn.execute("SELECT unit, cap, spent, held FROM limits WHERE key = ?",
                                  (key,)).fetchone()
            if row is None:
                raise UnknownLimit(key)
            unit, cap, spent, held = row
            tx.conn.execute("UPDATE limits SET spent = ?, updated_at = ? WHERE key = ?",
                            ("0", tx.now, key))
            return LimitUsage(key, _parse(unit, cap, key), _parse(unit, spent, key),
                              _parse(unit, held, key))

        return await self._run(op, direct=True)

    async def held_reservations(self) -> int:
        """How many holds are live right now (for diagnostics and tests)."""

        def op(tx: _Tx) -> int:
            count: int = tx.conn.execute("SELECT count(*) FROM holds WHERE expires_at > ?",
                                         (tx.now,)).fetchone()[0]
            return count

        return await self._run(op, write=False)

    async def holds(self, prefix: str = "") -> list[HoldUsage]:
        """Every live hold on a limit whose key starts with ``prefix``, oldest first; one read
        transaction (see ``Store.holds``)."""
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")

        def op(tx: _Tx) -> list[HoldUsage]:
            conn, now = tx.conn, tx.now
            rows = conn.execute(
                "SELECT rid, amounts, expires_at, created_at FROM holds "
                "WHERE expires_at > ? ORDER BY created_at, rid", (now,)).fetchall()
            units = dict(conn.execute(
                "SELECT key, unit FROM limits WHERE key IN (SELECT j.key FROM holds h, "
                "json_each(h.amounts) j WHERE h.expires_at > ?)", (now,)).fetchall())
            found = []
            for rid, amounts_json, expires_at, created_at in rows:
                texts: dict[str, str] = json.loads(amounts_json)
                if any(key.startswith(prefix) for key in texts):
                    amounts = {key: _parse(units[key], text) for key, text in texts.items()}
                    found.append(HoldUsage(rid, amounts, expires_at - now, now - created_at))
            return found

        return await self._run(op, write=False, direct=True)

    async def drop_idle_limit(self, key: str, *, idle: float) -> bool:
        """Delete ``key`` if it has no live hold and has not changed for ``idle`` seconds (the
        ``updated_at`` column); one write transaction (see ``Store.drop_idle_limit``)."""
        idle = check_seconds(idle, "idle")

        def op(tx: _Tx) -> bool:
            conn = tx.conn
            found = conn.execute("SELECT updated_at FROM limits WHERE key = ?",
                                 (key,)).fetchone()
            held = conn.execute("SELECT 1 FROM holds h JOIN json_each(h.amounts) j "
                                "WHERE j.key = ? LIMIT 1", (key,)).fetchone()
            if found is None or held is not None or tx.now - found[0] < idle:
                return False
            conn.execute("DELETE FROM limits WHERE key = ?", (key,))
            return True

        return await self._run(op, direct=True)

    async def append_events(self, events: Sequence[SpendEvent], *, keep: int) -> None:
        """Append to the ``events`` table (made on first use, so a file without events never
        gets one), keeping the newest ``keep`` rows; one write transaction."""
        keep = check_count(keep, "keep")
        bodies = [(encode_event(event),) for event in events]

        def op(tx: _Tx) -> None:
            tx.conn.execute(_EVENTS_TABLE)
            tx.conn.executemany("INSERT INTO events (body) VALUES (?)", bodies)
            tx.conn.execute("DELETE FROM events WHERE seq <= (SELECT max(seq) FROM events) - ?",
                            (keep,))

        await self._run(op)

    async def events(self, *, limit: int | None = None) -> list[SpendEvent]:
        """The ``events`` table, oldest first; one read transaction."""
        count = -1 if limit is None else check_count(limit, "limit")

        def op(tx: _Tx) -> list[str]:
            if tx.conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                               "name = 'events'").fetchone() is None:
                return []
            rows = tx.conn.execute("SELECT body FROM (SELECT seq, body FROM events ORDER BY "
                                   "seq DESC LIMIT ?) ORDER BY seq", (count,)).fetchall()
            return [body for (body,) in rows]

        return [decode_event(body) for body in await self._run(op, write=False)]

    async def aclose(self) -> None:
        """Finish pending releases of abandoned reservations, then close the connection. Later
        operations raise ``StoreError``; closing twice is fine."""

        def close() -> None:
            pending, self._abandoned = self._abandoned, []
            for thread in pending:
                thread.join()
            with self._lock:
                self._closed = True
                if self._checkpointer is not None:
                    # Its connection closes first: the store's, the last, checkpoints the
                    # rest and removes the WAL.
                    self._checkpointer.stop()
                conn, self._conn = self._conn, None
                if conn is not None:
                    conn.close()

        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(close)


_WAL_RETRY = 0.005
"""Seconds between tries of switching a file to WAL while another connection holds its lock."""
_pause = time.sleep  # between those tries (a test waits on it to force the interleaving)


def _map_error(exc: sqlite3.Error, path: str) -> StoreError:
    """The one table from driver errors to ours, by SQLite's result code, never by message."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in _UNAVAILABLE_CODES:
        return StoreUnavailable(f"SQLite store {path!r}: {exc}")
    return StoreError(f"SQLite store {path!r}: {exc}")


class _Checkpointer:
    """Checkpoints a store's WAL (copies it into the database file, with its fsyncs) from a
    thread and a connection of its own, so that no operation waits for it: the store's
    connection has SQLite's automatic checkpoint (run inside the ``COMMIT`` that fills the
    WAL past 1,000 pages, tens of milliseconds on a loaded disk) put off to ``_WAL_BACKSTOP``.

    ``wrote()``, after each write transaction commits, wakes it (starting its thread if none
    runs); it then runs a ``PASSIVE`` checkpoint, which never waits for nor blocks a reader or
    a writer, at most every ``_CHECKPOINT_EVERY`` seconds. After ``_CHECKPOINT_IDLE`` seconds
    without a write its thread closes its connection and ends. A checkpoint that fails is
    logged (``outlay.sqlite.checkpoint_failed``) and tried again after the next write; what
    is committed is in the WAL either way. ``stop()`` ends it for good and closes its
    connection before the store closes its own (the last to close removes the WAL)."""

    __slots__ = ("_cond", "_path", "_pending", "_stop", "_thread", "_uri", "checkpointed")

    def __init__(self, uri: str, path: str) -> None:
        self._uri = f"{uri}?mode=rw"
        self._path = path
        self._cond = threading.Condition()
        self._pending = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: Set after each checkpoint (for tests).
        self.checkpointed = threading.Event()

    def wrote(self) -> None:
        """Called after a write committed; never raises (a thread that cannot start is logged,
        tried again on the next write, and the WAL backstop bounds the WAL meanwhile)."""
        with self._cond:
            if self._stop.is_set():
                return
            self._pending = True
            if self._thread is not None:
                self._cond.notify()
                return
            thread = threading.Thread(target=self._run, daemon=True,
                                      name="outlay-sqlite-checkpoint")
            try:
                thread.start()
            except RuntimeError as exc:  # no thread to be had now
                _log.warn("outlay.sqlite.checkpoint_failed", path=self._path, error=str(exc))
                return
            self._thread = thread

    def stop(self) -> None:
        with self._cond:
            self._stop.set()
            thread = self._thread
            self._cond.notify()
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        while True:
            with self._cond:
                if not self._pending and not self._stop.is_set():
                    self._cond.wait(_CHECKPOINT_IDLE)
                if self._stop.is_set() or not self._pending:
                    if conn is not None:  # closed before a stop() or a new thread goes on
                        conn.close()
                    self._thread = None
                    return
                self._pending = False
            try:
                if conn is None:
                    conn = sqlite3.connect(self._uri, uri=True, isolation_level=None)
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.Error as exc:
                _log.warn("outlay.sqlite.checkpoint_failed", path=self._path, error=str(exc))
                if conn is not None:
                    conn.close()
                    conn = None
            self.checkpointed.set()
            self._stop.wait(_CHECKPOINT_EVERY)


#: Whether a reservation id is held, and whether it has ended: one statement for both.
_RID_STATE = ("SELECT EXISTS (SELECT 1 FROM holds WHERE rid = ?1), "
              "EXISTS (SELECT 1 FROM endings WHERE rid = ?1)")

#: A new hold, inserted only if its id is neither held nor ended.
_HOLD = ("INSERT INTO holds SELECT ?, ?, ?, ? WHERE NOT EXISTS "
         "(SELECT 1 FROM endings WHERE rid = ?) ON CONFLICT (rid) DO NOTHING")


def _held(conn: sqlite3.Connection, rid: str) -> bool:
    """Whether ``rid`` is held (a retried ``reserve``: admitted); ``ReservationError`` if it
    has ended."""
    held, ended = conn.execute(_RID_STATE, (rid,)).fetchone()
    if not held and ended:
        raise ReservationError(f"reservation {rid!r} has already ended")
    return bool(held)


#: The most operations one hop takes from the queue while it runs.
_MAX_BATCH = 256


class _Op(Queued):
    """One operation of a hop: what it runs (``op(tx)``), whether it writes, and whether it
    reads or writes the ``limits`` table with its own SQL (``direct``)."""

    __slots__ = ("direct", "op", "write")

    def __init__(self, op: Callable[[_Tx], Any], write: bool, direct: bool) -> None:
        super().__init__()
        self.op = op
        self.write = write
        self.direct = direct


class _Tx:
    """One transaction as its operations see it: the connection, its time, and the limits read
    so far, parsed once (``load``). An operation stages its new limit figures (``write``); they
    count for the operations after it once it succeeded (``keep``), are dropped if it failed
    (``drop``), and are written to the file together before an operation that reads the
    ``limits`` table itself and before the commit (``flush``)."""

    __slots__ = ("_dirty", "_limits", "_staged", "conn", "now")

    def __init__(self, conn: sqlite3.Connection, now: float) -> None:
        self.conn = conn
        self.now = now
        self._limits: dict[str, LimitUsage] = {}
        self._staged: dict[str, LimitUsage] = {}
        self._dirty: set[str] = set()

    def load(self, keys: Iterable[str]) -> dict[str, LimitUsage]:
        """The named limits that exist, as this transaction has them."""
        found: dict[str, LimitUsage] = {}
        missing = []
        for key in keys:
            limit = self._staged.get(key) or self._limits.get(key)
            if limit is None:
                missing.append(key)
            else:
                found[key] = limit
        if missing:
            marks = ",".join("?" * len(missing))
            for key, unit, cap, spent, held in self.conn.execute(
                    f"SELECT key, unit, cap, spent, held FROM limits WHERE key IN ({marks})",
                    missing):
                found[key] = self._limits[key] = _usage(key, unit, cap, spent, held)
        return found

    def write(self, after: Mapping[str, LimitUsage]) -> None:
        self._staged.update(after)

    def keep(self) -> None:
        if not self._staged:
            return
        self._limits.update(self._staged)
        self._dirty.update(self._staged)
        self._staged.clear()

    def drop(self) -> None:
        self._staged.clear()

    def flush(self) -> None:
        """Write the kept figures, and forget every limit read (the next operation may change
        the table)."""
        if self._dirty:
            self.conn.executemany(
                "UPDATE limits SET spent = ?, held = ?, updated_at = ? WHERE key = ?",
                [(str(u.spent), str(u.held), self.now, key)
                 for key, u in self._limits.items() if key in self._dirty])
            self._dirty.clear()
        self._limits.clear()


_QUOTE = json.encoder.encode_basestring_ascii


def _dump(amounts: Mapping[str, Amount]) -> str:
    """Amounts as the JSON object of their exact text, keys sorted (what ``json.dumps(...,
    sort_keys=True)`` writes; an amount's text needs no escaping)."""
    return "{" + ", ".join(f'{_QUOTE(key)}: "{amount}"'
                           for key, amount in sorted(amounts.items())) + "}"


def _usage(key: str, unit: str, cap: str, spent: str, held: str) -> LimitUsage:
    return LimitUsage(key, _parse(unit, cap, key), _parse(unit, spent, key),
                      _parse(unit, held, key))


def _amounts(rows: Mapping[str, LimitUsage], stored: Mapping[str, str]) -> dict[str, Amount]:
    """A hold's stored amounts (its decoded JSON), in the unit of each limit that still
    exists."""
    return {key: _parse("decimal" if isinstance(rows[key].cap, Decimal) else "int", text, key)
            for key, text in stored.items() if key in rows}


def _snapshot(tx: _Tx, key: str, *, prefix: bool = False) -> list[LimitUsage]:
    """Read limits, not counting holds whose lease has expired but which no write has swept
    yet (so a read never needs the write lock)."""
    conn, now = tx.conn, tx.now
    if prefix:
        # Keys sort by their UTF-8 bytes (as str sorts by code point): the keys starting
        # with ``key`` are the run from ``key`` on; compared in Python, so any character
        # (NUL included) is matched exactly.
        found = conn.execute("SELECT key, unit, cap, spent, held FROM limits "
                             "WHERE key >= ? ORDER BY key", (key,))
        rows = list(itertools.takewhile(lambda row: row[0].startswith(key), found))
    else:
        rows = conn.execute("SELECT key, unit, cap, spent, held FROM limits WHERE key = ?",
                            (key,)).fetchall()
    stale: dict[str, list[str]] = {}
    if rows:
        for (amounts_json,) in conn.execute(
                "SELECT amounts FROM holds WHERE expires_at <= ?", (now,)):
            for k, text in json.loads(amounts_json).items():
                stale.setdefault(k, []).append(text)
    result = []
    for k, unit, cap, spent, held in rows:
        usage = _usage(k, unit, cap, spent, held)
        held_now = usage.held
        for text in stale.get(k, ()):
            held_now = minus(held_now, _parse(unit, text, k))
        result.append(LimitUsage(k, usage.cap, usage.spent, held_now))
    return result
