"""Price override files: llmbudget's own format and LiteLLM's
``model_prices_and_context_window.json``, validated before anything is registered.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from llmbudget.errors import (
    InvalidInputError,
)
from llmbudget.money import to_money
from llmbudget.pricing.types import _EXACT, _FEE_FIELDS, _RATE_FIELDS, ModelPrice, PriceTier, _plain
from llmbudget.pricing.usage import _is_whole

if TYPE_CHECKING:
    pass

__all__ = []


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
