"""The budget server shows settles kept in the journal (/v1/health, /metrics) and replays
them from the start (``llmbudget serve``'s lifespan)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from fastapi.testclient import TestClient

from llmbudget.budgets import Budget
from llmbudget.journal import Pending, default_journal, store_identity
from llmbudget.ledger import Ledger
from llmbudget.money import to_units
from llmbudget.server import ServerConfig, create_app
from llmbudget.stores.sqlite import SQLiteStore

KEY = "api-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
ANN = Budget.of("user:app:ann", 5)


def _kept_by_an_earlier_run(path: Path) -> str:
    """A hold reserved, then its settle kept in the journal (the store was down), then
    the process died: what the next start finds. Returns the store URL."""
    store = SQLiteStore(str(path))
    hold = Ledger(store).reserve([ANN], "0.5")
    lines = tuple(zip(hold.scopes, hold.windows, strict=True))
    default_journal().keep(
        Pending(store_identity(store), "settle", hold.id, to_units("0.3"), held=to_units("0.5"),
                expires_at=hold.expires_at, lines=lines, model="gpt-4o", at=hold.expires_at - 600)
    )  # fmt: skip
    store.close()
    return f"sqlite:///{path}"


def test_health_and_metrics_show_pending_settles(tmp_path: Path) -> None:
    url = _kept_by_an_earlier_run(tmp_path / "ledger.db")
    app = create_app(ServerConfig(admin_key=KEY, store=url))
    client = TestClient(app, headers=AUTH)  # no lifespan: nothing replays them
    health = client.get("/v1/health").json()
    assert health["pending_settles"] == 1 and health["status"] == "degraded"
    assert "llmbudget_pending_settles 1.0" in client.get("/metrics").text


def test_the_server_replays_kept_settles_at_start(tmp_path: Path) -> None:
    url = _kept_by_an_earlier_run(tmp_path / "ledger.db")
    app = create_app(ServerConfig(admin_key=KEY, store=url))
    with TestClient(app, headers=AUTH) as client:  # the lifespan: the flush at start
        health = client.get("/v1/health").json()
        # The first replay ran before the app took requests.
        assert health["pending_settles"] == 0 and health["status"] == "ok"
    assert default_journal().entries() == []
    status = Ledger(url).status(ANN)
    assert (status.spent, status.held) == (Decimal("0.3"), 0)
