"""The job store: where job records live, beside the budget in the same store.

``JobStore`` is the contract a backend implements: every method is **one atomic step** at the
backend (one critical section, one transaction, one script), on the backend's own clock. The
state moves (``claim``, ``heartbeat``, ``finish``, ``fail``, ``recover``, ``settled``) are
written once below as pure functions on a ``JobRow`` for the backends that run them in Python
(memory, SQLite, PostgreSQL with ``SELECT ... FOR UPDATE`` / ``SKIP LOCKED``); Redis runs the
same moves as Lua scripts.

A backend is found from the budget's store by ``job_store_for``: one dict from the store class
to its backend, loaded on first use, so ``import outlay`` imports no driver. A backend is one
module with a ``for_store`` classmethod and one line in ``_BACKENDS``.
"""

from __future__ import annotations

import heapq
import importlib
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import replace

from .._core import ConfigurationError
from ..stores import MemoryStore, Store
from ._model import MAX_ERROR, JobRow

# -- the moves, written once (pure: no I/O) ---------------------------------------------------


def claim_row(row: JobRow, token: str, now: float, lease: float) -> None:
    """A queued job is leased to ``token`` until ``now + lease``; one more attempt."""
    row.state, row.claim, row.lease_until = "leased", token, now + lease
    row.attempts += 1


def leased_to(row: JobRow, token: str) -> bool:
    """Whether ``row`` is leased to the claim ``token`` (expired or not, until recovered)."""
    return row.state == "leased" and row.claim == token


def finish_row(row: JobRow, token: str, result: str | None, actual: str | None, now: float,
               lease: float) -> bool:
    """A leased job records its result and moves to settling(completed); False if stale."""
    if not leased_to(row, token):
        return False
    row.state, row.outcome, row.result, row.actual = "settling", "completed", result, actual
    row.lease_until = now + lease
    return True


def fail_row(row: JobRow, token: str, error: str, retry: bool, now: float,
             lease: float) -> bool:
    """A leased job records ``error``; it is queued again if ``retry`` and attempts are left,
    else it moves to settling(failed). False if stale."""
    if not leased_to(row, token):
        return False
    row.error = error[:MAX_ERROR]
    if retry and row.attempts < row.max_attempts:
        _requeue(row)
    else:
        _settle_failed(row, now, lease)
    return True


def recover_row(row: JobRow, now: float, lease: float) -> bool:
    """Recover a job whose lease ended: queued again while attempts are left, else
    settling(failed) with the error recorded. A settling job whose settler vanished is
    re-leased for settling. False if there was nothing to recover."""
    if row.lease_until is None or row.lease_until > now:
        return False
    if row.state == "leased":
        row.error = f"lease expired on attempt {row.attempts} of {row.max_attempts}"
        if row.attempts < row.max_attempts:
            _requeue(row)
        else:
            _settle_failed(row, now, lease)
        return True
    if row.state == "settling":
        row.lease_until = now + lease
        return True
    return False


def settled_row(row: JobRow) -> bool:
    """A settling job whose hold has ended takes its final state; False if not settling."""
    if row.state != "settling" or row.outcome is None:
        return False
    row.state, row.claim, row.lease_until = row.outcome, None, None
    return True


def _requeue(row: JobRow) -> None:
    row.state, row.claim, row.lease_until = "queued", None, None


def _settle_failed(row: JobRow, now: float, lease: float) -> None:
    row.state, row.outcome, row.lease_until = "settling", "failed", now + lease


# -- the contract -----------------------------------------------------------------------------


class JobStore(ABC):
    """Job records of one store. Each method is one atomic step at the backend; ``lease`` is
    seconds on the backend's clock. Rows handed out are copies."""

    @abstractmethod
    async def add(self, row: JobRow) -> None:
        """Store a new queued job, last in its lane; ``ValueError`` if the id is taken."""

    @abstractmethod
    async def claim(self, lanes: Sequence[str], token: str, lease: float) -> JobRow | None:
        """Lease the oldest queued job of any of ``lanes`` to ``token`` (``claim_row``), or
        ``None`` if there is none. Two claims never get the same job."""

    @abstractmethod
    async def heartbeat(self, job_id: str, token: str, lease: float) -> bool:
        """Renew the lease of a job still leased to ``token``; False if it is not."""

    @abstractmethod
    async def finish(self, job_id: str, token: str, *, result: str | None, actual: str | None,
                     lease: float) -> bool:
        """``finish_row``: record the result of a job still leased to ``token``."""

    @abstractmethod
    async def fail(self, job_id: str, token: str, *, error: str, retry: bool,
                   lease: float) -> JobRow | None:
        """``fail_row``; the job as it is now, or ``None`` if it was not leased to ``token``."""

    @abstractmethod
    async def recover(self, lease: float, limit: int = 100) -> list[JobRow]:
        """``recover_row`` on up to ``limit`` jobs whose lease ended; the jobs it changed."""

    @abstractmethod
    async def settled(self, job_id: str) -> bool:
        """``settled_row``: a settling job takes its final state."""

    @abstractmethod
    async def get(self, job_id: str) -> JobRow | None:
        """The job with this id, or ``None``."""

    @abstractmethod
    async def rows(self, state: str | None = None) -> list[JobRow]:
        """Every job (in ``state``), oldest first."""


class MemoryJobStore(JobStore):
    """Jobs in this process's memory, beside a ``MemoryStore`` (on its clock); one
    ``threading.Lock`` critical section per step. A heap per lane finds the oldest queued job
    and a set of live jobs bounds ``recover``, so neither scans finished jobs."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._rows: dict[str, JobRow] = {}  # in submission order
        self._seq: dict[str, int] = {}
        self._queues: dict[str, list[tuple[int, str]]] = {}  # lane -> heap of (seq, id)
        self._live: dict[str, None] = {}  # leased or settling, oldest first

    @classmethod
    def for_store(cls, store: Store) -> MemoryJobStore:
        assert isinstance(store, MemoryStore)
        return cls(clock=store._clock)  # one clock for job leases and hold leases

    def _index(self, row: JobRow) -> None:
        """Keep the lane heaps and the live set in step with ``row``'s state (lock held)."""
        if row.state == "queued":
            heapq.heappush(self._queues.setdefault(row.lane, []), (self._seq[row.id], row.id))
        if row.state in ("leased", "settling"):
            self._live[row.id] = None
        else:
            self._live.pop(row.id, None)

    async def add(self, row: JobRow) -> None:
        with self._lock:
            if row.id in self._rows:
                raise ValueError(f"job id {row.id!r} is taken")
            self._rows[row.id] = replace(row)
            self._seq[row.id] = len(self._seq)
            self._index(row)

    async def claim(self, lanes: Sequence[str], token: str, lease: float) -> JobRow | None:
        with self._lock:
            best: list[tuple[int, str]] | None = None
            for lane in set(lanes):
                heap = self._queues.get(lane)
                while heap and self._rows[heap[0][1]].state != "queued":
                    heapq.heappop(heap)  # claimed or ended since it was queued
                if heap and (best is None or heap[0] < best[0]):
                    best = heap
            if best is None:
                return None
            row = self._rows[heapq.heappop(best)[1]]
            claim_row(row, token, self._clock(), lease)
            self._index(row)
            return replace(row)

    async def heartbeat(self, job_id: str, token: str, lease: float) -> bool:
        with self._lock:
            row = self._rows.get(job_id)
            if row is None or not leased_to(row, token):
                return False
            row.lease_until = self._clock() + lease
            return True

    async def finish(self, job_id: str, token: str, *, result: str | None, actual: str | None,
                     lease: float) -> bool:
        with self._lock:
            row = self._rows.get(job_id)
            return row is not None and finish_row(row, token, result, actual, self._clock(),
                                                  lease)

    async def fail(self, job_id: str, token: str, *, error: str, retry: bool,
                   lease: float) -> JobRow | None:
        with self._lock:
            row = self._rows.get(job_id)
            if row is None or not fail_row(row, token, error, retry, self._clock(), lease):
                return None
            self._index(row)
            return replace(row)

    async def recover(self, lease: float, limit: int = 100) -> list[JobRow]:
        changed: list[JobRow] = []
        with self._lock:
            now = self._clock()
            for job_id in list(self._live):
                if len(changed) >= limit:
                    break
                row = self._rows[job_id]
                if recover_row(row, now, lease):
                    self._index(row)
                    changed.append(replace(row))
        return changed

    async def settled(self, job_id: str) -> bool:
        with self._lock:
            row = self._rows.get(job_id)
            if row is None or not settled_row(row):
                return False
            self._index(row)
            return True

    async def get(self, job_id: str) -> JobRow | None:
        with self._lock:
            row = self._rows.get(job_id)
            return None if row is None else replace(row)

    async def rows(self, state: str | None = None) -> list[JobRow]:
        with self._lock:
            return [replace(r) for r in self._rows.values() if state is None or r.state == state]


#: store class (module.qualname) -> "module:JobStoreClass"; the class builds itself with
#: ``for_store(store)``.
_BACKENDS: dict[str, str] = {
    "outlay.stores._memory.MemoryStore": "outlay.jobs._store:MemoryJobStore",
    "outlay.stores._sqlite.SQLiteStore": "outlay.jobs._sqlite:SQLiteJobStore",
    "outlay.stores._redis.RedisStore": "outlay.jobs._redis:RedisJobStore",
    "outlay.stores._postgres.PostgresStore": "outlay.jobs._postgres:PostgresJobStore",
}

_SHARED: weakref.WeakKeyDictionary[Store, JobStore] = weakref.WeakKeyDictionary()
_SHARED_LOCK = threading.Lock()


def job_store_for(store: Store) -> JobStore:
    """The job store that lives beside ``store``; ``ConfigurationError`` for a store with no
    job backend. In-process job state is shared by every queue over one store object (kept
    only as long as the store lives); durable backends hold no state of their own."""
    for cls in type(store).__mro__:
        target = _BACKENDS.get(f"{cls.__module__}.{cls.__qualname__}")
        if target is None:
            continue
        module_name, _, class_name = target.partition(":")
        backend_class = getattr(importlib.import_module(module_name), class_name)
        if backend_class is not MemoryJobStore:
            backend: JobStore = backend_class.for_store(store)
            return backend
        with _SHARED_LOCK:
            shared = _SHARED.get(store)
            if shared is None:
                shared = _SHARED[store] = MemoryJobStore.for_store(store)
            return shared
    raise ConfigurationError(f"{type(store).__name__} keeps no jobs; jobs run on the memory, "
                             "SQLite, Redis and PostgreSQL stores")
