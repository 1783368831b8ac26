"""Where the executor's charges go: the budget itself, or an in-process share of a hold.

An account hands out tickets (``take``) and settles them at the actual cost (``settle``):

- ``BudgetAccount`` makes one ``outlay.KeyedBudget`` reservation per ticket, over every limit
  key its units map to (all-or-nothing), and commits it at the actual cost. It works on any store.
- ``Pool`` is the hold a ``Parallel`` (or ``Fanout``, ``Merge``, ``Let``, ``Map``) took for the
  worst case of all its branches. Stages inside draw from it in process, with no store round
  trip; what they do not use goes back when the node settles its own ticket. A draw that does
  not fit (an unbounded ``Map``, an earlier overshoot) is passed to the parent account, so no
  charge is ever admitted beyond what the store admitted: there is no transient overspend.
"""

from __future__ import annotations

from .._core import Amount, Budget, Reservation
from ._cost import Cost, zero_of


class Ticket:
    """One charge: ``cost`` was taken from ``owner`` (under ``reservation`` for the budget)."""

    __slots__ = ("cost", "owner", "reservation")

    def __init__(self, cost: Cost, owner: Account, reservation: Reservation | None) -> None:
        self.cost = cost
        self.owner = owner
        self.reservation = reservation


class Account:
    """Something charges are taken from; see the module docstring."""

    __slots__ = ()

    def take_nowait(self, cost: Cost) -> Ticket | None:
        """Charge ``cost`` at once if it fits in process, else return None (call ``take``)."""
        return None

    async def take(self, cost: Cost) -> Ticket:
        """Charge ``cost`` before work starts; ``BudgetExceeded`` if it does not fit."""
        raise NotImplementedError

    async def settle(self, ticket: Ticket, actual: Cost) -> None:
        """End ``ticket`` at ``actual`` (below the charge gives back, above is overshoot)."""
        raise NotImplementedError


class BudgetAccount(Account):
    """Charges reserved directly from a ``Budget``, by unit."""

    __slots__ = ("_budget",)

    def __init__(self, budget: Budget) -> None:
        self._budget = budget

    async def take(self, cost: Cost) -> Ticket:
        reservation = await self._budget.reserve(cost._amounts)
        return Ticket(cost, self, reservation)

    async def settle(self, ticket: Ticket, actual: Cost) -> None:
        if ticket.owner is not self:
            await ticket.owner.settle(ticket, actual)
            return
        reservation = ticket.reservation
        assert reservation is not None
        # Every held unit is named, so a unit the actual cost leaves out settles at zero.
        spend = {unit: zero_of(held) for unit, held in reservation.amounts.items()}
        for unit, amount in actual._amounts.items():
            spend[unit] = spend[unit] + amount if unit in spend else amount
        await reservation.commit(spend)


class Pool(Account):
    """An in-process share of the ticket a hold node took from ``parent``.

    Only the event loop thread touches it and ``take``/``settle`` never await while it fits,
    so a check and its update cannot interleave with another branch's.
    """

    __slots__ = ("parent", "remaining", "spent")

    def __init__(self, parent: Account, held: Cost) -> None:
        self.parent = parent
        self.remaining: dict[str, Amount] = dict(held)
        self.spent: dict[str, Amount] = {}

    def take_nowait(self, cost: Cost) -> Ticket | None:
        remaining = self.remaining
        amounts = cost._amounts  # the plain dict: this runs once per stage
        for unit, amount in amounts.items():
            if remaining.get(unit, 0) < amount:
                return None
        for unit, amount in amounts.items():
            remaining[unit] -= amount
        return Ticket(cost, self, None)

    async def take(self, cost: Cost) -> Ticket:
        ticket = self.take_nowait(cost)
        if ticket is None:
            ticket = self.parent.take_nowait(cost) or await self.parent.take(cost)
        return ticket

    async def settle(self, ticket: Ticket, actual: Cost) -> None:
        if ticket.owner is not self:
            await ticket.owner.settle(ticket, actual)
            return
        self.settle_local(ticket, actual)

    def settle_local(self, ticket: Ticket, actual: Cost) -> None:
        """``settle`` for a ticket this pool handed out (never awaits)."""
        remaining = self.remaining
        spent = self.spent
        for unit, amount in ticket.cost._amounts.items():
            remaining[unit] += amount
        for unit, amount in actual._amounts.items():
            remaining[unit] = remaining.get(unit, 0) - amount
            spent[unit] = spent[unit] + amount if unit in spent else amount

    def spent_cost(self) -> Cost:
        """What the stages settled against this pool, by unit."""
        return Cost(self.spent)
