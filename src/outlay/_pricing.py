"""Token pricing for LLM calls: input, output, cache-read and cache-write prices per million
tokens.

Prices come from the user (``TokenPrices`` by model name) and, if asked for, from the
``genai-prices`` library (install ``outlay[prices]``), which returns exact ``Decimal`` prices
and knows tiered prices (a dearer rate past a context length). A model nobody prices raises
``UnknownModelPrice`` unless an explicit ``fallback`` was given: never a silent zero.

Token counts follow the OpenAI convention: ``input_tokens`` counts every input token,
``cached_input_tokens`` the part of them read from the prompt cache and ``cache_write_tokens``
the part written to it. (For Anthropic pass ``input_tokens + cache_creation_input_tokens +
cache_read_input_tokens`` as ``input_tokens``, as ``outlay.adapters.anthropic_usage`` does.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ._core import ConfigurationError, UnknownModelPrice, check_count, check_money

__all__ = ("PriceTable", "Prices", "TokenPrices", "as_price_table", "token_cost")

MILLION = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class TokenPrices:
    """Prices in ``Decimal`` money per million tokens. ``cached_input_per_mtok`` (cache reads)
    and ``cache_write_per_mtok`` (cache writes; Anthropic bills them above the input price)
    default to the input price."""

    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cached_input_per_mtok: Decimal | None = None
    cache_write_per_mtok: Decimal | None = None

    def __post_init__(self) -> None:
        check_money(self.input_per_mtok, "input_per_mtok")
        check_money(self.output_per_mtok, "output_per_mtok")
        if self.cached_input_per_mtok is not None:
            check_money(self.cached_input_per_mtok, "cached_input_per_mtok")
        if self.cache_write_per_mtok is not None:
            check_money(self.cache_write_per_mtok, "cache_write_per_mtok")


def _check_tokens(input_tokens: int, output_tokens: int, cached_input_tokens: int,
                  cache_write_tokens: int) -> None:
    check_count(input_tokens, "input_tokens")
    check_count(output_tokens, "output_tokens")
    check_count(cached_input_tokens, "cached_input_tokens")
    check_count(cache_write_tokens, "cache_write_tokens")
    if cached_input_tokens + cache_write_tokens > input_tokens:
        raise ValueError(f"cached_input_tokens ({cached_input_tokens}) and cache_write_tokens "
                         f"({cache_write_tokens}) are parts of input_tokens ({input_tokens}) "
                         "and cannot exceed it together")


def token_cost(
    prices: TokenPrices, *, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0,
    cache_write_tokens: int = 0,
) -> Decimal:
    """Exact cost of one call at ``prices``. Raises ``TypeError``/``ValueError`` for bad counts
    (negative, not ``int``, or more cached and written than input tokens)."""
    _check_tokens(input_tokens, output_tokens, cached_input_tokens, cache_write_tokens)
    cached_price = (prices.input_per_mtok if prices.cached_input_per_mtok is None
                    else prices.cached_input_per_mtok)
    write_price = (prices.input_per_mtok if prices.cache_write_per_mtok is None
                   else prices.cache_write_per_mtok)
    total = ((input_tokens - cached_input_tokens - cache_write_tokens) * prices.input_per_mtok
             + cached_input_tokens * cached_price
             + cache_write_tokens * write_price
             + output_tokens * prices.output_per_mtok)
    return total / MILLION


class PriceTable:
    """Look up what a model costs: the user's ``prices`` first, then (with
    ``use_library=True``) the ``genai-prices`` library, then ``fallback`` if one was given.

    Raises ``UnknownModelPrice`` when no source prices the model, and ``ConfigurationError``
    when ``use_library=True`` but ``genai-prices`` is not installed. ``provider`` narrows the
    library's lookup (``"openai"``, ``"anthropic"``, ...).
    """

    def __init__(
        self,
        prices: Mapping[str, TokenPrices] | None = None,
        *,
        use_library: bool = False,
        provider: str | None = None,
        fallback: TokenPrices | None = None,
    ) -> None:
        self._prices = dict(prices or {})
        for model, price in self._prices.items():
            if not isinstance(model, str) or not model:
                raise TypeError(f"model names must be non-empty str, got {model!r}")
            if not isinstance(price, TokenPrices):
                raise TypeError(f"price of {model!r} must be TokenPrices, "
                                f"got {type(price).__name__}")
        if fallback is not None and not isinstance(fallback, TokenPrices):
            raise TypeError(f"fallback must be TokenPrices, got {type(fallback).__name__}")
        self._fallback = fallback
        self._provider = provider
        self._library: Any = _load_library() if use_library else None

    def cost(
        self, model: str, *, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> Decimal:
        """Exact ``Decimal`` cost of one call of ``model``; an estimate if the counts are upper
        bounds (the prompt's tokens and ``max_tokens``). Raises ``UnknownModelPrice``."""
        _check_tokens(input_tokens, output_tokens, cached_input_tokens, cache_write_tokens)
        own = self._prices.get(model)
        if own is not None:
            return token_cost(own, input_tokens=input_tokens, output_tokens=output_tokens,
                              cached_input_tokens=cached_input_tokens,
                              cache_write_tokens=cache_write_tokens)
        if self._library is not None:
            usage = self._library.Usage(input_tokens=input_tokens, output_tokens=output_tokens,
                                        cache_read_tokens=cached_input_tokens,
                                        cache_write_tokens=cache_write_tokens)
            try:
                priced = self._library.calc_price(usage, model, provider_id=self._provider)
            except LookupError as exc:
                if self._fallback is None:
                    raise UnknownModelPrice(model, f"genai-prices: {exc}") from exc
            else:
                total = priced.total_price
                if not isinstance(total, Decimal):  # pragma: no cover - the library's contract
                    raise TypeError(f"genai-prices returned {type(total).__name__}, not Decimal")
                return total
        if self._fallback is not None:
            return token_cost(self._fallback, input_tokens=input_tokens,
                              output_tokens=output_tokens,
                              cached_input_tokens=cached_input_tokens,
                              cache_write_tokens=cache_write_tokens)
        source = "not in the given prices" + ("" if self._library is not None else
                                              " (the genai-prices library is not in use)")
        raise UnknownModelPrice(model, source)


Prices = TokenPrices | PriceTable | Mapping[str, TokenPrices]
"""What a consumer accepts as prices: one ``TokenPrices`` for every model, a mapping model name
-> ``TokenPrices``, or a ``PriceTable``."""


def as_price_table(prices: Prices) -> PriceTable:
    """``prices`` as a ``PriceTable``: a ``TokenPrices`` prices every model, a mapping is
    ``PriceTable(mapping)``. Raises ``TypeError`` for anything else."""
    if isinstance(prices, PriceTable):
        return prices
    if isinstance(prices, TokenPrices):
        return PriceTable(fallback=prices)
    if isinstance(prices, Mapping):
        return PriceTable(prices)  # checks every entry is a TokenPrices
    raise TypeError(f"prices must be TokenPrices, a PriceTable or a mapping model -> "
                    f"TokenPrices, got {type(prices).__name__}")


def _load_library() -> Any:
    try:
        import genai_prices
    except ImportError as exc:
        raise ConfigurationError("use_library=True needs the genai-prices package: "
                                 "pip install 'outlay[prices]'") from exc
    return genai_prices
