"""``DispatchBudgetHook``: reserve before each tool call, release or commit after it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import anyio

from .._core import (
    Amount,
    AtomicBudget,
    BudgetExceeded,
    DispatchTerminated,
    KeyedBudget,
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
"""What one invocation costs: ``int`` units on a ``BudgetGuard``, limit key -> amount on a
``KeyedBudget``."""

CostFunction = Callable[[ToolInvocation], Cost]
BudgetMode = Literal["release", "commit"]
OnDenied = Literal["skip", "terminate"]


class DispatchBudgetHook(ToolDispatchHook):
    """Reserve ``cost`` before each invocation; end exactly that hold after it.

    ``guard`` is a ``BudgetGuard`` (``AtomicBudget`` or your own; ``cost`` in ``int`` units) or
    a ``KeyedBudget`` (``cost`` a mapping of limit key -> amount, reserved all-or-nothing). ``cost``
    is a constant or a function of the invocation, evaluated in ``before``; a bad value raises
    ``TypeError`` / ``ValueError`` there and takes nothing.

    ``mode="release"`` gives every hold back when the call ends: the guard caps the cost *in
    flight*. ``mode="commit"`` keeps the hold of every call that completed (a ``BudgetGuard``
    is simply not released; a ``KeyedBudget`` reservation is committed): the guard caps *cumulative*
    spend. Skipped calls, terminated or cancelled dispatches, and failed calls are released in
    both modes, except that ``charge_failures=True`` (commit mode) also charges a call that
    raised or returned an error result - a later hook's exception counts as such a failure.

    ``defaults`` (``KeyedBudget`` only; a mapping or a function of the invocation) gives caps for
    limits created on first use, e.g. one per principal:
    ``cost=lambda inv: {f"user:{inv.principal}/calls": 1}, defaults=lambda inv:
    {f"user:{inv.principal}/calls": 50}``. Without it an unknown key raises ``UnknownLimit``
    from ``before`` (nothing taken).

    When the hold does not fit: ``on_denied="skip"`` (default) skips the call with a reason and
    an error output for the model; ``"terminate"`` stops the run (``DispatchTerminated``).
    """

    __slots__ = ("_atomic", "_budget", "_charge_failures", "_commit", "_cost", "_cost_fn",
                 "_defaults", "_guard", "_name", "_terminate")

    def __init__(
        self,
        guard: BudgetGuard | KeyedBudget,
        cost: Cost | CostFunction,
        *,
        mode: BudgetMode = "release",
        on_denied: OnDenied = "skip",
        charge_failures: bool = False,
        defaults: Mapping[str, Amount] | Callable[[ToolInvocation], Mapping[str, Amount]]
        | None = None,
        name: str | None = None,
    ) -> None:
        if mode not in ("release", "commit"):
            raise ValueError(f"mode must be 'release' or 'commit', got {mode!r}")
        if on_denied not in ("skip", "terminate"):
            raise ValueError(f"on_denied must be 'skip' or 'terminate', got {on_denied!r}")
        if charge_failures and mode != "commit":
            raise ValueError("charge_failures=True needs mode='commit'")
        self._budget: KeyedBudget | None = guard if isinstance(guard, KeyedBudget) else None
        if self._budget is None and not isinstance(guard, BudgetGuard):
            raise TypeError(f"guard must be a BudgetGuard or a KeyedBudget, got "
                            f"{type(guard).__name__}")
        self._guard: BudgetGuard | None = None if isinstance(guard, KeyedBudget) else guard
        if defaults is not None and self._budget is None:
            raise TypeError("defaults needs a KeyedBudget guard")
        self._defaults = defaults
        self._atomic: AtomicBudget | None = guard if isinstance(guard, AtomicBudget) else None
        self._cost_fn: CostFunction | None = None
        self._cost: Cost = 0
        if callable(cost):
            self._cost_fn = cost
        elif self._budget is not None:
            if not isinstance(cost, Mapping) or not cost:
                raise TypeError("a KeyedBudget needs cost as a non-empty mapping of limit key -> "
                                "amount (or a function returning one)")
            self._cost = dict(cost)
        else:
            self._cost = check_count(cost, "cost")
        self._commit = mode == "commit"
        self._terminate = on_denied == "terminate"
        self._charge_failures = charge_failures
        self._name = name or getattr(guard, "_name", None) or type(guard).__name__

    async def before_invocation(self, invocation: ToolInvocation) -> Continue | Skip | Terminate:
        """Hold the invocation's cost; ``Skip``/``Terminate`` with a reason if it does not fit."""
        cost = self._cost if self._cost_fn is None else self._cost_fn(invocation)
        if self._budget is not None:
            if not isinstance(cost, Mapping):
                raise TypeError(f"cost for a KeyedBudget must be a mapping, got {cost!r}")
            defaults = self._defaults
            if callable(defaults):
                defaults = defaults(invocation)
            try:
                reservation = await self._budget.reserve(cost, defaults=defaults)
            except BudgetExceeded as exc:
                return refuse(invocation, exc.reason, terminate=self._terminate)
            return Continue(reservation)
        if type(cost) is not int or cost < 0:
            check_count(cost, "cost")
        atomic = self._atomic
        if atomic is not None:
            admitted = atomic.try_reserve_nowait(cost)  # type: ignore[arg-type]
        else:
            assert self._guard is not None
            admitted = await self._guard.try_reserve(cost)  # type: ignore[arg-type]
        if not admitted:
            available = "" if atomic is None else f" ({atomic.available} of {atomic.capacity} left)"
            return refuse(invocation, f"budget {self._name!r} cannot cover cost {cost}{available}",
                          terminate=self._terminate)
        return Continue(cost)

    async def after_invocation(
        self, invocation: ToolInvocation, result: ToolInvocationResult, state: Any
    ) -> None:
        """Commit a completed call in commit mode; release everything else."""
        if state is None:
            return
        keep = self._commit and not result.skipped and (
            self._charge_failures or not result.is_error)
        if not keep and self._atomic is not None:  # the hot path, without another coroutine
            self._atomic.release_nowait(state)
            return
        await self._end(state, keep)

    async def on_invocation_error(
        self, invocation: ToolInvocation, error: BaseException, state: Any
    ) -> None:
        """Release (or, with ``charge_failures``, commit unless terminated or cancelled)."""
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
        mode = "commit" if self._commit else "release"
        return f"<DispatchBudgetHook {self._name} mode={mode}>"
