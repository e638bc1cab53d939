"""The command line speaks its own language: ``--version``, help with placeholders
(``USER``, ``--store URL``), errors naming options and environment variables,
``budgets show USER`` without ``--project``, and ``serve``'s start-up block."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

import llmbudget
from llmbudget.cli import _register, app
from llmbudget.cli.serve import startup_block
from llmbudget.server import ServerConfig, create_app
from llmbudget.server.testing import live_server
from llmbudget.stores.sqlite import SQLiteStore
from tests.gateway_fakes import deployment

KEY = "usability-key"

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


def _invoke(*args: str, **kwargs: Any) -> Any:
    return runner.invoke(app, list(args), env={"COLUMNS": "80"}, **kwargs)


def _ok(*args: str) -> str:
    result = _invoke(*args)
    assert result.exit_code == 0, result.output
    return str(result.output)


def _error(*args: str, code: int = 1) -> str:
    result = _invoke(*args)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    return " ".join(str(result.output).split())  # one line, whatever the wrapping


def test_version() -> None:
    assert _ok("--version").strip() == f"llmbudget {llmbudget.__version__}"


def _command_paths(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from _command_paths(sub, (*path, name))


def test_every_help_page_shows_placeholders_not_python_types() -> None:
    paths = list(_command_paths(typer.main.get_command(app)))
    assert ("budgets", "create") in paths and ("prices", "show") in paths and ("serve",) in paths
    for path in paths:
        page = _ok(*path, "--help")
        assert not re.search(r"<(bool|str|int|float|file|path|int range|float range)>", page), (
            path,
            page,
        )
        assert not re.search(r"\{\w+\}", page), (path, page)
    usage = _ok("budgets", "create", "--help")
    assert "budgets create [OPTIONS] USER AMOUNT" in usage
    assert re.search(r"--store\s+URL", usage) and re.search(r"--project\s+NAME", usage)
    assert "MODEL" in _ok("cost", "--help")


def test_unknown_user_says_which_command_creates_it(store_url: str) -> None:
    _ok("budgets", "create", "ann", "1", "--project", "app", "--store", store_url)
    message = _error("budgets", "show", "bob", "--project", "app", "--store", store_url)
    assert "no budget for user 'bob' in project 'app'" in message
    assert "llmbudget budgets create bob AMOUNT --project app" in message
    assert "create_budget()" not in message


def test_bad_period_and_timezone_name_the_options(store_url: str) -> None:
    target = ("--project", "app", "--store", store_url)
    message = _error("budgets", "create", "ann", "1", "--period", "fortnightly", *target)
    assert message.startswith("error: --period: unknown duration 'fortnightly'")
    assert "leave --period out for a lifetime budget" in message and "None" not in message
    message = _error("budgets", "create", "ann", "1", "--timezone", "Mars/Olympus", *target)
    assert "--timezone" in message and "Mars/Olympus" in message


def test_server_key_errors_name_the_option_and_the_variable(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    message = _error("budgets", "list", "--server", server)
    assert "--key" in message and "$LLMBUDGET_ADMIN_KEY" in message
    assert "Authorization" not in message and "Bearer" not in message
    message = _error("budgets", "list", "--server", server, "--key", "wrong")
    assert "refused the admin key from --key" in message
    monkeypatch.setenv("LLMBUDGET_ADMIN_KEY", "also-wrong")
    message = _error("budgets", "list", "--server", server)
    assert "refused the admin key from $LLMBUDGET_ADMIN_KEY" in message
    assert "usability" not in _ok("budgets", "list", "--server", server, "--key", KEY)


def test_show_and_reset_find_the_project_when_unambiguous(store_url: str) -> None:
    s = ("--store", store_url)
    assert "no budgets in this store yet" in _error("budgets", "show", "ann", *s)
    _ok("budgets", "create", "ann", "2.50", "--project", "app", "--period", "daily", *s)
    out = _ok("budgets", "show", "ann", *s)
    assert "app / ann" in out and "$2.50" in out
    _ok("budgets", "create", "bob", "1", "--project", "other", *s)
    assert "app / ann" in _ok("budgets", "show", "ann", *s)  # only one project has ann
    assert "reset ann in app" in _ok("budgets", "reset", "ann", "--yes", *s)
    message = _error("budgets", "show", "carol", *s)
    assert "no budget for user 'carol' in any project (projects: 'app', 'other')" in message
    assert "llmbudget budgets create carol AMOUNT --project NAME" in message
    _ok("budgets", "create", "ann", "1", "--project", "other", *s)
    message = _error("budgets", "show", "ann", *s)
    assert "has budgets in projects 'app', 'other': pass --project NAME" in message
    assert "other / ann" in _ok("budgets", "show", "ann", "--project", "other", *s)


def test_empty_list_says_how_to_create(store_url: str) -> None:
    out = " ".join(_ok("budgets", "list", "--store", store_url).split())
    assert "no budgets; create one with: llmbudget budgets create USER AMOUNT" in out


def test_cost_of_a_tiny_call_is_plain() -> None:
    out = _ok("cost", "gpt-4o-mini", "--input-tokens", "1")
    assert "$0.00000015" in out and "E-" not in out


def _serve(monkeypatch: pytest.MonkeyPatch, *args: str) -> str:
    import uvicorn

    started: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.append(kw))
    out = _ok("serve", *args)
    assert len(started) == 1
    return out


def test_serve_prints_one_block_before_starting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'served.db'}"
    out = _serve(monkeypatch, "--store", url, "--port", "8123", "--workers", "1")
    lines = out.splitlines()
    assert lines[0] == f"llmbudget {llmbudget.__version__} server"
    block = dict(re.findall(r"^  (\w+(?: \w+)?)\s{2,}(.*)$", out, flags=re.M))
    assert block == {
        "listening": "http://127.0.0.1:8123",
        "store": url,
        "dashboard": "http://127.0.0.1:8123/ui",
        "gateway": "not mounted (a model_list in --config adds it)",
        "admin key": "not set: every endpoint is open to anyone on this machine",
        "workers": "1",
    }

    config = tmp_path / "gw.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "admin_key": "from-file",
                "store": "memory://",
                "model_list": [
                    deployment("http://127.0.0.1:9", name="a"),
                    deployment("http://127.0.0.1:9", name="a", id_="a-2"),
                    deployment("http://127.0.0.1:9", name="b"),
                ],
            }
        )
    )
    out = _serve(monkeypatch, "--config", str(config), "--host", "0.0.0.0")
    assert "  store       memory://" in out
    assert "  dashboard   http://127.0.0.1:8000/ui" in out
    assert "  gateway     mounted: 2 model(s), 3 deployment(s)" in out
    assert "  admin key   set" in out
    out = _serve(monkeypatch, "--store", "memory://", "--host", "0.0.0.0", "--insecure-no-auth")
    assert "admin key   not set, --insecure-no-auth" in out
    assert "warning" not in out  # the block says it once


def test_startup_block_hides_a_store_password() -> None:
    block = startup_block(
        host="127.0.0.1",
        port=8000,
        store="postgresql://app:s3cret@db.internal:5432/ledger",
        gateway=None,
        admin_key=True,
        insecure=False,
    )
    assert "s3cret" not in block and "postgresql://app:***@db.internal:5432/ledger" in block


@pytest.mark.parametrize(
    "name",
    ["llmbudget.cli.errors", "llmbudget.cli.help", "llmbudget.cli.serve", "llmbudget.cli.demo"],
)
def test_docstring_examples(name: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0
