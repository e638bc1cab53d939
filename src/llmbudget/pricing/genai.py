"""The genai-prices adapter: its bundled data indexed by provider and model, converted
to :class:`~llmbudget.pricing.ModelPrice` (tiers, dated prices, the dearest time of day).

Built once, on the first lookup; nothing is downloaded.
"""

from __future__ import annotations

import importlib
import re
import threading
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from llmbudget.pricing.types import ModelPrice, PriceTier

if TYPE_CHECKING:
    from genai_prices import types as gp

__all__ = []


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
