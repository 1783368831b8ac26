"""``JobQueue``: submit, claim, heartbeat, complete, fail and recover jobs over one store.

The queue keeps job records in the budget's own store (``job_store_for``) and ends each job's
budget hold by id at that store, so any process can settle what another submitted.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio

from .._core import _log
from .._core._amounts import Amount, check_lease
from .._core._exceptions import JobRejected, StoreUnavailable, UnknownJob
from ..hooks import ApprovalRecord, Continue, ToolDispatchHook, ToolInvocation
from ..stores import Store, store_from_url
from ._hold import ByUnitBudget, commit_hold, extend_hold, release_hold, take_hold
from ._model import (
    STATES,
    Artifact,
    Job,
    JobRow,
    check_cost,
    check_lane,
    decode_amounts,
    dump_json,
    encode_amounts,
)
from ._store import JobStore, job_store_for

DEFAULT_JOB_LEASE = 60.0
"""Seconds a claim lasts unless heartbeated."""

DEFAULT_HOLD_GRACE = 86_400.0
"""Seconds a queued job's budget hold lasts (and how long it outlives its job's lease)."""


def job_cost(unit: str) -> Callable[[ToolInvocation], Amount]:
    """The ``cost=`` of an ``ApprovalHook`` that gates jobs: the job's worst case in ``unit``."""

    def cost(invocation: ToolInvocation) -> Amount:
        amount: Amount = invocation.metadata["job_cost"][unit]
        return amount

    return cost


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What one ``JobQueue.recover`` did: jobs queued again, failed for good, settled."""

    requeued: int = 0
    failed: int = 0
    settled: int = 0


class JobQueue:
    """Jobs that run once, recoverably, with their worst case held against a budget.

    ``store`` is the budget's store (or its URL); ``budget`` the default by-unit budget jobs
    are held against (``PrincipalBudget``); ``approval`` an optional gate every submit passes
    (an ``ApprovalHook``; its ``cost`` can read the job's worst case with ``job_cost(unit)``).
    ``lease`` is how long a claim lasts without a heartbeat; ``hold_grace`` how long a queued
    job's hold lasts and how long a running job's hold outlives its lease, so recovery finds
    it still held. ``max_attempts`` bounds how often a job is run before it fails for good.
    """

    def __init__(
        self,
        store: Store | str = "memory://",
        *,
        budget: ByUnitBudget | None = None,
        approval: ToolDispatchHook | None = None,
        lease: float = DEFAULT_JOB_LEASE,
        hold_grace: float = DEFAULT_HOLD_GRACE,
        max_attempts: int = 3,
    ) -> None:
        self._store = store_from_url(store) if isinstance(store, str) else store
        if not isinstance(self._store, Store):
            raise TypeError(f"store must be a Store or a URL, got {type(store).__name__}")
        self._jobs: JobStore = job_store_for(self._store)
        self._budget = budget
        self._approval = approval
        self._lease = check_lease(lease)
        self._grace = check_lease(hold_grace)
        self._max_attempts = _check_attempts(max_attempts)

    @property
    def store(self) -> Store:
        """The store that holds the budget and the job records."""
        return self._store

    @property
    def lease(self) -> float:
        """Seconds a claim lasts without a heartbeat."""
        return self._lease

    # -- submitting ---------------------------------------------------------------------------

    async def submit(
        self,
        payload: Any,
        *,
        cost: Mapping[str, Amount],
        lane: str = "default",
        artifacts: Iterable[Artifact] = (),
        budget: ByUnitBudget | None = None,
        max_attempts: int | None = None,
        principal: str | None = None,
        job_id: str | None = None,
    ) -> Job:
        """Queue a job whose worst case is ``cost`` (by unit) in ``lane``.

        With an approval gate the job is asked about first (``JobRejected`` if refused,
        nothing held). Then the worst case is held at once against ``budget`` (default: the
        queue's), so queued work counts against the cap before it runs: ``BudgetExceeded``
        if it does not fit, and nothing is stored. Bad input raises ``TypeError`` /
        ``ValueError`` before anything happens.
        """
        lane = check_lane(lane)
        checked = check_cost(cost)
        payload_json = dump_json(payload, "payload")
        files = tuple(artifacts)
        for artifact in files:
            if not isinstance(artifact, Artifact):
                raise TypeError(f"artifacts must be Artifact objects, got {artifact!r}")
        attempts = self._max_attempts if max_attempts is None else _check_attempts(max_attempts)
        target = budget if budget is not None else self._budget
        if target is None:
            raise TypeError("a job needs a budget to hold its cost: pass budget= to JobQueue "
                            "or to submit")
        if job_id is None:
            job_id = uuid.uuid4().hex
        elif not isinstance(job_id, str) or not job_id or len(job_id) > 128:
            raise ValueError(f"job_id must be a str of 1-128 characters, got {job_id!r}")
        approved_by = await self._approve(job_id, lane, json.loads(payload_json), checked,
                                          principal)
        hold = await take_hold(target, checked, lease=self._grace, store=self._store)
        spec = {"payload": json.loads(payload_json), "cost": encode_amounts(checked),
                "hold": hold.to_json(), "artifacts": [a.to_json() for a in files],
                "approved_by": approved_by, "principal": principal}
        row = JobRow(job_id, lane, dump_json(spec, "job"), attempts, _wall_time())
        try:
            await self._jobs.add(row)
        except BaseException:
            await release_hold(self._store, hold)
            raise
        if _log.enabled():
            _log.emit("outlay.jobs.submitted", job=job_id, lane=lane, cost=checked,
                      reservation=hold.rid, approved_by=approved_by)
        return Job.from_row(row)

    async def _approve(self, job_id: str, lane: str, payload: Any,
                       cost: Mapping[str, Amount], principal: str | None) -> str | None:
        if self._approval is None:
            return None
        arguments = payload if isinstance(payload, dict) else {"payload": payload}
        invocation = ToolInvocation(job_id, f"job:{lane}", arguments, principal=principal,
                                    metadata={"job_id": job_id, "lane": lane,
                                              "job_cost": dict(cost)})
        action = await self._approval.before_invocation(invocation)
        if not isinstance(action, Continue):
            raise JobRejected(f"job {job_id} was not approved: {action.reason}", job_id=job_id)
        record = action.state
        return record.who if isinstance(record, ApprovalRecord) else None

    # -- working ------------------------------------------------------------------------------

    async def claim(self, lanes: Iterable[str], *, lease: float | None = None) -> Claim | None:
        """Lease the oldest queued job of ``lanes`` to a new claim (atomic: two claims never
        get one job), or ``None`` if there is none. The job's hold is extended to outlive the
        lease; a job whose hold lapsed while it waited fails for good instead of running."""
        wanted = [check_lane(lane) for lane in lanes]
        if not wanted:
            raise ValueError("claim needs at least one lane")
        seconds = self._lease if lease is None else check_lease(lease)
        while True:
            token = uuid.uuid4().hex
            row = await self._jobs.claim(wanted, token, seconds)
            if row is None:
                return None
            job = Job.from_row(row)
            if await extend_hold(self._store, job.hold, seconds + self._grace):
                if _log.enabled():
                    _log.emit("outlay.jobs.claimed", job=job.id, lane=job.lane,
                              attempt=job.attempts)
                return Claim(self, job, token, seconds)
            await self._fail(job, token, "its budget hold lapsed before it ran", retry=False)

    async def recover(self, *, limit: int = 100) -> RecoveryReport:
        """Recover up to ``limit`` jobs whose lease ended: queued again (their hold renewed)
        while attempts are left, else failed with the recorded error and their hold released.
        Jobs left half-settled by a dead process are settled. Safe to run anywhere, any time."""
        requeued = failed = settled = 0
        for row in await self._jobs.recover(self._lease, limit):
            job = Job.from_row(row)
            if row.state == "queued":
                requeued += 1
                await extend_hold(self._store, job.hold, self._grace)
                if _log.enabled():
                    _log.emit("outlay.jobs.requeued", job=job.id, error=job.error)
                continue
            if row.outcome == "failed":
                failed += 1
            else:
                settled += 1
            try:
                await self._settle(row)
            except StoreUnavailable:
                raise
            except Exception as exc:  # this job stays settling; the others are recovered
                _log.warn("outlay.jobs.settle_failed", job=job.id, error=str(exc),
                          error_type=type(exc).__name__)
        return RecoveryReport(requeued, failed, settled)

    async def _complete(self, job: Job, token: str, result: Any,
                        actual: Mapping[str, Amount] | None) -> bool:
        result_json = dump_json(result, "result")
        spent = _check_actual(job.cost, actual)
        if not await self._jobs.finish(job.id, token, result=result_json,
                                       actual=dump_json(encode_amounts(spent), "actual"),
                                       lease=self._lease):
            return False
        with anyio.CancelScope(shield=True):
            await commit_hold(self._store, job.hold, spent)
            await self._jobs.settled(job.id)
        if _log.enabled():
            _log.emit("outlay.jobs.completed", job=job.id, actual=spent, attempt=job.attempts)
        return True

    async def _fail(self, job: Job, token: str, error: str, *, retry: bool) -> bool:
        if not isinstance(error, str) or not error:
            raise TypeError(f"error must be a non-empty str, got {error!r}")
        if retry:  # renew the hold first: once queued, the job's claim is gone
            await extend_hold(self._store, job.hold, self._grace)
        row = await self._jobs.fail(job.id, token, error=error, retry=retry, lease=self._lease)
        if row is None:
            return False
        if row.state == "settling":
            await self._settle(row)
        if _log.enabled():
            _log.emit("outlay.jobs.failed" if row.state != "queued" else "outlay.jobs.requeued",
                      job=job.id, error=row.error, attempt=row.attempts)
        return True

    async def _heartbeat(self, job: Job, token: str, lease: float) -> bool:
        if not await self._jobs.heartbeat(job.id, token, lease):
            return False
        await extend_hold(self._store, job.hold, lease + self._grace)
        return True

    async def _settle(self, row: JobRow) -> None:
        """End the hold of a settling job as its outcome says, then mark it final."""
        job = Job.from_row(row)
        with anyio.CancelScope(shield=True):
            if row.outcome == "completed":
                await commit_hold(self._store, job.hold,
                                  None if row.actual is None else decode_amounts(
                                      json.loads(row.actual)))
            else:
                await release_hold(self._store, job.hold)
            await self._jobs.settled(row.id)

    # -- reading ------------------------------------------------------------------------------

    async def get(self, job_id: str) -> Job:
        """A snapshot of one job; ``UnknownJob`` if there is none."""
        row = await self._jobs.get(job_id)
        if row is None:
            raise UnknownJob(job_id)
        return Job.from_row(row)

    async def jobs(self, state: str | None = None) -> list[Job]:
        """Snapshots of every job (in ``state``), oldest first."""
        if state is not None and state not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)}, got {state!r}")
        return [Job.from_row(row) for row in await self._jobs.rows(state)]

    async def aclose(self) -> None:
        """Close the store."""
        await self._store.aclose()


class Claim:
    """A job leased to one worker. ``complete`` and ``fail`` apply only while the job is still
    leased to this claim: after its lease was recovered they return False and change nothing,
    so a re-run cannot be clobbered."""

    __slots__ = ("_lease", "_queue", "_token", "job")

    def __init__(self, queue: JobQueue, job: Job, token: str, lease: float) -> None:
        self._queue = queue
        self.job = job
        self._token = token
        self._lease = lease

    @property
    def token(self) -> str:
        """This claim's id; the job store knows the lease by it."""
        return self._token

    @property
    def lease(self) -> float:
        """Seconds each heartbeat renews the lease for."""
        return self._lease

    async def heartbeat(self) -> bool:
        """Renew the lease (and the budget hold's lease with it); False if the job is no
        longer leased to this claim."""
        return await self._queue._heartbeat(self.job, self._token, self._lease)

    async def complete(self, result: Any = None,
                       actual: Mapping[str, Amount] | None = None) -> bool:
        """Record ``result`` (JSON data) and settle the hold at ``actual`` (by unit; units left
        out at their worst case). False if the lease was lost; bad input raises before
        anything changes. The settlement runs shielded from cancellation."""
        return await self._queue._complete(self.job, self._token, result, actual)

    async def fail(self, error: str, *, retry: bool = True) -> bool:
        """Record ``error``; the job is queued again if ``retry`` and attempts are left, else it
        fails for good and its hold is released. False if the lease was lost."""
        return await self._queue._fail(self.job, self._token, error, retry=retry)

    def __repr__(self) -> str:
        return f"<Claim {self.job.id} lane={self.job.lane} attempt={self.job.attempts}>"


def _check_attempts(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"max_attempts must be an int >= 1, got {value!r}")
    return value


def _check_actual(cost: Mapping[str, Amount], actual: Mapping[str, Amount] | None
                  ) -> dict[str, Amount]:
    if actual is None:
        return dict(cost)
    checked = check_cost(actual, "actual") if actual else {}
    unknown = sorted(checked.keys() - cost.keys())
    if unknown:
        raise ValueError(f"actual names units the job was not held for: {unknown}")
    for unit, amount in checked.items():
        if isinstance(cost[unit], int) and not isinstance(amount, int):
            raise TypeError(f"unit {unit!r} counts whole units (int); got {amount!r}")
    return {unit: checked.get(unit, held) for unit, held in cost.items()}


def _wall_time() -> float:
    return time.time()
