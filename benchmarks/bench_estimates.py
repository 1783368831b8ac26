"""How close the default prompt estimate is to real tokenizers, per text class, and its speed.

Counts tests/tokencorpus.py (the written samples plus seeded generated texts of 40-800
characters) with OpenAI's ``o200k_base`` and ``cl100k_base`` (``outlay.clients.Tokenizer``,
bpe-openai: offline) and with ``outlay.clients.text_tokens``; the previous default (ASCII at 3
characters a token, every other character one token) runs beside it. A ratio is estimate / real
over the whole class ("total") and the lowest of any one text ("min": below 1.00 under-counts).
Then counts the default's under-counts (against either encoding) on fragments of 1-39
characters, which its promise does not cover, and with ``--promise N`` on N seeded texts of
40-100 characters plus N / 5 of 101-800 per class, which it does. Prints tables and writes
benchmarks/results/estimates.json.

    python benchmarks/bench_estimates.py [--quick] [--promise N]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from outlay.clients import Tokenizer, text_tokens  # noqa: E402
from tests.tokencorpus import KINDS, SAMPLES, generate, seeded  # noqa: E402

ENCODINGS = ("o200k_base", "cl100k_base")


def previous_default(text: str) -> int:
    """The estimate before this change: ASCII at 3 characters a token, the rest one each."""
    ascii_chars = len(text.encode("ascii", "ignore"))
    return -(-ascii_chars // 3) + len(text) - ascii_chars


def texts(kind: str, generated: int) -> list[str]:
    rng = random.Random(20261201)
    return SAMPLES[kind] + [generate(kind, rng, rng.randint(40, 800)) for _ in range(generated)]


def ratios(estimate: Callable[[str], int], corpus: list[str],
           real: list[int]) -> tuple[float, float]:
    counts = [estimate(t) for t in corpus]
    return (sum(counts) / sum(real), min(c / r for c, r in zip(counts, real, strict=True) if r))


def per_kchar_us(count: Callable[[str], int], text: str, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        count(text)
        best = min(best, time.perf_counter() - start)
    return best / len(text) * 1000 * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer generated texts")
    parser.add_argument("--promise", type=int, default=0, metavar="N",
                        help="also count under-counts on N + N/5 seeded texts per class")
    args = parser.parse_args()
    generated = 50 if args.quick else 400
    tokenizers = {name: Tokenizer(name) for name in ENCODINGS}
    rows = []
    print(f"{'class':<9} {'texts':>5} {'chars':>7} | {'o200k':>7} {'cl100k':>7} | "
          f"{'default/o200k':>13} {'default/cl100k':>14} | {'previous/o200k':>14} "
          f"{'previous/cl100k':>15}")
    print(f"{'':<9} {'':>5} {'':>7} | {'tokens':>7} {'tokens':>7} | {'total (min)':>13} "
          f"{'total (min)':>14} | {'total (min)':>14} {'total (min)':>15}")
    for kind in KINDS:
        corpus = texts(kind, generated)
        real = {name: [count(t) for t in corpus] for name, count in tokenizers.items()}
        row: dict[str, object] = {"class": kind, "texts": len(corpus),
                                  "chars": sum(map(len, corpus))}
        for name in ENCODINGS:
            row[f"{name}_tokens"] = sum(real[name])
            row[f"default_{name}"] = ratios(text_tokens, corpus, real[name])
            row[f"previous_{name}"] = ratios(previous_default, corpus, real[name])
        rows.append(row)

        cells = {key: f"{value[0]:.2f} ({value[1]:.2f})" for key, value in row.items()
                 if isinstance(value, tuple)}
        print(f"{kind:<9} {row['texts']:>5} {row['chars']:>7} | {row['o200k_base_tokens']:>7} "
              f"{row['cl100k_base_tokens']:>7} | {cells['default_o200k_base']:>13} "
              f"{cells['default_cl100k_base']:>14} | {cells['previous_o200k_base']:>14} "
              f"{cells['previous_cl100k_base']:>15}")
    fragments = 500 if args.quick else 3_000
    checks: dict[str, Callable[[str], list[str]]] = {
        "fragments": lambda kind: seeded(kind, fragments, 1, 39)}
    if args.promise:
        checks["promise"] = lambda kind: (seeded(kind, args.promise, 40, 100)
                                          + seeded(kind, args.promise // 5, 101, 800))
    under_counts: dict[str, dict[str, dict[str, int]]] = {}
    for check, corpus_of in checks.items():
        print(f"\nunder-counted, {check}: texts, under, share, worst")
        under_counts[check] = {}
        for kind in KINDS:
            gaps = [text_tokens(t) - max(count(t) for count in tokenizers.values())
                    for t in corpus_of(kind)]
            under = [gap for gap in gaps if gap < 0]
            cell = {"texts": len(gaps), "under": len(under), "worst": min([0, *under])}
            under_counts[check][kind] = cell
            print(f"  {kind:<9} {len(gaps):>7} {len(under):>5} "
                  f"{100 * len(under) / len(gaps):6.2f}% {cell['worst']:>4}")
    sample = "\n".join(t for kind in KINDS for t in SAMPLES[kind]) * 4
    repeat = 20 if args.quick else 200
    speed = {"text_tokens": per_kchar_us(text_tokens, sample, repeat),
             "previous_default": per_kchar_us(previous_default, sample, repeat),
             **{f"Tokenizer({name!r})": per_kchar_us(tokenizers[name], sample, repeat)
                for name in ENCODINGS}}
    print(f"\nmicroseconds per 1,000 characters ({len(sample)} characters of every class, best "
          f"of {repeat}):")
    for name, us in speed.items():
        print(f"  {name:<26} {us:8.1f}")
    out = ROOT / "benchmarks" / "results" / "estimates.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"generated_per_class": generated, "classes": rows,
                               "under_counts": under_counts, "us_per_kchar": speed},
                              indent=2) + "\n")
    print(f"\nwrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
