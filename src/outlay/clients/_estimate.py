"""Pre-flight token counts: the default estimate that does not under-count, an exact
tokenizer, and the providers' own count-tokens calls.

The default (``text_tokens``) models how byte-level BPE tokenizers (OpenAI's ``o200k_base`` and
``cl100k_base``) cut text: digits in runs of at most three, letters into words that take one
leading space, punctuation apart, every other script by its UTF-8 width. Each class is charged
at the worst rate measured for either encoding (``benchmarks/bench_estimates.py`` prints the
ratios; docs/estimates.md has the table) and every text 2 tokens more, so the estimate is at
least the real count for texts of 40 characters or more of English, code, digits and
identifiers, CJK, Cyrillic and emoji (measured), without a tokenizer, an extra or a model name.
It runs in C-level byte operations (``translate`` and ``count`` calls); it is not much faster
than exact BPE (the benchmark prints both).
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Awaitable, Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any, Protocol

MESSAGE_OVERHEAD = 4
"""Tokens added per message (role, separators) by ``estimate_prompt_tokens``."""
REQUEST_OVERHEAD = 3
"""Tokens added once per request (the reply's priming) by ``estimate_prompt_tokens``."""
MEDIA_TOKENS = 2_000
"""Tokens counted for one inline media item (a ``data:`` URL or a base64 source)."""

TextCounter = Callable[[str], int]
"""Counts the tokens of one text (``text_tokens``, a ``Tokenizer``, or your own)."""
InputEstimator = Callable[[Mapping[str, Any]], int | Awaitable[int]]
"""Counts a request's prompt tokens from its keyword arguments (a conservative guess); may be
async, e.g. a provider's count-tokens endpoint (``anthropic_input_tokens``,
``openai_input_tokens``)."""


# -- the default estimate --------------------------------------------------------------------

# Each byte of the UTF-8 text becomes a class code; continuation bytes are dropped, so every
# character is one code: a/A ASCII lower/upper letter, 0 digit, . ASCII punctuation, space and
# \n whitespace, 2 a two-byte character (Latin extensions, Greek, Cyrillic, Hebrew, Arabic),
# C a three-byte CJK, kana, Hangul or full-width character (U+3000..U+FFFF), S a three-byte
# symbol (U+2000..U+2FFF: punctuation, arrows, dingbats), T another three-byte character
# (U+0800..U+1FFF: Indic, Thai, ...), 4 a four-byte character (emoji), x a control character.
def _class_table() -> bytes:
    table = bytearray(b"x" * 256)
    groups = {
        "a": range(ord("a"), ord("z") + 1), "A": range(ord("A"), ord("Z") + 1),
        "0": range(ord("0"), ord("9") + 1), " ": b" \t\f\v", "\n": b"\r\n",
        ".": b"!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", "2": range(0xC0, 0xE0),
        "T": (0xE0, 0xE1), "S": (0xE2,), "C": range(0xE3, 0xF0), "4": range(0xF0, 0xF8),
    }
    for code, members in groups.items():
        for byte in members:
            table[byte] = ord(code)
    return bytes(table)


def _runs_table(codes: bytes) -> bytes:
    table = bytearray(b" " * 256)
    for code in codes:
        table[code] = ord("a")
    return bytes(table)


def _blanks_table() -> bytes:
    table = bytearray(b"a" * 256)  # everything that takes a leading space, as one code
    for code in b" \n0x":
        table[code] = code
    return bytes(table)


_CLASSES = _class_table()
_BLANKS = _blanks_table()
_CONTINUATION = bytes(range(0x80, 0xC0))
_LETTERS, _DIGITS, _PUNCT, _TWO, _SPACES = (
    _runs_table(b"aA"), _runs_table(b"0"), _runs_table(b"."), _runs_table(b"2"),
    _runs_table(b" \n"))

# Costs in sixtieths of a token: (per character, per run). A run of n characters at r
# characters a token costs at most ceil(n / r) <= (n + r - 1) / r, so (60 / r, 60 (r - 1) / r);
# summing those bounds and rounding the total up never falls below the sum of the ceilings.
# A rate holds for a class as a whole; a short text drawn from its dearest words or characters
# can exceed it by a few tokens, which _TEXT_MARGIN covers. Fitted on 540,000 seeded corpus
# texts of 40 characters or more per class, none under-counted by o200k_base or cl100k_base; of
# 1,766,000 more per class, 3 were, by 1 or 2 tokens (docs/estimates.md has the figures).
_LETTER_CHAR, _LETTER_RUN = 10, 50  # 6 letters a token, a word at a time
_DIGIT_CHAR, _DIGIT_RUN = 20, 45  # both encodings group digits by three
_PUNCT_CHAR, _PUNCT_RUN = 20, 40  # 3 a token
_SPACE_CHAR, _SPACE_RUN = 15, 45  # 4 a token
_TWO_CHAR, _TWO_RUN = 45, 36  # 4 in 3 a token: cl100k splits Cyrillic words finely
_CJK_CHAR = 90  # 1.5 a character
_SYMBOL_CHAR = 120  # U+2000..U+2FFF
_OTHER_THREE_BYTE_CHAR = 120
_FOUR_BYTE_CHAR = 180  # an emoji is up to three tokens; a ZWJ or skin tone counts on its own
_TEXT_MARGIN = 2  # whole tokens added to every non-empty text


def _runs(codes: bytes, members: bytes) -> int:
    return (b" " + codes.translate(members)).count(b" a")


def text_tokens(text: str) -> int:
    """A token count for ``text`` that is at least what ``o200k_base`` and ``cl100k_base``
    count for English, code, digits and identifiers (UUIDs, hashes), CJK, Cyrillic and emoji,
    for a text of 40 characters or more (measured, not proven: docs/estimates.md).

    Pure (byte operations, no tokenizer). Rates per class are in docs/estimates.md; other
    scripts are charged by UTF-8 width (two-byte characters as Cyrillic, three-byte ones at 2
    tokens, four-byte ones at 3) and are not measured. ``TypeError`` if ``text`` is not a
    ``str``.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if not text:
        return 0
    codes = text.encode("utf-8", "surrogatepass").translate(_CLASSES, _CONTINUATION)
    count = codes.count
    letters = count(b"a") + count(b"A")
    digits = count(b"0")
    punct = count(b".")
    spaces = count(b" ") + count(b"\n")
    scaled = 0
    if letters:  # a lower-to-upper change starts a new word (o200k splits camelCase)
        words = _runs(codes, _LETTERS) + count(b"aA")
        scaled += _LETTER_CHAR * letters + _LETTER_RUN * words
    if digits:
        scaled += _DIGIT_CHAR * digits + _DIGIT_RUN * _runs(codes, _DIGITS)
    if punct:
        scaled += _PUNCT_CHAR * punct + _PUNCT_RUN * _runs(codes, _PUNCT)
    if spaces:  # a word or symbol takes one leading space into its token
        blanks = codes.translate(_BLANKS).replace(b" a", b"a")
        left = blanks.count(b" ") + blanks.count(b"\n")
        if left:
            scaled += _SPACE_CHAR * left + _SPACE_RUN * _runs(blanks, _SPACES)
    if len(codes) > letters + digits + punct + spaces:
        two = count(b"2")
        if two:
            scaled += _TWO_CHAR * two + _TWO_RUN * _runs(codes, _TWO)
        scaled += (_CJK_CHAR * count(b"C") + _SYMBOL_CHAR * count(b"S")
                   + _OTHER_THREE_BYTE_CHAR * count(b"T") + _FOUR_BYTE_CHAR * count(b"4")
                   + 60 * count(b"x"))
    return -(-scaled // 60) + _TEXT_MARGIN


def estimate_tokens(value: object, *, count_text: TextCounter | None = None) -> int:
    """Tokens of ``value`` (text or JSON-like data): ``count_text`` (default ``text_tokens``)
    of every string in it, mapping keys included, and of numbers as written.

    Inline media (``data:`` URLs over 256 characters, base64 sources) count ``MEDIA_TOKENS``
    each. Pydantic models are counted by their dumped fields; other objects by ``str``.
    ``count_text`` may be a ``Tokenizer`` for an exact count of the text.
    """
    counter = text_tokens if count_text is None else count_text
    total = 0
    media = 0
    stack: list[object] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if item.startswith("data:") and len(item) > 256:
                media += 1
            elif item:
                total += counter(item)
        elif isinstance(item, Mapping):
            if item.get("type") == "base64" and isinstance(item.get("data"), str):
                media += 1
                item = {k: v for k, v in item.items() if k != "data"}
            for key, val in item.items():
                stack.append(str(key))
                stack.append(val)
        elif isinstance(item, list | tuple):
            stack.extend(item)
        elif item is None or isinstance(item, bool):
            continue
        elif isinstance(item, int | float | Decimal):
            total += counter(str(item))
        elif hasattr(item, "model_dump"):
            stack.append(item.model_dump(exclude_none=True))
        else:
            stack.append(str(item))
    return total + media * MEDIA_TOKENS


def estimate_prompt_tokens(parts: Iterable[object], messages: int, *,
                           count_text: TextCounter | None = None) -> int:
    """``estimate_tokens`` of every prompt part, plus ``MESSAGE_OVERHEAD`` per message and
    ``REQUEST_OVERHEAD`` once. ``count_text`` as in ``estimate_tokens``."""
    return (REQUEST_OVERHEAD + MESSAGE_OVERHEAD * messages
            + sum(estimate_tokens(part, count_text=count_text)
                  for part in parts if part is not None))


# -- exact counts ----------------------------------------------------------------------------


class _Encoding(Protocol):
    def encode_ordinary(self, text: str) -> list[int]: ...


class Tokenizer:
    """An exact BPE token count (a ``TextCounter``): ``Tokenizer("o200k_base")(text)``.

    Backed by ``bpe-openai`` (extra ``outlay[tokenizer]``), whose wheel ships the
    ``o200k_base`` and ``cl100k_base`` vocabularies, so it never downloads anything. Use it as
    ``count_text=`` of ``estimate_tokens`` / ``estimate_prompt_tokens``. It counts OpenAI's
    encodings; Anthropic's tokenizer is not published (use ``anthropic_input_tokens``). Raises
    ``ImportError`` saying what to install, ``ValueError`` for an unknown encoding.
    """

    __slots__ = ("_encoding", "name")

    def __init__(self, encoding: str = "o200k_base") -> None:
        with warnings.catch_warnings():  # bpe-openai loads its data with a deprecated API
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                bpe = importlib.import_module("bpe_openai")
            except ImportError as exc:
                raise ImportError("outlay.clients.Tokenizer needs bpe-openai: pip install "
                                  "'outlay[tokenizer]'") from exc
            try:
                self._encoding: _Encoding = bpe.get_encoding(encoding)
            except (KeyError, ValueError) as exc:
                raise ValueError(f"unknown encoding {encoding!r}; use 'o200k_base' (GPT-4o and "
                                 "later) or 'cl100k_base' (GPT-4, GPT-3.5)") from exc
        self.name = encoding

    @classmethod
    def for_model(cls, model: str) -> Tokenizer:
        """The encoding of an OpenAI ``model``: ``cl100k_base`` for GPT-4 / GPT-3.5 and the
        older embeddings, ``o200k_base`` for everything newer."""
        old = model.startswith(("gpt-4-", "gpt-3.5", "text-embedding-")) or model == "gpt-4"
        return cls("cl100k_base" if old and not model.startswith("gpt-4o") else "o200k_base")

    def __call__(self, text: str) -> int:
        """The exact token count of ``text`` (special tokens counted as text)."""
        return len(self._encoding.encode_ordinary(text))

    def __repr__(self) -> str:
        return f"Tokenizer({self.name!r})"


AsyncInputCounter = Callable[[Mapping[str, Any]], Awaitable[int]]
"""Counts a request's input tokens by asking the provider (``anthropic_input_tokens``,
``openai_input_tokens``)."""

_ANTHROPIC_COUNT_FIELDS = ("model", "messages", "system", "tools", "tool_choice", "thinking",
                           "output_config", "output_format", "cache_control")
_OPENAI_COUNT_FIELDS = ("model", "input", "instructions", "tools", "tool_choice", "text",
                        "reasoning", "conversation", "previous_response_id", "truncation",
                        "parallel_tool_calls")


def anthropic_input_tokens(client: Any) -> AsyncInputCounter:
    """An async counter of ``messages.create`` parameters by Anthropic's
    ``messages.count_tokens`` on ``client`` (an ``anthropic.AsyncAnthropic``; the raw client,
    so counting is not itself budgeted). Only the fields that endpoint takes are sent.
    Raises what the SDK raises; a network round trip per call."""
    async def count(params: Mapping[str, Any]) -> int:
        fields = {k: v for k, v in params.items() if k in _ANTHROPIC_COUNT_FIELDS}
        result = await client.messages.count_tokens(**fields)
        return int(result.input_tokens)
    return count


def openai_input_tokens(client: Any) -> AsyncInputCounter:
    """An async counter of ``responses.create`` parameters by OpenAI's
    ``responses.input_tokens.count`` on ``client`` (an ``openai.AsyncOpenAI``, SDK 2.x or
    later; it sees input given by reference too). Only the fields that endpoint takes are
    sent. Raises what the SDK raises; a network round trip per call."""
    async def count(params: Mapping[str, Any]) -> int:
        fields = {k: v for k, v in params.items() if k in _OPENAI_COUNT_FIELDS}
        result = await client.responses.input_tokens.count(**fields)
        return int(result.input_tokens)
    return count
