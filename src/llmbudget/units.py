"""The units a budget is kept in: dollars, or counts of requests, tokens or parallel calls.

A rate limit is a budget in another unit over a short window (``"1m"``): the same line in
the same atomic reserve as the dollars. Stores keep integers either way: dollars as
nano-dollars (see :mod:`llmbudget.money`), counts as they are.

==============  ==============================  =========================================
unit            a call reserves                 and settles
==============  ==============================  =========================================
``usd``         its worst case in dollars       its real cost
``requests``    1                               1 (a released call counts nothing)
``tokens``      its worst case in tokens        its real tokens (input + output)
``concurrent``  1 slot                          0: the slot is free once the hold ends
==============  ==============================  =========================================

>>> to_store("10", "requests"), to_store("0.25", "usd")
(10, 250000000)
>>> from_store(250000000, "usd"), from_store(10, "tokens")
(Decimal('0.25'), Decimal('10'))
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Literal

from llmbudget.errors import InvalidAmountError, InvalidInputError
from llmbudget.money import format_money, from_units, to_money, to_units
from llmbudget.validation import INT64_MAX

__all__ = [
    "COUNT_UNITS",
    "UNITS",
    "Unit",
    "check_count",
    "check_counts",
    "check_unit",
    "format_amount",
    "from_store",
    "to_store",
]

Unit = Literal["usd", "requests", "tokens", "concurrent"]
UNITS: tuple[Unit, ...] = ("usd", "requests", "tokens", "concurrent")
#: The units counted in whole numbers (everything but dollars).
COUNT_UNITS: tuple[Unit, ...] = ("requests", "tokens", "concurrent")


def check_unit(value: object, what: str = "unit") -> Unit:
    """One of :data:`UNITS`, else :class:`~llmbudget.errors.InvalidInputError`.

    >>> check_unit("tokens")
    'tokens'
    """
    if not isinstance(value, str) or value not in UNITS:
        raise InvalidInputError(f"{what} must be one of {', '.join(UNITS)}; got {value!r}")
    return value


def check_count(value: object, what: str = "count") -> int:
    """A whole count as a store keeps it: an ``int`` (not a bool) in ``[0, INT64_MAX]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidAmountError(f"{what} must be a whole number, got {type(value).__name__}")
    if not 0 <= value <= INT64_MAX:
        raise InvalidAmountError(f"{what} must be between 0 and {INT64_MAX}, got {value}")
    return value


def check_counts(counts: object) -> dict[Unit, int]:
    """What a call takes of each counted unit (``{"requests": 1, "tokens": 900}``).

    >>> check_counts({"requests": 1})
    {'requests': 1}
    """
    if counts is None:
        return {}
    if not isinstance(counts, Mapping):
        raise InvalidInputError(f"counts must map a unit to a count, got {type(counts).__name__}")
    checked: dict[Unit, int] = {}
    for unit, count in counts.items():
        name = check_unit(unit, "a unit in counts")
        if name == "usd":
            raise InvalidInputError(
                "counts are of requests, tokens or concurrent slots; dollars are the amount"
            )
        checked[name] = check_count(count, f"the {name} count")
    return checked


def to_store(value: object, unit: Unit, *, what: str = "budget") -> int:
    """A limit (or amount) in ``unit`` as a store keeps it: nano-dollars for ``usd``
    (finer than a nano-dollar is refused), else a whole count (a fraction is refused)."""
    if unit == "usd":
        return to_units(value, what=what)
    exact = to_money(value, what=what)
    if exact != exact.to_integral_value():
        raise InvalidAmountError(f"{what} in {unit} must be a whole number, got {value}")
    if exact > INT64_MAX:
        raise InvalidAmountError(f"{what} in {unit} must be at most {INT64_MAX}, got {value}")
    return int(exact)


def from_store(units: int, unit: Unit) -> Decimal:
    """A store's integer back in ``unit``: dollars for ``usd``, else the count."""
    return from_units(units) if unit == "usd" else Decimal(units)


def format_amount(value: Decimal, unit: Unit) -> str:
    """Text of an amount: plain dollars (``"0.25"``, see :func:`~llmbudget.money.format_money`)
    or a whole count (``"10"``)."""
    return format_money(value) if unit == "usd" else str(int(value))
