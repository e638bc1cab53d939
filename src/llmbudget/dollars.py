"""``Dollars``: the money :class:`~llmbudget.BudgetManager` returns, a ``float`` that stays exact.

LiteLLM's ``BudgetManager`` hands out floats, and code written for it does float things
with them: ``cost + 0.5``, ``cost * 1.1``, ``round(cost, 4)``, ``f"{cost:.2f}"``,
``json.dumps(record)``. A ``Decimal`` breaks all of these (``TypeError``), and code that
guards a budget check with ``try: ... except Exception: return True`` then lets a user
over budget through. So the seed-compatible facade returns :class:`Dollars`: a ``float``
subclass (everything above works, ``isinstance(x, float)`` is true) that carries the exact
``Decimal`` the ledger recorded in :attr:`~Dollars.exact`.

What stays exact:

* ``.exact`` is the ledger's ``Decimal``, digit for digit;
* comparisons with another :class:`Dollars`, a ``Decimal`` or an ``int`` compare exact
  values (``spent <= total`` never suffers float rounding); with a ``float`` they compare
  as floats do;
* ``+``, ``-`` and ``*`` with :class:`Dollars`, ``Decimal`` or ``int`` give exact
  :class:`Dollars`; with a ``float`` they give a plain ``float``, as LiteLLM's would;
* ``str()`` and ``repr()`` print the exact decimal (``0.0000145``), which is also what
  :func:`llmbudget.money.to_money` reads back, so passing one back in loses nothing.

Use ``.exact`` rather than ``Decimal(value)``: the latter converts the binary float.

>>> spent = Dollars("0.1") + Dollars("0.2")
>>> spent == Decimal("0.3"), spent.exact, spent + 0.5, f"{spent:.2f}"
(True, Decimal('0.3'), 0.8, '0.30')
>>> import json; json.dumps({"current_cost": spent})
'{"current_cost": 0.3}'
"""

from __future__ import annotations

from decimal import Context, Decimal
from typing import Any, SupportsIndex

__all__ = ["Dollars"]

# Wide enough that sums and products of stored amounts (at most 19 digits) never round.
_EXACT = Context(prec=60)


class Dollars(float):
    """A dollar amount: a ``float`` for user code, exact ``Decimal`` in :attr:`exact`.

    >>> d = Dollars("2.50")
    >>> d * 2, d * 1.1 > 2.7, round(d), d.exact
    (5.00, True, 2, Decimal('2.50'))
    """

    __slots__ = ("exact",)
    exact: Decimal

    def __new__(cls, value: Decimal | int | str) -> Dollars:
        exact = value if isinstance(value, Decimal) else Decimal(value)
        if not exact.is_finite():
            raise ValueError(f"Dollars must be finite, got {value!r}")
        self = super().__new__(cls, exact)
        self.exact = exact
        return self

    # -- printing: the exact value, in plain notation (never 1.45E-5) ------------------

    def __str__(self) -> str:
        return format(self.exact, "f")

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        # An empty spec (f"{d}") prints like str(); any other spec formats the float.
        return str(self) if not spec else float.__format__(self, spec)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Dollars, (str(self),))

    # -- comparisons: exact against exact values, float semantics otherwise -------------

    def __eq__(self, other: object) -> bool:
        exact = _exact(other)
        if exact is not None:
            return self.exact == exact
        return float.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    def __hash__(self) -> int:
        return float.__hash__(self)

    def __lt__(self, other: object) -> bool:
        exact = _exact(other)
        return self.exact < exact if exact is not None else float.__lt__(self, other)  # type: ignore[operator]

    def __le__(self, other: object) -> bool:
        exact = _exact(other)
        return self.exact <= exact if exact is not None else float.__le__(self, other)  # type: ignore[operator]

    def __gt__(self, other: object) -> bool:
        exact = _exact(other)
        return self.exact > exact if exact is not None else float.__gt__(self, other)  # type: ignore[operator]

    def __ge__(self, other: object) -> bool:
        exact = _exact(other)
        return self.exact >= exact if exact is not None else float.__ge__(self, other)  # type: ignore[operator]

    # -- arithmetic: exact with exact operands, float with floats ----------------------

    def __add__(self, other: object) -> Any:
        exact = _exact(other)
        if exact is not None:
            return Dollars(_EXACT.add(self.exact, exact))
        return float.__add__(self, other)  # type: ignore[operator]

    __radd__ = __add__

    def __sub__(self, other: object) -> Any:
        exact = _exact(other)
        if exact is not None:
            return Dollars(_EXACT.subtract(self.exact, exact))
        return float.__sub__(self, other)  # type: ignore[operator]

    def __rsub__(self, other: object) -> Any:
        exact = _exact(other)
        if exact is not None:
            return Dollars(_EXACT.subtract(exact, self.exact))
        return float.__rsub__(self, other)  # type: ignore[operator]

    def __mul__(self, other: object) -> Any:
        exact = _exact(other)
        if exact is not None:
            return Dollars(_EXACT.multiply(self.exact, exact))
        return float.__mul__(self, other)  # type: ignore[operator]

    __rmul__ = __mul__

    def __neg__(self) -> Dollars:
        return Dollars(-self.exact)

    def __pos__(self) -> Dollars:
        return self

    def __abs__(self) -> Dollars:
        return Dollars(abs(self.exact))

    def __round__(self, ndigits: SupportsIndex | None = None) -> Any:
        # round(d) is an int and round(d, n) a float, exactly as for LiteLLM's floats.
        return float.__round__(self, ndigits)


def _exact(value: object) -> Decimal | None:
    """The exact value of an exact operand (``Dollars``, ``Decimal``, ``int``), or
    ``None`` for anything to be treated as a float."""
    if isinstance(value, Dollars):
        return value.exact
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    return None
