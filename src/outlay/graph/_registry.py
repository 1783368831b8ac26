"""Stage ids -> the callable that runs the stage and a spec of its declared effects."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from .._core import CompositionError
from ._cost import FREE, Cost

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class StageSpec:
    """What a registered stage declares and how it is called.

    ``cost`` is charged before the stage runs (``FREE`` charges nothing). ``is_async`` is False
    for a plain function, which the executor runs in a worker thread. ``takes_config`` is True
    when the callable accepts a second positional argument, the ``Stage`` node's ``config``.
    """

    id: str
    fn: Callable[..., Any]
    cost: Cost = FREE
    description: str = ""
    is_async: bool = True
    takes_config: bool = False


def _is_async(fn: Callable[..., Any]) -> bool:
    call = getattr(fn, "__call__", None)  # noqa: B004 - an async __call__ on an instance
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)


def _takes_config(fn: Callable[..., Any]) -> bool:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) >= 2:
        return True
    if not positional:
        raise TypeError(f"a stage callable must take the input as its first argument: {fn!r}")
    return False


class StageRegistry:
    """Maps stage ids to callables and their specs.

    A stage callable takes the input (and, if it accepts a second positional argument, the
    node's ``config``) and returns the output, or ``Reported(output, cost)`` to report the
    actual cost. ``async def`` callables run on the event loop; plain functions run in a worker
    thread.
    """

    def __init__(self) -> None:
        self._specs: dict[str, StageSpec] = {}

    def register(
        self,
        stage_id: str,
        fn: Callable[..., Any],
        *,
        cost: Cost | None = None,
        description: str = "",
    ) -> StageSpec:
        """Register ``fn`` as ``stage_id``; ``ValueError`` if the id is taken, ``TypeError``
        for a non-callable or a cost that is not a ``Cost``."""
        if not isinstance(stage_id, str) or not stage_id:
            raise TypeError(f"stage id must be a non-empty str, got {stage_id!r}")
        if not callable(fn):
            raise TypeError(f"stage {stage_id!r}: {fn!r} is not callable")
        if cost is None:
            cost = FREE
        if not isinstance(cost, Cost):
            raise TypeError(f"stage {stage_id!r}: cost must be a Cost, got {type(cost).__name__}")
        if stage_id in self._specs:
            raise ValueError(f"stage id {stage_id!r} is already registered")
        spec = StageSpec(stage_id, fn, cost, description, _is_async(fn), _takes_config(fn))
        self._specs[stage_id] = spec
        return spec

    def stage(
        self, stage_id: str, *, cost: Cost | None = None, description: str = ""
    ) -> Callable[[F], F]:
        """Decorator form of ``register``; returns the function unchanged."""

        def decorate(fn: F) -> F:
            self.register(stage_id, fn, cost=cost, description=description)
            return fn

        return decorate

    def spec(self, stage_id: str, *, path: str | None = None) -> StageSpec:
        """The spec of ``stage_id``; ``CompositionError`` naming the known ids if unknown."""
        try:
            return self._specs[stage_id]
        except KeyError:
            known = ", ".join(sorted(self._specs)[:20]) or "none"
            raise CompositionError(f"unknown stage id {stage_id!r} (registered: {known})",
                                   path=path) from None

    def __contains__(self, stage_id: object) -> bool:
        return stage_id in self._specs

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)
