"""Which spend-log entries a dashboard page is about, and their sums: pure logic, no I/O.

A page names its entries with :class:`SpendQuery` (equality filters on the logged fields
plus a time range: ``today``, ``7d``, ``30d``, ``all`` or a custom ``from``-``to`` of
calendar days, in the server's timezone) and sums them with :func:`summarize` (requests, tokens
and exact dollars, in total, per model and per day).

>>> from zoneinfo import ZoneInfo
>>> q = SpendQuery.parse({"range": "7d", "user": "ann"}, now=86_400 * 10, tz=ZoneInfo("UTC"))
>>> q.match, q.since, q.until
({'user': 'ann'}, 345600.0, 950400.0)
>>> s = summarize([(0.0, {"model": "m", "cost": "0.1", "prompt_tokens": 2}),
...                (1.0, {"model": "m", "cost": "0.2", "completion_tokens": 3})], ZoneInfo("UTC"))
>>> s.cost, s.requests, s.tokens, s.by_model["m"].cost
(Decimal('0.3'), 2, 5, Decimal('0.3'))
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from llmbudget.errors import InvalidInputError
from llmbudget.gateway.spendlog import entry_money

__all__ = ["FILTER_FIELDS", "RANGES", "ModelSpend", "SpendQuery", "SpendSummary", "summarize"]

#: The logged fields a page can filter on, with their labels.
FILTER_FIELDS: dict[str, str] = {
    "key": "Key",
    "user": "User",
    "team": "Team",
    "org": "Org",
    "model": "Model",
    "status": "Status",
}
#: Named ranges: label and length in days (``custom`` takes ``from`` and ``to``).
RANGES: dict[str, tuple[str, int]] = {
    "today": ("Today", 1),
    "7d": ("Last 7 days", 7),
    "30d": ("Last 30 days", 30),
    "all": ("All time", 0),
    "custom": ("Custom", 0),
}
_MAX_DAYS = 3660


@dataclass(frozen=True, slots=True)
class SpendQuery:
    """Filters and a half-open time range ``[since, until)`` in epoch seconds."""

    match: dict[str, str]
    range: str
    since: float
    until: float
    first_day: date
    last_day: date

    @classmethod
    def parse(
        cls, params: Mapping[str, str], *, now: float, tz: ZoneInfo, default: str = "7d"
    ) -> SpendQuery:
        """From query parameters; a bad range or date raises :class:`InvalidInputError`."""
        match = {k: params[k].strip() for k in FILTER_FIELDS if (params.get(k) or "").strip()}
        name = params.get("range") or default
        if name not in RANGES:
            raise InvalidInputError(f"range must be one of {', '.join(RANGES)}, got {name!r}")
        today = datetime.fromtimestamp(now, tz).date()
        if name == "custom":
            first = _day(params.get("from"), "from") or today
            last = _day(params.get("to"), "to") or today
            if last < first:
                raise InvalidInputError("the range ends before it starts: 'to' is before 'from'")
            if (last - first).days > _MAX_DAYS:
                raise InvalidInputError(f"a custom range is at most {_MAX_DAYS} days")
        elif name == "all":
            return cls(match, name, 0.0, math.inf, date.fromtimestamp(0), today)
        else:
            last = today
            first = today - timedelta(days=RANGES[name][1] - 1)
        since = datetime.combine(first, time(), tz).timestamp()
        until = datetime.combine(last + timedelta(days=1), time(), tz).timestamp()
        return cls(match, name, since, until, first, last)

    @property
    def bounded(self) -> bool:
        """Whether the range has a first day (every range but ``all``)."""
        return self.range != "all"

    def days(self) -> list[date]:
        """Every calendar day of a bounded range, oldest first (``[]`` for ``all``)."""
        if not self.bounded:
            return []
        return [
            self.first_day + timedelta(days=i)
            for i in range((self.last_day - self.first_day).days + 1)
        ]

    def params(self, **changes: str | None) -> str:
        """The query string of this query (with ``changes``; ``None`` drops a parameter)."""
        values: dict[str, str | None] = {**self.match, "range": self.range}
        if self.range == "custom":
            values["from"] = self.first_day.isoformat()
            values["to"] = self.last_day.isoformat()
        values.update(changes)
        return urlencode({k: v for k, v in values.items() if v})


def _day(value: str | None, name: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise InvalidInputError(f"{name} must be a date like 2026-03-15, got {value!r}") from None


@dataclass(slots=True)
class ModelSpend:
    requests: int = 0
    tokens: int = 0
    cost: Decimal = Decimal(0)


@dataclass(slots=True)
class SpendSummary:
    """Sums over some entries; money exact."""

    requests: int = 0
    tokens: int = 0
    cost: Decimal = Decimal(0)
    by_model: dict[str, ModelSpend] = field(default_factory=dict)
    by_day: dict[date, Decimal] = field(default_factory=dict)

    def models(self) -> list[tuple[str, ModelSpend]]:
        """Per model, the costliest first."""
        return sorted(self.by_model.items(), key=lambda kv: (-kv[1].cost, kv[0]))


def summarize(entries: Iterable[tuple[float, Mapping[str, Any]]], tz: ZoneInfo) -> SpendSummary:
    """Requests, tokens and dollars of ``(at, entry)`` pairs, per model and per day."""
    out = SpendSummary()
    for at, data in entries:
        cost = entry_money(data.get("cost")) or Decimal(0)  # unreadable: adds nothing
        tokens = _count(data.get("prompt_tokens")) + _count(data.get("completion_tokens"))
        model = str(data.get("model") or "unknown")
        per = out.by_model.setdefault(model, ModelSpend())
        per.requests += 1
        per.tokens += tokens
        per.cost += cost
        day = datetime.fromtimestamp(at, tz).date()
        out.by_day[day] = out.by_day.get(day, Decimal(0)) + cost
        out.requests += 1
        out.tokens += tokens
        out.cost += cost
    return out


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
