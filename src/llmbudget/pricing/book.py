"""The price book: genai-prices' data plus your overrides, looked up by model name.

>>> book = PriceBook()
>>> book.lookup("openai/gpt-4o-2024-08-06").input_per_mtok
Decimal('2.5')
"""

from __future__ import annotations

import difflib
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from llmbudget.errors import (
    InvalidInputError,
    PricingError,
    UnknownModelError,
)
from llmbudget.pricing.files import _parse_document, _price_from_spec, _prices_from_document
from llmbudget.pricing.genai import _DATE_SUFFIX, _PROVIDER_ALIASES, _SOURCE, _convert
from llmbudget.pricing.types import ModelPrice, PriceTier

if TYPE_CHECKING:
    pass

__all__ = ["PriceBook", "default_prices"]


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
