"""LiteLLM's real BudgetManager runs in a directory, then llmbudget's in the same one.

LiteLLM is not a dependency of llmbudget: it runs in a subprocess, with the interpreter
named by ``$LLMBUDGET_LITELLM_PYTHON`` (a virtual environment holding ``litellm``), else
this one if it can import ``litellm``. Without either the test is skipped, saying why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from llmbudget import BudgetManager

# Runs under LiteLLM: budgets of every duration, costs from text and from responses of
# two models, then prints what LiteLLM's own getters say.
LITELLM_SCRIPT = r"""
import json, threading
from litellm import BudgetManager, ModelResponse

bm = BudgetManager(project_name="test_project")
bm.create_budget(total_budget=10, user="1234", duration="daily")
bm.create_budget(total_budget=2.5, user="ann", duration="weekly")
bm.create_budget(total_budget=100, user="bob", duration="monthly")
bm.create_budget(total_budget=1000, user="carol", duration="yearly")
bm.create_budget(total_budget=7, user="life")
usage = {"prompt_tokens": 1234, "completion_tokens": 567, "total_tokens": 1801}
gpt4o = ModelResponse(model="gpt-4o", usage=usage)
bm.update_cost(user="1234", model="gpt-3.5-turbo", input_text="hello world",
               output_text="it's a sunny day in san francisco")
for _ in range(3):
    bm.update_cost(user="ann", completion_obj=gpt4o)
    bm.update_cost(user="ann", model="gpt-3.5-turbo", input_text="a b c", output_text="d e f")
bm.update_cost(user="carol", completion_obj=ModelResponse(model="gpt-4o-mini", usage=usage))
bm.update_cost(user="life", completion_obj=gpt4o)
# LiteLLM saves from background threads: let them finish, then save once more.
for thread in threading.enumerate():
    if thread is not threading.current_thread():
        thread.join()
bm.save_data()
print(json.dumps({
    user: {
        "total_budget": bm.get_total_budget(user),
        "current_cost": bm.get_current_cost(user),
        "model_cost": bm.get_model_cost(user) or {},
        "duration": bm.user_dict[user].get("duration"),
        "created_at": bm.user_dict[user].get("created_at"),
    }
    for user in bm.get_users()
}))
"""


def _litellm_python() -> str:
    given = os.environ.get("LLMBUDGET_LITELLM_PYTHON")
    python = given or sys.executable
    probe = subprocess.run(
        [python, "-c", "import litellm"],
        env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
        capture_output=True,
        timeout=300,
        check=False,
    )
    if probe.returncode != 0:
        where = f"$LLMBUDGET_LITELLM_PYTHON ({given})" if given else f"this interpreter ({python})"
        pytest.skip(
            f"litellm cannot be imported by {where}: set $LLMBUDGET_LITELLM_PYTHON to the "
            "python of a virtual environment with `pip install litellm`"
        )
    return python


def test_litellm_users_budgets_and_costs_carry_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    python = _litellm_python()
    ran = subprocess.run(
        [python, "-c", LITELLM_SCRIPT],
        cwd=tmp_path,
        env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    theirs: dict[str, Any] = json.loads(ran.stdout.strip().splitlines()[-1])
    assert (tmp_path / "user_cost.json").is_file()
    assert theirs["ann"]["current_cost"] > 0 and theirs["ann"]["model_cost"]

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LLMBUDGET_STORE", raising=False)
    ours = BudgetManager(project_name="test_project")  # only the import differs
    assert "imported 5 users" in capsys.readouterr().err

    assert sorted(ours.get_users()) == sorted(theirs)
    for user, their in theirs.items():
        assert ours.is_valid_user(user)
        assert ours.get_total_budget(user) == their["total_budget"], user
        assert ours.user_dict[user].get("duration") == their["duration"], user
        if their["created_at"] is not None:
            assert ours.user_dict[user]["created_at"] == their["created_at"], user
        # Carried to the nano-dollar (LiteLLM's float sums are rounded to the nearest one).
        assert _nano(ours.get_current_cost(user).exact) == _nano_of(their["current_cost"]), user
        assert {m: _nano(c.exact) for m, c in ours.get_model_cost(user).items()} == {
            m: _nano_of(c) for m, c in their["model_cost"].items()
        }, user
    # The same figures a LiteLLM app compares keep their answers.
    for user, their in theirs.items():
        within = their["current_cost"] <= their["total_budget"]
        assert (ours.get_current_cost(user) <= ours.get_total_budget(user)) == within

    # Another start changes nothing and says nothing.
    BudgetManager(project_name="test_project")
    assert capsys.readouterr().err == ""
    assert _nano(BudgetManager("test_project").get_current_cost("ann").exact) == _nano_of(
        theirs["ann"]["current_cost"]
    )


def _nano(amount: Decimal) -> int:
    return int(amount * 10**9)


def _nano_of(value: float) -> int:
    return int((Decimal(repr(value)) * 10**9).to_integral_value())
