"""One conformance suite for every store: memory, SQLite, PostgreSQL and Redis.

Each test runs once per backend through the ``store`` fixture (``tests/storekit.py``).
The first part drives the raw :class:`~llmbudget.stores.base.Store` operations with
explicit ``now`` values, the second the same semantics through :class:`Ledger` with a
:class:`FrozenClock`, the third a few :class:`BudgetManager` calls. The semantics are the
ones ``stores/base.py`` states; the last section checks backend-specific guarantees the
semantics rest on (one Redis Cluster slot, migrations, URL handling, error translation).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from llmbudget.budgets import Budget
from llmbudget.clock import FrozenClock
from llmbudget.errors import (
    BudgetExceededError,
    CounterOverflowError,
    InvalidInputError,
    StoreError,
    StoreUnavailableError,
    UnknownHoldError,
)
from llmbudget.ledger import Ledger
from llmbudget.manager import BudgetManager
from llmbudget.stores import open_store
from llmbudget.stores.base import BudgetRecord, Line, Refusal, SettleResult, Store
from tests import storekit

NOW = 1_773_576_000.0  # 2026-03-15 12:00 UTC
W = 1_773_532_800  # that day's window key
W2 = 1_772_323_200  # that month's window key
EXP = NOW + 600.0


def line(scope: str, limit: int | None = None, window: int = W) -> Line:
    return Line(scope, window, limit)


def held(store: Store, scope: str, now: float = NOW, window: int = W) -> int:
    return store.usage(scope, window, now).held


def spent(store: Store, scope: str, now: float = NOW, window: int = W) -> int:
    return store.usage(scope, window, now).spent


# -- reserve -----------------------------------------------------------------------------


def test_reserve_holds_and_usage_reports_it(store: Store) -> None:
    assert store.reserve("h1", [line("a", 100)], 30, EXP, NOW) is None
    usage = store.usage("a", W, NOW)
    assert (usage.spent, usage.held, dict(usage.by_model)) == (0, 30, {})
    assert store.usage("a", W + 1, NOW).held == 0  # another window
    assert store.usage("b", W, NOW).held == 0  # another scope


def test_reserve_fills_the_limit_exactly_then_refuses_one_more_unit(store: Store) -> None:
    assert store.reserve("h1", [line("a", 100)], 60, EXP, NOW) is None
    assert store.reserve("h2", [line("a", 100)], 40, EXP, NOW) is None
    assert store.reserve("h3", [line("a", 100)], 1, EXP, NOW) == Refusal(0, 0, 100)
    store.settle("h1", 60, None, NOW)
    assert store.reserve("h3", [line("a", 100)], 1, EXP, NOW) == Refusal(0, 60, 40)
    # A zero reserve still fits a full budget (0 more than the limit is not over it).
    assert store.reserve("h4", [line("a", 100)], 0, EXP, NOW) is None


def test_refused_reserve_leaves_nothing_behind(store: Store) -> None:
    assert store.reserve("big", [line("a", 100)], 101, EXP, NOW) == Refusal(0, 0, 0)
    assert held(store, "a") == 0
    with pytest.raises(UnknownHoldError):
        store.settle("big", 1, None, NOW)
    # The id is free: a later reserve under it is a fresh one.
    assert store.reserve("big", [line("a", 100)], 100, EXP, NOW) is None
    assert held(store, "a") == 100


def test_multi_scope_reserve_is_all_or_nothing_and_names_the_first_failing_line(
    store: Store,
) -> None:
    store.charge([line("team")], 90, None, NOW)
    lines = [line("user", 100), line("team", 100), line("org", 1000)]
    assert store.reserve("h", lines, 20, EXP, NOW) == Refusal(1, 90, 0)
    assert [held(store, s) for s in ("user", "team", "org")] == [0, 0, 0]

    store.charge([line("user")], 95, None, NOW)
    # Both user and team would go over: the first in the given order is named.
    assert store.reserve("h", lines, 20, EXP, NOW) == Refusal(0, 95, 0)
    assert store.reserve("h", lines[::-1], 20, EXP, NOW) == Refusal(1, 90, 0)

    assert store.reserve("h", lines, 5, EXP, NOW) is None
    assert [held(store, s) for s in ("user", "team", "org")] == [5, 5, 5]


def test_refusal_reports_spent_and_active_holds_of_the_failing_line(store: Store) -> None:
    store.charge([line("a")], 10, None, NOW)
    store.reserve("expired", [line("a", 100)], 50, NOW + 1, NOW)
    store.reserve("active", [line("a", 100)], 30, NOW + 100, NOW)
    later = NOW + 1  # "expired" no longer counts
    assert store.reserve("h", [line("b", 1000), line("a", 100)], 61, EXP, later) == Refusal(
        1, 10, 30
    )
    assert store.reserve("h", [line("b", 1000), line("a", 100)], 60, EXP, later) is None


def test_unlimited_line_never_refuses_but_counts_holds(store: Store) -> None:
    big = 10**15
    assert store.reserve("h1", [line("free")], big, EXP, NOW) is None
    assert store.reserve("h2", [line("free"), line("capped", 10)], 10, EXP, NOW) is None
    assert held(store, "free") == big + 10
    assert store.reserve("h3", [line("free"), line("capped", 10)], 1, EXP, NOW) == Refusal(1, 0, 10)


def test_windows_are_independent(store: Store) -> None:
    store.charge([line("a", window=W)], 100, "m", NOW)
    assert store.reserve("h", [line("a", 100, window=W + 86_400)], 100, EXP, NOW) is None
    assert store.usage("a", W + 86_400, NOW).spent == 0
    assert store.usage("a", W, NOW).held == 0


# -- expiry ------------------------------------------------------------------------------


def test_hold_stops_counting_exactly_at_expires_at(store: Store) -> None:
    expires = NOW + 10.125
    store.reserve("h1", [line("a", 100)], 70, expires, NOW)
    just_before = expires - 0.001
    assert held(store, "a", just_before) == 70
    assert store.reserve("h2", [line("a", 100)], 40, NOW + 100, just_before) == Refusal(0, 0, 70)
    assert held(store, "a", expires) == 0
    assert store.reserve("h2", [line("a", 100)], 40, NOW + 100, expires) is None
    assert held(store, "a", expires) == 40


def test_expired_hold_still_settles_and_records_spend(store: Store) -> None:
    store.reserve("h", [line("a", 100), line("t", 1000, window=W2)], 50, NOW + 10, NOW)
    late = NOW + 3600
    assert store.settle("h", 45, "m", late) == SettleResult(45, already=False)
    assert spent(store, "a", late) == 45
    assert store.usage("t", W2, late).by_model == {"m": 45}
    assert held(store, "a", NOW) == 0  # ended: no longer counts even at an earlier time


def test_expired_hold_can_still_be_released_once(store: Store) -> None:
    store.reserve("h", [line("a", 100)], 50, NOW + 10, NOW)
    assert store.release("h", NOW + 20) is True
    assert store.release("h", NOW + 20) is False


# -- idempotency -------------------------------------------------------------------------


def test_reserve_again_with_the_same_id_changes_nothing(store: Store) -> None:
    lines = [line("a", 100), line("b", 1000, W2)]
    assert store.reserve("h", lines, 60, EXP, NOW) is None
    # Would not fit if it counted twice: it succeeds and holds nothing more.
    assert store.reserve("h", lines, 60, EXP, NOW) is None
    # Lines in another order (and other limits) are the same reservation.
    assert store.reserve("h", [line("b", None, W2), line("a", 60)], 60, EXP, NOW) is None
    assert (held(store, "a"), held(store, "b", window=W2)) == (60, 60)
    # Expiry does not matter: an expired hold that was never ended still replays.
    later = EXP + 1
    assert store.reserve("h", lines, 60, EXP, later) is None
    assert held(store, "a", later) == 0
    assert store.settle("h", 60, None, NOW) == SettleResult(60, already=False)
    assert (spent(store, "a"), spent(store, "b", window=W2)) == (60, 60)


def test_reserve_reusing_a_settled_hold_id_is_refused_and_changes_nothing(
    store: Store,
) -> None:
    assert store.reserve("req-1", [line("a", 100)], 90, EXP, NOW) is None
    store.settle("req-1", 90, "m", NOW)
    with pytest.raises(InvalidInputError, match="req-1"):
        store.reserve("req-1", [line("a", 100)], 90, EXP, NOW)
    usage = store.usage("a", W, NOW)
    assert (usage.spent, usage.held, dict(usage.by_model)) == (90, 0, {"m": 90})
    # The first settle still stands, and a fresh id is still judged against the limit.
    assert store.settle("req-1", 90, None, NOW) == SettleResult(90, already=True)
    assert store.reserve("req-2", [line("a", 100)], 90, EXP, NOW) == Refusal(0, 90, 0)


def test_reserve_reusing_a_released_hold_id_is_refused(store: Store) -> None:
    assert store.reserve("h", [line("a", 100)], 50, EXP, NOW) is None
    assert store.release("h", NOW) is True
    with pytest.raises(InvalidInputError):
        store.reserve("h", [line("a", 100)], 50, EXP, NOW)
    assert (spent(store, "a"), held(store, "a")) == (0, 0)
    assert store.release("h", NOW) is False


def test_reserve_reusing_a_hold_id_with_another_amount_is_refused(store: Store) -> None:
    assert store.reserve("h", [line("a", 100)], 50, EXP, NOW) is None
    for amount in (40, 51, 0):
        with pytest.raises(InvalidInputError):
            store.reserve("h", [line("a", 100)], amount, EXP, NOW)
    assert held(store, "a") == 50
    assert store.settle("h", 50, None, NOW).already is False


def test_reserve_reusing_a_hold_id_with_other_lines_is_refused(store: Store) -> None:
    assert store.reserve("h", [line("a", 100), line("b", 100)], 50, EXP, NOW) is None
    for lines in (
        [line("a", 100)],  # fewer
        [line("a", 100), line("b", 100), line("c", 100)],  # more
        [line("a", 100), line("c", 100)],  # another scope
        [line("a", 100), line("b", 100, W2)],  # another window
    ):
        with pytest.raises(InvalidInputError):
            store.reserve("h", lines, 50, EXP, NOW)
    assert [held(store, s) for s in "ab"] == [50, 50]
    assert held(store, "c") == 0 and held(store, "b", window=W2) == 0
    store.settle("h", 10, None, NOW)
    assert [spent(store, s) for s in "abc"] == [10, 10, 0]


def test_settle_is_idempotent_and_replays_the_first_result(store: Store) -> None:
    store.reserve("h", [line("a", 100)], 50, EXP, NOW)
    assert store.settle("h", 40, "m", NOW) == SettleResult(40, already=False)
    assert store.settle("h", 99, "other", NOW) == SettleResult(40, already=True)
    usage = store.usage("a", W, NOW)
    assert (usage.spent, usage.held, dict(usage.by_model)) == (40, 0, {"m": 40})


# -- settle and release ------------------------------------------------------------------


def test_settle_above_the_hold_records_the_real_cost(store: Store) -> None:
    store.reserve("h", [line("a", 100)], 50, EXP, NOW)
    assert store.settle("h", 130, "m", NOW).actual == 130
    assert (spent(store, "a"), held(store, "a")) == (130, 0)
    assert store.reserve("h2", [line("a", 100)], 0, EXP, NOW) == Refusal(0, 130, 0)


def test_settle_below_the_hold_frees_the_rest(store: Store) -> None:
    store.reserve("h", [line("a", 100)], 100, EXP, NOW)
    store.settle("h", 30, None, NOW)
    assert (spent(store, "a"), held(store, "a")) == (30, 0)
    assert store.reserve("h2", [line("a", 100)], 70, EXP, NOW) is None


def test_settle_records_on_every_line_in_the_windows_it_reserved(store: Store) -> None:
    lines = [line("user", 100, W), line("team", 1000, W2), line("all")]
    store.reserve("h", lines, 50, EXP, NOW)
    next_day = NOW + 86_400  # settle arrives in another window: spend goes where it was held
    store.settle("h", 42, "gpt", next_day)
    assert store.usage("user", W, next_day).spent == 42
    assert store.usage("team", W2, next_day).spent == 42
    assert store.usage("all", W, next_day).by_model == {"gpt": 42}
    assert store.usage("user", W + 86_400, next_day).spent == 0


def test_release_ends_the_hold_without_spend(store: Store) -> None:
    store.reserve("h", [line("a", 100), line("b", 100)], 80, EXP, NOW)
    assert store.release("h", NOW) is True
    assert [held(store, s) for s in "ab"] == [0, 0]
    assert [spent(store, s) for s in "ab"] == [0, 0]
    assert store.release("h", NOW) is False
    assert store.reserve("h2", [line("a", 100)], 100, EXP, NOW) is None


def test_settle_after_release_still_records(store: Store) -> None:
    store.reserve("h", [line("a", 100)], 80, EXP, NOW)
    store.release("h", NOW)
    assert store.settle("h", 25, "m", NOW) == SettleResult(25, already=False)
    assert (spent(store, "a"), held(store, "a")) == (25, 0)
    assert store.release("h", NOW) is False


def test_release_after_settle_is_false_and_changes_nothing(store: Store) -> None:
    store.reserve("h", [line("a", 100)], 80, EXP, NOW)
    store.settle("h", 25, None, NOW)
    assert store.release("h", NOW) is False
    assert spent(store, "a") == 25


def test_unknown_hold(store: Store) -> None:
    with pytest.raises(UnknownHoldError) as settle_error:
        store.settle("nope", 1, None, NOW)
    assert settle_error.value.hold_id == "nope"
    with pytest.raises(UnknownHoldError):
        store.release("nope", NOW)
    with pytest.raises(KeyError):  # UnknownHoldError is a KeyError too
        store.settle("nope", 1, None, NOW)


# -- settle with its log entry, atomically -------------------------------------------------


@pytest.fixture(params=sorted(storekit.ALL_FACTORIES))
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """Every store, the HTTP store (a budget server in front of SQLite) included."""
    with storekit.ALL_FACTORIES[request.param](tmp_path) as opened:
        yield opened


ENTRY = ("spend", NOW, {"id": "req_1", "cost": "0.2", "nested": {"ok": True}})


def test_a_settle_appends_its_log_entry_exactly_once(any_store: Store) -> None:
    any_store.reserve("h1", [line("a", 100)], 50, EXP, NOW)
    assert any_store.settle("h1", 20, "m", NOW, None, ENTRY) == SettleResult(20, already=False)
    # A retry (the answer was lost) is told it was settled, and appends nothing again.
    assert any_store.settle("h1", 20, "m", NOW, None, ENTRY) == SettleResult(20, already=True)
    entries = any_store.read_log("spend", 0, NOW + 1, 10)
    assert [(e.at, e.data) for e in entries] == [(NOW, ENTRY[2])]
    assert (spent(any_store, "a"), held(any_store, "a")) == (20, 0)


def test_a_settle_that_fails_appends_nothing(any_store: Store) -> None:
    with pytest.raises(UnknownHoldError):
        any_store.settle("nope", 1, None, NOW, None, ENTRY)
    any_store.charge([line("b")], MAX - 5, None, NOW)
    any_store.reserve("h2", [line("b")], 1, EXP, NOW)
    with pytest.raises(CounterOverflowError):
        any_store.settle("h2", 10, None, NOW, None, ENTRY)  # past int64: nothing changes
    assert any_store.read_log("spend", 0, NOW + 1, 10) == []
    assert held(any_store, "b") == 1


def test_a_bad_log_entry_is_refused_before_the_settle(any_store: Store) -> None:
    any_store.reserve("h3", [line("c", 100)], 5, EXP, NOW)
    for bad in (("spend", NOW), ("", NOW, {}), ("spend", float("nan"), {}), ("spend", NOW, [])):
        with pytest.raises(InvalidInputError):
            any_store.settle("h3", 5, None, NOW, None, bad)  # type: ignore[arg-type]
    assert (spent(any_store, "c"), held(any_store, "c")) == (0, 5)  # still held, unsettled
    assert any_store.read_log("spend", 0, NOW + 1, 10) == []


# -- lines with amounts of their own (rate limits beside dollars) ---------------------------------


def own(scope: str, limit: int | None, amount: int, window: int = W) -> Line:
    """A line holding ``amount`` of its own (a count: requests, tokens, slots)."""
    return Line(scope, window, limit, amount)


def test_each_line_reserves_its_own_amount(store: Store) -> None:
    lines = [line("usd", 100), own("rpm", 10, 1), own("tpm", 1000, 300)]
    assert store.reserve("h", lines, 40, EXP, NOW) is None
    assert [held(store, s) for s in ("usd", "rpm", "tpm")] == [40, 1, 300]
    assert store.reserve("h2", [own("tpm", 1000, 700)], 0, EXP, NOW) is None
    assert store.reserve("h3", [own("tpm", 1000, 1)], 0, EXP, NOW) == Refusal(0, 0, 1000)


def test_a_line_past_its_own_limit_refuses_every_line(store: Store) -> None:
    for i in range(10):
        assert store.reserve(f"r{i}", [line("usd", 1000), own("rpm", 10, 1)], 5, EXP, NOW) is None
    lines = [line("usd", 1000), own("rpm", 10, 1), own("tpm", 100, 1)]
    assert store.reserve("r10", lines, 5, EXP, NOW) == Refusal(1, 0, 10)
    assert [held(store, s) for s in ("usd", "rpm", "tpm")] == [50, 10, 0]
    # A zero-count line fits a full limit, as a zero amount does.
    assert store.reserve("r11", [line("usd", 1000), own("rpm", 10, 0)], 5, EXP, NOW) is None


def test_settle_records_each_scope_s_actual(store: Store) -> None:
    lines = [line("usd", 100), own("rpm", 10, 1), own("tpm", 1000, 300), own("slots", 3, 1)]
    store.reserve("h", lines, 40, EXP, NOW)
    result = store.settle("h", 25, "m", NOW, {"rpm": 1, "tpm": 120, "slots": 0, "other": 9})
    assert result == SettleResult(25, already=False)
    usages = {s: store.usage(s, W, NOW) for s in ("usd", "rpm", "tpm", "slots", "other")}
    assert {s: (u.spent, u.held) for s, u in usages.items()} == {
        "usd": (25, 0), "rpm": (1, 0), "tpm": (120, 0), "slots": (0, 0), "other": (0, 0),
    }  # fmt: skip
    assert usages["tpm"].by_model == {"m": 120}
    # A replay records nothing and answers the first result.
    assert store.settle("h", 99, "m", NOW, {"tpm": 999}) == SettleResult(25, already=True)
    assert spent(store, "tpm") == 120
    assert store.history("tpm") == [(W, 120)]


def test_settle_without_actuals_records_actual_on_every_line(store: Store) -> None:
    store.reserve("h", [line("a", 100), own("b", 10, 3)], 40, EXP, NOW)
    store.settle("h", 7, None, NOW)
    assert (spent(store, "a"), spent(store, "b"), held(store, "b")) == (7, 7, 0)


def test_a_slot_settled_at_zero_is_free_again(store: Store) -> None:
    for i in range(3):
        store.reserve(f"s{i}", [own("slots", 3, 1)], 0, EXP, NOW)
    assert store.reserve("s3", [own("slots", 3, 1)], 0, EXP, NOW) == Refusal(0, 0, 3)
    store.settle("s0", 0, "m", NOW, {"slots": 0})
    store.release("s1", NOW)
    assert (spent(store, "slots"), held(store, "slots")) == (0, 1)
    assert store.reserve("s3", [own("slots", 3, 1)], 0, EXP, NOW) is None
    assert store.reserve("s4", [own("slots", 3, 1)], 0, EXP, NOW) is None
    assert store.reserve("s5", [own("slots", 3, 1)], 0, EXP, NOW) == Refusal(0, 0, 3)


def test_line_amounts_expire_and_are_purged_exactly(store: Store) -> None:
    store.reserve("h", [line("usd", 100), own("tpm", 1000, 900)], 60, NOW + 10, NOW)
    later = NOW + 10
    assert (held(store, "usd", later), held(store, "tpm", later)) == (0, 0)
    assert store.reserve("h2", [own("tpm", 1000, 1000)], 0, EXP, later) is None
    store.purge(later, 0)
    assert (held(store, "usd", later), held(store, "tpm", later)) == (0, 1000)
    # A late settle of the purged hold is unknown; the live one still settles its count.
    with pytest.raises(UnknownHoldError):
        store.settle("h", 60, None, later, {"tpm": 900})
    assert store.settle("h2", 0, None, later, {"tpm": 800}).actual == 0
    assert (spent(store, "tpm", later), held(store, "tpm", later)) == (800, 0)


def test_late_settles_record_their_actuals(store: Store) -> None:
    store.reserve("gone", [line("usd", 100), own("rpm", 10, 1)], 50, NOW + 1, NOW)
    store.reserve("freed", [line("usd", 100), own("rpm", 10, 1)], 50, EXP, NOW)
    store.release("freed", NOW)
    late = NOW + 3600
    store.settle("gone", 30, None, late, {"rpm": 1})
    store.settle("freed", 20, None, late, {"rpm": 1})
    assert (spent(store, "usd"), spent(store, "rpm")) == (50, 2)
    assert (held(store, "usd"), held(store, "rpm")) == (0, 0)


def test_reserve_again_with_the_same_line_amounts_changes_nothing(store: Store) -> None:
    lines = [line("usd", 100), own("rpm", 10, 1), own("tpm", 1000, 300)]
    assert store.reserve("h", lines, 40, EXP, NOW) is None
    assert store.reserve("h", lines[::-1], 40, EXP, NOW) is None
    # A line amount equal to the reserve's is the same reservation as none at all.
    assert store.reserve("h", [own("usd", 100, 40), *lines[1:]], 40, EXP, NOW) is None
    assert [held(store, s) for s in ("usd", "rpm", "tpm")] == [40, 1, 300]
    for other in (
        [line("usd", 100), own("rpm", 10, 2), own("tpm", 1000, 300)],  # another count
        [line("usd", 100), line("rpm", 10), own("tpm", 1000, 300)],  # the reserve's amount
        [line("usd", 100), own("rpm", 10, 1), own("tpm", 1000, 301)],
    ):
        with pytest.raises(InvalidInputError):
            store.reserve("h", other, 40, EXP, NOW)
    assert [held(store, s) for s in ("usd", "rpm", "tpm")] == [40, 1, 300]


def test_line_amounts_and_actuals_past_int64_are_refused(store: Store) -> None:
    store.charge([line("tpm")], MAX - 10, None, NOW)
    with pytest.raises(CounterOverflowError):
        store.reserve("h1", [line("usd", 100), own("tpm", None, 11)], 1, EXP, NOW)
    assert (held(store, "usd"), held(store, "tpm")) == (0, 0)
    assert store.reserve("h2", [line("usd", 100), own("tpm", None, 10)], 1, EXP, NOW) is None
    with pytest.raises(CounterOverflowError):
        store.settle("h2", 1, "m", NOW, {"tpm": 11})
    assert (spent(store, "usd"), held(store, "tpm")) == (0, 10)
    assert store.settle("h2", 1, "m", NOW, {"tpm": 10}) == SettleResult(1, already=False)
    assert spent(store, "tpm") == MAX


def test_bad_line_amounts_and_actuals_are_refused(store: Store) -> None:
    for amount in (-1, MAX + 1, True, 1.0):
        with pytest.raises(InvalidInputError):
            store.reserve("h", [own("a", 10, amount)], 1, EXP, NOW)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):  # a charge has one amount
        store.charge([own("a", None, 1)], 1, None, NOW)
    store.reserve("h", [own("a", 10, 1)], 1, EXP, NOW)
    for actuals in ({"a": -1}, {"a": 1.5}, {"": 1}, {"a\x00": 1}, [("a", 1)]):
        with pytest.raises(InvalidInputError):
            store.settle("h", 1, None, NOW, actuals)  # type: ignore[arg-type]
    assert (spent(store, "a"), held(store, "a")) == (0, 1)


# -- charge, models, exact sums ---------------------------------------------------------------


def test_charge_is_unconditional_and_attributed_per_model(store: Store) -> None:
    store.charge([line("a"), line("t", window=W2)], 150, "gpt-4o", NOW)
    store.charge([line("a")], 7, "claude", NOW)
    store.charge([line("a")], 3, None, NOW)
    usage = store.usage("a", W, NOW)
    assert (usage.spent, dict(usage.by_model)) == (160, {"gpt-4o": 150, "claude": 7})
    assert store.usage("t", W2, NOW).by_model == {"gpt-4o": 150}
    # Over any limit: a reserve of anything more is refused, but the charge stood.
    assert store.reserve("h", [line("a", 100)], 1, EXP, NOW) == Refusal(0, 160, 0)


def test_per_model_spend_is_per_window(store: Store) -> None:
    store.charge([line("a", window=W)], 5, "m", NOW)
    store.charge([line("a", window=W + 86_400)], 9, "m", NOW)
    assert store.usage("a", W, NOW).by_model == {"m": 5}
    assert store.usage("a", W + 86_400, NOW).by_model == {"m": 9}


def test_a_thousand_one_unit_charges_sum_exactly(store: Store) -> None:
    for _ in range(1000):
        store.charge([line("a")], 1, "m", NOW)
    usage = store.usage("a", W, NOW)
    assert (usage.spent, dict(usage.by_model)) == (1000, {"m": 1000})


def test_amounts_beyond_double_precision_stay_exact(store: Store) -> None:
    # 2**53 + 1 is the first integer a double cannot hold: a float anywhere would lose it.
    limit = 2**53 + 1
    store.charge([line("a")], 2**53, None, NOW)
    assert store.reserve("h1", [line("a", limit)], 1, EXP, NOW) is None
    assert store.reserve("h2", [line("a", limit)], 1, EXP, NOW) == Refusal(0, 2**53, 1)
    huge = 2**62 + 3
    store.charge([line("b")], huge, "m", NOW)
    assert store.reserve("h3", [line("b", 2**62 + 4)], 1, EXP, NOW) is None
    assert store.reserve("h4", [line("b", 2**62 + 4)], 1, EXP, NOW) == Refusal(0, huge, 1)
    assert store.usage("b", W, NOW).by_model == {"m": huge}
    assert store.history("b") == [(W, huge)]


# -- counters never overflow ---------------------------------------------------------------------

MAX = 2**63 - 1
NINE_BILLION = 9 * 10**18  # $9e9 in nano-dollars


def test_invalid_lines_are_refused_before_touching_anything(store: Store) -> None:
    # Every store runs the same checks (stores/base.py), not only the ledger before it.
    with pytest.raises(InvalidInputError):
        store.reserve("h", [line("a", 10), line("a", 10)], 1, EXP, NOW)
    with pytest.raises(InvalidInputError):
        store.charge([], 1, None, NOW)
    with pytest.raises(InvalidInputError):
        store.charge([line("a")], -1, None, NOW)
    assert store.usage("a", W, NOW) == store.usage("never", W, NOW)


def test_a_charge_past_int64_is_refused_and_changes_nothing(store: Store) -> None:
    store.charge([line("a")], NINE_BILLION, "m", NOW)
    with pytest.raises(CounterOverflowError):
        store.charge([line("a")], NINE_BILLION, "m", NOW)
    assert spent(store, "a") == NINE_BILLION
    # The counter still adds exactly (SQLite would have turned it into a float).
    for _ in range(1000):
        store.charge([line("a")], 1, "m", NOW)
    usage = store.usage("a", W, NOW)
    assert (usage.spent, dict(usage.by_model)) == (NINE_BILLION + 1000, {"m": NINE_BILLION + 1000})
    store.charge([line("a")], MAX - NINE_BILLION - 1000, None, NOW)  # exactly to the top
    assert spent(store, "a") == MAX
    with pytest.raises(CounterOverflowError):
        store.charge([line("a")], 1, None, NOW)
    assert store.history("a") == [(W, MAX)]


def test_a_multi_line_charge_that_would_overflow_one_line_changes_no_line(store: Store) -> None:
    store.charge([line("b")], MAX - 5, None, NOW)
    with pytest.raises(CounterOverflowError):
        store.charge([line("a"), line("b"), line("c")], 6, "m", NOW)
    assert (spent(store, "a"), spent(store, "b"), spent(store, "c")) == (0, MAX - 5, 0)
    assert store.usage("a", W, NOW).by_model == {}


def test_a_settle_past_int64_is_refused_and_the_hold_stays(store: Store) -> None:
    store.charge([line("a")], MAX - 10, None, NOW)
    assert store.reserve("h", [line("b"), line("a")], 5, EXP, NOW) is None
    with pytest.raises(CounterOverflowError):
        store.settle("h", 11, "m", NOW)
    assert (spent(store, "a"), spent(store, "b")) == (MAX - 10, 0)
    assert held(store, "a") == held(store, "b") == 5
    assert store.settle("h", 10, "m", NOW) == SettleResult(10, already=False)
    assert spent(store, "a") == MAX


def test_a_reserve_past_int64_is_refused_even_without_a_limit(store: Store) -> None:
    store.charge([line("a")], MAX - 10, None, NOW)
    with pytest.raises(CounterOverflowError):
        store.reserve("h1", [line("a")], 11, EXP, NOW)
    assert held(store, "a") == 0
    with pytest.raises(UnknownHoldError):
        store.release("h1", NOW)
    assert store.reserve("h2", [line("a")], 10, EXP, NOW) is None
    with pytest.raises(CounterOverflowError):
        store.reserve("h3", [line("z"), line("a")], 1, EXP, NOW)
    assert (held(store, "a"), held(store, "z")) == (10, 0)


# -- idempotent charges -------------------------------------------------------------------------


def test_a_charge_under_a_known_id_records_nothing(store: Store) -> None:
    assert store.charge([line("a"), line("b")], 7, "m", NOW, "c1") is True
    assert store.charge([line("b"), line("a")], 7, "m", NOW, "c1") is False  # a retry
    assert store.charge([line("a")], 7, "m", NOW) is True  # no id: always recorded
    usage = store.usage("a", W, NOW)
    assert (usage.spent, dict(usage.by_model)) == (14, {"m": 14})
    assert spent(store, "b") == 7


def test_reusing_a_charge_id_for_another_charge_is_refused(store: Store) -> None:
    store.charge([line("a")], 7, None, NOW, "c1")
    with pytest.raises(InvalidInputError):
        store.charge([line("a")], 8, None, NOW, "c1")
    with pytest.raises(InvalidInputError):
        store.charge([line("a"), line("b")], 7, None, NOW, "c1")
    with pytest.raises(InvalidInputError):
        store.charge([line("b")], 7, None, NOW, "c1")
    assert (spent(store, "a"), spent(store, "b")) == (7, 0)


def test_a_charge_retried_in_the_next_window_is_still_the_same_charge(store: Store) -> None:
    # The first attempt landed just before midnight; its retry computes the next day's
    # window: same charge, recorded once, in the window the first attempt used.
    store.charge([line("a", window=W)], 5, None, NOW, "c1")
    assert store.charge([line("a", window=W + 86_400)], 5, None, NOW + 60, "c1") is False
    assert spent(store, "a", window=W) == 5
    assert spent(store, "a", window=W + 86_400) == 0


def test_charge_ids_and_hold_ids_do_not_collide(store: Store) -> None:
    assert store.reserve("x", [line("a", 100)], 10, EXP, NOW) is None
    assert store.charge([line("a")], 3, None, NOW, "x") is True
    store.settle("x", 4, None, NOW)
    assert spent(store, "a") == 7


def test_a_refused_charge_does_not_use_up_its_id(store: Store) -> None:
    store.charge([line("a")], MAX - 5, None, NOW)
    with pytest.raises(CounterOverflowError):
        store.charge([line("a")], 6, None, NOW, "c1")
    assert store.charge([line("a")], 5, None, NOW, "c1") is True
    assert spent(store, "a") == MAX


def test_purge_forgets_charge_ids_after_the_retention(store: Store) -> None:
    store.charge([line("a")], 5, None, NOW, "c1")
    store.purge(NOW + 100, retention=200)
    assert store.charge([line("a")], 5, None, NOW + 100, "c1") is False  # still known
    store.purge(NOW + 300, retention=200)
    assert store.charge([line("a")], 5, None, NOW + 300, "c1") is True  # forgotten
    assert spent(store, "a") == 10


def test_concurrent_charges_under_one_id_record_once(store: Store) -> None:
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def charge() -> None:
        barrier.wait()
        results.append(store.charge([line("a"), line("b")], 11, "m", NOW, "same"))

    threads = [threading.Thread(target=charge) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]
    assert spent(store, "a") == spent(store, "b") == 11


def test_ledger_charge_with_an_id_is_a_safe_retry(store: Store, clock: FrozenClock) -> None:
    ledger = Ledger(store, clock=clock)
    budget = Budget.of("user:p:u", 10, "daily")
    assert ledger.charge([budget], "0.25", model="m", charge_id="req-1") == Decimal("0.25")
    assert ledger.charge([budget], "0.25", model="m", charge_id="req-1") == Decimal("0.25")
    assert ledger.status(budget).spent == Decimal("0.25")
    with pytest.raises(InvalidInputError):
        ledger.charge([budget], "0.30", charge_id="req-1")
    with pytest.raises(InvalidInputError):
        ledger.charge([budget], "0.30", charge_id="\ud800")


# -- reset and history -------------------------------------------------------------------


def test_reset_zeroes_one_window_and_keeps_holds(store: Store) -> None:
    store.charge([line("a", window=W)], 50, "m", NOW)
    store.charge([line("a", window=W - 86_400)], 20, "m", NOW)
    store.reserve("h", [line("a", 100)], 30, EXP, NOW)
    store.reset("a", W)
    usage = store.usage("a", W, NOW)
    assert (usage.spent, usage.held, dict(usage.by_model)) == (0, 30, {})
    assert store.usage("a", W - 86_400, NOW).spent == 20
    assert store.history("a") == [(W - 86_400, 20)]
    store.settle("h", 10, "m", NOW)
    assert store.usage("a", W, NOW).by_model == {"m": 10}


def test_history_is_newest_first_limited_and_per_scope(store: Store) -> None:
    for window, amount in [(100, 1), (300, 3), (200, 2)]:
        store.charge([line("a", window=window)], amount, None, NOW)
    store.charge([line("a:b", window=400)], 4, None, NOW)
    store.charge([line("a%", window=500)], 5, None, NOW)
    store.charge([line("a", window=50)], 0, None, NOW)  # a zero charge still records a window
    assert store.history("a") == [(300, 3), (200, 2), (100, 1), (50, 0)]
    assert store.history("a", limit=2) == [(300, 3), (200, 2)]
    assert store.history("a:b") == [(400, 4)]
    assert store.history("nobody") == []


def test_reserving_alone_records_no_history(store: Store) -> None:
    store.reserve("h1", [line("a", 100)], 10, EXP, NOW)
    store.reserve("h2", [line("a", 5)], 10, EXP, NOW)  # refused
    store.release("h1", NOW)
    assert store.history("a") == []


# -- purge -------------------------------------------------------------------------------


def test_purge_forgets_only_holds_expired_longer_than_retention(store: Store) -> None:
    store.reserve("old", [line("a", 1000)], 10, NOW - 100, NOW - 200)
    store.reserve("recent", [line("a", 1000)], 20, NOW - 10, NOW - 200)
    store.reserve("active", [line("a", 1000)], 30, NOW + 100, NOW - 200)
    store.reserve("done", [line("a", 1000)], 40, NOW - 100, NOW - 200)
    store.settle("done", 40, None, NOW - 150)
    assert held(store, "a") == 30
    assert store.purge(NOW, 50) == 2  # "old" and "done"
    with pytest.raises(UnknownHoldError):
        store.settle("old", 10, None, NOW)
    assert held(store, "a") == 30
    # Within the retention a late settle still lands.
    assert store.settle("recent", 15, None, NOW).actual == 15
    assert (spent(store, "a"), held(store, "a")) == (55, 30)
    assert store.purge(NOW, 50) == 0


def test_purge_boundary_is_inclusive(store: Store) -> None:
    store.reserve("edge", [line("a", 1000)], 10, NOW - 50, NOW - 100)
    store.reserve("inside", [line("a", 1000)], 10, NOW - 49, NOW - 100)
    assert store.purge(NOW, 50) == 1
    with pytest.raises(UnknownHoldError):
        store.release("edge", NOW)
    assert store.release("inside", NOW) is True


def test_purge_changes_no_usage(store: Store) -> None:
    store.reserve("expired", [line("a", 1000)], 10, NOW - 5, NOW - 100)
    store.reserve("active", [line("a", 1000)], 20, NOW + 5, NOW - 100)
    before = store.usage("a", W, NOW)
    store.purge(NOW, 0)
    assert store.usage("a", W, NOW) == before
    assert before.held == 20
    # Once purged, the expired hold is gone for good.
    assert store.reserve("next", [line("a", 1000)], 980, EXP, NOW) is None


# -- budgets ---------------------------------------------------------------------------------


AWKWARD = ["a%", "a_", "a:b", "ab", "b", "a/ü", "a", "ä", "a😀", "A", "a%b", "a_b", "a{x}", "a*"]


def test_budgets_crud(store: Store) -> None:
    record = BudgetRecord("user:p:1", 5_000_000_000, "daily", "Europe/Paris", True, 1.25, 2.5)
    store.put_budget(record)
    assert store.get_budgets(["user:p:1"]) == [record]
    replaced = BudgetRecord("user:p:1", None, None, "UTC", False, 1.25, 3.75)
    store.put_budget(replaced)
    assert store.get_budgets(["missing", "user:p:1", "missing"]) == [None, replaced, None]
    assert store.get_budgets([]) == []
    assert store.delete_budget("user:p:1") is True
    assert store.delete_budget("user:p:1") is False
    assert store.get_budgets(["user:p:1"]) == [None]
    assert store.list_budgets("") == []


def test_budget_records_round_trip_exactly(store: Store) -> None:
    records = [
        BudgetRecord("x", 2**63 - 1, "1mo", "America/New_York", True, 1_773_576_000.123456, 0.1),
        BudgetRecord("y", 0, None, "UTC", False, 0.0, 0.0),
        BudgetRecord("z", None, "30d", "Asia/Kolkata", False, -1.5, 1e-7),
    ]
    for record in records:
        store.put_budget(record)
    assert store.get_budgets(["x", "y", "z"]) == records


def test_budget_records_keep_their_unit(store: Store) -> None:
    records = [
        BudgetRecord("rpm", 10, "1m", unit="requests"),
        BudgetRecord("tpd", 2**63 - 1, "daily", "Europe/Paris", unit="tokens"),
        BudgetRecord("slots", 3, None, unit="concurrent"),
        BudgetRecord("usd", 5, None),
    ]
    for record in records:
        store.put_budget(record)
    assert store.get_budgets(["rpm", "tpd", "slots", "usd"]) == records
    assert store.list_budgets("") == sorted(records, key=lambda r: r.scope)
    assert records[3].unit == "usd"
    with pytest.raises(InvalidInputError, match="unit"):
        store.put_budget(BudgetRecord("bad", 1, None, unit="euros"))  # type: ignore[arg-type]
    assert store.get_budgets(["bad"]) == [None]


def test_list_budgets_by_prefix_with_awkward_scopes(store: Store) -> None:
    for scope in AWKWARD:
        store.put_budget(BudgetRecord(scope, 1, None))
    listed = [r.scope for r in store.list_budgets("")]
    assert listed == sorted(AWKWARD)  # code point order
    assert [r.scope for r in store.list_budgets("a")] == sorted(s for s in AWKWARD if s[0] == "a")
    assert [r.scope for r in store.list_budgets("a_")] == ["a_", "a_b"]
    assert [r.scope for r in store.list_budgets("a%")] == ["a%", "a%b"]
    assert [r.scope for r in store.list_budgets("a:")] == ["a:b"]
    assert [r.scope for r in store.list_budgets("ä")] == ["ä"]
    assert [r.scope for r in store.list_budgets("a😀")] == ["a😀"]
    assert [r.scope for r in store.list_budgets("a*")] == ["a*"]
    assert store.list_budgets("zz") == []


def test_put_budget_keeps_recorded_spend(store: Store) -> None:
    store.put_budget(BudgetRecord("u", 100, "daily"))
    store.charge([line("u")], 40, None, NOW)
    store.put_budget(BudgetRecord("u", 50, "daily"))
    assert spent(store, "u") == 40


# -- awkward names through the ledger operations ---------------------------------------------


@pytest.mark.parametrize(
    "scope",
    ["user:p%3Aa:42", "100%_done", "{tag}:x", "a b\nc", "ünï©ødé 😀", "*?[x]\\", "h:1:2"],
)
def test_awkward_scope_and_model_names(store: Store, scope: str) -> None:
    model = "m:{x}%_ü"
    store.reserve("id:{1}%", [line(scope, 100), line(scope + ":sub", 100)], 60, EXP, NOW)
    assert store.reserve("other", [line(scope, 100)], 41, EXP, NOW) == Refusal(0, 0, 60)
    assert store.settle("id:{1}%", 55, model, NOW) == SettleResult(55, already=False)
    usage = store.usage(scope, W, NOW)
    assert (usage.spent, usage.held, dict(usage.by_model)) == (55, 0, {model: 55})
    assert store.history(scope) == [(W, 55)]
    assert store.history(scope + ":sub") == [(W, 55)]
    assert store.usage(scope[:-1] or "z", W, NOW).spent == 0


# -- through the Ledger ----------------------------------------------------------------------


def test_ledger_hold_settle_and_status(store: Store, clock: FrozenClock) -> None:
    ledger = Ledger(store, clock=clock)
    user = Budget.of("user:1", "1.00", "daily")
    team = Budget.of("team:1", "5", "monthly")
    with ledger.hold([user, team], "0.30") as handle:
        assert ledger.status(user).held == Decimal("0.3")
        handle.settle("0.1234", model="gpt-4o")
    status = ledger.status(team)
    assert (status.spent, status.held) == (Decimal("0.1234"), 0)
    assert status.by_model == {"gpt-4o": Decimal("0.1234")}
    assert ledger.status(user).remaining == Decimal("0.8766")


def test_ledger_refusal_names_the_budget_and_its_state(store: Store, clock: FrozenClock) -> None:
    ledger = Ledger(store, clock=clock)
    user = Budget.of("user:1", "1.00", "daily")
    team = Budget.of("team:1", "5", "monthly")
    ledger.charge([team], "4.90")
    ledger.reserve([team], "0.05")
    with pytest.raises(BudgetExceededError) as refused:
        ledger.reserve([user, team], "0.10")
    error = refused.value
    assert (error.scope, error.limit, error.spent, error.held) == (
        "team:1",
        Decimal("5"),
        Decimal("4.9"),
        Decimal("0.05"),
    )
    assert error.requested == Decimal("0.1")
    assert error.resets_at == datetime(2026, 4, 1, tzinfo=UTC)
    assert ledger.status(user).held == 0  # all or nothing


def test_ledger_holds_expire_with_the_clock_and_settle_late(
    store: Store, clock: FrozenClock
) -> None:
    ledger = Ledger(store, clock=clock, hold_ttl=60)
    user = Budget.of("user:1", "1.00", "daily")
    stuck = ledger.reserve([user], "0.90")
    with pytest.raises(BudgetExceededError):
        ledger.reserve([user], "0.20")
    clock.advance(59.999)
    with pytest.raises(BudgetExceededError):
        ledger.reserve([user], "0.20")
    clock.advance(0.001)
    fresh = ledger.reserve([user], "0.20")
    assert ledger.settle(stuck, "0.90") == Decimal("0.9")  # the call did happen
    status = ledger.status(user)
    assert (status.spent, status.held) == (Decimal("0.9"), Decimal("0.2"))
    assert ledger.release(fresh) is True


def test_ledger_settle_is_idempotent(store: Store, clock: FrozenClock) -> None:
    ledger = Ledger(store, clock=clock)
    user = Budget.of("user:1", "1.00")
    hold = ledger.reserve([user], "0.5", hold_id="retry-me")
    assert ledger.reserve([user], "0.5", hold_id="retry-me") == hold  # a lost answer retried
    assert ledger.settle(hold, "0.2", model="m") == Decimal("0.2")
    assert ledger.settle(hold.id, "0.4", model="m") == Decimal("0.2")
    assert ledger.status(user).spent == Decimal("0.2")


def test_ledger_guard_releases_on_error_and_charges_unsettled(
    store: Store, clock: FrozenClock
) -> None:
    ledger = Ledger(store, clock=clock)
    user = Budget.of("user:1", "1.00")
    with pytest.raises(RuntimeError), ledger.hold([user], "0.5"):
        raise RuntimeError("provider down")
    assert (ledger.status(user).spent, ledger.status(user).held) == (0, 0)
    with ledger.hold([user], "0.25"):
        pass  # never settled: the full hold is charged
    assert ledger.status(user).spent == Decimal("0.25")


def test_ledger_periods_roll_over_and_history(store: Store, clock: FrozenClock) -> None:
    ledger = Ledger(store, clock=clock)
    user = Budget.of("user:1", "1.00", "daily")
    ledger.charge([user], "0.75", model="m")
    clock.advance(86_400)
    assert ledger.status(user).spent == 0
    ledger.charge([user], "0.5")
    history = ledger.history(user)
    assert history == [
        (datetime(2026, 3, 16, tzinfo=UTC), Decimal("0.5")),
        (datetime(2026, 3, 15, tzinfo=UTC), Decimal("0.75")),
    ]
    ledger.reset(user)
    assert ledger.status(user).spent == 0
    assert ledger.history(user) == [(datetime(2026, 3, 15, tzinfo=UTC), Decimal("0.75"))]


def test_ledger_purge_respects_retention(store: Store, clock: FrozenClock) -> None:
    ledger = Ledger(store, clock=clock, hold_ttl=10, retention=100)
    user = Budget.of("user:1", "1.00")
    hold = ledger.reserve([user], "0.5")
    clock.advance(50)
    assert ledger.purge() == 0
    clock.advance(60)  # expired 100 s ago
    assert ledger.purge() == 1
    with pytest.raises(UnknownHoldError):
        ledger.settle(hold, "0.5")


def test_ledger_budget_definitions(store: Store, clock: FrozenClock) -> None:
    ledger = Ledger(store, clock=clock)
    a = Budget.of("user:p:a", "1.5", "weekly", timezone="Europe/Paris", created_at=NOW)
    b = Budget.of("user:p:b%", None, "monthly")
    ledger.define(a)
    ledger.define(b)
    ledger.define(Budget.of("team:p", "9"))
    assert ledger.get(["user:p:a", "nope", "user:p:b%"]) == [a, None, b]
    assert [x.scope for x in ledger.budgets("user:p:")] == ["user:p:a", "user:p:b%"]
    assert ledger.delete("user:p:a") is True
    assert [x.scope for x in ledger.budgets("user:")] == ["user:p:b%"]


# -- BudgetManager on every store ---------------------------------------------------------------


def test_budget_manager_on_every_store(store: Store, clock: FrozenClock) -> None:
    bm = BudgetManager("proj:x", store=store, clock=clock)
    user = "ann:1%_ü"
    bm.create_budget(total_budget=1, user=user, duration="daily")
    bm.create_budget(total_budget=3, user="bob")
    assert bm.is_valid_user(user) and not bm.is_valid_user("carol")
    assert sorted(bm.get_users()) == sorted([user, "bob"])

    hold = bm.reserve(user, "0.1")
    assert bm.get_user(user)["held"] == Decimal("0.1")
    assert bm.settle(hold, "0.05", model="m") == Decimal("0.05")
    with bm.hold(user, "0.5") as handle:
        handle.settle("0.25", model="n")
    assert bm.get_current_cost(user) == Decimal("0.3")
    assert bm.get_model_cost(user) == {"m": Decimal("0.05"), "n": Decimal("0.25")}
    assert bm.remaining(user) == Decimal("0.7")
    with pytest.raises(BudgetExceededError):
        bm.reserve(user, "0.71")
    assert bm.get_current_cost("bob") == 0

    bm.reset_cost(user)
    assert bm.get_current_cost(user) == 0
    assert bm.delete_budget("bob") is True
    assert bm.get_users() == [user]


# -- concurrency on one store object (threads) --------------------------------------------------


def test_threads_sharing_one_store_never_overspend(store: Store) -> None:
    limit, amount, threads = 1000, 7, 16
    wins: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(threads)

    def contend(n: int) -> None:
        barrier.wait()
        for i in range(20):
            hold_id = f"t{n}-{i}"
            if store.reserve(hold_id, [line("a", limit), line("b", limit)], amount, EXP, NOW):
                return
            with lock:
                wins.append(hold_id)

    workers = [threading.Thread(target=contend, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(wins) == limit // amount
    for hold_id in wins:
        store.settle(hold_id, amount, "m", NOW)
    assert spent(store, "a") == spent(store, "b") == (limit // amount) * amount


# -- backend specifics behind the semantics ---------------------------------------------------


@pytest.fixture
def redis_store(tmp_path: Path) -> Any:
    with storekit.redis_store(tmp_path) as store:
        yield store


@pytest.fixture
def postgres_store(tmp_path: Path) -> Any:
    with storekit.postgres_store(tmp_path) as store:
        yield store


def test_redis_cluster_client_on_a_one_node_cluster(tmp_path: Path) -> None:
    # A real Redis Cluster (one node owning every slot): the cluster client routes each
    # script by its keys, which all share the store's hash tag.
    import asyncio

    from llmbudget.stores.redis import AsyncRedisStore, RedisStore

    with storekit.private_redis(tmp_path, cluster=True) as port:
        store = open_store(f"redis+cluster://127.0.0.1:{port}?prefix=c")
        assert isinstance(store, RedisStore)
        ledger = Ledger(store, clock=FrozenClock(NOW))
        user = Budget.of("user:{1}", "1", "daily")
        team = Budget.of("team:x", "5", "monthly")
        hold = ledger.reserve([user, team], "0.6")
        with pytest.raises(BudgetExceededError):
            ledger.reserve([team, user], "0.5")
        ledger.settle(hold, "0.55", model="m")
        assert ledger.status(team).by_model == {"m": Decimal("0.55")}
        ledger.define(user)
        assert [b.scope for b in ledger.budgets("user:")] == ["user:{1}"]
        assert store.purge(NOW + 10**6, 0) == 1
        store.close()

        async def run_async() -> None:
            astore = AsyncRedisStore(f"redis+cluster://127.0.0.1:{port}?prefix=c")
            try:
                assert (await astore.usage("user:{1}", user.window_at(NOW).key, NOW)).spent == (
                    550_000_000
                )
            finally:
                await astore.aclose()

        asyncio.run(run_async())


def test_redis_every_key_of_every_call_is_in_one_cluster_slot(redis_store: Any) -> None:
    from redis.crc import key_slot

    from llmbudget.stores.redis import RedisStore

    assert isinstance(redis_store, RedisStore)
    declared: list[str] = []
    original = redis_store._client.evalsha

    def spy(sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        declared.extend(keys_and_args[:numkeys])
        return original(sha, numkeys, *keys_and_args)

    redis_store._client.evalsha = spy
    lines = [line("user:{x}", 100), line("team:y", 1000, W2), line("org")]
    redis_store.reserve("h1", lines, 10, EXP, NOW)
    redis_store.reserve("h2", lines, 10, NOW + 1, NOW)
    redis_store.settle("h1", 5, "m", NOW)
    redis_store.release("h2", NOW)
    redis_store.charge(lines, 3, "m", NOW)
    redis_store.usage("user:{x}", W, NOW)
    redis_store.history("team:y")
    redis_store.reset("org", W)
    redis_store.purge(NOW + 10, 0)
    redis_store.put_budget(BudgetRecord("user:{x}", 1, None))
    redis_store.list_budgets("user:")
    redis_store.get_budgets(["user:{x}"])
    redis_store.create_doc("k", "d:{1}", {})
    redis_store.append_log("spend", NOW, {"x": 1})
    redis_store.read_log("spend")
    import redis

    raw = redis.Redis.from_url(storekit.REDIS_URL)
    try:
        stored = list(raw.scan_iter(match="{" + redis_store.prefix + "}:*"))
    finally:
        raw.close()
    assert stored and declared
    slots = {key_slot(k.encode() if isinstance(k, str) else k) for k in declared + stored}
    assert len(slots) == 1, slots


def test_redis_lua_money_arithmetic_is_exact(redis_store: Any) -> None:
    # Lua numbers are doubles: money is added and compared as decimal strings in lib.lua.
    import random

    from llmbudget.stores.redis_ops import SCRIPTS

    lib = SCRIPTS["reserve"].source.split("\n-- reserve:")[0]
    probe = lib + "\nreturn {big_add(ARGV[2], ARGV[3]), big_cmp(ARGV[2], ARGV[3])}"
    rng = random.Random(6)
    values = [0, 1, 10**7 - 1, 10**7, 10**15 - 1, 10**15, 2**53, 2**53 + 1, 2**63 - 1]
    values += [rng.randint(0, 10 ** rng.randint(1, 19)) for _ in range(20)]
    client = redis_store._client
    for a in values:
        for b in values:
            total, order = client.eval(probe, 1, redis_store._ops.k_holds, "x", str(a), str(b))
            assert (int(total), order) == (a + b, (a > b) - (a < b)), (a, b)


def test_redis_lua_and_python_key_layouts_agree(redis_store: Any) -> None:
    import redis

    ops = redis_store._ops
    redis_store.reserve("h", [line("s:1", 100)], 10, EXP, NOW)
    redis_store.reserve("gone", [line("s:1", 100)], 10, EXP, NOW)
    redis_store.release("gone", NOW)
    redis_store.settle("h", 5, "m", NOW)
    redis_store.reserve("open", [line("s:1", 100)], 7, EXP, NOW)
    expected = {
        ops.k_hold("h"),
        ops.k_hold("gone"),
        ops.k_hold("open"),
        ops.k_holds,
        ops.k_active,
        ops.k_spent("s:1"),
        ops.k_wins("s:1"),
        ops.k_model("s:1", W),
        ops.k_held("s:1", W),
        ops.k_heldsum("s:1", W),
    }
    raw = redis.Redis.from_url(storekit.REDIS_URL, decode_responses=True)
    try:
        stored = set(raw.scan_iter(match="{" + redis_store.prefix + "}:*"))
    finally:
        raw.close()
    assert stored == expected
    # Spend never expires; nothing in the layout relies on a server-side TTL.
    raw = redis.Redis.from_url(storekit.REDIS_URL, decode_responses=True)
    try:
        assert all(raw.ttl(key) == -1 for key in stored)
    finally:
        raw.close()


def test_redis_scripts_survive_a_script_cache_flush(redis_store: Any) -> None:
    redis_store.charge([line("a")], 5, None, NOW)
    redis_store._client.script_flush()
    redis_store.charge([line("a")], 5, None, NOW)  # NOSCRIPT -> EVAL, which caches again
    assert spent(redis_store, "a") == 10


def test_redis_prefixes_isolate_stores(redis_store: Any) -> None:
    from llmbudget.stores.redis import RedisStore

    other_prefix = redis_store.prefix + "-other"
    other = RedisStore(storekit.with_query(storekit.REDIS_URL, prefix=other_prefix))
    try:
        redis_store.charge([line("a")], 5, None, NOW)
        assert spent(other, "a") == 0
    finally:
        other.close()
        storekit.delete_redis_prefix(other_prefix)


def test_redis_url_handling() -> None:
    from llmbudget.stores.redis import _Config

    config = _Config.parse("redis://:pw@h:6380/2?prefix=p1&socket_timeout=9")
    assert (config.prefix, config.cluster) == ("p1", False)
    assert "prefix" not in config.url and "socket_timeout=9" in config.url
    assert "socket_connect_timeout=2" in config.url
    cluster = _Config.parse("rediss+cluster://h:7000")
    assert cluster.cluster and cluster.url.startswith("rediss://h:7000")
    assert cluster.prefix == "llmbudget"
    with pytest.raises(InvalidInputError):
        open_store("redis://h/0?prefix=a{b}")


def test_redis_cluster_url_uses_the_cluster_client(monkeypatch: pytest.MonkeyPatch) -> None:
    import redis.cluster

    from llmbudget.stores.redis import RedisStore

    made: dict[str, Any] = {}

    class FakeCluster:
        @classmethod
        def from_url(cls, url: str, **kwargs: Any) -> FakeCluster:
            made["url"], made["kwargs"] = url, kwargs
            return cls()

        def close(self) -> None:
            made["closed"] = True

    monkeypatch.setattr(redis.cluster, "RedisCluster", FakeCluster)
    store = open_store("redis+cluster://10.0.0.1:7000?prefix=c")
    assert isinstance(store, RedisStore)
    assert made["url"].startswith("redis://10.0.0.1:7000")
    assert made["kwargs"]["retry"].get_retries() == 0  # a retried EVAL could charge twice
    store.close()
    assert made["closed"]


def test_redis_cluster_client_against_a_non_cluster_server_fails_cleanly() -> None:
    # No cluster runs here: the real cluster client, pointed at the standalone server,
    # must surface as a store error, not a driver exception.
    try:
        import redis

        redis.Redis.from_url(storekit.REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as exc:  # pragma: no cover - depends on the machine
        storekit.unavailable("redis", str(exc))
    host_port = storekit.REDIS_URL.split("://", 1)[1].split("/", 1)[0]
    with pytest.raises(StoreError):
        open_store(f"redis+cluster://{host_port}?prefix=x")


def test_redis_errors_are_translated(redis_store: Any) -> None:
    # A Redis-side error (here: a key of the wrong type) is a StoreError, never a driver
    # exception leaking out. (A NaN time no longer gets that far: it is refused first.)
    redis_store._client.set(redis_store._ops.k_spent("a"), "not a hash")
    with pytest.raises(StoreError) as error:
        redis_store.reserve("h", [line("a", 10)], 1, EXP, NOW)
    assert not isinstance(error.value, StoreUnavailableError)
    with pytest.raises(InvalidInputError):
        redis_store.reserve("h", [line("b", 10)], 1, float("nan"), NOW)


def test_redis_unreachable_is_unavailable_quickly() -> None:
    import time

    store = open_store("redis://127.0.0.1:1/0?prefix=x&socket_connect_timeout=1")
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError):
        store.usage("a", W, NOW)
    assert time.monotonic() - started < 3
    store.close()


def test_postgres_migrations_are_versioned_and_safe_to_run_concurrently(
    tmp_path: Path,
) -> None:
    import psycopg

    from llmbudget.stores.postgres import PostgresStore
    from llmbudget.stores.postgres_sql import MIGRATIONS as _MIGRATIONS

    schema = storekit.isolation_name(tmp_path) + "_mig"
    url = storekit.with_query(storekit.POSTGRES_URL, schema=schema)
    opened: list[PostgresStore] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            opened.append(PostgresStore(url))
        except BaseException as exc:
            errors.append(exc)

    try:
        try:
            PostgresStore(url).close()
        except StoreUnavailableError as exc:
            storekit.unavailable("postgres", str(exc))
        storekit.drop_postgres_schema(schema)
        workers = [threading.Thread(target=start) for _ in range(8)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert not errors, errors
        with psycopg.connect(storekit.POSTGRES_URL, autocommit=True) as conn:
            versions = conn.execute(
                psycopg.sql.SQL("SELECT version FROM {}.schema_version ORDER BY version").format(
                    psycopg.sql.Identifier(schema)
                )
            ).fetchall()
        assert [v for (v,) in versions] == list(range(1, len(_MIGRATIONS) + 1))
        opened[0].charge([line("a")], 5, None, NOW)
        assert spent(opened[-1], "a") == 5
    finally:
        for store in opened:
            store.close()
        storekit.drop_postgres_schema(schema)


def test_postgres_holds_and_budgets_of_the_previous_schema_keep_working(tmp_path: Path) -> None:
    # Schema version 4: no budget units; holds reserved by the previous version's function.
    import psycopg
    from psycopg import sql

    from llmbudget.stores.postgres import PostgresStore
    from llmbudget.stores.postgres_sql import MIGRATIONS as _MIGRATIONS

    schema = storekit.isolation_name(tmp_path) + "_old"
    try:
        conn = psycopg.connect(storekit.POSTGRES_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        storekit.unavailable("postgres", str(exc))
    try:
        with conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
            conn.execute(
                "CREATE TABLE schema_version (version integer PRIMARY KEY, "
                "applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for number, script in enumerate(_MIGRATIONS[:4], start=1):
                conn.execute(script)
                conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (number,))
            conn.execute("INSERT INTO budgets VALUES ('u', 7, NULL, 'UTC', false, 0, 0)")
            conn.execute(
                "SELECT llmbudget_reserve('old', ARRAY['u', 't'], ARRAY[%s, %s]::bigint[], "
                "ARRAY[100, NULL]::bigint[], 40, %s, %s)",
                (W, W, EXP, NOW),
            )
        store = PostgresStore(storekit.with_query(storekit.POSTGRES_URL, schema=schema))
        try:
            assert store.get_budgets(["u"]) == [BudgetRecord("u", 7, None)]
            assert store.reserve("old", [line("u", 100), line("t")], 40, EXP, NOW) is None
            with pytest.raises(InvalidInputError):
                store.reserve("old", [line("u", 100), Line("t", W, None, 1)], 40, EXP, NOW)
            assert (
                store.reserve("new", [line("u", 100), Line("t", W, None, 1)], 60, EXP, NOW) is None
            )
            assert (held(store, "u"), held(store, "t")) == (100, 41)
            store.settle("old", 30, "m", NOW, {"t": 2})
            assert (spent(store, "u"), spent(store, "t")) == (30, 2)
        finally:
            store.close()
    finally:
        storekit.drop_postgres_schema(schema)


def test_redis_holds_of_the_previous_layout_keep_working(redis_store: Any) -> None:
    # A hold written before lines had amounts of their own: no a<i> fields.
    import redis

    ops = redis_store._ops
    raw = redis.Redis.from_url(storekit.REDIS_URL)
    try:
        fields = {"s": "h", "a": 40, "e": EXP, "n": 2, "c1": "u", "w1": W, "c2": "t", "w2": W}
        raw.hset(ops.k_hold("old"), mapping=fields)
        for scope in ("u", "t"):
            raw.zadd(ops.k_held(scope, W), {"40:old": EXP})
            raw.set(ops.k_heldsum(scope, W), 40)
        raw.zadd(ops.k_holds, {"old": EXP})
        raw.zadd(ops.k_active, {"old": EXP})
    finally:
        raw.close()
    assert redis_store.reserve("old", [line("u", 100), line("t")], 40, EXP, NOW) is None
    assert redis_store.reserve("new", [line("u", 100), Line("t", W, None, 1)], 60, EXP, NOW) is None
    assert (held(redis_store, "u"), held(redis_store, "t")) == (100, 41)
    assert redis_store.release("old", NOW) is True
    assert (held(redis_store, "u"), held(redis_store, "t")) == (60, 1)
    redis_store.settle("new", 50, None, NOW, {"t": 1})
    assert (spent(redis_store, "u"), spent(redis_store, "t"), held(redis_store, "t")) == (50, 1, 0)


def test_postgres_schemas_isolate_stores(postgres_store: Any, tmp_path: Path) -> None:
    from llmbudget.stores.postgres import PostgresStore

    other_schema = storekit.isolation_name(tmp_path) + "_other"
    other = PostgresStore(storekit.with_query(storekit.POSTGRES_URL, schema=other_schema))
    try:
        postgres_store.charge([line("a")], 5, None, NOW)
        assert spent(other, "a") == 0
        assert other.schema == other_schema
    finally:
        other.close()
        storekit.drop_postgres_schema(other_schema)


def test_postgres_rejects_a_newer_schema(postgres_store: Any) -> None:
    import psycopg

    from llmbudget.stores.postgres import PostgresStore

    with psycopg.connect(storekit.POSTGRES_URL, autocommit=True) as conn:
        conn.execute(
            psycopg.sql.SQL("INSERT INTO {}.schema_version (version) VALUES (999)").format(
                psycopg.sql.Identifier(postgres_store.schema)
            )
        )
    with pytest.raises(StoreError, match="newer"):
        PostgresStore(postgres_store.url)


def test_postgres_errors_are_translated(postgres_store: Any) -> None:
    # A data error on the server is a StoreError, not a driver exception. (NUL in text,
    # which PostgreSQL refuses, no longer gets that far: it is refused first.)
    from llmbudget.stores.postgres_sql import Query as _Query

    def failing() -> Any:
        yield _Query("SELECT 1 / 0")

    with pytest.raises(StoreError) as error:
        postgres_store._run(failing())
    assert not isinstance(error.value, StoreUnavailableError)
    with pytest.raises(InvalidInputError):
        postgres_store.charge([line("a\x00b")], 1, None, NOW)
    postgres_store.charge([line("a")], 1, None, NOW)  # the store is still usable


def test_postgres_unreachable_is_unavailable_quickly() -> None:
    import time

    started = time.monotonic()
    with pytest.raises(StoreUnavailableError):
        open_store("postgresql://postgres@127.0.0.1:1/test?connect_timeout=2&pool_timeout=2")
    assert time.monotonic() - started < 5


def test_postgres_url_handling() -> None:
    from llmbudget.stores.postgres import _Config

    config = _Config.parse("postgresql://u:pw@h:5433/db?schema=s1&pool_max=3&sslmode=require")
    assert (config.schema, config.pool_max, config.pool_min) == ("s1", 3, 1)
    assert "schema" not in config.conninfo and "pool_max" not in config.conninfo
    assert "sslmode=require" in config.conninfo and "connect_timeout=2" in config.conninfo
    with pytest.raises(InvalidInputError):
        _Config.parse("postgresql://h/db?pool_max=0")
    with pytest.raises(InvalidInputError):
        _Config.parse("postgresql://h/db?schema=")
