"""``llmbudget budgets list|create|show|reset``: operate budgets from a shell.

Works on a store directly (``--store URL``, default ``$LLMBUDGET_STORE`` or the SQLite
file) or through a budget server (``--server URL``, admin key from ``--key`` or
``$LLMBUDGET_ADMIN_KEY``); either way every change is one atomic store operation.

::

    llmbudget budgets create alice 10 --project my-app --period daily
    llmbudget budgets list --server http://127.0.0.1:8000
    llmbudget budgets show alice            # --project may be left out when it is unambiguous
    llmbudget budgets reset alice --project my-app --yes
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from urllib.parse import unquote

import typer
from rich.console import Console
from rich.table import Table

from llmbudget.budgets import Budget, scope_key
from llmbudget.cli.errors import create_command, explain, fail
from llmbudget.cli.help import STORE_HELP, ReadableCommand, ReadableGroup
from llmbudget.errors import LLMBudgetError, UnknownUserError
from llmbudget.ledger import Ledger
from llmbudget.money import format_dollars as _money

__all__ = ["register"]

_SERVER_HELP = "Budget server URL (llmbudget serve) instead of a store."
_KEY_HELP = "Admin key for --server (default: $LLMBUDGET_ADMIN_KEY)."
_PROJECT_HELP = "Project name (may be left out when only one project has this user)."


@contextmanager
def _ledger(store: str | None, server: str | None, key: str | None) -> Iterator[Ledger]:
    """The ledger the options name, closed afterwards; library errors end the command
    with a message in command-line terms."""
    if store and server:
        fail("give --store or --server, not both", code=2)
    try:
        if server:
            from llmbudget.stores.http import HttpStore

            ledger = Ledger(HttpStore(server, api_key=key))
        else:
            ledger = Ledger(store)
    except LLMBudgetError as exc:
        fail(explain(exc, key_given=key is not None))
    try:
        yield ledger
    except LLMBudgetError as exc:
        fail(explain(exc, key_given=key is not None))
    finally:
        ledger.close()


def _when(moment: datetime | None) -> str:
    return "never" if moment is None else moment.isoformat(timespec="seconds")


def _split(scope: str) -> tuple[str, str]:
    _, project, user = scope.split(":", 2)
    return unquote(project), unquote(user)


def _find(ledger: Ledger, project: str | None, user: str) -> tuple[str, Budget]:
    """The user's budget in ``project``; without one, in the only project that has it."""
    if project is not None:
        found = ledger.get([scope_key("user", project, user)])[0]
        if found is None:
            raise UnknownUserError(user, project)
        return project, found
    projects: set[str] = set()
    matches: dict[str, Budget] = {}
    for budget in ledger.budgets("user:"):
        if budget.scope.count(":") < 2:
            continue
        proj, name = _split(budget.scope)
        projects.add(proj)
        if name == user:
            matches[proj] = budget
    if len(matches) == 1:
        return next(iter(matches.items()))
    if matches:
        fail(f"user {user!r} has budgets in projects {_names(matches)}: pass --project NAME")
    if not projects:
        fail(f"no budgets in this store yet; create one with: {create_command(user)}")
    fail(
        f"no budget for user {user!r} in any project (projects: {_names(projects)}); "
        f"pass --project NAME, or create one with: {create_command(user)}"
    )


def _names(projects: Iterable[str]) -> str:
    return ", ".join(repr(p) for p in sorted(projects))


def register(app: typer.Typer) -> None:
    """Add the ``budgets`` sub-app to ``app``.

    >>> import typer
    >>> app = typer.Typer()
    >>> register(app)
    """
    budgets_app = typer.Typer(
        cls=ReadableGroup,
        name="budgets",
        help="List, create, show and reset per-user budgets (on a store or a server).",
        no_args_is_help=True,
        add_completion=False,
    )
    app.add_typer(budgets_app, name="budgets")
    console = Console()

    @budgets_app.command("list", cls=ReadableCommand)
    def list_(
        project: str | None = typer.Option(None, metavar="NAME", help="Only this project."),
        store: str | None = typer.Option(None, metavar="URL", help=STORE_HELP),
        server: str | None = typer.Option(None, metavar="URL", help=_SERVER_HELP),
        key: str | None = typer.Option(None, metavar="KEY", help=_KEY_HELP),
    ) -> None:
        """Every user budget with its spend in the current window."""
        with _ledger(store, server, key) as ledger:
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
        if not budgets:
            where = f" in project {project!r}" if project else ""
            console.print(f"no budgets{where}; create one with: {create_command(None, project)}")
            return
        console.print(table)

    @budgets_app.command(cls=ReadableCommand)
    def create(
        user: str = typer.Argument(..., metavar="USER", help="The user the budget is for."),
        amount: str = typer.Argument(
            ..., metavar="AMOUNT", help="Dollars per period, e.g. 10 or 2.50."
        ),
        project: str = typer.Option(..., metavar="NAME", help="Project name."),
        period: str | None = typer.Option(
            None,
            metavar="PERIOD",
            help="daily, weekly, monthly, yearly, 30d … (leave out for a lifetime budget).",
        ),
        timezone: str = typer.Option(
            "UTC", metavar="TZ", help="IANA timezone of the period boundaries."
        ),
        rolling: bool = typer.Option(
            False, help="Windows start at creation, not on calendar boundaries."
        ),
        store: str | None = typer.Option(None, metavar="URL", help=STORE_HELP),
        server: str | None = typer.Option(None, metavar="URL", help=_SERVER_HELP),
        key: str | None = typer.Option(None, metavar="KEY", help=_KEY_HELP),
    ) -> None:
        """Create or change a user's budget (spend already recorded is kept)."""
        with _ledger(store, server, key) as ledger:
            scope = scope_key("user", project, user)
            existing = ledger.get([scope])[0]
            created = existing.created_at if existing is not None else ledger.clock()
            budget = ledger.define(
                Budget.of(
                    scope, amount, period, timezone=timezone, rolling=rolling, created_at=created
                )
            )
        verb = "changed" if existing is not None else "created"
        console.print(
            f"{verb} budget for [bold]{user}[/] in {project}: {_money(budget.limit)} "
            f"{budget.period.describe() or 'lifetime'} ({budget.period.timezone})"
        )

    @budgets_app.command(cls=ReadableCommand)
    def show(
        user: str = typer.Argument(..., metavar="USER", help="The user."),
        project: str | None = typer.Option(None, metavar="NAME", help=_PROJECT_HELP),
        history: int = typer.Option(10, min=0, max=1000, metavar="N", help="Past windows to show."),
        store: str | None = typer.Option(None, metavar="URL", help=STORE_HELP),
        server: str | None = typer.Option(None, metavar="URL", help=_SERVER_HELP),
        key: str | None = typer.Option(None, metavar="KEY", help=_KEY_HELP),
    ) -> None:
        """One user's budget, spend per model and spend per past window."""
        with _ledger(store, server, key) as ledger:
            project, budget = _find(ledger, project, user)
            status = ledger.status(budget)
            rows = ledger.history(budget, history) if history else []
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

    @budgets_app.command(cls=ReadableCommand)
    def reset(
        user: str = typer.Argument(..., metavar="USER", help="The user."),
        project: str | None = typer.Option(None, metavar="NAME", help=_PROJECT_HELP),
        yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
        store: str | None = typer.Option(None, metavar="URL", help=STORE_HELP),
        server: str | None = typer.Option(None, metavar="URL", help=_SERVER_HELP),
        key: str | None = typer.Option(None, metavar="KEY", help=_KEY_HELP),
    ) -> None:
        """Zero the user's spend in the current window (earlier windows are kept)."""
        with _ledger(store, server, key) as ledger:
            project, budget = _find(ledger, project, user)
            before = ledger.status(budget).spent
            if not yes and not typer.confirm(
                f"reset {_money(before)} spent by {user} in {project} this window?"
            ):
                raise typer.Exit(1)
            ledger.reset(budget)
        console.print(f"reset [bold]{user}[/] in {project}: {_money(before)} → $0.00 this window")
