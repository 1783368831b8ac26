"""``Router``: reads the budgets, asks the pure ``select_backend``, holds, runs, falls back."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Generic, TypeVar

import anyio

from .._core import BudgetExceeded, ConfigurationError, NoRoute, check_money, log
from ._budget import RemainingBudget, RouteBudget, plain, read_remaining
from ._decision import RouteDecision
from ._model import Backend, Ladder, Work
from ._select import Order, select_backend

__all__ = ("RouteChoice", "Routed", "Router")

T = TypeVar("T")


@dataclass(slots=True)
class RouteChoice:
    """What ``Router.run`` hands the call: the chosen ``backend``, its worst case
    ``estimate`` and the ``decision``. ``report(actual)`` sets what the work really cost
    (default: the estimate), which is what a held reservation is committed at."""

    backend: Backend
    estimate: Decimal
    decision: RouteDecision
    actual: Decimal | None = field(default=None)

    def report(self, actual: Decimal) -> None:
        """Record the actual cost (``Decimal``; above the estimate is recorded, never lost)."""
        self.actual = check_money(actual, "actual")


@dataclass(frozen=True, slots=True)
class Routed(Generic[T]):
    """The result of ``Router.run``: the call's ``value``, the ``backend`` that produced it,
    what was ``charged`` to its budget (``None`` when nothing was held) and every decision
    taken on the way (one per attempt; earlier ones ended in a fallback)."""

    value: T
    backend: Backend
    charged: Decimal | None
    decisions: tuple[RouteDecision, ...]

    @property
    def decision(self) -> RouteDecision:
        return self.decisions[-1]


class Router:
    """Picks where work runs: the first eligible candidate that the budget charged for it can
    afford, and falls back to the next on a provider error.

    ``candidates`` are ``Backend``s with unique names, tried in ``order`` (``"kind"``: LOCAL,
    LAN, CLOUD, SDK; ``"listed"``: as given). ``budget`` is the by-unit budget charged for a
    candidate that names none of its own; ``unit`` is the money unit held (``"usd"``).
    ``allow_sdk`` is the default for SDK backends (off). ``ladder`` steps down by what remains
    of ``budget``. ``fallback_on`` are the exceptions of a call that mean "try the next one"
    (a cancellation never does). Every decision is logged (``outlay.route.chosen``, the warnings
    ``outlay.route.none`` and ``outlay.route.fallback``). Raises ``ConfigurationError`` for
    duplicate names, a ladder naming an unknown candidate or a ladder without a budget.
    """

    def __init__(
        self,
        candidates: Iterable[Backend],
        *,
        budget: RouteBudget | None = None,
        unit: str = "usd",
        allow_sdk: bool = False,
        order: Order = "kind",
        ladder: Ladder | None = None,
        fallback_on: tuple[type[BaseException], ...] = (Exception,),
    ) -> None:
        self._candidates = tuple(candidates)
        if not self._candidates:
            raise ConfigurationError("a router needs at least one candidate")
        names: set[str] = set()
        for backend in self._candidates:
            if not isinstance(backend, Backend):
                raise TypeError(f"candidates must be Backend, got {type(backend).__name__}")
            if backend.name in names:
                raise ConfigurationError(f"two candidates are named {backend.name!r}")
            names.add(backend.name)
        if order not in ("kind", "listed"):
            raise ValueError(f"order must be 'kind' or 'listed', got {order!r}")
        if ladder is not None:
            if not isinstance(ladder, Ladder):
                raise TypeError(f"ladder must be a Ladder, got {type(ladder).__name__}")
            ladder.check(names)
            if budget is None:
                raise ConfigurationError("a ladder steps by what remains of the router's "
                                         "budget; pass budget=")
        if not isinstance(unit, str) or not unit:
            raise TypeError(f"unit must be a non-empty str, got {unit!r}")
        self._budget = budget
        self._unit = unit
        self._allow_sdk = bool(allow_sdk)
        self._order: Order = order
        self._ladder = ladder
        self._fallback_on = fallback_on

    @property
    def candidates(self) -> tuple[Backend, ...]:
        return self._candidates

    @property
    def budget(self) -> RouteBudget | None:
        return self._budget

    @property
    def unit(self) -> str:
        return self._unit

    def budget_for(self, backend: Backend) -> RouteBudget | None:
        """The budget charged for ``backend``: its own, else the router's."""
        return backend.budget if backend.budget is not None else self._budget

    def replace(self, candidates: Iterable[Backend]) -> Router:
        """A router like this one over other candidates (e.g. accelerators that became free)."""
        return Router(candidates, budget=self._budget, unit=self._unit,
                      allow_sdk=self._allow_sdk, order=self._order, ladder=self._ladder,
                      fallback_on=self._fallback_on)

    def for_models(self, models: Mapping[str, Any], kind: type,
                   what: str) -> tuple[Router, dict[str, Any]]:
        """This router narrowed to the candidates ``models`` names (candidate name -> model
        object of ``kind``, described as ``what`` in errors), and the models as a dict.
        ``TypeError`` for an empty mapping or a wrong object, ``ConfigurationError`` for a
        name no candidate has. The routed framework models are built on it."""
        if not isinstance(models, Mapping) or not models:
            raise TypeError("models must be a non-empty mapping candidate name -> Model")
        unknown = sorted(set(models) - {b.name for b in self._candidates})
        if unknown:
            raise ConfigurationError(f"models for unknown candidates {unknown}")
        for name, model in models.items():
            if not isinstance(model, kind):
                raise TypeError(f"models[{name!r}] must be {what}, got {model!r}")
        return self.replace([b for b in self._candidates if b.name in models]), dict(models)

    async def _snapshot(self) -> tuple[dict[str, RemainingBudget], RemainingBudget | None]:
        read: dict[int, RemainingBudget] = {}
        by_name: dict[str, RemainingBudget] = {}
        for backend in self._candidates:
            budget = self.budget_for(backend)
            if budget is None:
                continue
            key = id(budget)
            if key not in read:
                read[key] = await read_remaining(budget, self._unit)
            by_name[backend.name] = read[key]
        own: RemainingBudget | None = None
        if self._budget is not None:
            own = read.get(id(self._budget)) or await read_remaining(self._budget, self._unit)
        return by_name, own

    async def decide(
        self,
        work: Work,
        *,
        allow_sdk: bool | None = None,
        failed: dict[str, str] | None = None,
    ) -> RouteDecision:
        """Read what remains of every budget involved and decide (``select_backend``); log it.

        Holds nothing, so the answer can be stale by the time anything is reserved. Raises
        ``NoRoute`` (its ``decision`` lists every candidate and why) when nothing is eligible.
        ``failed`` maps candidates already out to the reason.
        """
        if not isinstance(work, Work):
            raise TypeError(f"work must be a Work, got {type(work).__name__}")
        budgets, remaining = await self._snapshot()
        decision = select_backend(self._candidates, work,
                          allow_sdk=self._allow_sdk if allow_sdk is None else allow_sdk,
                          order=self._order, budgets=budgets, failed=failed,
                          ladder=self._ladder, remaining=remaining, unit=self._unit)
        if decision.chosen is None:
            log.warn("outlay.route.none", **decision.fields())
            raise NoRoute(decision)
        log.emit("outlay.route.chosen", **decision.fields())
        return decision

    async def run(
        self,
        work: Work,
        call: Callable[[RouteChoice], Awaitable[T]],
        *,
        allow_sdk: bool | None = None,
        hold: bool = True,
        fallback_on: tuple[type[BaseException], ...] | None = None,
    ) -> Routed[T]:
        """Decide, then ``await call(choice)`` on the chosen backend; on an exception in
        ``fallback_on`` (or ``BudgetExceeded``) decide again without it, re-reading every
        budget, until one succeeds or ``NoRoute`` is raised from the last error.

        With ``hold=True`` the chosen candidate's worst case is reserved on *its* budget
        before the call (a refused hold is a fallback too), committed at ``choice.actual``
        after it, and released if the call fails or is cancelled. ``hold=False`` only checks:
        use it when ``call`` reserves on its own (a budgeted client). A free candidate holds
        nothing and is never refused for money. ``fallback_on`` replaces the router's for this
        call (an integration names its framework's provider errors).
        """
        retry_on = self._fallback_on if fallback_on is None else fallback_on
        failed: dict[str, str] = {}
        decisions: list[RouteDecision] = []
        last: BaseException | None = None
        while True:
            try:
                decision = await self.decide(work, allow_sdk=allow_sdk, failed=failed)
            except NoRoute as exc:
                if last is None:
                    raise
                raise exc from last
            decisions.append(decision)
            backend, estimate = decision.chosen, decision.cost
            assert backend is not None
            assert estimate is not None
            budget = self.budget_for(backend)
            reservation = None
            if hold and estimate and budget is not None:
                reservation = await budget.try_reserve({self._unit: estimate})
                if reservation is None:
                    failed[backend.name] = (f"its budget refused the hold of {plain(estimate)} "
                                            f"{self._unit} (spent meanwhile)")
                    continue
            choice = RouteChoice(backend, estimate, decision)
            try:
                value = await call(choice)
            except BaseException as exc:
                if reservation is not None:
                    await reservation.release()
                if isinstance(exc, anyio.get_cancelled_exc_class()):
                    raise
                if isinstance(exc, BudgetExceeded):
                    failed[backend.name] = f"its budget refused the call: {exc.reason}"
                elif isinstance(exc, retry_on):
                    failed[backend.name] = f"failed with {type(exc).__name__}; fell back"
                else:
                    raise
                log.warn("outlay.route.fallback", work=work.describe(), candidate=backend.name,
                          error_type=type(exc).__name__)
                last = exc
                continue
            charged: Decimal | None = None
            if reservation is not None:
                charged = estimate if choice.actual is None else choice.actual
                await reservation.commit({self._unit: charged})
            return Routed(value, backend, charged, tuple(decisions))

    def __repr__(self) -> str:
        names = ", ".join(f"{b.name}:{b.kind}" for b in self._candidates)
        return f"<Router [{names}] order={self._order} allow_sdk={self._allow_sdk}>"



class RoutedCalls(Generic[T]):
    """What a routed client or model keeps beside its calls: the router (``router``), the
    latest completed decision (``last``) and the ``on_decision`` observer of every one."""

    def _route_through(self, router: Router,
                       on_decision: Callable[[Routed[T]], object] | None) -> None:
        self._router = router
        self._on_decision = on_decision
        self.last: Routed[T] | None = None

    @property
    def router(self) -> Router:
        return self._router

    def _done(self, routed: Routed[T]) -> T:
        """Record a completed decision (``last``, ``on_decision``); its value."""
        self.last = routed
        if self._on_decision is not None:
            self._on_decision(routed)
        return routed.value


def check_router(router: object) -> Router:
    """``router``, or a ``TypeError`` if it is not a ``Router``."""
    if not isinstance(router, Router):
        raise TypeError(f"router must be a Router, got {type(router).__name__}")
    return router
