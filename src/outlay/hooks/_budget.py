"""``DispatchBudgetHook``: reserve before each tool call; charge it or give it back after."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import anyio

from .._core import (
    Amount,
    AtomicBudget,
    Budget,
    BudgetExceeded,
    DispatchTerminated,
    Principals,
    Reservation,
    check_count,
)
from .._protocols import BudgetGuard
from ._types import (
    Continue,
    Skip,
    Terminate,
    ToolDispatchHook,
    ToolInvocation,
    ToolInvocationResult,
    refuse,
)

Cost = int | Mapping[str, Amount]
"""What one invocation costs: amounts by unit on a ``Budget`` (``{"tool_calls": 1}``), ``int``
units on a ``BudgetGuard``."""

CostFunction = Callable[[ToolInvocation], Cost]
BudgetMode = Literal["charge", "in_flight"]
OnDenied = Literal["skip", "terminate"]

_ONE_CALL: Mapping[str, Amount] = {"tool_calls": 1}


class DispatchBudgetHook(ToolDispatchHook):
    """Reserve ``cost`` before each invocation; end exactly that hold after it.

    ``budget`` is the budget object (``Budget``; ``cost`` by unit, default
    ``{"tool_calls": 1}``, reserved all-or-nothing over every limit and window of the unit in
    one store call), ``Principals`` (the budget of ``invocation.principal``), or a
    ``BudgetGuard`` such as ``AtomicBudget`` (``cost`` in ``int`` units, default 1). ``cost``
    is a constant or a function of the invocation, evaluated in ``before``; a bad value raises
    ``TypeError`` / ``ValueError`` there and takes nothing.

    ``mode="charge"`` (the default) keeps the hold of every call that completed (a guard is
    not given it back; a ``Budget`` reservation is committed): the budget caps *cumulative*
    spend. Holding only what is in flight is asked for by name: ``mode="in_flight"`` gives
    every hold back when the call ends (a concurrency cap). Skipped calls, terminated or
    cancelled dispatches and failed calls are given back in both modes, except that
    ``charge_failures=True`` (charge mode) also charges a call that raised or returned an
    error result - a later hook's exception counts as such a failure.

    When the hold does not fit: ``on_denied="skip"`` (default) skips the call with the
    refusal's reason and an error output for the model; ``"terminate"`` stops the run
    (``DispatchTerminated``).
    """

    __slots__ = ("_atomic", "_budget", "_charge", "_charge_failures", "_cost", "_cost_fn",
                 "_guard", "_name", "_principals", "_terminate")

    def __init__(
        self,
        budget: Budget | Principals | BudgetGuard,
        cost: Cost | CostFunction | None = None,
        *,
        mode: BudgetMode = "charge",
        on_denied: OnDenied = "skip",
        charge_failures: bool = False,
        name: str | None = None,
    ) -> None:
        if mode not in ("charge", "in_flight"):
            raise ValueError(f"mode must be 'charge' or 'in_flight', got {mode!r}")
        if on_denied not in ("skip", "terminate"):
            raise ValueError(f"on_denied must be 'skip' or 'terminate', got {on_denied!r}")
        if charge_failures and mode != "charge":
            raise ValueError("charge_failures=True needs mode='charge'")
        self._budget = budget if isinstance(budget, Budget) else None
        self._principals = budget if isinstance(budget, Principals) else None
        by_unit = self._budget is not None or self._principals is not None
        if not by_unit and not isinstance(budget, BudgetGuard):
            raise TypeError(f"budget must be a Budget, Principals or a BudgetGuard, got "
                            f"{type(budget).__name__}")
        self._guard = budget if not isinstance(budget, Budget | Principals) else None
        self._atomic: AtomicBudget | None = budget if isinstance(budget, AtomicBudget) else None
        self._cost_fn: CostFunction | None = None
        self._cost: Cost = 0
        if cost is None:
            self._cost = dict(_ONE_CALL) if by_unit else 1
        elif callable(cost):
            self._cost_fn = cost
        elif by_unit:
            if not isinstance(cost, Mapping) or not cost:
                raise TypeError("a Budget needs cost as a non-empty mapping of unit -> amount "
                                "(or a function returning one)")
            self._cost = dict(cost)
        else:
            self._cost = check_count(cost, "cost")
        self._charge = mode == "charge"
        self._terminate = on_denied == "terminate"
        self._charge_failures = charge_failures
        self._name = name or getattr(budget, "_name", None) or getattr(
            budget, "path", None) or type(budget).__name__

    async def before_invocation(self, invocation: ToolInvocation) -> Continue | Skip | Terminate:
        """Hold the invocation's cost; ``Skip``/``Terminate`` with a reason if it does not fit."""
        cost = self._cost if self._cost_fn is None else self._cost_fn(invocation)
        if self._guard is None:
            if not isinstance(cost, Mapping):
                raise TypeError(f"cost for a Budget must be a mapping of unit -> amount, "
                                f"got {cost!r}")
            budget = self._budget
            if budget is None:
                assert self._principals is not None
                if invocation.principal is None:
                    raise ValueError(f"invocation {invocation.call_id!r} names no principal; "
                                     "a Principals budget hook needs one")
                budget = self._principals.get(invocation.principal)
            try:
                reservation = await budget.reserve(cost)
            except BudgetExceeded as exc:
                return refuse(invocation, exc.reason, terminate=self._terminate)
            return Continue(reservation)
        if type(cost) is not int or cost < 0:
            check_count(cost, "cost")
        atomic = self._atomic
        if atomic is not None:
            admitted = atomic.try_reserve_nowait(cost)  # type: ignore[arg-type]
        else:
            admitted = await self._guard.try_reserve(cost)  # type: ignore[arg-type]
        if not admitted:
            return refuse(invocation, self._guard_refusal(cost).reason,  # type: ignore[arg-type]
                          terminate=self._terminate)
        return Continue(cost)

    def _guard_refusal(self, cost: int) -> BudgetExceeded:
        atomic = self._atomic
        if atomic is None:
            return BudgetExceeded(unit=None, requested=cost, key=self._name)
        return BudgetExceeded(unit=None, requested=cost, key=self._name, cap=atomic.capacity,
                              spent=0, held=atomic.capacity - atomic.available)

    async def after_invocation(
        self, invocation: ToolInvocation, result: ToolInvocationResult, state: Any
    ) -> None:
        """Charge a completed call in charge mode; give everything else back."""
        if state is None:
            return
        keep = self._charge and not result.skipped and (
            self._charge_failures or not result.is_error)
        if not keep and self._atomic is not None:  # the hot path, without another coroutine
            self._atomic.release_nowait(state)
            return
        await self._end(state, keep)

    async def on_invocation_error(
        self, invocation: ToolInvocation, error: BaseException, state: Any
    ) -> None:
        """Give back (or, with ``charge_failures``, charge unless terminated or cancelled)."""
        if state is None:
            return
        keep = self._charge_failures and not isinstance(
            error, DispatchTerminated | anyio.get_cancelled_exc_class())
        await self._end(state, keep)

    async def _end(self, state: Any, keep: bool) -> None:
        if isinstance(state, Reservation):
            if keep:
                await state.commit()
            else:
                await state.release()
            return
        if keep:
            return
        if self._atomic is not None:
            self._atomic.release_nowait(state)
            return
        assert self._guard is not None
        with anyio.CancelScope(shield=True):
            await self._guard.release(state)

    def __repr__(self) -> str:
        mode = "charge" if self._charge else "in_flight"
        return f"<DispatchBudgetHook {self._name} mode={mode}>"
