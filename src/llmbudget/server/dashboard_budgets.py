"""Budget forms and the gateway's budgets, on the dashboard.

The library's budgets (a user in a project) are created at ``/ui/budgets/new`` (and edited
on the user's page, :mod:`.dashboard_entities`), through the JSON API's own handlers (:func:`.api.create_budget`,
:func:`.api.patch_budget`) and request schemas, so a form accepts and refuses exactly
what ``POST /v1/projects/{project}/budgets`` does; a refusal is shown on the form and
stores nothing. The gateway's budgets (keys, users, teams, orgs, end users, the global,
models, deployments) are listed next to them with where each stands now.

>>> scope_link("gw-team:ml%2Fa")
'/ui/teams/ml%2Fa'
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import unquote

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from llmbudget.budgets import Budget, BudgetStatus
from llmbudget.config_models import parse
from llmbudget.errors import InvalidInputError, LLMBudgetError
from llmbudget.http_errors import ApiError
from llmbudget.money import format_dollars

from . import api
from .dashboard_page import (
    checked_form,
    esc,
    field,
    fmt_time,
    form,
    gateway_of,
    guard,
    link,
    page,
    server_zone,
    table,
)
from .schemas import BudgetCreate

__all__ = [
    "budget_body",
    "budgets_router",
    "gateway_budgets_section",
    "library_budget_form",
    "scope_link",
    "status_cells",
]

budgets_router = APIRouter(prefix="/ui", include_in_schema=False)

_ENTITY_PAGES = {"gw-key": "keys", "gw-user": "users", "gw-team": "teams", "gw-org": "orgs"}
_KIND_LABELS = {
    "gw-key": "Key",
    "gw-user": "User",
    "gw-end-user": "End user",
    "gw-team": "Team",
    "gw-org": "Org",
    "gw-global": "Whole gateway",
    "gw-user-model": "User × model",
    "gw-team-model": "Team × model",
    "gw-org-model": "Org × model",
    "gw-key-model": "Key × model",
    "gw-model": "Model",
    "gw-deployment": "Deployment",
}


def scope_link(scope: str) -> str | None:
    """The dashboard page of the entity a gateway scope belongs to, if it has one."""
    kind, _, rest = scope.partition(":")
    section = _ENTITY_PAGES.get(kind)
    return None if section is None or not rest else link(f"/ui/{section}", unquote(rest))


def status_cells(status: BudgetStatus, request: Request) -> str:
    """Spent, held, limit, remaining and reset time as table cells."""
    resets = status.resets_at.timestamp() if status.resets_at else None
    return (
        f'<td class="num">{esc(format_dollars(status.spent))}</td>'
        f'<td class="num">{esc(format_dollars(status.held))}</td>'
        f'<td class="num">{esc(format_dollars(status.limit))}</td>'
        f'<td class="num">{esc(format_dollars(status.remaining))}</td>'
        f'<td class="when">{esc(fmt_time(resets, server_zone(request)) if resets else "never")}</td>'
    )


def _scope_cell(scope: str) -> str:
    kind, _, rest = scope.partition(":")
    label = esc(_KIND_LABELS.get(kind, kind))
    name = esc(":".join(unquote(p) for p in rest.split(":")) if rest else "")
    href = scope_link(scope)
    shown = f'<a href="{esc(href)}">{name}</a>' if href else name
    return f"<td>{label}</td><td>{shown}</td>"


async def gateway_budgets_section(request: Request) -> str:
    """The gateway's budgets with spent/held/remaining/resets ('' without a gateway)."""
    gateway = gateway_of(request)
    if gateway is None:
        return ""
    budgets: list[Budget] = []
    for key in await gateway.keys.list(include_revoked=False):
        if key.budget is not None:
            budgets.append(gateway.planner.general_budgets(key, None)[0])
    budgets.extend(gateway.planner.definitions())
    rows = []
    for budget in budgets:
        status = await gateway.ledger.status(budget)
        rows.append(
            f'<tr class="gw-budget" data-scope="{esc(budget.scope)}">{_scope_cell(budget.scope)}'
            f"<td>{esc(budget.period.describe() or 'lifetime')}</td>"
            f"{status_cells(status, request)}</tr>"
        )
    if not rows:
        inner = '<p class="empty">The gateway has no budgets: its config sets none, and no key has one.</p>'
    else:
        inner = table(
            ("Kind", "Name", "Period", "Spent", "Held", "Limit", "Remaining", "Resets"), rows
        )
    return (
        '<section class="project gateway-budgets"><h2 class="group">Gateway budgets</h2>'
        '<p class="summary">Keys are edited on their pages; users, teams and orgs come from '
        "the gateway config.</p>"
        f"{inner}</section>"
    )


def library_budget_form(
    request: Request,
    action: str,
    values: Mapping[str, str],
    *,
    new: bool,
    error: str | None = None,
) -> str:
    """The create (``new``) or edit form of a library budget, with ``error`` inline."""
    note = f'<p class="error" role="alert">{esc(error)}</p>' if error else ""
    names = (
        field("project", "Project", values, required=True)
        + field("user", "User", values, required=True)
        if new
        else ""
    )
    inner = (
        note
        + '<div class="grid">'
        + names
        + field("amount", "Limit ($)", values, required=True, hint="e.g. 10 or 2.50")
        + field("period", "Period", values, hint="daily, weekly, monthly, 30d… empty: lifetime")
        + field("timezone", "Timezone", values, hint="IANA name, e.g. Europe/Paris")
        + field("rolling", "Rolling windows", values, kind="checkbox")
        + "</div>"
        + f'<button type="submit">{"Create budget" if new else "Save budget"}</button>'
    )
    return form(request, action, inner)


def budget_body(fields: Mapping[str, str], names: tuple[str, ...]) -> dict[str, object]:
    """Form fields as the JSON API's body: empty text is absent, the checkbox a bool."""
    body: dict[str, object] = {k: fields[k].strip() for k in names if fields.get(k, "").strip()}
    body["rolling"] = fields.get("rolling") == "on"
    return body


@budgets_router.get("/budgets/new")
def new_budget_form(request: Request) -> Response:
    refused = guard(request)
    if refused is not None:
        return refused
    values = {"project": request.query_params.get("project", ""), "period": "monthly"}
    body = "<h1>New library budget</h1>" + library_budget_form(
        request, "/ui/budgets/new", values, new=True
    )
    return page(request, "New budget", body)


@budgets_router.post("/budgets/new")
async def create_budget(request: Request) -> Response:
    """Create a library budget from the form (the API's own handler decides)."""
    fields = await checked_form(request)
    if isinstance(fields, Response):
        return fields
    project = fields.get("project", "").strip()
    try:
        if not project:
            raise InvalidInputError("project: enter the project's name")
        body = parse(BudgetCreate, budget_body(fields, ("user", "amount", "period", "timezone")))
        created = await run_in_threadpool(api.create_budget, request, project, body)
    except (LLMBudgetError, ApiError) as exc:
        html = "<h1>New library budget</h1>" + library_budget_form(
            request, "/ui/budgets/new", fields, new=True, error=str(exc)
        )
        return page(request, "New budget", html, status=400)
    return RedirectResponse(link("/ui/projects", project, "users", created.user), status_code=303)
