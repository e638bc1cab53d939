"""What LiteLLM's own BudgetManager tests check, against ``llmbudget.BudgetManager``.

LiteLLM's ``tests/local_testing/test_budget_manager.py`` has two live tests (``created_at``
is the time of each call, and a given ``created_at`` is kept) and six scenarios, kept
there commented out, that run against a module-level
``BudgetManager(project_name="test_project", client_type="hosted")`` and real
``completion()`` calls. They are re-created here with the same calls, in the same order,
on the same manager; only the import differs. The hosted manager finds its server the
way the scenarios construct it, without ``api_base`` (``$LLMBUDGET_SERVER``), and
``completion()`` reaches a fake OpenAI server through ``$OPENAI_API_BASE``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmbudget import BudgetManager, completion
from llmbudget.server import ServerConfig, create_app
from llmbudget.server.testing import live_server
from tests.fakes import FakeLLMServer

KEY = "sk-admin-suite-0123456789"


# -- the two live tests ----------------------------------------------------------------


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LLMBUDGET_STORE", raising=False)
    return tmp_path


def test_each_create_budget_is_stamped_with_its_own_time(in_tmp: Path) -> None:
    manager = BudgetManager(project_name="test_project", client_type="local")
    first = manager.create_budget(total_budget=100.0, user="user1", duration="daily")
    # LiteLLM's test sleeps 0.1 s here; waiting for the clock to move says the same.
    deadline = time.monotonic() + 10
    while time.time() <= first["created_at"] and time.monotonic() < deadline:
        time.sleep(0.001)
    second = manager.create_budget(total_budget=100.0, user="user2", duration="daily")
    assert second["created_at"] > first["created_at"]


def test_a_given_created_at_is_kept(in_tmp: Path) -> None:
    manager = BudgetManager(project_name="test_project", client_type="local")
    record = manager.create_budget(
        total_budget=100.0, user="user_custom", duration="daily", created_at=1234567890.0
    )
    assert record["created_at"] == 1234567890.0


# -- the six scenarios, on one hosted manager -------------------------------------------


@pytest.fixture(scope="module")
def budget_manager() -> Iterator[BudgetManager]:
    with (
        pytest.MonkeyPatch.context() as env,
        FakeLLMServer() as fake,
        live_server(create_app(ServerConfig(admin_key=KEY, store="memory://"))) as base,
    ):
        env.setenv("LLMBUDGET_SERVER", base)
        env.setenv("LLMBUDGET_ADMIN_KEY", KEY)
        env.setenv("OPENAI_API_BASE", fake.openai_url)
        env.setenv("OPENAI_API_KEY", "sk-test")
        yield BudgetManager(project_name="test_project", client_type="hosted")


def _ask(content: str) -> dict[str, Any]:
    return {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": content}]}


def test_scenario_1_budget_enough_for_a_call(budget_manager: BudgetManager) -> None:
    user = "1234"
    budget_manager.create_budget(total_budget=10, user=user, duration="daily")
    data = _ask("Hey, how's it going?")
    if budget_manager.get_current_cost(user=user) <= budget_manager.get_total_budget(user):
        response = completion(**data)
        updated = budget_manager.update_cost(completion_obj=response, user=user)
    else:
        pytest.fail("a user with $10 and nothing spent was refused")
    assert updated["user"]["current_cost"] > 0
    assert budget_manager.get_current_cost(user) == updated["user"]["current_cost"]


def test_scenario_2_budget_not_enough(budget_manager: BudgetManager) -> None:
    user = "12345"
    budget_manager.create_budget(total_budget=0, user=user, duration="daily")
    data = _ask("Hey, how's it going?")
    if budget_manager.get_current_cost(user=user) < budget_manager.get_total_budget(user=user):
        completion(**data)
        pytest.fail("a user with a $0 budget was let through")
    assert budget_manager.get_current_cost(user) == 0


def test_scenario_3_save_data_succeeds(budget_manager: BudgetManager) -> None:
    response = budget_manager.save_data()
    assert response["status"] != "error"


def test_scenario_4_get_users(budget_manager: BudgetManager) -> None:
    assert budget_manager.get_users() == ["1234", "12345"]


def test_scenario_5_reset_once_the_duration_has_passed(budget_manager: BudgetManager) -> None:
    user = "123456"
    budget_manager.create_budget(total_budget=10, user=user, duration="daily")
    data = _ask("Hello!")
    if budget_manager.get_current_cost(user=user) <= budget_manager.get_total_budget(user=user):
        response = completion(**data)
        budget_manager.update_cost(completion_obj=response, user=user)
    assert budget_manager.get_current_cost(user) > 0
    # LiteLLM's way of letting a day pass: move the window start back a day.
    one_day_in_seconds = 24 * 60 * 60
    budget_manager.user_dict[user]["last_updated_at"] -= one_day_in_seconds
    budget_manager.update_budget_all_users()
    assert budget_manager.get_current_cost(user) == 0
    # Once: the next run of the daily job does not reset again.
    budget_manager.update_cost(completion_obj=completion(**data), user=user)
    budget_manager.update_budget_all_users()
    assert budget_manager.get_current_cost(user) > 0


def test_scenario_6_cost_from_text(budget_manager: BudgetManager) -> None:
    user = "12345"
    budget_manager.create_budget(total_budget=10, user=user, duration="daily")
    budget_manager.update_cost(
        user=user,
        model="gpt-3.5-turbo",
        input_text="hello world",
        output_text="it's a sunny day in san francisco",
    )
    # 9 prompt tokens (one user message) at $0.50/M + 9 completion tokens at $1.50/M.
    assert budget_manager.get_current_cost(user) == 0.000018
