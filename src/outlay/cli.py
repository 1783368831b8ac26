"""The ``outlay`` command: look at the budgets in a store, set a cap, reset spend.

Commands (``outlay COMMAND --help`` for each)::

    outlay show URL [--prefix P]            every limit: cap, spent, held, available
    outlay holds URL [--prefix P]           limits with live holds
    outlay windows [URL] [--tz ZONE]        current period ids; with URL, the periods stored
    outlay top URL [--unit U] [--period ID] [-n N]   principals that spent most
    outlay set-cap URL KEY AMOUNT [--money] [--create]
    outlay reset URL KEY --zero-spend

``--json`` (before the command) prints JSON instead of a table; money is printed as a string so
it stays exact. Exit status: 0 done, 1 an error (bad URL, missing database, unknown limit,
unsupported store), 2 bad usage. A read command never creates a database: a ``sqlite:///``
path that does not exist is an error, and ``set-cap`` creates one only with ``--create``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TextIO
from urllib.parse import unquote

import anyio

from ._core import Amount, OutlayError, UnknownLimit, Window, parse_limit_key
from .stores import LimitUsage, Store, store_from_url

__all__ = ("main",)

StoreFactory = Callable[[str], Store]


class CommandError(Exception):
    """A failure to report on stderr with exit status 1."""


def main(
    argv: Sequence[str] | None = None,
    *,
    store_factory: StoreFactory | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run the ``outlay`` command with ``argv`` (default ``sys.argv[1:]``); return the exit
    status. ``store_factory`` (default ``store_from_url``) lets a program or test hand in a
    store it already holds."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse prints its own message
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help(out)
        return 2
    factory = store_factory or _open_store
    try:
        result: int = anyio.run(_dispatch, args, factory, out)
    except CommandError as exc:
        print(f"outlay: error: {exc}", file=err)
        return 1
    except OutlayError as exc:
        print(f"outlay: error: {exc}", file=err)
        return 1
    except NotImplementedError as exc:
        print(f"outlay: error: this store does not support that: {exc}", file=err)
        return 1
    return result


# -- argument parsing ----------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="outlay", description="Look at and manage outlay budgets in a store.")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    show = sub.add_parser("show", help="every limit: cap, spent, held, available")
    show.add_argument("url", help="store URL, e.g. sqlite:///budgets.db")
    show.add_argument("--prefix", default="", help="only keys starting with this")

    holds = sub.add_parser("holds", help="limits with live holds")
    holds.add_argument("url")
    holds.add_argument("--prefix", default="")

    windows = sub.add_parser("windows", help="current period ids; with URL, periods stored")
    windows.add_argument("url", nargs="?", help="store URL (optional)")
    windows.add_argument("--tz", default="UTC", help="time zone of the calendar (default UTC)")
    windows.add_argument("--at", help="an ISO instant instead of now, e.g. 2026-11-30T23:00Z")

    top = sub.add_parser("top", help="principals that spent most")
    top.add_argument("url")
    top.add_argument("--unit", default="usd", help="unit to rank by (default usd)")
    top.add_argument("--period", help="only this period id, e.g. month:2026-11")
    top.add_argument("-n", type=int, default=10, help="how many (default 10)")

    cap = sub.add_parser("set-cap", help="create a limit or change its cap")
    cap.add_argument("url")
    cap.add_argument("key", help="limit key, e.g. tenant:acme/usd/month:2026-11")
    cap.add_argument("amount", help="the cap: 500 (whole units) or 500.00 (money)")
    cap.add_argument("--money", action="store_true",
                     help="treat AMOUNT as Decimal money even without a decimal point")
    cap.add_argument("--create", action="store_true",
                     help="create the database file if it does not exist")

    reset = sub.add_parser(
        "reset", help="zero the committed spend of one limit (needs --zero-spend)",
        description="Zero the committed spend of one limit; its cap and live holds stay. "
                    "Periods start fresh by themselves (a new period is a new key) and a "
                    "program starts a new run with Principals.new_run(); this is for "
                    "correcting a figure by hand, so it needs --zero-spend.")
    reset.add_argument("url")
    reset.add_argument("key")
    reset.add_argument("--zero-spend", action="store_true",
                       help="yes, set the committed spend of KEY to zero")
    return parser


# -- stores --------------------------------------------------------------------------------


def _sqlite_path(url: str) -> str | None:
    """The file a ``sqlite://`` URL names, as ``SQLiteStore.from_url`` reads it
    (``sqlite:///rel.db`` -> ``rel.db``, ``sqlite:////abs.db`` -> ``/abs.db``); ``None`` for an
    in-memory database or a URL the store will refuse anyway."""
    rest = url[len("sqlite://"):]
    if not rest.startswith("/") or len(rest) < 2 or "?" in rest or "#" in rest:
        return None
    path = unquote(rest[1:])
    return None if path == ":memory:" else path


def _open_store(url: str, *, create: bool = False) -> Store:
    if url.startswith("sqlite://") and not create:
        path = _sqlite_path(url)
        if path is not None and not os.path.exists(path):
            raise CommandError(f"no database at {path!r} ({url}); a read command never "
                               "creates one (set-cap --create does)")
    return store_from_url(url)


# -- commands ------------------------------------------------------------------------------


async def _dispatch(args: argparse.Namespace, factory: StoreFactory, out: TextIO) -> int:
    if args.command == "windows" and args.url is None:
        return _windows(args, None, out)
    if args.command == "set-cap" and factory is _open_store:
        store = _open_store(args.url, create=args.create)
    else:
        store = factory(args.url)
    try:
        if args.command == "show":
            _print_limits(await store.limits(args.prefix), args.json, out)
        elif args.command == "holds":
            held = [u for u in await store.limits(args.prefix) if u.held > 0]
            _print_limits(held, args.json, out)
        elif args.command == "windows":
            return _windows(args, await store.limits(), out)
        elif args.command == "top":
            _top(args, await store.limits(), out)
        elif args.command == "set-cap":
            await _set_cap(args, store, out)
        elif args.command == "reset":
            return await _reset(args, store, out)
        return 0
    finally:
        await store.aclose()


def _number(value: Amount) -> Any:
    return str(value) if isinstance(value, Decimal) else value


def _usage_row(usage: LimitUsage) -> dict[str, Any]:
    return {"key": usage.key, "cap": _number(usage.cap), "spent": _number(usage.spent),
            "held": _number(usage.held), "available": _number(usage.available)}


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[str], out: TextIO) -> None:
    cells = [[str(row[c]) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip(),
          file=out)
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip(),
              file=out)


def _emit(rows: list[dict[str, Any]], columns: Sequence[str], as_json: bool, out: TextIO,
          empty: str) -> None:
    if as_json:
        json.dump(rows, out, indent=2)
        print(file=out)
    elif rows:
        _table(rows, columns, out)
    else:
        print(empty, file=out)


def _print_limits(usages: list[LimitUsage], as_json: bool, out: TextIO) -> None:
    _emit([_usage_row(u) for u in usages], ("key", "cap", "spent", "held", "available"),
          as_json, out, "no limits")


def _windows(args: argparse.Namespace, usages: list[LimitUsage] | None, out: TextIO) -> int:
    if args.at:
        try:
            at = datetime.fromisoformat(args.at.replace("Z", "+00:00"))
        except ValueError as exc:
            raise CommandError(f"--at {args.at!r} is not an ISO date-time") from exc
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
    else:
        at = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    for window in (Window.hour(args.tz), Window.day(args.tz), Window.week(args.tz),
                   Window.month(args.tz)):
        period = window.period(at)
        assert period.start is not None
        assert period.end is not None
        rows.append({"window": window.name, "period": period.id,
                     "start": datetime.fromtimestamp(period.start, window.tz).isoformat(),
                     "end": datetime.fromtimestamp(period.end, window.tz).isoformat()})
    stored: list[dict[str, Any]] = []
    if usages is not None:
        parsed_keys = [(parse_limit_key(u.key), u) for u in usages]
        present = {(p.principal, p.unit, p.period) for p, _ in parsed_keys if p is not None}
        totals: dict[tuple[str, str], list[Any]] = {}
        for parsed, usage in parsed_keys:
            if parsed is None:
                continue
            entry = totals.setdefault((parsed.period, parsed.unit), [0, 0, 0])
            entry[0] += 1
            # A child's spend is already in its ancestors' figures: add only the outermost.
            parts = parsed.principal.split("/")
            if any(("/".join(parts[:n]), parsed.unit, parsed.period) in present
                   for n in range(1, len(parts))):
                continue
            entry[1] += usage.spent
            entry[2] += usage.held
        stored = [{"period": period, "unit": unit, "limits": n, "spent": _number(spent),
                   "held": _number(held)}
                  for (period, unit), (n, spent, held) in sorted(totals.items())]
    if args.json:
        json.dump({"current": rows, "stored": stored} if usages is not None else rows, out,
                  indent=2)
        print(file=out)
        return 0
    _table(rows, ("window", "period", "start", "end"), out)
    if usages is not None:
        print(file=out)
        if stored:
            _table(stored, ("period", "unit", "limits", "spent", "held"), out)
        else:
            print("no windowed limits in the store", file=out)
    return 0


def _top(args: argparse.Namespace, usages: list[LimitUsage], out: TextIO) -> None:
    if args.n < 1:
        raise CommandError("-n must be at least 1")
    spent: dict[str, list[Any]] = {}
    for usage in usages:
        parsed = parse_limit_key(usage.key)
        if parsed is None or parsed.unit != args.unit:
            continue
        if args.period is not None and parsed.period != args.period:
            continue
        row = spent.setdefault(parsed.principal, [usage.spent, usage.held, set()])
        # A principal with several windows (run and month) counts each spend once per window;
        # rank by the largest window so the same money is not summed twice.
        row[0] = max(row[0], usage.spent)
        row[1] = max(row[1], usage.held)
        row[2].add(parsed.period)
    ranked = sorted(spent.items(), key=lambda kv: (-kv[1][0], kv[0]))[: args.n]
    rows = [{"principal": p, "spent": _number(s), "held": _number(h),
             "periods": ",".join(sorted(periods))}
            for p, (s, h, periods) in ranked]
    _emit(rows, ("principal", "spent", "held", "periods"), args.json, out,
          f"no spend in {args.unit!r}")


def _parse_amount(text: str, money: bool, current: Amount | None) -> Amount:
    as_money = money or isinstance(current, Decimal) or any(c in text for c in ".eE")
    if as_money:
        try:
            value = Decimal(text)
        except InvalidOperation as exc:
            raise CommandError(f"{text!r} is not a number") from exc
        if not value.is_finite() or value < 0:
            raise CommandError(f"a cap must be finite and >= 0, got {text!r}")
        if isinstance(current, int):
            if value != value.to_integral_value():
                raise CommandError(f"this limit counts whole units; {text!r} is not whole")
            return int(value)
        return value
    try:
        units = int(text)
    except ValueError as exc:
        raise CommandError(f"{text!r} is not a whole number") from exc
    if units < 0:
        raise CommandError(f"a cap must be >= 0, got {text!r}")
    return units


async def _set_cap(args: argparse.Namespace, store: Store, out: TextIO) -> None:
    try:
        before: LimitUsage | None = await store.usage(args.key)
    except UnknownLimit:
        before = None
    cap = _parse_amount(args.amount, args.money, before.cap if before else None)
    await store.set_limit(args.key, cap)
    after = await store.usage(args.key)
    if args.json:
        json.dump({"before": _usage_row(before) if before else None,
                   "after": _usage_row(after)}, out, indent=2)
        print(file=out)
    else:
        old = f"cap {before.cap}" if before else "new limit"
        print(f"{args.key}: {old} -> cap {after.cap} (spent {after.spent}, held {after.held}, "
              f"available {after.available})", file=out)


async def _reset(args: argparse.Namespace, store: Store, out: TextIO) -> int:
    if not args.zero_spend:
        print("outlay reset changes nothing without --zero-spend. Periods start fresh by "
              "themselves (month:2026-12 is a new key), and a program starts a new run with "
              "Principals.new_run(). --zero-spend sets the committed spend of KEY to zero.",
              file=out)
        return 2
    before = await store.reset_spend(args.key)
    after = await store.usage(args.key)
    if args.json:
        json.dump({"before": _usage_row(before), "after": _usage_row(after)}, out, indent=2)
        print(file=out)
    else:
        print(f"{args.key}: spent {before.spent} -> {after.spent} (cap {after.cap}, held "
              f"{after.held})", file=out)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
