"""The protocols users code against. Async, so a remote store can implement them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ._core import TokenReservation


@runtime_checkable
class BudgetGuard(Protocol):
    """A budget of whole units (tool calls, stage costs, cents).

    ``try_reserve`` takes ``cost`` and returns True, or returns False (a soft denial: nothing
    taken, the caller decides what to do). ``release`` gives ``cost`` back.
    """

    async def try_reserve(self, cost: int) -> bool: ...

    async def release(self, cost: int) -> None: ...


@runtime_checkable
class TokenBudget(Protocol):
    """A budget of LLM tokens: hold an estimate before a call, record the real usage after."""

    async def try_reserve_tokens(self, estimate: int) -> TokenReservation | None: ...

    async def record_usage(self, reservation: TokenReservation, prompt: int,
                           completion: int) -> None: ...

    async def tokens_consumed(self) -> int: ...
