"""What an LLM call costs, in exact ``Decimal`` dollars, offline, for thousands of models.

Prices come from `genai-prices <https://pypi.org/project/genai-prices/>`_'s bundled data
(no hand-written table, no network): every model it prices per token, under every
provider it lists. Your own prices (:meth:`PriceBook.register`, :meth:`PriceBook.load_file`
in llmbudget's format or LiteLLM's ``model_prices_and_context_window.json``) take
precedence over it.

Usage blocks from OpenAI (Chat Completions and Responses), Anthropic, Gemini, Bedrock
Converse, DeepSeek and LiteLLM are normalised into one :class:`TokenUsage`, minding where
each provider counts cache and reasoning tokens:

=================  ==========================================  ===========================
provider           prompt total                                output total
=================  ==========================================  ===========================
OpenAI chat        ``prompt_tokens`` (cached tokens included)  ``completion_tokens`` (incl.
                                                                reasoning and audio)
OpenAI Responses   ``input_tokens`` (cached included)          ``output_tokens`` (incl.
                                                                reasoning)
Anthropic          ``input_tokens`` + ``cache_creation_…`` +   ``output_tokens``
                   ``cache_read_…`` (cache is *not* included)
Gemini             ``promptTokenCount`` (cached included) +    ``candidatesTokenCount`` +
                   ``toolUsePromptTokenCount``                 ``thoughtsTokenCount``
=================  ==========================================  ===========================

Tiered prices (e.g. above 200k prompt tokens) apply to *all* tokens of a call once its
prompt total (cache reads and writes included) passes the threshold, as the providers bill.

>>> cost_from_usage("gpt-4o", {"prompt_tokens": 1000, "completion_tokens": 500})
Decimal('0.0075')
"""

from __future__ import annotations

import difflib
import importlib
import json
import logging
import math
import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from decimal import Context, Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from llmbudget.errors import (
    InvalidAmountError,
    InvalidInputError,
    PricingError,
    UnknownModelError,
)
from llmbudget.fields import first as _first
from llmbudget.fields import get as _get
from llmbudget.money import format_money, to_money

if TYPE_CHECKING:
    from genai_prices import types as gp

__all__ = [
    "Cost",
    "ModelPrice",
    "PriceBook",
    "PriceTier",
    "TokenUsage",
    "cost_from_response",
    "cost_from_text",
    "cost_from_usage",
    "default_prices",
    "normalize_usage",
    "prompt_cost",
    "worst_case_cost",
]

logger = logging.getLogger(__name__)

_PER = 1_000_000
# Token counts times prices never need more than ~40 significant digits; 100 keeps every
# product and sum exact instead of relying on the ambient decimal context.
_EXACT = Context(prec=100)

_RATE_FIELDS = (
    "input_per_mtok",
    "output_per_mtok",
    "cache_read_per_mtok",
    "cache_write_per_mtok",
    "cache_write_1h_per_mtok",
    "input_audio_per_mtok",
    "cache_audio_read_per_mtok",
    "output_audio_per_mtok",
    "output_reasoning_per_mtok",
)
_FEE_FIELDS = ("web_search_per_thousand", "request_per_thousand")


# --------------------------------------------------------------------------- data types


@dataclass(frozen=True, slots=True)
class PriceTier:
    """Prices that replace the base ones once a call's prompt exceeds ``above_input_tokens``.

    A field left ``None`` keeps the next lower tier's price (ultimately the base price).
    """

    above_input_tokens: int
    input_per_mtok: Decimal | None = None
    output_per_mtok: Decimal | None = None
    cache_read_per_mtok: Decimal | None = None
    cache_write_per_mtok: Decimal | None = None
    cache_write_1h_per_mtok: Decimal | None = None
    input_audio_per_mtok: Decimal | None = None
    cache_audio_read_per_mtok: Decimal | None = None
    output_audio_per_mtok: Decimal | None = None
    output_reasoning_per_mtok: Decimal | None = None

    def __post_init__(self) -> None:
        _check_count(self.above_input_tokens, "above_input_tokens", allow_zero=True)
        for name in _RATE_FIELDS:
            _check_rate(getattr(self, name), name)


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """Per-million-token prices of one model at one provider (all ``Decimal`` dollars).

    Cache and audio prices left ``None`` fall back to the input (or output) price; an
    input or output price left ``None`` means the model cannot be billed for those tokens,
    and pricing such tokens raises :class:`PricingError` rather than returning $0.

    >>> p = ModelPrice("m", "acme", Decimal("1"), Decimal("2"))
    >>> p.cost(TokenUsage(input_tokens=1_000_000, output_tokens=500_000))
    Decimal('2')
    """

    model: str
    provider: str
    input_per_mtok: Decimal | None
    output_per_mtok: Decimal | None = None
    cache_read_per_mtok: Decimal | None = None
    cache_write_per_mtok: Decimal | None = None
    cache_write_1h_per_mtok: Decimal | None = None
    input_audio_per_mtok: Decimal | None = None
    cache_audio_read_per_mtok: Decimal | None = None
    output_audio_per_mtok: Decimal | None = None
    output_reasoning_per_mtok: Decimal | None = None
    web_search_per_thousand: Decimal | None = None
    request_per_thousand: Decimal | None = None
    context_window: int | None = None
    max_output_tokens: int | None = None
    tiers: tuple[PriceTier, ...] = ()
    source: str = "custom"

    def __post_init__(self) -> None:
        for name in (*_RATE_FIELDS, *_FEE_FIELDS):
            _check_rate(getattr(self, name), name)
        for name in ("context_window", "max_output_tokens"):
            value = getattr(self, name)
            if value is not None:
                _check_count(value, name)
        if self.input_per_mtok is None and self.output_per_mtok is None:
            raise InvalidInputError(f"{self.model}: needs an input or an output price")
        ordered = tuple(sorted(self.tiers, key=lambda t: t.above_input_tokens))
        if len({t.above_input_tokens for t in ordered}) != len(ordered):
            raise InvalidInputError(f"{self.model}: two tiers share one threshold")
        object.__setattr__(self, "tiers", ordered)

    def rate(self, name: str, input_tokens: int = 0) -> Decimal | None:
        """The per-Mtok price ``name`` (a field name) for a call with this prompt size.

        >>> ModelPrice("m", "x", Decimal(1), Decimal(2),
        ...     tiers=(PriceTier(200_000, input_per_mtok=Decimal(3)),)).rate("input_per_mtok", 250_000)
        Decimal('3')
        """
        for tier in reversed(self.tiers):
            if input_tokens > tier.above_input_tokens:
                value: Decimal | None = getattr(tier, name)
                if value is not None:
                    return value
        result: Decimal | None = getattr(self, name)
        return result

    def cost(self, usage: TokenUsage) -> Decimal:
        """Exact dollar cost of ``usage`` at these prices."""
        u = usage
        n = u.input_tokens
        audio_uncached = u.input_audio_tokens - u.cache_audio_read_tokens
        text_cache_read = u.cache_read_tokens - u.cache_audio_read_tokens
        write_short = u.cache_write_tokens - u.cache_write_1h_tokens
        text_uncached = n - u.cache_read_tokens - u.cache_write_tokens - audio_uncached
        text_output = u.output_tokens - u.output_audio_tokens - u.reasoning_tokens
        for amount, what in (
            (audio_uncached, "cached audio tokens exceed audio input tokens"),
            (text_cache_read, "cached audio tokens exceed cached tokens"),
            (write_short, "1-hour cache writes exceed cache writes"),
            (text_uncached, "cache and audio tokens exceed the prompt total"),
            (text_output, "reasoning and audio tokens exceed the output total"),
        ):
            if amount < 0:
                raise PricingError(f"inconsistent usage for {self.model}: {what} ({usage})")

        rate = self.rate
        total = Decimal(0)
        for count, chain in (
            (text_uncached, ("input_per_mtok",)),
            (text_cache_read, ("cache_read_per_mtok", "input_per_mtok")),
            (write_short, ("cache_write_per_mtok", "input_per_mtok")),
            (
                u.cache_write_1h_tokens,
                ("cache_write_1h_per_mtok", "cache_write_per_mtok", "input_per_mtok"),
            ),
            (audio_uncached, ("input_audio_per_mtok", "input_per_mtok")),
            (
                u.cache_audio_read_tokens,
                (
                    "cache_audio_read_per_mtok",
                    "input_audio_per_mtok",
                    "cache_read_per_mtok",
                    "input_per_mtok",
                ),
            ),
            (text_output, ("output_per_mtok",)),
            (u.reasoning_tokens, ("output_reasoning_per_mtok", "output_per_mtok")),
            (u.output_audio_tokens, ("output_audio_per_mtok", "output_per_mtok")),
        ):
            if not count:
                continue
            price = None
            for name in chain:
                price = rate(name, n)
                if price is not None:
                    break
            if price is None:
                kind = "input" if chain[-1] == "input_per_mtok" else "output"
                raise PricingError(
                    f"{self.provider}/{self.model} has no {kind} token price, "
                    f"but the usage has {count} such tokens"
                )
            total = _EXACT.add(total, _EXACT.multiply(Decimal(count), price))
        total = total.scaleb(-6, _EXACT)
        if u.web_searches:
            if self.web_search_per_thousand is None:
                logger.warning(
                    "%s: %d web searches have no known price and are not counted",
                    self.model,
                    u.web_searches,
                )
            else:
                searches = _EXACT.multiply(Decimal(u.web_searches), self.web_search_per_thousand)
                total = _EXACT.add(total, searches.scaleb(-3, _EXACT))
        if self.request_per_thousand:
            # Flat per-call fee (e.g. Perplexity's): each priced usage block is one request.
            total = _EXACT.add(total, self.request_per_thousand.scaleb(-3, _EXACT))
        return _plain(total)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view (money as strings)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "tiers":
                out["tiers"] = [
                    {k.name: _jsonable(getattr(t, k.name)) for k in fields(t)} for t in value
                ]
            else:
                out[f.name] = _jsonable(value)
        return out


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Token counts of one call in provider-neutral form.

    ``input_tokens`` is every prompt token (uncached, cache reads, cache writes, audio);
    ``output_tokens`` is every generated token (visible, reasoning, audio). The other
    counts are subsets of those totals.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    input_audio_tokens: int = 0
    cache_audio_read_tokens: int = 0
    output_audio_tokens: int = 0
    reasoning_tokens: int = 0
    web_searches: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise PricingError(f"{f.name} must be a non-negative int, got {value!r}")


@dataclass(frozen=True, slots=True)
class Cost:
    """The priced result of one response (see :func:`cost_from_response`)."""

    model: str
    amount: Decimal
    input_tokens: int
    output_tokens: int


def _check_rate(value: object, name: str) -> None:
    if value is None:
        return
    if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
        raise InvalidAmountError(f"{name} must be a finite, non-negative Decimal, got {value!r}")


def _check_count(value: object, name: str, *, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
        raise InvalidInputError(f"{name} must be a positive int, got {value!r}")


def _plain(value: Decimal) -> Decimal:
    # Normalised, but never in exponent notation for whole numbers (1E+1 -> 10).
    if not value:
        return Decimal(0)
    result = value.normalize(_EXACT)
    if result == result.to_integral_value():
        return result.quantize(Decimal(1))
    return result


def _jsonable(value: object) -> object:
    return format_money(value) if isinstance(value, Decimal) else value


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


# --------------------------------------------------------------------------- genai-prices source

# LiteLLM / SDK provider prefixes -> genai-prices provider ids.
_PROVIDER_ALIASES = {
    "azure_ai": "azure",
    "bedrock": "aws",
    "bedrock_converse": "aws",
    "cohere_chat": "cohere",
    "fireworks_ai": "fireworks",
    "gemini": "google",
    "moonshot": "moonshotai",
    "text-completion-openai": "openai",
    "together_ai": "together",
    "vertex_ai": "google",
    "vertex_ai_beta": "google",
    "voyage": "voyageai",
    "xai": "x-ai",
    "zhipu": "zhipuai",
}
# When a bare model id is listed by several providers, the model's maker wins, then the
# direct hosts; resellers and aggregators come last.
_FIRST_PARTY = (
    "openai",
    "anthropic",
    "google",
    "mistral",
    "x-ai",
    "deepseek",
    "cohere",
    "moonshotai",
    "zhipuai",
    "zai",
    "minimax",
    "meta",
    "voyageai",
)
_LAST = ("openrouter", "huggingface_", "quicksilverpro", "github-copilot", "cursor", "doubleword")
_TOKEN_PRICE_KEYS = ("input_mtok", "output_mtok")
_GENAI_FIELDS = {
    "input_mtok": "input_per_mtok",
    "output_mtok": "output_per_mtok",
    "cache_read_mtok": "cache_read_per_mtok",
    "cache_write_mtok": "cache_write_per_mtok",
    "cache_write_1h_mtok": "cache_write_1h_per_mtok",
    "input_audio_mtok": "input_audio_per_mtok",
    "cache_audio_read_mtok": "cache_audio_read_per_mtok",
    "output_audio_mtok": "output_audio_per_mtok",
    "output_reasoning_mtok": "output_reasoning_per_mtok",
}
_DATE_SUFFIX = re.compile(r"[-@](?:\d{4}-\d{2}-\d{2}|\d{8})$")


def _provider_rank(provider_id: str) -> tuple[int, int]:
    if provider_id in _FIRST_PARTY:
        return (0, _FIRST_PARTY.index(provider_id))
    if provider_id.startswith(_LAST):
        return (2, 0)
    return (1, 0)


class _GenaiSource:
    """Index over genai-prices' bundled providers, built once on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready = False
        self.version = "unknown"
        self.providers: list[gp.Provider] = []
        self.by_id: dict[str, gp.Provider] = {}
        self.ordered: list[gp.Provider] = []
        self.qualified: dict[str, tuple[gp.Provider, gp.ModelInfo]] = {}
        self.bare: dict[str, tuple[gp.Provider, gp.ModelInfo]] = {}
        self.display: dict[str, str] = {}
        self.not_per_token: set[str] = set()

    def ensure(self) -> None:
        if self._ready:
            return
        with self._lock:
            if not self._ready:
                self._build()
                self._ready = True

    def _build(self) -> None:
        # Imported by name: the bundled data module is 1.6 MB of literals, loaded only when
        # a price is first needed (and kept out of the type checker's way).
        data = importlib.import_module("genai_prices.data")
        try:
            from importlib.metadata import version

            self.version = version("genai-prices")
        except Exception:  # pragma: no cover - metadata missing in odd installs
            self.version = "unknown"
        self.providers = list(data.providers)
        self.by_id = {p.id: p for p in self.providers}
        self.ordered = sorted(self.providers, key=lambda p: _provider_rank(p.id))
        for provider in self.ordered:
            for model in provider.models:
                key = model.id.lower()
                qualified = f"{provider.id}/{key}"
                if not _is_token_priced(model):
                    self.not_per_token.update((qualified, key))
                    continue
                self.qualified[qualified] = (provider, model)
                self.display[qualified] = f"{provider.id}/{model.id}"
                if key not in self.bare:
                    self.bare[key] = (provider, model)
                    self.display.setdefault(key, model.id)
        # A bare id priced somewhere per token is not "not per token".
        self.not_per_token.difference_update(self.bare)

    def provider_for_prefix(self, prefix: str) -> gp.Provider | None:
        pid = _PROVIDER_ALIASES.get(prefix, prefix)
        return self.by_id.get(pid)

    def find(self, key: str, depth: int = 0) -> tuple[gp.Provider, gp.ModelInfo] | None:
        self.ensure()
        hit = self.qualified.get(key)
        if hit is not None:
            return hit
        if "/" in key:
            prefix, rest = key.split("/", 1)
            provider = self.provider_for_prefix(prefix)
            if provider is not None:
                hit = self.qualified.get(f"{provider.id}/{rest}")
                if hit is None:
                    model = _safe_find_model(provider, rest, self.providers)
                    if model is not None and _is_token_priced(model):
                        hit = (provider, model)
                if hit is not None:
                    return hit
                # The route's provider does not list it; its maker's price is the best guess.
                return self.find(rest, depth + 1) if depth < 3 else None
        hit = self.bare.get(key)
        if hit is not None:
            return hit
        # genai-prices' own provider inference (e.g. "claude" -> anthropic, "gemini" -> google).
        for provider in self.providers:
            if provider.model_match is not None and provider.model_match.is_match(key):
                model = _safe_find_model(provider, key, self.providers)
                if model is not None and _is_token_priced(model):
                    return provider, model
        for provider in self.ordered:
            model = _safe_find_model(provider, key, None)
            if model is not None and _is_token_priced(model):
                return provider, model
        if "/" in key and depth < 3:
            # An unknown vendor prefix ("meta-llama/...", "accounts/fireworks/models/...").
            return self.find(key.split("/", 1)[1], depth + 1)
        return None


def _safe_find_model(
    provider: gp.Provider, key: str, all_providers: list[gp.Provider] | None
) -> gp.ModelInfo | None:
    try:
        return provider.find_model(key, all_providers=all_providers)
    except (re.error, ValueError, TypeError):  # pragma: no cover - malformed upstream regex
        return None


def _model_prices(model: gp.ModelInfo) -> list[Any]:
    prices = model.prices
    if isinstance(prices, list):
        return [c.prices for c in prices]
    return [prices]


def _is_token_priced(model: gp.ModelInfo) -> bool:
    return any(
        getattr(p, key, None) is not None for p in _model_prices(model) for key in _TOKEN_PRICE_KEYS
    )


def _base_value(value: object) -> Decimal:
    base = getattr(value, "base", value)
    return base if isinstance(base, Decimal) else Decimal(0)


def _convert(
    provider: gp.Provider, model: gp.ModelInfo, when: datetime, version: str
) -> ModelPrice:
    from genai_prices.types import TieredPrices, TimeOfDateConstraint

    if isinstance(model.prices, list):
        dated = [c for c in model.prices if not isinstance(c.constraint, TimeOfDateConstraint)]
        chosen = dated[0] if dated else model.prices[0]
        for conditional in reversed(dated):
            if conditional.constraint is None or conditional.constraint.active(when):
                chosen = conditional
                break
        candidates = [chosen.prices] + [
            c.prices for c in model.prices if isinstance(c.constraint, TimeOfDateConstraint)
        ]
    else:
        candidates = [model.prices]

    raw: dict[str, Any] = {}
    for genai_key in (*_GENAI_FIELDS, "web_searches_kcount", "requests_kcount"):
        values = [v for c in candidates if (v := getattr(c, genai_key, None)) is not None]
        if values:
            # Off-peak discounts (time-of-day prices) are not applied: the highest price of
            # the day is used at every hour, so recorded spend never falls below the bill.
            raw[genai_key] = max(values, key=_base_value)

    thresholds = sorted(
        {t.start for v in raw.values() if isinstance(v, TieredPrices) for t in v.tiers}
    )
    tiers = []
    for threshold in thresholds:
        tier_rates: dict[str, Decimal] = {}
        for genai_key, value in raw.items():
            if isinstance(value, TieredPrices) and genai_key in _GENAI_FIELDS:
                price = value.base
                for tier in value.tiers:
                    if tier.start <= threshold:
                        price = tier.price
                tier_rates[_GENAI_FIELDS[genai_key]] = price
        tiers.append(PriceTier(threshold, **tier_rates))

    base: dict[str, Any] = {
        _GENAI_FIELDS[k]: (v.base if isinstance(v, TieredPrices) else v)
        for k, v in raw.items()
        if k in _GENAI_FIELDS
    }
    base.setdefault("input_per_mtok", None)
    web = raw.get("web_searches_kcount")
    requests = raw.get("requests_kcount")
    return ModelPrice(
        model=model.id,
        provider=provider.id,
        web_search_per_thousand=_base_value(web) if web is not None else None,
        request_per_thousand=_base_value(requests) if requests is not None else None,
        context_window=model.context_window or None,
        tiers=tuple(tiers),
        source=f"genai-prices {version}",
        **base,
    )


_SOURCE = _GenaiSource()


# --------------------------------------------------------------------------- the price book


class PriceBook:
    """Model prices: genai-prices' data plus your overrides, which win.

    >>> book = PriceBook()
    >>> book.lookup("openai/gpt-4o-2024-08-06").input_per_mtok
    Decimal('2.5')
    >>> _ = book.register("acme-1", input_per_mtok="0.5", output_per_mtok="1.5")
    >>> book.lookup("acme-1").output_per_mtok
    Decimal('1.5')
    """

    _default: ClassVar[PriceBook | None] = None
    _default_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, *, defaults: bool = True) -> None:
        """A book over genai-prices' data (unless ``defaults=False``) with no overrides."""
        self._source = _SOURCE if defaults else None
        self._overrides: dict[str, ModelPrice] = {}
        self._override_names: dict[str, str] = {}
        self._resolved: dict[str, ModelPrice] = {}
        self._misses: dict[str, list[str]] = {}
        self._day = -1
        self._lock = threading.Lock()

    @classmethod
    def default(cls) -> PriceBook:
        """The process-wide book used when no ``prices=`` is passed (built lazily, once).

        Registering on it changes prices for every caller in the process.
        """
        book = cls._default
        if book is None:
            with cls._default_lock:
                book = cls._default
                if book is None:
                    book = cls._default = cls()
        return book

    # -- lookup -------------------------------------------------------------------------

    def lookup(self, model: str) -> ModelPrice:
        """Prices for ``model``; provider prefixes, dated snapshots and aliases resolve.

        Raises :class:`UnknownModelError` (with the closest known names) for unknown models.

        >>> PriceBook().lookup("anthropic/claude-3-5-haiku-20241022").provider
        'anthropic'
        """
        # Dated price changes in the source take effect from their day on: drop cached
        # resolutions when the UTC day rolls over.
        day = int(time.time() // 86_400)
        if day != self._day:
            self._resolved.clear()
            self._day = day
        price = self._resolved.get(model)
        if price is not None:
            return price
        if not isinstance(model, str) or not model.strip():
            raise InvalidInputError(f"model must be a non-empty string, got {model!r}")
        suggestions = self._misses.get(model)
        if suggestions is not None:
            raise UnknownModelError(model, suggestions)
        price = self._resolve(model.strip().lower())
        if price is None:
            suggestions = self._suggest(model.strip().lower())
            if len(self._misses) < 10_000:
                self._misses[model] = suggestions
            raise UnknownModelError(model, suggestions)
        if len(self._resolved) > 50_000:  # model strings come from callers: bound the cache
            self._resolved.clear()
        self._resolved[model] = price
        return price

    def __contains__(self, model: object) -> bool:
        if not isinstance(model, str):
            return False
        try:
            self.lookup(model)
        except (UnknownModelError, PricingError, InvalidInputError):
            return False
        return True

    def _resolve(self, key: str) -> ModelPrice | None:
        price = self._override_for(key)
        if price is not None:
            return price
        if self._source is None:
            return None
        hit = self._source.find(key)
        if hit is None:
            stripped = _DATE_SUFFIX.sub("", key)
            if stripped != key:
                hit = self._source.find(stripped)
        if hit is None:
            if key in self._source.not_per_token:
                raise PricingError(f"{key} is priced by genai-prices, but not per token")
            return None
        provider, model = hit
        return _convert(provider, model, datetime.now(UTC), self._source.version)

    def _override_for(self, key: str) -> ModelPrice | None:
        if not self._overrides:
            return None
        candidates = [key]
        while "/" in candidates[-1]:
            candidates.append(candidates[-1].split("/", 1)[1])
        for name in list(candidates):
            stripped = _DATE_SUFFIX.sub("", name)
            if stripped != name:
                candidates.append(stripped)
        for name in candidates:
            price = self._overrides.get(name)
            if price is not None:
                return price
        return None

    def _suggest(self, key: str) -> list[str]:
        names: dict[str, str] = dict(self._override_names)
        if self._source is not None:
            self._source.ensure()
            for k, v in self._source.display.items():
                names.setdefault(k, v)
        tail = key.rsplit("/", 1)[-1]
        found: list[str] = []
        for probe in dict.fromkeys((key, tail)):
            for match in difflib.get_close_matches(probe, names.keys(), n=5, cutoff=0.6):
                shown = names[match]
                if shown not in found:
                    found.append(shown)
        return found[:5]

    # -- listing ------------------------------------------------------------------------

    def models(self, provider: str | None = None) -> list[str]:
        """Names of every model priced per token, optionally for one provider.

        Default-source models are listed as ``provider/model``; overrides as registered.

        >>> "anthropic/claude-3-5-haiku-latest" in PriceBook().models("anthropic")
        True
        """
        wanted = None
        if provider is not None:
            wanted = provider.strip().lower()
            wanted = _PROVIDER_ALIASES.get(wanted, wanted)
        names: set[str] = set()
        if self._source is not None:
            self._source.ensure()
            for key, (p, _model) in self._source.qualified.items():
                if wanted is None or p.id == wanted:
                    names.add(self._source.display[key])
        for key, shown in self._override_names.items():
            if wanted is None or self._overrides[key].provider.lower() == wanted:
                names.add(shown)
        return sorted(names, key=str.lower)

    def providers(self) -> list[str]:
        """Provider ids that have at least one model priced per token.

        >>> {"openai", "anthropic", "google"} <= set(PriceBook().providers())
        True
        """
        ids: set[str] = set()
        if self._source is not None:
            self._source.ensure()
            ids.update(p.id for p, _ in self._source.qualified.values())
        ids.update(p.provider for p in self._overrides.values())
        return sorted(ids)

    # -- overrides ----------------------------------------------------------------------

    def register(
        self,
        model: str,
        *,
        input_per_mtok: object,
        output_per_mtok: object = None,
        cache_read_per_mtok: object = None,
        cache_write_per_mtok: object = None,
        cache_write_1h_per_mtok: object = None,
        input_audio_per_mtok: object = None,
        cache_audio_read_per_mtok: object = None,
        output_audio_per_mtok: object = None,
        output_reasoning_per_mtok: object = None,
        web_search_per_thousand: object = None,
        request_per_thousand: object = None,
        context_window: int | None = None,
        max_output_tokens: int | None = None,
        provider: str = "custom",
        tiers: Iterable[PriceTier | Mapping[str, Any]] = (),
    ) -> ModelPrice:
        """Price ``model`` yourself (dollars per million tokens); wins over genai-prices.

        Amounts may be ``Decimal``, ``int``, ``str`` or ``float`` and must be finite and
        non-negative (:class:`InvalidAmountError` otherwise; nothing is registered). The
        model is also reachable as ``provider/model``.

        >>> book = PriceBook(defaults=False)
        >>> book.register("my-llm", input_per_mtok=1, output_per_mtok=2,
        ...               tiers=[{"above_input_tokens": 200_000, "input_per_mtok": 2}])
        ... # doctest: +ELLIPSIS
        ModelPrice(model='my-llm', provider='custom', input_per_mtok=Decimal('1'), ...)
        """
        spec: dict[str, Any] = {
            "input_per_mtok": input_per_mtok,
            "output_per_mtok": output_per_mtok,
            "cache_read_per_mtok": cache_read_per_mtok,
            "cache_write_per_mtok": cache_write_per_mtok,
            "cache_write_1h_per_mtok": cache_write_1h_per_mtok,
            "input_audio_per_mtok": input_audio_per_mtok,
            "cache_audio_read_per_mtok": cache_audio_read_per_mtok,
            "output_audio_per_mtok": output_audio_per_mtok,
            "output_reasoning_per_mtok": output_reasoning_per_mtok,
            "web_search_per_thousand": web_search_per_thousand,
            "request_per_thousand": request_per_thousand,
            "context_window": context_window,
            "max_output_tokens": max_output_tokens,
            "provider": provider,
            "tiers": list(tiers),
        }
        price = _price_from_spec(model, spec, source="register")
        self._commit([price])
        return price

    def add(self, price: ModelPrice, *, name: str | None = None) -> None:
        """Register an already-built :class:`ModelPrice` (under ``name`` or its model id)."""
        if not isinstance(price, ModelPrice):
            raise InvalidInputError(f"expected a ModelPrice, got {type(price).__name__}")
        self._commit([replace(price, model=name) if name else price])

    def load_file(self, path: str | Path) -> list[str]:
        """Load overrides from a JSON or YAML file; returns the model names registered.

        Two formats are understood (see docs/pricing.md): llmbudget's own ::

            models:
              my-llm: {input_per_mtok: 1.5, output_per_mtok: 6, provider: acme}

        and LiteLLM's ``model_prices_and_context_window.json`` (per-token costs such as
        ``input_cost_per_token``; ``sample_spec`` and entries without token prices are
        skipped). Every entry is validated first: one bad amount raises
        :class:`InvalidAmountError` and registers nothing.
        """
        file = Path(path)
        text = file.read_text(encoding="utf-8")
        data = _parse_document(text, file.suffix.lower(), str(file))
        prices = _prices_from_document(data, source=f"file:{file.name}")
        self._commit(prices)
        return [p.model for p in prices]

    def _commit(self, prices: Sequence[ModelPrice]) -> None:
        with self._lock:
            for price in prices:
                key = price.model.strip().lower()
                if not key:
                    raise InvalidInputError("model name must not be empty")
            for price in prices:
                key = price.model.strip().lower()
                self._overrides[key] = price
                self._override_names[key] = price.model
                # Also reachable as "provider/model", as LiteLLM-style callers name it.
                prefix = f"{price.provider.lower()}/"
                if not key.startswith(prefix):
                    self._overrides[prefix + key] = price
            self._resolved.clear()
            self._misses.clear()


def default_prices() -> PriceBook:
    """The shared default :class:`PriceBook` (same as ``PriceBook.default()``).

    >>> default_prices() is PriceBook.default()
    True
    """
    return PriceBook.default()


# --------------------------------------------------------------------------- override files

_OUR_KEYS = {
    *_RATE_FIELDS,
    *_FEE_FIELDS,
    "context_window",
    "max_output_tokens",
    "provider",
    "tiers",
}
_LITELLM_PER_TOKEN = {
    "input_cost_per_token": "input_per_mtok",
    "output_cost_per_token": "output_per_mtok",
    "cache_read_input_token_cost": "cache_read_per_mtok",
    "cache_creation_input_token_cost": "cache_write_per_mtok",
    "cache_creation_input_token_cost_above_1hr": "cache_write_1h_per_mtok",
    "input_cost_per_audio_token": "input_audio_per_mtok",
    "cache_read_input_audio_token_cost": "cache_audio_read_per_mtok",
    "output_cost_per_audio_token": "output_audio_per_mtok",
    "output_cost_per_reasoning_token": "output_reasoning_per_mtok",
}
_LITELLM_TIER = re.compile(
    r"^(input_cost_per_token|output_cost_per_token|cache_read_input_token_cost"
    r"|cache_creation_input_token_cost)_above_(\d+)k_tokens$"
)


def _parse_document(text: str, suffix: str, where: str) -> object:
    if suffix == ".json" or (suffix not in (".yaml", ".yml") and text.lstrip()[:1] in "{["):
        try:
            # parse_float=Decimal keeps "0.0000025" exactly as written.
            return json.loads(text, parse_float=Decimal)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"{where}: not valid JSON ({exc})") from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInputError(f"{where}: not valid YAML ({exc})") from None


def _prices_from_document(data: object, *, source: str) -> list[ModelPrice]:
    if not isinstance(data, Mapping):
        raise InvalidInputError("a price file must hold a mapping at the top level")
    if "models" in data and isinstance(data["models"], Mapping):
        unknown = set(data) - {"models", "version"}
        if unknown:
            raise InvalidInputError(f"unknown top-level keys in price file: {sorted(unknown)}")
        entries: Mapping[Any, Any] = data["models"]
    else:
        entries = data
    prices: list[ModelPrice] = []
    for name, spec in entries.items():
        if name == "sample_spec":
            continue
        if not isinstance(name, str) or not isinstance(spec, Mapping):
            raise InvalidInputError(f"entry {name!r} must map a model name to its prices")
        if any(k in spec for k in _LITELLM_PER_TOKEN) or "litellm_provider" in spec:
            price = _price_from_litellm(name, spec, source)
        elif any(k in spec for k in _RATE_FIELDS):
            price = _price_from_spec(name, spec, source=source)
        else:
            continue  # priced per image, second, character...: nothing per token to learn
        if price is not None:
            prices.append(price)
    return prices


def _money(value: object, what: str) -> Decimal | None:
    if value is None:
        return None
    return to_money(value, what=what)


def _price_from_spec(model: str, spec: Mapping[str, Any], *, source: str) -> ModelPrice:
    if not isinstance(model, str) or not model.strip():
        raise InvalidInputError(f"model name must be a non-empty string, got {model!r}")
    unknown = set(spec) - _OUR_KEYS
    if unknown:
        raise InvalidInputError(f"{model}: unknown price fields {sorted(unknown)}")
    rates = {
        name: _money(spec.get(name), f"{model} {name}") for name in (*_RATE_FIELDS, *_FEE_FIELDS)
    }
    if rates["input_per_mtok"] is None and rates["output_per_mtok"] is None:
        raise InvalidInputError(f"{model}: input_per_mtok or output_per_mtok is required")
    tiers = []
    for raw in spec.get("tiers") or ():
        if isinstance(raw, PriceTier):
            tiers.append(raw)
            continue
        if not isinstance(raw, Mapping):
            raise InvalidInputError(f"{model}: each tier must be a mapping, got {raw!r}")
        extra = set(raw) - {"above_input_tokens", *_RATE_FIELDS}
        if extra:
            raise InvalidInputError(f"{model}: unknown tier fields {sorted(extra)}")
        tier_rates = {
            name: _money(raw.get(name), f"{model} tier {name}")
            for name in _RATE_FIELDS
            if raw.get(name) is not None
        }
        tiers.append(PriceTier(_int(raw.get("above_input_tokens"), model), **tier_rates))
    provider = spec.get("provider") or "custom"
    if not isinstance(provider, str):
        raise InvalidInputError(f"{model}: provider must be a string")
    return ModelPrice(
        model=model.strip(),
        provider=provider,
        context_window=_opt_int(spec.get("context_window"), model),
        max_output_tokens=_opt_int(spec.get("max_output_tokens"), model),
        tiers=tuple(tiers),
        source=source,
        **rates,
    )


def _price_from_litellm(model: str, spec: Mapping[str, Any], source: str) -> ModelPrice | None:
    rates: dict[str, Decimal | None] = {}
    for key, name in _LITELLM_PER_TOKEN.items():
        per_token = _money(spec.get(key), f"{model} {key}")
        if per_token is not None:
            rates[name] = _plain(per_token.scaleb(6, _EXACT))
    tier_rates: dict[int, dict[str, Decimal]] = {}
    for key, value in spec.items():
        match = _LITELLM_TIER.match(key)
        if match and value is not None:
            per_token = to_money(value, what=f"{model} {key}")
            threshold = int(match.group(2)) * 1000
            field_name = _LITELLM_PER_TOKEN[match.group(1)]
            tier_rates.setdefault(threshold, {})[field_name] = _plain(per_token.scaleb(6, _EXACT))
    if rates.get("input_per_mtok") is None and rates.get("output_per_mtok") is None:
        return None
    provider = spec.get("litellm_provider") or "custom"
    max_output = spec.get("max_output_tokens")
    if max_output is None:
        # LiteLLM's legacy `max_tokens` is the completion limit for most entries.
        max_output = spec.get("max_tokens")
    return ModelPrice(
        model=model.strip(),
        provider=str(provider),
        context_window=_opt_int(spec.get("max_input_tokens"), model),
        max_output_tokens=_opt_int(max_output, model),
        tiers=tuple(PriceTier(t, **r) for t, r in sorted(tier_rates.items())),
        source=source,
        **rates,
    )


def _int(value: object, model: str) -> int:
    if _is_whole(value):
        value = int(value)  # type: ignore[call-overload]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInputError(f"{model}: expected a whole number of tokens, got {value!r}")
    return value


def _opt_int(value: object, model: str) -> int | None:
    if value is None:
        return None
    result = _int(value, model)
    return result or None


# --------------------------------------------------------------------------- public helpers


def cost_from_usage(
    model: str, usage: Mapping[str, Any] | object, *, prices: PriceBook | None = None
) -> Decimal:
    """Exact dollar cost of one call from the provider's usage block.

    ``usage`` may be a mapping or SDK object in any shape :func:`normalize_usage` accepts.

    >>> cost_from_usage("claude-3-5-haiku-latest", {"input_tokens": 1000, "output_tokens": 100})
    Decimal('0.0012')
    """
    book = prices if prices is not None else PriceBook.default()
    return book.lookup(model).cost(normalize_usage(usage))


def _find_usage(response: object) -> object:
    usage = _first(response, "usage", "usageMetadata", "usage_metadata")
    if usage is None:
        raise PricingError("response carries no usage block; it cannot be priced")
    return usage


def cost_from_response(
    response: Mapping[str, Any] | object,
    *,
    model: str | None = None,
    prices: PriceBook | None = None,
) -> Cost:
    """Price a whole provider response (OpenAI, Anthropic, Gemini, LiteLLM; dict or SDK object).

    The model comes from the response's ``model`` (Gemini: ``modelVersion``) unless given.

    >>> cost_from_response({"model": "gpt-4o-2024-08-06",
    ...     "usage": {"prompt_tokens": 1000, "completion_tokens": 500}}).amount
    Decimal('0.0075')
    """
    if response is None:
        raise PricingError("no response to price")
    usage = normalize_usage(_find_usage(response))
    name = model or _first(response, "model", "modelVersion", "model_version")
    if not isinstance(name, str) or not name:
        raise PricingError("the response names no model; pass model=")
    book = prices if prices is not None else PriceBook.default()
    amount = book.lookup(name).cost(usage)
    return Cost(name, amount, usage.input_tokens, usage.output_tokens)


def cost_from_text(
    model: str, input_text: str, output_text: str, *, prices: PriceBook | None = None
) -> Decimal:
    """Cost of a call given its prompt and completion text (tokens counted offline).

    ``input_text`` is priced as the API bills it: one user message, with the model's chat
    overhead (counted by :func:`~llmbudget.tokens.count_message_tokens`, as every prompt
    is metered); ``output_text`` as completion text, which carries no overhead.

    >>> cost_from_text("gpt-4o", "hello world", "hi")
    Decimal('0.0000325')
    """
    from llmbudget.tokens import count_message_tokens, count_tokens

    usage = TokenUsage(
        input_tokens=count_message_tokens(input_text, model),
        output_tokens=count_tokens(output_text, model),
    )
    book = prices if prices is not None else PriceBook.default()
    return book.lookup(model).cost(usage)


def prompt_cost(
    model: str,
    messages: Sequence[Any] | str,
    *,
    prices: PriceBook | None = None,
    tools: Sequence[Any] | None = None,
) -> Decimal:
    """Cost of sending ``messages`` (prompt only), tokens counted offline.

    >>> prompt_cost("gpt-4o", [{"role": "user", "content": "hello world"}])
    Decimal('0.0000225')
    """
    from llmbudget.tokens import count_message_tokens

    book = prices if prices is not None else PriceBook.default()
    price = book.lookup(model)
    tokens = count_message_tokens(messages, model, tools=tools)
    return price.cost(TokenUsage(input_tokens=tokens))


def worst_case_cost(
    model: str,
    messages: Sequence[Any] | str,
    max_tokens: int | None = None,
    *,
    prices: PriceBook | None = None,
    tools: Sequence[Any] | None = None,
) -> Decimal:
    """Most a chat call can cost: its prompt plus the largest completion it may be sent
    with — ``max_tokens`` when given, else the output cap every door of llmbudget sends
    (the model's max output where known, else
    :data:`~llmbudget.metering.DEFAULT_OUTPUT_CAP`, within the context window). Reasoning
    and audio output are counted at their rate where it is dearer. See
    :mod:`llmbudget.metering.policy`.

    >>> worst_case_cost("gpt-4o", [{"role": "user", "content": "hello world"}], max_tokens=100)
    Decimal('0.0010225')
    """
    from llmbudget.metering import BillableCall, default_cap, worst_case
    from llmbudget.tokens import count_message_tokens

    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 0
    ):
        raise InvalidInputError(f"max_tokens must be a non-negative int, got {max_tokens!r}")
    book = prices if prices is not None else PriceBook.default()
    price = book.lookup(model)
    call = BillableCall("chat", model, count_message_tokens(messages, model, tools=tools))
    cap = max_tokens if max_tokens is not None else default_cap(price, call)
    return worst_case(price, call, cap)
