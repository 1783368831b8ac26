"""Workers: claim a job, keep its lease alive, hand it to an endpoint, settle what came back.

Pull and push share this one model; only the transport differs:

- pull: a worker process claims from the store and runs the job in process
  (``Worker(queue, lanes, LocalTransport(endpoint))``);
- push: an orchestrator claims and hands each job to a worker endpoint elsewhere
  (``Worker(queue, lanes, TcpTransport(host, port))``, the endpoint side runs
  ``JobEndpoint.serve``).

Either way the endpoint checks every artifact's sha256 before the executor sees the job; a job
that fails the check never runs and fails for good.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol, runtime_checkable

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

from .._core import _log
from .._core._amounts import check_lease
from .._core._exceptions import ArtifactMismatch, RemoteJobError
from ._model import (
    MAX_ERROR,
    Artifact,
    Job,
    JobOutcome,
    decode_amounts,
    dump_json,
    encode_amounts,
    file_sha256,
    job_from_wire,
    job_to_wire,
)
from ._queue import Claim, JobQueue

Executor = Callable[[Job], Awaitable[JobOutcome]]
"""Runs one job and reports its result and actual cost."""

Fetch = Callable[[Artifact], Awaitable[bytes]]
"""Returns an artifact's bytes (default: the file at ``artifact.location``)."""

MAX_MESSAGE = 16 * 1024 * 1024
"""The largest job or answer a ``TcpTransport`` carries, in bytes."""


def describe(exc: BaseException) -> str:
    """How a job's error is recorded: ``"RuntimeError: out of memory"`` (the class alone if
    the message is empty)."""
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


async def verify_artifacts(artifacts: Iterable[Artifact], fetch: Fetch | None = None) -> None:
    """Check that every artifact's content hashes to its sha256; ``ArtifactMismatch`` for the
    first one that is missing or differs (its content is never put in the message)."""
    for artifact in artifacts:
        try:
            if fetch is None:
                found = await anyio.to_thread.run_sync(file_sha256, artifact.location)
            else:
                found = hashlib.sha256(await fetch(artifact)).hexdigest()
        except OSError as exc:
            raise ArtifactMismatch(artifact.name, f"cannot be read ({exc.strerror})") from exc
        if found != artifact.sha256:
            raise ArtifactMismatch(artifact.name, f"content hashes to {found}, expected "
                                                  f"{artifact.sha256}")


class JobEndpoint:
    """Where a job runs: verifies its artifacts, then awaits ``executor(job)``.

    ``fetch`` reads an artifact's bytes (default: the local file at its location). The
    executor returns a ``JobOutcome``; anything else is a ``TypeError``.
    """

    def __init__(self, executor: Executor, *, fetch: Fetch | None = None) -> None:
        if not callable(executor):
            raise TypeError(f"executor must be an async callable, got {executor!r}")
        self._executor = executor
        self._fetch = fetch

    async def run(self, job: Job) -> JobOutcome:
        """Verify, then run ``job``. ``ArtifactMismatch`` means the executor was not called."""
        await verify_artifacts(job.artifacts, self._fetch)
        outcome = await self._executor(job)
        if not isinstance(outcome, JobOutcome):
            raise TypeError(f"the executor returned {outcome!r}, not a JobOutcome")
        return outcome

    async def handle(self, stream: anyio.abc.ByteStream) -> None:
        """Serve one job over ``stream``: a JSON line in, a JSON line out (``TcpTransport``)."""
        async with stream:
            reader = BufferedByteReceiveStream(stream)
            line = await reader.receive_until(b"\n", MAX_MESSAGE)
            reply: dict[str, Any]
            try:
                outcome = await self.run(job_from_wire(json.loads(line)))
                reply = {"result": outcome.result, "actual": encode_amounts(outcome.actual)}
            except ArtifactMismatch as exc:
                reply = {"error": str(exc), "artifact": exc.artifact, "reason": exc.reason}
            except Exception as exc:
                reply = {"error": describe(exc)[:MAX_ERROR]}
            await stream.send(dump_json(reply, "answer").encode() + b"\n")

    async def serve(self, host: str = "127.0.0.1", port: int = 0, *,
                    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        """Accept jobs on ``host:port`` until cancelled; ``task_status`` gets the bound port
        (use with ``TaskGroup.start``)."""
        listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
        async with listener:
            bound: int = listener.extra(anyio.abc.SocketAttribute.local_port)
            task_status.started(bound)
            await listener.serve(self.handle)


@runtime_checkable
class Transport(Protocol):
    """Carries a job to an endpoint and brings back its outcome (or raises its error)."""

    async def deliver(self, job: Job) -> JobOutcome:
        """Run ``job`` at the endpoint; ``ArtifactMismatch`` if it refused the artifacts."""
        ...


class LocalTransport:
    """The pull transport: the endpoint runs in this process."""

    def __init__(self, endpoint: JobEndpoint) -> None:
        self._endpoint = endpoint

    async def deliver(self, job: Job) -> JobOutcome:
        return await self._endpoint.run(job)


class TcpTransport:
    """A push transport: each job goes to a ``JobEndpoint.serve`` at ``host:port`` as one JSON
    line over its own TCP connection, and the answer comes back the same way. ``timeout``
    (seconds, default none) bounds one delivery; past it ``TimeoutError`` is raised and the
    worker records it as the attempt's error (an endpoint that vanished without closing the
    connection would otherwise be waited for, with heartbeats, forever)."""

    def __init__(self, host: str, port: int, *, timeout: float | None = None) -> None:
        self._host = host
        self._port = port
        self._timeout = None if timeout is None else check_lease(timeout)

    async def deliver(self, job: Job) -> JobOutcome:
        with anyio.fail_after(self._timeout):
            stream = await anyio.connect_tcp(self._host, self._port)
            async with stream:
                await stream.send(dump_json(job_to_wire(job), "job").encode() + b"\n")
                line = await BufferedByteReceiveStream(stream).receive_until(b"\n",
                                                                             MAX_MESSAGE)
        reply = json.loads(line)
        if "artifact" in reply:
            raise ArtifactMismatch(reply["artifact"], reply["reason"])
        if "error" in reply:
            raise RemoteJobError(reply["error"])
        return JobOutcome(reply["result"], decode_amounts(reply["actual"]))

    def __repr__(self) -> str:
        return f"<TcpTransport {self._host}:{self._port}>"


class Worker:
    """Claims jobs of ``lanes`` from ``queue`` and runs each through ``transport``.

    While a job runs, its lease (and its budget hold's lease) is renewed every ``heartbeat``
    seconds (default a third of the lease); if a renewal finds the job no longer leased to
    this worker, the run is cancelled and nothing is settled. A job that raises is failed with
    its error (queued again while attempts are left); ``ArtifactMismatch`` fails it for good.
    A worker cancelled mid-job hands the job back at once (queued again, shielded).
    """

    def __init__(self, queue: JobQueue, lanes: Iterable[str], transport: Transport, *,
                 lease: float | None = None, heartbeat: float | None = None,
                 poll: float = 0.5, recover: bool = True) -> None:
        if not isinstance(transport, Transport):
            raise TypeError(f"transport must have an async deliver(job), got {transport!r}")
        self._queue = queue
        self._lanes = list(lanes)
        self._transport = transport
        self._lease = queue.lease if lease is None else check_lease(lease)
        self._beat = self._lease / 3 if heartbeat is None else check_lease(heartbeat)
        self._poll = check_lease(poll)
        self._recover = recover

    async def run_one(self) -> Job | None:
        """Claim one job and run it to its end; the job as claimed, or ``None`` if none was
        queued."""
        claim = await self._queue.claim(self._lanes, lease=self._lease)
        if claim is None:
            return None
        await self.execute(claim)
        return claim.job

    async def run(self, *, until_idle: bool = False, max_jobs: float = math.inf) -> int:
        """Work until cancelled (or, with ``until_idle``, until no job is queued; or after
        ``max_jobs``); recovers expired leases before each claim. Returns jobs run."""
        done = 0
        while done < max_jobs:
            if self._recover:
                await self._queue.recover()
            if await self.run_one() is None:
                if until_idle:
                    break
                await anyio.sleep(self._poll)
            else:
                done += 1
        return done

    async def execute(self, claim: Claim) -> bool:
        """Run a claimed job: heartbeat, deliver, then complete or fail it. True if this
        worker's completion or failure was applied; False if the lease was lost meanwhile."""
        lost = False
        outcome: JobOutcome | None = None
        error: str | None = None
        retry = True

        async def beat(scope: anyio.CancelScope) -> None:
            nonlocal lost
            while True:
                await anyio.sleep(self._beat)
                if not await claim.heartbeat():
                    lost = True
                    scope.cancel()
                    return

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(beat, tg.cancel_scope)
                try:
                    outcome = await self._transport.deliver(claim.job)
                except ArtifactMismatch as exc:
                    error, retry = str(exc), False
                except Exception as exc:
                    error = describe(exc)
                tg.cancel_scope.cancel()
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await claim.fail("the worker was cancelled mid-job", retry=True)
            raise
        if lost:
            _log.warn("outlay.jobs.lease_lost", job=claim.job.id, attempt=claim.job.attempts)
            return False
        if outcome is not None:
            return await claim.complete(outcome.result, outcome.actual)
        assert error is not None
        return await claim.fail(error, retry=retry)
