"""Jobs in the PostgreSQL store's own schema: tables ``jobs``, ``jobs_actual`` and
``jobs_schema`` beside the budget's tables.

Every step is **one transaction** on one of the store's pooled connections (the store's
``_run``: a worker thread, errors mapped to ``StoreUnavailable`` / ``StoreError``). The rows a
step changes are row-locked with ``SELECT ... FOR UPDATE``; a claim takes the oldest queued job
of its lanes with ``FOR UPDATE SKIP LOCKED``, so concurrent claims (any number of processes)
each lock a different job and never wait on one another, and two claims never get the same
job. ``recover`` skips rows another step holds locked (a heartbeat, a finish in flight): they
are looked at again on the next pass. The state moves are the pure functions of ``_store.py``
applied to the locked row, then written back in the same transaction.

Leases run on the **server's clock** (the ``now`` the store reads after ``BEGIN``), the same
clock as the budget holds, so machines whose clocks disagree agree on when a lease ends.

Money is ``NUMERIC``: the actual cost of a completed job is one ``jobs_actual`` row per unit
(``whole`` says the unit counts ``int``), exact in the server and summable in SQL. The rest of
what never changes (payload, worst-case cost, the hold, artifacts) is the job's ``spec``: the
same JSON text as on every backend.

The job tables carry their own schema version in ``jobs_schema`` (the budget tables keep
``meta``): a schema with a newer job version, or with a ``jobs`` table outlay did not create, is
refused untouched; an older one is brought up to date, under a transaction-scoped advisory lock,
by the first step that writes. A read never creates anything.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, Final, TypeVar

import psycopg

from .._core import StoreError
from ..stores import Store
from ..stores._postgres import PostgresStore, _dec, _enc, _NoSchema
from ._model import JobRow, decode_amounts, dump_json, encode_amounts
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

JOBS_SCHEMA_VERSION: Final = 1
"""The version of the job tables this outlay creates and reads (``jobs_schema.version``)."""

#: Second key of the advisory lock taken (with the store's schema lock id) while the job tables
#: are created or migrated.
_JOBS_SETUP_LOCK: Final = 0x6A6F6273  # "jobs"

_TABLES: Final = ("jobs", "jobs_actual", "jobs_schema")

#: version -> the statements that bring the job tables at ``version - 1`` to ``version``; ``{s}``
#: is the quoted schema. Version 1 creates them. A new version appends an entry here.
_MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    1: (
        """CREATE TABLE {s}.jobs_schema (
            one     boolean PRIMARY KEY DEFAULT true CHECK (one),
            version integer NOT NULL)""",
        """CREATE TABLE {s}.jobs (
            id           text PRIMARY KEY,
            seq          bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
            lane         text NOT NULL,
            state        text NOT NULL
                         CHECK (state IN ('queued', 'leased', 'settling', 'completed', 'failed')),
            spec         text NOT NULL,
            attempts     integer NOT NULL,
            max_attempts integer NOT NULL,
            claim        text,
            lease_until  double precision,
            outcome      text CHECK (outcome IN ('completed', 'failed')),
            result       text,
            error        text,
            created_at   double precision NOT NULL,
            updated_at   double precision NOT NULL)""",
        "CREATE INDEX jobs_queued ON {s}.jobs (lane, seq) WHERE state = 'queued'",
        "CREATE INDEX jobs_leases ON {s}.jobs (lease_until) WHERE lease_until IS NOT NULL",
        """CREATE TABLE {s}.jobs_actual (
            id     text NOT NULL REFERENCES {s}.jobs (id),
            unit   text NOT NULL,
            whole  boolean NOT NULL,
            amount numeric NOT NULL CHECK (amount >= 0),
            PRIMARY KEY (id, unit))""",
    ),
}


def _row(found: Sequence[Any], actual: Sequence[Sequence[Any]] | None) -> JobRow:
    """A ``JobRow`` from the job columns the statements select and its ``jobs_actual`` rows
    ``[unit, whole, amount]`` (None: no actual cost recorded)."""
    (job_id, lane, spec, max_attempts, created_at, state, attempts, claim, lease_until,
     outcome, result, error) = found
    return JobRow(_dec(job_id), lane, spec, max_attempts, created_at, state=state,
                  attempts=attempts, claim=claim, lease_until=lease_until, outcome=outcome,
                  result=result, actual=None if not actual else _actual_json(actual),
                  error=None if error is None else _dec(error))


def _actual_json(items: Sequence[Sequence[Any]]) -> str:
    """The actual-cost JSON of a job from its ``jobs_actual`` rows ``[unit, whole, amount]``
    (the amount as the server's exact text)."""
    amounts = {_dec(unit): int(amount) if whole else Decimal(amount)
               for unit, whole, amount in items}
    return dump_json(encode_amounts(amounts), "actual")


class PostgresJobStore(JobStore):
    """The job tables in one ``PostgresStore``'s schema, run through that store's pool."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self._sql = _Statements(store._sql.schema)
        self._ready = False

    @classmethod
    def for_store(cls, store: Store) -> PostgresJobStore:
        assert isinstance(store, PostgresStore)
        return cls(store)

    # -- transactions and the schema ------------------------------------------------------

    async def _write(self, op: Callable[[psycopg.Connection[Any], float], T]) -> T:
        """``op(conn, now)`` in one transaction, the job tables created or migrated first."""

        def step(conn: psycopg.Connection[Any], now: float) -> T:
            if not self._ready:
                self._migrate(conn)
            return op(conn, now)

        result = await self._store._run(step)
        self._ready = True  # the migration (if any) committed with the step
        return result

    async def _read(self, op: Callable[[psycopg.Connection[Any]], T], empty: T) -> T:
        """``op(conn)`` in one transaction; ``empty`` while there are no job tables (a read
        never creates them)."""

        def step(conn: psycopg.Connection[Any], now: float) -> T:
            if not self._ready and self._version(conn) == 0:
                return empty
            return op(conn)

        try:
            return await self._store._run(step, write=False)
        except _NoSchema:
            return empty

    def _version(self, conn: psycopg.Connection[Any]) -> int:
        """0 if there are no job tables yet, else their version; ``StoreError`` for a newer
        version or for job tables outlay did not create (no ``jobs_schema`` row)."""
        found = conn.execute(self._sql.tables, [f"{self._sql.schema}.{t}" for t in _TABLES]
                             ).fetchone()
        assert found is not None
        present = {name for name, oid in zip(_TABLES, found, strict=True) if oid is not None}
        if not present:
            return 0
        row = None
        if "jobs_schema" in present:
            row = conn.execute(self._sql.version).fetchone()
        if row is None:
            raise StoreError(
                f"PostgreSQL schema {self._store.schema!r} holds {', '.join(sorted(present))} "
                "without an outlay job schema version; refusing to touch it: pick another "
                "schema= ")
        version = int(row[0])
        if version > JOBS_SCHEMA_VERSION:
            raise StoreError(
                f"PostgreSQL schema {self._store.schema!r} has job schema version {version}; "
                f"this outlay knows up to {JOBS_SCHEMA_VERSION} (upgrade outlay)")
        return version

    def _migrate(self, conn: psycopg.Connection[Any]) -> None:
        """Bring the job tables to ``JOBS_SCHEMA_VERSION`` inside the step's transaction,
        under a lock, so processes touching jobs for the first time at once do it once."""
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)",
                     (self._store._schema_lock, _JOBS_SETUP_LOCK))
        version = self._version(conn)
        if version == JOBS_SCHEMA_VERSION:
            return
        for step in range(version + 1, JOBS_SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[step]:
                conn.execute(statement.format(s=self._sql.schema))
        conn.execute(self._sql.set_version, (JOBS_SCHEMA_VERSION,))

    # -- rows (in the worker thread, inside the step's transaction) -----------------------

    def _locked(self, conn: psycopg.Connection[Any], statement: str, params: Sequence[Any],
                ids: Sequence[str] | None = None) -> list[JobRow]:
        """The jobs a locking ``SELECT ... FOR UPDATE`` returns, row-locked until the step
        ends. Their actual costs are read by a second statement once the locks are held: under
        ``READ COMMITTED`` it has a fresh snapshot, so it sees what the step that held a lock
        before committed (the locking statement returns the newest job row, but a subquery in
        it would read ``jobs_actual`` as of its own, older, snapshot). ``ids`` (stored form),
        when known beforehand, sends both statements in one round trip."""
        if ids is not None:
            with conn.pipeline():  # still run one after the other, each with its own snapshot
                jobs = conn.execute(statement, params)
                costs = conn.execute(self._sql.actual_of, (list(ids),))
            found = jobs.fetchall()
            actual = dict(costs.fetchall())
        else:
            found = conn.execute(statement, params).fetchall()
            if not found:
                return []
            actual = dict(conn.execute(self._sql.actual_of, ([f[0] for f in found],)
                                       ).fetchall())
        return [_row(f, actual.get(f[0])) for f in found]

    def _save(self, conn: psycopg.Connection[Any], row: JobRow, now: float,
              actual_before: str | None) -> None:
        """Write ``row``'s changing fields back (and its actual cost, when the move set it)."""
        with conn.pipeline():  # one round trip
            conn.execute(self._sql.update, (
                row.state, row.attempts, row.claim, row.lease_until, row.outcome, row.result,
                None if row.error is None else _enc(row.error), now, _enc(row.id)))
            if row.actual != actual_before:
                amounts = decode_amounts(json.loads(row.actual or "{}"))
                conn.execute(self._sql.drop_actual, (_enc(row.id),))
                conn.execute(self._sql.add_actual, (
                    _enc(row.id), [_enc(unit) for unit in amounts],
                    [isinstance(a, int) for a in amounts.values()],
                    [str(a) for a in amounts.values()]))

    async def _move(self, job_id: str, move: Callable[[JobRow, float], bool]) -> JobRow | None:
        """Lock job ``job_id``, apply ``move(row, now)``; save and return the row if it moved."""

        def op(conn: psycopg.Connection[Any], now: float) -> JobRow | None:
            stored = _enc(job_id)
            found = self._locked(conn, self._sql.load, (stored,), [stored])
            if not found:
                return None
            [row] = found
            before = row.actual
            if not move(row, now):
                return None
            self._save(conn, row, now, before)
            return row

        return await self._write(op)

    # -- the JobStore contract ------------------------------------------------------------

    async def add(self, row: JobRow) -> None:
        def op(conn: psycopg.Connection[Any], now: float) -> None:
            added = conn.execute(self._sql.add, (_enc(row.id), row.lane, row.spec,
                                                 row.max_attempts, row.created_at, now))
            if added.rowcount == 0:
                raise ValueError(f"job id {row.id!r} is taken")

        await self._write(op)

    async def claim(self, lanes: Sequence[str], token: str, lease: float) -> JobRow | None:
        wanted = sorted(set(lanes))

        def op(conn: psycopg.Connection[Any], now: float) -> JobRow | None:
            found = self._locked(conn, self._sql.claim, (wanted,))
            if not found:
                return None
            [row] = found
            claim_row(row, token, now, lease)
            self._save(conn, row, now, row.actual)
            return row

        return await self._write(op)

    async def heartbeat(self, job_id: str, token: str, lease: float) -> bool:
        def renew(row: JobRow, now: float) -> bool:
            if not leased_to(row, token):
                return False
            row.lease_until = now + lease
            return True

        return await self._move(job_id, renew) is not None

    async def finish(self, job_id: str, token: str, *, result: str | None, actual: str | None,
                     lease: float) -> bool:
        moved = await self._move(job_id, lambda row, now: finish_row(
            row, token, result, actual, now, lease))
        return moved is not None

    async def fail(self, job_id: str, token: str, *, error: str, retry: bool,
                   lease: float) -> JobRow | None:
        return await self._move(job_id, lambda row, now: fail_row(
            row, token, error, retry, now, lease))

    async def recover(self, lease: float, limit: int = 100) -> list[JobRow]:
        def op(conn: psycopg.Connection[Any], now: float) -> list[JobRow]:
            changed = []
            for row in self._locked(conn, self._sql.ended_leases, (now, limit)):
                before = row.actual
                if recover_row(row, now, lease):
                    self._save(conn, row, now, before)
                    changed.append(row)
            return changed

        return await self._write(op)

    async def settled(self, job_id: str) -> bool:
        return await self._move(job_id, lambda row, now: settled_row(row)) is not None

    async def get(self, job_id: str) -> JobRow | None:
        def op(conn: psycopg.Connection[Any]) -> JobRow | None:
            found = conn.execute(self._sql.get, (_enc(job_id),)).fetchone()
            return None if found is None else _row(found[:-1], found[-1])

        return await self._read(op, None)

    async def rows(self, state: str | None = None) -> list[JobRow]:
        def op(conn: psycopg.Connection[Any]) -> list[JobRow]:
            cursor = (conn.execute(self._sql.every) if state is None
                      else conn.execute(self._sql.in_state, (state,)))
            return [_row(found[:-1], found[-1]) for found in cursor]

        return await self._read(op, [])


class _Statements:
    """Every statement the job store runs, with the schema filled in once."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        s = schema  # the store's validated name in double quotes: safe to put into SQL
        self.tables = ("SELECT " + ", ".join(["to_regclass(%s)"] * len(_TABLES)))
        self.version = f"SELECT version FROM {s}.jobs_schema"
        self.set_version = (f"INSERT INTO {s}.jobs_schema (version) VALUES (%s) "
                            "ON CONFLICT (one) DO UPDATE SET version = EXCLUDED.version")
        columns = ("j.id, j.lane, j.spec, j.max_attempts, j.created_at, j.state, j.attempts, "
                   "j.claim, j.lease_until, j.outcome, j.result, j.error")
        # Reads (one snapshot): the actual cost rides along as JSON of [unit, whole, amount as
        # exact text].
        actual = ("json_agg(json_build_array(a.unit, a.whole, a.amount::text) ORDER BY a.unit)")
        read = (f"SELECT {columns}, (SELECT {actual} FROM {s}.jobs_actual a "
                f"WHERE a.id = j.id) FROM {s}.jobs j")
        self.get = f"{read} WHERE j.id = %s"
        self.every = f"{read} ORDER BY j.seq"
        self.in_state = f"{read} WHERE j.state = %s ORDER BY j.seq"
        # Steps lock the job rows first, then read their actual costs (``_locked``).
        locking = f"SELECT {columns} FROM {s}.jobs j"
        self.load = f"{locking} WHERE j.id = %s FOR UPDATE"
        self.actual_of = (f"SELECT a.id, {actual} FROM {s}.jobs_actual a "
                          "WHERE a.id = ANY(%s::text[]) GROUP BY a.id")
        # Parameters: lanes. Rows other claims hold locked are skipped, not waited for.
        self.claim = (f"{locking} WHERE j.state = 'queued' AND j.lane = ANY(%s::text[]) "
                      "ORDER BY j.seq LIMIT 1 FOR UPDATE SKIP LOCKED")
        # Parameters: now, limit.
        self.ended_leases = (f"{locking} WHERE j.lease_until <= %s ORDER BY j.lease_until "
                             "LIMIT %s FOR UPDATE SKIP LOCKED")
        # Parameters: id, lane, spec, max_attempts, created_at, now.
        self.add = (f"INSERT INTO {s}.jobs (id, lane, state, spec, attempts, max_attempts, "
                    "created_at, updated_at) VALUES (%s, %s, 'queued', %s, 0, %s, %s, %s) "
                    "ON CONFLICT (id) DO NOTHING")
        # Parameters: state, attempts, claim, lease_until, outcome, result, error, now, id.
        self.update = (f"UPDATE {s}.jobs SET state = %s, attempts = %s, claim = %s, "
                       "lease_until = %s, outcome = %s, result = %s, error = %s, "
                       "updated_at = %s WHERE id = %s")
        self.drop_actual = f"DELETE FROM {s}.jobs_actual WHERE id = %s"
        # Parameters: id, units, wholes, amounts.
        self.add_actual = (
            f"INSERT INTO {s}.jobs_actual (id, unit, whole, amount) "
            "SELECT %s, u, w, a::numeric FROM unnest(%s::text[], %s::boolean[], %s::text[]) "
            "AS t(u, w, a)")
