from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from llmbudget.clock import FrozenClock
from llmbudget.stores.base import Store
from tests.storekit import FACTORIES


@pytest.fixture(autouse=True, scope="session")
def _vocabularies_loaded() -> None:
    """Prompts are counted exactly in every test, whatever ran before it: a process whose
    vocabulary is not loaded yet reserves a prompt's byte bound instead, which
    ``tests/test_prompt_bound.py`` covers on purpose (its fixture unloads them)."""
    from llmbudget.tokens import get_encoding

    get_encoding("o200k_base")
    get_encoding("cl100k_base")


@pytest.fixture(autouse=True)
def _journal_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test keeps pending settles in a journal of its own, never in the working
    directory (subprocesses inherit the variable)."""
    monkeypatch.setenv("LLMBUDGET_JOURNAL", str(tmp_path / "llmbudget-journal.db"))


@pytest.fixture(params=sorted(FACTORIES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Every store backend in turn: the conformance suite runs each test on all of them."""
    with FACTORIES[request.param](tmp_path) as opened:
        yield opened


@pytest.fixture
def clock() -> FrozenClock:
    # 2026-03-15 12:00:00 UTC, a Sunday: far from any boundary unless a test moves it.
    return FrozenClock(1_773_576_000.0)
