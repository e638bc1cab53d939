"""A budget: a limit in dollars on one scope, per period. Pure data, no I/O.

A *scope* is whatever is being limited — a user of a project, a virtual key, a team, the
whole process — named by a string such as ``"user:my-app:1234"``. Build scope names with
:func:`scope_key` so that separators inside names cannot make two scopes collide.

>>> b = Budget.of(scope_key("user", "my-app", "1234"), 10, "daily", timezone="Europe/Paris")
>>> b.limit, b.period.describe()
(Decimal('10'), 'daily')
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from urllib.parse import quote

from llmbudget.errors import CorruptRecordError, LLMBudgetError
from llmbudget.money import MoneyLike, format_money, from_units, to_units
from llmbudget.periods import LIFETIME, Period, Window
from llmbudget.stores.base import BudgetRecord, Line
from llmbudget.validation import check_name, check_timestamp

__all__ = ["Budget", "BudgetStatus", "scope_key"]

log = logging.getLogger("llmbudget")


def scope_key(kind: str, *parts: str) -> str:
    """A scope name from its parts, each percent-encoded so ``:`` inside a part is safe.

    >>> scope_key("user", "proj:a", "42")
    'user:proj%3Aa:42'
    """
    # Each part is checked first: quote() cannot encode lone surrogates.
    names = [
        check_name(str(part), f"a name in a {kind!r} scope", allow_empty=True) for part in parts
    ]
    return ":".join([kind, *(quote(name, safe="") for name in names)])


@dataclass(frozen=True, slots=True)
class Budget:
    """``limit`` dollars per ``period`` on ``scope``; ``limit=None`` tracks spend without a cap.

    The scope must be a usable name and ``created_at`` a timestamp in range (see
    :mod:`llmbudget.validation`); the period checks itself. So no budget that exists can
    break a read or a reserve later.
    """

    scope: str
    limit: Decimal | None
    period: Period = LIFETIME
    created_at: float = 0.0

    def __post_init__(self) -> None:
        check_name(self.scope, "scope")
        check_timestamp(self.created_at, "created_at")

    @classmethod
    def of(
        cls,
        scope: str,
        limit: MoneyLike | None,
        duration: str | Period | None = None,
        *,
        timezone: str | None = None,
        rolling: bool | None = None,
        created_at: float | datetime = 0.0,
    ) -> Budget:
        """Validate and build: money exact (see :func:`~llmbudget.money.to_money`), duration parsed."""
        exact = None
        if limit is not None:
            # to_units refuses sub-nano limits, so what is stored is exactly what was asked.
            exact = from_units(to_units(limit, what="budget"))
        period = Period.parse(duration, timezone=timezone, rolling=rolling)
        if isinstance(created_at, datetime):
            created_at = created_at.timestamp()
        return cls(scope, exact, period, check_timestamp(created_at, "created_at"))

    @classmethod
    def from_record(cls, record: BudgetRecord) -> Budget:
        """The budget a store keeps. A record that older versions let through with a value
        that cannot be used raises :class:`~llmbudget.errors.CorruptRecordError`."""
        try:
            limit = None if record.limit is None else from_units(record.limit)
            period = Period.parse(record.duration, timezone=record.timezone, rolling=record.rolling)
            return cls(record.scope, limit, period, record.created_at)
        except LLMBudgetError as exc:
            raise CorruptRecordError(record.scope, str(exc)) from None

    @classmethod
    def readable(cls, record: BudgetRecord | None) -> Budget | None:
        """:meth:`from_record`, or ``None`` for no record and for a record that cannot be
        used (logged as a warning): listings skip such a record instead of failing whole,
        and redefining the budget replaces it."""
        if record is None:
            return None
        try:
            return cls.from_record(record)
        except CorruptRecordError as exc:
            log.warning("skipping a budget that cannot be used: %s", exc)
            return None

    def to_record(self, updated_at: float) -> BudgetRecord:
        return BudgetRecord(
            scope=self.scope,
            limit=None if self.limit is None else to_units(self.limit),
            duration=self.period.describe(),
            timezone=self.period.timezone,
            rolling=self.period.rolling,
            created_at=self.created_at,
            updated_at=updated_at,
        )

    def window_at(self, now: float) -> Window:
        return self.period.window_at(now, self.created_at)

    def line(self, window: Window) -> Line:
        """This budget's store line for ``window`` (see :meth:`window_at`)."""
        limit = None if self.limit is None else to_units(self.limit)
        return Line(self.scope, window.key, limit)


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """Where a budget stands in its current window. Money in dollars."""

    scope: str
    limit: Decimal | None
    spent: Decimal
    held: Decimal
    window_start: datetime
    resets_at: datetime | None
    by_model: dict[str, Decimal]

    @property
    def remaining(self) -> Decimal | None:
        """What can still be reserved now (``None`` when there is no limit); never negative."""
        if self.limit is None:
            return None
        return max(Decimal(0), self.limit - self.spent - self.held)

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly: money as strings, times as ISO 8601."""
        return {
            "scope": self.scope,
            "limit": None if self.limit is None else format_money(self.limit),
            "spent": format_money(self.spent),
            "held": format_money(self.held),
            "remaining": None if self.remaining is None else format_money(self.remaining),
            "window_start": self.window_start.isoformat(),
            "resets_at": self.resets_at.isoformat() if self.resets_at else None,
            "by_model": {model: format_money(cost) for model, cost in self.by_model.items()},
        }
