"""Bad input is refused at every boundary with a typed error, and nothing is stored.

The cases of issue 13 ("What was found", items 1 and 6), on every store (memory, SQLite,
PostgreSQL, Redis and the HTTP store), and property-based tests (hypothesis) for money,
durations, names and ttl: whatever is thrown at a store is either kept exactly or refused
with an :class:`~llmbudget.errors.InvalidInputError`, never an untyped error, never a
value that breaks a later read.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmbudget.budgets import Budget
from llmbudget.clock import FrozenClock
from llmbudget.errors import (
    InvalidAmountError,
    InvalidDurationError,
    InvalidInputError,
    InvalidNameError,
    InvalidTimeError,
)
from llmbudget.ledger import Ledger
from llmbudget.manager import BudgetManager
from llmbudget.money import cost_to_units, from_units
from llmbudget.periods import Period
from llmbudget.stores.base import BudgetRecord, Line, Store
from llmbudget.validation import MAX_ID_BYTES, MAX_NAME_BYTES, MAX_TTL, MIN_TTL
from tests.storekit import ALL_FACTORIES

NOW = 1_773_576_000.0  # 2026-03-15 12:00 UTC
W = 1_773_532_800
EXP = NOW + 600.0
_names = itertools.count()


@pytest.fixture(params=sorted(ALL_FACTORIES))
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with ALL_FACTORIES[request.param](tmp_path) as opened:
        yield opened


def fresh(prefix: str = "s") -> str:
    """A scope no other example of a property test has used."""
    return f"{prefix}{next(_names)}"


PROPERTY = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# -- issue 13, found 1: poison durations and times are refused, not stored -----------------


@pytest.mark.parametrize("duration", ["9999y", "3000000d", "100000000000w", "1" * 5000 + "d"])
def test_a_period_whose_windows_cannot_be_computed_is_refused(
    any_store: Store, duration: str
) -> None:
    bm = BudgetManager("p", store=any_store, clock=FrozenClock(NOW))
    with pytest.raises(InvalidDurationError):
        bm.create_budget(1, "u", duration=duration)
    assert bm.get_users() == []
    assert any_store.list_budgets("") == []


def test_a_creation_time_outside_the_range_is_refused(any_store: Store) -> None:
    bm = BudgetManager("p", store=any_store, clock=FrozenClock(NOW))
    for created_at in (-1e11, 1e300, math.nan, math.inf):
        with pytest.raises(InvalidTimeError):
            bm.create_budget(1, "u", duration="daily", created_at=created_at)
    assert any_store.list_budgets("") == []


def test_store_refuses_a_record_it_could_not_read_back(any_store: Store) -> None:
    for record in (
        BudgetRecord("a", 1, "9999y"),
        BudgetRecord("a", 1, "daily", created_at=-1e11),
        BudgetRecord("a", 1, "daily", timezone="Mars/Olympus"),
        BudgetRecord("a", -1, "daily"),
        BudgetRecord("a", 1, "daily", rolling="yes"),  # type: ignore[arg-type]
    ):
        with pytest.raises(InvalidInputError):
            any_store.put_budget(record)
    assert any_store.list_budgets("") == []


def test_the_longest_accepted_periods_work_for_a_hundred_years() -> None:
    # 1000 years is absurd but computable; every window up to 3100 can be laid out.
    for duration in ("1000y", "12000mo", "50000w", "300000d", "1000000h"):
        budget = Budget.of("x", 1, duration, timezone="Pacific/Kiritimati", created_at=NOW)
        window = budget.window_at(NOW + 100 * 365.25 * 86_400)
        assert window.end is not None and window.end_datetime(budget.period.zone) is not None


# -- issue 13, found 6: loose inputs ------------------------------------------------------------


@pytest.mark.parametrize("ttl", [math.nan, math.inf, -1.0, 0, 1e-45, True, False, "5", MAX_TTL + 1])
def test_a_bad_ttl_is_refused_and_holds_nothing(any_store: Store, ttl: Any) -> None:
    ledger = Ledger(any_store, clock=FrozenClock(NOW))
    budget = Budget.of("user:ttl", 10, "daily")
    with pytest.raises(InvalidTimeError):
        ledger.reserve([budget], "1", ttl=ttl)
    assert ledger.status(budget).held == 0


@pytest.mark.parametrize(
    ("call", "args"),
    [
        ("reserve", ("h", [Line("a", W, 10)], 1, math.nan, NOW)),
        ("reserve", ("h", [Line("a", W, 10)], 1, EXP, math.nan)),
        ("reserve", ("h", [Line("a", W, 10)], 1, True, NOW)),
        ("reserve", ("h", [Line("a", W, 10)], 1, "1e9", NOW)),
        ("settle", ("h", 1, None, math.inf)),
        ("release", ("h", -1e11)),
        ("usage", ("a", W, math.nan)),
        ("purge", (NOW, math.nan)),
        ("append_log", ("k", math.nan, {})),
    ],
)
def test_a_bad_time_is_a_typed_error_on_every_store(
    any_store: Store, call: str, args: tuple[Any, ...]
) -> None:
    with pytest.raises(InvalidTimeError):
        getattr(any_store, call)(*args)
    assert any_store.usage("a", W, NOW).held == 0


@pytest.mark.parametrize(
    "hold_id", [5, None, b"h", "", "h\x00", "\ud800", "h" * (MAX_ID_BYTES + 1)]
)
def test_a_bad_hold_id_is_refused(any_store: Store, hold_id: Any) -> None:
    with pytest.raises(InvalidNameError):
        any_store.reserve(hold_id, [Line("a", W, 10)], 1, EXP, NOW)
    assert any_store.usage("a", W, NOW).held == 0


@pytest.mark.parametrize(
    "user", ["\ud800", "a\udfffb", "x" * 100_000, "\x00", "é" * (MAX_NAME_BYTES // 2 + 1)]
)
def test_a_bad_user_name_is_refused_the_same_way_on_every_store(
    any_store: Store, user: str
) -> None:
    bm = BudgetManager("p", store=any_store, clock=FrozenClock(NOW))
    with pytest.raises(InvalidNameError):
        bm.create_budget(1, user, duration="daily")
    assert any_store.list_budgets("") == []


@pytest.mark.parametrize(
    ("call", "args"),
    [
        ("charge", ([Line("a" * (MAX_NAME_BYTES + 1), W)], 1, None, NOW)),
        ("charge", ([Line("a", W)], 1, "m" * (MAX_NAME_BYTES + 1), NOW)),
        ("charge", ([Line("a", W)], 1, 5, NOW)),
        ("charge", ([Line(5, W)], 1, None, NOW)),  # type: ignore[arg-type]
        ("usage", ("\ud800", W, NOW)),
        ("get_budgets", (["ok", "\ud800"],)),
        ("get_budgets", ("abc",)),
        ("list_budgets", ("\x00",)),
        ("put_doc", ("kind", "\ud800", {})),
        ("put_doc", ("\x00", "k", {})),
        ("put_doc", ("kind", "k", {"x": math.nan})),
        ("put_doc", ("kind", "k", {"x": "\ud800"})),
        ("put_doc", ("kind", "k", {1: "not a string key"})),
        ("put_doc", ("kind", "k", {"x": object()})),
        ("append_log", ("kind", NOW, {"x": math.inf})),
    ],
)
def test_bad_names_and_documents_are_refused_and_store_nothing(
    any_store: Store, call: str, args: tuple[Any, ...]
) -> None:
    with pytest.raises(InvalidInputError):
        getattr(any_store, call)(*args)
    assert any_store.usage("a", W, NOW).spent == 0
    assert any_store.list_docs("kind") == []
    assert any_store.read_log("kind") == []


@pytest.mark.parametrize("amount", [-1, True, 1.0, "1", 2**63, None, Decimal(1)])
def test_bad_store_amounts_are_typed_errors(any_store: Store, amount: Any) -> None:
    with pytest.raises(InvalidAmountError):
        any_store.charge([Line("a", W)], amount, None, NOW)
    with pytest.raises(InvalidAmountError):
        any_store.reserve("h", [Line("a", W)], amount, EXP, NOW)
    assert any_store.usage("a", W, NOW).spent == 0


def test_a_window_key_must_be_a_64_bit_integer(any_store: Store) -> None:
    for window in (2**63, -(2**63) - 1, 1.5, True, "1"):
        with pytest.raises(InvalidInputError):
            any_store.charge([Line("a", window)], 1, None, NOW)  # type: ignore[arg-type]
    assert any_store.history("a") == []


def test_names_at_the_limit_are_kept_on_every_store(any_store: Store) -> None:
    # One limit on every store: the longest accepted scope, model and ids round-trip
    # (4-byte characters, so it is bytes that count, not characters).
    scope = "\U0001f600" * (MAX_NAME_BYTES // 4)
    model = "m" * MAX_NAME_BYTES
    hold_id = "\U0001f600" * (MAX_ID_BYTES // 4)
    assert any_store.reserve(hold_id, [Line(scope, W, 100)], 10, EXP, NOW) is None
    any_store.settle(hold_id, 7, model, NOW)
    usage = any_store.usage(scope, W, NOW)
    assert (usage.spent, dict(usage.by_model)) == (7, {model: 7})
    any_store.put_budget(BudgetRecord(scope, 1, "daily"))
    assert [r.scope for r in any_store.list_budgets("")] == [scope]


# -- properties, on every store ------------------------------------------------------------


@PROPERTY
@given(
    amount=st.one_of(
        st.decimals(allow_nan=True, allow_infinity=True),
        st.floats(),
        st.integers(min_value=-(10**12), max_value=10**12),
        st.text(max_size=12),
        st.booleans(),
    )
)
def test_money_is_recorded_exactly_or_refused(any_store: Store, amount: Any) -> None:
    ledger = Ledger(any_store, clock=FrozenClock(NOW))
    budget = Budget.of(fresh(), None, "daily")
    try:
        expected = cost_to_units(amount)
    except InvalidAmountError:
        with pytest.raises(InvalidAmountError):
            ledger.charge([budget], amount)
        assert ledger.status(budget).spent == 0
        return
    assert ledger.charge([budget], amount) == from_units(expected)
    assert ledger.status(budget).spent == from_units(expected)


_UNITS = st.sampled_from(["s", "m", "h", "d", "w", "mo", "y", "x", ""])


@PROPERTY
@given(
    count=st.integers(min_value=0, max_value=10**13),
    unit=_UNITS,
    rolling=st.booleans(),
    zone=st.sampled_from(["UTC", "Europe/Paris", "Pacific/Kiritimati", "America/St_Johns"]),
    created_at=st.floats(min_value=-3e9, max_value=4e10),
)
def test_durations_either_work_on_every_read_or_are_refused(
    any_store: Store, count: int, unit: str, rolling: bool, zone: str, created_at: float
) -> None:
    bm = BudgetManager("p", store=any_store, clock=FrozenClock(NOW))
    user = fresh("u")
    try:
        bm.create_budget(
            1, user, duration=f"{count}{unit}", created_at=created_at, timezone=zone,
            rolling=rolling,
        )  # fmt: skip
    except (InvalidDurationError, InvalidTimeError):
        assert not bm.is_valid_user(user)
        return
    # Accepted: every read and the reserve path work, now and in 100 years.
    budget = bm.get_budget(user)
    bm.ledger.charge([budget], "0.01", model="m")
    assert bm.get_current_cost(user) == Decimal("0.01")
    assert user in bm.get_users()
    for at in (NOW, NOW + 100 * 365.25 * 86_400):
        window = budget.window_at(at)
        window.start_datetime(budget.period.zone)
        window.end_datetime(budget.period.zone)
    bm.settle(bm.reserve(user, "0.01"), "0.01")


@PROPERTY
@given(name=st.text(min_size=0, max_size=200))
def test_names_round_trip_exactly_or_are_refused(any_store: Store, name: str) -> None:
    scope = fresh() + name
    try:
        any_store.charge([Line(scope, W)], 3, name or None, NOW)
    except InvalidNameError:
        assert any_store.usage(fresh(), W, NOW).spent == 0
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            return
        assert "\x00" in name
        return
    usage = any_store.usage(scope, W, NOW)
    assert usage.spent == 3
    assert dict(usage.by_model) == ({name: 3} if name else {})


@PROPERTY
@given(
    ttl=st.one_of(
        st.floats(),
        st.integers(min_value=-10, max_value=10**9),
        st.booleans(),
        st.text(max_size=5),
        st.none(),
    )
)
def test_ttl_is_positive_finite_seconds_or_refused(any_store: Store, ttl: Any) -> None:
    ledger = Ledger(any_store, clock=FrozenClock(NOW), hold_ttl=60)
    budget = Budget.of(fresh(), 10, "daily")
    valid = ttl is None or (
        not isinstance(ttl, bool | str) and math.isfinite(ttl) and MIN_TTL <= ttl <= MAX_TTL
    )
    if not valid:
        with pytest.raises(InvalidTimeError):
            ledger.reserve([budget], "1", ttl=ttl)
        assert ledger.status(budget).held == 0
        return
    hold = ledger.reserve([budget], "1", ttl=ttl)
    assert hold.expires_at == NOW + (60 if ttl is None else float(ttl))
    assert ledger.status(budget).held == 1


def test_period_parse_refuses_a_non_boolean_rolling() -> None:
    with pytest.raises(InvalidDurationError):
        Period.parse("daily", rolling="yes")  # type: ignore[arg-type]
