"""What candidates offer and what work needs: plain frozen data, checked when built."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

from .._core import ConfigurationError, CostRates, check_count, check_money, check_quantity
from .._pricing import PriceTable, TokenPrices, token_cost

if TYPE_CHECKING:
    from ._budget import RouteBudget

__all__ = ("Accelerator", "Backend", "BackendKind", "Ladder", "Work")


class BackendKind(enum.IntEnum):
    """Where a backend runs, in the order the router tries them: ``LOCAL`` (this machine),
    ``LAN`` (a machine nearby), ``CLOUD`` (rented, billed), ``SDK`` (a paid API, only when the
    caller allows it)."""

    LOCAL = 0
    LAN = 1
    CLOUD = 2
    SDK = 3

    def __str__(self) -> str:
        return self.name.lower()


def _names(value: Iterable[str], what: str) -> frozenset[str]:
    if isinstance(value, str):
        raise TypeError(f"{what} must be a collection of str, not one str: {value!r}")
    names = frozenset(value)
    for name in names:
        if not isinstance(name, str) or not name:
            raise TypeError(f"{what} must hold non-empty str, got {name!r}")
    return names


@dataclass(frozen=True, slots=True)
class Accelerator:
    """One accelerator (GPU, TPU) of a backend: ``memory_gib`` of device memory; ``free`` is
    False while something else uses it (a busy accelerator never counts as available)."""

    name: str
    memory_gib: Decimal | int
    free: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"accelerator name must be a non-empty str, got {self.name!r}")
        object.__setattr__(self, "memory_gib", check_quantity(self.memory_gib, "memory_gib"))
        if not isinstance(self.free, bool):
            raise TypeError(f"free must be a bool, got {self.free!r}")


@dataclass(frozen=True, slots=True)
class Backend:
    """A candidate the router may pick: a machine, a service or a model.

    ``kind`` orders it (a ``BackendKind``, or its name: ``"local"``); ``node`` names the
    machine (kept in every decision record). ``accelerators`` are its devices, ``tools`` the
    tool ids it serves, ``capabilities`` what else it offers (``"vision"``, ``"cuda"``).
    Prices: ``rates`` for work billed by time (``CostRates``), ``prices`` for work billed by
    tokens (``TokenPrices``, or a ``PriceTable`` looked up by ``model``, which defaults to
    ``name``); both add up. A ``cloud`` or ``sdk`` backend must declare one (pass
    ``CostRates()`` to say it is free), so an unpriced paid backend is never taken as free; a
    ``local`` or ``lan`` one without prices costs nothing. ``budget`` is the budget charged for
    this backend (default: the router's). Raises ``TypeError``/``ValueError`` for bad fields.
    """

    name: str
    kind: BackendKind
    node: str | None = None
    accelerators: tuple[Accelerator, ...] = ()
    tools: AbstractSet[str] = frozenset()
    capabilities: AbstractSet[str] = frozenset()
    rates: CostRates | None = None
    prices: TokenPrices | PriceTable | None = None
    model: str | None = None
    budget: RouteBudget | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"backend name must be a non-empty str, got {self.name!r}")
        kind: object = self.kind
        if isinstance(kind, str):
            try:
                kind = BackendKind[kind.upper()]
            except KeyError:
                raise ValueError(f"kind must be one of local, lan, cloud, sdk; got {kind!r}"
                                 ) from None
        if not isinstance(kind, BackendKind):
            raise TypeError(f"kind must be a BackendKind, got {kind!r}")
        object.__setattr__(self, "kind", kind)
        if self.node is not None and (not isinstance(self.node, str) or not self.node):
            raise TypeError(f"node must be a non-empty str or None, got {self.node!r}")
        accelerators = tuple(self.accelerators)
        for device in accelerators:
            if not isinstance(device, Accelerator):
                raise TypeError(f"accelerators must be Accelerator, got {device!r}")
        object.__setattr__(self, "accelerators", accelerators)
        object.__setattr__(self, "tools", _names(self.tools, "tools"))
        object.__setattr__(self, "capabilities", _names(self.capabilities, "capabilities"))
        if self.rates is not None and not isinstance(self.rates, CostRates):
            raise TypeError(f"rates must be CostRates, got {type(self.rates).__name__}")
        if self.prices is not None and not isinstance(self.prices, TokenPrices | PriceTable):
            raise TypeError(f"prices must be TokenPrices or a PriceTable, "
                            f"got {type(self.prices).__name__}")
        if self.model is not None and (not isinstance(self.model, str) or not self.model):
            raise TypeError(f"model must be a non-empty str or None, got {self.model!r}")
        if kind >= BackendKind.CLOUD and self.rates is None and self.prices is None:
            raise ValueError(f"{kind} backend {self.name!r} declares no price: pass rates= "
                             "(CostRates) or prices= (TokenPrices / PriceTable); CostRates() "
                             "says it is free")

    @property
    def model_name(self) -> str:
        """The model id sent to the provider: ``model``, else ``name``."""
        return self.model or self.name

    def token_cost(self, *, input_tokens: int, output_tokens: int,
                   cached_input_tokens: int = 0) -> Decimal:
        """Exact price of ``input_tokens`` + ``output_tokens`` on this backend's token prices
        (``0`` when it has none). Raises ``UnknownModelPrice`` when a ``PriceTable`` does not
        know ``model_name``, ``TypeError``/``ValueError`` for bad counts."""
        if self.prices is None:
            return Decimal(0)
        if isinstance(self.prices, TokenPrices):
            return token_cost(self.prices, input_tokens=input_tokens, output_tokens=output_tokens,
                              cached_input_tokens=cached_input_tokens)
        return self.prices.cost(self.model_name, input_tokens=input_tokens,
                                output_tokens=output_tokens,
                                cached_input_tokens=cached_input_tokens)

    def free_accelerator_memory(self) -> list[Decimal]:
        """The memory of each free accelerator, what ``accelerator_refusal`` is asked about."""
        return [Decimal(device.memory_gib) for device in self.accelerators if device.free]


@dataclass(frozen=True, slots=True)
class Work:
    """What a piece of work needs, and the worst case it may use.

    Needs: ``tool`` (a tool id some backend must serve), ``capabilities``, ``accelerators``
    devices of at least ``accelerator_memory_gib`` each (asking for memory implies one device).
    Worst case, for the price: ``max_runtime_s``, ``vcpus``, ``memory_gib`` (work billed by
    time; a time-billed backend refuses work without ``max_runtime_s``) and ``input_tokens`` +
    ``max_output_tokens`` (work billed by tokens). ``label`` names it in records and logs.
    """

    tool: str | None = None
    capabilities: AbstractSet[str] = frozenset()
    accelerators: int = 0
    accelerator_memory_gib: Decimal | int = 0
    max_runtime_s: Decimal | int | None = None
    vcpus: Decimal | int = 0
    memory_gib: Decimal | int = 0
    input_tokens: int = 0
    max_output_tokens: int = 0
    label: str = ""

    def __post_init__(self) -> None:
        if self.tool is not None and (not isinstance(self.tool, str) or not self.tool):
            raise TypeError(f"tool must be a non-empty str or None, got {self.tool!r}")
        object.__setattr__(self, "capabilities", _names(self.capabilities, "capabilities"))
        check_count(self.accelerators, "accelerators")
        memory = check_quantity(self.accelerator_memory_gib, "accelerator_memory_gib")
        object.__setattr__(self, "accelerator_memory_gib", memory)
        if memory and not self.accelerators:
            object.__setattr__(self, "accelerators", 1)
        if self.max_runtime_s is not None:
            object.__setattr__(self, "max_runtime_s",
                               check_quantity(self.max_runtime_s, "max_runtime_s"))
        object.__setattr__(self, "vcpus", check_quantity(self.vcpus, "vcpus"))
        object.__setattr__(self, "memory_gib", check_quantity(self.memory_gib, "memory_gib"))
        check_count(self.input_tokens, "input_tokens")
        check_count(self.max_output_tokens, "max_output_tokens")
        if not isinstance(self.label, str):
            raise TypeError(f"label must be a str, got {self.label!r}")

    def describe(self) -> str:
        """A short name for records: ``label``, else the tool, else ``"work"``."""
        return self.label or (f"tool {self.tool!r}" if self.tool else "work")


@dataclass(frozen=True, slots=True)
class Ladder:
    """Step down as the budget runs out: ``Ladder({Decimal("0.20"): "cheap",
    Decimal("0.05"): "local"})`` starts at candidate ``"cheap"`` once less than 20% of the
    budget is left, and at ``"local"`` below 5%. Candidates ordered before the step's target
    are refused with the reason. Fractions are ``Decimal`` in (0, 1]."""

    steps: Mapping[Decimal, str]

    def __post_init__(self) -> None:
        if not isinstance(self.steps, Mapping) or not self.steps:
            raise TypeError("steps must be a non-empty mapping fraction -> candidate name")
        ordered: dict[Decimal, str] = {}
        for below, target in sorted(self.steps.items()):
            check_money(below, "ladder fraction")
            if not 0 < below <= 1:
                raise ValueError(f"ladder fractions are in (0, 1], got {below}")
            if not isinstance(target, str) or not target:
                raise TypeError(f"ladder targets are candidate names, got {target!r}")
            ordered[below] = target
        object.__setattr__(self, "steps", ordered)

    def step(self, fraction: Decimal) -> tuple[Decimal, str] | None:
        """The step in force when ``fraction`` of the budget is left: the lowest threshold
        that ``fraction`` is below, or ``None``."""
        for below, target in self.steps.items():  # ascending
            if fraction < below:
                return below, target
        return None

    def targets(self) -> set[str]:
        """Every candidate name the ladder steps to."""
        return set(self.steps.values())

    def check(self, names: Iterable[str]) -> None:
        """Raise ``ConfigurationError`` if a step names no candidate in ``names``."""
        unknown = sorted(self.targets() - set(names))
        if unknown:
            raise ConfigurationError(f"the ladder steps to unknown candidates {unknown}")
