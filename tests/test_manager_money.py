"""Money from the seed-compatible facade works in float code and stays exact underneath."""

from __future__ import annotations

import copy
import json
import math
import pickle
from decimal import Decimal
from typing import Any

import pytest

from llmbudget import BudgetManager
from llmbudget.clock import FrozenClock
from llmbudget.dollars import Dollars
from llmbudget.money import to_money

RESPONSE = {
    "model": "gpt-4o",
    "usage": {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500},
}  # gpt-4o: 1000 x $2.50/M + 500 x $10/M = $0.0075


@pytest.fixture
def bm(clock: FrozenClock) -> BudgetManager:
    manager = BudgetManager("money", store="memory://", clock=clock)
    manager.create_budget(total_budget="0.01", user="ann", duration="daily")
    manager.update_cost(user="ann", completion_obj=RESPONSE)
    return manager


def _facade_values(bm: BudgetManager) -> dict[str, Any]:
    """Every value the seed's methods return, by name."""
    messages = [{"role": "user", "content": "hi"}]
    return {
        "create_budget": bm.create_budget(total_budget="0.01", user="ann", duration="daily"),
        "projected_cost": bm.projected_cost("gpt-4o", messages, "ann", max_tokens=10),
        "get_total_budget": bm.get_total_budget("ann"),
        "update_cost": bm.update_cost(user="ann", model="gpt-4o", input_text="a", output_text="b"),
        "get_current_cost": bm.get_current_cost("ann"),
        "get_model_cost": bm.get_model_cost("ann"),
        "is_valid_user": bm.is_valid_user("ann"),
        "get_users": bm.get_users(),
        "reset_cost": bm.reset_cost("ann"),
        "save_data": bm.save_data(),
        "user_dict[user]": bm.user_dict["ann"],
        "get_user": bm.get_user("ann"),
    }


def _plain(value: object) -> object:
    """``value`` with every amount as the float it is, and every mapping a plain dict."""
    if isinstance(value, Dollars):
        return float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _money_in(value: object) -> list[Dollars]:
    if isinstance(value, Dollars):
        return [value]
    if isinstance(value, dict):
        return [m for v in value.values() for m in _money_in(v)]
    return []


def test_every_facade_value_is_json_serialisable(bm: BudgetManager) -> None:
    values = _facade_values(bm)
    for name, value in values.items():
        text = json.dumps(value)  # raised TypeError with Decimal money and datetimes
        assert json.loads(text) == _plain(value), name
    record = values["user_dict[user]"]
    assert isinstance(record["created_at"], float)
    assert isinstance(record["last_updated_at"], float)
    assert isinstance(record["resets_at"], float)  # epoch seconds, as LiteLLM's times


def test_every_facade_amount_does_float_arithmetic(bm: BudgetManager) -> None:
    amounts = [m for value in _facade_values(bm).values() for m in _money_in(value)]
    assert len(amounts) >= 15
    for amount in amounts:
        assert isinstance(amount, float)
        assert amount + 0.5 == float(amount) + 0.5
        assert amount * 1.1 == float(amount) * 1.1
        assert amount / 2 == float(amount) / 2
        assert (amount <= 0.01) == (float(amount) <= 0.01)
        assert round(amount, 4) == round(float(amount), 4)
        assert f"{amount:.6f}" == f"{float(amount):.6f}"
        assert math.isclose(float(f"{amount}"), float(amount))
        assert to_money(amount) == amount.exact  # passing one back in loses nothing


def test_the_exact_value_is_one_attribute_away(bm: BudgetManager) -> None:
    cost = bm.get_current_cost("ann")
    assert cost.exact == Decimal("0.0075") == bm.status("ann").spent
    assert bm.get_model_cost("ann")["gpt-4o"].exact == Decimal("0.0075")
    assert bm.get_total_budget("ann").exact == Decimal("0.01")
    # The native API keeps Decimal.
    assert isinstance(bm.remaining("ann"), Decimal) and bm.remaining("ann") == Decimal("0.0025")
    assert isinstance(bm.status("ann").spent, Decimal)


def test_fail_open_pattern_refuses_a_user_over_budget(bm: BudgetManager) -> None:
    """A public app's check: on any exception it lets the call through."""

    def can_afford(estimate: float) -> bool:
        try:
            current = bm.get_current_cost("ann")
            total = bm.get_total_budget("ann")
            return bool((current + estimate) <= total)
        except Exception:
            return True

    assert can_afford(0.001) is True  # 0.0075 + 0.001 <= 0.01
    assert can_afford(0.5) is False  # over budget: refused, not let through

    # With Decimal money (what the facade returned before), the same code fails open.
    def can_afford_with_decimals(estimate: float) -> bool:
        try:
            return bool((bm.status("ann").spent + estimate) <= bm.status("ann").limit)  # type: ignore[operator]
        except Exception:
            return True

    assert can_afford_with_decimals(0.5) is True


def test_comparisons_are_exact_between_exact_values() -> None:
    # As floats, 0.1 + 0.2 > 0.3; as exact money it is equal, never over.
    spent = Dollars("0.1") + Dollars("0.2")
    assert spent == Dollars("0.3") and spent <= Dollars("0.3") and not spent > Decimal("0.3")
    assert 0.1 + 0.2 > 0.3
    assert spent + 1 == Dollars("1.3") and (spent * 3).exact == Decimal("0.9")
    assert isinstance(spent + 0.5, float) and not isinstance(spent + 0.5, Dollars)
    assert (Decimal("1") - spent).exact == Decimal("0.7")
    assert -spent < 0 and abs(-spent) == spent
    assert Dollars(2) > 1 and Dollars(1) == 1 and Dollars("0.5") != 0.25


def test_dollars_print_round_trip_and_copy() -> None:
    cost = Dollars("0.00000006")
    assert str(cost) == repr(cost) == f"{cost}" == "0.00000006"  # never 6E-8
    assert f"{cost:.2e}" == "6.00e-08"
    assert json.dumps(cost) == "6e-08"
    assert pickle.loads(pickle.dumps(cost)).exact == Decimal("0.00000006")
    assert copy.deepcopy(cost).exact == cost.exact
    assert {cost: "x"}[6e-08] == "x"  # hashes as the float it equals
    with pytest.raises(ValueError):
        Dollars("NaN")


def test_dollars_given_back_to_the_manager_stay_exact(bm: BudgetManager) -> None:
    total = bm.get_total_budget("ann")
    bm.create_budget(total_budget=total * 3, user="bob")
    assert bm.get_total_budget("bob").exact == Decimal("0.03")
    hold = bm.reserve("bob", Dollars("0.000000001"))
    assert bm.settle(hold, Dollars("0.000000001")) == Decimal("0.000000001")
