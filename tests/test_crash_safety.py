"""A settled charge survives kill -9 of the process that made it."""

from __future__ import annotations

import os
import select
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


def _kill_after_reports(child: subprocess.Popen[str], count: int, deadline: float) -> None:
    """SIGKILL ``child`` as soon as it has reported ``count`` settles (not after a fixed
    time: a loaded machine may take longer than that just to import the ledger)."""
    assert child.stdout is not None
    seen = 0
    give_up = time.monotonic() + deadline
    try:
        while seen < count:
            if time.monotonic() > give_up:
                pytest.fail(f"the child reported {seen} settles in {deadline} s, not {count}")
            ready, _, _ = select.select([child.stdout], [], [], 0.5)
            if ready:
                line = child.stdout.readline()
                if not line:
                    pytest.fail(f"the child exited after {seen} settles: rc={child.poll()}")
                seen += 1
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()


@pytest.mark.slow
@pytest.mark.parametrize("kill_after", [1, 300])
def test_kill_9_loses_no_reported_settle(tmp_path: Path, kill_after: int) -> None:
    db = tmp_path / "crash.db"
    SQLiteStore(str(db)).close()  # schema created before the race starts
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db)], stdout=subprocess.PIPE, text=True, bufsize=1
    )
    assert child.stdout is not None
    _kill_after_reports(child, kill_after, deadline=120)
    # What the child reported after the lines read before the kill is still in the pipe.
    lines = child.stdout.read().split()
    reported = [kill_after] + [int(line) for line in lines if line.strip()]

    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
    ledger = Ledger(SQLiteStore(str(db)))
    spent = ledger.status(Budget.of("user:crash", None)).spent
    # Every reported settle is stored; at most one more settled after the last report.
    assert spent >= Decimal("0.001") * max(reported)
    assert spent <= Decimal("0.001") * (max(reported) + 1)
    assert spent % Decimal("0.001") == 0
