"""A live, read-only dashboard over a store: ``outlay dashboard URL``.

One page, rendered on the server and refreshed by the browser (``<meta http-equiv=refresh>``,
no scripts): every limit with its cap, spent, held and what is left, as bars; the live holds
with the lease each has left; and, where the store keeps an event log (``RecordingStore``),
the latest refusals with their reasons. ``/data.json`` serves the same figures.

It needs nothing beyond outlay's own dependencies: a small HTTP/1.1 server on anyio, one
request per connection, ``GET``/``HEAD`` only, nothing written to the store. It binds to
loopback (``127.0.0.1``) by default; any other address needs ``allow_remote=True`` **and** a
token, which every request must carry (``?token=...`` or ``Authorization: Bearer ...``,
compared in constant time, never logged or echoed).
"""

from __future__ import annotations

import hmac
import html
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import anyio
import anyio.abc

from ._core import Amount, ConfigurationError
from ._format import duration, json_value, plain
from ._net import is_loopback
from .report import SpendReport
from .stores._base import HoldUsage, LimitUsage, Store

__all__ = ("Dashboard", "check_binding")

#: The most a request's head may take, and how long a client may take to send it.
_MAX_HEAD = 16_384
_READ_TIMEOUT = 10.0
#: How many of the newest events a page reads for its refusals.
_EVENTS = 500


def check_binding(host: str, *, token: str | None, allow_remote: bool) -> None:
    """Refuse to serve on a non-loopback ``host`` unless ``allow_remote`` and a ``token``
    (at least 16 characters) are given; ``ConfigurationError`` says which is missing."""
    if is_loopback(host):
        return
    if not allow_remote:
        raise ConfigurationError(f"the dashboard binds to loopback; serving on {host!r} needs "
                                 "--allow-remote (and --token)")
    if not token or len(token) < 16:
        raise ConfigurationError(f"serving on {host!r} needs a token of at least 16 "
                                 "characters (--token or OUTLAY_DASHBOARD_TOKEN)")


@dataclass(frozen=True, slots=True)
class _Snapshot:
    limits: tuple[LimitUsage, ...]
    holds: tuple[HoldUsage, ...] | None
    report: SpendReport
    taken_at: float


class Dashboard:
    """Serves the page for ``store`` (which it reads, never writes). ``refresh`` is seconds
    between the browser's reloads. See the module for ``host``, ``token`` and
    ``allow_remote``."""

    def __init__(self, store: Store, *, host: str = "127.0.0.1", port: int = 8765,
                 token: str | None = None, allow_remote: bool = False,
                 refresh: float = 2.0, prefix: str = "") -> None:
        check_binding(host, token=token, allow_remote=allow_remote)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65_535:
            raise ConfigurationError(f"port must be 0..65535, got {port!r}")
        if isinstance(refresh, bool) or not isinstance(refresh, int | float) \
                or not 0.2 <= refresh <= 3600:
            raise ConfigurationError(f"refresh must be 0.2..3600 seconds, got {refresh!r}")
        self._store = store
        self._host, self._port = host, port
        self._token = token
        self._refresh = float(refresh)
        self._prefix = prefix

    async def serve(self, *, task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED
                    ) -> None:
        """Serve until cancelled; ``task_status.started`` gets the port bound (useful with
        ``port=0``)."""
        listener = await anyio.create_tcp_listener(local_host=self._host,
                                                   local_port=self._port)
        async with listener:
            port = listener.extra(anyio.abc.SocketAttribute.local_port)
            task_status.started(port)
            await listener.serve(self._handle)

    # -- HTTP ------------------------------------------------------------------------------

    async def _handle(self, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            try:
                with anyio.fail_after(_READ_TIMEOUT):
                    head = await self._read_head(stream)
            except (TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError, ValueError):
                return
            status, kind, body = await self._answer(head)
            method = head.split(b" ", 1)[0]
            headers = [f"HTTP/1.1 {status}", f"Content-Type: {kind}",
                       f"Content-Length: {len(body)}", "Connection: close",
                       "Cache-Control: no-store", "X-Content-Type-Options: nosniff",
                       "Referrer-Policy: no-referrer",
                       "Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'"]
            payload = ("\r\n".join(headers) + "\r\n\r\n").encode()
            if method != b"HEAD":
                payload += body
            try:
                await stream.send(payload)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                return

    async def _read_head(self, stream: anyio.abc.SocketStream) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            data += await stream.receive()
            if len(data) > _MAX_HEAD:
                raise ValueError("request head too large")
        return data.split(b"\r\n\r\n", 1)[0]

    async def _answer(self, head: bytes) -> tuple[str, str, bytes]:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            return "400 Bad Request", "text/plain", b"bad request\n"
        method, target, _ = parts
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain", b"read-only: GET only\n"
        url = urlsplit(target)
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in lines[1:])}
        if not self._authorised(parse_qs(url.query), headers):
            return "401 Unauthorized", "text/plain", b"a token is needed\n"
        if url.path not in ("/", "/data.json"):
            return "404 Not Found", "text/plain", b"not found\n"
        try:
            snapshot = await self._snapshot()
        except Exception as exc:  # the store failed: say so, keep serving
            text = f"the store could not be read: {type(exc).__name__}\n"
            return "503 Service Unavailable", "text/plain", text.encode()
        if url.path == "/data.json":
            return "200 OK", "application/json", json.dumps(_data(snapshot)).encode()
        return "200 OK", "text/html; charset=utf-8", self._page(snapshot).encode()

    def _authorised(self, query: Mapping[str, list[str]], headers: Mapping[str, str]) -> bool:
        if self._token is None:
            return True
        given = query.get("token", [""])[0]
        bearer = headers.get("authorization", "")
        if bearer.lower().startswith("bearer "):
            given = bearer[7:].strip()
        return hmac.compare_digest(given.encode(), self._token.encode())

    # -- figures and page ------------------------------------------------------------------

    async def _snapshot(self) -> _Snapshot:
        report = await SpendReport.from_store(self._store, prefix=self._prefix, events=_EVENTS)
        try:
            holds: tuple[HoldUsage, ...] | None = tuple(await self._store.holds(self._prefix))
        except NotImplementedError:
            holds = None
        return _Snapshot(report.limits, holds, report, time.time())

    def _page(self, snap: _Snapshot) -> str:
        refresh = f"{self._refresh:g}"
        if self._token is not None:  # the reload keeps the token the page was opened with
            refresh += f"; url=/?token={quote(self._token)}"
        rows = "".join(_limit_row(u) for u in snap.limits) or (
            '<tr><td colspan="6">no limits</td></tr>')
        if snap.holds is None:
            holds = "<p>this store cannot list its holds</p>"
        elif not snap.holds:
            holds = '<p id="no-holds">no live holds</p>'
        else:
            holds = ("<table id=\"holds\"><tr><th>reservation</th><th>holds</th>"
                     "<th>lease left</th><th>age</th></tr>" + "".join(
                         f'<tr data-rid="{html.escape(h.rid)}"><td>{html.escape(h.rid)}</td>'
                         f"<td>{html.escape(_amounts(h.amounts))}</td>"
                         f'<td class="lease">{duration(h.lease_left)}</td>'
                         f"<td>{'?' if h.age is None else duration(h.age)}</td></tr>"
                         for h in snap.holds) + "</table>")
        report = snap.report
        if report.events is None:
            refusals = "<p>no event log (record one with outlay.RecordingStore)</p>"
        else:
            found = report.refusals()[-20:][::-1]
            refusals = ('<ol id="refusals">' + "".join(
                f"<li><time>{time.strftime('%H:%M:%S', time.gmtime(r.at))}</time> "
                f"{html.escape(r.reason)}</li>" for r in found)
                + "</ol>") if found else '<p id="no-refusals">no refusals</p>'
        stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(snap.taken_at))
        return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f'<meta http-equiv="refresh" content="{html.escape(refresh)}">'
                f"<title>outlay dashboard</title><style>{_CSS}</style></head><body>"
                f"<h1>outlay</h1><p class=\"stamp\">{stamp}, every {self._refresh:g} s</p>"
                f'<h2>Limits</h2><table id="limits"><tr><th>limit</th><th>cap</th>'
                f"<th>spent</th><th>held</th><th>left</th><th></th></tr>{rows}</table>"
                f"<h2>Live holds</h2>{holds}<h2>Refusals</h2>{refusals}</body></html>\n")


def _amounts(amounts: Mapping[str, Amount]) -> str:
    return ", ".join(f"{key} {plain(amount)}" for key, amount in sorted(amounts.items()))


def _share(part: Amount, whole: Amount) -> str:
    if whole <= 0:
        return "0"
    return f"{min(Decimal(100), Decimal(part) * 100 / Decimal(whole)):.2f}"


def _limit_row(usage: LimitUsage) -> str:
    tone = " full" if usage.cap > 0 and usage.available == 0 else ""
    bar = (f'<div class="bar{tone}"><span class="spent" style="width:'
           f'{_share(usage.spent, usage.cap)}%"></span><span class="held" style="width:'
           f'{_share(usage.held, usage.cap)}%"></span></div>')
    return (f'<tr data-key="{html.escape(usage.key)}"><td>{html.escape(usage.key)}</td>'
            f'<td class="cap">{plain(usage.cap)}</td>'
            f'<td class="spent">{plain(usage.spent)}</td>'
            f'<td class="held">{plain(usage.held)}</td>'
            f'<td class="left">{plain(usage.available)}</td><td>{bar}</td></tr>')


def _data(snap: _Snapshot) -> dict[str, Any]:
    return {
        "taken_at": snap.taken_at,
        "limits": [{"key": u.key, "cap": json_value(u.cap), "spent": json_value(u.spent),
                    "held": json_value(u.held), "left": json_value(u.available)}
                   for u in snap.limits],
        "holds": None if snap.holds is None else [
            {"id": h.rid, "amounts": {k: json_value(v) for k, v in h.amounts.items()},
             "lease_left": h.lease_left, "age": h.age} for h in snap.holds],
        "refusals": None if snap.report.events is None else [
            {"at": r.at, "principal": r.principal, "limit": r.key, "reason": r.reason}
            for r in snap.report.refusals()],
    }


_CSS = ("body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}"
        "table{border-collapse:collapse}td,th{padding:.2em .6em;text-align:right}"
        "td:first-child,th:first-child{text-align:left;font-family:monospace}"
        ".bar{width:240px;height:12px;background:#eee;display:flex}"
        ".bar .spent{background:#2060c0}.bar .held{background:#f0a030}"
        ".bar.full{outline:2px solid #c00}.stamp{color:#777;font-size:12px}"
        "#refusals li{color:#a00;font-family:monospace}")
