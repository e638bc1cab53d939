"""``llmbudget serve --workers N``: how many processes a store allows, and each one's app.

Several uvicorn workers share one listening socket, and so must share every piece of
state a request touches. They do when the store is shared: budgets, holds, sessions of
the dashboard and alert markers live in the store; kept settles live in the journal, one
SQLite file every worker opens (``$LLMBUDGET_JOURNAL``; a replayed settle lands once, as
the store settles a hold once and records a charge id once); metrics are merged across
workers (:mod:`.multiprocess`).

=============================================  ===========================================
store                                          workers
=============================================  ===========================================
SQLite file, PostgreSQL, Redis, HTTP store     one per core by default, any number allowed
``memory://`` (or SQLite ``:memory:``)         one: each worker would have budgets of its
                                               own, and every worker could spend them all
=============================================  ===========================================

Each worker builds its app from the same :class:`ServeOptions` the command resolved (the
config file's path and the command-line overrides, handed over in ``$LLMBUDGET_SERVE``:
nothing secret on a command line), through :func:`worker_app`.

>>> shared_safe("redis://127.0.0.1:6379/0"), shared_safe("memory://")
(True, False)
>>> check_workers("memory://", 2)
Traceback (most recent call last):
...
llmbudget.errors.InvalidInputError: --workers 2 with memory:// would give each worker budgets of its own (each could spend them all); use a shared store (sqlite:///file.db, postgresql://, redis://) or --workers 1
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from llmbudget.errors import InvalidInputError

from .config import ServerConfig, load_config

__all__ = [
    "SERVE_ENV",
    "ServeOptions",
    "check_workers",
    "default_workers",
    "run_workers",
    "shared_safe",
    "worker_app",
]

SERVE_ENV = "LLMBUDGET_SERVE"
_SHARED_SCHEMES = frozenset(
    {"sqlite", "postgres", "postgresql", "redis", "rediss", "redis+cluster", "rediss+cluster",
     "http", "https"}
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """What ``serve`` was asked: the config file and the options that override it."""

    config: str | None = None
    host: str | None = None
    port: int | None = None
    store: str | None = None
    insecure_no_auth: bool = False

    def resolve(self) -> ServerConfig:
        """The server's config: command-line options over the file over the environment
        (the command and every worker resolve it here, so they agree)."""
        cfg = load_config(self.config)
        return replace(
            cfg,
            host=self.host or cfg.host,
            port=cfg.port if self.port is None else self.port,
            store=self.store or cfg.store,
            insecure_no_auth=self.insecure_no_auth or cfg.insecure_no_auth,
        ).with_env()

    def to_env(self) -> str:
        config = None if self.config is None else str(Path(self.config).resolve())
        return json.dumps({**asdict(self), "config": config})

    @classmethod
    def from_env(cls, text: str) -> ServeOptions:
        data: dict[str, Any] = json.loads(text)
        return cls(**data)


def shared_safe(url: str) -> bool:
    """Whether processes opening ``url`` share one store (so budgets bind across them)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        return path not in ("", ":memory:") and not path.startswith("file::memory:")
    return scheme in _SHARED_SCHEMES


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_workers(url: str) -> int:
    """One worker per core the process may run on when ``url`` is shared, else one."""
    return _cores() if shared_safe(url) else 1


def check_workers(url: str, workers: int) -> None:
    """Refuse a worker count that would split one budget into several."""
    if workers < 1:
        raise InvalidInputError(f"--workers must be at least 1, got {workers}")
    if workers > 1 and not shared_safe(url):
        raise InvalidInputError(
            f"--workers {workers} with {url} would give each worker budgets of its own "
            "(each could spend them all); use a shared store (sqlite:///file.db, "
            "postgresql://, redis://) or --workers 1"
        )


def worker_app() -> Any:
    """The app of one worker (``uvicorn --factory``), built from ``$LLMBUDGET_SERVE``."""
    from .app import create_app

    text = os.environ.get(SERVE_ENV)
    if not text:
        raise InvalidInputError(f"${SERVE_ENV} is not set: start workers with llmbudget serve")
    return create_app(ServeOptions.from_env(text).resolve())


def run_workers(
    options: ServeOptions,
    cfg: ServerConfig,
    workers: int,
    *,
    log_level: str,
    announce: Callable[[int], None],
) -> None:
    """Serve ``cfg`` in ``workers`` processes until interrupted. The socket is bound here
    first, so ``announce(port)`` can say the real port (``--port 0`` picks a free one)."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from .multiprocess import metrics_directory

    with metrics_directory():
        os.environ[SERVE_ENV] = options.to_env()
        try:
            config = uvicorn.Config(
                "llmbudget.server.workers:worker_app",
                factory=True,
                host=cfg.host,
                port=cfg.port,
                workers=workers,
                log_level=log_level,
            )
            sock = config.bind_socket()
            announce(int(sock.getsockname()[1]))
            Multiprocess(config, sockets=[sock]).run()
        finally:
            os.environ.pop(SERVE_ENV, None)
