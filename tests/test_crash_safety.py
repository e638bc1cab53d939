"""A settled charge survives kill -9 of the process that made it."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from decimal import Decimal
from pathlib import Path

import pytest

from llmbudget.budgets import Budget
from llmbudget.ledger import Ledger
from llmbudget.stores.sqlite import SQLiteStore

CHILD = textwrap.dedent(
    """
    import sys
    from llmbudget.budgets import Budget
    from llmbudget.ledger import Ledger
    from llmbudget.stores.sqlite import SQLiteStore

    ledger = Ledger(SQLiteStore(sys.argv[1]))
    user = Budget.of("user:crash", None)
    i = 0
    while True:
        i += 1
        hold = ledger.reserve([user], "0.002")
        ledger.settle(hold, "0.001", model="m")
        # Reported only after settle returned: the parent holds us to every line.
        sys.stdout.write(f"{i}\\n")
        sys.stdout.flush()
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("kill_after", [0.3, 1.0])
def test_kill_9_loses_no_reported_settle(tmp_path: Path, kill_after: float) -> None:
    db = tmp_path / "crash.db"
    SQLiteStore(str(db)).close()  # schema created before the race starts
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    time.sleep(kill_after)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    reported = [int(line) for line in child.stdout.read().split() if line.strip()]
    assert reported, "the child settled nothing before it was killed"

    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
    ledger = Ledger(SQLiteStore(str(db)))
    spent = ledger.status(Budget.of("user:crash", None)).spent
    # Every reported settle is stored; at most one more settled after the last report.
    assert spent >= Decimal("0.001") * max(reported)
    assert spent <= Decimal("0.001") * (max(reported) + 1)
    assert spent % Decimal("0.001") == 0
