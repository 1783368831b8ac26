"""``ApprovalHook``: expensive invocations wait for a human (or policy) decision, kept as audit.

The hook asks an ``Approver`` (a protocol; ``ApprovalQueue`` is the in-process one a UI task
drives) and records every decision as an immutable ``ApprovalRecord`` in an
``ApprovalAuditSink`` (``MemoryApprovalLog`` keeps them in memory) and as structlog events.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, Protocol, runtime_checkable

import anyio
import anyio.lowlevel

from .._core import Amount, ApprovalNotPending, check_amount, log
from ._types import (
    CONTINUE,
    Continue,
    Skip,
    Terminate,
    ToolDispatchHook,
    ToolInvocation,
    refuse,
)

Clock = Callable[[], datetime]
"""Returns the current time; must be timezone-aware."""

AmountFunction = Callable[[ToolInvocation], Amount]
OnRejected = Literal["skip", "terminate"]

SYSTEM_WHO = "outlay"
"""The ``who`` of a rejection outlay made itself (the approval timed out)."""


def utc_now() -> datetime:
    """The default clock: the current UTC time, timezone-aware."""
    return datetime.now(UTC)


def _check_text(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}: {value!r}")
    if not value.strip():
        raise ValueError(f"{name} must not be empty: an approval decision records who made it "
                         "and why")
    return value


def _check_time(value: object, name: str) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, got {type(value).__name__}: {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {value.isoformat()}; "
                         "use datetime.now(timezone.utc)")
    return value


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    """What an approver is asked: may ``invocation`` (costing ``cost``, above ``threshold``)
    run? ``expires_at`` is when the hook stops waiting and rejects (``None``: never)."""

    request_id: str
    invocation: ToolInvocation
    cost: Amount
    threshold: Amount
    requested_at: datetime
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ApprovalDecision:
    """An approver's answer. ``who`` and ``why`` must be non-empty ``str`` (``ValueError`` /
    ``TypeError`` otherwise). ``decided_at`` (timezone-aware) defaults to the hook's clock when
    the hook receives the decision."""

    approved: bool
    who: str
    why: str
    decided_at: datetime | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.approved, bool):
            raise TypeError(f"approved must be a bool, got {self.approved!r}")
        _check_text(self.who, "who")
        _check_text(self.why, "why")
        if self.decided_at is not None:
            _check_time(self.decided_at, "decided_at")

    @classmethod
    def approve(cls, who: str, why: str, *, decided_at: datetime | None = None
                ) -> ApprovalDecision:
        """An approval by ``who`` because ``why``."""
        return cls(True, who, why, decided_at)

    @classmethod
    def reject(cls, who: str, why: str, *, decided_at: datetime | None = None
               ) -> ApprovalDecision:
        """A rejection by ``who`` because ``why``."""
        return cls(False, who, why, decided_at)


@dataclass(frozen=True, slots=True)
class ApprovalRecord:
    """The audit fact of one decision: who decided, when, why, approved or rejected, about which
    call and cost. Immutable; empty ``who``/``why`` and naive timestamps are refused
    (``ValueError``). ``timed_out`` marks a rejection outlay made because nobody answered in
    time (``who == "outlay"``). Arguments are not copied into the record."""

    request_id: str
    call_id: str
    tool_name: str
    principal: str | None
    cost: Amount
    threshold: Amount
    approved: bool
    who: str
    why: str
    requested_at: datetime
    decided_at: datetime
    timed_out: bool = False

    def __post_init__(self) -> None:
        _check_text(self.request_id, "request_id")
        _check_text(self.who, "who")
        _check_text(self.why, "why")
        _check_time(self.requested_at, "requested_at")
        _check_time(self.decided_at, "decided_at")
        check_amount(self.cost, "cost")
        check_amount(self.threshold, "threshold")
        if not isinstance(self.approved, bool):
            raise TypeError(f"approved must be a bool, got {self.approved!r}")


@runtime_checkable
class Approver(Protocol):
    """Decides approval requests. ``request_approval`` may wait as long as it likes: the hook
    bounds the wait with its ``timeout`` by cancelling the call, so an implementation must
    withdraw the request (leave nothing pending) when cancelled. An exception it raises
    propagates out of the dispatch (fail closed: the tool does not run)."""

    async def request_approval(self, request: ApprovalRequest) -> ApprovalDecision:
        """Return the decision for ``request``."""
        ...


@runtime_checkable
class ApprovalAuditSink(Protocol):
    """Stores approval records (a database table, an append-only file, ...). ``record`` is
    called shielded from cancellation; an exception propagates out of the dispatch and the
    tool does not run (an unrecorded approval is not an approval)."""

    async def record(self, record: ApprovalRecord) -> None:
        """Persist ``record``."""
        ...


class MemoryApprovalLog:
    """An ``ApprovalAuditSink`` that keeps every record in memory, in decision order."""

    __slots__ = ("_records",)

    def __init__(self) -> None:
        self._records: list[ApprovalRecord] = []

    async def record(self, record: ApprovalRecord) -> None:
        """Append ``record`` (``TypeError`` for anything else)."""
        if not isinstance(record, ApprovalRecord):
            raise TypeError(f"expected an ApprovalRecord, got {type(record).__name__}")
        self._records.append(record)

    @property
    def records(self) -> tuple[ApprovalRecord, ...]:
        """Every record so far, oldest first."""
        return tuple(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def __repr__(self) -> str:
        return f"<MemoryApprovalLog records={len(self._records)}>"


@dataclass(slots=True)
class _Pending:
    request: ApprovalRequest
    event: anyio.Event
    decision: ApprovalDecision | None = None
    handed_out: bool = field(default=False)


class ApprovalQueue:
    """An in-process ``Approver``: requests wait here until a person or UI task decides them.

    The deciding side lists ``pending()`` requests (oldest first) or awaits ``next_request()``,
    then calls ``approve(request_id, who=..., why=...)`` / ``reject(...)``. A request leaves the
    queue when it is decided, or when its waiting dispatch times out or is cancelled (then
    deciding it raises ``ApprovalNotPending``). Use it from the event loop it waits in (from a
    worker thread, go through ``anyio.from_thread.run_sync``).
    """

    __slots__ = ("_arrived", "_pending")

    def __init__(self) -> None:
        self._pending: dict[str, _Pending] = {}
        self._arrived: anyio.Event | None = None

    async def request_approval(self, request: ApprovalRequest) -> ApprovalDecision:
        """Queue ``request`` and wait for its decision. Cancelled: the request is withdrawn.

        A decision that lands in the same instant as the cancellation is dropped (the tool does
        not run) and reported as the warning event ``outlay.approval.decision_dropped``.
        """
        if request.request_id in self._pending:
            raise ValueError(f"approval request {request.request_id!r} is already pending")
        entry = _Pending(request, anyio.Event())
        self._pending[request.request_id] = entry
        arrived, self._arrived = self._arrived, None
        if arrived is not None:
            arrived.set()
        try:
            await entry.event.wait()
        except BaseException:
            decision = entry.decision
            if decision is not None:
                log.warn("outlay.approval.decision_dropped", request_id=request.request_id,
                          call_id=request.invocation.call_id, tool=request.invocation.tool_name,
                          approved=decision.approved, who=decision.who)
            raise
        finally:
            self._pending.pop(request.request_id, None)
        assert entry.decision is not None
        return entry.decision

    def pending(self) -> tuple[ApprovalRequest, ...]:
        """The requests waiting for a decision, oldest first."""
        return tuple(entry.request for entry in self._pending.values())

    def get(self, request_id: str) -> ApprovalRequest:
        """The pending request with this id; ``ApprovalNotPending`` if there is none."""
        entry = self._pending.get(request_id)
        if entry is None:
            raise ApprovalNotPending(request_id)
        return entry.request

    async def next_request(self) -> ApprovalRequest:
        """Wait for, and return, the oldest pending request not yet returned by this method.

        Each request is handed out once; a request withdrawn before it was handed out is never
        returned. Cancelling this wait loses nothing.
        """
        while True:
            for entry in self._pending.values():
                if not entry.handed_out:
                    entry.handed_out = True
                    return entry.request
            if self._arrived is None:
                self._arrived = anyio.Event()
            await self._arrived.wait()

    def decide(self, request_id: str, decision: ApprovalDecision) -> None:
        """Deliver ``decision`` to the waiting request; ``ApprovalNotPending`` if none waits."""
        if not isinstance(decision, ApprovalDecision):
            raise TypeError(f"decision must be an ApprovalDecision, got {decision!r}")
        entry = self._pending.pop(request_id, None)
        if entry is None:
            raise ApprovalNotPending(request_id)
        entry.decision = decision
        entry.event.set()

    def approve(self, request_id: str, *, who: str, why: str) -> ApprovalDecision:
        """Approve a pending request; returns the decision delivered. Empty ``who``/``why``:
        ``ValueError`` (the request stays pending); unknown id: ``ApprovalNotPending``."""
        decision = ApprovalDecision.approve(who, why)
        self.decide(request_id, decision)
        return decision

    def reject(self, request_id: str, *, who: str, why: str) -> ApprovalDecision:
        """Reject a pending request; same errors as ``approve``."""
        decision = ApprovalDecision.reject(who, why)
        self.decide(request_id, decision)
        return decision

    def __len__(self) -> int:
        return len(self._pending)

    def __repr__(self) -> str:
        return f"<ApprovalQueue pending={len(self._pending)}>"


class ApprovalHook(ToolDispatchHook):
    """Invocations costing more than ``threshold`` wait for ``approver``'s decision.

    ``cost`` is an amount (``int`` or ``Decimal``, never ``float``) or a function of the
    invocation returning one, checked in ``before`` (``TypeError``/``ValueError``). A cost at or
    below ``threshold`` continues at once and records nothing. Above it, an ``ApprovalRequest``
    goes to ``approver``; every decision becomes an ``ApprovalRecord`` in ``audit`` (if given;
    shielded from cancellation) and an event ``outlay.approval.approved`` / ``rejected``.

    ``timeout`` (seconds, default 300; ``None`` waits forever): no decision in time is a
    rejection by ``"outlay"`` (``timed_out=True``); the approver's call is cancelled, so the
    request is withdrawn. Rejected: ``on_rejected="skip"`` (default) skips the tool with the
    reason as an error output for the model; ``"terminate"`` stops the run
    (``DispatchTerminated``). If the dispatch is cancelled while waiting, nothing is recorded
    (no decision was made), ``outlay.approval.cancelled`` is emitted and the cancellation
    propagates; a decision that already arrived is recorded (shielded) and the tool does not
    start. An approver or audit sink that raises propagates (the tool does not run).
    ``clock`` returns timezone-aware datetimes (injectable for tests).

    In ``dispatch_batch`` the ``before`` chains run one call after another, so the approvals of
    one batch are asked one after another.
    """

    __slots__ = ("_approver", "_audit", "_clock", "_cost", "_cost_fn", "_terminate",
                 "_threshold", "_timeout")

    def __init__(
        self,
        approver: Approver,
        *,
        threshold: Amount,
        cost: Amount | AmountFunction,
        timeout: float | None = 300.0,
        on_rejected: OnRejected = "skip",
        audit: ApprovalAuditSink | None = None,
        clock: Clock = utc_now,
    ) -> None:
        if not isinstance(approver, Approver):
            raise TypeError(f"approver must implement request_approval, got {approver!r}")
        if audit is not None and not isinstance(audit, ApprovalAuditSink):
            raise TypeError(f"audit must implement record, got {audit!r}")
        if on_rejected not in ("skip", "terminate"):
            raise ValueError(f"on_rejected must be 'skip' or 'terminate', got {on_rejected!r}")
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, int | float):
                raise TypeError(f"timeout must be seconds (a number) or None, got {timeout!r}")
            if not timeout > 0:
                raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        self._approver = approver
        self._audit = audit
        self._threshold = check_amount(threshold, "threshold")
        self._cost_fn: AmountFunction | None = None
        self._cost: Amount = 0
        if callable(cost):
            self._cost_fn = cost
        else:
            self._cost = check_amount(cost, "cost")
        self._timeout = timeout
        self._terminate = on_rejected == "terminate"
        self._clock = clock

    @property
    def threshold(self) -> Amount:
        """Costs strictly above this need approval."""
        return self._threshold

    async def before_invocation(self, invocation: ToolInvocation) -> Continue | Skip | Terminate:
        """Continue cheap calls; ask, record and act on the decision for expensive ones."""
        cost = self._cost if self._cost_fn is None else check_amount(
            self._cost_fn(invocation), "cost")
        if cost <= self._threshold:
            return CONTINUE
        requested_at = _check_time(self._clock(), "clock()")
        expires_at = None if self._timeout is None else requested_at + timedelta(
            seconds=self._timeout)
        request = ApprovalRequest(uuid.uuid4().hex, invocation, cost, self._threshold,
                                  requested_at, expires_at)
        logging = log.enabled()  # build event fields only for a configured structlog
        fields: dict[str, Any] = {}
        if logging:
            fields = {"request_id": request.request_id, "call_id": invocation.call_id,
                      "tool": invocation.tool_name, "principal": invocation.principal,
                      "cost": _text(cost), "threshold": _text(self._threshold)}
            log.emit("outlay.approval.requested", **fields,
                      expires_at=None if expires_at is None else expires_at.isoformat())
        decision: ApprovalDecision | None = None
        try:
            with anyio.move_on_after(self._timeout):
                decision = await self._approver.request_approval(request)
        except anyio.get_cancelled_exc_class():
            if logging:
                log.emit("outlay.approval.cancelled", **fields)
            raise
        except Exception as exc:
            if logging:
                log.warn("outlay.approval.failed", **fields, error_type=type(exc).__name__)
            raise
        timed_out = decision is None
        if decision is None:
            decision = ApprovalDecision.reject(
                SYSTEM_WHO, f"no approval decision within {self._timeout:g} s")
        elif not isinstance(decision, ApprovalDecision):
            raise TypeError(f"{type(self._approver).__name__}.request_approval returned "
                            f"{decision!r}, not an ApprovalDecision")
        decided_at = decision.decided_at
        if decided_at is None:
            decided_at = _check_time(self._clock(), "clock()")
        record = ApprovalRecord(
            request.request_id, invocation.call_id, invocation.tool_name, invocation.principal,
            cost, self._threshold, decision.approved, decision.who, decision.why, requested_at,
            decided_at, timed_out)
        if self._audit is not None:
            with anyio.CancelScope(shield=True):
                await self._audit.record(record)
        if logging:
            log.emit("outlay.approval.approved" if record.approved else "outlay.approval.rejected",
                      **fields, who=record.who, why=record.why,
                      decided_at=decided_at.isoformat(), timed_out=timed_out)
        if record.approved:
            # A cancellation that arrived while the decision was recorded lands here, before
            # the tool can start.
            await anyio.lowlevel.checkpoint_if_cancelled()
            return Continue(record)
        return refuse(invocation, f"approval rejected by {record.who}: {record.why}",
                      terminate=self._terminate)

    def __repr__(self) -> str:
        return (f"<ApprovalHook threshold={_text(self._threshold)} "
                f"approver={type(self._approver).__name__}>")


def _text(amount: Amount) -> str:
    return str(amount) if isinstance(amount, Decimal) else f"{amount}"
