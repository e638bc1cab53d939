"""The global budget: ``llmbudget.max_budget`` / ``current_cost`` as in the seed."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import llmbudget
from llmbudget import global_budget as gb
from llmbudget.budgets import Budget
from llmbudget.errors import BudgetExceededError, InvalidAmountError, InvalidInputError
from llmbudget.ledger import Ledger
from llmbudget.plans import run_sync
from llmbudget.pricing import PriceBook, TokenUsage
from llmbudget.reservations import ScopeGroup, plan_reserve, plan_settle
from llmbudget.stores.memory import MemoryStore
from llmbudget.tokens import count_message_tokens

# These tests use the package's live attributes (llmbudget.max_budget, .completion...),
# which exist once llmbudget/__init__.py exports completion and calls global_budget.install().
pytestmark = pytest.mark.skipif(
    not isinstance(llmbudget, gb._BudgetModule) or not callable(llmbudget.completion),
    reason="llmbudget/__init__.py does not call global_budget.install() / export completion yet",
)

SEED_MESSAGES = [{"role": "user", "content": "Hey, how's it going"}]
SEED_REPLY = "I'm doing well, thank you for asking! How can I help you today?"


@pytest.fixture(autouse=True)
def fresh_global() -> Iterator[None]:
    gb._reset_for_tests()
    yield
    gb._reset_for_tests()


def test_seed_quick_start() -> None:
    """The seed's example, unchanged: the first call succeeds, the second is refused."""
    llmbudget.max_budget = 0.001
    llmbudget.completion(model="gpt-4", messages=SEED_MESSAGES, mock_response=SEED_REPLY)
    assert llmbudget.current_cost > 0
    assert llmbudget._current_cost == llmbudget.current_cost
    assert llmbudget.current_cost <= Decimal("0.001")
    with pytest.raises(BudgetExceededError) as refused:
        llmbudget.completion(model="gpt-4", messages=SEED_MESSAGES, mock_response=SEED_REPLY)
    assert refused.value.scope == "global:default"
    assert refused.value.limit == Decimal("0.001")


def test_first_seed_call_is_capped_to_what_the_budget_can_pay_for() -> None:
    # gpt-4's worst case ($60/Mtok output) is far above $0.001: the call is sent with the
    # output cap the budget allows, and the mock answer respects it as a provider would.
    llmbudget.max_budget = 0.001
    response = llmbudget.completion(model="gpt-4", messages=SEED_MESSAGES, mock_response=SEED_REPLY)
    prompt = count_message_tokens(SEED_MESSAGES, "gpt-4")
    price = PriceBook.default().lookup("gpt-4")
    assert price.output_per_mtok is not None
    room = Decimal("0.001") - price.cost(TokenUsage(input_tokens=prompt))
    cap = int(room / (price.output_per_mtok / 1_000_000))
    assert response._hidden_params["output_cap"] == cap
    assert response.usage.completion_tokens <= cap
    assert response.choices[0].finish_reason == "length"
    assert llmbudget.current_cost == price.cost(
        TokenUsage(input_tokens=prompt, output_tokens=response.usage.completion_tokens)
    )


def test_max_budget_round_trips_and_none_disables() -> None:
    assert llmbudget.max_budget is None
    llmbudget.max_budget = 0.1
    assert llmbudget.max_budget == Decimal("0.1")
    llmbudget.max_budget = "2.5"
    assert llmbudget.max_budget == Decimal("2.5")
    llmbudget.max_budget = None
    assert llmbudget.max_budget is None
    for _ in range(3):  # no limit: nothing is refused, spend still counted
        llmbudget.completion(model="gpt-4", messages=SEED_MESSAGES, mock_response=SEED_REPLY)
    assert llmbudget.current_cost > Decimal("0.001")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1, True, "abc", object(), 1e-12])
def test_invalid_max_budget_is_refused_and_changes_nothing(bad: Any) -> None:
    llmbudget.max_budget = 1
    with pytest.raises(InvalidAmountError):
        llmbudget.max_budget = bad
    assert llmbudget.max_budget == Decimal(1)


def test_current_cost_can_be_reset_to_zero_only() -> None:
    llmbudget.completion(model="gpt-4o", messages=SEED_MESSAGES, mock_response="hi")
    assert llmbudget.current_cost > 0
    llmbudget._current_cost = Decimal(0)
    assert llmbudget.current_cost == 0
    llmbudget.completion(model="gpt-4o", messages=SEED_MESSAGES, mock_response="hi")
    with pytest.raises(InvalidInputError):
        llmbudget.current_cost = Decimal(5)
    llmbudget.current_cost = Decimal(0)
    assert llmbudget.current_cost == 0


def test_module_attributes_are_live_and_install_is_idempotent() -> None:
    gb.install(llmbudget)
    gb.install("llmbudget")
    gb.set_max_budget(3)
    assert llmbudget.max_budget == Decimal(3)
    assert "max_budget" not in vars(llmbudget)


def test_configure_persists_spend_in_a_store_with_a_period(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'global.db'}"
    gb.configure(store=url, duration="daily", max_budget=1)
    llmbudget.completion(model="gpt-4o", messages=SEED_MESSAGES, mock_response="hello")
    spent = llmbudget.current_cost
    assert spent > 0
    assert gb.status().resets_at is not None  # a daily window

    gb.configure(store="memory://", duration="daily")
    assert llmbudget.current_cost == 0
    gb.configure(store=url, duration="daily")  # another process opening the same store
    assert llmbudget.current_cost == spent
    assert llmbudget.max_budget == Decimal(1)  # unchanged by configure without max_budget


def test_configure_refuses_a_bad_period_without_changing_anything() -> None:
    gb.set_max_budget(1)
    with pytest.raises(InvalidInputError):
        gb.configure(duration="fortnightly-ish")
    assert llmbudget.max_budget == Decimal(1)


def test_reservation_across_stores_rolls_back_on_refusal() -> None:
    first = Ledger(MemoryStore())
    second = Ledger(MemoryStore())
    roomy = Budget.of("a", 10)
    tight = Budget.of("b", "0.5")
    groups = [ScopeGroup(first.plans, (roomy,)), ScopeGroup(second.plans, (tight,))]

    with pytest.raises(BudgetExceededError) as refused:
        run_sync(plan_reserve(groups, 1))
    assert refused.value.scope == "b"
    assert first.status(roomy).held == 0  # the first store's hold was given back

    hold = run_sync(plan_reserve(groups, "0.25"))
    run_sync(plan_settle(hold, "0.2", "m"))
    assert first.status(roomy).spent == second.status(tight).spent == Decimal("0.2")


def test_scopes_sharing_a_store_are_reserved_in_one_atomic_operation() -> None:
    store = MemoryStore()
    calls: list[int] = []
    original = store.reserve

    def counting(hold_id: str, lines: Any, *args: Any) -> Any:
        calls.append(len(lines))
        return original(hold_id, lines, *args)

    store.reserve = counting  # type: ignore[method-assign]
    ledger = Ledger(store)
    a, b = Budget.of("a", 1), Budget.of("b", 1)
    run_sync(plan_reserve([ScopeGroup(ledger.plans, (a,)), ScopeGroup(ledger.plans, (b,))], 1))
    assert calls == [2]


def test_threads_with_mocks_never_pass_the_global_budget() -> None:
    llmbudget.max_budget = "0.01"
    refused: list[BaseException] = []

    def worker() -> None:
        for _ in range(10):
            try:
                llmbudget.completion(
                    model="gpt-4o", messages=SEED_MESSAGES, mock_response=SEED_REPLY * 20
                )
            except BudgetExceededError as exc:
                refused.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert refused
    assert llmbudget.current_cost <= Decimal("0.01")
    assert gb.status().held == 0


async def test_acompletion_uses_the_global_budget() -> None:
    llmbudget.max_budget = 0.001
    await llmbudget.acompletion(model="gpt-4", messages=SEED_MESSAGES, mock_response=SEED_REPLY)
    with pytest.raises(BudgetExceededError):
        await llmbudget.acompletion(model="gpt-4", messages=SEED_MESSAGES, mock_response=SEED_REPLY)


def test_persistent_global_budget_keeps_its_window_anchor_across_restarts(tmp_path: Path) -> None:
    # "2d" windows count from the budget's creation: a second process (or a restart) a day
    # later must count the same window, not start a fresh one at $0.
    from llmbudget.clock import FrozenClock

    url = f"sqlite:///{tmp_path / 'global.db'}"
    clock = FrozenClock(1_700_000_000.0)
    gb.configure(store=url, duration="2d", max_budget=10, clock=clock)
    llmbudget.completion(model="gpt-4o", messages=SEED_MESSAGES, mock_response=SEED_REPLY)
    spent = llmbudget.current_cost
    assert spent > 0

    clock.advance(86_400)  # a day later, another configure() (another run) on the same store
    gb.configure(store=url, duration="2d", max_budget=20, clock=clock)
    assert llmbudget.current_cost == spent
    stored = Ledger(url).get(["global:default"])[0]
    assert stored is not None
    assert stored.created_at == 1_700_000_000.0  # first definer wins...
    assert stored.limit == Decimal("20")  # ...but the new limit is recorded

    clock.advance(86_400)  # two days after the anchor: the next window
    assert llmbudget.current_cost == 0
