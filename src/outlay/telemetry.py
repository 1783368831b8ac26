"""OpenTelemetry for outlay (the ``otel`` extra): metrics of spend, holds, refusals and
reservation latency, and spans around reservations, model calls and tool calls.

Off unless configured. ``import outlay`` never imports OpenTelemetry; importing this module
does. Turn it on where the store is made::

    from outlay.telemetry import instrument, ToolSpanHook
    store = instrument(store_from_url(url))          # metrics + reservation spans
    dispatcher = ToolDispatcher(tools, [ToolSpanHook(), ...])   # a span per tool call

``instrument`` also installs spans around the LLM clients' calls (``chat {model}``), until
``uninstrument()``. Providers default to the global ones (``opentelemetry.metrics`` /
``opentelemetry.trace``), so an application that configured OpenTelemetry gets outlay's
figures where it sends the rest.

Metrics (meter ``outlay``), each with the attributes ``outlay.unit``, ``outlay.limit`` (the
limit key), ``outlay.window`` (``run``, ``day``, ``month``...), ``outlay.principal`` and, where
the work was labelled, ``gen_ai.request.model`` and ``gen_ai.tool.name``:

- ``outlay.spend`` (counter): committed spend, per limit;
- ``outlay.held`` (up-down counter): what live reservations hold, per limit;
- ``outlay.refusals`` (counter): refused reservations, per refusing limit;
- ``outlay.reservation.duration`` (histogram, seconds): how long the store took to decide,
  with ``outlay.admitted``.

Money is exact ``Decimal`` in outlay; OpenTelemetry's instruments take floats, so a money
figure is converted at this boundary only (exact for amounts a float represents, to about 15
significant digits otherwise). Spans follow the GenAI semantic conventions where they fit:
``chat {model}`` with ``gen_ai.operation.name="chat"``, ``gen_ai.request.model`` and
``gen_ai.usage.input_tokens``/``output_tokens``; ``execute_tool {name}`` with
``gen_ai.operation.name="execute_tool"`` and ``gen_ai.tool.name``; ``outlay.reserve``,
``outlay.commit`` and ``outlay.release`` around store operations.
"""

from __future__ import annotations

import functools
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from decimal import Decimal
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.trace import Span, Status, StatusCode

from ._core import Amount, current_labels, set_tracer
from .hooks import Continue, ToolDispatchHook, ToolInvocation, ToolInvocationResult
from .report import split_key
from .stores._base import Admission, Store
from .stores._wrapper import REMEMBERED, DelegatingStore

__all__ = ("TelemetryStore", "ToolSpanHook", "instrument", "uninstrument")

_LABEL_ATTRIBUTES = {"model": "gen_ai.request.model", "tool": "gen_ai.tool.name"}


def _number(amount: Amount) -> int | float:
    """The figure OpenTelemetry takes: ints as they are, money as float (see the module)."""
    return float(amount) if isinstance(amount, Decimal) else amount


@functools.lru_cache(maxsize=4096)
def _key_attributes(key: str) -> tuple[tuple[str, str], ...]:
    principal, unit, period = split_key(key)
    return (("outlay.unit", unit), ("outlay.limit", key),
            ("outlay.window", period.partition(":")[0] or "-"), ("outlay.principal", principal))


def _attributes(key: str, labels: Mapping[str, str]) -> dict[str, str]:
    attributes = dict(_key_attributes(key))
    for label, value in labels.items():
        attributes[_LABEL_ATTRIBUTES.get(label, f"outlay.label.{label}")] = value
    return attributes


class TelemetryStore(DelegatingStore):
    """A store that does what ``inner`` does and exports metrics and spans of it (see the
    module). Build it with ``instrument(store)``. ``spans=False`` keeps the metrics and drops
    the per-operation spans (they cost most: see ``benchmarks/bench_observe.py``)."""

    def __init__(self, inner: Store, *, meter_provider: metrics.MeterProvider | None = None,
                 tracer_provider: trace.TracerProvider | None = None,
                 spans: bool = True) -> None:
        super().__init__(inner)
        self._spans = spans
        meter = metrics.get_meter("outlay", meter_provider=meter_provider)
        self._tracer = trace.get_tracer("outlay", tracer_provider=tracer_provider)
        self._spend = meter.create_counter("outlay.spend", description="committed spend")
        self._held = meter.create_up_down_counter(
            "outlay.held", description="what live reservations hold")
        self._refusals = meter.create_counter(
            "outlay.refusals", unit="{reservation}", description="refused reservations")
        self._latency = meter.create_histogram(
            "outlay.reservation.duration", unit="s",
            description="how long the store took to admit or refuse a reservation")
        self._live: OrderedDict[str, tuple[dict[str, Amount], dict[str, str]]] = OrderedDict()

    async def reserve(
        self,
        rid: str,
        amounts: Mapping[str, Amount],
        *,
        lease: float,
        defaults: Mapping[str, Amount] | None = None,
        expire_at: Mapping[str, float] | None = None,
    ) -> Admission:
        labels = dict(current_labels())
        with self._span("outlay.reserve") as span:
            span.set_attributes({"outlay.reservation.id": rid, "outlay.limits": len(amounts),
                                 **{_LABEL_ATTRIBUTES.get(k, f"outlay.label.{k}"): v
                                    for k, v in labels.items()}})
            started = time.perf_counter()
            admission = await super().reserve(rid, amounts, lease=lease, defaults=defaults,
                                              expire_at=expire_at)
            self._latency.record(time.perf_counter() - started,
                                 {"outlay.admitted": admission.admitted})
            span.set_attribute("outlay.admitted", admission.admitted)
            if admission.admitted:
                if rid not in self._live:
                    self._remember(rid, dict(amounts), labels)
                    for key, amount in amounts.items():
                        self._held.add(_number(amount), _attributes(key, labels))
            elif admission.refused is not None:
                span.set_attribute("outlay.refused.limit", admission.refused.key)
                self._refusals.add(1, _attributes(admission.refused.key, labels))
        return admission

    async def commit(self, rid: str, actual: Mapping[str, Amount] | None = None) -> bool:
        with self._span("outlay.commit", {"outlay.reservation.id": rid}):
            done = await super().commit(rid, actual)
            live = self._live.pop(rid, None)
            if done and live is not None:
                held, labels = live
                for key, amount in held.items():
                    attributes = _attributes(key, labels)
                    self._held.add(-_number(amount), attributes)
                    self._spend.add(_number((actual or {}).get(key, amount)), attributes)
        return done

    async def release(self, rid: str) -> bool:
        with self._span("outlay.release", {"outlay.reservation.id": rid}):
            done = await super().release(rid)
            live = self._live.pop(rid, None)
            if done and live is not None:
                held, labels = live
                for key, amount in held.items():
                    self._held.add(-_number(amount), _attributes(key, labels))
        return done

    def _span(self, name: str, attributes: Mapping[str, str] | None = None
              ) -> AbstractContextManager[Span]:
        if not self._spans:
            return nullcontext(trace.INVALID_SPAN)
        return self._tracer.start_as_current_span(name, attributes=attributes)

    def _remember(self, rid: str, amounts: dict[str, Amount], labels: dict[str, str]) -> None:
        self._live[rid] = (amounts, labels)
        if len(self._live) > REMEMBERED:
            self._live.popitem(last=False)


def instrument(store: Store, *, meter_provider: metrics.MeterProvider | None = None,
               tracer_provider: trace.TracerProvider | None = None,
               spans: bool = True) -> TelemetryStore:
    """Wrap ``store`` to export its metrics (and, unless ``spans=False``, a span per store
    operation), and put a span around every LLM client call (``chat {model}``) from now on
    (``uninstrument()`` stops that)."""
    tracer = trace.get_tracer("outlay", tracer_provider=tracer_provider)

    @contextmanager
    def model_span(kind: str, name: str, labels: Mapping[str, str]) -> Iterator[Span]:
        operation = "chat" if kind == "model" else "execute_tool"
        attributes: dict[str, Any] = {"gen_ai.operation.name": operation}
        attributes.update({_LABEL_ATTRIBUTES.get(k, f"outlay.label.{k}"): v
                           for k, v in labels.items()})
        with tracer.start_as_current_span(f"{operation} {name}", attributes=attributes,
                                          kind=trace.SpanKind.CLIENT) as span:
            yield span

    def annotate(attributes: Mapping[str, object]) -> None:
        span = trace.get_current_span()
        for name, value in attributes.items():
            if isinstance(value, str | bool | int | float):
                span.set_attribute(name, value)

    factory: Any = model_span
    set_tracer(factory, annotate)
    return TelemetryStore(store, meter_provider=meter_provider, tracer_provider=tracer_provider,
                          spans=spans)


def uninstrument() -> None:
    """Stop putting spans around LLM client calls (wrapped stores keep exporting)."""
    set_tracer(None)


class ToolSpanHook(ToolDispatchHook):
    """A span per tool call, ``execute_tool {name}`` (GenAI conventions), from the hook's
    ``before`` to its ``after`` or error; first in the chain, it covers the whole call."""

    def __init__(self, *, tracer_provider: trace.TracerProvider | None = None) -> None:
        self._tracer = trace.get_tracer("outlay", tracer_provider=tracer_provider)

    async def before_invocation(self, invocation: ToolInvocation) -> Continue:
        span = self._tracer.start_span(
            f"execute_tool {invocation.tool_name}", kind=trace.SpanKind.INTERNAL,
            attributes={"gen_ai.operation.name": "execute_tool",
                        "gen_ai.tool.name": invocation.tool_name,
                        "gen_ai.tool.call.id": invocation.call_id,
                        **({"outlay.principal": invocation.principal}
                           if invocation.principal else {})})
        return Continue(span)

    async def after_invocation(self, invocation: ToolInvocation, result: ToolInvocationResult,
                               state: Any) -> None:
        span: Span = state
        if result.skipped:
            span.set_attribute("outlay.skipped", True)
            if result.reason:
                span.set_attribute("outlay.skip.reason", result.reason)
        if result.is_error:
            span.set_status(Status(StatusCode.ERROR))
        span.end()

    async def on_invocation_error(self, invocation: ToolInvocation, error: BaseException,
                                  state: Any) -> None:
        span: Span = state
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.end()


