"""SQLite specifics beyond the conformance suite."""

from __future__ import annotations

import gc
import sqlite3
import threading
from pathlib import Path

import pytest

from llmbudget.budgets import Budget
from llmbudget.ledger import Ledger
from llmbudget.stores.sqlite import SQLiteStore


def test_connections_of_finished_threads_are_closed(tmp_path: Path) -> None:
    # Server thread pools retire idle threads; their connections must not pile up.
    store = SQLiteStore(str(tmp_path / "threads.db"))
    ledger = Ledger(store)
    user = Budget.of("user:t", "100")
    seen: list[sqlite3.Connection] = []

    def work() -> None:
        ledger.charge([user], "0.01")
        seen.append(store._conn())

    for _ in range(20):
        t = threading.Thread(target=work)
        t.start()
        t.join()
    gc.collect()
    assert len(seen) == 20
    for conn in seen:
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            conn.execute("SELECT 1")
    assert str(ledger.status(user).spent) == "0.2"
    store.close()
