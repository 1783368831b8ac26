"""Text for people: amounts as written, aligned tables, optional ANSI colour, durations.

Shared by the ``outlay`` command and the spend report, so a figure reads the same in both and
on every store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TextIO

from ._core import Amount

_TONES = {"bold": "1", "red": "31", "yellow": "33", "green": "32", "dim": "2"}


@dataclass(frozen=True, slots=True)
class Paint:
    """ANSI colour when ``enabled`` (a terminal, or asked for); plain text otherwise."""

    enabled: bool = False

    @classmethod
    def for_stream(cls, out: TextIO, mode: str, env: Mapping[str, str]) -> Paint:
        """``mode`` ``always``/``never``, or ``auto``: colour on a terminal unless ``NO_COLOR``
        is set or ``TERM`` is ``dumb``."""
        if mode != "auto":
            return cls(mode == "always")
        tty = getattr(out, "isatty", None)
        return cls(bool(tty and tty()) and "NO_COLOR" not in env and env.get("TERM") != "dumb")

    def __call__(self, text: str, tone: str | None) -> str:
        code = _TONES.get(tone or "")
        return f"\x1b[{code}m{text}\x1b[0m" if self.enabled and code else text


def plain(value: Amount) -> str:
    """An amount as written, the same on every store: ``1000`` (never ``1E+3``), ``13.75``,
    ``0`` (trailing zeros dropped)."""
    if isinstance(value, Decimal):
        text = format(value.normalize(), "f")
        return "0" if text in ("-0", "0") else text
    return str(value)


def json_value(value: Any) -> Any:
    """Money as an exact string in JSON; whole units (and anything else) as they are."""
    return plain(value) if isinstance(value, Decimal) else value


def _places(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def cells(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> list[list[str]]:
    """Text of every cell. Money in a column is shown at the column's largest number of places,
    and at least two once any has a fraction (``13.75`` and ``0.00``, ``7.50`` line up), so
    a table reads the same on every store."""
    places = {}
    for c in columns:
        most = max((_places(r[c]) for r in rows if isinstance(r[c], Decimal)), default=0)
        places[c] = max(most, 2) if most else 0
    return [[format(r[c].normalize(), f".{places[c]}f") if isinstance(r[c], Decimal)
             else str(r[c]) for c in columns] for r in rows]


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], paint: Paint = Paint(),
          tones: Sequence[Mapping[str, str]] | None = None) -> str:
    """A table, one line per row plus the header: numbers right-aligned, the header bold and
    ``tones`` (column -> tone, per row) coloured when ``paint`` is enabled."""
    texts = cells(rows, columns)
    numeric = [bool(rows) and all(isinstance(r[c], int | Decimal) or r[c] == "" for r in rows)
               for c in columns]
    widths = [max([len(c), *(len(r[i]) for r in texts)]) for i, c in enumerate(columns)]

    def line(values: Sequence[str], row_tones: Mapping[str, str]) -> str:
        parts = [paint(v.rjust(w) if num else v.ljust(w), row_tones.get(c))
                 for v, w, num, c in zip(values, widths, numeric, columns, strict=True)]
        return "  ".join(parts).rstrip()

    header = [c.upper().replace("_", " ") for c in columns]
    lines = [line(header, dict.fromkeys(columns, "bold"))]
    lines += [line(row, tones[i] if tones else {}) for i, row in enumerate(texts)]
    return "\n".join(lines) + "\n"


def duration(seconds: float) -> str:
    """``45s``, ``12m05s``, ``3h04m``, ``2d03h``."""
    whole = max(0, int(seconds))
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
