"""The SDK-free parts of outlay.clients: estimates, prices, options, import isolation."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import pydantic
import pytest

import outlay
from outlay import Budget, PriceTable, TokenPrices, UnknownModelPrice
from outlay.clients import (
    MEDIA_TOKENS,
    MESSAGE_OVERHEAD,
    REQUEST_OVERHEAD,
    MoneyLimit,
    estimate_prompt_tokens,
    estimate_tokens,
)


@pytest.mark.parametrize(("value", "tokens"), [
    ("", 0),
    ("abcdef", 2),  # a word of n letters is held at (n + 5) / 6, the total rounded up
    ("abcdefgh", 3),
    ("日本語", 5),  # CJK at 1.4 a character
    ("ab日", 3),
    ({"role": "user"}, 4),  # keys count: two words of four letters
    (["abc", None, True, "abc"], 4),  # each string is counted on its own
    (12345, 3),  # numbers as written: a run of n digits at (n + 2) / 3
])
def test_estimate_tokens(value: object, tokens: int) -> None:
    assert estimate_tokens(value) == tokens


def test_estimate_counts_inline_media_flat() -> None:
    image = "data:image/png;base64," + "A" * 100_000
    assert estimate_tokens([{"type": "image_url", "image_url": {"url": image}}]) == (
        MEDIA_TOKENS + estimate_tokens({"type": "image_url", "image_url": {"url": ""}}))
    source = {"type": "base64", "media_type": "image/png", "data": "A" * 100_000}
    assert estimate_tokens(source) == MEDIA_TOKENS + estimate_tokens(
        {"type": "base64", "media_type": "image/png"})


def test_estimate_reads_pydantic_models() -> None:
    class Part(pydantic.BaseModel):
        text: str
        extra: str | None = None

    assert estimate_tokens(Part(text="abcdef")) == estimate_tokens({"text": "abcdef"})


def test_estimate_prompt_tokens_adds_overheads() -> None:
    assert estimate_prompt_tokens(["abcdef", None], 2) == (
        REQUEST_OVERHEAD + 2 * MESSAGE_OVERHEAD + 2)


def test_money_limit_one_price_is_exact_decimal() -> None:
    money = MoneyLimit(Budget(), "usd", TokenPrices(Decimal("2.50"), Decimal("10")))
    assert money.cost("any", input_tokens=1_000_000, output_tokens=0) == Decimal("2.50")
    assert money.cost("other", input_tokens=3, output_tokens=7) == Decimal("0.0000775")
    assert money.affordable_output("any", Decimal("0.001"), 0, 10**6) == 100
    assert money.affordable_output("any", Decimal("0.001"), 0, 60) == 60  # capped at the bound
    assert money.affordable_output("any", Decimal("0"), 1, 100) == -1  # not even the input
    free_output = MoneyLimit(Budget(), "usd", TokenPrices(Decimal(1), Decimal(0)))
    assert free_output.affordable_output("any", Decimal(1), 5, 10**12) == 10**12


def test_money_limit_charges_cached_input_at_the_cached_rate() -> None:
    cached = TokenPrices(Decimal("3"), Decimal("15"), cached_input_per_mtok=Decimal("0.30"))
    money = MoneyLimit(Budget(), "usd", cached)
    # 60 uncached at 3, 40 cached at 0.30, 10 out at 15 (per million)
    assert money.cost("m", input_tokens=100, output_tokens=10,
                      cached_input_tokens=40) == Decimal("0.000342")
    plain = MoneyLimit(Budget(), "usd", TokenPrices(Decimal("3"), Decimal("15")))
    assert plain.cost("m", input_tokens=100, output_tokens=10,
                      cached_input_tokens=40) == Decimal("0.00045")  # no cached rate: full


@pytest.mark.parametrize("prices", [
    {"small": TokenPrices(Decimal("0.1"), Decimal("0.4"))},
    PriceTable({"small": TokenPrices(Decimal("0.1"), Decimal("0.4"))}),
])
def test_money_limit_prices_per_model(prices: Any) -> None:
    money = MoneyLimit(Budget(), "usd", prices)
    assert money.cost("small", input_tokens=10, output_tokens=10) == Decimal("0.000005")
    assert money.affordable_output("small", Decimal("0.000005"), 10, 100) == 10
    with pytest.raises(UnknownModelPrice, match="big"):
        money.cost("big", input_tokens=1, output_tokens=1)
    with pytest.raises(UnknownModelPrice, match="big"):
        money.affordable_output("big", Decimal(1), 1, 1)


def test_money_limit_clamps_on_library_prices() -> None:
    pytest.importorskip("genai_prices")
    money = MoneyLimit(Budget(), "usd", PriceTable(use_library=True, provider="openai"))
    cap = Decimal("0.01")
    most = money.affordable_output("gpt-4o", cap, 1_000, 10**6)
    assert 0 < most < 10**6
    assert money.cost("gpt-4o", input_tokens=1_000, output_tokens=most) <= cap
    assert money.cost("gpt-4o", input_tokens=1_000, output_tokens=most + 1) > cap
    with pytest.raises(UnknownModelPrice):
        money.cost("no-such-model-xyz", input_tokens=1, output_tokens=1)


def test_money_limit_checks_its_arguments() -> None:
    budget = Budget()
    cheap = TokenPrices(Decimal("0.1"), Decimal("0.4"))
    with pytest.raises(TypeError):
        MoneyLimit(budget, "", cheap)
    with pytest.raises(TypeError):
        MoneyLimit("memory://", "usd", cheap)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        MoneyLimit(budget, "usd", {"small": Decimal(1)})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="TokenPrices"):
        MoneyLimit(budget, "usd", Decimal(1))  # type: ignore[arg-type]


def test_wrapper_options_are_checked() -> None:
    openai = pytest.importorskip("openai")
    from outlay import AtomicTokenBudget
    from outlay.clients.openai import BudgetedAsyncOpenAI

    client = openai.AsyncOpenAI(api_key="test", base_url="http://127.0.0.1:9/v1",
                                http_client=openai.DefaultAsyncHttpxClient(verify=False))
    with pytest.raises(TypeError, match="tokens="):
        BudgetedAsyncOpenAI(client)
    with pytest.raises(TypeError, match="TokenBudget"):
        BudgetedAsyncOpenAI(client, tokens=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_output_tokens"):
        BudgetedAsyncOpenAI(client, tokens=AtomicTokenBudget(1), min_output_tokens=0)
    with pytest.raises(TypeError, match="AsyncOpenAI"):
        BudgetedAsyncOpenAI(object(), tokens=AtomicTokenBudget(1))  # type: ignore[arg-type]


def test_import_outlay_does_not_import_the_sdks() -> None:
    code = ("import sys, outlay, outlay.clients; "
            "assert 'openai' not in sys.modules and 'anthropic' not in sys.modules")
    src = str(Path(outlay.__file__).resolve().parents[1])
    subprocess.run([sys.executable, "-c", code], check=True,
                   env={**os.environ, "PYTHONPATH": src})


def test_exports_are_sorted_and_resolve() -> None:
    import outlay.clients

    assert list(outlay.clients.__all__) == sorted(outlay.clients.__all__)
    for name in outlay.clients.__all__:
        assert getattr(outlay.clients, name) is not None
    public = {n for n, v in vars(outlay.clients).items()
              if not n.startswith("_") and not isinstance(v, ModuleType)}
    assert public == set(outlay.clients.__all__)
