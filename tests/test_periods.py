from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from llmbudget.errors import InvalidDurationError
from llmbudget.periods import Period


def ts(text: str, tz: str = "UTC") -> float:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp()


def window(duration: str | None, at: str, anchor: str = "2020-01-01T00:00:00", *,
           tz: str = "UTC", rolling: bool = False) -> tuple[str, str | None]:  # fmt: skip
    period = Period.parse(duration, timezone=tz, rolling=rolling)
    w = period.window_at(ts(at, tz), ts(anchor, tz))
    end = w.end_datetime(period.zone)
    return w.start_datetime(period.zone).isoformat(), end.isoformat() if end else None


@pytest.mark.parametrize(
    ("text", "described"),
    [("daily", "daily"), ("weekly", "weekly"), ("monthly", "monthly"), ("yearly", "yearly"),
     ("1d", "daily"), ("30d", "30d"), ("1mo", "monthly"), ("3mo", "3mo"), ("1h", "hourly"),
     ("30m", "30m"), ("2w", "2w"), ("1y", "yearly"), ("45s", "45s"), (" Daily ", "daily"),
     (None, None), ("lifetime", None)],
)  # fmt: skip
def test_parse(text: str | None, described: str | None) -> None:
    assert Period.parse(text).describe() == described


@pytest.mark.parametrize("bad", ["fortnightly", "0d", "-1d", "1 parsec", "d", "", 5])
def test_bad_durations_are_typed_value_errors(bad: object) -> None:
    if bad == "":
        assert Period.parse("").is_lifetime  # empty means lifetime, as None does
        return
    with pytest.raises(InvalidDurationError) as info:
        Period.parse(bad)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)


def test_bad_timezone() -> None:
    with pytest.raises(InvalidDurationError, match="timezone"):
        Period.parse("daily", timezone="Mars/Olympus_Mons")


def test_daily_calendar_windows() -> None:
    assert window("daily", "2026-03-15T23:59:59") == (
        "2026-03-15T00:00:00+00:00", "2026-03-16T00:00:00+00:00")  # fmt: skip
    assert window("daily", "2026-03-16T00:00:00")[0] == "2026-03-16T00:00:00+00:00"


def test_weeks_start_on_monday() -> None:
    # 2026-03-15 is a Sunday: its week began Monday 9 March.
    assert window("weekly", "2026-03-15T12:00:00") == (
        "2026-03-09T00:00:00+00:00", "2026-03-16T00:00:00+00:00")  # fmt: skip


def test_month_end_jan31_to_feb() -> None:
    assert window("monthly", "2026-01-31T23:59:59") == (
        "2026-01-01T00:00:00+00:00", "2026-02-01T00:00:00+00:00")  # fmt: skip
    assert window("monthly", "2026-02-01T00:00:00") == (
        "2026-02-01T00:00:00+00:00", "2026-03-01T00:00:00+00:00")  # fmt: skip


def test_rolling_month_from_jan31_clamps_to_month_end() -> None:
    anchor = "2024-01-31T14:37:00"
    assert window("1mo", "2024-02-29T14:36:59", anchor, rolling=True) == (
        "2024-01-31T14:37:00+00:00", "2024-02-29T14:37:00+00:00")  # fmt: skip
    # Leap day: the window starting Feb 29 runs to Mar 31 (from the anchor, not chained).
    assert window("1mo", "2024-03-01T00:00:00", anchor, rolling=True) == (
        "2024-02-29T14:37:00+00:00", "2024-03-31T14:37:00+00:00")  # fmt: skip
    assert window("1mo", "2025-02-28T15:00:00", anchor, rolling=True)[0] == (
        "2025-02-28T14:37:00+00:00"
    )


def test_leap_day_daily_and_yearly() -> None:
    assert window("daily", "2024-02-29T12:00:00") == (
        "2024-02-29T00:00:00+00:00", "2024-03-01T00:00:00+00:00")  # fmt: skip
    # A rolling yearly budget created on Feb 29 renews on Feb 28 in common years.
    assert window("yearly", "2025-03-01T00:00:00", "2024-02-29T00:00:00", rolling=True) == (
        "2025-02-28T00:00:00+00:00", "2026-02-28T00:00:00+00:00")  # fmt: skip


def test_year_end() -> None:
    assert window("yearly", "2026-12-31T23:59:59") == (
        "2026-01-01T00:00:00+00:00", "2027-01-01T00:00:00+00:00")  # fmt: skip
    assert window("daily", "2027-01-01T00:00:00")[0] == "2027-01-01T00:00:00+00:00"
    assert window("monthly", "2026-12-31T23:00:00", tz="Pacific/Kiritimati")[1] == (
        "2027-01-01T00:00:00+14:00"
    )


def test_dst_spring_forward_day_is_23_hours() -> None:
    period = Period.parse("daily", timezone="America/New_York")
    w = period.window_at(ts("2026-03-08T12:00:00", "America/New_York"), 0)
    assert w.end is not None and w.end - w.start == 23 * 3600
    assert w.start_datetime(period.zone).isoformat() == "2026-03-08T00:00:00-05:00"
    assert w.end_datetime(period.zone).isoformat() == "2026-03-09T00:00:00-04:00"  # type: ignore[union-attr]


def test_dst_fall_back_day_is_25_hours() -> None:
    period = Period.parse("daily", timezone="Europe/Paris")
    w = period.window_at(ts("2026-10-25T12:00:00", "Europe/Paris"), 0)
    assert w.end is not None and w.end - w.start == 25 * 3600


def test_dst_gap_at_midnight_starts_day_at_first_real_moment() -> None:
    # Havana springs forward at midnight: 2024-03-10 00:00 does not exist, 01:00 does.
    period = Period.parse("daily", timezone="America/Havana")
    w = period.window_at(datetime(2024, 3, 10, 12, tzinfo=UTC).timestamp(), 0)
    assert w.start_datetime(period.zone).isoformat() == "2024-03-10T01:00:00-04:00"
    previous = period.window_at(w.start - 1, 0)
    assert previous.end == w.start  # no moment belongs to no window


def test_hours_are_absolute_across_dst() -> None:
    period = Period.parse("1h", timezone="America/New_York")
    w = period.window_at(ts("2026-03-08T03:30:00", "America/New_York"), 0)
    assert w.end is not None and w.end - w.start == 3600


def test_multi_day_windows_count_from_anchor_day() -> None:
    assert window("30d", "2026-02-05T00:00:00", "2026-01-10T15:00:00") == (
        "2026-01-10T00:00:00+00:00", "2026-02-09T00:00:00+00:00")  # fmt: skip
    assert window("30d", "2026-02-09T00:00:00", "2026-01-10T15:00:00")[0] == (
        "2026-02-09T00:00:00+00:00"
    )


def test_rolling_daily_keeps_wall_clock_time_across_dst() -> None:
    assert window("daily", "2026-03-29T10:00:00", "2026-03-27T14:37:00",
                  tz="Europe/Paris", rolling=True) == (
        "2026-03-28T14:37:00+01:00", "2026-03-29T14:37:00+02:00")  # fmt: skip


def test_lifetime_has_one_window() -> None:
    period = Period.parse(None)
    assert period.window_at(0, 0) == period.window_at(4e9, 123)
    assert period.window_at(5, 0).end is None


def test_before_anchor_is_still_a_window() -> None:
    start, _ = window("daily", "2019-12-31T10:00:00", "2020-01-01T00:00:00")
    assert start == "2019-12-31T00:00:00+00:00"


def test_windows_tile_time_without_gaps() -> None:
    for duration in ["daily", "weekly", "monthly", "7d", "2mo", "6h"]:
        for tz in ["UTC", "Europe/Paris", "America/Havana", "Australia/Lord_Howe", "Asia/Kolkata"]:
            for rolling in (False, True):
                period = Period.parse(duration, timezone=tz, rolling=rolling)
                anchor = ts("2025-01-31T13:45:00")
                w = period.window_at(ts("2026-01-01T00:00:00"), anchor)
                for _ in range(30):
                    assert w.end is not None and w.end > w.start
                    nxt = period.window_at(w.end, anchor)
                    assert nxt.start == w.end, (duration, tz, rolling)
                    w = nxt
