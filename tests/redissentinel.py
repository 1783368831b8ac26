"""A real Redis Sentinel deployment for tests: a master, one replica and three sentinels.

``start_sentinels`` starts two ``redis-server`` data nodes (the second a replica of the first)
and three ``redis-server --sentinel`` processes monitoring them as ``SERVICE``, each in its own
temporary directory on free loopback ports, all protected by passwords (one for the data nodes,
one for the sentinels), and waits until every sentinel knows the replica and the other two.
``kill_master`` SIGKILLs the master and waits until the sentinels have promoted the replica,
``switch_master`` has them promote it with the old master alive (``SENTINEL FAILOVER``) and
``demoted`` waits until they have made the old master a replica;
``replicate`` waits until the replica has every write the master has; ``stop`` stops what runs.
``down_after_ms`` (how long the master may be silent before a sentinel calls it down) is short
so a failover takes seconds.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from .redisserver import HOST, free_port

SERVICE = "outlay-test"
PASSWORD = "data-secret-9f2c"  # a test deployment's; asserted never shown
SENTINEL_PASSWORD = "sentinel-secret-41d7"


def binaries_present() -> bool:
    return shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None


def cli(port: int, *args: str, password: str = PASSWORD) -> str:
    """``redis-cli`` against ``port`` (the password goes in the environment, not argv)."""
    done = subprocess.run(["redis-cli", "-h", HOST, "-p", str(port), *args], check=True,
                          capture_output=True, text=True, timeout=30,
                          env={**os.environ, "REDISCLI_AUTH": password})
    return done.stdout


def _info(port: int, section: str) -> dict[str, str]:
    lines = cli(port, "info", section).splitlines()
    return dict(line.split(":", 1) for line in lines if ":" in line)


def _answers(port: int, password: str) -> bool:
    """True if the server on ``port`` takes ``password`` and answers PING."""
    try:
        with socket.create_connection((HOST, port), timeout=0.5) as sock:
            sock.settimeout(0.5)
            sock.sendall(f"AUTH {password}\r\nPING\r\n".encode())
            reply = b""
            while reply.count(b"\r\n") < 2:
                chunk = sock.recv(64)
                if not chunk:
                    return False
                reply += chunk
            return reply == b"+OK\r\n+PONG\r\n"
    except OSError:
        return False


@dataclass
class SentinelDeployment:
    """What we started: the data nodes (``data_ports[0]`` the first master) and sentinels."""

    directory: Path
    data_ports: list[int]
    sentinel_ports: list[int]
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)

    def url(self, db: int = 0, *, scheme: str = "redis+sentinel", query: str = "") -> str:
        """A Sentinel URL naming every sentinel, with both passwords."""
        hosts = ",".join(f"{HOST}:{port}" for port in self.sentinel_ports)
        options = f"sentinel_password={quote(SENTINEL_PASSWORD)}" + (f"&{query}" if query else "")
        return f"{scheme}://:{quote(PASSWORD)}@{hosts}/{SERVICE}/{db}?{options}"

    def _live_sentinels(self) -> list[int]:
        return [port for port in self.sentinel_ports if self.processes[port].poll() is None]

    def master(self) -> int:
        """The master's port, as the first live sentinel names it."""
        reply = cli(self._live_sentinels()[0], "sentinel", "get-master-addr-by-name", SERVICE,
                    password=SENTINEL_PASSWORD).split()
        return int(reply[1])

    def replicate(self, *, timeout: float = 10) -> None:
        """Wait until the replica has acknowledged every write the master has so far (``WAIT``
        would wait only for the writes of redis-cli's own connection: none)."""
        master = self.master()
        target = int(_info(master, "replication")["master_repl_offset"])
        deadline = time.monotonic() + timeout
        while True:
            offsets = [int(dict(part.split("=", 1) for part in value.split(","))["offset"])
                       for key, value in _info(master, "replication").items()
                       if re.fullmatch(r"slave\d+", key)]
            if offsets and max(offsets) >= target:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the replica of port {master} did not catch up to {target}")
            time.sleep(0.02)

    def kill_master(self, *, timeout: float = 60) -> tuple[int, int]:
        """SIGKILL the master; wait until every sentinel names the promoted replica and it
        serves as master. Returns (old port, new port)."""
        old = self.master()
        process = self.processes[old]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        return old, self._promoted(old, timeout)

    def switch_master(self, *, timeout: float = 60) -> tuple[int, int]:
        """``SENTINEL FAILOVER``: promote the replica with the old master alive; wait until
        every sentinel names the new master. The old one still serves as a master until the
        sentinels demote it (``demoted``). Returns (old port, new port)."""
        old = self.master()
        cli(self._live_sentinels()[0], "sentinel", "failover", SERVICE,
            password=SENTINEL_PASSWORD)
        return old, self._promoted(old, timeout)

    def demoted(self, port: int, *, timeout: float = 60) -> None:
        """Wait until the node on ``port`` is a replica again, synced with the master."""

        def synced() -> bool:
            try:  # while it loads the master's data it answers LOADING
                return _info(port, "replication").get("master_link_status") == "up"
            except subprocess.CalledProcessError:
                return False

        _wait(synced, f"port {port} did not become a synced replica", timeout)

    def _promoted(self, old: int, timeout: float) -> int:
        """Wait until every live sentinel names one master other than ``old`` and it serves
        as master; its port."""
        deadline = time.monotonic() + timeout
        while True:
            named = {int(cli(port, "sentinel", "get-master-addr-by-name", SERVICE,
                             password=SENTINEL_PASSWORD).split()[1])
                     for port in self._live_sentinels()}
            if len(named) == 1 and old not in named:
                new = named.pop()
                if _info(new, "replication").get("role") == "master":
                    return new
            if time.monotonic() > deadline:
                raise TimeoutError(f"the sentinels did not promote a replica of port {old}")
            time.sleep(0.05)

    def good_replicas(self, port: int) -> int:
        """How many replicas the node on ``port`` counts towards ``min-replicas-to-write``."""
        return int(_info(port, "replication").get("min_slaves_good_slaves", "-1"))

    def await_good_replicas(self, port: int, count: int, *, timeout: float = 30) -> None:
        """Wait until the node on ``port`` counts ``count`` good replicas."""
        _wait(lambda: self.good_replicas(port) == count,
              f"port {port} did not reach {count} good replicas", timeout)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            process.wait(timeout=10)


class _DidNotStart(RuntimeError):
    """A process could not take its port (another process took it after we chose it)."""


def start_sentinels(directory: Path, *, down_after_ms: int = 5000,
                    data_options: Sequence[str] = (), attempts: int = 3) -> SentinelDeployment:
    """Start the deployment (``data_options``: more ``redis-server`` arguments for both data
    nodes); a process that finds its port taken (a race with another process) makes it start
    over on new ports."""
    for attempt in range(attempts):
        try:
            return _start(directory / f"attempt-{attempt}", down_after_ms, data_options)
        except _DidNotStart:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def _start(directory: Path, down_after_ms: int,
           data_options: Sequence[str]) -> SentinelDeployment:
    ports: list[int] = []
    while len(ports) < 5:
        port = free_port()
        if port not in ports:
            ports.append(port)
    deployment = SentinelDeployment(directory, ports[:2], ports[2:])
    directory.mkdir(parents=True)
    try:
        master, replica = deployment.data_ports
        for port in deployment.data_ports:
            node = directory / str(port)
            node.mkdir()
            extra = ["--replicaof", HOST, str(master)] if port == replica else []
            _spawn(deployment, port, [
                "redis-server", "--port", str(port), "--bind", HOST, "--dir", str(node),
                "--requirepass", PASSWORD, "--masterauth", PASSWORD, "--appendonly", "no",
                "--save", "", "--daemonize", "no", "--loglevel", "warning",
                "--logfile", str(node / "redis.log"), *data_options, *extra], PASSWORD)
        _wait(lambda: _info(replica, "replication").get("master_link_status") == "up",
              "the replica did not sync")
        for port in deployment.sentinel_ports:
            node = directory / str(port)
            node.mkdir()
            config = node / "sentinel.conf"  # the sentinel rewrites it: a file of its own
            config.write_text("\n".join([
                f"port {port}", f"bind {HOST}", f"dir {node}", "daemonize no",
                "loglevel notice", f"logfile {node / 'sentinel.log'}",
                f"requirepass {SENTINEL_PASSWORD}", f"sentinel sentinel-pass {SENTINEL_PASSWORD}",
                f"sentinel monitor {SERVICE} {HOST} {master} 2",
                f"sentinel auth-pass {SERVICE} {PASSWORD}",
                f"sentinel down-after-milliseconds {SERVICE} {down_after_ms}",
                f"sentinel failover-timeout {SERVICE} 5000",
                f"sentinel parallel-syncs {SERVICE} 1", ""]))
            _spawn(deployment, port, ["redis-server", str(config), "--sentinel"],
                   SENTINEL_PASSWORD)

        def every_sentinel_sees_all() -> bool:
            for port in deployment.sentinel_ports:
                fields = cli(port, "sentinel", "master", SERVICE,
                             password=SENTINEL_PASSWORD).splitlines()
                state = dict(zip(fields[::2], fields[1::2], strict=False))
                if (state.get("flags") != "master" or state.get("num-slaves") != "1"
                        or state.get("num-other-sentinels") != "2"):
                    return False
            return True

        _wait(every_sentinel_sees_all, "the sentinels did not find each other and the replica")
    except BaseException:
        deployment.stop()
        raise
    return deployment


def _spawn(deployment: SentinelDeployment, port: int, argv: list[str], password: str) -> None:
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deployment.processes[port] = process
    deadline = time.monotonic() + 20
    while not _answers(port, password):
        if process.poll() is not None or time.monotonic() > deadline:
            raise _DidNotStart(f"{argv[0]} did not start on port {port}")
        time.sleep(0.02)


def _wait(ready: Callable[[], bool], failure: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(failure)
        time.sleep(0.05)
