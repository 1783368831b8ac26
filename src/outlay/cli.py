"""The ``outlay`` command: look at the budgets in a store, set a cap, reset spend, prune runs.

Commands (``outlay COMMAND --help`` for each)::

    outlay show [URL] [--prefix P]           every limit: cap, spent, held, available
    outlay holds [URL] [--prefix P]          live reservations: id, amounts, lease left, age
    outlay windows [URL] [--tz ZONE]         current period ids; with URL, the periods stored
    outlay top [URL] [--unit U] [--period ID] [-n N]   principals that spent most
    outlay set-cap [URL] KEY AMOUNT [--money] [--create]
    outlay reset [URL] KEY --zero-spend
    outlay prune [URL] --older-than AGE      drop run periods nothing touched for AGE
    outlay report [URL] [--html FILE]        spend report: runs, principals, models, tools
    outlay watch [--interval S] VIEW ...     redraw show, holds, top, windows or report live
    outlay dashboard [URL] [--port 8765]     a live read-only page (loopback unless told)
    outlay jobs [URL] [--state S]            jobs by state, with their budget holds

The store URL is the positional ``URL``, or ``--url URL``, or the ``OUTLAY_URL`` environment
variable, in that order. ``--json``, ``--url`` and ``--color`` go anywhere on the line.
Exit status: 0 done; 1 the store could not be opened or the operation failed (bad or unknown
URL, missing database, unknown limit, unsupported store); 2 bad usage (unknown command or
option, missing or malformed argument, an AMOUNT that does not fit the limit). A read command
never creates a database.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TextIO
from urllib.parse import unquote

import anyio

from ._core import (
    Amount,
    ConfigurationError,
    OutlayError,
    UnknownLimit,
    Window,
    check_amount,
)
from ._format import Paint, duration, json_value, plain, table
from .report import SpendReport, period_totals, rank_principals, split_key
from .stores import HoldUsage, LimitUsage, Store, store_from_url

__all__ = ("main",)

StoreFactory = Callable[[str], Store]

#: The environment variable naming the store when no URL is on the command line.
URL_VARIABLE = "OUTLAY_URL"

#: Commands ``watch`` can redraw.
_VIEWS = ("show", "holds", "top", "windows", "report")


class CommandError(Exception):
    """A failure to report on stderr with exit status 1."""

    status = 1


class UsageError(CommandError):
    """Bad usage: reported on stderr with exit status 2."""

    status = 2


def main(
    argv: Sequence[str] | None = None,
    *,
    store_factory: StoreFactory | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Run the ``outlay`` command with ``argv`` (default ``sys.argv[1:]``); return the exit
    status. ``store_factory`` (default ``store_from_url``) lets a program or test hand in a
    store it already holds; ``environ`` (default ``os.environ``) is where ``OUTLAY_URL``,
    ``NO_COLOR`` and ``TERM`` are read."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    env = os.environ if environ is None else environ
    try:
        args = _parse(list(sys.argv[1:] if argv is None else argv), out, err)
    except _Exit as done:
        return done.status
    ctx = _Context(out, err, env, store_factory or _open_store, Paint.for_stream(
        out, getattr(args, "color", "auto"), env))
    try:
        result: int = anyio.run(_dispatch, args, ctx)
    except KeyboardInterrupt:
        return 0 if args.command in ("watch", "dashboard") else 130
    except CommandError as exc:
        print(f"outlay: error: {exc}", file=err)
        return exc.status
    except OutlayError as exc:
        print(f"outlay: error: {exc}", file=err)
        return 1
    except NotImplementedError as exc:
        print(f"outlay: error: this store does not support that: {exc}", file=err)
        return 1
    return result


# -- argument parsing ----------------------------------------------------------------------


class _Exit(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


def _parse(argv: list[str], out: TextIO, err: TextIO) -> argparse.Namespace:
    """Parse ``argv``; argparse's own messages (usage errors, ``--help``, ``--version``) go to
    ``out``/``err`` and become ``_Exit``."""
    parser = _parser()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            args = parser.parse_args(argv)
            if args.command is None:
                parser.error("a command is required (outlay --help lists them)")
            if args.command == "watch":
                if not args.view:
                    parser.error(f"watch needs a view to redraw: one of {', '.join(_VIEWS)}")
                args.inner = parser.parse_args(args.view)
                if args.inner.command not in _VIEWS:
                    parser.error(f"watch redraws one of {', '.join(_VIEWS)}, not "
                                 f"{args.inner.command!r}")
        except SystemExit as exc:
            raise _Exit(int(exc.code or 0)) from None
    return args


def _common() -> argparse.ArgumentParser:
    """The options every command takes anywhere on the line. Their defaults are suppressed so a
    subcommand's parser does not overwrite a value given before the command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print JSON instead of a table")
    common.add_argument("--url", dest="url_flag", metavar="URL", default=argparse.SUPPRESS,
                        help=f"the store URL (default: ${URL_VARIABLE})")
    common.add_argument("--color", choices=("auto", "always", "never"),
                        default=argparse.SUPPRESS,
                        help="colour the tables: auto (on a terminal, unless NO_COLOR is set), "
                             "always, never")
    return common


def _parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog="outlay", parents=[common],
        description="Look at and manage outlay budgets in a store. The store URL is the "
                    f"positional URL, --url URL or ${URL_VARIABLE}.")
    parser.add_argument("--version", action="version", version=f"outlay {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help: str, **kwargs: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, parents=[common], **kwargs)

    url_help = f"store URL, e.g. sqlite:///budgets.db (default: --url or ${URL_VARIABLE})"
    show = command("show", "every limit: cap, spent, held, available")
    show.add_argument("url", nargs="?", help=url_help)
    show.add_argument("--prefix", default="", help="only keys starting with this")

    holds = command("holds", "live reservations: id, amounts, lease left, age")
    holds.add_argument("url", nargs="?", help=url_help)
    holds.add_argument("--prefix", default="", help="only holds on keys starting with this")

    windows = command("windows", "current period ids; with a URL, the periods stored")
    windows.add_argument("url", nargs="?", help="store URL (optional)")
    windows.add_argument("--tz", default="UTC", help="time zone of the calendar (default UTC)")
    windows.add_argument("--at", help="an ISO instant instead of now, e.g. 2026-11-30T23:00Z")

    top = command("top", "principals that spent most")
    top.add_argument("url", nargs="?", help=url_help)
    top.add_argument("--unit", default="usd", help="unit to rank by (default usd)")
    top.add_argument("--period", help="only this period id, e.g. month:2026-11")
    top.add_argument("-n", type=int, default=10, help="how many (default 10)")

    cap = command("set-cap", "create a limit or change its cap")
    cap.add_argument("operands", nargs="+", metavar="[URL] KEY AMOUNT",
                     help="limit key, e.g. tenant:acme/usd/month:2026-11, and the cap: 500 "
                          "(whole units) or 500.00 (money)")
    cap.add_argument("--money", action="store_true",
                     help="treat AMOUNT as Decimal money even without a decimal point")
    cap.add_argument("--create", action="store_true",
                     help="create the database file if it does not exist")

    reset = command(
        "reset", "zero the committed spend of one limit (needs --zero-spend)",
        description="Zero the committed spend of one limit; its cap and live holds stay. "
                    "Periods start fresh by themselves (a new period is a new key) and a "
                    "program starts a new run with Principals.new_run(); this is for "
                    "correcting a figure by hand, so it needs --zero-spend.")
    reset.add_argument("operands", nargs="+", metavar="[URL] KEY")
    reset.add_argument("--zero-spend", action="store_true",
                       help="yes, set the committed spend of KEY to zero")

    jobs = command("jobs", "jobs by state, with their budget holds")
    jobs.add_argument("url", nargs="?", help=url_help)
    jobs.add_argument("--state", choices=("queued", "leased", "settling", "completed",
                                          "failed"), help="only jobs in this state")

    prune = command(
        "prune", "drop the limits of run periods nothing touched for a while",
        description="Drop every limit of a run period (run:<id>) that has no live hold and "
                    "that no reserve, commit, cap or reset changed for --older-than. Calendar "
                    "periods (hour, day, month, ...) are never pruned.")
    prune.add_argument("url", nargs="?", help=url_help)
    prune.add_argument("--older-than", required=True, metavar="AGE",
                       help="idle time: 3600 or 3600s, 90m, 12h, 7d")
    prune.add_argument("--prefix", default="", help="only keys starting with this")

    report = command(
        "report", "a spend report: runs, principals, models, tools, refusals",
        description="A spend report from the store's limits and, where outlay recorded one "
                    "(outlay.RecordingStore), its event log: reserved vs actual by model and "
                    "tool, refusals with reasons, spend over time against each cap.")
    report.add_argument("url", nargs="?", help=url_help)
    report.add_argument("--prefix", default="", help="only keys starting with this")
    report.add_argument("--html", metavar="FILE",
                        help="also write a self-contained HTML page with charts to FILE")
    report.add_argument("-n", type=int, default=10, help="rows per table (default 10)")

    board = command(
        "dashboard", "serve a live, read-only page of the store's limits, holds and refusals",
        description="Serve a live, read-only page: every limit as a bar (cap, spent, held, "
                    "left), live holds with their leases, the latest refusals. Binds to "
                    "127.0.0.1; another address needs --allow-remote and a token. Ctrl-C stops "
                    "it (exit 0).")
    board.add_argument("url", nargs="?", help=url_help)
    board.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    board.add_argument("--port", type=int, default=8765, help="port (default 8765; 0: any)")
    board.add_argument("--refresh", type=float, default=2.0,
                       help="seconds between the page's reloads (default 2)")
    board.add_argument("--prefix", default="", help="only keys starting with this")
    board.add_argument("--allow-remote", action="store_true",
                       help="allow a non-loopback --host (needs a token)")
    board.add_argument("--token", help="a token every request must carry (?token= or "
                                       "Authorization: Bearer); default $OUTLAY_DASHBOARD_TOKEN")

    watch = command(
        "watch", "redraw a view (show, holds, top, windows, report) every few seconds",
        description="Redraw a view live: outlay watch show sqlite:///budgets.db. Ctrl-C stops "
                    "it (exit 0).")
    watch.add_argument("--interval", type=float, default=2.0,
                       help="seconds between frames (default 2)")
    watch.add_argument("--count", type=int, default=0,
                       help="stop after this many frames (default: until interrupted)")
    watch.add_argument("view", nargs=argparse.REMAINDER, metavar="VIEW ...",
                       help="the command to redraw, with its arguments")
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("outlay")
    except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
        return "unknown"


def _resolve_url(args: argparse.Namespace, env: Mapping[str, str]) -> str | None:
    """The URL from the positional, ``--url`` or the environment, in that order. Two
    different URLs on the line are a usage error."""
    given = getattr(args, "url", None)
    flag = getattr(args, "url_flag", None)
    if given is not None and flag is not None and given != flag:
        raise UsageError("two store URLs: the positional URL and --url differ")
    return given or flag or env.get(URL_VARIABLE) or None


def _split_operands(args: argparse.Namespace, names: Sequence[str]) -> None:
    """``set-cap``/``reset``: ``[URL] KEY ...``; the URL is there when one more operand than
    ``names`` was given."""
    operands: list[str] = args.operands
    if len(operands) == len(names) + 1:
        args.url, *rest = operands
    elif len(operands) == len(names):
        args.url, rest = None, operands
    else:
        raise UsageError(f"{args.command} takes [URL] {' '.join(n.upper() for n in names)}")
    for name, value in zip(names, rest, strict=True):
        setattr(args, name, value)


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
        from .stores._sqlite import SQLiteStore

        return SQLiteStore.from_url(url, create=False)  # never turns a file into a database
    return store_from_url(url)


def _where(store: Store) -> str | None:
    """A line naming the part of a shared server the store reads (a Redis namespace)."""
    namespace = getattr(store, "namespace", None)
    return f"Redis namespace {namespace!r}" if isinstance(namespace, str) else None


# -- output --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Context:
    out: TextIO
    err: TextIO
    env: Mapping[str, str]
    factory: StoreFactory
    paint: Paint


def _table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], ctx: _Context,
           out: TextIO, tones: Sequence[Mapping[str, str]] | None = None) -> None:
    out.write(table(rows, columns, ctx.paint, tones))


def _json(value: Any, out: TextIO) -> None:
    json.dump(value, out, indent=2)
    print(file=out)


_AGE = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")


def _parse_age(text: str) -> float:
    match = _AGE.match(text.strip())
    if match is None:
        raise UsageError(f"--older-than {text!r} is not an age such as 3600, 90m, 12h or 7d")
    return float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}[match[2]]


# -- commands ------------------------------------------------------------------------------


async def _dispatch(args: argparse.Namespace, ctx: _Context) -> int:
    if args.command in ("set-cap", "reset"):
        _split_operands(args, ("key", "amount") if args.command == "set-cap" else ("key",))
    if args.command == "set-cap":
        # What is bad for any limit is refused before the store is opened (or created);
        # whether the amount fits the limit's unit is checked once its current cap is known.
        _parse_amount(args.amount, args.money, None)
    if args.command == "watch":
        return await _watch(args, ctx)
    if args.command == "dashboard":
        return await _dashboard(args, ctx)
    url = _resolve_url(args, ctx.env)
    if url is None:
        if args.command == "windows":
            _windows(args, None, ctx, ctx.out)
            return 0
        raise UsageError(f"no store URL: give URL, --url URL or set {URL_VARIABLE}")
    if args.command == "set-cap" and ctx.factory is _open_store:
        store = _open_store(url, create=args.create)
    else:
        store = ctx.factory(url)
    try:
        return await _run(args, store, ctx, ctx.out)
    finally:
        await store.aclose()


async def _run(args: argparse.Namespace, store: Store, ctx: _Context, out: TextIO) -> int:
    """Run one command on an open store, printing to ``out``."""
    as_json = getattr(args, "json", False)
    where = _where(store)
    if where is not None:
        if as_json:
            print(f"outlay: {where}", file=ctx.err)
        else:
            print(ctx.paint(where, "dim"), file=out)
    if args.command == "show":
        _print_limits(await store.limits(args.prefix), as_json, ctx, out)
    elif args.command == "holds":
        _print_holds(await store.holds(args.prefix), as_json, ctx, out)
    elif args.command == "windows":
        _windows(args, await store.limits(), ctx, out)
    elif args.command == "top":
        _top(args, await store.limits(), ctx, out)
    elif args.command == "set-cap":
        await _set_cap(args, store, ctx, out)
    elif args.command == "reset":
        return await _reset(args, store, ctx, out)
    elif args.command == "prune":
        await _prune(args, store, ctx, out)
    elif args.command == "report":
        await _report(args, store, ctx, out)
    elif args.command == "jobs":
        await _jobs(args, store, ctx, out)
    return 0


def _limit_tone(usage: LimitUsage) -> dict[str, str]:
    if usage.cap > 0 and usage.available == 0:
        return {"available": "red"}
    if usage.cap > 0 and usage.available * 10 < usage.cap:
        return {"available": "yellow"}
    return {}


def _print_limits(usages: list[LimitUsage], as_json: bool, ctx: _Context, out: TextIO) -> None:
    rows = [{"key": u.key, "cap": u.cap, "spent": u.spent, "held": u.held,
             "available": u.available} for u in usages]
    if as_json:
        _json([{k: json_value(v) for k, v in row.items()} for row in rows], out)
    elif rows:
        _table(rows, ("key", "cap", "spent", "held", "available"), ctx, out,
               [_limit_tone(u) for u in usages])
    else:
        print("no limits", file=out)


def _print_holds(holds: list[HoldUsage], as_json: bool, ctx: _Context, out: TextIO) -> None:
    if as_json:
        _json([{"id": h.rid, "amounts": {k: json_value(v) for k, v in h.amounts.items()},
                "lease_left": round(h.lease_left, 3),
                "age": None if h.age is None else round(h.age, 3)} for h in holds], out)
        return
    if not holds:
        print("no live holds", file=out)
        return
    rows: list[dict[str, Any]] = []
    tones: list[dict[str, str]] = []
    for hold in holds:
        for i, (key, amount) in enumerate(sorted(hold.amounts.items())):
            first = i == 0
            rows.append({"reservation": hold.rid if first else "", "key": key,
                         "amount": amount,
                         "lease_left": duration(hold.lease_left) if first else "",
                         "age": ("?" if hold.age is None else duration(hold.age))
                         if first else ""})
            tones.append({"lease_left": "yellow"} if first and hold.lease_left < 10 else {})
    _table(rows, ("reservation", "key", "amount", "lease_left", "age"), ctx, out, tones)


def _windows(args: argparse.Namespace, usages: list[LimitUsage] | None, ctx: _Context,
             out: TextIO) -> None:
    if args.at:
        try:
            at = datetime.fromisoformat(args.at.replace("Z", "+00:00"))
        except ValueError as exc:
            raise UsageError(f"--at {args.at!r} is not an ISO date-time") from exc
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
    else:
        at = datetime.now(UTC)
    try:
        calendar = (Window.hour(args.tz), Window.day(args.tz), Window.week(args.tz),
                    Window.month(args.tz))
    except ConfigurationError as exc:
        raise UsageError(f"--tz: {exc}") from exc
    rows: list[dict[str, Any]] = []
    for window in calendar:
        period = window.period(at)
        assert period.start is not None
        assert period.end is not None
        rows.append({"window": window.name, "period": period.id,
                     "start": datetime.fromtimestamp(period.start, window.tz).isoformat(),
                     "end": datetime.fromtimestamp(period.end, window.tz).isoformat()})
    stored: list[dict[str, Any]] = []
    if usages is not None:
        stored = [{"period": t.period, "unit": t.unit, "limits": t.limits, "spent": t.spent,
                   "held": t.held} for t in period_totals(usages)]
    if getattr(args, "json", False):
        plain = [{k: json_value(v) for k, v in row.items()} for row in stored]
        _json({"current": rows, "stored": plain} if usages is not None else rows, out)
        return
    _table(rows, ("window", "period", "start", "end"), ctx, out)
    if usages is not None:
        print(file=out)
        if stored:
            _table(stored, ("period", "unit", "limits", "spent", "held"), ctx, out)
        else:
            print("no windowed limits in the store", file=out)


def _top(args: argparse.Namespace, usages: list[LimitUsage], ctx: _Context, out: TextIO) -> None:
    if args.n < 1:
        raise UsageError("-n must be at least 1")
    units = {split_key(u.key)[1] for u in usages}
    rows = [{"principal": r.principal, "spent": r.spent, "held": r.held, "window": r.window,
             "periods": r.periods}
            for r in rank_principals(usages, args.unit, period=args.period)[: args.n]]
    if getattr(args, "json", False):
        _json([{k: json_value(v) for k, v in row.items()} for row in rows], out)
    elif rows:
        _table(rows, ("principal", "spent", "held", "window", "periods"), ctx, out)
    else:
        others = sorted(units - {args.unit})
        hint = f" (units in the store: {', '.join(others)})" if others else ""
        scope = f" in period {args.period!r}" if args.period else ""
        print(f"no spend in {args.unit!r}{scope}{hint}", file=out)


def _parse_amount(text: str, money: bool, current: Amount | None) -> Amount:
    try:
        return check_amount(_parse_number(text, money, current), "a cap")
    except (TypeError, ValueError) as exc:  # the bounds every store keeps (check_amount)
        raise UsageError(str(exc)) from exc


def _parse_number(text: str, money: bool, current: Amount | None) -> Amount:
    if len(text) > 100:
        raise UsageError(f"a cap is at most 10**30; {text[:20]}... is too long")
    as_money = money or isinstance(current, Decimal) or any(c in text for c in ".eE")
    if as_money:
        try:
            value = Decimal(text)
        except InvalidOperation as exc:
            raise UsageError(f"{text!r} is not a number") from exc
        if not value.is_finite() or value < 0:
            raise UsageError(f"a cap must be finite and >= 0, got {text!r}")
        if isinstance(current, int):
            if value != value.to_integral_value():
                raise UsageError(f"this limit counts whole units; {text!r} is not whole")
            return int(value)
        return value
    try:
        units = int(text)
    except ValueError as exc:
        raise UsageError(f"{text!r} is not a whole number") from exc
    if units < 0:
        raise UsageError(f"a cap must be >= 0, got {text!r}")
    return units


def _usage_json(usage: LimitUsage | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    return {"key": usage.key, "cap": json_value(usage.cap), "spent": json_value(usage.spent),
            "held": json_value(usage.held), "available": json_value(usage.available)}


async def _set_cap(args: argparse.Namespace, store: Store, ctx: _Context, out: TextIO) -> None:
    try:
        before: LimitUsage | None = await store.usage(args.key)
    except UnknownLimit:
        before = None
    cap = _parse_amount(args.amount, args.money, before.cap if before else None)
    await store.set_limit(args.key, cap)
    after = await store.usage(args.key)
    if getattr(args, "json", False):
        _json({"before": _usage_json(before), "after": _usage_json(after)}, out)
    else:
        old = f"cap {plain(before.cap)}" if before else "new limit"
        print(f"{args.key}: {old} -> cap {plain(after.cap)} (spent {plain(after.spent)}, "
              f"held {plain(after.held)}, available {plain(after.available)})", file=out)


async def _reset(args: argparse.Namespace, store: Store, ctx: _Context, out: TextIO) -> int:
    if not args.zero_spend:
        print("outlay reset changes nothing without --zero-spend. Periods start fresh by "
              "themselves (month:2026-12 is a new key), and a program starts a new run with "
              "Principals.new_run(). --zero-spend sets the committed spend of KEY to zero.",
              file=ctx.err)
        return 2
    before = await store.reset_spend(args.key)
    after = await store.usage(args.key)
    if getattr(args, "json", False):
        _json({"before": _usage_json(before), "after": _usage_json(after)}, out)
    else:
        print(f"{args.key}: spent {plain(before.spent)} -> {plain(after.spent)} (cap "
              f"{plain(after.cap)}, held {plain(after.held)})", file=out)
    return 0


async def _jobs(args: argparse.Namespace, store: Store, ctx: _Context, out: TextIO) -> None:
    """Jobs grouped by state (queued, leased, settling, completed, failed), each with its hold:
    held at its worst case while open, committed at its actual cost or released once ended."""
    from .jobs import JobQueue

    as_json = getattr(args, "json", False)
    order = {"queued": 0, "leased": 1, "settling": 2, "completed": 3, "failed": 4}
    jobs = sorted(await JobQueue(store).jobs(args.state), key=lambda job: order[job.state])

    def amounts(by_unit: Mapping[str, Amount] | None) -> Any:
        if by_unit is None:
            return None if as_json else "-"
        if as_json:
            return {unit: json_value(amount) for unit, amount in by_unit.items()}
        return " ".join(f"{unit}={plain(amount)}" for unit, amount in by_unit.items())

    rows = []
    for job in jobs:
        ended = "committed" if job.state == "completed" else "released"
        rows.append({"state": job.state, "job": job.id, "lane": job.lane,
                     "attempts": f"{job.attempts}/{job.max_attempts}",
                     "hold": f"{job.hold.rid} {'held' if job.holding else ended}",
                     "held": amounts(job.cost if job.holding else None),
                     "actual": amounts(job.actual), "error": job.error or ("" if not as_json
                                                                          else None)})
    if as_json:
        _json(rows, out)
        return
    if not rows:
        print("no jobs", file=out)
        return
    _table(rows, ("state", "job", "lane", "attempts", "hold", "held", "actual", "error"), ctx,
           out)
    totals: dict[str, dict[str, Amount]] = {}
    for job in jobs:
        if job.holding:
            held = totals.setdefault(job.state, {})
            for unit, amount in job.cost.items():
                held[unit] = held.get(unit, 0) + amount
    counts = {state: sum(1 for job in jobs if job.state == state) for state in order}
    print("; ".join(f"{state} {count}" + (f" holding {amounts(totals[state])}"
                                           if state in totals else "")
                    for state, count in counts.items() if count), file=out)


async def _prune(args: argparse.Namespace, store: Store, ctx: _Context, out: TextIO) -> None:
    idle = _parse_age(args.older_than)
    runs = [u.key for u in await store.limits(args.prefix)
            if split_key(u.key)[2].startswith("run:")]
    dropped = [key for key in runs if await store.drop_idle_limit(key, idle=idle)]
    periods = sorted({split_key(key)[2] for key in dropped})
    if getattr(args, "json", False):
        _json({"dropped": dropped, "periods": periods, "kept": len(runs) - len(dropped)}, out)
        return
    for key in dropped:
        print(f"dropped {key}", file=out)
    print(f"pruned {len(dropped)} limits of {len(periods)} run periods idle for "
          f"{duration(idle)}; kept {len(runs) - len(dropped)} run limits (held or recent)",
          file=out)


async def _report(args: argparse.Namespace, store: Store, ctx: _Context, out: TextIO) -> None:
    if args.n < 1:
        raise UsageError("-n must be at least 1")
    report = await SpendReport.from_store(store, prefix=args.prefix)
    if args.html:
        try:
            await anyio.Path(args.html).write_text(report.to_html(), encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"cannot write {args.html!r}: {exc.strerror}") from exc
    if getattr(args, "json", False):
        _json(report.to_json(), out)
    else:
        out.write(report.to_text(paint=ctx.paint, n=args.n))


async def _dashboard(args: argparse.Namespace, ctx: _Context) -> int:
    from .dashboard import Dashboard  # the server is loaded only for this command

    url = _resolve_url(args, ctx.env)
    if url is None:
        raise UsageError(f"no store URL: give URL, --url URL or set {URL_VARIABLE}")
    token = args.token or ctx.env.get("OUTLAY_DASHBOARD_TOKEN") or None
    board_store = ctx.factory(url)
    try:
        try:
            board = Dashboard(board_store, host=args.host, port=args.port, token=token,
                              allow_remote=args.allow_remote, refresh=args.refresh,
                              prefix=args.prefix)
        except ConfigurationError as exc:
            raise UsageError(str(exc)) from exc
        async with anyio.create_task_group() as tg:
            tg.start_soon(_stop_on_signal, tg.cancel_scope)
            port = await tg.start(board.serve)
            host = f"[{args.host}]" if ":" in args.host else args.host
            where = _where(board_store)
            print(f"outlay dashboard: http://{host}:{port}/ (read-only"
                  f"{', token required' if token else ''}; Ctrl-C stops it)"
                  + (f"; {where}" if where else ""), file=ctx.out, flush=True)
    finally:
        await board_store.aclose()
    return 0


async def _stop_on_signal(scope: anyio.CancelScope) -> None:
    """Stop a server on SIGTERM or SIGINT (a service manager's stop, Ctrl-C): exit 0."""
    try:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                scope.cancel()
                return
    except (ValueError, NotImplementedError, RuntimeError):  # not the main thread: no signals
        await anyio.sleep_forever()


async def _watch(args: argparse.Namespace, ctx: _Context) -> int:
    if not args.interval > 0:
        raise UsageError("--interval must be a positive number of seconds")
    if args.count < 0:
        raise UsageError("--count must be >= 0")
    inner: argparse.Namespace = args.inner
    for name in ("json", "color"):
        if not hasattr(inner, name) and hasattr(args, name):
            setattr(inner, name, getattr(args, name))
    if not hasattr(inner, "url_flag") and hasattr(args, "url_flag"):
        inner.url_flag = args.url_flag
    url = _resolve_url(inner, ctx.env)
    if url is None and inner.command != "windows":
        raise UsageError(f"no store URL: give URL, --url URL or set {URL_VARIABLE}")
    store = ctx.factory(url) if url is not None else None
    tty = bool(getattr(ctx.out, "isatty", None) and ctx.out.isatty())
    title = "outlay " + " ".join(args.view)
    try:
        frames = 0
        while True:
            frame = io.StringIO()
            if store is None:
                _windows(inner, None, ctx, frame)
            else:
                await _run(inner, store, ctx, frame)
            stamp = datetime.now().astimezone().strftime("%H:%M:%S")
            if tty:
                ctx.out.write("\x1b[H\x1b[2J")
            elif frames:
                print(file=ctx.out)
            print(ctx.paint(f"every {args.interval:g}s: {title}  {stamp}", "dim"), file=ctx.out)
            ctx.out.write(frame.getvalue())
            ctx.out.flush()
            frames += 1
            if args.count and frames >= args.count:
                return 0
            await anyio.sleep(args.interval)
    finally:
        if store is not None:
            await store.aclose()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
