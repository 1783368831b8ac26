"""A real PostgreSQL for tests: the one on 127.0.0.1:5432 if it answers, else our own.

``start_server`` runs ``initdb`` and ``pg_ctl`` from the ``postgres`` binaries (Debian's
``/usr/lib/postgresql/<version>/bin``, or ``PATH``) on a free loopback port in a temporary
directory, with trust authentication and a database ``test``; ``stop`` shuts it down. As root,
the server runs as the ``postgres`` user (PostgreSQL refuses to run as root). Every test works
in a schema of its own (``fresh_schema``), dropped afterwards; nothing else is touched.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
DEFAULT_PORT = 5432
DATABASE = "test"


def _can_connect(url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def default_url() -> str | None:
    """The shared server's URL if one answers on 127.0.0.1:5432 (as postgres or root)."""
    try:
        with socket.create_connection((HOST, DEFAULT_PORT), timeout=0.5):
            pass
    except OSError:
        return None
    for user in ("postgres", "root"):
        url = f"postgresql://{user}@{HOST}:{DEFAULT_PORT}/{DATABASE}"
        if _can_connect(url):
            return url
    return None


def binaries() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``, newest version first, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if found:
        return Path(found[0]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class PostgresServer:
    """Where a test PostgreSQL listens; ``data`` is set only for a server we started."""

    url: str
    data: Path | None = None
    bin: Path | None = None
    _run_as: list[str] = field(default_factory=list, repr=False)

    def schema_url(self, schema: str) -> str:
        return f"{self.url}?schema={schema}"

    def stop(self) -> None:
        if self.data is None or self.bin is None:
            return
        subprocess.run([*self._run_as, str(self.bin / "pg_ctl"), "stop", "-D", str(self.data),
                        "-m", "immediate", "-w"], check=False, capture_output=True, timeout=60)
        self.data = None


def start_server(directory: Path) -> PostgresServer:
    """initdb + pg_ctl start on a free loopback port; the database ``test`` is created."""
    folder = binaries()
    assert folder is not None
    run_as: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(directory, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    data = directory / "data"
    subprocess.run([*run_as, str(folder / "initdb"), "-D", str(data), "-A", "trust", "-U",
                    "postgres", "--no-sync"], check=True, capture_output=True, timeout=120)
    port = free_port()
    options = f"-c listen_addresses={HOST} -p {port} -k {directory} -c fsync=off"
    subprocess.run([*run_as, str(folder / "pg_ctl"), "start", "-D", str(data), "-w", "-l",
                    str(directory / "log"), "-o", options], check=True, capture_output=True,
                   timeout=120)
    base = f"postgresql://postgres@{HOST}:{port}"
    server = PostgresServer(f"{base}/{DATABASE}", data, folder, run_as)
    import psycopg

    deadline = time.monotonic() + 30
    while True:
        try:
            with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {DATABASE}")
            return server
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                server.stop()
                raise


def fresh_schema() -> str:
    return f"outlay_test_{uuid.uuid4().hex[:16]}"


def drop_schema(url: str, schema: str) -> None:
    """Drop a schema a test created (never one it did not)."""
    import psycopg

    assert schema.startswith("outlay_test_")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
