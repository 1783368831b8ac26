"""A tool or a graph stage with alternatives: one callable, routed per call."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio.to_thread

from .._core import ConfigurationError
from ._model import Work
from ._router import RouteChoice, Router

__all__ = ("alternatives",)


def alternatives(
    router: Router,
    implementations: Mapping[str, Callable[..., Any]],
    *,
    work: Work | Callable[..., Work],
    allow_sdk: bool | None = None,
) -> Callable[..., Awaitable[Any]]:
    """One async callable that runs, per call, the implementation of the backend ``router``
    picks for ``work`` (a ``Work``, or a function of the call's arguments returning one).

    ``implementations`` maps candidate names to callables with one signature (the wrapper
    takes the first one's name and signature, so a ``ToolDispatcher`` validates the model's
    arguments and a ``StageRegistry`` sees whether it takes a config). Only those candidates
    are considered. Async callables are awaited, plain ones run in a worker thread. The chosen
    candidate's worst case is held on its budget and committed when the call returns; a
    failing implementation falls back as ``Router.run`` does, and ``NoRoute`` is raised when
    none is left. Raises ``ConfigurationError`` for a name that is not a candidate.
    """
    if not isinstance(router, Router):
        raise TypeError(f"router must be a Router, got {type(router).__name__}")
    if not isinstance(implementations, Mapping) or not implementations:
        raise TypeError("implementations must be a non-empty mapping candidate name -> callable")
    names = {backend.name for backend in router.candidates}
    unknown = sorted(set(implementations) - names)
    if unknown:
        raise ConfigurationError(f"implementations for unknown candidates {unknown} "
                                 f"(candidates: {sorted(names)})")
    for name, fn in implementations.items():
        if not callable(fn):
            raise TypeError(f"implementation of {name!r} is not callable: {fn!r}")
    if not isinstance(work, Work) and not callable(work):
        raise TypeError(f"work must be a Work or a function returning one, got {work!r}")
    impls = dict(implementations)
    routed = router.replace([b for b in router.candidates if b.name in impls])
    first = next(iter(impls.values()))

    @functools.wraps(first)
    async def call(*args: Any, **kwargs: Any) -> Any:
        needed = work if isinstance(work, Work) else work(*args, **kwargs)

        async def attempt(choice: RouteChoice) -> Any:
            fn = impls[choice.backend.name]
            if _is_async(fn):
                return await fn(*args, **kwargs)
            return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))

        return (await routed.run(needed, attempt, allow_sdk=allow_sdk)).value

    call.router = routed  # type: ignore[attr-defined]
    return call


def _is_async(fn: Callable[..., Any]) -> bool:
    method = getattr(fn, "__call__", None)  # noqa: B004 - an async __call__ on an instance
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(method)
