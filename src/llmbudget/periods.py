"""Budget periods: which window of time a moment falls in, exactly.

A :class:`Period` is a duration (``"daily"``, ``"weekly"``, ``"monthly"``, ``"yearly"``,
``"1h"``, ``"30d"``, ``"1mo"`` …, or ``None`` for a lifetime budget) plus how its windows
are laid out:

* **calendar** (default): windows start on calendar boundaries in an IANA timezone —
  midnight for days, Monday midnight for weeks, the 1st for months, January 1st for
  years. Multiples (``"30d"``, ``"3mo"``) count from the boundary at or before the
  budget's ``created_at``.
* **rolling**: windows start at ``created_at`` itself and repeat every duration, keeping
  the same wall-clock time (a budget made on Jan 31 at 14:37 with ``"1mo"`` resets on
  Feb 28/29, Mar 31, Apr 30 … at 14:37).

Spend is stored under its window's start (:attr:`Window.key`), so a new window starts
at zero exactly at its boundary, with no reset job.

Every period that exists can be computed: building one whose windows cannot be laid out
for any budget created between 1900 and 3000, until 100 years later (``"9999y"``,
``"3000000d"``), raises :class:`~llmbudget.errors.InvalidDurationError`. So a period
that was accepted never breaks a read later.

>>> p = Period.parse("monthly", timezone="Europe/Paris")
>>> w = p.window_at(1_700_000_000.0, anchor=0.0)
>>> w.start_datetime(p.zone).isoformat()
'2023-11-01T00:00:00+01:00'
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from llmbudget.errors import InvalidDurationError
from llmbudget.validation import HORIZON, MIN_TIMESTAMP

__all__ = ["LIFETIME", "Period", "Unit", "Window"]

Unit = Literal["second", "minute", "hour", "day", "week", "month", "year"]

_NAMED: dict[str, tuple[int, Unit]] = {
    "hourly": (1, "hour"),
    "daily": (1, "day"),
    "weekly": (1, "week"),
    "monthly": (1, "month"),
    "yearly": (1, "year"),
    "annually": (1, "year"),
}
_SUFFIX: dict[str, Unit] = {
    "s": "second",
    "sec": "second",
    "m": "minute",
    "min": "minute",
    "h": "hour",
    "d": "day",
    "w": "week",
    "mo": "month",
    "y": "year",
}
_SHORT = {unit: suffix for suffix, unit in _SUFFIX.items() if len(suffix) <= 2}
_DURATION_RE = re.compile(r"^\s*(\d+)\s*([a-z]+)\s*$")
# Longer counts cannot pass the window check anyway; this keeps int() away from huge text.
_MAX_COUNT_DIGITS = 12
_FIXED_SECONDS = {"second": 1, "minute": 60, "hour": 3600}


@dataclass(frozen=True, slots=True)
class Window:
    """One window of a period: ``[start, end)`` in epoch seconds; ``end`` is ``None`` for lifetime."""

    start: float
    end: float | None

    @property
    def key(self) -> int:
        """The integer stores key spend by (the window start in whole epoch seconds)."""
        return math.floor(self.start)

    def start_datetime(self, zone: ZoneInfo | None = None) -> datetime:
        return datetime.fromtimestamp(self.start, zone or UTC)

    def end_datetime(self, zone: ZoneInfo | None = None) -> datetime | None:
        return None if self.end is None else datetime.fromtimestamp(self.end, zone or UTC)


_LIFETIME_WINDOW = Window(0.0, None)


@dataclass(frozen=True, slots=True)
class Period:
    """A budget period. Build one with :meth:`parse`.

    >>> Period.parse("30d").describe()
    '30d'
    >>> Period.parse(None).is_lifetime
    True
    """

    count: int
    unit: Unit | None  # None: lifetime
    timezone: str = "UTC"
    rolling: bool = False

    def __post_init__(self) -> None:
        _check_computable(self.count, self.unit)

    @classmethod
    def parse(
        cls,
        duration: str | Period | None,
        *,
        timezone: str | None = None,
        rolling: bool | None = None,
    ) -> Period:
        """Parse ``"daily"``, ``"weekly"``, ``"monthly"``, ``"yearly"``, ``"hourly"``,
        ``"<n>s|m|h|d|w|mo|y"`` or ``None``/``"lifetime"``.

        Raises :class:`InvalidDurationError` (a ``ValueError``) for anything else or for a
        timezone that is not a known IANA name.
        """
        if isinstance(duration, Period):
            base = duration
        elif duration is None:
            base = LIFETIME
        elif isinstance(duration, str):
            base = _parse_text(duration)
        else:
            raise InvalidDurationError(
                f"duration must be a string such as 'daily' or '30d', got {type(duration).__name__}"
            )
        if rolling is not None and not isinstance(rolling, bool):
            raise InvalidDurationError(f"rolling must be true or false, got {rolling!r}")
        tz = base.timezone if timezone is None else timezone
        _zone(tz)  # validate early, so a bad timezone never gets stored
        return cls(base.count, base.unit, tz, base.rolling if rolling is None else rolling)

    @property
    def is_lifetime(self) -> bool:
        return self.unit is None

    @property
    def zone(self) -> ZoneInfo:
        # ZoneInfo keeps its own cache of zones by name, so this is cheap.
        return _zone(self.timezone)

    def describe(self) -> str | None:
        """The canonical text form (``"daily"`` for 1 day, ``"30d"`` …); ``None`` for lifetime."""
        if self.unit is None:
            return None
        if self.count == 1:
            for name, (count, unit) in _NAMED.items():
                if unit == self.unit and count == 1 and name != "annually":
                    return name
        return f"{self.count}{_SHORT[self.unit]}"

    def window_at(self, at: float, anchor: float) -> Window:
        """The window containing epoch second ``at``, for a budget created at ``anchor``."""
        if self.unit is None:
            return _LIFETIME_WINDOW
        origin = self._origin(anchor)
        k = self._estimate(origin, at)
        # The estimate can be one off around DST changes and month-end clamping.
        while self._start(origin, k) > at:
            k -= 1
        while self._start(origin, k + 1) <= at:
            k += 1
        return Window(self._start(origin, k), self._start(origin, k + 1))

    # -- internals -------------------------------------------------------------------

    def _origin(self, anchor: float) -> datetime:
        """The local wall-clock moment window 0 starts at."""
        local = datetime.fromtimestamp(math.floor(anchor), self.zone)
        if self.rolling:
            return local
        unit = self.unit
        if unit == "second":
            return local
        if unit == "minute":
            return local.replace(second=0)
        if unit == "hour":
            return local.replace(minute=0, second=0)
        day = local.date()
        if unit == "week":
            day -= timedelta(days=day.weekday())
        elif unit == "month":
            day = day.replace(day=1)
        elif unit == "year":
            day = day.replace(month=1, day=1)
        return datetime(day.year, day.month, day.day, tzinfo=self.zone)

    def _estimate(self, origin: datetime, at: float) -> int:
        unit = self.unit
        assert unit is not None
        if unit in _FIXED_SECONDS:
            step = self.count * _FIXED_SECONDS[unit]
            return math.floor((at - origin.timestamp()) / step)
        local = datetime.fromtimestamp(at, self.zone)
        if unit in ("day", "week"):
            days = (local.date() - origin.date()).days
            return days // (self.count * (7 if unit == "week" else 1))
        months = (local.year - origin.year) * 12 + (local.month - origin.month)
        return months // (self.count * (12 if unit == "year" else 1))

    def _start(self, origin: datetime, k: int) -> float:
        unit = self.unit
        n = k * self.count
        if unit in _FIXED_SECONDS:
            # Sub-day units are absolute durations: an hour is 3,600 s even across DST.
            return origin.timestamp() + n * _FIXED_SECONDS[unit]
        if unit in ("day", "week"):
            day = origin.date() + timedelta(days=n * (7 if unit == "week" else 1))
        else:
            day = _add_months(origin.date(), n * (12 if unit == "year" else 1), origin.day)
        # Calendar units keep the wall-clock time: midnight stays midnight across DST.
        local = datetime(
            day.year, day.month, day.day, origin.hour, origin.minute, origin.second,
            tzinfo=self.zone,
        )  # fmt: skip
        return _wall_to_epoch(local)


def _parse_text(text: str) -> Period:
    cleaned = text.strip().lower()
    if cleaned in ("", "lifetime", "none", "never"):
        return LIFETIME
    if cleaned in _NAMED:
        count, unit = _NAMED[cleaned]
        return Period(count, unit)
    match = _DURATION_RE.match(cleaned)
    if match and match.group(2) in _SUFFIX:
        if len(match.group(1).lstrip("0")) > _MAX_COUNT_DIGITS:
            raise InvalidDurationError(
                f"duration {text[:40]!r}... is far too long to be a budget period"
            )
        count = int(match.group(1))
        if count < 1:
            raise InvalidDurationError(f"duration must be at least 1, got {text!r}")
        return Period(count, _SUFFIX[match.group(2)])
    raise InvalidDurationError(
        f"unknown duration {text!r}: use daily, weekly, monthly, yearly, hourly, "
        "or a count with s, m, h, d, w, mo or y (e.g. '30d', '1mo'), or None for lifetime"
    )


# The longest a window of one unit can be, in seconds (an hour more for a DST change).
_LONGEST = {
    "second": 1,
    "minute": 60,
    "hour": 3600,
    "day": 86_400 + 3600,
    "week": 7 * 86_400 + 3600,
    "month": 31 * 86_400 + 3600,
    "year": 366 * 86_400 + 3600,
}
# What datetime can represent in any zone, with a day of margin for the zone's offset.
_EARLIEST = datetime(1, 1, 2, tzinfo=UTC).timestamp()
_LATEST = datetime(9999, 12, 30, tzinfo=UTC).timestamp()


def _check_computable(count: int, unit: Unit | None) -> None:
    """Refuse a period whose windows cannot be computed for every budget it may serve.

    Budgets are created between MIN_TIMESTAMP and MAX_TIMESTAMP and read until HORIZON.
    A window read at ``t`` for a budget created at ``a`` lies within one period of ``t``
    (before ``a`` windows are laid out backwards), so every window start and end lies in
    ``[MIN_TIMESTAMP - period, HORIZON + period]``: that range must be representable.
    """
    if unit is None:
        return
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise InvalidDurationError(f"a period's count must be a positive integer, got {count!r}")
    longest = count * _LONGEST[unit]
    if MIN_TIMESTAMP - longest < _EARLIEST or HORIZON + longest > _LATEST:
        raise InvalidDurationError(
            f"duration '{count}{_SHORT[unit]}' is too long: its windows cannot be computed for "
            "budgets created from 1900 to 3000 and read for 100 years after (the longest "
            "period is about 1,800 years)"
        )


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise InvalidDurationError(f"unknown IANA timezone {name!r}") from None


def _add_months(start: date, months: int, want_day: int) -> date:
    """``start`` moved by ``months``, the day clamped to the month's end (Jan 31 → Feb 28/29)."""
    total = start.year * 12 + (start.month - 1) + months
    year, month = divmod(total, 12)
    month += 1
    next_first = date(year + (month == 12), month % 12 + 1, 1)
    last_day = (next_first - timedelta(days=1)).day
    return date(year, month, min(want_day, last_day))


def _wall_to_epoch(local: datetime) -> float:
    """Epoch seconds of a local wall-clock time, resolving DST gaps and folds.

    In a fold (the time happens twice) the window starts at the first occurrence. In a
    gap (clocks jump forward over the time, e.g. zones whose DST starts at midnight) it
    starts at the first real moment whose wall time is at or after the one asked for.
    """
    naive = local.replace(tzinfo=None)
    zone = local.tzinfo
    epoch = local.replace(fold=0).timestamp()
    if datetime.fromtimestamp(epoch, zone).replace(tzinfo=None) == naive:
        return epoch
    low = math.floor(local.replace(fold=1).timestamp())
    high = math.ceil(epoch)
    lo, hi = min(low, high), max(low, high)
    while lo < hi:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, zone).replace(tzinfo=None) >= naive:
            hi = mid
        else:
            lo = mid + 1
    return float(lo)


# Last: building a Period runs the window check defined above.
LIFETIME = Period(1, None)
