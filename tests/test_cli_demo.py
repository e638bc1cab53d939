from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from llmbudget import BudgetManager
from llmbudget.cli import _register, app
from llmbudget.cli.demo import LEGEND, PROJECT, USERS


def _user_rows(output: str) -> list[str]:
    return [line for line in output.splitlines() if any(f"│ {u} " in line for u in USERS)]


def test_demo_runs_on_sqlite_and_nobody_overspends(tmp_path: Path) -> None:
    _register()
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    result = CliRunner().invoke(
        app, ["demo", "--store", url, "--agents", "6", "--seconds", "1"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    rows = _user_rows(result.output)
    assert len(rows) == len(USERS) and all(row.rstrip(" │").endswith("yes") for row in rows)
    bm = BudgetManager(PROJECT, store=url)
    for user in USERS:
        status = bm.status(user)
        assert status.limit is not None
        assert 0 < status.spent <= status.limit
        assert status.held == 0


def test_demo_piped_fits_80_columns_explains_and_ends_with_next_steps(tmp_path: Path) -> None:
    # A real pipe, no terminal and no $COLUMNS: what `llmbudget demo | less` gets.
    # (cwd=tmp_path and a relative store URL: a long URL is printed whole, never wrapped)
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    done = subprocess.run(
        [sys.executable, "-c", "from llmbudget.cli import main; main()", "demo",
         "--store", "sqlite:///d.db", "--agents", "4", "--seconds", "0.5"],
        capture_output=True, text=True, env=env, timeout=120, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, done.stdout
    # Every user is one table row: nothing wrapped onto a second line.
    assert len(_user_rows(done.stdout)) == len(USERS), done.stdout
    header = next(line for line in lines if "spent" in line and "refused" in line)
    for column in ("spent", "left", "refused"):
        assert column in header and f"{column}:" in LEGEND
    assert LEGEND in lines and len(LEGEND) <= 80
    tail = lines[lines.index("Next steps:") :]
    assert tail[1].strip() == "llmbudget budgets list --store sqlite:///d.db"
    assert tail[2].strip() == "llmbudget serve --store sqlite:///d.db"
    assert "http://127.0.0.1:8000/ui" in tail[3]
    assert tail[-1] == lines[-1]
