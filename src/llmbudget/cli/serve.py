"""``llmbudget serve``: run the budget server (FastAPI on uvicorn).

Settings, strongest first: command-line options, the ``--config`` file, then
``$LLMBUDGET_STORE`` / ``$LLMBUDGET_ADMIN_KEY``, then defaults (``127.0.0.1:8000``, the
SQLite store in the working directory). Without an admin key the server only listens on
a loopback address, unless ``--insecure-no-auth`` says the network is trusted.

``--workers N`` serves from N processes (default: one per core on a shared store, one on
``memory://``, which refuses more; see :mod:`llmbudget.server.workers`).

Before uvicorn starts, one block says what is being served::

    llmbudget 0.1.0 server
      listening   http://127.0.0.1:8000
      store       sqlite:///llmbudget.db
      dashboard   http://127.0.0.1:8000/ui
      gateway     not mounted (a model_list in --config adds it)
      admin key   set
      workers     2 (one per core)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

import typer

import llmbudget
from llmbudget.cli.errors import fail
from llmbudget.cli.help import STORE_HELP, ReadableCommand

__all__ = ["register", "startup_block"]

_WILDCARDS = ("", "0.0.0.0", "::", "[::]")


def register(app: typer.Typer) -> None:
    """Add the ``serve`` command to ``app``.

    >>> import typer
    >>> app = typer.Typer()
    >>> register(app)
    """

    @app.command(cls=ReadableCommand)
    def serve(
        host: str | None = typer.Option(
            None, metavar="HOST", help="Address to listen on (default 127.0.0.1)."
        ),
        port: int | None = typer.Option(
            None, min=0, max=65535, metavar="PORT", help="Port (default 8000)."
        ),
        store: str | None = typer.Option(None, metavar="URL", help=STORE_HELP),
        config: Annotated[
            Path | None,
            typer.Option(
                exists=True,
                dir_okay=False,
                metavar="FILE",
                help="Config file (.toml, .json or .yaml).",
            ),
        ] = None,
        insecure_no_auth: bool = typer.Option(
            False,
            "--insecure-no-auth",
            help="Allow listening on a non-loopback address without an admin key.",
        ),
        log_level: str = typer.Option("info", metavar="LEVEL", help="uvicorn log level."),
        workers: int | None = typer.Option(
            None,
            min=1,
            metavar="N",
            help="Worker processes (default: one per core on a shared store; memory:// "
            "allows one).",
        ),
    ) -> None:
        """Serve the budget API, the seed's /get_budget + /set_budget, /metrics and /ui."""
        import uvicorn

        from llmbudget.errors import LLMBudgetError
        from llmbudget.server import create_app
        from llmbudget.server.auth import check_bind
        from llmbudget.server.workers import (
            ServeOptions,
            check_workers,
            default_workers,
            run_workers,
        )
        from llmbudget.stores import default_store_url

        options = ServeOptions(
            config=None if config is None else str(config),
            host=host,
            port=port,
            store=store,
            insecure_no_auth=insecure_no_auth,
        )
        try:
            cfg = options.resolve()
        except LLMBudgetError as exc:
            fail(str(exc), code=2)
        problem = check_bind(cfg.host, cfg.admin_key, cfg.insecure_no_auth)
        if problem:
            fail(problem, code=2)
        url = cfg.store or default_store_url()
        count = default_workers(url) if workers is None else workers
        try:
            check_workers(url, count)
            # Built here even when workers build their own: a bad config fails once, now,
            # with its message (not in every worker as it restarts).
            application = create_app(cfg)
        except LLMBudgetError as exc:
            fail(str(exc), code=2)

        def announce(bound: int) -> None:
            typer.echo(
                startup_block(
                    host=cfg.host,
                    port=bound,
                    store=cfg.store,
                    gateway=getattr(application.state, "gateway", None),
                    admin_key=bool(cfg.admin_key),
                    insecure=cfg.insecure_no_auth,
                    workers=count,
                    default=workers is None,
                )
            )

        if count == 1:
            announce(cfg.port)
            uvicorn.run(application, host=cfg.host, port=cfg.port, log_level=log_level)
            return
        # Each worker builds its own app; this one only checked the config.
        application.state.llmbudget.store.close()
        run_workers(options, cfg, count, log_level=log_level, announce=announce)


def startup_block(
    *,
    host: str,
    port: int,
    store: str | None,
    gateway: Any,
    admin_key: bool,
    insecure: bool,
    workers: int = 1,
    default: bool = False,
) -> str:
    """What ``serve`` prints before uvicorn starts (``gateway``: the mounted
    :class:`~llmbudget.gateway.proxy.Gateway`, or ``None``; ``default``: the worker count
    was not asked for).

    >>> print(startup_block(host="127.0.0.1", port=8000, store="memory://", gateway=None,
    ...                     admin_key=False, insecure=False))  # doctest: +ELLIPSIS
    llmbudget ... server
      listening   http://127.0.0.1:8000
      store       memory://
      dashboard   http://127.0.0.1:8000/ui
      gateway     not mounted (a model_list in --config adds it)
      admin key   not set: every endpoint is open to anyone on this machine
      workers     1
    """
    from llmbudget.stores import default_store_url

    shown = "[::1]" if host in ("::1", "[::1]") else host
    base = f"http://{'127.0.0.1' if host in _WILDCARDS else shown}:{port or 'PORT'}"
    if gateway is None:
        mounted = "not mounted (a model_list in --config adds it)"
    else:
        models = gateway.config.models()
        deployments = len(gateway.config.deployments)
        mounted = (
            f"mounted: {len(models)} model(s), {deployments} deployment(s) "
            f"at {base}/v1/chat/completions"
        )
    if admin_key:
        key_state = "set"
    elif insecure:
        key_state = "not set, --insecure-no-auth: every endpoint is open to the network"
    else:
        key_state = "not set: every endpoint is open to anyone on this machine"
    rows = [
        ("listening", f"http://{shown}:{port}" + (" (a free port)" if port == 0 else "")),
        ("store", _without_password(store or default_store_url())),
        ("dashboard", f"{base}/ui"),
        ("gateway", mounted),
        ("admin key", key_state),
        ("workers", f"{workers} (one per core)" if default and workers > 1 else str(workers)),
    ]
    lines = [f"llmbudget {llmbudget.__version__} server"]
    lines += [f"  {name:<10}  {value}" for name, value in rows]
    return "\n".join(lines)


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:" if parts.username else ":"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}***@{host}"))
