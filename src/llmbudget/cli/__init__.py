"""The ``llmbudget`` command line: ``demo``, ``serve``, ``budgets``, ``prices``, ``cost``."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="llmbudget",
    help="Budgets for LLM API calls that never overspend.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _root() -> None:
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
