"""``llmbudget import``: carry LiteLLM's BudgetManager data into llmbudget.

::

    llmbudget import user_cost.json --project my-app
    llmbudget import get_budget.json --project my-app --server http://127.0.0.1:8000

Reads LiteLLM's ``user_cost.json`` (or a hosted project's ``/get_budget`` answer) and
imports every user into ``--project``: budgets, durations, the spend of the current
window and the spend per model (see :mod:`llmbudget.migration`). Importing the same file
twice changes nothing; a newer copy adds only what was spent since.
"""

from __future__ import annotations

import typer
from rich.console import Console

from llmbudget.cli.errors import explain, fail
from llmbudget.cli.help import STORE_HELP, ReadableCommand
from llmbudget.errors import LLMBudgetError
from llmbudget.ledger import Ledger
from llmbudget.migration import import_file

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the ``import`` command to ``app``.

    >>> import typer
    >>> app = typer.Typer()
    >>> register(app)
    """

    @app.command("import", cls=ReadableCommand)
    def import_(
        path: str = typer.Argument(
            ..., metavar="FILE", help="LiteLLM's user_cost.json, or a saved /get_budget answer."
        ),
        project: str = typer.Option(
            ..., metavar="NAME", help="The llmbudget project to import the users into."
        ),
        timezone: str = typer.Option(
            "UTC", metavar="ZONE", help="IANA timezone of the budgets' periods."
        ),
        store: str | None = typer.Option(None, metavar="URL", help=STORE_HELP),
        server: str | None = typer.Option(
            None, metavar="URL", help="Budget server URL (llmbudget serve) instead of a store."
        ),
        key: str | None = typer.Option(
            None, metavar="KEY", help="Admin key for --server (default: $LLMBUDGET_ADMIN_KEY)."
        ),
    ) -> None:
        """Import LiteLLM BudgetManager users (budgets and spend) into a project."""
        if store and server:
            raise typer.BadParameter("give --store or --server, not both")
        try:
            if server:
                from llmbudget.stores.http import HttpStore

                ledger = Ledger(HttpStore(server, api_key=key))
            else:
                ledger = Ledger(store)
            try:
                result = import_file(ledger, project, path, timezone=timezone)
            finally:
                ledger.close()
        except LLMBudgetError as exc:
            fail(explain(exc, key_given=key is not None))
        Console().print(f"{path} → project {project}: {result.describe()}", highlight=False)
