"""Jobs in the SQLite store's own file: tables ``jobs`` and ``jobs_schema`` beside the budget.

Every step is one ``BEGIN IMMEDIATE`` transaction on the store's connection and thread (so a
claim is read-then-update under SQLite's single write lock: two processes never claim one job),
on the store's wall clock. The job tables carry their own schema version in ``jobs_schema``
(the budget tables keep ``PRAGMA user_version``): a file written by a newer outlay is refused,
an older one is upgraded in the same transaction that first touches jobs.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import TypeVar

from .._core import StoreError
from ..stores import Store
from ..stores._sqlite import SQLiteStore, _Tx
from ._model import JobRow
from ._store import (
    JobStore,
    claim_row,
    fail_row,
    finish_row,
    leased_to,
    recover_row,
    settled_row,
)

T = TypeVar("T")

JOBS_SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id           TEXT PRIMARY KEY,
    seq          INTEGER NOT NULL UNIQUE,
    lane         TEXT NOT NULL,
    state        TEXT NOT NULL
                 CHECK (state IN ('queued', 'leased', 'settling', 'completed', 'failed')),
    spec         TEXT NOT NULL,
    attempts     INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    claim        TEXT,
    lease_until  REAL,
    outcome      TEXT CHECK (outcome IN ('completed', 'failed')),
    result       TEXT,
    actual       TEXT,
    error        TEXT,
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_queued ON jobs (lane, seq) WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS jobs_leases ON jobs (lease_until) WHERE lease_until IS NOT NULL;
CREATE TABLE IF NOT EXISTS jobs_schema (version INTEGER NOT NULL);
"""

_COLUMNS = ("id, lane, spec, max_attempts, created_at, state, attempts, claim, lease_until, "
            "outcome, result, actual, error")


def _row(found: Sequence[object]) -> JobRow:
    return JobRow(*found)  # type: ignore[arg-type]  # columns in JobRow's field order


class SQLiteJobStore(JobStore):
    """The job tables of one ``SQLiteStore`` file, run through that store's connection."""

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store
        self._ready = False

    @classmethod
    def for_store(cls, store: Store) -> SQLiteJobStore:
        assert isinstance(store, SQLiteStore)
        return cls(store)

    async def _run(self, op: Callable[[sqlite3.Connection, float], T]) -> T:
        """``op`` in one write transaction of the store (``BEGIN IMMEDIATE`` ... ``COMMIT``)."""

        def step(tx: _Tx) -> T:
            if not self._ready:
                self._migrate(tx.conn)
            return op(tx.conn, tx.now)

        result = await self._store._run(step)
        self._ready = True  # committed: the tables are there
        return result

    async def _read(self, op: Callable[[sqlite3.Connection], T], empty: T) -> T:
        """``op`` in one read transaction; ``empty`` if this file has no job tables yet (a
        read never creates them)."""

        def step(tx: _Tx) -> T:
            if not tx.conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                                   "name = 'jobs'").fetchone():
                return empty
            return op(tx.conn)

        return await self._store._run(step, write=False)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                              "name = 'jobs_schema'").fetchone()
        version = 0
        if exists:
            found = conn.execute("SELECT max(version) FROM jobs_schema").fetchone()
            version = found[0] or 0
        if version > JOBS_SCHEMA_VERSION:
            raise StoreError(f"SQLite store {self._store.path!r} has job schema version "
                             f"{version}; this outlay knows up to {JOBS_SCHEMA_VERSION}")
        if version < JOBS_SCHEMA_VERSION:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("DELETE FROM jobs_schema")
            conn.execute("INSERT INTO jobs_schema VALUES (?)", (JOBS_SCHEMA_VERSION,))

    @staticmethod
    def _load(conn: sqlite3.Connection, job_id: str) -> JobRow | None:
        found = conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if found is None else _row(found)

    @staticmethod
    def _write(conn: sqlite3.Connection, row: JobRow, now: float) -> None:
        conn.execute("UPDATE jobs SET state = ?, attempts = ?, claim = ?, lease_until = ?, "
                     "outcome = ?, result = ?, actual = ?, error = ?, updated_at = ? "
                     "WHERE id = ?",
                     (row.state, row.attempts, row.claim, row.lease_until, row.outcome,
                      row.result, row.actual, row.error, now, row.id))

    async def add(self, row: JobRow) -> None:
        def op(conn: sqlite3.Connection, now: float) -> None:
            if conn.execute("SELECT 1 FROM jobs WHERE id = ?", (row.id,)).fetchone():
                raise ValueError(f"job id {row.id!r} is taken")
            seq = conn.execute("SELECT coalesce(max(seq), 0) + 1 FROM jobs").fetchone()[0]
            conn.execute(
                "INSERT INTO jobs (id, seq, lane, state, spec, attempts, max_attempts, "
                "created_at, updated_at) VALUES (?, ?, ?, 'queued', ?, 0, ?, ?, ?)",
                (row.id, seq, row.lane, row.spec, row.max_attempts, row.created_at, now))

        await self._run(op)

    async def claim(self, lanes: Sequence[str], token: str, lease: float) -> JobRow | None:
        wanted = list(lanes)
        marks = ",".join("?" * len(wanted))

        def op(conn: sqlite3.Connection, now: float) -> JobRow | None:
            found = conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE state = 'queued' AND "
                                 f"lane IN ({marks}) ORDER BY seq LIMIT 1", wanted).fetchone()
            if found is None:
                return None
            row = _row(found)
            claim_row(row, token, now, lease)
            self._write(conn, row, now)
            return row

        return await self._run(op)

    async def heartbeat(self, job_id: str, token: str, lease: float) -> bool:
        def op(conn: sqlite3.Connection, now: float) -> bool:
            row = self._load(conn, job_id)
            if row is None or not leased_to(row, token):
                return False
            row.lease_until = now + lease
            self._write(conn, row, now)
            return True

        return await self._run(op)

    async def finish(self, job_id: str, token: str, *, result: str | None, actual: str | None,
                     lease: float) -> bool:
        def op(conn: sqlite3.Connection, now: float) -> bool:
            row = self._load(conn, job_id)
            if row is None or not finish_row(row, token, result, actual, now, lease):
                return False
            self._write(conn, row, now)
            return True

        return await self._run(op)

    async def fail(self, job_id: str, token: str, *, error: str, retry: bool,
                   lease: float) -> JobRow | None:
        def op(conn: sqlite3.Connection, now: float) -> JobRow | None:
            row = self._load(conn, job_id)
            if row is None or not fail_row(row, token, error, retry, now, lease):
                return None
            self._write(conn, row, now)
            return row

        return await self._run(op)

    async def recover(self, lease: float, limit: int = 100) -> list[JobRow]:
        def op(conn: sqlite3.Connection, now: float) -> list[JobRow]:
            found = conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE lease_until <= ? "
                                 "ORDER BY lease_until LIMIT ?", (now, limit)).fetchall()
            changed = []
            for values in found:
                row = _row(values)
                if recover_row(row, now, lease):
                    self._write(conn, row, now)
                    changed.append(row)
            return changed

        return await self._run(op)

    async def settled(self, job_id: str) -> bool:
        def op(conn: sqlite3.Connection, now: float) -> bool:
            row = self._load(conn, job_id)
            if row is None or not settled_row(row):
                return False
            self._write(conn, row, now)
            return True

        return await self._run(op)

    async def get(self, job_id: str) -> JobRow | None:
        return await self._read(lambda conn: self._load(conn, job_id), None)

    async def rows(self, state: str | None = None) -> list[JobRow]:
        def op(conn: sqlite3.Connection) -> list[JobRow]:
            if state is None:
                found = conn.execute(f"SELECT {_COLUMNS} FROM jobs ORDER BY seq").fetchall()
            else:
                found = conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE state = ? "
                                     "ORDER BY seq", (state,)).fetchall()
            return [_row(values) for values in found]

        return await self._read(op, [])
