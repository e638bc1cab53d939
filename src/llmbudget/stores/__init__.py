"""Stores, picked by URL. Drivers are imported only when their scheme is used.

============================  ====================================================
``memory://``                 in-process dictionaries (tests, one process)
``sqlite:///relative.db``     SQLite file (the default: ``./llmbudget.db``)
``sqlite:////abs/path.db``    SQLite file, absolute path
``postgresql://...``          PostgreSQL (``llmbudget[postgres]``)
``redis://...``               Redis / ``rediss://`` / ``redis+cluster://`` (``llmbudget[redis]``)
``http://host:8000``          a budget server (``llmbudget serve``), every operation atomic there
============================  ====================================================

>>> store = open_store("memory://")
>>> type(store).__name__
'MemoryStore'
"""

from __future__ import annotations

import os
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

from llmbudget.errors import InvalidInputError
from llmbudget.stores.base import (
    AsyncStore,
    BudgetRecord,
    Line,
    Refusal,
    SettleResult,
    Store,
    Usage,
)

__all__ = [
    "DEFAULT_STORE_URL",
    "AsyncStore",
    "BudgetRecord",
    "Line",
    "Refusal",
    "SettleResult",
    "Store",
    "Usage",
    "default_store_url",
    "open_store",
    "register_scheme",
]

DEFAULT_STORE_URL = "sqlite:///llmbudget.db"

_OPENERS: dict[str, Callable[[str], Store]] = {}


def register_scheme(scheme: str, opener: Callable[[str], Store]) -> None:
    """Teach :func:`open_store` a new URL scheme (used by the PostgreSQL and Redis stores)."""
    _OPENERS[scheme] = opener


def default_store_url() -> str:
    """``$LLMBUDGET_STORE`` when set, else ``sqlite:///llmbudget.db`` in the working directory."""
    return os.environ.get("LLMBUDGET_STORE") or DEFAULT_STORE_URL


def open_store(url: str | None = None) -> Store:
    """Open the store a URL names (see the table above); ``None`` means :func:`default_store_url`."""
    url = url or default_store_url()
    scheme = urlsplit(url).scheme.lower()
    if scheme == "memory":
        from llmbudget.stores.memory import MemoryStore

        return MemoryStore()
    if scheme == "sqlite":
        from llmbudget.stores.sqlite import SQLiteStore

        path, timeout, synchronous = _sqlite_args(url)
        return SQLiteStore(path, timeout=timeout, synchronous=synchronous)
    if scheme in ("postgresql", "postgres"):
        from llmbudget.stores.postgres import PostgresStore

        return PostgresStore(url)
    if scheme in ("redis", "rediss", "redis+cluster", "rediss+cluster"):
        from llmbudget.stores.redis import RedisStore

        return RedisStore(url)
    if scheme in ("http", "https"):
        from llmbudget.stores.http import HttpStore

        return HttpStore(url)
    if scheme in _OPENERS:
        return _OPENERS[scheme](url)
    raise InvalidInputError(
        f"unknown store URL {url!r}: use memory://, sqlite:///path, postgresql://... or redis://..."
    )


def _sqlite_args(url: str) -> tuple[str, float, str]:
    parts = urlsplit(url)
    # sqlite:///rel.db -> path "/rel.db" (relative); sqlite:////abs.db -> "//abs.db" (absolute)
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if parts.netloc:
        raise InvalidInputError(f"SQLite URL takes no host: {url!r} (use sqlite:///path.db)")
    if not path:
        raise InvalidInputError(f"SQLite URL needs a path: {url!r}")
    query = parse_qs(parts.query)
    timeout = float(query.get("timeout", ["30"])[0])
    synchronous = query.get("synchronous", ["NORMAL"])[0]
    return path, timeout, synchronous
