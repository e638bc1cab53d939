"""``llmbudget serve``: run the budget server (FastAPI on uvicorn).

Settings, strongest first: command-line options, the ``--config`` file, then
``$LLMBUDGET_STORE`` / ``$LLMBUDGET_ADMIN_KEY``, then defaults (``127.0.0.1:8000``, the
SQLite store in the working directory). Without an admin key the server only listens on
a loopback address, unless ``--insecure-no-auth`` says the network is trusted.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the ``serve`` command to ``app``.

    >>> import typer
    >>> app = typer.Typer()
    >>> register(app)
    """

    @app.command()
    def serve(
        host: str | None = typer.Option(None, help="Address to listen on (default 127.0.0.1)."),
        port: int | None = typer.Option(None, min=0, max=65535, help="Port (default 8000)."),
        store: str | None = typer.Option(
            None, help="Store URL (default: $LLMBUDGET_STORE or sqlite:///llmbudget.db)."
        ),
        config: Annotated[
            Path | None,
            typer.Option(exists=True, dir_okay=False, help="Config file (.toml, .json or .yaml)."),
        ] = None,
        insecure_no_auth: bool = typer.Option(
            False,
            "--insecure-no-auth",
            help="Allow listening on a non-loopback address without an admin key.",
        ),
        log_level: str = typer.Option("info", help="uvicorn log level."),
    ) -> None:
        """Serve the budget API, the seed's /get_budget + /set_budget, /metrics and /ui."""
        import uvicorn

        from llmbudget.errors import LLMBudgetError
        from llmbudget.server import create_app, load_config
        from llmbudget.server.auth import check_bind

        try:
            cfg = load_config(config)
        except LLMBudgetError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        cfg = replace(
            cfg,
            host=host or cfg.host,
            port=cfg.port if port is None else port,
            store=store or cfg.store,
            insecure_no_auth=insecure_no_auth or cfg.insecure_no_auth,
        )
        problem = check_bind(cfg.host, cfg.admin_key, cfg.insecure_no_auth)
        if problem:
            typer.echo(f"error: {problem}", err=True)
            raise typer.Exit(2)
        try:
            application = create_app(cfg)
        except LLMBudgetError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        if not cfg.admin_key:
            typer.echo("warning: no admin key set: every endpoint is open to this host", err=True)
        uvicorn.run(application, host=cfg.host, port=cfg.port, log_level=log_level)
