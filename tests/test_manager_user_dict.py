"""``BudgetManager.user_dict``: LiteLLM's dict of users, read from and written to the store."""

from __future__ import annotations

import copy
import json
from decimal import Decimal

import pytest

from llmbudget import BudgetManager
from llmbudget.clock import FrozenClock
from llmbudget.errors import InvalidAmountError, InvalidInputError, UnknownUserError
from llmbudget.stores.base import Store

DAY = 86_400


@pytest.fixture
def bm(store: Store, clock: FrozenClock) -> BudgetManager:
    manager = BudgetManager("proj", store=store, clock=clock)
    manager.create_budget(total_budget=10, user="ann", duration="daily")
    manager.create_budget(total_budget=5, user="life")
    return manager


def _spend(bm: BudgetManager, user: str, amount: str) -> None:
    bm.settle(bm.reserve(user, amount), amount, model="gpt-4o")


def test_reads_come_from_the_store(bm: BudgetManager, store: Store, clock: FrozenClock) -> None:
    other = BudgetManager("proj", store=store, clock=clock)  # another process, say
    _spend(other, "ann", "0.25")
    other.create_budget(total_budget=1, user="bob")
    users = bm.user_dict
    assert "ann" in users and "bob" in users
    assert "ghost" not in users and "" not in users and 42 not in users
    assert sorted(users) == ["ann", "bob", "life"] == sorted(bm.get_users()) and len(users) == 3
    assert users["ann"]["current_cost"] == Decimal("0.25")
    assert users["ann"]["model_cost"] == {"gpt-4o": Decimal("0.25")}
    assert users.get("ghost") is None
    with pytest.raises(UnknownUserError):
        users["ghost"]
    bm.load_data()  # LiteLLM's reload: nothing to do, the next read is current anyway
    _spend(other, "ann", "0.5")
    assert users["ann"]["current_cost"] == Decimal("0.75")


def test_record_shape_is_litellms(bm: BudgetManager, clock: FrozenClock) -> None:
    ann = bm.user_dict["ann"]
    assert set(ann) >= {
        "total_budget", "current_cost", "model_cost", "duration", "created_at",
        "last_updated_at",
    }  # fmt: skip
    assert ann["duration"] == 1 and ann["created_at"] == clock()
    assert ann["last_updated_at"] == clock() - 12 * 3600  # today's window started at midnight
    # A lifetime budget has no duration, as in LiteLLM (whose reset loop tests for it).
    assert "duration" not in bm.user_dict["life"]
    assert json.loads(json.dumps(dict(bm.user_dict)))["ann"]["total_budget"] == 10
    snapshot = copy.deepcopy(bm.user_dict)
    assert type(snapshot) is dict and type(snapshot["ann"]) is dict


def test_moving_last_updated_at_back_a_day_resets_on_the_next_daily_job(
    bm: BudgetManager,
) -> None:
    _spend(bm, "ann", "2")
    bm.user_dict["ann"]["last_updated_at"] -= DAY
    assert bm.get_current_cost("ann") == 2  # nothing happens before the seed's job runs
    other = BudgetManager("proj", store=bm.ledger.store, clock=bm.ledger.clock)
    assert other.user_dict["ann"]["last_updated_at"] == bm.user_dict["ann"]["last_updated_at"]
    bm.update_budget_all_users()
    assert bm.get_current_cost("ann") == 0
    _spend(bm, "ann", "1")
    bm.update_budget_all_users()  # once only
    other.update_budget_all_users()
    assert bm.get_current_cost("ann") == 1


def test_a_start_moved_back_less_than_a_duration_resets_when_it_has_passed(
    bm: BudgetManager, clock: FrozenClock
) -> None:
    _spend(bm, "ann", "3")
    midnight = bm.user_dict["ann"]["last_updated_at"]
    bm.user_dict["ann"]["last_updated_at"] = midnight - 6 * 3600  # yesterday 18:00
    bm.reset_on_duration("ann")
    assert bm.get_current_cost("ann") == 3  # 18 h since: not yet
    clock.advance(6 * 3600)  # 18:00: a day since the moved start
    bm.reset_on_duration("ann")
    assert bm.get_current_cost("ann") == 0


def test_a_moved_start_lapses_at_the_calendar_boundary(
    bm: BudgetManager, clock: FrozenClock
) -> None:
    bm.user_dict["ann"]["last_updated_at"] -= 3600
    clock.advance(12 * 3600)  # the next calendar day: its window already starts from zero
    _spend(bm, "ann", "1")
    bm.update_budget_all_users()
    assert bm.get_current_cost("ann") == 1
    assert bm.user_dict["ann"]["last_updated_at"] == clock()


def test_last_updated_at_writes_that_cannot_keep_their_meaning_raise(bm: BudgetManager) -> None:
    record = bm.user_dict["ann"]
    with pytest.raises(InvalidInputError, match="only move back"):
        record["last_updated_at"] += 60
    with pytest.raises(InvalidInputError, match="never resets"):
        bm.user_dict["life"]["last_updated_at"] = 1000.0
    with pytest.raises(InvalidInputError):
        record["last_updated_at"] = "yesterday"
    assert record["last_updated_at"] == bm.user_dict["ann"]["last_updated_at"]


def test_current_cost_writes(bm: BudgetManager) -> None:
    _spend(bm, "ann", "1")
    record = bm.user_dict["ann"]
    record["current_cost"] += 0.5  # charged as spend without a model
    assert bm.get_current_cost("ann") == Decimal("1.5") == record["current_cost"]
    assert bm.get_model_cost("ann") == {"gpt-4o": 1}
    with pytest.raises(InvalidInputError, match="can only grow"):
        record["current_cost"] = 0.25
    assert bm.get_current_cost("ann") == Decimal("1.5")
    record["current_cost"] = 0  # reset_cost
    assert bm.get_current_cost("ann") == 0 and record["model_cost"] == {}


@pytest.mark.parametrize(
    ("key", "value", "check"),
    [
        ("total_budget", 20, lambda bm: bm.get_total_budget("ann") == 20),
        ("duration", 7, lambda bm: bm.user_dict["ann"]["period"] == "weekly"),
        ("duration", None, lambda bm: bm.user_dict["ann"]["period"] is None),
        (
            "created_at",
            1_773_576_000.0 - 3600,
            lambda bm: bm.get_budget("ann").created_at == 1_773_576_000.0 - 3600,
        ),
    ],
)
def test_budget_writes_change_the_budget_and_keep_the_spend(
    bm: BudgetManager, key: str, value: object, check: object
) -> None:
    _spend(bm, "ann", "1")
    bm.user_dict["ann"][key] = value
    assert check(bm)  # type: ignore[operator]
    assert bm.get_current_cost("ann") == 1


def test_budget_writes_keep_what_they_do_not_change(bm: BudgetManager) -> None:
    bm.create_budget(total_budget=20, user="ann", duration="30d")
    bm.user_dict["ann"]["duration"] = 30  # the same number of days: the period stays "30d"
    assert bm.user_dict["ann"]["period"] == "30d"
    bm.user_dict["ann"]["total_budget"] = 25
    assert bm.user_dict["ann"]["period"] == "30d"
    with pytest.raises(InvalidAmountError):
        bm.user_dict["ann"]["total_budget"] = -1
    with pytest.raises(InvalidInputError):
        bm.user_dict["ann"]["duration"] = "fortnight"
    with pytest.raises(InvalidInputError):
        bm.user_dict["ann"]["created_at"] = "yesterday"
    assert bm.get_total_budget("ann") == 25 and bm.user_dict["ann"]["period"] == "30d"


def test_writes_without_a_meaning_raise_and_change_nothing(bm: BudgetManager) -> None:
    record = bm.user_dict["ann"]
    for key, value in (("model_cost", {"gpt-4o": 1}), ("held", 1), ("email", "a@b.c")):
        with pytest.raises(InvalidInputError):
            record[key] = value
    with pytest.raises(InvalidInputError, match="update_cost"):
        record["model_cost"]["gpt-4o"] = 1.0
    for remove in (lambda: record.pop("current_cost"), record.clear):
        with pytest.raises(InvalidInputError, match="delete_budget"):
            remove()
    with pytest.raises(InvalidInputError, match="live view"):
        bm.user_dict = {}  # type: ignore[assignment]
    assert bm.get_model_cost("ann") == {} and bm.get_users() == ["ann", "life"]
    assert "email" not in bm.user_dict["ann"]


def test_update_of_unchanged_fields_is_harmless(bm: BudgetManager) -> None:
    # A public app "initialises" cost fields this way after create_budget.
    bm.user_dict["ann"].update({"current_cost": 0.0, "model_cost": {}})
    _spend(bm, "ann", "1")
    bm.user_dict["ann"].update(current_cost=0.0, model_cost={})  # reset, as in the seed
    assert bm.get_current_cost("ann") == 0
    assert bm.user_dict["ann"].setdefault("total_budget", 99) == 10


def test_setting_and_deleting_whole_users(bm: BudgetManager, clock: FrozenClock) -> None:
    bm.user_dict["new"] = {"total_budget": 3, "duration": 7, "created_at": clock() - DAY}
    assert bm.get_total_budget("new") == 3 and bm.user_dict["new"]["period"] == "weekly"
    assert bm.get_budget("new").created_at == clock() - DAY
    bm.user_dict["new"] = {"total_budget": 4, "current_cost": 0.5}
    assert bm.get_total_budget("new") == 4 and bm.get_current_cost("new") == Decimal("0.5")
    assert bm.user_dict["new"]["period"] is None  # a record without duration: lifetime
    with pytest.raises(InvalidInputError, match="total_budget"):
        bm.user_dict["bad"] = {"duration": 1}
    del bm.user_dict["new"]
    assert "new" not in bm.user_dict
    with pytest.raises(UnknownUserError):
        del bm.user_dict["new"]
    assert "bad" not in bm.user_dict
