"""The spend event log: what happened to reservations over time, kept by a store in its own
key space (a table, a list) and bounded to the newest events.

A store's limits say where spend stands now; the events say how it got there, which a report
needs to draw spend over time, to tell reserved from actual, and to name refusals and the model
or tool behind a reservation. ``RecordingStore`` (``outlay.report``) writes them; any store that
implements ``Store.append_events``/``Store.events`` keeps them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from .._core import Amount
from ._base import LimitUsage

__all__ = ("DEFAULT_EVENT_MEMORY", "EVENT_KINDS", "SpendEvent", "decode_event", "encode_event")

#: How many events a store keeps by default (the newest); older ones are dropped.
DEFAULT_EVENT_MEMORY = 50_000

#: ``reserved`` (admitted: ``amounts`` held by key), ``committed`` (``amounts`` is the spend by
#: key), ``released`` (the hold given back), ``refused`` (``amounts`` asked for; ``limit`` is
#: the refusing limit as the store decided).
EVENT_KINDS = ("reserved", "committed", "released", "refused")


@dataclass(frozen=True, slots=True)
class SpendEvent:
    """One event of one reservation: ``at`` (UNIX seconds, the recorder's wall clock),
    ``kind`` (one of ``EVENT_KINDS``), the reservation id ``rid``, amounts by limit key,
    ``labels`` (``model``, ``tool``, anything the caller set) and, for a refusal, the limit
    that refused."""

    at: float
    kind: str
    rid: str
    amounts: Mapping[str, Amount] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    limit: LimitUsage | None = None

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"kind must be one of {EVENT_KINDS}, got {self.kind!r}")


def _amount(value: Amount) -> Any:
    """Whole units as JSON numbers, money as exact strings."""
    return str(value) if isinstance(value, Decimal) else value


def _parse(value: Any) -> Amount:
    return Decimal(value) if isinstance(value, str) else int(value)


def encode_event(event: SpendEvent) -> str:
    """One event as compact JSON (exact: money stays a decimal string)."""
    body: dict[str, Any] = {"at": event.at, "kind": event.kind, "rid": event.rid,
                            "amounts": {k: _amount(v) for k, v in event.amounts.items()}}
    if event.labels:
        body["labels"] = dict(event.labels)
    if event.limit is not None:
        u = event.limit
        body["limit"] = [u.key, _amount(u.cap), _amount(u.spent), _amount(u.held)]
    return json.dumps(body, separators=(",", ":"), sort_keys=True)


def decode_event(text: str | bytes) -> SpendEvent:
    """The inverse of ``encode_event``."""
    body = json.loads(text)
    limit = body.get("limit")
    return SpendEvent(
        float(body["at"]), body["kind"], body["rid"],
        {k: _parse(v) for k, v in body.get("amounts", {}).items()},
        dict(body.get("labels", {})),
        None if limit is None else LimitUsage(limit[0], _parse(limit[1]), _parse(limit[2]),
                                              _parse(limit[3])))
