"""A real Redis Cluster for tests: three masters, each with one replica, on loopback.

``start_cluster`` starts six ``redis-server --cluster-enabled yes`` nodes on free loopback ports,
each in its own temporary directory, joins them with ``redis-cli --cluster create
--cluster-replicas 1`` and waits until every node reports ``cluster_state:ok``. ``kill_master``
SIGKILLs the master serving a slot and waits until its replica has taken over; ``stop`` stops
every node still running. Node timeout is short (1 s) so a failover takes seconds, not minutes.
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .redisserver import HOST, answers, free_port

NODE_TIMEOUT_MS = 4000
"""How long a master may be unreachable before its replica takes over. At 1 s a loaded 2-core
machine (the full suite) made masters look dead: a spurious failover then lost writes the old
master had acknowledged but not replicated, which the failover test reads as lost limits."""


def _replication(port: int) -> dict[str, str]:
    """``INFO replication`` of the node on ``port`` as a mapping."""
    lines = cli(port, "info", "replication").splitlines()
    return dict(line.split(":", 1) for line in lines if ":" in line)


def binaries_present() -> bool:
    return shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None


def cli(port: int, *args: str) -> str:
    done = subprocess.run(["redis-cli", "-h", HOST, "-p", str(port), *args], check=True,
                          capture_output=True, text=True, timeout=30)
    return done.stdout


@dataclass
class RedisCluster:
    """Six nodes we started; ``ports`` in start order, ``processes`` by port."""

    directory: Path
    ports: list[int]
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)

    def url(self) -> str:
        """A ``redis+cluster://`` URL naming one live node (the client discovers the rest)."""
        port = next(p for p in self.ports if self.processes[p].poll() is None)
        return f"redis+cluster://{HOST}:{port}"

    def live_port(self) -> int:
        return next(p for p in self.ports if self.processes[p].poll() is None)

    def master_of(self, slot: int) -> int:
        """The port of the master serving ``slot``, as a live node sees it."""
        for line in cli(self.live_port(), "cluster", "nodes").splitlines():
            _node_id, address, flags, _master, _ping, _pong, _epoch, state, *slots = line.split()
            if "master" not in flags or "fail" in flags or state != "connected":
                continue
            for part in slots:
                if part.startswith("["):
                    continue
                low, _, high = part.partition("-")
                if int(low) <= slot <= int(high or low):
                    return int(address.split("@")[0].rpartition(":")[2])
        raise LookupError(f"no live master serves slot {slot}")

    def kill_master(self, slot: int, *, timeout: float = 30) -> tuple[int, int]:
        """SIGKILL the master of ``slot``; wait until another node serves it. Returns
        (old port, new port)."""
        old = self.master_of(slot)
        process = self.processes[old]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        deadline = time.monotonic() + timeout
        while True:
            try:
                new = self.master_of(slot)
                if new != old and "cluster_state:ok" in cli(new, "cluster", "info"):
                    return old, new
            except (LookupError, subprocess.CalledProcessError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"no replica took over slot {slot} from port {old}")
            time.sleep(0.05)

    def replicate(self, slot: int, *, timeout: float = 10) -> None:
        """Wait until the replica of ``slot``'s master has acknowledged every write the master
        has so far. (``WAIT`` would not do: it waits only for the writes of the connection that
        sends it, and redis-cli's connection made none.)"""
        master = self.master_of(slot)
        target = _replication(master)["master_repl_offset"]
        deadline = time.monotonic() + timeout
        while True:
            replicas = [value for key, value in _replication(master).items()
                        if re.fullmatch(r"slave\d+", key)]
            offsets = [int(dict(part.split("=", 1) for part in replica.split(","))["offset"])
                       for replica in replicas]
            if offsets and max(offsets) >= int(target):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the replica of port {master} did not catch up to {target}")
            time.sleep(0.02)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            process.wait(timeout=10)


class _NodeDidNotStart(RuntimeError):
    """A node could not take its ports (another process took one after we chose it)."""


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def start_cluster(directory: Path, *, attempts: int = 3) -> RedisCluster:
    """Start six nodes and form a cluster of three masters with one replica each. Ports are
    chosen free (the client port and the cluster bus port, port + 10000); a node that still
    finds one taken (a race with another process) makes it start over on new ports."""
    for attempt in range(attempts):
        try:
            return _start_cluster(directory / f"attempt-{attempt}")
        except _NodeDidNotStart:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def _start_cluster(directory: Path) -> RedisCluster:
    ports: list[int] = []
    while len(ports) < 6:
        port = free_port()
        # The cluster bus listens on port + 10000: both must be free.
        if port < 55535 and port not in ports and _bindable(port + 10000):
            ports.append(port)
    directory.mkdir(parents=True)
    cluster = RedisCluster(directory, ports)
    try:
        for port in ports:
            node = directory / str(port)
            node.mkdir()
            cluster.processes[port] = subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", HOST, "--dir", str(node),
                 "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                 "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--appendonly", "no",
                 "--save", "", "--protected-mode", "yes", "--daemonize", "no",
                 "--loglevel", "warning"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        for port in ports:
            while not answers(HOST, port):
                if cluster.processes[port].poll() is not None or time.monotonic() > deadline:
                    raise _NodeDidNotStart(f"redis-server did not start on port {port}")
                time.sleep(0.02)
        subprocess.run(["redis-cli", "--cluster", "create",
                        *(f"{HOST}:{port}" for port in ports), "--cluster-replicas", "1",
                        "--cluster-yes"], check=True, capture_output=True, timeout=60)
        deadline = time.monotonic() + 30
        for port in ports:
            while "cluster_state:ok" not in cli(port, "cluster", "info"):
                if time.monotonic() > deadline:
                    raise RuntimeError("the cluster did not reach cluster_state:ok")
                time.sleep(0.05)
        # Every replica has finished its first sync, so a failover has a replica to promote.
        deadline = time.monotonic() + 30
        while sum("master_link_status:up" in cli(p, "info", "replication") for p in ports) < 3:
            if time.monotonic() > deadline:
                raise RuntimeError("the replicas did not sync")
            time.sleep(0.05)
    except BaseException:
        cluster.stop()
        raise
    return cluster
