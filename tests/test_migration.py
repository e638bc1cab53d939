"""LiteLLM's ``user_cost.json`` (and ``/get_budget`` dumps) imported into llmbudget."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from llmbudget import BudgetManager, migration
from llmbudget.cli import _register, app
from llmbudget.clock import FrozenClock
from llmbudget.errors import InvalidInputError
from llmbudget.ledger import Ledger
from llmbudget.server import ServerConfig, create_app
from llmbudget.server.testing import live_server
from llmbudget.stores.memory import MemoryStore

NOW = 1_773_576_000.0  # the conftest clock: 2026-03-15 12:00 UTC
DAY = 86_400.0
# What LiteLLM's BudgetManager writes: floats, durations in days, no duration for lifetime.
LITELLM_USERS: dict[str, Any] = {
    "1234": {
        "total_budget": 10,
        "duration": 1,
        "created_at": NOW - 3600,
        "last_updated_at": NOW - 3600,
        "current_cost": 2.85e-05,
        "model_cost": {"gpt-3.5-turbo": 2.85e-05},
    },
    "ann": {
        "total_budget": 2.5,
        "duration": 7,
        "created_at": NOW - 3600,
        "last_updated_at": NOW - 3600,
        "current_cost": 0.0075185,
        "model_cost": {"gpt-4o": 0.0075, "gpt-3.5-turbo": 1.85e-05},
    },
    "bob": {"total_budget": 100, "duration": 28, "created_at": NOW, "last_updated_at": NOW},
    "life": {"total_budget": 7, "current_cost": 0.0075, "model_cost": {"gpt-4o": 0.0075}},
}


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LLMBUDGET_STORE", raising=False)
    (tmp_path / "user_cost.json").write_text(json.dumps(LITELLM_USERS, indent=4))
    return tmp_path


def _state(bm: BudgetManager) -> dict[str, Any]:
    return {
        user: (
            bm.get_total_budget(user).exact,
            bm.user_dict[user].get("duration"),
            bm.get_current_cost(user).exact,
            {m: c.exact for m, c in bm.get_model_cost(user).items()},
        )
        for user in bm.get_users()
    }


EXPECTED = {
    "1234": (Decimal(10), 1, Decimal("0.0000285"), {"gpt-3.5-turbo": Decimal("0.0000285")}),
    "ann": (
        Decimal("2.5"),
        7,
        Decimal("0.0075185"),
        {"gpt-3.5-turbo": Decimal("0.0000185"), "gpt-4o": Decimal("0.0075")},
    ),
    "bob": (Decimal(100), 28, Decimal(0), {}),
    "life": (Decimal(7), None, Decimal("0.0075"), {"gpt-4o": Decimal("0.0075")}),
}


def test_first_use_imports_and_says_so_once(
    in_tmp: Path, clock: FrozenClock, capsys: pytest.CaptureFixture[str]
) -> None:
    bm = BudgetManager(project_name="test_project", clock=clock)
    said = capsys.readouterr().err
    assert "imported 4 users of LiteLLM's BudgetManager" in said and "user_cost.json" in said
    assert "test_project" in said and "sqlite:///llmbudget.db" in said
    assert _state(bm) == EXPECTED
    assert bm.get_budget("1234").created_at == NOW - 3600
    assert bm.user_dict["bob"]["period"] == "monthly"
    # The next start, another project's manager in another process...: nothing more.
    BudgetManager(project_name="test_project", clock=clock)
    assert capsys.readouterr().err == ""
    assert _state(BudgetManager(project_name="test_project", clock=clock)) == EXPECTED


def test_no_import_when_the_project_already_has_budgets_or_opts_out(
    in_tmp: Path, clock: FrozenClock, capsys: pytest.CaptureFixture[str]
) -> None:
    BudgetManager("skip", clock=clock, import_litellm=False).create_budget(1, "someone")
    assert BudgetManager("skip", clock=clock).get_users() == ["someone"]
    assert capsys.readouterr().err == ""
    # Each project is imported on its own first use, as LiteLLM's file serves every project.
    assert sorted(BudgetManager("other", clock=clock).get_users()) == sorted(LITELLM_USERS)


def test_a_project_imported_once_is_not_imported_again_after_its_users_are_deleted(
    in_tmp: Path, clock: FrozenClock
) -> None:
    bm = BudgetManager("p", clock=clock)
    for user in bm.get_users():
        bm.delete_budget(user)
    assert BudgetManager("p", clock=clock).get_users() == []


def test_a_bad_file_names_itself_and_stores_nothing(
    in_tmp: Path, clock: FrozenClock, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = dict(LITELLM_USERS, zed={"total_budget": -3})
    (in_tmp / "user_cost.json").write_text(json.dumps(broken))
    with pytest.raises(InvalidInputError, match=r"user_cost.json: .*zed.*total_budget"):
        BudgetManager("p", clock=clock)
    (in_tmp / "user_cost.json").write_text("{not json")
    with pytest.raises(InvalidInputError, match=r"user_cost\.json: is not JSON"):
        BudgetManager("p", clock=clock)
    assert BudgetManager("p", clock=clock, import_litellm=False).get_users() == []
    # Fixed, the next start imports it.
    (in_tmp / "user_cost.json").write_text(json.dumps(LITELLM_USERS))
    assert _state(BudgetManager("p", clock=clock)) == EXPECTED
    assert "imported 4 users" in capsys.readouterr().err


def test_importing_twice_changes_nothing_and_a_newer_file_adds_only_the_new_spend(
    clock: FrozenClock,
) -> None:
    ledger = Ledger(MemoryStore(), clock=clock)
    first = migration.import_users(ledger, "p", LITELLM_USERS)
    assert first.users == 4 and first.budgets_changed == 4
    assert first.charged == Decimal("0.0150470")
    again = migration.import_users(ledger, "p", LITELLM_USERS)
    assert again.budgets_changed == 0 and again.charged == 0
    assert "nothing changed" in again.describe()
    # LiteLLM ran on and spent more before the file was imported again.
    newer = json.loads(json.dumps(LITELLM_USERS))
    newer["ann"]["current_cost"] += 0.01
    newer["ann"]["model_cost"]["gpt-4o"] += 0.01
    assert migration.import_users(ledger, "p", newer).charged == Decimal("0.01")
    bm = BudgetManager("p", store=ledger.store, clock=clock)
    assert bm.get_model_cost("ann")["gpt-4o"] == Decimal("0.0175")


def test_a_window_that_started_before_ours_keeps_its_start(clock: FrozenClock) -> None:
    ledger = Ledger(MemoryStore(), clock=clock)
    users = {"old": dict(LITELLM_USERS["1234"], last_updated_at=NOW - 2 * DAY)}
    migration.import_users(ledger, "p", users)
    bm = BudgetManager("p", store=ledger.store, clock=clock)
    assert bm.user_dict["old"]["last_updated_at"] == NOW - 2 * DAY
    assert bm.get_current_cost("old") > 0
    bm.update_budget_all_users()  # LiteLLM's job would reset this user now: so does ours
    assert bm.get_current_cost("old") == 0
    migration.import_users(ledger, "p", users)  # importing again neither charges nor resets
    bm.update_cost(user="old", model="gpt-4o", input_text="a", output_text="b")
    bm.update_budget_all_users()
    assert bm.get_current_cost("old") > 0


def test_hosted_dumps_and_set_budget_bodies(tmp_path: Path, clock: FrozenClock) -> None:
    dump = tmp_path / "get_budget.json"
    dump.write_text(json.dumps({"status": "success", "data": LITELLM_USERS}))
    assert migration.read_litellm_data(dump) == LITELLM_USERS
    body = tmp_path / "set_budget.json"
    body.write_text(json.dumps({"project_name": "x", "user_dict": LITELLM_USERS}))
    assert migration.read_litellm_data(body) == LITELLM_USERS
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"status": "error", "message": "no budgets"}))
    assert migration.read_litellm_data(empty) == {}
    # An llmbudget server's dump carries sync markers: they are dropped, the spend counted.
    ledger = Ledger(MemoryStore(), clock=clock)
    marked = {"u": dict(LITELLM_USERS["life"], llmbudget_sync={"session": "0" * 32})}
    assert migration.import_users(ledger, "p", marked).charged == Decimal("0.0075")
    with pytest.raises(InvalidInputError, match=r"missing\.json: cannot be read"):
        migration.read_litellm_data(tmp_path / "missing.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(InvalidInputError, match="a JSON object of users"):
        migration.read_litellm_data(tmp_path / "list.json")


def test_many_users_are_checked_before_any_is_written(
    clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(migration, "_CHUNK", 2)  # several protocol calls
    users = {f"u{i}": {"total_budget": 1, "current_cost": 0.5} for i in range(5)}
    users["u4"] = {"total_budget": "lots"}
    ledger = Ledger(MemoryStore(), clock=clock)
    with pytest.raises(InvalidInputError):
        migration.import_users(ledger, "p", users)
    assert ledger.budgets("") == []
    users["u4"] = {"total_budget": 1}
    assert migration.import_users(ledger, "p", users).charged == 2


# -- llmbudget import ------------------------------------------------------------------


@pytest.fixture
def cli() -> Iterator[CliRunner]:
    _register()
    yield CliRunner()


def test_cli_imports_into_a_store_idempotently(in_tmp: Path, cli: CliRunner) -> None:
    url = f"sqlite:///{in_tmp / 'target.db'}"
    args = ["import", "user_cost.json", "--project", "app", "--store", url]
    first = cli.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "4 budgets created or changed" in first.output
    second = cli.invoke(app, args)
    assert second.exit_code == 0 and "nothing changed" in second.output
    bm = BudgetManager("app", store=url, import_litellm=False)
    assert {u: s[2] for u, s in _state(bm).items()} == {u: e[2] for u, e in EXPECTED.items()}


def test_cli_imports_through_a_budget_server(
    in_tmp: Path, cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LLMBUDGET_ADMIN_KEY", raising=False)
    backing = MemoryStore()
    with live_server(create_app(ServerConfig(admin_key="sk-k"), store=backing)) as base:
        done = cli.invoke(
            app, ["import", "user_cost.json", "--project", "app", "--server", base, "--key", "sk-k"]
        )
        assert done.exit_code == 0, done.output
        hosted = BudgetManager("app", client_type="hosted", api_base=base,
                               headers={"Authorization": "Bearer sk-k"})  # fmt: skip
        assert {u: s[2] for u, s in _state(hosted).items()} == {
            u: e[2] for u, e in EXPECTED.items()
        }


def test_cli_errors_are_one_line_and_store_nothing(in_tmp: Path, cli: CliRunner) -> None:
    (in_tmp / "bad.json").write_text(json.dumps({"u": {"total_budget": "ten"}}))
    url = f"sqlite:///{in_tmp / 'target.db'}"
    done = cli.invoke(app, ["import", "bad.json", "--project", "app", "--store", url])
    assert done.exit_code == 1 and "bad.json" in done.output and "total_budget" in done.output
    assert BudgetManager("app", store=url, import_litellm=False).get_users() == []
    both = cli.invoke(
        app, ["import", "bad.json", "--project", "a", "--store", url, "--server", "http://x"]
    )
    assert both.exit_code != 0
