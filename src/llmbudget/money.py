"""Exact money: ``Decimal`` dollars at the API, integer nano-dollars in storage.

Why nano-dollars (1 unit = $0.000000001):

* every store can add them atomically as 64-bit integers (SQLite INTEGER, PostgreSQL
  BIGINT, Redis ``INCRBY``), so no store ever does float arithmetic on money;
* the largest 64-bit value is about $9.2 billion per counter, far past any budget;
* the cheapest list prices are around $0.01 per million tokens ($1e-8 a token), still
  ten units, so a single call's cost keeps its precision.

A cost finer than a nano-dollar (a few tokens of a very cheap model) is rounded *up* to
the next unit when stored: recorded spend is never below real spend, and the rounding
is under $0.000000001 per call. Limits must be whole nano-dollars (anything finer is
refused rather than silently rounded).

>>> to_money(0.1) + to_money(0.2) == Decimal("0.3")
True
>>> to_units(Decimal("0.000001"))
1000

Money leaves the library as text through :func:`format_money` (JSON, headers, messages:
``0.00000006``, never ``6E-8``) or :func:`format_dollars` (tables and pages for people).
"""

from __future__ import annotations

import math
from decimal import (
    MAX_EMAX,
    MAX_PREC,
    MIN_EMIN,
    ROUND_CEILING,
    Context,
    Decimal,
    InvalidOperation,
    Overflow,
)

from llmbudget.errors import InvalidAmountError

__all__ = [
    "UNITS_PER_DOLLAR",
    "MoneyLike",
    "cost_to_units",
    "format_dollars",
    "format_money",
    "from_units",
    "to_money",
    "to_units",
]

UNITS_PER_DOLLAR = 1_000_000_000
_MAX_UNITS = 2**63 - 1
# Anything above this many dollars is refused before any arithmetic (it could not be stored).
_MAX_ADJUSTED_EXPONENT = 10

MoneyLike = Decimal | int | float | str


def to_money(value: object, *, what: str = "amount") -> Decimal:
    """Convert ``value`` to a finite, non-negative ``Decimal`` number of dollars.

    Floats go through their shortest ``repr``, so ``0.1`` becomes ``Decimal("0.1")``
    rather than the binary value ``0.1000000000000000055...``. Bools, NaN, infinities,
    negatives and non-numbers raise :class:`InvalidAmountError` (a ``ValueError``).

    >>> to_money("2.50")
    Decimal('2.50')
    """
    if isinstance(value, bool):
        raise InvalidAmountError(f"{what} must be a number of dollars, not a bool ({value!r})")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidAmountError(f"{what} must be finite, got {value!r}")
        result = Decimal(repr(value))
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            raise InvalidAmountError(f"{what} is not a number: {value!r}") from None
    else:
        raise InvalidAmountError(
            f"{what} must be int, float, str or Decimal, got {type(value).__name__}"
        )
    if not result.is_finite():
        raise InvalidAmountError(f"{what} must be finite, got {value!r}")
    if result < 0:
        raise InvalidAmountError(f"{what} must not be negative, got {value!r}")
    if result == 0:
        # Normalise -0 and 0E-9 so comparisons and printing stay boring.
        return Decimal(0)
    return result


def to_units(value: object, *, what: str = "amount") -> int:
    """Exact conversion to integer nano-dollars; refuses sub-nano precision.

    Used for limits, where silently rounding would change what the user asked for.
    """
    scaled = _scaled(to_money(value, what=what), what)
    if scaled != scaled.to_integral_value():
        raise InvalidAmountError(
            f"{what} {value} is finer than $0.000000001, the smallest amount llmbudget stores"
        )
    return _checked(int(scaled), what)


def cost_to_units(value: object, *, what: str = "cost") -> int:
    """Integer nano-dollars for a *cost*, rounded up so spend is never under-recorded."""
    scaled = _scaled(to_money(value, what=what), what)
    return _checked(int(scaled.to_integral_value(rounding=ROUND_CEILING)), what)


def from_units(units: int) -> Decimal:
    """Integer nano-dollars back to ``Decimal`` dollars, without trailing-zero noise.

    >>> from_units(1_500_000_000)
    Decimal('1.5')
    """
    if units == 0:
        return Decimal(0)
    exact = Decimal(units)
    context = _WIDE
    result = exact.scaleb(-9, context).normalize(context)
    # normalize() turns 100 into 1E+2; keep plain notation for whole dollars.
    if result == result.to_integral_value():
        return result.quantize(Decimal(1), context=context)
    return result


def format_money(value: Decimal | int) -> str:
    """Dollars as a plain decimal string: never exponent notation, no trailing zeros.

    The one text form of money in JSON, HTTP headers and error messages. ``str()`` of a
    ``Decimal`` switches to exponent notation below $0.000001 (``6E-8``), which people
    misread and some JSON consumers mis-parse; this never does, and it is exact:
    ``Decimal(format_money(x)) == x``.

    >>> format_money(Decimal("6E-8")), format_money(Decimal("1E+3")), format_money(Decimal("2.50"))
    ('0.00000006', '1000', '2.5')
    """
    text = format(Decimal(value), "f")  # "f" without a precision never rounds
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def format_dollars(value: Decimal | int | None) -> str:
    """Money for people: ``$1,234.50``, ``$0.00000006`` (cents always, finer digits only
    when the amount has them); ``—`` for ``None`` (no limit, unknown).

    >>> format_dollars(Decimal("2.5")), format_dollars(Decimal("6E-8")), format_dollars(None)
    ('$2.50', '$0.00000006', '—')
    """
    if value is None:
        return "—"
    text = format_money(value)
    sign, text = ("-", text[1:]) if text.startswith("-") else ("", text)
    whole, _, fraction = text.partition(".")
    return f"{sign}${int(whole):,}.{fraction.ljust(2, '0')}"


def _scaled(money: Decimal, what: str) -> Decimal:
    """``money`` × 10⁹, exactly, whatever precision the caller's decimal context has."""
    if money and money.adjusted() > _MAX_ADJUSTED_EXPONENT:
        raise InvalidAmountError(f"{what} is larger than llmbudget can store (~$9.2 billion)")
    try:
        return money.scaleb(9, _WIDE)
    except (Overflow, InvalidOperation):  # pragma: no cover - excluded by the check above
        raise InvalidAmountError(f"{what} cannot be stored: {money}") from None


# A private context wide enough for every digit: the ambient one (28 digits by default, or
# whatever the application set) could round money silently. The precision only bounds
# rounding; mpdecimal sizes each result by its own digits, so one shared maximal context
# costs nothing (a context made per call cost ~2.5 µs).
_WIDE = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)


def _checked(units: int, what: str) -> int:
    if units > _MAX_UNITS:
        raise InvalidAmountError(f"{what} is larger than llmbudget can store (~$9.2 billion)")
    return units
