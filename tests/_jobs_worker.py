"""A worker process for the multi-process job tests (``python tests/_jobs_worker.py URL``).

Serves lane ``gpu``: prints ``started <job> <attempt>`` when a job starts and ``applied <job>``
when its completion was applied. A job whose payload says ``poison`` kills this process with
SIGKILL mid-job. The actual cost reported depends on the attempt, so a settlement counted for
the wrong attempt (or twice) shows in the spend.
"""

from __future__ import annotations

import os
import signal
import sys
from decimal import Decimal

import anyio

from outlay import Job, JobEndpoint, JobOutcome, JobQueue, LocalTransport, Worker, store_from_url


def actual_cost(n: int, attempt: int) -> Decimal:
    """What job ``n`` reports on ``attempt``: distinct per attempt, below its worst case 1.00."""
    return Decimal("0.10") * (n % 5 + 1) + Decimal(attempt) / 1000


async def execute(job: Job) -> JobOutcome:
    print(f"started {job.id} {job.attempts}", flush=True)
    if job.payload.get("poison"):
        os.kill(os.getpid(), signal.SIGKILL)
    await anyio.sleep(job.payload["seconds"])
    return JobOutcome({"pid": os.getpid(), "attempt": job.attempts},
                      {"usd": actual_cost(job.payload["n"], job.attempts)})


async def main(url: str) -> None:
    queue = JobQueue(store_from_url(url), lease=1.0)
    worker = Worker(queue, ["gpu"], LocalTransport(JobEndpoint(execute)), heartbeat=0.2)
    print("ready", flush=True)
    while True:
        await queue.recover()
        claim = await queue.claim(["gpu"])
        if claim is None:
            await anyio.sleep(0.05)
            continue
        if await worker.execute(claim):
            print(f"applied {claim.job.id}", flush=True)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1])
