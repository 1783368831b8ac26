"""``outlay dashboard``: the HTTP server over a real SQLite store, its binding and token rules,
and the page in a real headless browser (Debian's chromium) while a test process spends."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

import anyio
import pytest

from outlay import ConfigurationError, RecordingStore
from outlay.dashboard import Dashboard, check_binding
from outlay.stores import SQLiteStore

D = Decimal
SRC = Path(__file__).resolve().parents[1] / "src"


async def request(port: int, raw: str) -> tuple[str, dict[str, str], str]:
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(raw.encode())
        data = b""
        try:
            while True:
                data += await stream.receive()
        except anyio.EndOfStream:
            pass
    head, _, body = data.decode().partition("\r\n\r\n")
    status, *lines = head.split("\r\n")
    return status, {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines)}, body


async def fill(store: SQLiteStore) -> None:
    await store.set_limit("team:a/usd", D("10.00"))
    await store.set_limit("team:a/calls", 100)
    await store.reserve("r1", {"team:a/usd": D("2.50")}, lease=600)
    await store.commit("r1", {"team:a/usd": D("1.25")})
    await store.reserve("live", {"team:a/usd": D("3"), "team:a/calls": 1}, lease=600)


@pytest.mark.anyio
async def test_the_server_answers_read_only(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "board.db")
    await fill(store)
    board = Dashboard(store, port=0)
    async with anyio.create_task_group() as tg:
        port = await tg.start(board.serve)
        status, headers, body = await request(port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == "HTTP/1.1 200 OK"
        assert headers["content-security-policy"].startswith("default-src 'none'")
        assert '<meta http-equiv="refresh" content="2">' in body
        assert '<td class="spent">1.25</td>' in body
        assert '<td class="left">5.75</td>' in body  # 10 - 1.25 spent - 3 held
        assert 'data-rid="live"' in body
        status, _, body = await request(port, "GET /data.json HTTP/1.1\r\n\r\n")
        data = json.loads(body)
        assert data["limits"][1] == {"key": "team:a/usd", "cap": "10", "spent": "1.25",
                                     "held": "3", "left": "5.75"}
        assert [h["id"] for h in data["holds"]] == ["live"]
        assert data["refusals"] == []  # an event log exists only when recorded
        assert (await request(port, "POST / HTTP/1.1\r\n\r\n"))[0].endswith("405 Method Not "
                                                                            "Allowed")
        assert (await request(port, "GET /x HTTP/1.1\r\n\r\n"))[0].endswith("404 Not Found")
        status, headers, body = await request(port, "HEAD / HTTP/1.1\r\n\r\n")
        assert (status, body) == ("HTTP/1.1 200 OK", "")
        assert int(headers["content-length"]) > 0
        tg.cancel_scope.cancel()
    # nothing was written: the spend and the hold are as they were
    assert (await store.usage("team:a/usd")).spent == D("1.25")
    await store.aclose()


@pytest.mark.anyio
async def test_a_token_is_required_when_set(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "token.db")
    await fill(store)
    token = "s3cret-token-0123456789"
    board = Dashboard(store, port=0, token=token)
    async with anyio.create_task_group() as tg:
        port = await tg.start(board.serve)
        status, _, body = await request(port, "GET / HTTP/1.1\r\n\r\n")
        assert status.endswith("401 Unauthorized")
        assert token not in body
        assert (await request(port, "GET /?token=wrong HTTP/1.1\r\n\r\n"))[0].endswith("401 "
                                                                                      "Unauthorized")
        status, _, body = await request(port, f"GET /?token={token} HTTP/1.1\r\n\r\n")
        assert status.endswith("200 OK")
        assert f'content="2; url=/?token={token}"' in body  # the reload keeps the token
        status, _, _ = await request(
            port, f"GET /data.json HTTP/1.1\r\nAuthorization: Bearer {token}\r\n\r\n")
        assert status.endswith("200 OK")
        tg.cancel_scope.cancel()
    await store.aclose()


def test_only_loopback_without_an_explicit_flag_and_a_token() -> None:
    check_binding("127.0.0.1", token=None, allow_remote=False)
    check_binding("::1", token=None, allow_remote=False)
    check_binding("localhost", token=None, allow_remote=False)
    with pytest.raises(ConfigurationError, match="--allow-remote"):
        check_binding("0.0.0.0", token="x" * 20, allow_remote=False)
    with pytest.raises(ConfigurationError, match="token"):
        check_binding("0.0.0.0", token=None, allow_remote=True)
    with pytest.raises(ConfigurationError, match="16 characters"):
        check_binding("10.0.0.5", token="short", allow_remote=True)
    check_binding("0.0.0.0", token="x" * 16, allow_remote=True)


# -- the real browser ------------------------------------------------------------------------


CHROMIUM = shutil.which("chromium")


class Cells(HTMLParser):
    """The text of every ``<td class=...>`` of each ``<tr data-key=...>``, and the refusals."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, dict[str, str]] = {}
        self.holds: list[str] = []
        self.refusals: list[str] = []
        self.refresh: str | None = None
        self._row: str | None = None
        self._cell: str | None = None
        self._in_refusal = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "meta" and found.get("http-equiv") == "refresh":
            self.refresh = found.get("content")
        if tag == "tr" and found.get("data-key"):
            key = found["data-key"] or ""
            self._row = key
            self.rows[key] = {}
        elif tag == "tr" and found.get("data-rid"):
            self.holds.append(found["data-rid"] or "")
        elif tag == "td" and self._row and found.get("class"):
            self._cell = found["class"]
        elif tag == "li":
            self._in_refusal = True
            self.refusals.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._cell = None
        elif tag == "tr":
            self._row = None
        elif tag == "li":
            self._in_refusal = False

    def handle_data(self, data: str) -> None:
        if self._row and self._cell:
            self.rows[self._row][self._cell] = data
        if self._in_refusal:
            self.refusals[-1] += data


def dump_dom(url: str) -> Cells:
    """What a real headless chromium renders at ``url``."""
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
             "--dump-dom", url],
            capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    cells = Cells()
    cells.feed(done.stdout)
    return cells


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``outlay dashboard`` run as a program over a SQLite file; its URL and the file."""
    path = tmp_path / "live.db"

    async def set_up() -> None:
        store = SQLiteStore(path)
        await store.set_limit("team:a/usd", D("10.00"))
        await store.aclose()

    anyio.run(set_up)
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    with subprocess.Popen(  # the block closes the pipes
        [sys.executable, "-m", "outlay.cli", "dashboard", f"sqlite:///{path}", "--port", "0",
         "--refresh", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=env) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert line.startswith("outlay dashboard: http://127.0.0.1:"), (
                line, process.stderr.read() if process.stderr and process.poll() is not None
                else "")
            yield line.split()[2], path
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0  # a clean stop on SIGTERM


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH: .ci/run installs Debian's "
                                             "chromium (apt-get install chromium)")
def test_the_page_in_a_browser_follows_the_spending(served: tuple[str, Path]) -> None:
    url, path = served
    before = dump_dom(url)
    assert before.rows["team:a/usd"] == {"cap": "10", "spent": "0", "held": "0", "left": "10"}
    assert before.holds == []
    assert before.refresh == "1"  # the page reloads itself every second

    async def spend() -> None:  # another process's spending, through its own store
        store = RecordingStore(SQLiteStore(path))
        try:
            await store.reserve("a", {"team:a/usd": D("4.25")}, lease=600)
            await store.commit("a", {"team:a/usd": D("3.75")})
            await store.reserve("b", {"team:a/usd": D("2")}, lease=600)  # left held
            refused = await store.reserve("c", {"team:a/usd": D("5")}, lease=600)
            assert not refused.admitted
        finally:
            await store.aclose()

    anyio.run(spend)
    after = dump_dom(url)
    assert after.rows["team:a/usd"] == {"cap": "10", "spent": "3.75", "held": "2",
                                        "left": "4.25"}
    assert after.holds == ["b"]
    [refusal] = after.refusals
    assert "team:a/usd: cannot reserve $5: cap $10, spent $3.75, held $2 in flight" in (
        refusal)
