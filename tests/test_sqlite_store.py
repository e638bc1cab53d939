"""SQLite specifics beyond the conformance suite."""

from __future__ import annotations

import gc
import sqlite3
import threading
from decimal import Decimal
from pathlib import Path

import pytest

from llmbudget.budgets import Budget
from llmbudget.clock import FrozenClock
from llmbudget.errors import CounterOverflowError
from llmbudget.ledger import Ledger
from llmbudget.stores.base import Line
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


def test_spend_columns_stay_integer_when_a_charge_would_overflow(tmp_path: Path) -> None:
    # Issue 13: two $9e9 charges turned the column REAL (1.8e19); after that 1,000 charges
    # of $0.000001 added nothing. Now the second is refused and the column stays INTEGER.
    path = tmp_path / "ledger.db"
    ledger = Ledger(SQLiteStore(str(path)), clock=FrozenClock(1_773_576_000.0))
    budget = Budget.of("user:p:u", None, "daily")
    ledger.charge([budget], "9e9", model="m")
    with pytest.raises(CounterOverflowError):
        ledger.charge([budget], "9e9", model="m")
    for _ in range(1000):
        ledger.charge([budget], "0.000001", model="m")
    assert ledger.status(budget).spent == Decimal("9000000000.001")
    with sqlite3.connect(path) as conn:
        types = conn.execute(
            "SELECT typeof(spent) FROM spend UNION SELECT typeof(spent) FROM spend_model"
        ).fetchall()
    assert types == [("integer",)]
    ledger.close()


def test_the_default_store_is_created_at_the_first_write_not_on_open_or_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 10: BudgetManager("p").get_users() in an empty directory created ./llmbudget.db.
    from llmbudget.errors import UnknownHoldError
    from llmbudget.manager import BudgetManager

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LLMBUDGET_STORE", raising=False)
    bm = BudgetManager("p")
    assert bm.get_users() == []
    assert bm.is_valid_user("u") is False
    store = bm.ledger.store
    assert store.usage("s", 0, 0.0).spent == 0 and store.history("s") == []
    assert store.list_docs("k") == [] and store.get_doc("k", "x") is None
    assert store.read_log("k") == [] and store.purge(0.0, 0.0) == 0
    assert store.delete_budget("s") is False and store.delete_doc("k", "x") is False
    with pytest.raises(UnknownHoldError):
        store.settle("h", 1, None, 0.0)
    assert list(tmp_path.iterdir()) == []
    bm.create_budget(total_budget=1, user="u", duration="daily")
    assert (tmp_path / "llmbudget.db").exists()
    assert bm.get_users() == ["u"]


def test_a_store_that_found_no_file_sees_the_one_another_store_creates(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    reader, writer = SQLiteStore(path), SQLiteStore(path)
    assert reader.list_budgets("") == []
    from llmbudget.stores.base import BudgetRecord

    writer.put_budget(BudgetRecord("a", 1, "daily"))
    assert [r.scope for r in reader.list_budgets("")] == ["a"]
    reader.close()
    writer.close()


def test_a_database_of_the_previous_schema_upgrades_in_place(tmp_path: Path) -> None:
    # Version 3: budgets without a unit, holds whose lines have no amounts of their own.
    from llmbudget.stores.sqlite import _MIGRATIONS

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for script in _MIGRATIONS[:3]:
        conn.executescript(script)
    conn.execute("PRAGMA user_version=3")
    conn.execute("INSERT INTO budgets VALUES ('user:a', 1000000000, NULL, 'UTC', 0, 0.0, 0.0)")
    conn.execute(
        "INSERT INTO holds (id, amount, expires_at, state, lines) "
        """VALUES ('old', 40, 1e10, 'held', '[["user:a", 0], ["team:t", 0]]')"""
    )
    conn.executemany(
        "INSERT INTO active_holds VALUES (?, 0, 'old', 40, 1e10)", [("user:a",), ("team:t",)]
    )
    conn.commit()
    conn.close()

    store = SQLiteStore(str(path))
    try:
        (record,) = store.get_budgets(["user:a"])
        assert record is not None and record.unit == "usd"
        assert Budget.from_record(record) == Budget.of("user:a", 1)
        # The old hold replays as itself, and settles (with a count beside it) as before.
        lines = [Line("user:a", 0, 100), Line("team:t", 0)]
        assert store.reserve("old", lines, 40, 1e10, 1.0) is None
        assert store.usage("team:t", 0, 1.0).held == 40
        store.settle("old", 30, None, 1.0, {"team:t": 2})
        assert (store.usage("user:a", 0, 1.0).spent, store.usage("team:t", 0, 1.0).spent) == (30, 2)
    finally:
        store.close()
