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
from outlay import PriceTable, TokenPrices, UnknownModelPrice
from outlay._llm_call import CallPolicy, CallSpec
from outlay._pricing import as_price_table
from outlay.clients import (
    MEDIA_TOKENS,
    MESSAGE_OVERHEAD,
    REQUEST_OVERHEAD,
    estimate_prompt_tokens,
    estimate_tokens,
)

from .budgetkit import token_budget, unit_budget


@pytest.mark.parametrize(("value", "tokens"), [
    ("", 0),
    ("abcdef", 2 + 2),  # a word of n letters at (n + 5) / 6, rounded up, plus the text margin
    ("abcdefgh", 3 + 2),
    ("日本語", 5 + 2),  # CJK at 1.5 a character
    ("ab日", 3 + 2),
    ({"role": "user"}, 4 + 4),  # keys count: two words of four letters, a margin each
    (["abc", None, True, "abc"], 4 + 4),  # each string is counted on its own
    (12345, 3 + 2),  # numbers as written: a run of n digits at n / 3 + 0.75
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
        REQUEST_OVERHEAD + 2 * MESSAGE_OVERHEAD + 2 + 2)


def money(prices: Any) -> CallPolicy:
    return CallPolicy(unit_budget({"usd": Decimal(1)}), prices)


def affordable(policy: CallPolicy, model: str, cap: Decimal, input_tokens: int,
               bound: int) -> int:
    return policy._affordable_output(CallSpec("t", model, input_tokens, bound), cap, bound)


def test_one_price_is_exact_decimal() -> None:
    policy = money(TokenPrices(Decimal("2.50"), Decimal("10")))
    assert policy.cost("any", 1_000_000, 0) == Decimal("2.50")
    assert policy.cost("other", 3, 7) == Decimal("0.0000775")
    assert affordable(policy, "any", Decimal("0.001"), 0, 10**6) == 100
    assert affordable(policy, "any", Decimal("0.001"), 0, 60) == 60  # capped at the bound
    assert affordable(policy, "any", Decimal("0"), 1, 100) == -1  # not even the input
    free_output = money(TokenPrices(Decimal(1), Decimal(0)))
    assert affordable(free_output, "any", Decimal(1), 5, 10**12) == 10**12


def test_cache_reads_and_writes_have_their_own_rates() -> None:
    cached = TokenPrices(Decimal("3"), Decimal("15"), cached_input_per_mtok=Decimal("0.30"),
                         cache_write_per_mtok=Decimal("3.75"))
    policy = money(cached)
    # 60 uncached at 3, 40 cached at 0.30, 10 out at 15 (per million)
    assert policy.cost("m", 100, 10, cached=40) == Decimal("0.000342")
    # 30 uncached at 3, 40 cached at 0.30, 30 written at 3.75, 10 out at 15
    assert policy.cost("m", 100, 10, cached=40, written=30) == Decimal("0.0003645")
    plain = money(TokenPrices(Decimal("3"), Decimal("15")))
    assert plain.cost("m", 100, 10, cached=40, written=30) == Decimal("0.00045")  # full rate
    with pytest.raises(ValueError, match="cannot exceed"):
        policy.cost("m", 100, 10, cached=80, written=30)
    # The hold prices the whole input at the dearer of the input and write rates.
    spec = CallSpec("t", "m", 100, 10)
    assert policy.amounts(spec, 10)["usd"] == Decimal("0.000525")  # 100 * 3.75 + 10 * 15


@pytest.mark.parametrize("prices", [
    {"small": TokenPrices(Decimal("0.1"), Decimal("0.4"))},
    PriceTable({"small": TokenPrices(Decimal("0.1"), Decimal("0.4"))}),
])
def test_prices_per_model(prices: Any) -> None:
    policy = money(prices)
    assert policy.cost("small", 10, 10) == Decimal("0.000005")
    assert affordable(policy, "small", Decimal("0.000005"), 10, 100) == 10
    with pytest.raises(UnknownModelPrice, match="big"):
        policy.cost("big", 1, 1)
    with pytest.raises(UnknownModelPrice, match="big"):
        affordable(policy, "big", Decimal(1), 1, 1)


def test_clamps_on_library_prices() -> None:
    pytest.importorskip("genai_prices")
    policy = money(PriceTable(use_library=True, provider="openai"))
    cap = Decimal("0.01")
    most = affordable(policy, "gpt-4o", cap, 1_000, 10**6)
    assert 0 < most < 10**6
    assert policy.amounts(CallSpec("t", "gpt-4o", 1_000, most), most)["usd"] <= cap
    assert policy.amounts(CallSpec("t", "gpt-4o", 1_000, most), most + 1)["usd"] > cap
    with pytest.raises(UnknownModelPrice):
        policy.cost("no-such-model-xyz", 1, 1)


def test_prices_are_checked() -> None:
    with pytest.raises(TypeError):
        as_price_table({"small": Decimal(1)})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="TokenPrices"):
        as_price_table(Decimal(1))  # type: ignore[arg-type]
    one = TokenPrices(Decimal("0.1"), Decimal("0.4"))
    assert as_price_table(one).cost("anything", input_tokens=10, output_tokens=0) == (
        Decimal("0.000001"))


def test_a_call_holds_only_the_units_the_budget_caps() -> None:
    budget = unit_budget({"tokens": 1000, "output_tokens": 100, "requests": 5,
                          "tool_calls": 3, "custom": 9})
    policy = CallPolicy(budget)
    assert policy.units == ("tokens", "output_tokens", "requests")
    assert policy.caps_tool_calls
    spec = CallSpec("t", "m", 20, 30, choices=2)
    assert policy.amounts(spec, 30) == {"tokens": 80, "output_tokens": 60, "requests": 1}
    with pytest.raises(ValueError, match="caps none"):
        CallPolicy(unit_budget({"custom": 9}))


def test_wrapper_options_are_checked() -> None:
    openai = pytest.importorskip("openai")
    from outlay.clients.openai import BudgetedAsyncOpenAI

    client = openai.AsyncOpenAI(api_key="test", base_url="http://127.0.0.1:9/v1",
                                http_client=openai.DefaultAsyncHttpxClient(verify=False))
    with pytest.raises(TypeError):
        BudgetedAsyncOpenAI(client)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="outlay budget"):
        BudgetedAsyncOpenAI(client, object())
    with pytest.raises(ValueError, match="min_output_tokens"):
        BudgetedAsyncOpenAI(client, token_budget(1), min_output_tokens=0)
    with pytest.raises(TypeError, match="AsyncOpenAI"):
        BudgetedAsyncOpenAI(object(), token_budget(1))  # type: ignore[arg-type]


def test_a_missing_sdk_says_what_to_install() -> None:
    src = str(Path(outlay.__file__).resolve().parents[1])
    for module, package, extra in [("outlay.clients.openai", "openai", "openai"),
                                   ("outlay.clients.anthropic", "anthropic", "anthropic")]:
        code = (f"import sys; sys.modules[{package!r}] = None\n"
                f"try:\n    import {module}\n"
                f"except ModuleNotFoundError as exc:\n    print(exc)\n")
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                             text=True, env={**os.environ, "PYTHONPATH": src}).stdout
        assert f"pip install 'outlay[{extra}]'" in out, out


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
