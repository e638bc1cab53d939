"""``llmbudget budgets list|create|show|reset``: operate budgets from a shell.

Works on a store directly (``--store URL``, default ``$LLMBUDGET_STORE`` or the SQLite
file) or through a budget server (``--server URL``, admin key from ``--key`` or
``$LLMBUDGET_ADMIN_KEY``); either way every change is one atomic store operation.

::

    llmbudget budgets create alice 10 --project my-app --period daily
    llmbudget budgets list --server http://127.0.0.1:8000
    llmbudget budgets show alice --project my-app
    llmbudget budgets reset alice --project my-app --yes
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from urllib.parse import unquote

import typer
from rich.console import Console
from rich.table import Table

from llmbudget.budgets import Budget, scope_key
from llmbudget.errors import LLMBudgetError
from llmbudget.ledger import Ledger

__all__ = ["register"]

_STORE_HELP = "Store URL (default: $LLMBUDGET_STORE or sqlite:///llmbudget.db)."
_SERVER_HELP = "Budget server URL (llmbudget serve) instead of a store."
_KEY_HELP = "Admin key for --server (default: $LLMBUDGET_ADMIN_KEY)."


def _ledger(store: str | None, server: str | None, key: str | None) -> Ledger:
    if store and server:
        raise typer.BadParameter("give --store or --server, not both")
    if server:
        from llmbudget.stores.http import HttpStore

        return Ledger(HttpStore(server, api_key=key))
    return Ledger(store)


def _money(value: Decimal | None) -> str:
    if value is None:
        return "—"
    # Cents always shown; finer digits only when the amount has them.
    if value == value.quantize(Decimal("0.01")):
        return f"${value:.2f}"
    return f"${value}"


def _when(moment: datetime | None) -> str:
    return "never" if moment is None else moment.isoformat(timespec="seconds")


def _split(scope: str) -> tuple[str, str]:
    _, project, user = scope.split(":", 2)
    return unquote(project), unquote(user)


def _find(ledger: Ledger, project: str, user: str) -> Budget:
    found = ledger.get([scope_key("user", project, user)])[0]
    if found is None:
        from llmbudget.errors import UnknownUserError

        raise UnknownUserError(user, project)
    return found


def register(app: typer.Typer) -> None:
    """Add the ``budgets`` sub-app to ``app``.

    >>> import typer
    >>> app = typer.Typer()
    >>> register(app)
    """
    budgets_app = typer.Typer(
        name="budgets",
        help="List, create, show and reset per-user budgets (on a store or a server).",
        no_args_is_help=True,
        add_completion=False,
    )
    app.add_typer(budgets_app, name="budgets")
    console = Console()

    def fail(exc: Exception) -> typer.Exit:
        Console(stderr=True).print(f"[red]error:[/] {exc}")
        return typer.Exit(1)

    @budgets_app.command("list")
    def list_(
        project: str | None = typer.Option(None, help="Only this project."),
        store: str | None = typer.Option(None, help=_STORE_HELP),
        server: str | None = typer.Option(None, help=_SERVER_HELP),
        key: str | None = typer.Option(None, help=_KEY_HELP),
    ) -> None:
        """Every user budget with its spend in the current window."""
        try:
            ledger = _ledger(store, server, key)
            prefix = scope_key("user", project) + ":" if project else "user:"
            budgets = ledger.budgets(prefix)
            table = Table(title="Budgets")
            for column in (
                "project",
                "user",
                "limit",
                "period",
                "spent",
                "held",
                "remaining",
                "resets",
            ):
                table.add_column(
                    column,
                    justify="right"
                    if column in ("limit", "spent", "held", "remaining")
                    else "left",
                )
            for budget in budgets:
                if budget.scope.count(":") < 2:
                    continue
                status = ledger.status(budget)
                proj, user = _split(budget.scope)
                table.add_row(
                    proj,
                    user,
                    _money(budget.limit),
                    budget.period.describe() or "lifetime",
                    _money(status.spent),
                    _money(status.held),
                    _money(status.remaining),
                    _when(status.resets_at),
                )
            ledger.close()
        except LLMBudgetError as exc:
            raise fail(exc) from None
        if not budgets:
            console.print("no budgets" + (f" in project {project!r}" if project else ""))
            return
        console.print(table)

    @budgets_app.command()
    def create(
        user: str = typer.Argument(..., help="The user the budget is for."),
        amount: str = typer.Argument(..., help="Dollars per period, e.g. 10 or 2.50."),
        project: str = typer.Option(..., help="Project name."),
        period: str | None = typer.Option(
            None, help="daily, weekly, monthly, yearly, 30d … (default: lifetime)."
        ),
        timezone: str = typer.Option("UTC", help="IANA timezone of the period boundaries."),
        rolling: bool = typer.Option(
            False, help="Windows start at creation, not on calendar boundaries."
        ),
        store: str | None = typer.Option(None, help=_STORE_HELP),
        server: str | None = typer.Option(None, help=_SERVER_HELP),
        key: str | None = typer.Option(None, help=_KEY_HELP),
    ) -> None:
        """Create or change a user's budget (spend already recorded is kept)."""
        try:
            ledger = _ledger(store, server, key)
            scope = scope_key("user", project, user)
            existing = ledger.get([scope])[0]
            created = existing.created_at if existing is not None else ledger.clock()
            budget = ledger.define(
                Budget.of(
                    scope, amount, period, timezone=timezone, rolling=rolling, created_at=created
                )
            )
            ledger.close()
        except LLMBudgetError as exc:
            raise fail(exc) from None
        verb = "changed" if existing is not None else "created"
        console.print(
            f"{verb} budget for [bold]{user}[/] in {project}: {_money(budget.limit)} "
            f"{budget.period.describe() or 'lifetime'} ({budget.period.timezone})"
        )

    @budgets_app.command()
    def show(
        user: str = typer.Argument(..., help="The user."),
        project: str = typer.Option(..., help="Project name."),
        history: int = typer.Option(10, min=0, max=1000, help="Past windows to show."),
        store: str | None = typer.Option(None, help=_STORE_HELP),
        server: str | None = typer.Option(None, help=_SERVER_HELP),
        key: str | None = typer.Option(None, help=_KEY_HELP),
    ) -> None:
        """One user's budget, spend per model and spend per past window."""
        try:
            ledger = _ledger(store, server, key)
            budget = _find(ledger, project, user)
            status = ledger.status(budget)
            rows = ledger.history(budget, history) if history else []
            ledger.close()
        except LLMBudgetError as exc:
            raise fail(exc) from None
        table = Table(title=f"{project} / {user}", show_header=False)
        table.add_column("field")
        table.add_column("value", justify="right")
        for name, value in (
            ("limit", _money(budget.limit)),
            (
                "period",
                f"{budget.period.describe() or 'lifetime'} ({budget.period.timezone}"
                f"{', rolling' if budget.period.rolling else ''})",
            ),
            ("spent", _money(status.spent)),
            ("held", _money(status.held)),
            ("remaining", _money(status.remaining)),
            ("window start", _when(status.window_start)),
            ("resets at", _when(status.resets_at)),
        ):
            table.add_row(name, value)
        console.print(table)
        if status.by_model:
            models = Table(title="spend per model (this window)")
            models.add_column("model")
            models.add_column("spent", justify="right")
            for model, cost in sorted(status.by_model.items(), key=lambda kv: -kv[1]):
                models.add_row(model, _money(cost))
            console.print(models)
        if rows:
            past = Table(title="spend per window")
            past.add_column("window start")
            past.add_column("spent", justify="right")
            for start, spent in rows:
                past.add_row(_when(start), _money(spent))
            console.print(past)

    @budgets_app.command()
    def reset(
        user: str = typer.Argument(..., help="The user."),
        project: str = typer.Option(..., help="Project name."),
        yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
        store: str | None = typer.Option(None, help=_STORE_HELP),
        server: str | None = typer.Option(None, help=_SERVER_HELP),
        key: str | None = typer.Option(None, help=_KEY_HELP),
    ) -> None:
        """Zero the user's spend in the current window (earlier windows are kept)."""
        try:
            ledger = _ledger(store, server, key)
            budget = _find(ledger, project, user)
            before = ledger.status(budget).spent
            if not yes and not typer.confirm(
                f"reset {_money(before)} spent by {user} in {project} this window?"
            ):
                raise typer.Exit(1)
            ledger.reset(budget)
            ledger.close()
        except LLMBudgetError as exc:
            raise fail(exc) from None
        console.print(f"reset [bold]{user}[/] in {project}: {_money(before)} → $0.00 this window")
