"""Token pricing: user prices, the genai-prices library, and no silent zero."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from decimal import Decimal

import pytest

from outlay import PriceTable, TokenPrices, UnknownModelPrice, token_cost

D = Decimal
MINI = TokenPrices(input_per_mtok=D("0.15"), output_per_mtok=D("0.60"),
                   cached_input_per_mtok=D("0.075"))

needs_library = pytest.mark.skipif(importlib.util.find_spec("genai_prices") is None,
                                   reason="genai-prices (outlay[prices]) is not installed")


def test_token_cost_is_exact() -> None:
    cost = token_cost(MINI, input_tokens=1_000, output_tokens=500, cached_input_tokens=400)
    assert cost == (600 * D("0.15") + 400 * D("0.075") + 500 * D("0.60")) / 1_000_000
    assert cost == D("0.00042")
    no_cache_price = TokenPrices(D("1"), D("2"))
    assert token_cost(no_cache_price, input_tokens=10, output_tokens=0,
                      cached_input_tokens=10) == D("0.00001")  # cached billed at input price


def test_bad_prices_and_counts_are_refused() -> None:
    with pytest.raises(TypeError):
        TokenPrices(0.15, D(1))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 0"):
        TokenPrices(D("-1"), D(1))
    with pytest.raises(ValueError, match="cannot exceed"):
        token_cost(MINI, input_tokens=1, output_tokens=0, cached_input_tokens=2)
    with pytest.raises(TypeError):
        token_cost(MINI, input_tokens=1.0, output_tokens=0)  # type: ignore[arg-type]


def test_user_prices_and_unknown_model_is_an_error_not_zero() -> None:
    table = PriceTable({"my-model": MINI})
    assert table.cost("my-model", input_tokens=1_000_000, output_tokens=0) == D("0.15")
    with pytest.raises(UnknownModelPrice) as info:
        table.cost("other-model", input_tokens=1, output_tokens=1)
    assert info.value.model == "other-model"
    assert "other-model" in str(info.value)
    assert isinstance(info.value, LookupError)


def test_explicit_fallback_prices_unknown_models() -> None:
    table = PriceTable(fallback=TokenPrices(D("10"), D("30")))
    assert table.cost("anything", input_tokens=100_000, output_tokens=100_000) == D("4")


@needs_library
def test_library_prices_are_decimal_and_user_prices_win() -> None:
    table = PriceTable({"gpt-4o": TokenPrices(D("1"), D("1"))}, use_library=True,
                       provider="openai")
    assert table.cost("gpt-4o", input_tokens=1_000_000, output_tokens=0) == D("1")
    library = PriceTable(use_library=True, provider="openai")
    cost = library.cost("gpt-4o", input_tokens=1_000, output_tokens=100, cached_input_tokens=500)
    assert isinstance(cost, Decimal)
    assert cost > 0
    with pytest.raises(UnknownModelPrice, match="genai-prices"):
        library.cost("no-such-model-xyz", input_tokens=1, output_tokens=1)
    with_fallback = PriceTable(use_library=True, fallback=TokenPrices(D("1"), D("1")))
    assert with_fallback.cost("no-such-model-xyz", input_tokens=1_000_000,
                              output_tokens=0) == D("1")


@needs_library
def test_library_knows_tiered_prices() -> None:
    table = PriceTable(use_library=True, provider="anthropic")
    short = table.cost("claude-sonnet-4-5", input_tokens=100_000, output_tokens=0)
    long = table.cost("claude-sonnet-4-5", input_tokens=300_000, output_tokens=0)
    assert long > 3 * short  # past 200k tokens of context every input token costs more


def test_import_outlay_loads_no_price_library() -> None:
    code = ("import sys, outlay; "
            "assert 'genai_prices' not in sys.modules and 'httpx2' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
