"""Usage blocks of every provider, read into one :class:`~llmbudget.pricing.TokenUsage`.

See the table in :mod:`llmbudget.pricing` for where each provider counts cache and
reasoning tokens.

>>> normalize_usage({"prompt_tokens": 10, "completion_tokens": 5}).output_tokens
5
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING

from llmbudget.errors import (
    PricingError,
)
from llmbudget.fields import first as _first
from llmbudget.fields import get as _get
from llmbudget.pricing.types import TokenUsage

if TYPE_CHECKING:
    pass

__all__ = ["normalize_usage"]


# --------------------------------------------------------------------------- usage shapes


def _count(value: object, what: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool):
        raise PricingError(f"{what} must be a token count, got {value!r}")
    if isinstance(value, int):
        result = value
    elif _is_whole(value):
        # JSON from some SDKs carries counts as 12.0; anything fractional is refused.
        result = int(value)  # type: ignore[call-overload]
    else:
        raise PricingError(f"{what} must be a whole number of tokens, got {value!r}")
    if result < 0:
        raise PricingError(f"{what} must not be negative, got {value!r}")
    return result


def _is_whole(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value) and value.is_integer()
    if isinstance(value, Decimal):
        return value.is_finite() and value == value.to_integral_value()
    return False


def _modality_count(details: object, modality: str) -> int:
    if not isinstance(details, list | tuple):
        return 0
    total = 0
    for item in details:
        kind = _get(item, "modality")
        kind = getattr(kind, "value", kind)  # google-genai uses an enum
        if str(kind).upper().endswith(modality):
            total += _count(_first(item, "tokenCount", "token_count"), f"{modality} tokens")
    return total


def normalize_usage(usage: object) -> TokenUsage:
    """Turn any supported provider's usage block into a :class:`TokenUsage`.

    Accepts mappings or SDK objects (attribute access) from OpenAI Chat Completions and
    Responses, Anthropic Messages, Gemini ``usageMetadata`` (camelCase or snake_case),
    Bedrock Converse, DeepSeek and LiteLLM. Raises :class:`PricingError` if the shape is
    not recognised or a count is not a non-negative whole number.

    >>> normalize_usage({"input_tokens": 10, "cache_read_input_tokens": 90,
    ...                  "output_tokens": 5}).input_tokens
    100
    """
    if isinstance(usage, TokenUsage):
        return usage
    if usage is None:
        raise PricingError("no usage block to price (was the response streamed without usage?)")
    if isinstance(usage, str | bytes | int | float | list | tuple):
        raise PricingError(f"usage must be a mapping or an SDK usage object, got {usage!r}")

    if _first(usage, "promptTokenCount", "prompt_token_count", "candidatesTokenCount") is not None:
        return _gemini_usage(usage)
    if _first(usage, "candidates_token_count", "totalTokenCount") is not None:
        return _gemini_usage(usage)
    if _first(usage, "prompt_tokens", "completion_tokens") is not None:
        return _chat_usage(usage)
    if _first(usage, "inputTokens", "outputTokens") is not None:
        return _bedrock_usage(usage)
    if _first(usage, "input_tokens", "output_tokens") is not None:
        anthropic_cache = _first(
            usage, "cache_creation_input_tokens", "cache_read_input_tokens", "cache_creation"
        )
        if anthropic_cache is None and _first(usage, "input_tokens_details", "total_tokens"):
            return _responses_usage(usage)
        # Without cache fields both readings agree; Anthropic's also reads web searches.
        return _anthropic_usage(usage)
    keys = list(usage) if isinstance(usage, Mapping) else type(usage).__name__
    raise PricingError(f"unrecognised usage shape: {keys}")


def _chat_usage(u: object) -> TokenUsage:
    # OpenAI Chat Completions, and LiteLLM's OpenAI-shaped Usage for every provider.
    prompt = _count(_get(u, "prompt_tokens"), "prompt_tokens")
    completion = _count(_get(u, "completion_tokens"), "completion_tokens")
    pd = _get(u, "prompt_tokens_details")
    cd = _get(u, "completion_tokens_details")
    cached = _count(_get(pd, "cached_tokens"), "cached_tokens")
    if not cached:
        # DeepSeek reports cache hits outside the details object.
        cached = _count(_get(u, "prompt_cache_hit_tokens"), "prompt_cache_hit_tokens")
    # LiteLLM mirrors Anthropic's cache fields; its cache reads are always in prompt_tokens.
    cached = max(cached, _count(_get(u, "cache_read_input_tokens"), "cache_read_input_tokens"))
    write_included = _count(_get(pd, "cache_write_tokens"), "cache_write_tokens")
    litellm_detail = _get(pd, "cache_creation_tokens")
    litellm_write = _count(_get(u, "cache_creation_input_tokens"), "cache_creation_input_tokens")
    if litellm_detail is not None:
        # Recent LiteLLM marks cache writes it has added to prompt_tokens here.
        write_included = max(write_included, _count(litellm_detail, "cache_creation_tokens"))
        extra = 0
    else:
        # Older LiteLLM releases differ on whether prompt_tokens includes cache writes;
        # assume not (add them) so recorded spend can only err high.
        extra = litellm_write
    writes = write_included + extra
    one_hour = _count(
        _get(_first(pd, "cache_creation_token_details"), "ephemeral_1h_input_tokens"),
        "ephemeral_1h_input_tokens",
    )
    return TokenUsage(
        input_tokens=prompt + extra,
        output_tokens=completion,
        cache_read_tokens=cached,
        cache_write_tokens=writes,
        cache_write_1h_tokens=min(one_hour, writes),
        input_audio_tokens=_count(_get(pd, "audio_tokens"), "audio_tokens"),
        output_audio_tokens=_count(_get(cd, "audio_tokens"), "audio_tokens"),
        reasoning_tokens=_count(_get(cd, "reasoning_tokens"), "reasoning_tokens"),
    )


def _responses_usage(u: object) -> TokenUsage:
    # OpenAI Responses API: cached tokens and cache writes are inside input_tokens.
    details = _get(u, "input_tokens_details")
    return TokenUsage(
        input_tokens=_count(_get(u, "input_tokens"), "input_tokens"),
        output_tokens=_count(_get(u, "output_tokens"), "output_tokens"),
        cache_read_tokens=_count(_get(details, "cached_tokens"), "cached_tokens"),
        cache_write_tokens=_count(_get(details, "cache_write_tokens"), "cache_write_tokens"),
        reasoning_tokens=_count(
            _get(_get(u, "output_tokens_details"), "reasoning_tokens"), "reasoning_tokens"
        ),
    )


def _anthropic_usage(u: object) -> TokenUsage:
    # Anthropic: input_tokens counts only the uncached part; cache traffic is separate.
    uncached = _count(_get(u, "input_tokens"), "input_tokens")
    read = _count(_get(u, "cache_read_input_tokens"), "cache_read_input_tokens")
    breakdown = _get(u, "cache_creation")
    short = _count(_get(breakdown, "ephemeral_5m_input_tokens"), "ephemeral_5m_input_tokens")
    long = _count(_get(breakdown, "ephemeral_1h_input_tokens"), "ephemeral_1h_input_tokens")
    writes = _get(u, "cache_creation_input_tokens")
    write = _count(writes, "cache_creation_input_tokens") if writes is not None else short + long
    thinking = _get(_get(u, "output_tokens_details"), "thinking_tokens")
    return TokenUsage(
        input_tokens=uncached + read + write,
        output_tokens=_count(_get(u, "output_tokens"), "output_tokens"),
        cache_read_tokens=read,
        cache_write_tokens=write,
        cache_write_1h_tokens=min(long, write),
        reasoning_tokens=_count(thinking, "thinking_tokens"),
        web_searches=_count(
            _get(_get(u, "server_tool_use"), "web_search_requests"), "web_search_requests"
        ),
    )


def _gemini_usage(u: object) -> TokenUsage:
    # Gemini: cached content is inside promptTokenCount; thoughts are NOT in candidates.
    prompt = _count(_first(u, "promptTokenCount", "prompt_token_count"), "promptTokenCount")
    tool_prompt = _count(
        _first(u, "toolUsePromptTokenCount", "tool_use_prompt_token_count"),
        "toolUsePromptTokenCount",
    )
    candidates = _count(
        _first(u, "candidatesTokenCount", "candidates_token_count"), "candidatesTokenCount"
    )
    thoughts = _count(_first(u, "thoughtsTokenCount", "thoughts_token_count"), "thoughtsTokenCount")
    cached = _count(
        _first(u, "cachedContentTokenCount", "cached_content_token_count"),
        "cachedContentTokenCount",
    )
    prompt_details = _first(u, "promptTokensDetails", "prompt_tokens_details")
    cache_details = _first(u, "cacheTokensDetails", "cache_tokens_details")
    output_details = _first(u, "candidatesTokensDetails", "candidates_tokens_details")
    return TokenUsage(
        input_tokens=prompt + tool_prompt,
        output_tokens=candidates + thoughts,
        cache_read_tokens=cached,
        input_audio_tokens=_modality_count(prompt_details, "AUDIO"),
        cache_audio_read_tokens=_modality_count(cache_details, "AUDIO"),
        output_audio_tokens=_modality_count(output_details, "AUDIO"),
        reasoning_tokens=thoughts,
    )


def _bedrock_usage(u: object) -> TokenUsage:
    # Bedrock Converse reports cache reads/writes beside inputTokens, as Anthropic does.
    uncached = _count(_get(u, "inputTokens"), "inputTokens")
    read = _count(_get(u, "cacheReadInputTokens"), "cacheReadInputTokens")
    write = _count(_get(u, "cacheWriteInputTokens"), "cacheWriteInputTokens")
    return TokenUsage(
        input_tokens=uncached + read + write,
        output_tokens=_count(_get(u, "outputTokens"), "outputTokens"),
        cache_read_tokens=read,
        cache_write_tokens=write,
    )
