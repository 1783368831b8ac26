"""The protocols users code against. Async, so a remote store can implement them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ._core import TokenReservation


@runtime_checkable
class BudgetGuard(Protocol):
    """A budget of whole units (tool calls, stage costs, cents).

    ``try_reserve`` takes ``cost`` and returns True, or returns False (a soft denial: nothing
    taken, the caller decides what to do); like every ``try_*`` in outlay it never raises
    ``BudgetExceeded`` and never waits. ``release`` gives ``cost`` back. ``AtomicBudget``
    implements it; ``Budget.from_guard(guard)`` turns any implementation into the budget
    object.
    """

    async def try_reserve(self, cost: int) -> bool: ...

    async def release(self, cost: int) -> None: ...


@runtime_checkable
class TokenBudget(Protocol):
    """A budget of LLM tokens: hold an estimate before a call, record the real usage after.

    ``try_reserve_tokens`` returns a ``TokenReservation`` (any store's) or ``None``, never
    raising ``BudgetExceeded``; ``record_usage`` settles it at ``prompt + completion`` once.
    ``AtomicTokenBudget`` (in process) and ``Budget`` (on any store) implement it;
    ``Budget.from_token_budget(tokens)`` turns any implementation into the budget object.
    """

    async def try_reserve_tokens(self, estimate: int) -> TokenReservation | None: ...

    async def record_usage(self, reservation: TokenReservation, prompt: int,
                           completion: int) -> None: ...

    async def tokens_consumed(self) -> int: ...
