"""``llmbudget budgets …`` on a store and through a server, ``llmbudget serve`` and its
config file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmbudget.cli import _register, app
from llmbudget.errors import InvalidInputError
from llmbudget.server import ServerConfig, create_app, load_config
from llmbudget.server.auth import check_bind, is_loopback
from llmbudget.server.testing import live_server
from llmbudget.stores.sqlite import SQLiteStore

KEY = "cli-key"

_register()
runner = CliRunner()


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLMBUDGET_ADMIN_KEY", raising=False)
    monkeypatch.delenv("LLMBUDGET_STORE", raising=False)


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    store = SQLiteStore(str(tmp_path / "server.db"))
    with live_server(create_app(ServerConfig(admin_key=KEY), store=store)) as base:
        yield base
    store.close()


def _run(*args: str, input: str | None = None) -> str:
    result = runner.invoke(app, list(args), input=input)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("where", ["store", "server"])
def test_budgets_create_list_show_reset(
    where: str, store_url: str, server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = ["--store", store_url] if where == "store" else ["--server", server, "--key", KEY]
    out = _run(
        "budgets", "create", "alice", "2.50", "--project", "app", "--period", "daily", *target
    )
    assert "created budget for alice" in out and "$2.50" in out
    out = _run("budgets", "create", "alice", "3", "--project", "app", "--period", "daily", *target)
    assert "changed budget for alice" in out
    _run("budgets", "create", "bob", "1", "--project", "other", *target)

    from llmbudget.budgets import Budget
    from llmbudget.ledger import Ledger
    from llmbudget.stores.http import HttpStore

    ledger = Ledger(store_url) if where == "store" else Ledger(HttpStore(server, api_key=KEY))
    ledger.charge([Budget.of("user:app:alice", "3", "daily")], "0.75", model="gpt-4o")

    out = _run("budgets", "list", *target)
    assert "alice" in out and "bob" in out and "$0.75" in out and "$2.25" in out
    out = _run("budgets", "list", "--project", "other", *target)
    assert "bob" in out and "alice" not in out
    out = _run("budgets", "show", "alice", "--project", "app", *target)
    assert "gpt-4o" in out and "$0.75" in out and "daily" in out
    refused = runner.invoke(
        app, ["budgets", "reset", "alice", "--project", "app", *target], input="n\n"
    )
    assert refused.exit_code == 1
    assert ledger.status(Budget.of("user:app:alice", "3", "daily")).spent == 0.75
    out = _run("budgets", "reset", "alice", "--project", "app", "--yes", *target)
    assert "$0.75 → $0.00" in out
    assert ledger.status(Budget.of("user:app:alice", "3", "daily")).spent == 0


def test_budgets_errors_are_clean(store_url: str, server: str) -> None:
    result = runner.invoke(
        app, ["budgets", "show", "nobody", "--project", "app", "--store", store_url]
    )
    assert result.exit_code == 1 and "no budget for user 'nobody'" in result.output
    result = runner.invoke(
        app, ["budgets", "create", "--project", "app", "--store", store_url, "--", "a", "-1"]
    )
    assert result.exit_code == 1 and "must not be negative" in result.output
    result = runner.invoke(app, ["budgets", "list", "--server", server, "--key", "wrong"])
    assert result.exit_code == 1 and "admin key" in result.output
    result = runner.invoke(app, ["budgets", "list", "--server", server, "--store", store_url])
    assert result.exit_code != 0


def test_serve_refuses_a_public_address_without_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[tuple[tuple[object, ...], dict[str, object]]] = []
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: started.append((a, k)))
    result = runner.invoke(app, ["serve", "--host", "0.0.0.0", "--store", "memory://"])
    assert result.exit_code == 2 and "refusing to listen" in result.output
    assert started == []
    ok = runner.invoke(
        app, ["serve", "--host", "0.0.0.0", "--store", "memory://", "--insecure-no-auth"]
    )
    assert ok.exit_code == 0 and len(started) == 1
    monkeypatch.setenv("LLMBUDGET_ADMIN_KEY", "k")
    keyed = runner.invoke(
        app, ["serve", "--host", "0.0.0.0", "--port", "9999", "--store", "memory://"]
    )
    assert keyed.exit_code == 0
    _, kwargs = started[-1]
    assert kwargs["host"] == "0.0.0.0" and kwargs["port"] == 9999


def test_serve_reads_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[dict[str, object]] = []
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda app, **k: started.append({"app": app, **k}))
    config = tmp_path / "server.toml"
    config.write_text(
        'store = "memory://"\nadmin_key = "from-file"\nport = 8123\n'
        '[alerts]\nwebhook_url = "http://127.0.0.1:9/hook"\nthresholds = [0.9]\n'
    )
    result = runner.invoke(app, ["serve", "--config", str(config)])
    assert result.exit_code == 0, result.output
    state = started[0]["app"].state.llmbudget  # type: ignore[attr-defined]
    assert started[0]["port"] == 8123
    assert state.config.admin_key == "from-file"
    assert state.config.alerts.thresholds == (0.9,)
    bad = tmp_path / "bad.toml"
    bad.write_text("colour = 'blue'\n")
    result = runner.invoke(app, ["serve", "--config", str(bad)])
    assert result.exit_code == 2 and "colour: unknown key" in " ".join(result.output.split())
    bad.write_text("[alerts]\ntreshold = [0.5]\n")
    result = runner.invoke(app, ["serve", "--config", str(bad)])
    shown = " ".join(result.output.split())
    assert result.exit_code == 2 and "alerts.treshold: unknown key; did you mean" in shown


def test_load_config_formats_and_validation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "c.json").write_text('{"purge_interval": 5, "alerts": {"thresholds": [1, 0.5]}}')
    (tmp_path / "c.yaml").write_text("hold_ttl: 30\nalerts:\n  budgets:\n    'user:a:b': [0.7]\n")
    assert load_config(tmp_path / "c.json").alerts.thresholds == (0.5, 1.0)
    assert load_config(tmp_path / "c.yaml").alerts.budgets == {"user:a:b": (0.7,)}
    monkeypatch.setenv("LLMBUDGET_STORE", "memory://")
    monkeypatch.setenv("LLMBUDGET_ADMIN_KEY", "env-key")
    loaded = load_config(None)
    assert (loaded.store, loaded.admin_key) == ("memory://", "env-key")
    for text in (
        '{"alerts": {"thresholds": [0]}}',
        '{"alerts": {"thresholds": "50%"}}',
        '{"alerts": {"webhook_url": "ftp://x"}}',
        '{"purge_interval": -1}',
        '{"default_timezone": "Nowhere/Land"}',
        "[1, 2]",
        "{not json",
    ):
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(InvalidInputError):
            load_config(tmp_path / "bad.json")
    with pytest.raises(InvalidInputError):
        load_config(tmp_path / "missing.toml")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.8.9.1", True), ("::1", True), ("[::1]", True),
     ("localhost", True), ("0.0.0.0", False), ("10.0.0.5", False), ("example.com", False)],
)  # fmt: skip
def test_loopback_detection(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    assert (check_bind(host, None, False) is None) is loopback
    assert check_bind(host, "key", False) is None
