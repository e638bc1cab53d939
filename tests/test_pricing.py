"""Prices and costs: exact hand-computed values, every usage shape, overrides, bad input.

Expected values are computed by hand from per-million-token prices written here as
literals; each test also asserts the source still has those prices, so a change in
genai-prices' data (or in what a field means) fails loudly instead of silently.
"""

from __future__ import annotations

import json
import warnings
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from llmbudget.errors import (
    InvalidAmountError,
    InvalidInputError,
    NotFoundError,
    PricingError,
    UnknownModelError,
)
from llmbudget.metering import DEFAULT_OUTPUT_CAP
from llmbudget.money import cost_to_units
from llmbudget.pricing import (
    Cost,
    ModelPrice,
    PriceBook,
    PriceTier,
    TokenUsage,
    cost_from_response,
    cost_from_text,
    cost_from_usage,
    default_prices,
    normalize_usage,
    prompt_cost,
    worst_case_cost,
)

D = Decimal
M = 1_000_000


@pytest.fixture()
def book() -> PriceBook:
    # A private book: overrides registered by one test never leak into another.
    return PriceBook()


def assert_prices(book: PriceBook, model: str, **expected: str) -> ModelPrice:
    price = book.lookup(model)
    for name, value in expected.items():
        assert getattr(price, name) == D(value), (model, name, getattr(price, name))
    return price


# --------------------------------------------------------------------------- acceptance values


def test_gpt_4o_1000_in_500_out(book: PriceBook) -> None:
    assert_prices(book, "gpt-4o", input_per_mtok="2.5", output_per_mtok="10")
    # 1,000 x $2.50/M + 500 x $10/M = $0.0025 + $0.005
    expected = D(1000) * D("2.5") / M + D(500) * D(10) / M
    assert expected == D("0.0075")
    usage = {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500}
    assert cost_from_usage("gpt-4o", usage, prices=book) == D("0.0075")
    assert cost_from_usage("openai/gpt-4o-2024-08-06", usage, prices=book) == D("0.0075")


def test_openai_cached_tokens_are_part_of_prompt_tokens(book: PriceBook) -> None:
    assert_prices(book, "gpt-4o", input_per_mtok="2.5", cache_read_per_mtok="1.25")
    usage = {
        "prompt_tokens": 3000,
        "completion_tokens": 200,
        "prompt_tokens_details": {"cached_tokens": 2048, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }
    # (3000 - 2048) x 2.5 + 2048 x 1.25 + 200 x 10, per million
    assert cost_from_usage("gpt-4o", usage, prices=book) == D("0.00694")


def test_anthropic_cache_write_and_read(book: PriceBook) -> None:
    assert_prices(
        book,
        "claude-sonnet-4-20250514",
        input_per_mtok="3",
        output_per_mtok="15",
        cache_read_per_mtok="0.3",
        cache_write_per_mtok="3.75",
        cache_write_1h_per_mtok="6",
    )
    usage = {
        "input_tokens": 1200,  # Anthropic: uncached only
        "cache_creation_input_tokens": 10_000,
        "cache_read_input_tokens": 50_000,
        "output_tokens": 800,
    }
    # 1200x3 + 10000x3.75 + 50000x0.3 + 800x15 = 3600 + 37500 + 15000 + 12000 = 68100 /M
    assert cost_from_usage("claude-sonnet-4-20250514", usage, prices=book) == D("0.0681")
    assert normalize_usage(usage).input_tokens == 61_200


def test_anthropic_one_hour_cache_writes(book: PriceBook) -> None:
    usage = {
        "input_tokens": 1200,
        "cache_creation_input_tokens": 10_000,
        "cache_creation": {"ephemeral_5m_input_tokens": 4000, "ephemeral_1h_input_tokens": 6000},
        "cache_read_input_tokens": 50_000,
        "output_tokens": 800,
    }
    # 1200x3 + 4000x3.75 + 6000x6 + 50000x0.3 + 800x15 = 81600 /M
    assert cost_from_usage("claude-sonnet-4-20250514", usage, prices=book) == D("0.0816")


def test_anthropic_sdk_objects() -> None:
    anthropic = pytest.importorskip("anthropic")
    usage = anthropic.types.Usage(
        input_tokens=100,
        output_tokens=50,
        cache_creation_input_tokens=1000,
        cache_read_input_tokens=2000,
    )
    book = PriceBook()
    assert_prices(
        book,
        "claude-3-5-haiku-20241022",
        input_per_mtok="0.8",
        output_per_mtok="4",
        cache_read_per_mtok="0.08",
        cache_write_per_mtok="1",
    )
    # 100x0.8 + 1000x1 + 2000x0.08 + 50x4 = 80 + 1000 + 160 + 200 = 1440 /M
    assert cost_from_usage("claude-3-5-haiku-20241022", usage, prices=book) == D("0.00144")
    message = anthropic.types.Message(
        id="msg_1",
        type="message",
        role="assistant",
        model="claude-3-5-haiku-20241022",
        content=[],
        stop_reason="end_turn",
        stop_sequence=None,
        usage=usage,
    )
    assert cost_from_response(message, prices=book) == Cost(
        "claude-3-5-haiku-20241022", D("0.00144"), 3100, 50
    )


def test_gemini_above_200k_tier_with_thoughts(book: PriceBook) -> None:
    price = assert_prices(
        book,
        "gemini-2.5-pro",
        input_per_mtok="1.25",
        output_per_mtok="10",
        cache_read_per_mtok="0.125",
    )
    assert [t.above_input_tokens for t in price.tiers] == [200_000]
    assert price.rate("input_per_mtok", 200_001) == D("2.5")
    assert price.rate("output_per_mtok", 200_001) == D("15")
    assert price.rate("cache_read_per_mtok", 200_001) == D("0.25")
    response = {
        "modelVersion": "gemini-2.5-pro",
        "usageMetadata": {
            "promptTokenCount": 250_000,  # includes the cached tokens
            "cachedContentTokenCount": 50_000,
            "candidatesTokenCount": 2000,
            "thoughtsTokenCount": 3000,  # not included in candidates
            "totalTokenCount": 255_000,
        },
    }
    # 200000x2.5 + 50000x0.25 + (2000+3000)x15 = 500000 + 12500 + 75000 = 587500 /M
    cost = cost_from_response(response, prices=book)
    assert cost == Cost("gemini-2.5-pro", D("0.5875"), 250_000, 5000)


def test_tier_boundary_is_strictly_above(book: PriceBook) -> None:
    at = {"promptTokenCount": 200_000, "candidatesTokenCount": 1000}
    above = {"promptTokenCount": 200_001, "candidatesTokenCount": 1000}
    # 200000 x 1.25 + 1000 x 10 = 260000 /M ; 200001 x 2.5 + 1000 x 15 = 515002.5 /M
    assert cost_from_usage("gemini-2.5-pro", at, prices=book) == D("0.26")
    assert cost_from_usage("gemini-2.5-pro", above, prices=book) == D("0.5150025")


def test_anthropic_tier_counts_cache_reads_toward_threshold(book: PriceBook) -> None:
    price = assert_prices(book, "claude-sonnet-4-5", input_per_mtok="3", cache_read_per_mtok="0.3")
    assert price.rate("input_per_mtok", 200_001) == D("6")
    assert price.rate("cache_read_per_mtok", 200_001) == D("0.6")
    assert price.rate("output_per_mtok", 200_001) == D("22.5")
    # 150k uncached alone is under the tier; with 60k cache reads the prompt is 210k.
    usage = {"input_tokens": 150_000, "cache_read_input_tokens": 60_000, "output_tokens": 1000}
    # 150000x6 + 60000x0.6 + 1000x22.5 = 900000 + 36000 + 22500 = 958500 /M
    assert cost_from_usage("claude-sonnet-4-5", usage, prices=book) == D("0.9585")


def test_reasoning_model_o3(book: PriceBook) -> None:
    assert_prices(book, "o3", input_per_mtok="2", output_per_mtok="8", cache_read_per_mtok="0.5")
    chat = {
        "prompt_tokens": 2000,
        "completion_tokens": 1500,  # includes the 1000 reasoning tokens
        "prompt_tokens_details": {"cached_tokens": 500},
        "completion_tokens_details": {"reasoning_tokens": 1000},
    }
    # 1500x2 + 500x0.5 + 1500x8 = 3000 + 250 + 12000 = 15250 /M
    assert cost_from_usage("o3-2025-04-16", chat, prices=book) == D("0.01525")
    responses = {
        "input_tokens": 2000,
        "input_tokens_details": {"cached_tokens": 500},
        "output_tokens": 1500,
        "output_tokens_details": {"reasoning_tokens": 1000},
        "total_tokens": 3500,
    }
    assert cost_from_usage("o3", responses, prices=book) == D("0.01525")
    assert normalize_usage(responses).reasoning_tokens == 1000


def test_o1_sdk_usage_object(book: PriceBook) -> None:
    openai = pytest.importorskip("openai")
    from openai.types.completion_usage import CompletionTokensDetails, PromptTokensDetails

    assert_prices(book, "o1", input_per_mtok="15", output_per_mtok="60", cache_read_per_mtok="7.5")
    usage = openai.types.CompletionUsage(
        prompt_tokens=1000,
        completion_tokens=4000,
        total_tokens=5000,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=0),
        completion_tokens_details=CompletionTokensDetails(reasoning_tokens=3500),
    )
    # 1000x15 + 4000x60 = 255000 /M
    assert cost_from_usage("o1", usage, prices=book) == D("0.255")


# --------------------------------------------------------------------------- shapes


def test_openai_chat_completion_object_and_dict(book: PriceBook) -> None:
    openai = pytest.importorskip("openai")
    raw = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "hi"},
            }
        ],
        "usage": {"prompt_tokens": 10_000, "completion_tokens": 1000, "total_tokens": 11_000},
    }
    assert_prices(book, "gpt-4o-mini", input_per_mtok="0.15", output_per_mtok="0.6")
    # 10000x0.15 + 1000x0.6 = 2100 /M
    expected = Cost("gpt-4o-mini-2024-07-18", D("0.0021"), 10_000, 1000)
    assert cost_from_response(raw, prices=book) == expected
    sdk = openai.types.chat.ChatCompletion.model_validate(raw)
    assert cost_from_response(sdk, prices=book) == expected
    assert cost_from_response(raw, model="gpt-4o", prices=book).amount == D("0.035")


def test_openai_audio_tokens(book: PriceBook) -> None:
    assert_prices(
        book,
        "gpt-4o-realtime-preview",
        input_per_mtok="5",
        output_per_mtok="20",
        cache_read_per_mtok="2.5",
        input_audio_per_mtok="40",
        output_audio_per_mtok="80",
        cache_audio_read_per_mtok="2.5",
    )
    usage = {
        "prompt_tokens": 1000,
        "completion_tokens": 500,
        "prompt_tokens_details": {"audio_tokens": 600, "cached_tokens": 100},
        "completion_tokens_details": {"audio_tokens": 400},
    }
    # text uncached 300x5 + cached text 100x2.5 + audio 600x40 + text out 100x20 + audio out
    # 400x80 = 1500 + 250 + 24000 + 2000 + 32000 = 59750 /M
    assert cost_from_usage("gpt-4o-realtime-preview", usage, prices=book) == D("0.05975")


def test_litellm_model_response_object(book: PriceBook) -> None:
    # LiteLLM's ModelResponse: attribute access, Anthropic cache fields mirrored at the top.
    usage = SimpleNamespace(
        prompt_tokens=61_200,  # recent LiteLLM: uncached + cache reads + cache writes
        completion_tokens=800,
        total_tokens=62_000,
        prompt_tokens_details=SimpleNamespace(
            cached_tokens=50_000, cache_creation_tokens=10_000, audio_tokens=None
        ),
        completion_tokens_details=None,
        cache_creation_input_tokens=10_000,
        cache_read_input_tokens=50_000,
    )
    response = SimpleNamespace(model="claude-sonnet-4-20250514", usage=usage)
    cost = cost_from_response(response, prices=book)
    assert cost.amount == D("0.0681")  # same call as test_anthropic_cache_write_and_read
    assert cost.input_tokens == 61_200


def test_litellm_without_write_marker_errs_high(book: PriceBook) -> None:
    # Older LiteLLM: no prompt_tokens_details.cache_creation_tokens; writes are added.
    usage = {
        "prompt_tokens": 51_200,
        "completion_tokens": 800,
        "prompt_tokens_details": {"cached_tokens": 50_000},
        "cache_creation_input_tokens": 10_000,
        "cache_read_input_tokens": 50_000,
    }
    assert cost_from_usage("claude-sonnet-4-20250514", usage, prices=book) == D("0.0681")


def test_gemini_sdk_snake_case_and_audio(book: PriceBook) -> None:
    assert_prices(
        book,
        "gemini-2.5-flash",
        input_per_mtok="0.3",
        output_per_mtok="2.5",
        cache_read_per_mtok="0.03",
        input_audio_per_mtok="1",
        cache_audio_read_per_mtok="0.1",
    )
    meta = SimpleNamespace(
        prompt_token_count=10_000,
        cached_content_token_count=4000,
        candidates_token_count=500,
        thoughts_token_count=1500,
        tool_use_prompt_token_count=None,
        prompt_tokens_details=[
            SimpleNamespace(modality=SimpleNamespace(value="TEXT"), token_count=7000),
            SimpleNamespace(modality=SimpleNamespace(value="AUDIO"), token_count=3000),
        ],
        cache_tokens_details=[
            SimpleNamespace(modality=SimpleNamespace(value="AUDIO"), token_count=1000),
        ],
    )
    response = SimpleNamespace(model_version="gemini-2.5-flash", usage_metadata=meta)
    # text uncached (10000-4000-2000)=4000x0.3 + cached text 3000x0.03 + audio 2000x1
    # + cached audio 1000x0.1 + output 2000x2.5 = 1200 + 90 + 2000 + 100 + 5000 = 8390 /M
    assert cost_from_response(response, prices=book) == Cost(
        "gemini-2.5-flash", D("0.00839"), 10_000, 2000
    )


def test_deepseek_and_bedrock_shapes(book: PriceBook) -> None:
    price = book.lookup("deepseek-chat")
    # Off-peak discounts are not applied: the day's highest (peak) price is used.
    assert (price.input_per_mtok, price.cache_read_per_mtok, price.output_per_mtok) == (
        D("0.27"),
        D("0.07"),
        D("1.1"),
    )
    usage = {
        "prompt_tokens": 1000,
        "completion_tokens": 100,
        "prompt_cache_hit_tokens": 600,
        "prompt_cache_miss_tokens": 400,
    }
    # 400x0.27 + 600x0.07 + 100x1.1 = 108 + 42 + 110 = 260 /M
    assert cost_from_usage("deepseek-chat", usage, prices=book) == D("0.00026")
    bedrock = {"inputTokens": 100, "outputTokens": 50, "cacheReadInputTokens": 2000}
    assert normalize_usage(bedrock) == TokenUsage(
        input_tokens=2100, output_tokens=50, cache_read_tokens=2000
    )


def test_web_search_requests_are_priced(book: PriceBook) -> None:
    assert_prices(book, "claude-sonnet-4-20250514", web_search_per_thousand="10")
    usage = {
        "input_tokens": 1000,
        "output_tokens": 0,
        "server_tool_use": {"web_search_requests": 3},
    }
    # 1000x3/M + 3 x $10/1000 = 0.003 + 0.03
    assert cost_from_usage("claude-sonnet-4-20250514", usage, prices=book) == D("0.033")


# --------------------------------------------------------------------------- resolution


@pytest.mark.parametrize(
    ("name", "provider", "model_id"),
    [
        ("gpt-4o", "openai", "gpt-4o"),
        ("GPT-4o", "openai", "gpt-4o"),
        ("openai/gpt-4o", "openai", "gpt-4o"),
        ("gpt-4o-2024-08-06", "openai", "gpt-4o"),
        ("gpt-4o-20240806", "openai", "gpt-4o"),
        ("anthropic/claude-3-5-haiku-20241022", "anthropic", "claude-3-5-haiku-latest"),
        ("claude-3.5-haiku", "anthropic", "claude-3-5-haiku-latest"),
        ("vertex_ai/gemini-2.5-pro", "google", "gemini-2.5-pro"),
        ("gemini/gemini-2.5-pro", "google", "gemini-2.5-pro"),
        ("xai/grok-3", "x-ai", "grok-3"),
        ("azure/gpt-4o", "azure", "gpt-4o"),
        ("openrouter/openai/gpt-4o", "openrouter", "openai/gpt-4o"),
    ],
)
def test_lookup_resolves_prefixes_snapshots_aliases(
    book: PriceBook, name: str, provider: str, model_id: str
) -> None:
    price = book.lookup(name)
    assert (price.provider, price.model) == (provider, model_id)


def test_unknown_model_names_closest_models(book: PriceBook) -> None:
    with pytest.raises(UnknownModelError) as info:
        book.lookup("gpt-4o-minii")
    assert "gpt-4o-mini" in info.value.suggestions
    assert isinstance(info.value, NotFoundError)
    assert isinstance(info.value, KeyError)
    assert "did you mean" in str(info.value)
    with pytest.raises(UnknownModelError) as info:
        cost_from_usage("claude-sonet-4", {"input_tokens": 1, "output_tokens": 1}, prices=book)
    assert "claude-sonnet-4" in info.value.suggestions
    # A second miss is served from the negative cache with the same suggestions.
    with pytest.raises(UnknownModelError) as again:
        book.lookup("claude-sonet-4")
    assert again.value.suggestions == info.value.suggestions


def test_not_per_token_model_is_an_error_not_zero(book: PriceBook) -> None:
    with pytest.raises(PricingError, match="not per token"):
        book.lookup("whisper-1")


def test_bad_model_argument(book: PriceBook) -> None:
    with pytest.raises(InvalidInputError):
        book.lookup("   ")
    assert "" not in book
    assert "gpt-4o" in book
    assert "no-such-model-xyz" not in book


def test_default_book_is_shared() -> None:
    assert PriceBook.default() is PriceBook.default() is default_prices()
    assert cost_from_usage("gpt-4o", {"prompt_tokens": 1000, "completion_tokens": 500}) == D(
        "0.0075"
    )


# --------------------------------------------------------------------------- coverage of the source


def test_thousands_of_models_across_providers_price(book: PriceBook) -> None:
    priced: set[str] = set()
    providers: set[str] = set()
    entries = 0
    for name in book.models():
        price = book.lookup(name)
        if price.input_per_mtok is None or price.output_per_mtok is None:
            continue  # embeddings: input-only, priced separately below
        amount = cost_from_usage(name, {"input_tokens": 1000, "output_tokens": 1000}, prices=book)
        assert isinstance(amount, Decimal) and amount >= 0
        entries += 1
        priced.add(price.model.lower())
        providers.add(price.provider)
    # Measured with genai-prices 0.2.3: 2,044 provider/model entries, 1,572 distinct model
    # ids, 44 providers (plus 81 input-only embedding entries; 47 providers in all).
    assert len(priced) >= 1500, len(priced)
    assert len(providers) >= 20, len(providers)
    assert entries >= len(priced)
    assert len(book.providers()) >= 20


def test_embedding_models_price_input_only(book: PriceBook) -> None:
    price = assert_prices(book, "text-embedding-3-small", input_per_mtok="0.02")
    assert price.output_per_mtok is None
    assert cost_from_usage("text-embedding-3-small", {"prompt_tokens": 1_000_000}) == D("0.02")
    with pytest.raises(PricingError, match="no output token price"):
        cost_from_usage(
            "text-embedding-3-small", {"input_tokens": 10, "output_tokens": 1}, prices=book
        )


def test_arithmetic_matches_genai_prices_for_every_model(book: PriceBook) -> None:
    # Our conversion + arithmetic must agree with genai-prices' own calculator on the
    # price keys we model (tiers, cache, audio, per-request fees).
    from genai_prices.data import providers
    from genai_prices.types import TimeOfDateConstraint, Usage

    from llmbudget.pricing.genai import _convert

    now = datetime.now(UTC)
    usage = TokenUsage(
        input_tokens=300_000,
        output_tokens=20_000,
        cache_read_tokens=50_000,
        cache_write_tokens=10_000,
        cache_write_1h_tokens=4000,
        input_audio_tokens=3000,
        cache_audio_read_tokens=1000,
        output_audio_tokens=500,
    )
    theirs_usage = Usage(
        input_tokens=300_000,
        output_tokens=20_000,
        cache_read_tokens=50_000,
        cache_write_tokens=10_000,
        cache_write_1h_tokens=4000,
        input_audio_tokens=3000,
        cache_audio_read_tokens=1000,
        output_audio_tokens=500,
    )
    compared = 0
    for provider in providers:
        for model in provider.models:
            if isinstance(model.prices, list) and any(
                isinstance(c.constraint, TimeOfDateConstraint) for c in model.prices
            ):
                continue  # we deliberately take the peak price
            try:
                ours = _convert(provider, model, now, "test")
            except InvalidInputError:
                continue  # not priced per token
            if ours.input_per_mtok is None or ours.output_per_mtok is None:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                theirs = model.get_prices(now).calc_price(theirs_usage)["total_price"]
            assert ours.cost(usage) == theirs, (provider.id, model.id)
            compared += 1
    assert compared > 1900


# --------------------------------------------------------------------------- overrides


def test_register_wins_over_default_and_resolves_variants(book: PriceBook) -> None:
    book.register("gpt-4o", input_per_mtok=1, output_per_mtok="2", provider="openai")
    usage = {"prompt_tokens": 1000, "completion_tokens": 500}
    # 1000x1 + 500x2 = 2000 /M
    assert cost_from_usage("gpt-4o", usage, prices=book) == D("0.002")
    assert cost_from_usage("openai/gpt-4o", usage, prices=book) == D("0.002")
    assert cost_from_usage("gpt-4o-2024-08-06", usage, prices=book) == D("0.002")
    assert cost_from_usage("gpt-4o-mini", usage, prices=book) != D("0.002")
    # Other books (and the default one) are untouched.
    assert cost_from_usage("gpt-4o", usage, prices=PriceBook()) == D("0.0075")


def test_register_custom_model_with_tiers_and_max_output() -> None:
    book = PriceBook(defaults=False)
    price = book.register(
        "acme-large",
        provider="acme",
        input_per_mtok="1.5",
        output_per_mtok=6,
        cache_read_per_mtok=0.15,
        max_output_tokens=8192,
        tiers=[{"above_input_tokens": 100_000, "input_per_mtok": 3}],
    )
    assert price.cache_read_per_mtok == D("0.15")  # float via repr, not binary noise
    assert book.models() == ["acme-large"]
    assert book.models("acme") == ["acme-large"]
    assert book.providers() == ["acme"]
    assert book.lookup("acme/acme-large") is price
    # tier: 100001 x 3 + 10 x 6 (output price has no tier: base) = 300063 /M
    usage = {"input_tokens": 100_001, "output_tokens": 10}
    assert cost_from_usage("acme-large", usage, prices=book) == D("0.300063")
    # worst case uses max_output_tokens: 100 prompt... measured by the estimator
    with pytest.raises(UnknownModelError):
        book.lookup("gpt-4o")


@pytest.mark.parametrize("bad", [-1, "-0.5", float("nan"), float("inf"), "abc", True, [1]])
def test_register_refuses_bad_amounts(book: PriceBook, bad: object) -> None:
    with pytest.raises(InvalidAmountError):
        book.register("bad-model", input_per_mtok=bad, output_per_mtok=1)
    assert "bad-model" not in book


def test_register_requires_a_price() -> None:
    with pytest.raises(InvalidInputError):
        PriceBook().register("nothing", input_per_mtok=None)


def test_load_file_our_yaml_and_json(tmp_path: Path) -> None:
    yaml_file = tmp_path / "prices.yaml"
    yaml_file.write_text(
        "models:\n"
        "  acme-1:\n"
        "    provider: acme\n"
        "    input_per_mtok: 0.5\n"
        "    output_per_mtok: '1.5'\n"
        "    tiers:\n"
        "      - {above_input_tokens: 200000, input_per_mtok: 1, output_per_mtok: 3}\n"
    )
    json_file = tmp_path / "prices.json"
    json_file.write_text(json.dumps({"models": {"acme-2": {"input_per_mtok": "0.1"}}}))
    book = PriceBook()
    assert book.load_file(yaml_file) == ["acme-1"]
    assert book.load_file(json_file) == ["acme-2"]
    assert cost_from_usage(
        "acme-1", {"input_tokens": 1000, "output_tokens": 1000}, prices=book
    ) == D("0.002")
    big = {"input_tokens": 200_001, "output_tokens": 1000}
    # 200001 x 1 + 1000 x 3 = 203001 /M
    assert cost_from_usage("acme/acme-1", big, prices=book) == D("0.203001")


LITELLM = {
    "sample_spec": {
        "max_tokens": "LEGACY parameter. set to max_output_tokens if provider specifies it.",
        "input_cost_per_token": 0.0000,
        "output_cost_per_token": 0.000,
        "litellm_provider": "one of https://docs.litellm.ai/docs/providers",
        "mode": "one of: chat, embedding, completion, image_generation",
    },
    "my-gemini": {
        "max_tokens": 65535,
        "max_input_tokens": 1048576,
        "max_output_tokens": 65535,
        "input_cost_per_token": 1.25e-06,
        "input_cost_per_token_above_200k_tokens": 2.5e-06,
        "output_cost_per_token": 1e-05,
        "output_cost_per_token_above_200k_tokens": 1.5e-05,
        "cache_read_input_token_cost": 3.1e-07,
        "litellm_provider": "vertex_ai-language-models",
        "mode": "chat",
        "supports_vision": True,
    },
    "my-claude": {
        "max_tokens": 8192,
        "input_cost_per_token": 3e-06,
        "output_cost_per_token": 1.5e-05,
        "cache_creation_input_token_cost": 3.75e-06,
        "cache_read_input_token_cost": 3e-07,
        "litellm_provider": "anthropic",
    },
    "dall-e-3": {"input_cost_per_pixel": 4.0054321e-08, "output_cost_per_pixel": 0.0},
}


def test_load_file_litellm_format(tmp_path: Path) -> None:
    file = tmp_path / "model_prices_and_context_window.json"
    file.write_text(json.dumps(LITELLM))
    book = PriceBook()
    assert sorted(book.load_file(file)) == ["my-claude", "my-gemini"]
    gemini = book.lookup("my-gemini")
    assert gemini.input_per_mtok == D("1.25")
    assert gemini.cache_read_per_mtok == D("0.31")
    assert gemini.max_output_tokens == 65535
    assert gemini.context_window == 1048576
    assert gemini.rate("input_per_mtok", 250_000) == D("2.5")
    assert gemini.rate("output_per_mtok", 250_000) == D("15")
    assert book.lookup("my-claude").max_output_tokens == 8192  # from legacy max_tokens
    usage = {"input_tokens": 100, "cache_creation_input_tokens": 1000, "output_tokens": 10}
    # 100x3 + 1000x3.75 + 10x15 = 4200 /M
    assert cost_from_usage("my-claude", usage, prices=book) == D("0.0042")
    assert "sample_spec" not in book
    assert "dall-e-3" not in book.models()


@pytest.mark.parametrize(
    ("suffix", "text"),
    [
        (
            ".json",
            '{"good": {"input_cost_per_token": 1e-6}, "bad": {"input_cost_per_token": -1e-6}}',
        ),
        (".json", '{"good": {"input_cost_per_token": 1e-6}, "bad": {"input_cost_per_token": NaN}}'),
        (".yaml", "models:\n  good: {input_per_mtok: 1}\n  bad: {input_per_mtok: .nan}\n"),
        (".yaml", "models:\n  good: {input_per_mtok: 1}\n  bad: {input_per_mtok: -2}\n"),
        (
            ".yaml",
            "models:\n  good: {input_per_mtok: 1}\n  bad: {input_per_mtok: 1, tiers: [{above_input_tokens: 5, output_per_mtok: -1}]}\n",
        ),
    ],
)
def test_load_file_bad_amount_registers_nothing(tmp_path: Path, suffix: str, text: str) -> None:
    file = tmp_path / f"prices{suffix}"
    file.write_text(text)
    book = PriceBook(defaults=False)
    with pytest.raises(InvalidAmountError):
        book.load_file(file)
    assert book.models() == []
    assert "good" not in book


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "[1, 2]",
        '{"models": {"x": {"input_per_mtok": 1, "typo_per_mtok": 2}}}',
        '{"models": {"x": {"input_per_mtok": 1, "max_output_tokens": -5}}}',
        '{"models": {"x": "cheap"}}',
    ],
)
def test_load_file_malformed(tmp_path: Path, text: str) -> None:
    file = tmp_path / "prices.json"
    file.write_text(text)
    book = PriceBook(defaults=False)
    with pytest.raises(InvalidInputError):
        book.load_file(file)
    assert book.models() == []


# --------------------------------------------------------------------------- malformed usage


@pytest.mark.parametrize(
    "usage",
    [
        None,
        {},
        {"foo": 1},
        "100 tokens",
        [1, 2],
        {"prompt_tokens": -1, "completion_tokens": 5},
        {"prompt_tokens": "10", "completion_tokens": 5},
        {"prompt_tokens": 1.5, "completion_tokens": 5},
        {"prompt_tokens": True, "completion_tokens": 5},
        {"prompt_tokens": float("nan"), "completion_tokens": 5},
        {
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 11},
        },
        {
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "completion_tokens_details": {"reasoning_tokens": 6},
        },
        {"input_tokens": 10, "output_tokens": -3},
        {"promptTokenCount": 10, "cachedContentTokenCount": 20, "candidatesTokenCount": 1},
    ],
)
def test_malformed_usage_is_a_pricing_error(book: PriceBook, usage: Any) -> None:
    with pytest.raises(PricingError):
        cost_from_usage("gpt-4o", usage, prices=book)


def test_whole_float_counts_are_accepted(book: PriceBook) -> None:
    usage = {"prompt_tokens": 1000.0, "completion_tokens": D(500)}
    assert cost_from_usage("gpt-4o", usage, prices=book) == D("0.0075")


@pytest.mark.parametrize(
    "response",
    [
        {"model": "gpt-4o", "choices": []},
        {"model": "gpt-4o", "usage": None},
        SimpleNamespace(model="gpt-4o", usage=None),
        None,
    ],
)
def test_response_without_usage(book: PriceBook, response: Any) -> None:
    with pytest.raises(PricingError):
        cost_from_response(response, prices=book)


def test_response_without_model(book: PriceBook) -> None:
    with pytest.raises(PricingError, match="model"):
        cost_from_response({"usage": {"prompt_tokens": 1, "completion_tokens": 1}}, prices=book)


# --------------------------------------------------------------------------- text / prompts


def test_cost_from_text(book: PriceBook) -> None:
    # "hello world" as one user message = 9 o200k tokens (2 + the chat overhead), "hi" as
    # completion text = 1: 9 x 2.5 + 1 x 10 = 32.5 /M
    assert cost_from_text("gpt-4o", "hello world", "hi", prices=book) == D("0.0000325")


def test_prompt_and_worst_case_cost(book: PriceBook) -> None:
    messages = [{"role": "user", "content": "hello world"}]  # 9 tokens with chat overhead
    assert prompt_cost("gpt-4o", messages, prices=book) == D("0.0000225")
    # + 100 x 10 /M
    assert worst_case_cost("gpt-4o", messages, 100, prices=book) == D("0.0010225")
    # No max_tokens and no known max output: the cap every door sends (4096), not the
    # 128k context window ($1.28, which would refuse every gpt-4o call on a $1 budget).
    assert book.lookup("gpt-4o").context_window == 128_000
    assert worst_case_cost("gpt-4o", messages, prices=book) == D("0.0409825")
    with pytest.raises(InvalidInputError):
        worst_case_cost("gpt-4o", messages, -1, prices=book)


def test_worst_case_uses_registered_max_output_then_default() -> None:
    book = PriceBook(defaults=False)
    book.register("capped", input_per_mtok=0, output_per_mtok=1, max_output_tokens=1000)
    book.register("open-ended", input_per_mtok=0, output_per_mtok=1)
    messages = [{"role": "user", "content": "hi"}]
    assert worst_case_cost("capped", messages, prices=book) == D("0.001")
    assert worst_case_cost("open-ended", messages, prices=book) == D(DEFAULT_OUTPUT_CAP) / M


def test_prompt_cost_handles_rich_messages(book: PriceBook) -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "name": "alice",
            "content": [
                {"type": "text", "text": "What is in this image?"},
                {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"q": "cat"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
    ]
    low = prompt_cost("gpt-4o", messages, prices=book)
    assert low > 0
    messages[1]["content"][1]["image_url"]["detail"] = "high"
    # high detail adds (1445 - 85) tokens at $2.50/M
    assert prompt_cost("gpt-4o", messages, prices=book) - low == D(1360) * D("2.5") / M


# --------------------------------------------------------------------------- properties


@settings(max_examples=200, deadline=None)
@given(
    uncached=st.integers(0, 400_000),
    read=st.integers(0, 400_000),
    write=st.integers(0, 100_000),
    out=st.integers(0, 64_000),
)
def test_anthropic_cost_matches_formula(uncached: int, read: int, write: int, out: int) -> None:
    book = PriceBook.default()
    usage = {
        "input_tokens": uncached,
        "cache_read_input_tokens": read,
        "cache_creation_input_tokens": write,
        "output_tokens": out,
    }
    above = uncached + read + write > 200_000
    rates = (D(6), D("0.6"), D("7.5"), D("22.5")) if above else (D(3), D("0.3"), D("3.75"), D(15))
    expected = (uncached * rates[0] + read * rates[1] + write * rates[2] + out * rates[3]) / M
    amount = cost_from_usage("claude-sonnet-4-5", usage, prices=book)
    assert amount == expected
    assert cost_to_units(amount) >= 0


def test_model_price_validation() -> None:
    with pytest.raises(InvalidAmountError):
        ModelPrice("m", "p", D(-1), D(1))
    with pytest.raises(InvalidAmountError):
        ModelPrice("m", "p", D("NaN"), D(1))
    with pytest.raises(InvalidInputError):
        ModelPrice("m", "p", None, None)
    with pytest.raises(InvalidInputError):
        ModelPrice("m", "p", D(1), D(1), tiers=(PriceTier(5), PriceTier(5)))
    with pytest.raises(InvalidInputError):
        ModelPrice("m", "p", D(1), D(1), max_output_tokens=0)
    price = ModelPrice("m", "p", D(1), D(2), tiers=(PriceTier(10, input_per_mtok=D(5)),))
    assert price.as_dict()["tiers"] == [
        {
            "above_input_tokens": 10,
            "input_per_mtok": "5",
            "output_per_mtok": None,
            "cache_read_per_mtok": None,
            "cache_write_per_mtok": None,
            "cache_write_1h_per_mtok": None,
            "input_audio_per_mtok": None,
            "cache_audio_read_per_mtok": None,
            "output_audio_per_mtok": None,
            "output_reasoning_per_mtok": None,
        }
    ]


# --------------------------------------------------------------------------- CLI


@pytest.fixture()
def cli() -> typer.Typer:
    from llmbudget.cli import prices

    app = typer.Typer(no_args_is_help=True, add_completion=False)

    @app.callback()
    def _root() -> None:
        """Test root (forces sub-command mode)."""

    prices.register(app)
    return app


def run(app: typer.Typer, *args: str) -> Any:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def test_cli_cost(cli: typer.Typer) -> None:
    result = run(cli, "cost", "gpt-4o", "--input-tokens", "1000", "--output-tokens", "500")
    assert result.exit_code == 0, result.output
    assert "$0.0075" in result.output
    result = run(cli, "cost", "claude-3-5-haiku-latest", "-i", "3100", "-o", "50",
                 "--cache-read-tokens", "2000", "--cache-write-tokens", "1000")  # fmt: skip
    assert "$0.00144" in result.output


def test_cli_show_with_tiers(cli: typer.Typer) -> None:
    result = run(cli, "prices", "show", "gemini-2.5-pro")
    assert result.exit_code == 0, result.output
    assert "google/gemini-2.5-pro" in result.output
    assert "200,000" in result.output
    assert "$1.25" in result.output and "$2.5" in result.output


def test_cli_list_and_providers(cli: typer.Typer) -> None:
    result = run(cli, "prices", "list", "--provider", "anthropic", "--search", "haiku")
    assert result.exit_code == 0, result.output
    assert "anthropic/claude-3-5-haiku-latest" in result.output
    assert "openai/" not in result.output
    result = run(cli, "prices", "providers")
    assert result.exit_code == 0 and "openai" in result.output
    result = run(cli, "prices", "list", "--provider", "no-such-provider")
    assert result.exit_code == 1


def test_cli_unknown_model_suggests(cli: typer.Typer) -> None:
    result = run(cli, "cost", "gpt-4o-minii", "--input-tokens", "5")
    assert result.exit_code == 1
    assert "gpt-4o-mini" in result.output


def test_cli_prices_file(cli: typer.Typer, tmp_path: Path) -> None:
    file = tmp_path / "p.yaml"
    file.write_text("models:\n  gpt-4o: {input_per_mtok: 1, output_per_mtok: 2}\n")
    result = run(cli, "cost", "gpt-4o", "-i", "1000", "-o", "500", "--prices-file", str(file))
    assert result.exit_code == 0, result.output
    assert "$0.002" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  x: {input_per_mtok: -1}\n")
    result = run(cli, "prices", "show", "x", "--prices-file", str(bad))
    assert result.exit_code == 1
