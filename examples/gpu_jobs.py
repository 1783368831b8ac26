"""GPU jobs that a reviewer approves, worker processes run, and one killed worker loses nothing.

Run: ``python examples/gpu_jobs.py`` (a SQLite file in a temporary directory) or
``python examples/gpu_jobs.py --store redis://127.0.0.1:6379/0?namespace=gpu-demo``.

1. Training jobs are submitted through an approval gate: a scripted reviewer approves jobs up
   to $15 and rejects bigger ones. Each approval holds the job's worst case at once, so the
   burst of approvals fills the $40 monthly cap before anything runs and the last job is
   refused by the budget.
2. Two worker processes (this script with ``--worker``) claim the jobs. The first one to start
   a job is killed with SIGKILL mid-job; the other recovers that job once its lease ends and
   runs it again.
3. Each job reports its actual cost (GPU-seconds used times the price), which settles its
   hold. The summary checks that the store's spend is the sum of those costs and nothing is
   still held.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
from decimal import Decimal
from pathlib import Path

import anyio
import anyio.abc
from anyio.streams.text import TextReceiveStream

from outlay import (
    ApprovalHook,
    ApprovalQueue,
    BudgetExceeded,
    Job,
    JobEndpoint,
    JobOutcome,
    JobQueue,
    JobRejected,
    LimitSpec,
    LocalTransport,
    Principals,
    SpendReport,
    Window,
    Worker,
    job_cost,
    store_from_url,
)

PRICE_PER_GPU_HOUR = Decimal("2.40")
JOBS = [  # name, worst-case GPU-hours, GPU-hours it really uses
    ("train-a", 4, Decimal("3.5")),
    ("train-b", 4, Decimal("2.25")),
    ("train-c", 3, Decimal("3")),
    ("sweep-d", 8, Decimal("6")),   # rejected by the reviewer: above $15
    ("train-e", 5, Decimal("4.5")),
    ("train-f", 2, Decimal("1")),   # refused by the budget: the approvals above fill the cap
]
LEASE = 1.0


# -- the worker process ------------------------------------------------------------------------


async def run_job(job: Job) -> JobOutcome:
    print(f"started {job.payload['name']}", flush=True)
    await anyio.sleep(0.6)  # the GPU at work
    used = Decimal(job.payload["uses_hours"])
    return JobOutcome({"checkpoint": f"{job.payload['name']}.ckpt", "pid": os.getpid()},
                      {"usd": (used * PRICE_PER_GPU_HOUR).quantize(Decimal("0.01"))})


async def worker(url: str) -> None:
    queue = JobQueue(store_from_url(url), lease=LEASE)
    print("ready", flush=True)
    await Worker(queue, ["gpu"], LocalTransport(JobEndpoint(run_job)), heartbeat=0.2,
                 poll=0.1).run()


# -- the orchestrating process -------------------------------------------------------------------


async def submit_all(queue: JobQueue, approvals: ApprovalQueue) -> None:
    async def reviewer() -> None:
        while True:
            request = await approvals.next_request()
            name = request.invocation.arguments["name"]
            if request.cost <= Decimal("15"):
                approvals.approve(request.request_id, who="reviewer", why="fits the job cap")
                print(f"approved {name} (${request.cost}) by reviewer")
            else:
                approvals.reject(request.request_id, who="reviewer", why="above $15")

    async def submit(name: str, hours: int, uses: Decimal) -> None:
        try:
            await queue.submit({"name": name, "uses_hours": str(uses)}, lane="gpu",
                               cost={"usd": hours * PRICE_PER_GPU_HOUR}, job_id=name)
        except JobRejected as exc:
            print(f"rejected {name}: {exc.reason}")
        except BudgetExceeded:
            print(f"refused {name}: the approvals before it already hold the monthly cap")

    async with anyio.create_task_group() as tg:
        tg.start_soon(reviewer)
        for name, hours, uses in JOBS:  # one after another, so the output reads in order
            await submit(name, hours, uses)
        tg.cancel_scope.cancel()


async def start_worker(url: str, lines: list[tuple[int, str]],
                       tg: anyio.abc.TaskGroup) -> anyio.abc.Process:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = await anyio.open_process([sys.executable, __file__, "--worker", url], env=env,
                                       stderr=subprocess.DEVNULL)

    async def read() -> None:
        assert process.stdout is not None
        buffer = ""
        async for chunk in TextReceiveStream(process.stdout):
            *done, buffer = (buffer + chunk).split("\n")
            lines.extend((process.pid, line) for line in done)

    tg.start_soon(read)
    return process


async def main(url: str) -> None:
    store = store_from_url(url)
    budget = Principals(store, template=[LimitSpec("usd", Window.month(), Decimal("40"))]
                        ).get("team:research")
    approvals = ApprovalQueue()
    gate = ApprovalHook(approvals, threshold=Decimal("5"), cost=job_cost("usd"))
    queue = JobQueue(store, budget=budget, approval=gate, lease=LEASE)
    await submit_all(queue, approvals)
    [usd] = await budget.usage()
    print(f"held before anything ran: {usd.held} of {usd.cap}")

    lines: list[tuple[int, str]] = []
    async with anyio.create_task_group() as tg:
        workers = [await start_worker(url, lines, tg) for _ in range(2)]
        killed = None
        with anyio.fail_after(60):
            while killed is None:  # kill the first worker to start a job, mid-job
                started = [(pid, line) for pid, line in lines if line.startswith("started")]
                if started:
                    pid, line = started[0]
                    victim = next(w for w in workers if w.pid == pid)
                    victim.send_signal(signal.SIGKILL)
                    await victim.wait()
                    killed = line.split()[1]
                    print(f"killed a worker while it ran {killed}")
                await anyio.sleep(0.02)
            while True:  # until every job has ended
                if all(job.state in ("completed", "failed") for job in await queue.jobs()):
                    break
                await anyio.sleep(0.1)
        for process in workers:
            if process.returncode is None:
                process.kill()
                await process.wait()
        tg.cancel_scope.cancel()

    total = Decimal(0)
    for job in await queue.jobs():
        actual = job.actual["usd"] if job.actual else Decimal(0)
        total += actual
        note = " (recovered from the killed worker)" if job.id == killed else ""
        print(f"{job.id}: {job.state} on attempt {job.attempts}, held ${job.cost['usd']}, "
              f"cost ${actual}{note}")
    [usd] = await budget.usage()
    print(f"spend: jobs {total} = store spent {usd.spent}, held {usd.held}")
    if total != usd.spent or usd.held:
        raise SystemExit("the spend does not add up")
    print("the spend adds up")
    print((await SpendReport.from_store(store)).to_text())  # like every example
    await store.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", help="store URL (default: a SQLite file in a temp dir)")
    parser.add_argument("--worker", metavar="URL", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.worker:
        anyio.run(worker, options.worker)
    elif options.store:
        anyio.run(main, options.store)
    else:
        with tempfile.TemporaryDirectory() as folder:
            anyio.run(main, f"sqlite:///{Path(folder) / 'gpu-jobs.db'}")
