"""The pure routing decision: no I/O, no clock, no state. ``Router`` reads budgets and drives it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Literal

from .._core import InfeasibleWork, UnknownModelPrice, accelerator_refusal, estimate_cost
from ._budget import RemainingBudget, plain
from ._decision import RouteDecision, RouteVerdict
from ._model import Backend, BackendKind, Ladder, Work

__all__ = ("Order", "arrange", "requirement_refusal", "select_backend", "worst_case_cost")

Order = Literal["kind", "listed"]
"""``"kind"``: LOCAL, LAN, CLOUD, SDK (the listed order within a kind); ``"listed"``: as given
(a preference list of models, strongest first)."""

ZERO = Decimal(0)


def arrange(candidates: Iterable[Backend], order: Order) -> list[Backend]:
    """The candidates in the order they are tried."""
    listed = list(candidates)
    if order == "listed":
        return listed
    return sorted(listed, key=lambda backend: backend.kind)  # stable within a kind


def requirement_refusal(backend: Backend, work: Work, *, allow_sdk: bool) -> str | None:
    """Why ``backend`` cannot take ``work`` whatever the budget, or ``None``."""
    if backend.kind is BackendKind.SDK and not allow_sdk:
        return "a paid SDK backend, and the caller did not allow SDKs (allow_sdk=False)"
    if work.tool is not None and work.tool not in backend.tools:
        return f"does not serve tool {work.tool!r}"
    missing = sorted(work.capabilities - backend.capabilities)
    if missing:
        return f"lacks capabilities {missing}"
    return accelerator_refusal(work.accelerators, Decimal(work.accelerator_memory_gib),
                               backend.free_accelerator_memory())


def worst_case_cost(backend: Backend, work: Work) -> Decimal:
    """The most ``work`` can cost on ``backend``: ``estimate_cost`` of its rates over the
    declared runtime, vCPUs, memory and accelerators, plus its token price of the declared
    input and output tokens. A backend with no price costs ``0``.

    Raises ``InfeasibleWork`` when a declared price cannot be applied (time-billed work without
    ``max_runtime_s``, token-billed work without tokens, accelerators on rates that price
    none) and ``UnknownModelPrice`` when a ``PriceTable`` does not know the model.
    """
    total = ZERO
    if backend.rates is not None:
        if work.max_runtime_s is None:
            raise InfeasibleWork("billed by time, and the work declares no max_runtime_s")
        total += estimate_cost(backend.rates, max_runtime_s=work.max_runtime_s,
                               vcpus=work.vcpus, memory_gib=work.memory_gib,
                               accelerators=work.accelerators)
    if backend.prices is not None:
        if not (work.input_tokens or work.max_output_tokens):
            raise InfeasibleWork("billed by tokens, and the work declares no input_tokens or "
                                 "max_output_tokens")
        total += backend.token_cost(input_tokens=work.input_tokens,
                                    output_tokens=work.max_output_tokens)
    return total


def select_backend(
    candidates: Sequence[Backend],
    work: Work,
    *,
    allow_sdk: bool = False,
    order: Order = "kind",
    budgets: Mapping[str, RemainingBudget] | None = None,
    failed: Mapping[str, str] | None = None,
    ladder: Ladder | None = None,
    remaining: RemainingBudget | None = None,
    unit: str = "usd",
) -> RouteDecision:
    """Decide where ``work`` goes: the first candidate, in ``order``, that meets every
    requirement and whose worst case fits what remains of the budget charged for it.

    ``budgets`` maps a candidate name to what remains of *its* budget (absent: no budget is
    charged for it, so only free work fits). A candidate whose worst case is zero is never
    refused for money. ``failed`` maps names to a reason they are out (a provider error in
    an earlier attempt). ``ladder`` with ``remaining`` (the router's budget) refuses the
    candidates ordered before the step in force. ``unit`` names the money unit in reasons.
    Never raises for a refusal: the decision's
    ``chosen`` is ``None`` when nothing is eligible.
    """
    budgets = budgets or {}
    failed = failed or {}
    arranged = arrange(candidates, order)
    skip_before: tuple[str, str] | None = None
    if ladder is not None and remaining is not None:
        step = ladder.step(remaining.fraction)
        if step is not None:
            below, target = step
            skip_before = (target, f"ladder: {_percent(remaining.fraction)} of the budget "
                                   f"left, below {_percent(below)}: start at {target!r}")
    skipping = skip_before is not None and any(b.name == skip_before[0] for b in arranged)
    verdicts: list[RouteVerdict] = []
    chosen = False
    for backend in arranged:
        if skip_before is not None and backend.name == skip_before[0]:
            skipping = False
        left = budgets.get(backend.name)
        reason = failed.get(backend.name)
        if reason is None and skipping:
            assert skip_before is not None
            reason = skip_before[1]
        if reason is None:
            reason = requirement_refusal(backend, work, allow_sdk=allow_sdk)
        cost: Decimal | None = None
        if reason is None:
            try:
                cost = worst_case_cost(backend, work)
            except (InfeasibleWork, UnknownModelPrice) as exc:
                reason = str(exc)
        if reason is None and cost:
            if left is None:
                reason = (f"worst case {plain(cost)} {unit} and no budget is charged for "
                          "it (paid work needs a budget)")
            elif cost > left.left:
                reason = (f"worst case {plain(cost)} {left.unit} is over what its budget has "
                          f"left: {left}")
        if reason is not None:
            verdicts.append(RouteVerdict(backend, "refused", reason, cost, left))
        else:
            verdicts.append(RouteVerdict(backend, "eligible" if chosen else "chosen",
                                    "free" if not cost else "fits", cost, left))
            chosen = True
    return RouteDecision(work, tuple(verdicts), allow_sdk, remaining)


def _percent(fraction: Decimal) -> str:
    """``Decimal("0.1999")`` -> ``"19.99%"``, without exponents or trailing zeros."""
    return format((fraction * 100).quantize(Decimal("0.01")).normalize(), "f") + "%"
