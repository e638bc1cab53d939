"""Ledger behaviour through the public API, on every store (via the ``store`` fixture)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from llmbudget.budgets import Budget
from llmbudget.clock import FrozenClock
from llmbudget.errors import (
    BudgetExceededError,
    InvalidAmountError,
    InvalidInputError,
    UnknownHoldError,
)
from llmbudget.ledger import AsyncLedger, Ledger
from llmbudget.stores.base import Store


@pytest.fixture
def ledger(store: Store, clock: FrozenClock) -> Ledger:
    return Ledger(store, clock=clock, hold_ttl=60)


def test_reserve_settle_release_cycle(ledger: Ledger) -> None:
    user = Budget.of("user:a", "1.00", "daily")
    hold = ledger.reserve([user], "0.40")
    assert ledger.status(user).held == Decimal("0.4")
    assert ledger.settle(hold, "0.25", model="gpt-4o") == Decimal("0.25")
    status = ledger.status(user)
    assert (status.spent, status.held, status.remaining) == (
        Decimal("0.25"), Decimal(0), Decimal("0.75"))  # fmt: skip
    assert status.by_model == {"gpt-4o": Decimal("0.25")}
    failed = ledger.reserve([user], "0.75")
    assert ledger.release(failed) is True
    assert ledger.release(failed) is False
    assert ledger.status(user).remaining == Decimal("0.75")


def test_refusal_carries_scope_limit_spent_held_and_reset(ledger: Ledger) -> None:
    user = Budget.of("user:b", "1", "daily")
    ledger.charge([user], "0.70")
    ledger.reserve([user], "0.20")
    with pytest.raises(BudgetExceededError) as info:
        ledger.reserve([user], "0.11")
    err = info.value
    assert (err.scope, err.limit, err.spent, err.held, err.requested) == (
        "user:b", Decimal(1), Decimal("0.7"), Decimal("0.2"), Decimal("0.11"))  # fmt: skip
    assert err.resets_at is not None and err.resets_at.isoformat() == "2026-03-16T00:00:00+00:00"
    assert err.remaining == Decimal("0.1")
    assert err.to_dict()["limit"] == "1"
    # Exactly the remainder still fits.
    ledger.reserve([user], "0.10")


def test_multi_scope_reserve_is_all_or_none(ledger: Ledger) -> None:
    user = Budget.of("user:c", "10")
    team = Budget.of("team:t", "1")
    everyone = Budget.of("global", None)  # tracked, unlimited
    ledger.charge([team], "0.95")
    with pytest.raises(BudgetExceededError) as info:
        ledger.reserve([user, team, everyone], "0.10")
    assert info.value.scope == "team:t"
    assert ledger.status(user).held == 0 and ledger.status(everyone).held == 0
    hold = ledger.reserve([user, team, everyone], "0.05")
    ledger.settle(hold, "0.05")
    assert [ledger.status(b).spent for b in (user, team, everyone)] == [
        Decimal("0.05"), Decimal(1), Decimal("0.05")]  # fmt: skip


def test_settle_is_idempotent_and_may_exceed_the_hold(ledger: Ledger) -> None:
    user = Budget.of("user:d", "1")
    hold = ledger.reserve([user], "0.10")
    assert ledger.settle(hold, "0.30") == Decimal("0.3")  # real cost above the estimate
    assert ledger.settle(hold, "0.99") == Decimal("0.3")  # replay: first result, no charge
    assert ledger.status(user).spent == Decimal("0.3")


def test_settle_after_release_still_records_the_spend(ledger: Ledger) -> None:
    user = Budget.of("user:e", "1")
    hold = ledger.reserve([user], "0.10")
    ledger.release(hold)
    ledger.settle(hold, "0.05")
    assert ledger.status(user).spent == Decimal("0.05")


def test_expired_holds_stop_counting_but_late_settles_land(
    ledger: Ledger, clock: FrozenClock
) -> None:
    user = Budget.of("user:f", "1")
    hold = ledger.reserve([user], "1.00", ttl=30)
    with pytest.raises(BudgetExceededError):
        ledger.reserve([user], "0.01")
    clock.advance(30)
    assert ledger.status(user).held == 0
    ledger.reserve([user], "0.50")
    ledger.settle(hold, "0.20")  # the crashed-looking call did finish: spend is recorded
    assert ledger.status(user).spent == Decimal("0.2")


def test_purge_forgets_holds_after_retention(store: Store, clock: FrozenClock) -> None:
    ledger = Ledger(store, clock=clock, hold_ttl=10, retention=100)
    user = Budget.of("user:g", "1")
    hold = ledger.reserve([user], "0.1")
    clock.advance(50)
    assert ledger.purge() == 0
    clock.advance(100)
    assert ledger.purge() == 1
    with pytest.raises(UnknownHoldError):
        ledger.settle(hold, "0.1")


def test_unknown_hold(ledger: Ledger) -> None:
    with pytest.raises(UnknownHoldError) as info:
        ledger.settle("nope", "0.1")
    assert isinstance(info.value, KeyError)
    with pytest.raises(UnknownHoldError):
        ledger.release("nope")


def test_reserve_with_same_hold_id_is_an_idempotent_retry(ledger: Ledger) -> None:
    user = Budget.of("user:h", "1")
    ledger.reserve([user], "0.6", hold_id="req-1")
    ledger.reserve([user], "0.6", hold_id="req-1")  # a retry, not a second 0.6
    assert ledger.status(user).held == Decimal("0.6")


def test_bad_input_changes_nothing(ledger: Ledger) -> None:
    user = Budget.of("user:i", "1")
    for bad in ("-1", float("nan"), "abc", True):
        with pytest.raises(InvalidAmountError):
            ledger.reserve([user], bad)
        with pytest.raises(InvalidAmountError):
            ledger.charge([user], bad)
    with pytest.raises(InvalidInputError):
        ledger.reserve([], "0.1")
    with pytest.raises(InvalidInputError):
        ledger.reserve([user, user], "0.1")
    with pytest.raises(InvalidInputError):
        ledger.reserve([user], "0.1", ttl=0)
    status = ledger.status(user)
    assert (status.spent, status.held) == (0, 0)


def test_new_window_starts_at_zero_exactly_at_the_boundary(
    ledger: Ledger, clock: FrozenClock
) -> None:
    user = Budget.of("user:j", "1", "daily", created_at=clock())
    ledger.charge([user], "1")
    clock.set(1_773_619_199.0)  # 2026-03-15 23:59:59 UTC
    assert ledger.status(user).spent == 1
    with pytest.raises(BudgetExceededError):
        ledger.reserve([user], "0.000000001")
    clock.advance(1)  # midnight
    assert ledger.status(user).spent == 0
    ledger.reserve([user], "1")
    history = ledger.history(user)
    assert [str(day.date()) for day, _ in history] == ["2026-03-15"]


def test_reset_zeroes_only_the_current_window(ledger: Ledger, clock: FrozenClock) -> None:
    user = Budget.of("user:k", "5", "daily")
    ledger.charge([user], "1", model="m")
    clock.advance(86_400)
    ledger.charge([user], "2", model="m")
    ledger.reset(user)
    assert ledger.status(user).spent == 0 and ledger.status(user).by_model == {}
    assert [s for _, s in ledger.history(user)] == [Decimal(1)]


def test_hold_context_manager(ledger: Ledger) -> None:
    user = Budget.of("user:l", "1")
    with ledger.hold([user], "0.5") as h:
        h.settle("0.2", model="x")
    with pytest.raises(RuntimeError), ledger.hold([user], "0.5"):
        raise RuntimeError("provider down")
    with ledger.hold([user], "0.3"):
        pass  # no settle: charged the full hold, never under-recorded
    status = ledger.status(user)
    assert (status.spent, status.held) == (Decimal("0.5"), 0)


def test_budget_definitions(ledger: Ledger) -> None:
    a = Budget.of("user:p:1", "3", "weekly", timezone="Asia/Tokyo", rolling=True, created_at=5)
    ledger.define(a)
    ledger.define(Budget.of("user:p:2", "4"))
    ledger.define(Budget.of("user:q:1", "5"))
    assert ledger.get(["user:p:1", "missing"]) == [a, None]
    assert [b.scope for b in ledger.budgets("user:p:")] == ["user:p:1", "user:p:2"]
    assert ledger.delete("user:p:2") is True
    assert ledger.delete("user:p:2") is False


async def test_async_ledger_runs_the_same_plans(store: Store, clock: FrozenClock) -> None:
    ledger = AsyncLedger(store, clock=clock)
    user = Budget.of("user:async", "1")
    hold = await ledger.reserve([user], "0.6")
    with pytest.raises(BudgetExceededError):
        await ledger.reserve([user], "0.5")
    await ledger.settle(hold, "0.1", model="m")
    status = await ledger.status(user)
    assert (status.spent, status.held) == (Decimal("0.1"), 0)


def test_changing_the_period_carries_overlapping_spend(ledger: Ledger, clock: FrozenClock) -> None:
    daily = Budget.of("user:carry", "20", "daily")
    ledger.define(daily)
    clock.advance(-86_400)  # March 14
    ledger.charge([daily], "5")
    clock.advance(86_400)  # March 15
    ledger.charge([daily], "18")
    ledger.charge([Budget.of("user:carry", "20", "daily")], "0")  # no-op charge, same window
    monthly = Budget.of("user:carry", "20", "monthly")
    ledger.define(monthly)
    # Both days are in March: the monthly window starts with all of it, not with $0.
    assert ledger.status(monthly).spent == Decimal(23)
    with pytest.raises(BudgetExceededError):
        ledger.reserve([monthly], "0.01")
    # Redefining with the same layout carries nothing again.
    ledger.define(Budget.of("user:carry", "30", "monthly"))
    assert ledger.status(monthly).spent == Decimal(23)


def test_changing_the_timezone_keeps_todays_spend(ledger: Ledger) -> None:
    utc = Budget.of("user:tz", "10", "daily")
    ledger.define(utc)
    ledger.charge([utc], "9")
    tokyo = Budget.of("user:tz", "10", "daily", timezone="Asia/Tokyo")
    ledger.define(tokyo)
    # 12:00 UTC is 21:00 in Tokyo: today's UTC window overlaps Tokyo's current day.
    assert ledger.status(tokyo).spent == Decimal(9)
