"""A real Redis server for tests: the one on 127.0.0.1:6379 if it answers, else our own.

``start_server`` runs ``redis-server`` on a free loopback port in a temporary directory, without
persistence unless asked, and ``RedisServer.restart`` stops and starts it on the same port (the
script cache is lost; with ``persist=True`` the data survives, as on a real restart).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
DEFAULT_PORT = 6379


def answers(host: str, port: int, timeout: float = 0.5) -> bool:
    """True if a Redis server answers PING at ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class RedisServer:
    """Where a test Redis listens; ``process`` is set only for a server we started."""

    host: str
    port: int
    directory: Path | None = None
    persist: bool = False
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def url(self, db: int = 0) -> str:
        return f"redis://{self.host}:{self.port}/{db}"

    @property
    def owned(self) -> bool:
        return self.process is not None

    def start(self) -> None:
        assert self.directory is not None
        binary = shutil.which("redis-server")
        assert binary is not None
        args = [binary, "--port", str(self.port), "--bind", self.host, "--dir",
                str(self.directory), "--appendonly", "no", "--protected-mode", "yes",
                "--daemonize", "no", "--loglevel", "warning"]
        args += ["--save", "3600 1"] if self.persist else ["--save", ""]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not answers(self.host, self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop our server (saving first when persistent); waits until it has exited."""
        if self.process is None:
            return
        if self.persist:
            with socket.create_connection((self.host, self.port), timeout=2) as sock:
                sock.sendall(b"SHUTDOWN SAVE\r\n")
                sock.recv(64)  # the server closes the connection once it has saved
        else:
            self.process.terminate()
        self.process.wait(timeout=10)
        self.process = None

    def restart(self) -> None:
        """Stop and start our server on the same port; the script cache is lost."""
        assert self.owned, "only a server the tests started can be restarted"
        self.stop()
        self.start()


def redis_binary() -> str | None:
    return shutil.which("redis-server")


def start_server(directory: Path, *, persist: bool = False) -> RedisServer:
    """Start ``redis-server`` on a free loopback port with its files in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    server = RedisServer(HOST, free_port(), directory, persist)
    server.start()
    return server
