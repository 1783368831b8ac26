"""A loopback TCP proxy for fault tests: it holds back requests or drops replies on demand.

``Proxy(host, port)`` listens on a free loopback port and forwards every connection to
``host:port``, one thread per direction. ``hold_when(predicate)``: a connection whose client
sends a chunk matching ``predicate`` stops forwarding from then on; what it sent waits in the
proxy (the request is delayed past the client's timeout, as on a congested network) until
``flush()`` sends it and waits for the server's answer (so the request has run when it
returns). ``drop_replies = True`` discards what the server answers (a lost reply: the request
ran, the client never hears). Nothing here touches the client library: the client under test
talks to a real server through a real socket.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

HOST = "127.0.0.1"


@dataclass
class _Link:
    client: socket.socket
    server: socket.socket
    held: list[bytes] = field(default_factory=list)
    holding: bool = False
    answered: threading.Event = field(default_factory=threading.Event)


class Proxy:
    """A TCP proxy on ``127.0.0.1:port`` to ``upstream``; use as a context manager."""

    def __init__(self, host: str, port: int) -> None:
        self._upstream = (host, port)
        self._listener = socket.create_server((HOST, 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._links: list[_Link] = []
        self._threads: list[threading.Thread] = []
        self._hold: Callable[[bytes], bool] | None = None
        self.drop_replies = False
        self._closed = False
        self._start(self._accept)

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def hold_when(self, predicate: Callable[[bytes], bool] | None) -> None:
        """Hold back each connection from its first chunk matching ``predicate`` on (``None``:
        hold nothing new; what is held stays held until ``flush``)."""
        with self._lock:
            self._hold = predicate

    def held(self) -> int:
        """How many connections have requests waiting in the proxy."""
        with self._lock:
            return sum(1 for link in self._links if link.held)

    def flush(self, timeout: float = 10.0) -> int:
        """Send every held request on to the server and wait until each connection has had an
        answer; returns how many connections were flushed."""
        with self._lock:
            self._hold = None
            flushed = [link for link in self._links if link.held]
            for link in flushed:
                link.answered.clear()
                link.server.sendall(b"".join(link.held))
                link.held.clear()
                link.holding = False
        for link in flushed:
            if not link.answered.wait(timeout):
                raise TimeoutError("the server did not answer a flushed request")
        return len(flushed)

    def close(self) -> None:
        """Close every socket and wait for the proxy's threads."""
        with self._lock:
            self._closed = True
            links = list(self._links)
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() thread
        with contextlib.suppress(OSError):
            self._listener.close()
        for link in links:
            for sock in (link.client, link.server):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()
        for thread in self._threads:
            thread.join(timeout=10)

    # -- threads -----------------------------------------------------------------------

    def _start(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name="netproxy")
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self._upstream)
            link = _Link(client, server)
            with self._lock:
                if self._closed:
                    client.close()
                    server.close()
                    return
                self._links.append(link)
            self._start(self._requests, link)
            self._start(self._replies, link)

    def _requests(self, link: _Link) -> None:
        while True:
            try:
                data = link.client.recv(65536)
            except OSError:
                return
            if not data:
                return  # the client left; held requests stay until flush, the server link too
            with self._lock:
                if not link.holding and self._hold is not None and self._hold(data):
                    link.holding = True
                if link.holding:
                    link.held.append(data)
                    continue
                try:
                    link.server.sendall(data)
                except OSError:
                    return

    def _replies(self, link: _Link) -> None:
        while True:
            try:
                data = link.server.recv(65536)
            except OSError:
                return
            if not data:
                with contextlib.suppress(OSError):
                    link.client.shutdown(socket.SHUT_WR)
                return
            link.answered.set()
            if self.drop_replies:
                continue
            with contextlib.suppress(OSError):
                link.client.sendall(data)
