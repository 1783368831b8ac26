"""``Budget``: the one budget object every consumer takes, and ``Principals``, its factory.

A budget reserves *by unit*: ``usd`` (``Decimal`` dollars), ``tokens``, ``input_tokens``,
``output_tokens``, ``requests``, ``tool_calls`` or any unit a ``LimitSpec`` names. Each unit is
mapped onto one limit per principal in the chain (this budget and its parents) and per window
that caps the unit (run, hour, day, month... in a time zone), keyed
``<principal path>/<unit>/<period id>``; one store call holds all of them, all-or-nothing, on
any store (``memory://``, ``sqlite:///...``, ``redis://...``). Limits are created on first use
from the caps (``defaults=``) and carry their period end (``expire_at=``), so a new period
starts fresh with no sweeper.

Uncapped units: a money amount (``Decimal``) of a unit no limit caps is refused (the default
money cap is zero, so paid work is off until someone sets a budget); a whole-unit amount
(``int``) of a unit no limit caps is not limited and holds nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal

from .._ledger import UsageLedger
from .._protocols import BudgetGuard, TokenBudget
from ..stores import LimitUsage, Store
from . import _log
from ._amounts import Amount, check_amounts, check_count, check_lease
from ._exceptions import BudgetExceeded, ConfigurationError, ReservationError, UnknownLimit
from ._guards import GuardStore, TokenBudgetStore
from ._limits import LimitSpec, check_principal, check_specs
from ._money import AdmissionDecision, BudgetCap, WindowState, admits, check_money
from ._reservation import (
    DEFAULT_LEASE,
    Reservation,
    ReserveContext,
    new_id,
    open_store,
    refused,
    reserve_keys,
)
from ._tokens import TokenReservation
from ._windows import Window

__all__ = ("Budget", "Principals")

_RUN = Window.run()
_DEFAULT_PRINCIPAL = "budget:default"


class Principals:
    """Budgets per principal (tenant, user, agent, tool) over one store, made on first use.

    ``get("tenant:acme")`` returns that principal's ``Budget``; ``budget.child("agent:x")``
    nests one under it. ``template`` is the caps every principal gets unless
    ``templates[kind]`` or ``caps=`` says otherwise. ``clock`` returns UNIX seconds
    (``time.time``) and decides which period is current; inject one in tests. ``run_id`` names
    the current run (a fresh random id by default); ``new_run()`` starts another, so run
    windows start fresh. Committed spend is also recorded in a bounded ``UsageLedger`` per unit
    (``ledger(unit)``) unless ``ledger_capacity`` is ``None``.
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
        ledger_capacity: int | None = 10_000,
    ) -> None:
        # Every check runs before the store is opened: bad options leave no connection behind.
        self._lease = check_lease(lease)
        self._template = check_specs(template)
        self._templates = {kind: check_specs(specs) for kind, specs in (templates or {}).items()}
        self._clock = clock
        self._run_id = self._check_run_id(run_id) if run_id is not None else new_id()
        self._ledger_capacity = ledger_capacity
        self._ledgers: dict[str, UsageLedger] = {}
        if ledger_capacity is not None:
            UsageLedger(ledger_capacity)  # validate the capacity now, not at the first commit
        self._store = open_store(store)

    @staticmethod
    def _check_run_id(run_id: str) -> str:
        if not isinstance(run_id, str) or not run_id or "/" in run_id or run_id.isspace():
            raise ValueError(f"run id must be a non-empty str without '/', got {run_id!r}")
        return run_id

    @property
    def store(self) -> Store:
        """The store every budget of these principals reserves against."""
        return self._store

    @property
    def run_id(self) -> str:
        """The id of the current run; run windows are keyed ``run:<run_id>``."""
        return self._run_id

    def new_run(self, run_id: str | None = None) -> str:
        """Start a new run: run-window limits start fresh (new keys); the old run's figures stay
        readable in the store. Reservations already held keep their keys. Returns the id."""
        self._run_id = self._check_run_id(run_id) if run_id is not None else new_id()
        return self._run_id

    def now(self) -> float:
        """The injected clock's current time, UNIX seconds."""
        return self._clock()

    def get(self, principal: str, *, caps: Iterable[LimitSpec] | None = None) -> Budget:
        """The top-level budget of ``principal`` (``"tenant:acme"``), with ``caps`` or else the
        template of its kind or else the default template. Cheap: nothing is stored until the
        first reservation creates its limits."""
        return Budget._attach(self, None, check_principal(principal),
                              self._caps_for(principal, caps))

    def ledger(self, unit: str) -> UsageLedger:
        """The bounded ledger of committed ``unit`` spend by principal path. Raises
        ``ConfigurationError`` when built with ``ledger_capacity=None`` (no ledger kept)."""
        ledger = self._ledgers.get(unit)
        if ledger is None:
            if self._ledger_capacity is None:
                raise ConfigurationError("these budgets keep no ledger (ledger_capacity=None)")
            ledger = self._ledgers[unit] = UsageLedger(self._ledger_capacity)
        return ledger

    def _caps_for(self, principal: str, caps: Iterable[LimitSpec] | None) -> tuple[LimitSpec, ...]:
        if caps is not None:
            return check_specs(caps)
        kind = principal.partition(":")[0]
        return self._templates.get(kind, self._template)

    async def aclose(self) -> None:
        """Close the store."""
        await self._store.aclose()


class Budget:
    """Limits by unit, reserved all-or-nothing before work and settled at what it used.

    The common case, in memory::

        budget = Budget(usd=Decimal("0.50"), tokens=100_000, requests=50, tool_calls=20)

    The same on a shared store, per day in a time zone, for one agent of a fleet::

        budget = Budget(usd=Decimal("5"), tokens=200_000, window=Window.day("Europe/Berlin"),
                        store="redis://localhost:6379/0", principal="agent:researcher")

    Each keyword caps its unit in every window of ``window`` (one ``Window`` or several;
    ``Window.run()`` by default: this run only); ``caps`` adds ``LimitSpec`` caps (other
    units, other windows, different caps per window). ``usd`` is ``Decimal`` (``float`` and
    ``int`` raise ``TypeError``), the other units ``int``. A budget from ``Principals.get`` or
    ``child`` is the same class, nested under its parents.

    Use::

        async with budget.reserve({"usd": Decimal("0.02"), "tokens": 1500, "requests": 1}) as r:
            ...
            await r.commit({"usd": actual_usd, "tokens": actual_tokens})

    Vocabulary (the same on every outlay budget): ``reserve`` takes now or raises
    ``BudgetExceeded``, it never waits; ``try_reserve`` is ``reserve`` returning ``None``
    instead of raising. Each makes one store call (none when no unit it names is capped).
    Money in a unit nothing caps is refused; whole units nothing caps are not limited.

    ``principal`` (``kind:name``) prefixes every limit key, so every process that builds the
    same budget on the same store shares it. ``clock`` (UNIX seconds) decides the current
    period; ``run_id`` names the run window's period (fresh by default, so ``Window.run()``
    limits are per process unless the workers pass one id). Bad caps raise ``TypeError`` /
    ``ValueError`` / ``ConfigurationError`` here.

    ``Budget`` is also a ``TokenBudget`` (``try_reserve_tokens`` / ``record_usage`` /
    ``tokens_consumed``) on any store.
    """

    __slots__ = ("_caps", "_name", "_owned", "_owner", "_parent", "_path")

    _owner: Principals
    _parent: Budget | None
    _name: str
    _path: str
    _caps: tuple[LimitSpec, ...]
    _owned: bool

    def __init__(
        self,
        *,
        usd: Decimal | None = None,
        tokens: int | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        requests: int | None = None,
        tool_calls: int | None = None,
        caps: Iterable[LimitSpec] = (),
        window: Window | Iterable[Window] = _RUN,
        store: Store | str = "memory://",
        principal: str = _DEFAULT_PRINCIPAL,
        clock: Callable[[], float] = time.time,
        lease: float = DEFAULT_LEASE,
        run_id: str | None = None,
    ) -> None:
        name = check_principal(principal)  # every check before a store is opened
        windows = (window,) if isinstance(window, Window) else tuple(window)
        if not windows or not all(isinstance(w, Window) for w in windows):
            raise TypeError("window must be a Window or a non-empty iterable of Windows")
        given: dict[str, Amount] = {}
        if usd is not None:
            given["usd"] = check_money(usd, "usd")
        for unit, cap in (("tokens", tokens), ("input_tokens", input_tokens),
                          ("output_tokens", output_tokens), ("requests", requests),
                          ("tool_calls", tool_calls)):
            if cap is not None:
                given[unit] = check_count(cap, unit)
        specs = [LimitSpec(unit, w, cap) for unit, cap in given.items() for w in windows]
        specs.extend(caps)
        # One principal: a ledger of spend by principal would say nothing remaining() does not.
        owner = Principals(store, template=specs, clock=clock, lease=lease, run_id=run_id,
                           ledger_capacity=None)
        self._init(owner, None, name, owner._template, owned=isinstance(store, str))

    @classmethod
    def from_guard(cls, guard: BudgetGuard, unit: str = "tool_calls") -> Budget:
        """The budget object over a ``BudgetGuard`` (``AtomicBudget`` or your own), counting
        ``unit`` in whole units. ``reserve({unit: n})`` is ``guard.try_reserve(n)``; ``commit``
        keeps the units, ``release`` gives them back. The guard keeps the count (one call per
        reservation); ``remaining()`` needs a guard with ``capacity`` and ``available``."""
        if not isinstance(guard, BudgetGuard):
            raise TypeError(f"guard must be a BudgetGuard, got {type(guard).__name__}")
        return cls._adapted(GuardStore(guard), unit, getattr(guard, "capacity", 0))

    @classmethod
    def from_token_budget(cls, tokens: TokenBudget) -> Budget:
        """The budget object over a ``TokenBudget`` (``AtomicTokenBudget`` or your own):
        ``reserve({"tokens": n})`` is ``try_reserve_tokens(n)`` and ``commit`` its
        ``record_usage``. (``Budget`` is itself a ``TokenBudget`` on any store.)"""
        if not isinstance(tokens, TokenBudget):
            raise TypeError(f"tokens must be a TokenBudget, got {type(tokens).__name__}")
        return cls._adapted(TokenBudgetStore(tokens), "tokens", getattr(tokens, "capacity", 0))

    @classmethod
    def _adapted(cls, store: Store, unit: str, capacity: object) -> Budget:
        cap = capacity if type(capacity) is int else 0
        owner = Principals(store, template=[LimitSpec(unit, _RUN, cap)], ledger_capacity=None)
        budget = cls.__new__(cls)
        budget._init(owner, None, _DEFAULT_PRINCIPAL, owner._template, owned=True)
        return budget

    @classmethod
    def _attach(cls, owner: Principals, parent: Budget | None, name: str,
                caps: tuple[LimitSpec, ...]) -> Budget:
        budget = cls.__new__(cls)
        budget._init(owner, parent, name, caps, owned=False)
        return budget

    def _init(self, owner: Principals, parent: Budget | None, name: str,
              caps: tuple[LimitSpec, ...], *, owned: bool) -> None:
        self._owner = owner
        self._parent = parent
        self._name = name
        self._path = name if parent is None else f"{parent._path}/{name}"
        self._caps = caps
        self._owned = owned

    # -- shape ---------------------------------------------------------------------------

    @property
    def path(self) -> str:
        """``tenant:acme/agent:planner``: the principal and its ancestors."""
        return self._path

    @property
    def parent(self) -> Budget | None:
        """The budget this one was carved from (``child``), or ``None``."""
        return self._parent

    @property
    def caps(self) -> tuple[LimitSpec, ...]:
        """This principal's own caps (its parents' hold too)."""
        return self._caps

    @property
    def principals(self) -> Principals:
        """The factory this budget belongs to (store, clock, run id, ledgers)."""
        return self._owner

    @property
    def store(self) -> Store:
        """The store this budget reserves against."""
        return self._owner.store

    @property
    def run_id(self) -> str:
        """The current run id (run windows are keyed by it)."""
        return self._owner.run_id

    def new_run(self, run_id: str | None = None) -> str:
        """Start a new run for every budget of this factory; see ``Principals.new_run``."""
        return self._owner.new_run(run_id)

    def child(self, name: str, *, caps: Iterable[LimitSpec] | None = None) -> Budget:
        """A child budget (sub-agent, tool) carved from this one. Its reservations also hold
        against this budget and every ancestor, all-or-nothing, so it can never spend past
        them. ``caps`` defaults to the template of its kind, else the default template."""
        return Budget._attach(self._owner, self, check_principal(name),
                              self._owner._caps_for(name, caps))

    def chain(self) -> list[Budget]:
        """This budget and its ancestors, innermost first."""
        chain: list[Budget] = []
        node: Budget | None = self
        while node is not None:
            chain.append(node)
            node = node._parent
        return chain

    def limits_at(
        self, units: Iterable[str], at: float | None = None
    ) -> dict[str, tuple[str, LimitSpec, float | None]]:
        """The one unit -> limit mapping: the limit keys a reservation of ``units`` holds at
        instant ``at`` (default now), key -> (unit, spec, period end or ``None``), across the
        whole chain."""
        when = self._owner.now() if at is None else at
        run_id = self._owner.run_id
        wanted = set(units)
        keys: dict[str, tuple[str, LimitSpec, float | None]] = {}
        for node in self.chain():
            for spec in node._caps:
                if spec.unit not in wanted:
                    continue
                period = spec.window.period(when, run_id)
                keys[f"{node._path}/{spec.unit}/{period.id}"] = (spec.unit, spec, period.end)
        return keys

    @property
    def units(self) -> frozenset[str]:
        """Every unit some limit of the chain caps (others: money is refused, whole units are
        not limited)."""
        return frozenset(spec.unit for node in self.chain() for spec in node._caps)

    # -- reading -------------------------------------------------------------------------

    async def _read(self, key: str, spec: LimitSpec) -> LimitUsage:
        try:
            return await self._owner.store.usage(key)
        except UnknownLimit:
            zero: Amount = Decimal(0) if isinstance(spec.cap, Decimal) else 0
            return LimitUsage(key, spec.cap, zero, zero)

    async def usage(self, at: float | None = None) -> list[LimitUsage]:
        """This principal's own limits in the periods current at ``at`` (default now). A limit
        not used yet reads as its cap with nothing spent or held. One store read per limit."""
        when = self._owner.now() if at is None else at
        run_id = self._owner.run_id
        return [await self._read(f"{self._path}/{spec.unit}/{spec.window.period(when, run_id).id}",
                                 spec) for spec in self._caps]

    async def remaining(self, at: float | None = None) -> dict[str, Amount]:
        """What a reservation could still take now, by unit: the least ``available`` over every
        limit of the unit in the chain (windows and ancestors). Units no limit caps are absent
        (money among them is refused, whole units are unlimited). A snapshot: it may be stale
        by the time you reserve. One store read per limit."""
        out: dict[str, Amount] = {}
        for key, (unit, spec, _) in self.limits_at(self.units, at).items():
            available = (await self._read(key, spec)).available
            out[unit] = min(out[unit], available) if unit in out else available
        return out

    async def check(self, unit: str, estimate: Decimal) -> AdmissionDecision:
        """Would a reservation of ``estimate`` money in ``unit`` be admitted now? Reads every
        limit of ``unit`` in the chain and decides with ``admits``; holds nothing, so the
        answer can be stale by the time you reserve. Windows are named by limit key."""
        estimate = check_money(estimate, "estimate")
        states: dict[str, WindowState] = {}
        caps: dict[str, Decimal] = {}
        for key, (_, spec, _) in self.limits_at([unit]).items():
            usage = await self._read(key, spec)
            if not isinstance(usage.cap, Decimal):
                raise TypeError(f"check() decides money; limit {key!r} counts whole units")
            caps[key] = usage.cap
            states[key] = WindowState(Decimal(usage.spent), Decimal(usage.held))
        return admits(estimate, states, BudgetCap(caps))

    # -- reserving -----------------------------------------------------------------------

    async def try_reserve(
        self, amounts: Mapping[str, Amount], *, lease: float | None = None
    ) -> Reservation | None:
        """Hold ``amounts`` (unit -> amount) against every limit of every unit, all-or-nothing,
        in one store call; ``None`` if any limit lacks room or a money unit has no cap. Bad
        input raises ``TypeError``/``ValueError`` before anything is taken. If this task is
        cancelled while the store answers, whatever it admitted is released (shielded)."""
        reservation, _ = await self._reserve(amounts, lease, Reservation)
        return reservation

    def reserve(
        self, amounts: Mapping[str, Amount], *, lease: float | None = None
    ) -> ReserveContext[Reservation]:
        """Like ``try_reserve`` but raises ``BudgetExceeded`` naming the refusing limit; never
        waits. Await it, or use ``async with`` to release on exit unless the body committed."""

        async def reserve() -> Reservation:
            reservation, refusal = await self._reserve(amounts, lease, Reservation)
            if reservation is None:
                assert refusal is not None
                raise refusal
            return reservation

        return ReserveContext(reserve)

    async def _reserve(
        self, amounts: Mapping[str, Amount], lease: float | None, kind: type[Reservation]
    ) -> tuple[Reservation | None, BudgetExceeded | None]:
        if not isinstance(amounts, Mapping) or not amounts:
            raise TypeError("amounts must be a non-empty mapping of unit -> amount")
        checked = check_amounts(amounts, "amount")
        owner = self._owner
        seconds = owner._lease if lease is None else check_lease(lease)
        limits = self.limits_at(checked)
        capped = {unit for unit, _, _ in limits.values()}
        for unit, amount in checked.items():
            if unit not in capped and isinstance(amount, Decimal) and amount:
                refusal = BudgetExceeded(unit=unit, requested=amount, cap=Decimal(0),
                                         spent=Decimal(0), held=Decimal(0),
                                         principal=self._path)
                return None, self._denied(refusal)
        by_key = {key: checked[unit] for key, (unit, _, _) in limits.items()}
        units = {key: unit for key, (unit, _, _) in limits.items()}
        on_end = None if owner._ledger_capacity is None else self._ended(checked)
        if not by_key:  # nothing is capped: nothing to hold, nothing to ask the store
            self._hold(checked)
            return kind(owner.store, new_id(), {}, units, checked, on_end), None
        defaults = {key: spec.cap for key, (_, spec, _) in limits.items()}
        expire_at = {key: end for key, (_, _, end) in limits.items() if end is not None}
        admission, rid = await reserve_keys(owner.store, by_key, seconds, defaults, expire_at)
        if not admission.admitted:
            return None, self._denied(refused(admission))
        if _log.enabled():
            _log.emit("outlay.reservation.reserved", reservation=rid, principal=self._path,
                      amounts=checked)
        self._hold(checked)
        return kind(owner.store, rid, by_key, units, checked, on_end), None

    def _denied(self, refusal: BudgetExceeded) -> BudgetExceeded:
        if _log.enabled():
            _log.emit("outlay.reservation.denied", principal=self._path, key=refusal.key,
                      unit=refusal.unit, reason=refusal.reason)
        return refusal

    def _hold(self, held: Mapping[str, Amount]) -> None:
        """A reservation began: raise this principal's current level (and high-water mark)
        in the ledgers, if kept."""
        if self._owner._ledger_capacity is not None:
            for unit, amount in held.items():
                self._owner.ledger(unit).hold(self._path, amount)

    def _ended(self, held: Mapping[str, Amount]
               ) -> Callable[[Mapping[str, Amount] | None], None]:
        """The ``on_end`` of a reservation holding ``held``: take the hold off the ledgers'
        current levels and record what a commit settled."""

        def ended(settled: Mapping[str, Amount] | None) -> None:
            for unit, amount in held.items():
                ledger = self._owner.ledger(unit)
                ledger.unhold(self._path, amount)
                if settled is not None:
                    ledger.record(self._path, settled[unit])

        return ended

    # -- TokenBudget ---------------------------------------------------------------------

    async def try_reserve_tokens(self, estimate: int) -> TokenReservation | None:
        """``TokenBudget.try_reserve_tokens``: hold ``estimate`` ``tokens`` or return ``None``."""
        reservation, _ = await self._reserve({"tokens": check_count(estimate, "estimate")},
                                             None, TokenReservation)
        assert reservation is None or isinstance(reservation, TokenReservation)
        return reservation

    def reserve_tokens(self, estimate: int) -> ReserveContext[TokenReservation]:
        """Like ``try_reserve_tokens`` but raises ``BudgetExceeded`` when refused."""

        async def reserve() -> TokenReservation:
            reservation, refusal = await self._reserve(
                {"tokens": check_count(estimate, "estimate")}, None, TokenReservation)
            if reservation is None:
                assert refusal is not None
                raise refusal
            assert isinstance(reservation, TokenReservation)
            return reservation

        return ReserveContext(reserve)

    async def record_usage(self, reservation: TokenReservation, prompt: int,
                           completion: int) -> None:
        """``TokenBudget.record_usage``: commit ``prompt + completion`` tokens (overshoot is
        recorded). Raises ``ReservationError`` if already ended or not this store's."""
        prompt = check_count(prompt, "prompt")
        completion = check_count(completion, "completion")
        if not isinstance(reservation, TokenReservation):
            raise TypeError(f"expected a TokenReservation, got {type(reservation).__name__}")
        if reservation._store is not self._owner.store:
            raise ReservationError("this reservation belongs to another budget's store")
        await reservation.commit({"tokens": prompt + completion})

    async def tokens_consumed(self) -> int:
        """``TokenBudget.tokens_consumed``: tokens committed in this principal's current
        periods (the largest figure among its own ``tokens`` windows; 0 if uncapped)."""
        spent = [u.spent for u, spec in zip(await self.usage(), self._caps, strict=True)
                 if spec.unit == "tokens"]
        return int(max(spent, default=0))

    async def aclose(self) -> None:
        """Close the store if this budget opened it from a URL (``Budget(store="...")``); a
        ``Store`` you passed in, or the store of ``Principals``, is left to its owner."""
        if self._owned:
            await self._owner.aclose()

    def __repr__(self) -> str:
        return f"<Budget {self._path} caps={list(self._caps)}>"
