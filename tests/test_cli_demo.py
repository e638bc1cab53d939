from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from llmbudget import BudgetManager
from llmbudget.cli import _register, app
from llmbudget.cli.demo import PROJECT, USERS


def test_demo_runs_on_sqlite_and_nobody_overspends(tmp_path: Path) -> None:
    _register()
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    result = CliRunner().invoke(
        app, ["demo", "--store", url, "--agents", "6", "--seconds", "1"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("within budget") == len(USERS)
    bm = BudgetManager(PROJECT, store=url)
    for user in USERS:
        status = bm.status(user)
        assert status.limit is not None
        assert 0 < status.spent <= status.limit
        assert status.held == 0
