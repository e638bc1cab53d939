"""The ``llmbudget`` command line: ``demo``, ``serve``, ``budgets``, ``prices``, ``cost``."""

from __future__ import annotations

import typer

import llmbudget
from llmbudget.cli.help import ReadableGroup

__all__ = ["app", "main"]

app = typer.Typer(
    cls=ReadableGroup,
    name="llmbudget",
    help="Budgets for LLM API calls that never overspend.",
    no_args_is_help=True,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"llmbudget {llmbudget.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_print_version,
        is_eager=True,
        help="Print the version and exit.",
    ),
) -> None:
    """Budgets for LLM API calls that never overspend."""


def main() -> None:
    """Entry point of the ``llmbudget`` console script."""
    _register()
    app()


def _register() -> None:
    # Subcommand modules are imported here, not at import time of the package, so that
    # `import llmbudget` never pays for typer/rich command trees it does not use.
    from llmbudget.cli import demo, prices

    demo.register(app)
    prices.register(app)

    from llmbudget.cli import budgets, importing, serve

    budgets.register(app)
    serve.register(app)
    importing.register(app)
