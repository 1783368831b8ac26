"""What the agents spent: a spend report from any store, as a terminal table, JSON, or a
self-contained HTML page with inline SVG charts of spend over time against each cap.

Two sources, read through the ``Store`` protocol only:

- the **limits** (``Store.limits``): every store that can list them gives per run and per
  principal spend, holds and caps, now;
- the **event log** (``Store.events``), written by ``RecordingStore``: when each reservation was
  made, held, settled or refused, by which model or tool (``labels(model=..., tool=...)``).
  It gives reserved vs actual, refusals with their reasons, and spend over time. Without it the
  report says so and shows the limits alone.

``await SpendReport.from_store(store)`` reads both once; it works on a run in progress (holds
show as held; reservations not yet settled count as reserved only).
"""

from __future__ import annotations

import dataclasses
import html
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ._core import (
    Amount,
    check_count,
    current_labels,
    labels,
    log,
    parse_limit_key,
    refused,
)
from ._format import Paint, json_value, plain, table
from ._ledger import UsageLedger
from .stores._base import Admission, LimitUsage, Store
from .stores._events import DEFAULT_EVENT_MEMORY, SpendEvent
from .stores._wrapper import REMEMBERED, DelegatingStore

__all__ = (
    "PeriodTotal", "PrincipalSpend", "RecordingStore", "RefusedReservation", "ReservedActual",
    "SpendEvent", "SpendReport", "current_labels", "labels", "period_totals", "rank_principals",
    "split_key",
)

# -- reading limit keys ----------------------------------------------------------------------


def split_key(key: str) -> tuple[str, str, str]:
    """(principal, unit, period) of a limit key. A key ``Principals`` made is parsed exactly;
    any other is read as ``<name>/<unit>`` (``run/usd`` -> principal ``run``, unit ``usd``) or
    a bare unit (``usd`` -> principal ``-``), with no period (``""``)."""
    parsed = parse_limit_key(key)
    if parsed is not None:
        return parsed.principal, parsed.unit, parsed.period
    head, _, unit = key.rpartition("/")
    return head or "-", unit, ""


#: On a tie, a ranking names the longer calendar window (a month holds its days and its runs).
_SPAN = {"month": 5, "week": 4, "day": 3, "hour": 2, "run": 1}


@dataclass(frozen=True, slots=True)
class PrincipalSpend:
    """A principal's spend in one unit, by its largest window: ``spent`` and ``held`` added
    up over the ``periods`` of ``window`` (periods of one window never overlap)."""

    principal: str
    unit: str
    spent: Amount
    held: Amount
    window: str
    periods: int


def rank_principals(usages: Sequence[LimitUsage], unit: str, *,
                    period: str | None = None) -> list[PrincipalSpend]:
    """Principals by spend in ``unit``, biggest first. Each is measured by its largest window,
    so the same money in its run and its month is not counted twice."""
    figures: dict[str, dict[str, list[Any]]] = {}
    for usage in usages:
        principal, key_unit, key_period = split_key(usage.key)
        if key_unit != unit or (period is not None and key_period != period):
            continue
        window = key_period.partition(":")[0]
        entry = figures.setdefault(principal, {}).setdefault(window, [0, 0, 0])
        entry[0] += usage.spent
        entry[1] += usage.held
        entry[2] += 1
    ranked = []
    for principal, windows in figures.items():
        window, (spent, held, periods) = max(
            windows.items(), key=lambda kv: (kv[1][0], kv[1][1], _SPAN.get(kv[0], 0), kv[0]))
        ranked.append(PrincipalSpend(principal, unit, spent, held, window or "-", periods))
    ranked.sort(key=lambda r: (-r.spent, r.principal))
    return ranked


@dataclass(frozen=True, slots=True)
class PeriodTotal:
    """What one period of one unit holds, adding up only the outermost principals (a child's
    spend is already in its ancestors' figures)."""

    period: str
    unit: str
    limits: int
    spent: Amount
    held: Amount


def period_totals(usages: Sequence[LimitUsage]) -> list[PeriodTotal]:
    """Totals by (period, unit) of the limits ``Principals`` made, sorted."""
    parsed_keys = [(parse_limit_key(u.key), u) for u in usages]
    present = {(p.principal, p.unit, p.period) for p, _ in parsed_keys if p is not None}
    totals: dict[tuple[str, str], list[Any]] = {}
    for parsed, usage in parsed_keys:
        if parsed is None:
            continue
        entry = totals.setdefault((parsed.period, parsed.unit), [0, 0, 0])
        entry[0] += 1
        parts = parsed.principal.split("/")
        if any(("/".join(parts[:n]), parsed.unit, parsed.period) in present
               for n in range(1, len(parts))):
            continue
        entry[1] += usage.spent
        entry[2] += usage.held
    return [PeriodTotal(period, unit, n, spent, held)
            for (period, unit), (n, spent, held) in sorted(totals.items())]


# -- recording -------------------------------------------------------------------------------


class RecordingStore(DelegatingStore):
    """A store that does what ``inner`` does and also writes every reservation's events
    (reserved, committed, released, refused) to ``inner``'s event log, with the ``labels``
    in force, keeping the newest ``keep``.

    Use it where the store is made: ``Principals(RecordingStore(store_from_url(url)), ...)``.
    Recording is best effort: an event that cannot be written is logged
    (``outlay.report.record_failed``) and dropped; the reservation's outcome stands. Each
    operation costs one more store call. Attributes it does not have (``namespace``,
    ``path``...) are ``inner``'s.
    """

    def __init__(self, inner: Store, *, keep: int = DEFAULT_EVENT_MEMORY,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(inner)
        if check_count(keep, "keep") < 1:
            raise ValueError("keep must be at least 1")
        self._keep = keep
        self._clock = clock
        # What this process reserved (the newest REMEMBERED), so a commit's event carries
        # every key's settled amount.
        self._held: OrderedDict[str, Mapping[str, Amount]] = OrderedDict()

    async def _record(self, kind: str, rid: str, amounts: Mapping[str, Amount],
                      limit: LimitUsage | None = None) -> None:
        event = SpendEvent(self._clock(), kind, rid, dict(amounts), dict(current_labels()),
                           limit)
        try:
            await self._inner.append_events([event], keep=self._keep)
        except Exception as exc:  # best effort: the reservation's outcome stands
            log.warn("outlay.report.record_failed", reservation=rid, kind=kind,
                      error=str(exc), error_type=type(exc).__name__)

    async def reserve(
        self,
        rid: str,
        amounts: Mapping[str, Amount],
        *,
        lease: float,
        defaults: Mapping[str, Amount] | None = None,
        expire_at: Mapping[str, float] | None = None,
    ) -> Admission:
        admission = await super().reserve(rid, amounts, lease=lease, defaults=defaults,
                                          expire_at=expire_at)
        if admission.admitted:
            if rid not in self._held:
                self._held[rid] = dict(amounts)
                if len(self._held) > REMEMBERED:
                    self._held.popitem(last=False)
                await self._record("reserved", rid, amounts)
        else:
            await self._record("refused", rid, amounts, admission.refused)
        return admission

    async def commit(self, rid: str, actual: Mapping[str, Amount] | None = None) -> bool:
        done = await super().commit(rid, actual)
        held = self._held.pop(rid, None)
        if done:
            await self._record("committed", rid, {**(held or {}), **(actual or {})})
        return done

    async def release(self, rid: str) -> bool:
        done = await super().release(rid)
        self._held.pop(rid, None)
        if done:
            await self._record("released", rid, {})
        return done

    def release_abandoned(self, rid: str) -> None:
        self._held.pop(rid, None)
        super().release_abandoned(rid)


# -- the report ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Reservation:
    """One reservation as the events tell it."""

    rid: str
    at: float
    principal: str
    run: str
    labels: Mapping[str, str]
    reserved: dict[str, Amount]
    actual: dict[str, Amount] | None = None
    state: str = "held"


def _by_unit(amounts: Mapping[str, Amount]) -> dict[str, Amount]:
    """Amounts by unit: a reservation holds the same amount of a unit on every window of
    every principal in its chain, so the largest per unit is what it took."""
    units: dict[str, Amount] = {}
    for key, amount in amounts.items():
        unit = split_key(key)[1]
        units[unit] = max(units.get(unit, amount), amount)
    return units


def _owner(keys: Sequence[str]) -> tuple[str, str]:
    """(deepest principal, run id or ``-``) of a reservation's keys."""
    split = [split_key(key) for key in keys]
    named = [who for who, _, _ in split if who != "-"]
    principal = max(named, key=lambda who: (who.count("/"), len(who), who), default="-")
    run = next((period.removeprefix("run:") for _, _, period in split
                if period.startswith("run:")), "-")
    return principal, run


@dataclass(frozen=True, slots=True)
class RefusedReservation:
    """A refused reservation: when, for whom, by which limit, and why in words."""

    at: float
    principal: str
    run: str
    key: str
    requested: Amount
    cap: Amount
    spent: Amount
    held: Amount
    labels: Mapping[str, str]

    @property
    def reason(self) -> str:
        """What ``BudgetExceeded`` said (or would have said) for this refusal."""
        cap, spent, held, requested = (_as_written(v) for v in
                                       (self.cap, self.spent, self.held, self.requested))
        return refused(Admission(False, LimitUsage(self.key, cap, spent, held), requested)).reason


@dataclass(frozen=True, slots=True)
class ReservedActual:
    """Reserved vs actual for one value of ``by`` (a run, a principal, a model, a tool) in
    one unit: how many reservations, what they held, what committed ones spent (released
    ones spent nothing), and how many were refused."""

    by: str
    value: str
    unit: str
    reservations: int
    reserved: Amount
    actual: Amount
    refused: int


@dataclass(frozen=True)
class SpendReport:
    """A snapshot of limits and events, with the tables and charts built from them.

    Build it with ``await SpendReport.from_store(store)``. ``ledgers`` (unit ->
    ``UsageLedger``, e.g. ``{"usd": budgets.ledger("usd")}``) adds each principal's
    high-water mark beside its spend.
    """

    limits: tuple[LimitUsage, ...]
    events: tuple[SpendEvent, ...] | None
    generated_at: float
    ledgers: Mapping[str, UsageLedger] = field(default_factory=dict)

    @classmethod
    async def from_store(cls, store: Store, *, prefix: str = "",
                         ledgers: Mapping[str, UsageLedger] | None = None,
                         events: int | None = None) -> SpendReport:
        """Read ``store``'s limits (under ``prefix``) and event log (the newest ``events``,
        default all it keeps). A store without an event log gives a report of limits only."""
        usages = await store.limits(prefix)
        try:
            log: tuple[SpendEvent, ...] | None = tuple(await store.events(limit=events))
        except NotImplementedError:
            log = None
        if log is not None and prefix:
            log = tuple(e for e in log if any(k.startswith(prefix) for k in e.amounts)
                        or e.kind == "released")
        return cls(tuple(usages), log, time.time(), dict(ledgers or {}))

    # -- figures ---------------------------------------------------------------------------

    def units(self) -> list[str]:
        return sorted({split_key(u.key)[1] for u in self.limits})

    def runs(self) -> list[PeriodTotal]:
        """Spend and holds of every run period, by unit (outermost principals only)."""
        return [t for t in period_totals(self.limits) if t.period.startswith("run:")]

    def biggest_spenders(self, unit: str, n: int = 10) -> list[PrincipalSpend]:
        return rank_principals(self.limits, unit)[:n]

    def reservations(self) -> list[_Reservation]:
        """Every reservation the event log tells of, oldest first."""
        found: dict[str, _Reservation] = {}
        for event in self.events or ():
            entry = found.get(event.rid)
            if event.kind == "reserved" and entry is None:
                principal, run = _owner(list(event.amounts))
                found[event.rid] = _Reservation(event.rid, event.at, principal, run,
                                                event.labels, _by_unit(event.amounts))
            elif entry is not None and event.kind == "committed":
                entry.actual, entry.state = _by_unit(event.amounts), "committed"
            elif entry is not None and event.kind == "released":
                entry.state = "released"
        return list(found.values())

    def refusals(self) -> list[RefusedReservation]:
        out = []
        for event in self.events or ():
            if event.kind != "refused" or event.limit is None:
                continue
            limit = event.limit
            principal, run = _owner(list(event.amounts))
            out.append(RefusedReservation(event.at, principal, run, limit.key,
                                          event.amounts[limit.key],
                               limit.cap, limit.spent, limit.held, event.labels))
        return out

    def reserved_vs_actual(self, by: str) -> list[ReservedActual]:
        """Reserved vs actual (committed), reservations and refusals, by unit and by ``by``:
        ``"run"``, ``"principal"``, or a label (``"model"``, ``"tool"``; a reservation
        without it counts under ``-``). Sorted by value, then unit."""

        def value(principal: str, run: str, labels: Mapping[str, str]) -> str:
            if by == "run":
                return run
            if by == "principal":
                return principal
            return labels.get(by, "-")

        rows: dict[tuple[str, str], list[Any]] = {}
        for res in self.reservations():
            for unit, amount in res.reserved.items():
                row = rows.setdefault((value(res.principal, res.run, res.labels), unit),
                                      [0, 0, 0, 0])
                row[0] += 1
                row[1] += amount
                if res.actual is not None:
                    row[2] += res.actual.get(unit, 0)
        for refusal in self.refusals():
            unit = split_key(refusal.key)[1]
            key = (value(refusal.principal, refusal.run, refusal.labels), unit)
            rows.setdefault(key, [0, 0, 0, 0])[3] += 1
        return [ReservedActual(by, v, unit, n, reserved, actual, refused)
                for (v, unit), (n, reserved, actual, refused) in sorted(rows.items())]

    def series(self) -> dict[str, list[tuple[float, Amount]]]:
        """Spend over time by limit key: (time, committed spend so far) at every commit. The
        first point is what was spent before the first recorded event (the limit's spend now
        less what the log adds up), so the last point is the limit's spend now."""
        steps: dict[str, list[tuple[float, Amount]]] = {}
        for event in self.events or ():
            if event.kind == "committed":
                for key, amount in event.amounts.items():
                    steps.setdefault(key, []).append((event.at, amount))
        out: dict[str, list[tuple[float, Amount]]] = {}
        start = min((e.at for e in self.events or ()), default=self.generated_at)
        for usage in self.limits:
            deltas = steps.get(usage.key, [])
            level: Amount = usage.spent - sum((a for _, a in deltas), type(usage.spent)(0))
            points = [(start, level)]
            for at, amount in deltas:
                level += amount
                points.append((at, level))
            points.append((self.generated_at, usage.spent))
            out[usage.key] = points
        return out

    # -- output ----------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """Everything as JSON-ready data (money as exact strings)."""

        def value(item: Any) -> Any:
            if isinstance(item, Mapping):
                return {k: json_value(v) for k, v in item.items()}
            return json_value(item)

        def rows(items: Sequence[Any]) -> list[dict[str, Any]]:
            return [{f.name: value(getattr(item, f.name)) for f in dataclasses.fields(item)}
                    for item in items]

        body: dict[str, Any] = {
            "generated_at": self.generated_at,
            "limits": [{"key": u.key, "cap": json_value(u.cap), "spent": json_value(u.spent),
                        "held": json_value(u.held), "available": json_value(u.available)}
                       for u in self.limits],
            "runs": rows(self.runs()),
            "principals": {unit: [dict(r, held_peak=self._peak(unit, r["principal"]))
                                  for r in rows(self.biggest_spenders(unit))]
                           for unit in self.units()},
            "events_recorded": self.events is not None,
        }
        if self.events is not None:
            body["reserved_vs_actual"] = {by: rows(self.reserved_vs_actual(by))
                                          for by in ("run", "principal", "model", "tool")}
            body["refusals"] = [dict(r, reason=refusal.reason) for r, refusal in
                                zip(rows(self.refusals()), self.refusals(), strict=True)]
        return body

    def _peak(self, unit: str, principal: str) -> Any:
        ledger = self.ledgers.get(unit)
        peak = ledger.held_peak(principal) if ledger is not None else None
        return None if peak is None else json_value(peak.peak)

    def to_text(self, *, paint: Paint | None = None, n: int = 10) -> str:
        """The report as terminal tables (``paint`` colours them)."""
        paint = paint or Paint()
        parts: list[str] = []

        def section(title: str, body: str) -> None:
            parts.append(paint(title, "bold") + "\n" + body)

        stamp = datetime.fromtimestamp(self.generated_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        if self.events is None:
            recorded = " (no event log: record one with outlay.report.RecordingStore)"
        elif not self.events:
            recorded = ", no events recorded (outlay.report.RecordingStore records them)"
        else:
            recorded = f", {len(self.events)} events"
        parts.append(f"Spend report, {stamp}: {len(self.limits)} limits{recorded}\n")
        near = sorted((u for u in self.limits if u.cap > 0),
                      key=lambda u: (-(u.spent + u.held) / u.cap, u.key))[:n]
        if near:
            rows = [{"key": u.key, "cap": u.cap, "spent": u.spent, "held": u.held,
                     "left": u.available, "used_%": _percent(u.spent + u.held, u.cap)}
                    for u in near]
            tones = [{"left": "red"} if u.available == 0 else {} for u in near]
            section("Limits closest to their cap",
                    table(rows, ("key", "cap", "spent", "held", "left", "used_%"), paint, tones))
        runs = self.runs()
        if runs:
            section("Runs", table([{"run": r.period.removeprefix("run:"), "unit": r.unit,
                                    "spent": r.spent, "held": r.held} for r in runs[-n:]],
                                  ("run", "unit", "spent", "held"), paint))
        for unit in self.units():
            top = self.biggest_spenders(unit, n)
            if not top:
                continue
            rows = [{"principal": r.principal, "spent": r.spent, "held": r.held,
                     "window": r.window, "periods": r.periods} for r in top]
            columns: tuple[str, ...] = ("principal", "spent", "held", "window", "periods")
            if unit in self.ledgers:
                for row in rows:
                    peak = self.ledgers[unit].held_peak(str(row["principal"]))
                    row["held_peak"] = "" if peak is None else peak.peak
                columns += ("held_peak",)
            section(f"Biggest spenders ({unit})", table(rows, columns, paint))
        if self.events is not None:
            for by in ("run", "principal", "model", "tool"):
                spend = [r for r in self.reserved_vs_actual(by) if r.value != "-"]
                if spend:
                    section(f"Reserved vs actual by {by}", table(
                        [{by: r.value, "unit": r.unit, "calls": r.reservations,
                          "reserved": r.reserved, "actual": r.actual, "refused": r.refused}
                         for r in spend[-n:]], (by, "unit", "calls", "reserved", "actual",
                                                "refused"), paint))
            refusals = self.refusals()
            if refusals:
                lines = [paint(f"{_clock(r.at)}  {r.reason}", "red")
                         + (f"  [{_label_text(r.labels)}]" if r.labels else "")
                         for r in refusals[-n:]]
                section(f"Refusals ({len(refusals)})", "\n".join(lines) + "\n")
        return "\n".join(parts)

    def to_html(self, *, title: str = "outlay spend report", charts: int = 12) -> str:
        """A self-contained page (inline CSS and SVG, no scripts, nothing fetched): the
        tables of ``to_text`` and a chart per limit of spend over time against its cap, with
        refusals marked; the ``charts`` limits closest to their caps."""
        series = self.series()
        refusals = self.refusals()
        chosen = sorted((u for u in self.limits if u.cap > 0),
                        key=lambda u: (-(u.spent + u.held) / u.cap, u.key))[:charts]
        figures = "\n".join(_chart(u, series.get(u.key, []),
                                   [r.at for r in refusals if r.key == u.key],
                                   self.generated_at) for u in chosen)
        text = html.escape(self.to_text())
        return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
                f"<h1>{html.escape(title)}</h1><section class=\"charts\">{figures}</section>"
                f"<pre>{text}</pre></body></html>\n")


def _as_written(value: Amount) -> Amount:
    """``value`` in the form ``plain`` prints, so a reason reads the same on every store."""
    return Decimal(plain(value)) if isinstance(value, Decimal) else value


def _percent(part: Amount, whole: Amount) -> int:
    return int((Decimal(part) * 100 / Decimal(whole)).to_integral_value())


def _clock(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%H:%M:%S")


def _label_text(values: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(values.items()))


_CSS = ("body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}"
        "pre{font-size:13px;background:#f6f6f6;padding:1em;overflow-x:auto}"
        ".charts{display:flex;flex-wrap:wrap;gap:1em}"
        "figure{margin:0;border:1px solid #ddd;padding:.5em}"
        "figcaption{font-size:12px;font-family:monospace}")


def _chart(usage: LimitUsage, points: Sequence[tuple[float, Amount]],
           refused_at: Sequence[float], now: float) -> str:
    """An inline SVG: committed spend over time (a step line), the cap (dashed), what is held
    now on top (a bar at the right edge), refusals (red dots on the cap line)."""
    width, height, pad = 320, 140, 24
    if not points:
        points = [(now, usage.spent)]
    t0 = min([points[0][0], *refused_at])
    t1 = max([now, points[-1][0], *refused_at])
    span = (t1 - t0) or 1.0
    top = float(max(usage.cap, usage.spent + usage.held)) * 1.1 or 1.0

    def x(at: float) -> float:
        return pad + (at - t0) / span * (width - 2 * pad)

    def y(value: Amount) -> float:  # drawing only: floats never hold money here
        return height - pad - float(value) / top * (height - 2 * pad)

    path, last = [], None
    for at, value in points:
        if last is not None:
            path.append(f"{x(at):.1f},{y(last):.1f}")
        path.append(f"{x(at):.1f},{y(value):.1f}")
        last = value
    cap_y = y(usage.cap)
    held = "" if not usage.held else (
        f'<rect x="{width - pad - 4}" y="{y(usage.spent + usage.held):.1f}" width="6" '
        f'height="{y(usage.spent) - y(usage.spent + usage.held):.1f}" fill="#f0a030">'
        f"<title>held {plain(usage.held)}</title></rect>")
    dots = "".join(f'<circle cx="{x(at):.1f}" cy="{cap_y:.1f}" r="3" fill="#c00">'
                   f"<title>refused at {_clock(at)}</title></circle>" for at in refused_at)
    caption = html.escape(f"{usage.key}: spent {plain(usage.spent)} of {plain(usage.cap)}"
                          f"{f', held {plain(usage.held)}' if usage.held else ''}")
    return (f'<figure><svg xmlns="http://www.w3.org/2000/svg" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="{caption}">'
            f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" '
            f'stroke="#999"/>'
            f'<line class="cap" x1="{pad}" y1="{cap_y:.1f}" x2="{width - pad}" '
            f'y2="{cap_y:.1f}" stroke="#c00" stroke-dasharray="4 3"/>'
            f'<polyline class="spent" fill="none" stroke="#2060c0" stroke-width="2" '
            f'points="{" ".join(path)}"/>{held}{dots}'
            f'<text x="{pad}" y="{cap_y - 3:.1f}" font-size="10" fill="#c00">cap '
            f'{html.escape(plain(usage.cap))}</text></svg>'
            f"<figcaption>{caption}</figcaption></figure>")
