"""Prices and token counts as data: :class:`ModelPrice` (with its tiers) prices a
:class:`TokenUsage` exactly, in ``Decimal`` dollars. Pure: no I/O.

>>> p = ModelPrice("m", "acme", Decimal("1"), Decimal("2"))
>>> p.cost(TokenUsage(input_tokens=1_000_000, output_tokens=500_000))
Decimal('2')
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from decimal import Context, Decimal
from typing import TYPE_CHECKING, Any

from llmbudget.errors import (
    InvalidAmountError,
    InvalidInputError,
    PricingError,
)
from llmbudget.money import format_money

if TYPE_CHECKING:
    pass

__all__ = ["Cost", "ModelPrice", "PriceTier", "TokenUsage"]

logger = logging.getLogger("llmbudget.pricing")


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
        for name in _USAGE_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise PricingError(f"{name} must be a non-negative int, got {value!r}")


_USAGE_FIELDS = tuple(f.name for f in fields(TokenUsage))


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
