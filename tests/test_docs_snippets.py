"""Every ```python block of README.md and docs/*.md runs, offline, as pasted.

See :mod:`tests.snippets` for how blocks run and how a block asks for a running server.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml

from tests.fakes import FakeLLMServer
from tests.snippets import Snippet, parse, run
from tests.storekit import (
    POSTGRES_URL,
    REDIS_URL,
    delete_redis_prefix,
    drop_postgres_schema,
    isolation_name,
    with_query,
)

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ADMIN_KEY = "sk-admin-docs-0123456789"


def _snippets(page: Path) -> list[Snippet]:
    return parse(page.read_text(encoding="utf-8"), str(page.relative_to(ROOT)))


def _cases() -> list[Any]:
    cases: list[Any] = []
    for page in PAGES:
        snippets = _snippets(page)
        plain = [s for s in snippets if s.needs is None]
        if plain:
            cases.append(pytest.param(plain, id=str(page.relative_to(ROOT))))
        for s in snippets:
            if s.needs is not None:
                cases.append(pytest.param([s], id=s.where))
    return cases


@pytest.fixture
def fake() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as server:
        yield server


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(ROOT / "examples", work / "examples")
    return work


def _environment(fake: FakeLLMServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMBUDGET_", "OPENAI_"))}
    env.pop("ANTHROPIC_API_KEY", None)
    env.update(
        {
            # Every provider the pages call lands on the fake server.
            "OPENAI_API_KEY": "sk-docs-test",
            "OPENAI_BASE_URL": fake.openai_url,  # the openai SDK's own variable
            "OPENAI_API_BASE": fake.openai_url,  # llmbudget's provider table
            "ANTHROPIC_API_KEY": "sk-ant-docs-test",
            "ANTHROPIC_BASE_URL": fake.anthropic_url,
            "ANTHROPIC_API_BASE": fake.anthropic_url,
            "LLMBUDGET_ADMIN_KEY": ADMIN_KEY,
            "CI_GATEWAY_KEY": "sk-ci-docs-0123456789",
            "AZURE_OPENAI_KEY": "azure-docs-test",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


@contextmanager
def _server(needs: str, work: Path, fake: FakeLLMServer, env: dict[str, str]) -> Iterator[None]:
    """Start what a block's ``# needs:`` line asks for; sets the variables it reads."""
    words = needs.split()
    if words[:2] == ["llmbudget", "serve"]:
        from llmbudget.server import ServerConfig, create_app, load_config
        from llmbudget.server.testing import live_server

        store = f"sqlite:///{work / 'server.db'}"
        if words[2:3] == ["--config"]:
            config = yaml.safe_load((work / words[3]).read_text())
            # The example's deployments name real providers: send them to the fake instead.
            for entry in config.get("model_list", []):
                entry.setdefault("litellm_params", {})["api_base"] = fake.openai_url
            config.setdefault("general_settings", {})["store"] = store
            path = work / "served-config.yaml"
            path.write_text(yaml.safe_dump(config))
            # The config names its secrets by environment variable, read when it loads.
            with mock.patch.dict(os.environ, env):
                app = create_app(replace(load_config(path), admin_key=ADMIN_KEY))
        else:
            app = create_app(ServerConfig(store=store, admin_key=ADMIN_KEY))
        with live_server(app) as url:
            env["LLMBUDGET_SERVER"] = url
            yield
    elif words == ["postgresql"]:
        schema = isolation_name(work)
        env["DATABASE_URL"] = with_query(POSTGRES_URL, schema=schema)
        try:
            yield
        finally:
            drop_postgres_schema(schema)
    elif words == ["redis"]:
        prefix = isolation_name(work)
        env["REDIS_URL"] = with_query(REDIS_URL, prefix=prefix)
        try:
            yield
        finally:
            delete_redis_prefix(prefix)
    elif words == ["litellm"]:
        # LiteLLM is not a dependency of llmbudget: its blocks run where it is installed.
        pytest.importorskip("litellm", reason="the block needs litellm, which is not installed")
        env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
        yield
    else:
        raise AssertionError(f"unknown '# needs:' in a docs block: {needs!r}")


@pytest.mark.parametrize("snippets", _cases())
def test_docs_blocks_run_as_pasted(
    snippets: list[Snippet], fake: FakeLLMServer, workdir: Path
) -> None:
    env = _environment(fake)
    with ExitStack() as stack:
        if snippets[0].needs is not None:
            stack.enter_context(_server(snippets[0].needs, workdir, fake, env))
        result = run(snippets, cwd=workdir, env=env)
    assert result.ok, result.output


def test_a_broken_block_fails_and_is_named(fake: FakeLLMServer, workdir: Path) -> None:
    """The check can fail: a copy of a real page with one block broken is reported,
    naming that block, and the blocks before it did run."""
    page = (ROOT / "README.md").read_text(encoding="utf-8")
    snippets = parse(page, "README.md")
    assert len(snippets) >= 2
    broken = [
        snippets[0],
        Snippet(snippets[1].where, snippets[1].code.replace("import", "imprt", 1), None),
    ]
    result = run(broken, cwd=workdir, env=_environment(fake))
    assert not result.ok
    assert f"FAILED: the block at {snippets[1].where}" in result.output
    assert f"--- {snippets[0].where}" in result.output


def test_every_page_with_python_has_blocks_found() -> None:
    # A fence the parser missed would silently go untested.
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        assert len(_snippets(page)) == text.count("```python\n"), page
