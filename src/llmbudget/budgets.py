"""A budget: a limit on one scope, per period, in dollars or in counts. Pure data, no I/O.

A *scope* is whatever is being limited — a user of a project, a virtual key, a team, the
whole process — named by a string such as ``"user:my-app:1234"``. Build scope names with
:func:`scope_key` so that separators inside names cannot make two scopes collide.

>>> b = Budget.of(scope_key("user", "my-app", "1234"), 10, "daily", timezone="Europe/Paris")
>>> b.limit, b.period.describe()
(Decimal('10'), 'daily')

A rate limit is a budget in another unit (:mod:`llmbudget.units`) over a short window:
10 requests a minute, 50,000 tokens a day, 3 calls at once (a lifetime budget of slots,
freed when each call ends). A scope keeps its spend in one unit, so a rate limit has a
scope of its own:

>>> rpm = Budget.of(scope_key("rpm", "key", "k1"), 10, "1m", unit="requests")
>>> rpm.limit, rpm.unit
(Decimal('10'), 'requests')
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from urllib.parse import quote

from llmbudget.errors import CorruptRecordError, LLMBudgetError
from llmbudget.money import MoneyLike
from llmbudget.periods import LIFETIME, Period, Window
from llmbudget.stores.base import BudgetRecord, Line
from llmbudget.units import Unit, check_unit, format_amount, from_store, to_store
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
    """``limit`` per ``period`` on ``scope``, in ``unit``: dollars (``"usd"``), or a whole
    number of ``"requests"``, ``"tokens"`` or ``"concurrent"`` calls; ``limit=None``
    tracks spend without a cap.

    The scope must be a usable name, ``created_at`` a timestamp in range (see
    :mod:`llmbudget.validation`) and a count limit whole; the period checks itself. So no
    budget that exists can break a read or a reserve later.
    """

    scope: str
    limit: Decimal | None
    period: Period = LIFETIME
    created_at: float = 0.0
    unit: Unit = "usd"

    def __post_init__(self) -> None:
        check_name(self.scope, "scope")
        check_timestamp(self.created_at, "created_at")
        check_unit(self.unit)
        if self.unit != "usd" and self.limit is not None:
            to_store(self.limit, self.unit, what="limit")

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
        unit: Unit = "usd",
    ) -> Budget:
        """Validate and build: money exact (see :func:`~llmbudget.money.to_money`), counts
        whole, duration parsed.

        >>> Budget.of("tpm:team:a", 50_000, "1m", unit="tokens").limit
        Decimal('50000')
        """
        unit = check_unit(unit)
        exact = None
        if limit is not None:
            # to_store refuses sub-nano limits and fractional counts, so what is stored is
            # exactly what was asked.
            exact = from_store(to_store(limit, unit), unit)
        period = Period.parse(duration, timezone=timezone, rolling=rolling)
        if isinstance(created_at, datetime):
            created_at = created_at.timestamp()
        return cls(scope, exact, period, check_timestamp(created_at, "created_at"), unit)

    @classmethod
    def from_record(cls, record: BudgetRecord) -> Budget:
        """The budget a store keeps. A record that older versions let through with a value
        that cannot be used raises :class:`~llmbudget.errors.CorruptRecordError`."""
        try:
            unit = check_unit(record.unit)
            limit = None if record.limit is None else from_store(record.limit, unit)
            period = Period.parse(record.duration, timezone=record.timezone, rolling=record.rolling)
            return cls(record.scope, limit, period, record.created_at, unit)
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
            limit=self.limit_units,
            duration=self.period.describe(),
            timezone=self.period.timezone,
            rolling=self.period.rolling,
            created_at=self.created_at,
            updated_at=updated_at,
            unit=self.unit,
        )

    @property
    def limit_units(self) -> int | None:
        """The limit as stores keep it: nano-dollars, or the count."""
        return None if self.limit is None else to_store(self.limit, self.unit)

    def window_at(self, now: float) -> Window:
        return self.period.window_at(now, self.created_at)

    def line(self, window: Window, amount: int | None = None) -> Line:
        """This budget's store line for ``window`` (see :meth:`window_at`), reserving
        ``amount`` of its units (``None``: the operation's amount)."""
        return Line(self.scope, window.key, self.limit_units, amount)

    def amount(self, units: int) -> Decimal:
        """A store amount of this budget back in its unit (dollars, or the count)."""
        return from_store(units, self.unit)


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """Where a budget stands in its current window, in its unit: dollars, or counts (of
    requests, tokens or calls in flight)."""

    scope: str
    limit: Decimal | None
    spent: Decimal
    held: Decimal
    window_start: datetime
    resets_at: datetime | None
    by_model: dict[str, Decimal]
    unit: Unit = "usd"

    @property
    def remaining(self) -> Decimal | None:
        """What can still be reserved now (``None`` when there is no limit); never negative."""
        if self.limit is None:
            return None
        return max(Decimal(0), self.limit - self.spent - self.held)

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly: amounts as strings (plain dollars, or whole counts), times as
        ISO 8601."""

        def text(value: Decimal) -> str:
            return format_amount(value, self.unit)

        return {
            "scope": self.scope,
            "unit": self.unit,
            "limit": None if self.limit is None else text(self.limit),
            "spent": text(self.spent),
            "held": text(self.held),
            "remaining": None if self.remaining is None else text(self.remaining),
            "window_start": self.window_start.isoformat(),
            "resets_at": self.resets_at.isoformat() if self.resets_at else None,
            "by_model": {model: text(cost) for model, cost in self.by_model.items()},
        }
