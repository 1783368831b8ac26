"""One budgeted client call is one store round trip to reserve and one to settle, whatever the
number of units, windows and principals it holds: counted on a real SQLite file (transactions)
and a real Redis (commands sent), with the real openai SDK against outlay.testing.FakeProvider."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest

from outlay import Budget, LimitSpec, Store, TokenPrices, Window
from outlay.clients.openai import BudgetedAsyncOpenAI
from outlay.stores import SQLiteStore
from outlay.testing import FakeProvider, Script

from .redisserver import RedisServer
from .storekit import redis_store_at

pytestmark = pytest.mark.anyio

MESSAGES = [{"role": "user", "content": "Say hello."}]


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider() as provider:
        yield provider


def count_calls(obj: Any, name: str) -> list[int]:
    """Count calls of ``obj.name`` (the real method still runs)."""
    seen = [0]
    inner: Callable[..., Any] = getattr(obj, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        seen[0] += 1
        return inner(*args, **kwargs)

    setattr(obj, name, counted)
    return seen


@asynccontextmanager
async def counted_store(kind: str, tmp_path: Path,
                        request: pytest.FixtureRequest) -> AsyncIterator[tuple[Store, list[int]]]:
    if kind == "sqlite":
        store = SQLiteStore(tmp_path / "budgets.db")
        try:
            yield store, count_calls(store, "_run")  # one transaction per call
        finally:
            await store.aclose()
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    async with redis_store_at(server) as redis:
        yield redis, count_calls(redis.client, "execute_command")  # one command per call


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_one_round_trip_per_reservation(kind: str, fake: FakeProvider, tmp_path: Path,
                                              request: pytest.FixtureRequest) -> None:
    async with counted_store(kind, tmp_path, request) as (store, trips):
        # Five units, two windows each, and a parent: 20 limits in every reservation.
        windows = [Window.run(), Window.day()]
        budget = Budget(usd=Decimal("5"), tokens=100_000, input_tokens=50_000,
                        output_tokens=50_000, requests=100, window=windows, store=store,
                        principal="tenant:acme",
                        caps=[LimitSpec("tool_calls", w, 20) for w in windows]
                        ).child("agent:researcher")
        async with openai.AsyncOpenAI(
                api_key="test", base_url=fake.openai_url, max_retries=0,
                http_client=openai.DefaultAsyncHttpxClient(verify=False)) as client:
            llm = BudgetedAsyncOpenAI(client, budget,
                                      prices=TokenPrices(Decimal("3"), Decimal("15")))
            for _ in range(2):  # the first call creates the limits: still one round trip
                trips[0] = 0
                await llm.chat.completions.create(model="m", messages=MESSAGES,
                                                  max_completion_tokens=50)
                assert trips[0] == 2  # reserve, commit
            fake.script(Script(tool_calls=(("search", "{}"),) * 3))
            trips[0] = 0
            await llm.chat.completions.create(model="m", messages=MESSAGES,
                                              max_completion_tokens=50)
            assert trips[0] == 4  # reserve and commit of the call, then of its tool-call batch
        spent = {usage.key.split("/")[-2]: usage.spent for usage in await budget.usage()
                 if "/run:" in usage.key}
        assert spent == {"usd": Decimal("0.000414"), "tokens": 54, "input_tokens": 33,
                         "output_tokens": 21, "requests": 3, "tool_calls": 3}
