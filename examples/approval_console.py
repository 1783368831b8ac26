"""An agent's expensive tool calls wait for a reviewer; the API key never shows up in a log.

Run: ``python examples/approval_console.py`` (a scripted reviewer approves jobs up to $30) or
``python examples/approval_console.py --interactive`` (you answer y/n on the console). The
structlog events printed are the audit trail: approvals with who/when/why, and egress events
that name the environment variable, never its value.
"""

from __future__ import annotations

import argparse
import os
from decimal import Decimal

import anyio
import structlog

from outlay import (
    ApprovalHook,
    ApprovalQueue,
    ApprovalRequest,
    Budget,
    DispatchBudgetHook,
    EgressAuditHook,
    MemoryApprovalLog,
    MemoryStore,
    RecordingStore,
    Secret,
    SpendReport,
    ToolDispatcher,
    ToolInvocation,
)

PRICE_PER_GPU_HOUR = Decimal("2.50")


def build(queue: ApprovalQueue, audit: MemoryApprovalLog, budget: Budget) -> ToolDispatcher:
    egress = EgressAuditHook()  # reads os.environ when a tool is called

    @egress.tool(endpoint="https://gpu.example.invalid/v1/jobs",
                 secrets={"token": "GPU_CLOUD_TOKEN"})
    async def train(model: str, hours: int, token: Secret) -> str:
        # A real tool would send the job with the header f"Bearer {token.reveal()}".
        return f"queued {model} for {hours} GPU-hours"

    approval = ApprovalHook(
        queue, threshold=Decimal("10.00"), audit=audit, timeout=300,
        cost=lambda inv: PRICE_PER_GPU_HOUR * inv.arguments["hours"])
    # Approved jobs are charged to the trainer's GPU budget (events recorded for the report).
    spend = DispatchBudgetHook(
        budget, lambda inv: {"usd": PRICE_PER_GPU_HOUR * inv.arguments["hours"]})
    return ToolDispatcher([train], [approval, spend, egress], errors="result")


async def scripted(request: ApprovalRequest, queue: ApprovalQueue) -> None:
    if request.cost <= Decimal("30"):
        queue.approve(request.request_id, who="scripted-reviewer", why="within the $30 job cap")
    else:
        queue.reject(request.request_id, who="scripted-reviewer", why="above the $30 job cap")


async def interactive(request: ApprovalRequest, queue: ApprovalQueue) -> None:
    args = dict(request.invocation.arguments)
    answer = await anyio.to_thread.run_sync(
        input, f"approve {request.invocation.tool_name}({args}) for ${request.cost}? [y/n] ")
    why = await anyio.to_thread.run_sync(input, "why? ") or "no reason given"
    decide = queue.approve if answer.strip().lower().startswith("y") else queue.reject
    decide(request.request_id, who=os.environ.get("USER") or "console", why=why)


async def main(is_interactive: bool) -> None:
    queue, audit = ApprovalQueue(), MemoryApprovalLog()
    budget = Budget(usd=Decimal("100.00"), store=RecordingStore(MemoryStore()),
                    principal="agent:trainer")
    dispatcher = build(queue, audit, budget)
    review = interactive if is_interactive else scripted

    async def reviewer() -> None:
        while True:
            await review(await queue.next_request(), queue)

    jobs = [("tiny", 2), ("medium", 8), ("huge", 40)]
    async with anyio.create_task_group() as tg:
        tg.start_soon(reviewer)
        for i, (model, hours) in enumerate(jobs):
            result = await dispatcher.dispatch(
                ToolInvocation(f"call_{i}", "train", {"model": model, "hours": hours},
                               principal="agent:trainer"))
            print(f"{model}: {result.reason if result.skipped else result.output}")
        tg.cancel_scope.cancel()
    print("audit trail:")
    for record in audit.records:
        verdict = "approved" if record.approved else "rejected"
        print(f"  {record.call_id} ${record.cost} {verdict} by {record.who} at "
              f"{record.decided_at:%H:%M:%S%z}: {record.why}")
    print((await SpendReport.from_store(budget.store)).to_text())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--interactive", action="store_true", help="decide on the console")
    options = parser.parse_args()
    os.environ.setdefault("GPU_CLOUD_TOKEN", "demo-token-not-a-real-key")
    structlog.configure(processors=[structlog.processors.add_log_level,
                                    structlog.processors.JSONRenderer()])
    anyio.run(main, options.interactive)
