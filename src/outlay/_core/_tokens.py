"""``AtomicTokenBudget``: the in-process reference ``TokenBudget``.

Built on the reservation primitive over one ``MemoryStore`` limit: an estimate is held before a
model call and reconciled against the provider's reported usage after it.
"""

from __future__ import annotations

from ..stores import MemoryStore
from . import _log
from ._amounts import MAX_LEASE, check_count
from ._exceptions import BudgetExceeded, ReservationError
from ._reservation import Reservation, ReserveContext, new_id

_TOKENS = "tokens"


class TokenReservation(Reservation):
    """Tokens held for one model call, on any store. End it with the budget's
    ``record_usage`` (or ``release``); ``async with`` refunds the estimate on exit unless usage
    was recorded. ``AtomicTokenBudget`` and ``Budget`` both hand these out."""

    __slots__ = ()

    @property
    def estimate(self) -> int:
        """The tokens held for this call."""
        estimate = self.amounts[_TOKENS]
        assert isinstance(estimate, int)
        return estimate


class AtomicTokenBudget:
    """A token budget for one process, exact under any interleaving of tasks and threads.

    Implements ``TokenBudget``. ``record_usage`` reconciles a reservation against
    ``prompt + completion``: an over-estimate is refunded, an overage is taken from what is
    available (``available`` never goes below zero) and the whole actual counts in
    ``tokens_consumed()``. Holds do not expire by time (their lease is ``MAX_LEASE``); a
    handle garbage-collected before it was recorded refunds its estimate with a
    ``ResourceWarning``.
    """

    def __init__(self, capacity: int, *, name: str | None = None) -> None:
        self._capacity = check_count(capacity, "capacity")
        self._name = name
        self._store = MemoryStore()
        self._store.set_limit_nowait(_TOKENS, self._capacity)

    @property
    def capacity(self) -> int:
        """The most tokens this budget will ever admit."""
        return self._capacity

    @property
    def available(self) -> int:
        """Tokens that can be reserved now: capacity minus consumed minus held, at least 0."""
        available = self._store.usage_nowait(_TOKENS).available
        assert isinstance(available, int)
        return available

    @property
    def held(self) -> int:
        """Tokens held by reservations not yet recorded or released."""
        held = self._store.usage_nowait(_TOKENS).held
        assert isinstance(held, int)
        return held

    @property
    def utilization(self) -> float:
        """Fraction of capacity consumed or held, 0.0 to 1.0."""
        if not self._capacity:
            return 0.0
        return (self._capacity - self.available) / self._capacity

    def try_reserve_tokens_nowait(self, estimate: int) -> TokenReservation | None:
        """Hold ``estimate`` tokens if they fit now; ``None`` otherwise. Never waits."""
        estimate = check_count(estimate, "estimate")
        rid = new_id()
        admission = self._store.reserve_nowait(rid, {_TOKENS: estimate}, lease=MAX_LEASE)
        if _log.enabled():
            event = "outlay.tokens.reserved" if admission.admitted else "outlay.tokens.denied"
            _log.emit(event, budget=self._name, reservation=rid, estimate=estimate,
                      available=self.available)
        if not admission.admitted:
            return None
        return TokenReservation(self._store, rid, {_TOKENS: estimate})

    async def try_reserve_tokens(self, estimate: int) -> TokenReservation | None:
        """``TokenBudget.try_reserve_tokens``: hold ``estimate`` tokens or return ``None``."""
        return self.try_reserve_tokens_nowait(estimate)

    def reserve_tokens(self, estimate: int) -> ReserveContext[TokenReservation]:
        """Like ``try_reserve_tokens`` but raises ``BudgetExceeded`` when refused.

        ``async with budget.reserve_tokens(n) as r:`` refunds on exit unless usage was recorded.
        """

        async def reserve() -> TokenReservation:
            reservation = self.try_reserve_tokens_nowait(estimate)
            if reservation is None:
                usage = self._store.usage_nowait(_TOKENS)
                raise BudgetExceeded(unit=_TOKENS, requested=estimate, cap=usage.cap,
                                     spent=usage.spent, held=usage.held, key=self._name)
            return reservation

        return ReserveContext(reserve)

    async def record_usage(self, reservation: TokenReservation, prompt: int,
                           completion: int) -> None:
        """Settle ``reservation`` at ``prompt + completion`` tokens.

        Raises ``ReservationError`` if it belongs to another budget or was already recorded or
        released (nothing is counted twice); ``TypeError``/``ValueError`` for bad counts.
        """
        prompt = check_count(prompt, "prompt")
        completion = check_count(completion, "completion")
        if not isinstance(reservation, TokenReservation):
            raise TypeError(f"expected a TokenReservation, got {type(reservation).__name__}")
        if reservation._store is not self._store:
            raise ReservationError("this reservation belongs to another token budget")
        actual = prompt + completion
        reservation._begin_ending("recorded")
        try:
            self._store.commit_nowait(reservation.id, {_TOKENS: actual})
        finally:
            reservation._ending = False
        reservation._state = "committed"
        if _log.enabled():
            _log.emit("outlay.tokens.reconciled", budget=self._name, reservation=reservation.id,
                      estimate=reservation.estimate, actual=actual,
                      refunded=max(reservation.estimate - actual, 0),
                      overage=max(actual - reservation.estimate, 0))

    async def tokens_consumed(self) -> int:
        """Every token recorded so far, overages included."""
        return self.tokens_consumed_nowait()

    def tokens_consumed_nowait(self) -> int:
        """Synchronous ``tokens_consumed``."""
        spent = self._store.usage_nowait(_TOKENS).spent
        assert isinstance(spent, int)
        return spent

    def __repr__(self) -> str:
        return f"<AtomicTokenBudget {self._name or ''} available={self.available}/{self._capacity}>"
