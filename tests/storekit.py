"""Store factories the conformance suite is parametrised over.

Each factory yields a fresh, isolated store and cleans up after it. A backend whose server
is unreachable is skipped with a clear reason on a developer's machine, and fails under
``CI=true`` (CI must exercise every backend).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

from llmbudget.stores.base import Store

StoreFactory = Callable[[Path], AbstractContextManager[Store]]


def unavailable(backend: str, reason: str) -> None:
    """Skip locally, fail in CI, when a backend's server cannot be reached."""
    message = f"{backend} unavailable: {reason}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " (CI=true: store tests must not be skipped)")
    pytest.skip(message)


@contextmanager
def memory_store(tmp_path: Path) -> Iterator[Store]:
    from llmbudget.stores.memory import MemoryStore

    yield MemoryStore()


@contextmanager
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    from llmbudget.stores.sqlite import SQLiteStore

    store = SQLiteStore(str(tmp_path / "ledger.db"))
    try:
        yield store
    finally:
        store.close()


# Backends that share state across processes (used by the multi-process race tests),
# by name; each value opens the same underlying state given the same tmp_path.
FACTORIES: dict[str, StoreFactory] = {
    "memory": memory_store,
    "sqlite": sqlite_store,
}
SHARED_ACROSS_PROCESSES = {"sqlite"}
