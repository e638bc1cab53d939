"""BudgetManager: the seed's examples, run with only the import changed, and its methods."""

from __future__ import annotations

import os
import socket
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from llmbudget import BudgetManager
from llmbudget import manager as manager_module
from llmbudget.clock import FrozenClock
from llmbudget.errors import (
    BudgetExceededError,
    InvalidAmountError,
    InvalidDurationError,
    InvalidInputError,
    StoreUnavailableError,
    UnknownUserError,
)
from llmbudget.manager import DEFAULT_SERVER_URL
from llmbudget.stores.base import Store

# gpt-3.5-turbo list prices: $0.50 / Mtok input, $1.50 / Mtok output.
GPT35_IN, GPT35_OUT = Decimal("0.5") / 10**6, Decimal("1.5") / 10**6


def completion(model: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """Stands in for a provider call: a chat-completion response with usage."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Fine, thanks!"}}],
        "usage": {"prompt_tokens": 14, "completion_tokens": 4, "total_tokens": 18},
    }


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # The seed's examples use the default store: ./llmbudget.db in the working directory.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LLMBUDGET_STORE", raising=False)
    return tmp_path


def test_seed_user_based_example(in_tmp: Path) -> None:
    budget_manager = BudgetManager(project_name="test_project")
    user = "1234"
    # create a budget if new user user
    if not budget_manager.is_valid_user(user):
        budget_manager.create_budget(total_budget=10, user=user)
    # check if a given call can be made
    if budget_manager.get_current_cost(user=user) <= budget_manager.get_total_budget(user):
        response = completion(
            model="gpt-3.5-turbo", messages=[{"role": "user", "content": "Hey, how's it going?"}]
        )
        budget_manager.update_cost(completion_obj=response, user=user)
    else:
        response = "Sorry - no budget!"

    expected = 14 * GPT35_IN + 4 * GPT35_OUT
    assert budget_manager.get_current_cost(user) == expected
    assert budget_manager.get_model_cost(user) == {"gpt-3.5-turbo": expected}
    assert (in_tmp / "llmbudget.db").exists()
    # A second manager (another process, say) sees the same, from the store.
    assert BudgetManager(project_name="test_project").get_current_cost(user) == expected


def test_seed_text_example(in_tmp: Path) -> None:
    budget_manager = BudgetManager(project_name="test_project")
    user = "12345"
    budget_manager.create_budget(total_budget=10, user=user, duration="daily")
    input_text = "hello world"
    output_text = "it's a sunny day in san francisco"
    model = "gpt-3.5-turbo"
    budget_manager.update_cost(
        user=user, model=model, input_text=input_text, output_text=output_text
    )
    # As the API bills it: the input is one user message, 2 cl100k tokens + 7 of chat
    # overhead; the output is completion text, 9 tokens (it|'s| a| sunny| day| in| san|
    # fr|ancisco), no overhead. (LiteLLM counts the output as a message too: 0.0000285.)
    cost = budget_manager.get_current_cost(user)
    assert isinstance(cost, float)
    assert cost.exact == 9 * GPT35_IN + 9 * GPT35_OUT == Decimal("0.000018")


@pytest.fixture
def bm(store: Store, clock: FrozenClock) -> BudgetManager:
    return BudgetManager("proj", store=store, clock=clock)


def test_record_shapes(bm: BudgetManager, clock: FrozenClock) -> None:
    record = bm.create_budget(total_budget="10", user="u", duration="monthly")
    assert record["total_budget"] == Decimal(10)
    assert record["current_cost"] == 0 and record["model_cost"] == {}
    assert record["duration"] == 28  # the seed's day count for "monthly"
    assert record["created_at"] == clock()
    assert record["period"] == "monthly"
    updated = bm.update_cost(user="u", completion_obj=completion("gpt-3.5-turbo", []))
    assert set(updated) == {"user"}
    assert updated["user"]["current_cost"] == 14 * GPT35_IN + 4 * GPT35_OUT
    assert bm.reset_cost("u")["user"]["current_cost"] == 0
    assert bm.save_data() == {"status": "success"}


def test_users_are_isolated_by_project(store: Store, clock: FrozenClock) -> None:
    a = BudgetManager("a", store=store, clock=clock)
    b = BudgetManager("a:b", store=store, clock=clock)  # a prefix-looking project name
    a.create_budget(1, "x")
    b.create_budget(2, "y:z/%")
    assert a.get_users() == ["x"]
    assert b.get_users() == ["y:z/%"]
    assert not a.is_valid_user("y:z/%")


def test_unknown_user_is_a_key_error(bm: BudgetManager) -> None:
    for call in (bm.get_total_budget, bm.get_current_cost, bm.get_model_cost, bm.reset_cost,
                 bm.remaining, bm.reset_on_duration):  # fmt: skip
        with pytest.raises(UnknownUserError) as info:
            call("ghost")
        assert isinstance(info.value, KeyError)
    with pytest.raises(UnknownUserError):
        bm.update_cost(user="ghost", model="gpt-4o", input_text="a", output_text="b")


def test_bad_input_stores_nothing(bm: BudgetManager) -> None:
    for bad in (-1, float("nan"), "ten", None, True):
        with pytest.raises(InvalidAmountError):
            bm.create_budget(total_budget=bad, user="u")  # type: ignore[arg-type]
    with pytest.raises(InvalidDurationError):
        bm.create_budget(total_budget=1, user="u", duration="fortnightly")
    with pytest.raises(InvalidDurationError):
        bm.create_budget(total_budget=1, user="u", duration="daily", timezone="Nowhere/City")
    with pytest.raises(InvalidInputError):
        bm.create_budget(total_budget=1, user="")
    assert bm.get_users() == []
    bm.create_budget(total_budget=1, user="u")
    with pytest.raises(InvalidInputError):
        bm.update_cost(user="u")  # neither a response nor text
    assert bm.get_current_cost("u") == 0


def test_recreating_a_budget_keeps_spend_and_anchor(bm: BudgetManager, clock: FrozenClock) -> None:
    first = bm.create_budget(1, "u", duration="daily")
    h = bm.reserve("u", "0.4")
    bm.settle(h, "0.4", model="m")
    clock.advance(60)
    again = bm.create_budget(2, "u", duration="daily")
    assert again["created_at"] == first["created_at"]
    assert again["current_cost"] == Decimal("0.4") and again["total_budget"] == 2


def test_periods_reset_by_themselves(bm: BudgetManager, clock: FrozenClock) -> None:
    bm.create_budget(1, "u", duration="daily")
    bm.settle(bm.reserve("u", "1"), "1")
    with pytest.raises(BudgetExceededError) as info:
        bm.reserve("u", "0.01")
    assert info.value.resets_at is not None
    clock.set(info.value.resets_at)
    bm.update_budget_all_users()  # the seed's cron job: harmless, changes no spend
    bm.reset_on_duration("u")
    assert bm.get_current_cost("u") == 0
    assert bm.remaining("u") == 1


def test_timezone_aligned_daily_budget(store: Store) -> None:
    clock = FrozenClock(1_773_576_000.0)  # 2026-03-15 12:00 UTC = 21:00 in Tokyo
    bm = BudgetManager("p", store=store, clock=clock, timezone="Asia/Tokyo")
    bm.create_budget(1, "u", duration="daily")
    bm.settle(bm.reserve("u", "0.5"), "0.5")
    clock.advance(3 * 3600)  # 00:00 in Tokyo, 15:00 UTC
    assert bm.get_current_cost("u") == 0


def test_reserve_hold_and_remaining(bm: BudgetManager) -> None:
    bm.create_budget(1, "u")
    with bm.hold("u", "0.6") as h:
        assert bm.remaining("u") == Decimal("0.4")
        with pytest.raises(BudgetExceededError):
            bm.reserve("u", "0.5")
        h.settle("0.25", model="gpt-4o")
    assert bm.remaining("u") == Decimal("0.75")
    assert bm.get_model_cost("u") == {"gpt-4o": Decimal("0.25")}


def test_reserve_worst_case_from_messages(bm: BudgetManager) -> None:
    bm.create_budget(1, "u")
    messages = [{"role": "user", "content": "Say hi"}]
    hold = bm.reserve("u", model="gpt-4o", messages=messages, max_tokens=100)
    # gpt-4o: $2.50 / Mtok in, $10 / Mtok out; the worst case covers 100 output tokens.
    assert hold.amount > 100 * Decimal(10) / 10**6
    assert bm.projected_cost("gpt-4o", messages, "u", max_tokens=100) == 2 * hold.amount
    bm.settle(hold, completion_obj=completion("gpt-4o", messages))
    assert bm.get_current_cost("u") == 14 * Decimal("2.5") / 10**6 + 4 * Decimal(10) / 10**6


def _dead_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed when the block ends: nobody listens there
    return f"http://127.0.0.1:{port}"


def test_hosted_without_api_base_uses_the_servers_default_address() -> None:
    from llmbudget.server import ServerConfig

    config = ServerConfig()
    assert DEFAULT_SERVER_URL == f"http://{config.host}:{config.port}" == "http://127.0.0.1:8000"


def test_hosted_without_api_base_finds_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    from llmbudget.server import ServerConfig, create_app
    from llmbudget.server.testing import live_server

    monkeypatch.setenv("LLMBUDGET_ADMIN_KEY", "k")
    with live_server(create_app(ServerConfig(admin_key="k", store="memory://"))) as base:
        # $LLMBUDGET_SERVER first, as the seed's cookbook constructs it: no api_base.
        monkeypatch.setenv("LLMBUDGET_SERVER", base)
        bm = BudgetManager(project_name="test_project", client_type="hosted")
        assert bm.api_base == base
        bm.create_budget(total_budget=10, user="1234")
        # Then the default address, where `llmbudget serve` listens.
        monkeypatch.delenv("LLMBUDGET_SERVER")
        monkeypatch.setattr(manager_module, "DEFAULT_SERVER_URL", base)
        again = BudgetManager(project_name="test_project", client_type="hosted")
        assert again.api_base == base and again.get_users() == ["1234"]


def test_hosted_says_clearly_when_nothing_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLMBUDGET_SERVER", raising=False)
    dead = _dead_url()
    monkeypatch.setattr(manager_module, "DEFAULT_SERVER_URL", dead)
    with pytest.raises(StoreUnavailableError) as info:
        BudgetManager("p", client_type="hosted")
    message = str(info.value)
    assert f"no llmbudget budget server answers at {dead}" in message
    assert "neither api_base nor $LLMBUDGET_SERVER" in message and "llmbudget serve" in message
    monkeypatch.setenv("LLMBUDGET_SERVER", dead)
    with pytest.raises(StoreUnavailableError, match=r"\$LLMBUDGET_SERVER"):
        BudgetManager("p", client_type="hosted")
    with pytest.raises(StoreUnavailableError, match="api_base"):
        BudgetManager("p", client_type="hosted", api_base=dead)
    with pytest.raises(InvalidInputError):
        BudgetManager("p", client_type="cloud")


def test_default_store_can_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMBUDGET_STORE", f"sqlite:///{tmp_path / 'env.db'}")
    BudgetManager("p").create_budget(1, "u")
    assert os.path.exists(tmp_path / "env.db")


def test_text_costs_are_metered_as_the_api_bills_them(bm: BudgetManager) -> None:
    from llmbudget.pricing import default_prices, prompt_cost
    from llmbudget.tokens import count_tokens

    bm.create_budget(1, "u")
    bm.update_cost(user="u", model="gpt-4o", input_text="hello world", output_text="")
    # The prompt is one user message, counted by the function every prompt is metered with.
    one_message = prompt_cost("gpt-4o", [{"role": "user", "content": "hello world"}])
    assert bm.get_current_cost("u") == one_message == Decimal("0.0000225")
    bm.reset_cost("u")
    bm.update_cost(user="u", model="gpt-4o", input_text="", output_text="it's a sunny day")
    # Completion text carries no message overhead (the empty prompt still does).
    rate = default_prices().lookup("gpt-4o").output_per_mtok / 10**6
    out = count_tokens("it's a sunny day", "gpt-4o") * rate
    assert (
        bm.get_current_cost("u") == prompt_cost("gpt-4o", [{"role": "user", "content": ""}]) + out
    )
