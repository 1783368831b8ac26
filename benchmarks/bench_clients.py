"""What the budgeted LLM clients add to a call.

Runs the real openai SDK over loopback HTTP against outlay.testing.FakeProvider, raw and wrapped
(a budget of tokens; a budget of usd, tokens, input/output tokens and requests: still one
reservation), plain and streamed; then the bookkeeping of one call alone on the memory store
(reserve + settle, no HTTP), and the prompt estimator on its own. Prints a table and writes
benchmarks/results/clients.json.

    python benchmarks/bench_clients.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import openai

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from outlay import Budget, TokenPrices  # noqa: E402
from outlay._llm_call import CallPolicy, CallSpec  # noqa: E402
from outlay.clients import estimate_prompt_tokens  # noqa: E402
from outlay.clients.openai import BudgetedAsyncOpenAI  # noqa: E402
from outlay.testing import FakeProvider  # noqa: E402

MESSAGES = [{"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say hello. " * 20}]


async def interleaved(n: int, calls: dict[str, Callable[[], Awaitable[None]]]
                      ) -> dict[str, list[float]]:
    """Time each call ``n`` times, round-robin, so machine load drifts over all of them."""
    for call in calls.values():  # warm up connections and lazy imports
        for _ in range(5):
            await call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(n):
        for name, call in calls.items():
            start = time.perf_counter()
            await call()
            samples[name].append(time.perf_counter() - start)
    return samples


def row(name: str, samples: list[float], baseline: list[float] | None) -> dict[str, Any]:
    median = statistics.median(samples)
    return {"case": name, "calls": len(samples), "median_us": round(median * 1e6, 1),
            "p90_us": round(statistics.quantiles(samples, n=10)[-1] * 1e6, 1),
            "overhead_us": (round((median - statistics.median(baseline)) * 1e6, 1)
                            if baseline is not None else None)}


async def run(n: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    tokens = Budget(tokens=10**15)
    every = Budget(usd=Decimal(10**9), tokens=10**15, input_tokens=10**15,
                   output_tokens=10**15, requests=10**15)
    prices = TokenPrices(Decimal("2.5"), Decimal("10"))
    kw: dict[str, Any] = {"model": "m", "messages": MESSAGES, "max_completion_tokens": 100}
    with FakeProvider() as fake:
        async with openai.AsyncOpenAI(
                api_key="bench", base_url=fake.openai_url, max_retries=0,
                http_client=openai.DefaultAsyncHttpxClient(verify=False)) as client:
            wrapped = BudgetedAsyncOpenAI(client, tokens)
            both = BudgetedAsyncOpenAI(client, every, prices=prices)

            async def raw_plain() -> None:
                await client.chat.completions.create(**kw)

            async def wrapped_plain() -> None:
                await wrapped.chat.completions.create(**kw)

            async def both_plain() -> None:
                await both.chat.completions.create(**kw)

            async def raw_stream() -> None:
                stream = await client.chat.completions.create(
                    **kw, stream=True, stream_options={"include_usage": True})
                async with stream:
                    async for _ in stream:
                        pass

            async def wrapped_stream() -> None:
                stream = await wrapped.chat.completions.create(**kw, stream=True)
                async with stream:
                    async for _ in stream:
                        pass

            got = await interleaved(n, {
                "chat, raw SDK": raw_plain, "chat, tokens": wrapped_plain,
                "chat, all five units": both_plain, "chat stream, raw SDK": raw_stream,
                "chat stream, tokens": wrapped_stream})
    rows += [row("chat, raw SDK", got["chat, raw SDK"], None),
             row("chat, tokens", got["chat, tokens"], got["chat, raw SDK"]),
             row("chat, all five units", got["chat, all five units"], got["chat, raw SDK"]),
             row("chat stream, raw SDK", got["chat stream, raw SDK"], None),
             row("chat stream, tokens", got["chat stream, tokens"],
                 got["chat stream, raw SDK"])]

    # The wrapper's own bookkeeping on the memory store, without HTTP: estimate, reserve,
    # settle (the one reservation of a call and its commit).
    async def bookkeeping(policy: CallPolicy) -> None:
        spec = CallSpec(api="chat.completions", model="m",
                        input_estimate=estimate_prompt_tokens([MESSAGES], 2),
                        max_output=100, choices=1)
        call = await policy.open(spec)
        await call.settle(50, 20, final=True)

    only_tokens, with_money = CallPolicy(tokens), CallPolicy(every, prices)

    async def nothing() -> None:
        pass

    book = await interleaved(n * 10, {
        "nothing": nothing,
        "tokens": lambda: bookkeeping(only_tokens),
        "money": lambda: bookkeeping(with_money)})
    rows += [row("bookkeeping, tokens", book["tokens"], book["nothing"]),
             row("bookkeeping, all five units", book["money"], book["nothing"])]
    for size in (1_000, 100_000):
        prompt = [{"role": "user", "content": "lorem ipsum dolor sit amet " * (size // 27)}]
        samples = []
        for _ in range(max(20, n // 5)):
            start = time.perf_counter()
            estimate_prompt_tokens([prompt], 1)
            samples.append(time.perf_counter() - start)
        rows.append(row(f"estimate, {size:,} chars", samples, None))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer calls")
    args = parser.parse_args()
    n = 30 if args.quick else 200
    rows = anyio.run(run, n)
    print(f"{'case':<26} {'calls':>6} {'median us':>10} {'p90 us':>10} {'overhead us':>12}")
    for row in rows:
        print(f"{row['case']:<26} {row['calls']:>6} {row['median_us']:>10} "
              f"{row['p90_us'] if row['p90_us'] is not None else '-':>10} "
              f"{row['overhead_us'] if row['overhead_us'] is not None else '-':>12}")
    out = ROOT / "benchmarks" / "results" / "clients.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"quick": args.quick, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
