"""Where should a GPU job run? LOCAL when a free accelerator has the memory, else CLOUD, and on
a paid SDK only when the caller allows it.

    python examples/gpu_routing.py

Four backends: this workstation (one 24 GiB GPU), a LAN box (one 40 GiB GPU, busy), a cloud
machine billed per second (vCPU, memory and GPU rates, plus the minute it lingers after the
job), and a managed SDK billed per job. Every job declares its tool, the GPU memory it needs and
its maximum runtime; the router prices each candidate's worst case exactly (``estimate_cost``),
checks it against the team's budget, holds it while the job runs and commits what the job
really cost. Each decision is printed.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import anyio
import anyio.lowlevel

from outlay import (
    Accelerator,
    Backend,
    BackendKind,
    Budget,
    CostRates,
    MemoryStore,
    NoRoute,
    RecordingStore,
    RouteChoice,
    Router,
    SpendReport,
    Work,
    estimate_cost,
)

CLOUD_RATES = CostRates(per_vcpu_second=Decimal("0.0000125"), per_gib_second=Decimal("0.0000015"),
                        per_accelerator_second=Decimal("0.0011"), idle_tail_s=60,
                        billing_increment_s=60)
SDK_RATES = CostRates(per_job=Decimal("4.00"), per_accelerator_second=Decimal(0))

WORKSTATION = Backend("workstation", BackendKind.LOCAL, node="ws-01", tools={"finetune"},
                      accelerators=(Accelerator("rtx-4090", 24),))
LAN_BOX = Backend("lab-box", BackendKind.LAN, node="lab-7", tools={"finetune"},
                  accelerators=(Accelerator("a100-40g", 40, free=False),))
CLOUD = Backend("cloud-h100", BackendKind.CLOUD, node="eu-west", tools={"finetune"},
                accelerators=(Accelerator("h100", 80),), rates=CLOUD_RATES)
MANAGED = Backend("managed-sdk", BackendKind.SDK, tools={"finetune"},
                  accelerators=(Accelerator("managed", 80), Accelerator("managed", 80)),
                  rates=SDK_RATES)


async def finetune(choice: RouteChoice, work: Work) -> str:
    """Stands in for launching the job; reports what it really cost (it finished early)."""
    await anyio.lowlevel.checkpoint()
    if choice.backend.rates is not None and work.max_runtime_s is not None:
        ran = Decimal(work.max_runtime_s) * Decimal("0.6")
        choice.report(estimate_cost(choice.backend.rates, max_runtime_s=ran, vcpus=work.vcpus,
                                    memory_gib=work.memory_gib, accelerators=work.accelerators))
    where = f", node {choice.backend.node}" if choice.backend.node else ""
    return f"ran on {choice.backend.name} ({choice.backend.kind}{where})"


async def submit(router: Router, work: Work, *, allow_sdk: bool = False) -> None:
    try:
        routed = await router.run(work, lambda choice: finetune(choice, work),
                                  allow_sdk=allow_sdk)
    except NoRoute as refused:
        print(f"{work.label}: refused\n{refused.decision}\n")
        return
    print(routed.decision)
    print(f"{work.label}: {routed.value}; charged {routed.charged or 0} USD\n")


async def main() -> None:
    budget = Budget(usd=Decimal("10"), store=RecordingStore(MemoryStore()))  # for the report
    router = Router([MANAGED, CLOUD, LAN_BOX, WORKSTATION], budget=budget)  # any order

    small = Work(tool="finetune", accelerator_memory_gib=16, max_runtime_s=1800, vcpus=8,
                 memory_gib=32, label="small-lora")
    big = Work(tool="finetune", accelerator_memory_gib=40, max_runtime_s=3600, vcpus=16,
               memory_gib=64, label="big-lora")
    huge = Work(tool="finetune", accelerators=2, accelerator_memory_gib=80, max_runtime_s=7200,
                vcpus=32, memory_gib=256, label="two-gpu-run")

    await submit(router, small)          # the workstation's GPU is free and big enough: LOCAL
    busy = router.replace([dataclasses.replace(
        WORKSTATION, accelerators=(Accelerator("rtx-4090", 24, free=False),)),
        LAN_BOX, CLOUD, MANAGED])
    await submit(busy, small)            # the workstation is busy: CLOUD
    await submit(router, big)            # 40 GiB: neither local GPU fits: CLOUD
    await submit(router, huge)           # two 80 GiB GPUs: only the SDK, not allowed
    await submit(router, huge, allow_sdk=True)
    left = await budget.remaining()
    print(f"left in the budget: {left['usd']} USD")
    print("\n== spend report ==")
    print((await SpendReport.from_store(budget.store)).to_text())


if __name__ == "__main__":
    anyio.run(main)
