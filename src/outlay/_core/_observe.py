"""What outlay knows about the work a reservation is for: labels (``model``, ``tool``, ...)
and, when ``outlay.telemetry`` is configured, a span around the work.

``labels(...)`` is task-local (a ``contextvars`` variable). ``operation(kind, name)`` is what
the LLM clients (``kind="model"``) and the budget hook (``kind="tool"``) put around their
work: it labels the reservations made inside and, if a tracer was installed with
``set_tracer`` (by ``outlay.telemetry``), opens a span. Nothing here imports OpenTelemetry.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from types import MappingProxyType, TracebackType

_LABELS: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "outlay_labels", default=MappingProxyType({}))

#: ``(kind, name, labels) -> context manager`` installed by ``outlay.telemetry``, or None.
SpanFactory = Callable[[str, str, Mapping[str, str]], AbstractContextManager[object]]
#: ``attributes -> None``: puts attributes on the current span; installed with the factory.
Annotator = Callable[[Mapping[str, object]], None]
_tracer: SpanFactory | None = None
_annotator: Annotator | None = None


class labels(AbstractContextManager[None]):
    """Label the reservations made inside the block (``model="gpt-4o"``, ``tool="search"``;
    nested blocks add to the outer labels). ``RecordingStore`` writes them with each event
    and ``outlay.telemetry`` puts them on metrics; the spend report groups by them."""

    __slots__ = ("_token", "_values")

    def __init__(self, **values: str) -> None:
        for name, value in values.items():
            if not isinstance(value, str):
                raise TypeError(f"label {name!r} must be a str, got {type(value).__name__}")
        self._values = values
        self._token: contextvars.Token[Mapping[str, str]] | None = None

    def __enter__(self) -> None:
        self._token = _LABELS.set(MappingProxyType({**_LABELS.get(), **self._values}))

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        assert self._token is not None
        _LABELS.reset(self._token)
        self._token = None


def current_labels() -> Mapping[str, str]:
    """The labels set by the enclosing ``labels`` blocks."""
    return _LABELS.get()


class operation(AbstractContextManager[None]):
    """``labels(**{kind: name})`` plus, when telemetry is configured, a span around the
    block (``kind`` is ``"model"`` for an LLM call, ``"tool"`` for a tool call)."""

    __slots__ = ("_kind", "_labels", "_name", "_span")

    def __init__(self, kind: str, name: str) -> None:
        self._kind, self._name = kind, name
        self._labels = labels(**{kind: name})
        self._span: AbstractContextManager[object] = nullcontext()

    def __enter__(self) -> None:
        self._labels.__enter__()
        try:
            tracer = _tracer
            if tracer is not None:
                self._span = tracer(self._kind, self._name, current_labels())
            self._span.__enter__()
        except BaseException:
            self._labels.__exit__(None, None, None)
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self._span.__exit__(exc_type, exc, tb)
        finally:
            self._labels.__exit__(exc_type, exc, tb)


def set_tracer(tracer: SpanFactory | None, annotator: Annotator | None = None) -> None:
    """Install (or with ``None`` remove) the span factory ``operation`` uses and the
    ``annotate`` hook."""
    global _tracer, _annotator
    _tracer, _annotator = tracer, annotator


def annotate(attributes: Mapping[str, object]) -> None:
    """Put ``attributes`` on the current operation's span (nothing without telemetry)."""
    annotator = _annotator
    if annotator is not None:
        annotator(attributes)
