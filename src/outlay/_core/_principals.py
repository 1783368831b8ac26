"""Budgets per principal (user, tenant, agent, tool), nested and windowed, over one store.

A principal is named ``kind:name`` (``tenant:acme``); a child carved from a parent has the path
``tenant:acme/agent:planner``. Each principal has caps (``LimitSpec``: a unit, a window and a
cap). A reservation of ``{"usd": Decimal("0.10"), "tokens": 4000}`` turns into one limit key per
principal in the chain (the principal and every ancestor), per window capping that unit::

    tenant:acme/usd/month:2026-11
    tenant:acme/agent:planner/usd/run:7f3a...

and all of them are reserved in one store call, all-or-nothing: a child can never spend past any
ancestor. Limits are created on first use from the principal's caps (``defaults=``) and carry
their period end (``expire_at=``), so a new period starts fresh with no sweeper.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType, TracebackType
from typing import Self

from .._ledger import UsageLedger
from ..stores import LimitUsage, Store
from . import _log
from ._amounts import Amount, check_amount
from ._exceptions import BudgetExceeded, ConfigurationError, UnknownLimit
from ._money import AdmissionDecision, BudgetCap, WindowState, admits, check_money, over_cap_reason
from ._reservation import DEFAULT_LEASE, Budget, Reservation, ReserveContext
from ._windows import Window

__all__ = ("LimitKey", "LimitSpec", "PrincipalBudget", "PrincipalReservation",
           "Principals", "money_limits", "parse_limit_key")

_PRINCIPAL = re.compile(r"^[a-z][a-z0-9_]*:[^/\s]+$")
_UNIT = re.compile(r"^[a-z][a-z0-9_.-]*$")


def _check_principal(name: object) -> str:
    if not isinstance(name, str) or not _PRINCIPAL.match(name):
        raise ValueError(f"a principal is named 'kind:name' (kind in lower case, no '/' or "
                         f"spaces), e.g. 'tenant:acme'; got {name!r}")
    return name


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """One cap of a principal: at most ``cap`` of ``unit`` per period of ``window``.

    ``cap`` is ``int`` (tokens, calls) or ``Decimal`` (money); ``float`` raises ``TypeError``.
    """

    unit: str
    window: Window
    cap: Amount

    def __post_init__(self) -> None:
        if not isinstance(self.unit, str) or not _UNIT.match(self.unit):
            raise ValueError(f"unit must match {_UNIT.pattern}, got {self.unit!r}")
        if not isinstance(self.window, Window):
            raise TypeError(f"window must be a Window, got {type(self.window).__name__}")
        check_amount(self.cap, "cap")


@dataclass(frozen=True, slots=True)
class LimitKey:
    """A limit key taken apart: ``principal`` path, ``unit`` and ``period`` id."""

    principal: str
    unit: str
    period: str

    @property
    def window(self) -> str:
        """The window name: the period id up to its first ``:`` (``month``)."""
        return self.period.partition(":")[0]

    def __str__(self) -> str:
        return f"{self.principal}/{self.unit}/{self.period}"


def parse_limit_key(key: str) -> LimitKey | None:
    """Split ``tenant:acme/usd/month:2026-11``; ``None`` for a key not made by ``Principals``."""
    parts = key.split("/")
    if len(parts) < 3 or ":" not in parts[-1] or not _UNIT.match(parts[-2]):
        return None
    if not all(_PRINCIPAL.match(p) for p in parts[:-2]):
        return None
    return LimitKey("/".join(parts[:-2]), parts[-2], parts[-1])


def money_limits(cap: BudgetCap, windows: Iterable[Window], unit: str = "usd") -> list[LimitSpec]:
    """Turn a ``BudgetCap`` into limit specs: one per window, matched by window name.

    A window the cap does not mention gets the default cap of zero; a cap for a window not in
    ``windows`` raises ``ConfigurationError`` (it would silently never apply).
    """
    if not isinstance(cap, BudgetCap):
        raise TypeError(f"cap must be a BudgetCap, got {type(cap).__name__}")
    listed = list(windows)
    names = {window.name for window in listed}
    stray = sorted(set(cap) - names)
    if stray:
        raise ConfigurationError(f"caps for windows {stray} match none of the windows given "
                                 f"({sorted(names)})")
    return [LimitSpec(unit, window, cap[window.name]) for window in listed]


def _check_specs(specs: Iterable[LimitSpec]) -> tuple[LimitSpec, ...]:
    checked = tuple(specs)
    seen: set[tuple[str, str]] = set()
    money: dict[str, bool] = {}
    for spec in checked:
        if not isinstance(spec, LimitSpec):
            raise TypeError(f"caps must be LimitSpec objects, got {type(spec).__name__}")
        ident = (spec.unit, spec.window.name)
        if ident in seen:
            raise ConfigurationError(f"two caps for unit {spec.unit!r} in window "
                                     f"{spec.window.name!r}")
        seen.add(ident)
        is_money = isinstance(spec.cap, Decimal)
        if money.setdefault(spec.unit, is_money) != is_money:
            raise ConfigurationError(f"unit {spec.unit!r} is capped both in Decimal money and "
                                     "in whole int units; pick one")
    return checked


class Principals:
    """Budgets per principal over one store, created on first use from a template.

    ``template`` is the caps every principal gets unless ``templates[kind]`` or ``caps=``
    says otherwise; with no caps at all for a unit the cap is zero and reservations of it are
    refused. ``clock`` returns UNIX seconds (``time.time``) and decides which period is
    current; inject one in tests. ``run_id`` names the current run (a fresh random id by
    default); ``new_run()`` starts another, so run windows start fresh. Committed spend is also
    recorded in a bounded ``UsageLedger`` per unit (``ledger(unit)``).
    """

    def __init__(
        self,
        store: Store | str = "memory://",
        *,
        template: Iterable[LimitSpec] = (),
        templates: Mapping[str, Iterable[LimitSpec]] | None = None,
        clock: Callable[[], float] = time.time,
        lease: float = DEFAULT_LEASE,
        run_id: str | None = None,
        ledger_capacity: int = 10_000,
    ) -> None:
        self._budget = Budget(store, lease=lease)
        self._template = _check_specs(template)
        self._templates = {kind: _check_specs(specs) for kind, specs in (templates or {}).items()}
        self._clock = clock
        self._run_id = self._check_run_id(run_id) if run_id is not None else uuid.uuid4().hex
        self._ledger_capacity = ledger_capacity
        self._ledgers: dict[str, UsageLedger] = {}
        UsageLedger(ledger_capacity)  # validate the capacity now, not at the first commit

    @staticmethod
    def _check_run_id(run_id: str) -> str:
        if not isinstance(run_id, str) or not run_id or "/" in run_id or run_id.isspace():
            raise ValueError(f"run id must be a non-empty str without '/', got {run_id!r}")
        return run_id

    @property
    def store(self) -> Store:
        return self._budget.store

    @property
    def run_id(self) -> str:
        """The id of the current run; run windows are keyed ``run:<run_id>``."""
        return self._run_id

    def new_run(self, run_id: str | None = None) -> str:
        """Start a new run: run-window limits start fresh (new keys); the old run's figures stay
        readable in the store. Reservations already held keep their keys. Returns the id."""
        self._run_id = self._check_run_id(run_id) if run_id is not None else uuid.uuid4().hex
        return self._run_id

    def now(self) -> float:
        """The injected clock's current time, UNIX seconds."""
        return self._clock()

    def get(self, principal: str, *, caps: Iterable[LimitSpec] | None = None) -> PrincipalBudget:
        """The top-level budget of ``principal`` (``"tenant:acme"``), with ``caps`` or else the
        template of its kind or else the default template. Cheap: nothing is stored until the
        first reservation creates its limits."""
        return PrincipalBudget(self, None, _check_principal(principal), self._caps_for(
            principal, caps))

    def ledger(self, unit: str) -> UsageLedger:
        """The bounded ledger of committed ``unit`` spend by principal path."""
        ledger = self._ledgers.get(unit)
        if ledger is None:
            ledger = self._ledgers[unit] = UsageLedger(self._ledger_capacity)
        return ledger

    def _caps_for(self, principal: str, caps: Iterable[LimitSpec] | None) -> tuple[LimitSpec, ...]:
        if caps is not None:
            return _check_specs(caps)
        kind = principal.partition(":")[0]
        return self._templates.get(kind, self._template)

    async def aclose(self) -> None:
        """Close the store."""
        await self._budget.aclose()


class PrincipalBudget:
    """The budget of one principal: its caps, its ancestors, and reservations against them.

    Build with ``Principals.get(...)`` and ``PrincipalBudget.child(...)``.
    """

    __slots__ = ("_caps", "_name", "_owner", "_parent", "_path")

    def __init__(
        self,
        owner: Principals,
        parent: PrincipalBudget | None,
        name: str,
        caps: tuple[LimitSpec, ...],
    ) -> None:
        self._owner = owner
        self._parent = parent
        self._name = name
        self._path = name if parent is None else f"{parent.path}/{name}"
        self._caps = caps

    @property
    def path(self) -> str:
        """``tenant:acme/agent:planner``: the principal and its ancestors."""
        return self._path

    @property
    def parent(self) -> PrincipalBudget | None:
        return self._parent

    @property
    def caps(self) -> tuple[LimitSpec, ...]:
        return self._caps

    def child(self, name: str, *, caps: Iterable[LimitSpec] | None = None) -> PrincipalBudget:
        """A child budget (sub-agent, tool) carved from this one. Its reservations also hold
        against this budget and every ancestor, all-or-nothing, so it can never spend past
        them. ``caps`` defaults to the template of its kind, else the default template."""
        return PrincipalBudget(self._owner, self, _check_principal(name),
                               self._owner._caps_for(name, caps))

    def chain(self) -> list[PrincipalBudget]:
        """This budget and its ancestors, innermost first."""
        chain: list[PrincipalBudget] = []
        node: PrincipalBudget | None = self
        while node is not None:
            chain.append(node)
            node = node._parent
        return chain

    def limits_at(
        self, units: Iterable[str], at: float | None = None
    ) -> dict[str, tuple[str, LimitSpec, float | None]]:
        """The limit keys a reservation of ``units`` holds at instant ``at`` (default now):
        key -> (unit, spec, period end or ``None``), across the whole chain."""
        when = self._owner.now() if at is None else at
        wanted = set(units)
        keys: dict[str, tuple[str, LimitSpec, float | None]] = {}
        for node in self.chain():
            for spec in node._caps:
                if spec.unit not in wanted:
                    continue
                period = spec.window.period(when, self._owner.run_id)
                keys[f"{node._path}/{spec.unit}/{period.id}"] = (spec.unit, spec, period.end)
        return keys

    async def usage(self, at: float | None = None) -> list[LimitUsage]:
        """This principal's own limits in the periods current at ``at`` (default now). A limit
        not used yet reads as its cap with nothing spent or held."""
        when = self._owner.now() if at is None else at
        out: list[LimitUsage] = []
        for spec in self._caps:
            key = f"{self._path}/{spec.unit}/{spec.window.period(when, self._owner.run_id).id}"
            try:
                out.append(await self._owner.store.usage(key))
            except UnknownLimit:
                zero: Amount = Decimal(0) if isinstance(spec.cap, Decimal) else 0
                out.append(LimitUsage(key, spec.cap, zero, zero))
        return out

    async def check(self, unit: str, estimate: Decimal) -> AdmissionDecision:
        """Would a reservation of ``estimate`` money in ``unit`` be admitted now? Reads every
        limit of ``unit`` in the chain and decides with ``admits``; holds nothing, so the
        answer can be stale by the time you reserve. Windows are named by limit key."""
        estimate = check_money(estimate, "estimate")
        states: dict[str, WindowState] = {}
        caps: dict[str, Decimal] = {}
        for key, (_, spec, _) in self.limits_at([unit]).items():
            try:
                usage = await self._owner.store.usage(key)
            except UnknownLimit:
                zero = Decimal(0)
                usage = LimitUsage(key, spec.cap, zero, zero)
            if not isinstance(usage.cap, Decimal):
                raise TypeError(f"check() decides money; limit {key!r} counts whole units")
            caps[key] = usage.cap
            states[key] = WindowState(Decimal(usage.spent), Decimal(usage.held))
        return admits(estimate, states, BudgetCap(caps))

    async def try_reserve(
        self, amounts: Mapping[str, Amount], *, lease: float | None = None
    ) -> PrincipalReservation | None:
        """Hold ``amounts`` (unit -> amount) against every window of every principal in the
        chain that caps the unit, all-or-nothing; ``None`` if any lacks room or a unit has no
        cap anywhere (the default cap is zero). Bad input raises before anything is taken."""
        reservation, _ = await self._reserve(amounts, lease)
        return reservation

    def reserve(
        self, amounts: Mapping[str, Amount], *, lease: float | None = None
    ) -> ReserveContext[PrincipalReservation]:
        """Like ``try_reserve`` but raises ``BudgetExceeded`` whose reason names the principal,
        the window, the cap, what is committed and reserved, and the estimate. Await it, or use
        ``async with`` to release on exit unless the body committed."""

        async def reserve() -> PrincipalReservation:
            reservation, refusal = await self._reserve(amounts, lease)
            if reservation is None:
                assert refusal is not None
                raise refusal
            return reservation

        return ReserveContext(reserve)

    async def _reserve(
        self, amounts: Mapping[str, Amount], lease: float | None
    ) -> tuple[PrincipalReservation | None, BudgetExceeded | None]:
        if not isinstance(amounts, Mapping) or not amounts:
            raise TypeError("amounts must be a non-empty mapping of unit -> amount")
        checked = {unit: check_amount(amount, f"amount[{unit!r}]")
                   for unit, amount in amounts.items()}
        limits = self.limits_at(checked)
        for unit, amount in checked.items():
            if amount and not any(u == unit for u, _, _ in limits.values()):
                reason = (f"no cap is set for unit {unit!r} on {self._path!r} or its "
                          f"parents (the default cap is 0); estimate {amount} refused")
                if _log.enabled():
                    _log.emit("outlay.principal.denied", principal=self._path, key=None,
                              reason=reason)
                return None, BudgetExceeded(reason, key=None, requested=amount,
                                            available=type(amount)(0))
        by_key = {key: checked[unit] for key, (unit, _, _) in limits.items()}
        if not by_key:
            raise ValueError("nothing to reserve: every amount is zero and uncapped")
        defaults = {key: spec.cap for key, (_, spec, _) in limits.items()}
        expire_at = {key: end for key, (_, _, end) in limits.items() if end is not None}
        # A refusal carries the refusing limit as it stood at the store's decision (even one
        # that was never created); the reason is rephrased in terms of principal and window.
        try:
            inner = await self._owner._budget.reserve(by_key, lease=lease, defaults=defaults,
                                                      expire_at=expire_at)
        except BudgetExceeded as exceeded:
            refusal = self._refusal(exceeded)
            if _log.enabled():
                _log.emit("outlay.principal.denied", principal=self._path, key=refusal.key,
                          reason=refusal.reason)
            return None, refusal
        units = {key: unit for key, (unit, _, _) in limits.items()}
        for unit, amount in checked.items():
            self._owner.ledger(unit).hold(self._path, amount)  # its high-water mark
        return PrincipalReservation(self._owner, self._path, inner, checked, units), None

    def _refusal(self, exceeded: BudgetExceeded) -> BudgetExceeded:
        usage, amount = exceeded.usage, exceeded.requested
        if usage is None or amount is None:  # pragma: no cover - every store names the limit
            return BudgetExceeded(f"{self._path}: reservation refused", key=None)
        parsed = parse_limit_key(usage.key)
        who = parsed.principal if parsed else usage.key
        window = parsed.period if parsed else usage.key
        reason = f"{who}: " + over_cap_reason(window, usage.cap, usage.spent, usage.held, amount)
        return BudgetExceeded(reason, key=usage.key, requested=amount, available=usage.available,
                              usage=usage)

    def __repr__(self) -> str:
        return f"<PrincipalBudget {self._path} caps={list(self._caps)}>"


class PrincipalReservation:
    """A reservation of unit amounts across a principal's chain of limits.

    ``commit(actual)`` takes amounts by unit (each applied to every limit of that unit, above or
    below the hold) and records the spend in the unit's ledger; ``release()`` gives it all back.
    Both end the reservation once, run shielded from cancellation, and raise
    ``ReservationError`` if it already ended. ``async with`` releases unless committed.
    """

    __slots__ = ("_amounts", "_inner", "_owner", "_path", "_unheld", "_units")

    def __init__(
        self,
        owner: Principals,
        path: str,
        inner: Reservation,
        amounts: Mapping[str, Amount],
        units: Mapping[str, str],
    ) -> None:
        self._owner = owner
        self._path = path
        self._inner = inner
        self._amounts = MappingProxyType(dict(amounts))
        self._units = units
        self._unheld = False

    @property
    def id(self) -> str:
        return self._inner.id

    @property
    def principal(self) -> str:
        return self._path

    @property
    def amounts(self) -> Mapping[str, Amount]:
        """What is held, by unit."""
        return self._amounts

    @property
    def keys(self) -> Mapping[str, Amount]:
        """What is held, by limit key (every window of every principal in the chain)."""
        return self._inner.amounts

    @property
    def state(self) -> str:
        return self._inner.state

    @property
    def ended(self) -> bool:
        return self._inner.ended

    async def commit(self, actual: Mapping[str, Amount] | None = None) -> None:
        """Turn the hold into spend of ``actual`` by unit (default: what was held)."""
        by_unit = {u: check_amount(a, f"actual[{u!r}]") for u, a in (actual or {}).items()}
        unknown = sorted(by_unit.keys() - self._amounts.keys())
        if unknown:
            raise ValueError(f"actual names units the reservation does not hold: {unknown}")
        by_key = {key: by_unit[unit] for key, unit in self._units.items() if unit in by_unit}
        try:
            await self._inner.commit(by_key)
        finally:
            self._unhold()
        for unit, held in self._amounts.items():
            self._owner.ledger(unit).record(self._path, by_unit.get(unit, held))

    async def release(self) -> None:
        """Give the whole hold back."""
        try:
            await self._inner.release()
        finally:
            self._unhold()

    def _unhold(self) -> None:
        """Once ended, take the hold off the ledgers' current levels (once)."""
        if self._inner.ended and not self._unheld:
            self._unheld = True
            for unit, held in self._amounts.items():
                self._owner.ledger(unit).unhold(self._path, held)

    async def extend(self, lease: float) -> None:
        """Renew the lease; ``ReservationError`` if it is no longer held."""
        await self._inner.extend(lease)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._inner.__aexit__(exc_type, exc, tb)
        finally:
            self._unhold()

    def __repr__(self) -> str:
        return f"<PrincipalReservation {self.id} {self._path} {dict(self._amounts)} {self.state}>"

