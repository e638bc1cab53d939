"""A dashboard page per entity: gateway users, teams and orgs, and the library's users.

Each shows where the entity's budget stands and its spend over a chosen time range
(today, 7 days, 30 days or custom days), in total, per model and per day. Gateway
entities are summed from the spend log (:func:`spend_report_section`, also used by the
key pages); a library user, whose calls do not go through the gateway, from the ledger's
spend per budget window, with the budget's edit form (saved through the JSON API's PATCH
handler, :func:`.api.patch_budget`).

``/ui/users/{name}``, ``/ui/teams/{name}``, ``/ui/orgs/{name}``,
``/ui/projects/{project}/users/{user}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from llmbudget.budgets import Budget, scope_key
from llmbudget.config_models import parse
from llmbudget.errors import InvalidInputError, LLMBudgetError
from llmbudget.gateway.config import Entity
from llmbudget.gateway.spendlog import scan_spend_logs
from llmbudget.http_errors import ApiError
from llmbudget.money import format_dollars

from . import api
from .dashboard import bar_svg, hbar_chart_svg, time_chart_svg
from .dashboard_budgets import budget_body, library_budget_form, status_cells
from .dashboard_page import (
    checked_form,
    esc,
    field,
    gateway_of,
    guard,
    link,
    page,
    server_zone,
    table,
)
from .directory import EntityKind
from .directory import entity as lookup_entity
from .schemas import BudgetPatch, check_name
from .spend_report import FILTER_FIELDS, RANGES, SpendQuery, summarize
from .state import get_state

__all__ = [
    "entities_router",
    "entity_page",
    "library_user_page",
    "parse_query",
    "range_form",
    "spend_report_section",
]

entities_router = APIRouter(prefix="/ui", include_in_schema=False)

# The statuses the gateway logs ("" is any).
_STATUSES = ("", "ok", "upstream_error", "client_disconnected", "budget_exceeded")


def range_form(
    request: Request, query: SpendQuery, error: str | None = None, *, filters: bool = False
) -> str:
    """The time-range picker (a GET form: it changes nothing, so it needs no token); with
    ``filters``, the field filters too, else they ride along hidden."""
    values = {
        **query.match,
        "range": query.range,
        "from": query.first_day.isoformat() if query.bounded else "",
        "to": query.last_day.isoformat() if query.bounded else "",
    }
    if filters:
        fields = "".join(
            field(name, label, values, options=_STATUSES if name == "status" else None)
            for name, label in FILTER_FIELDS.items()
        )
    else:
        fields = "".join(
            f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">'
            for k, v in query.match.items()
        )
    ranges = {label: name for name, (label, _) in RANGES.items()}
    choices = "".join(
        f'<option value="{k}"{" selected" if k == query.range else ""}>{esc(label)}</option>'
        for label, k in ranges.items()
    )
    note = f'<p class="error" role="alert">{esc(error)}</p>' if error else ""
    return (
        f'{note}<form method="get" action="{esc(request.url.path)}" class="filters">{fields}'
        f'<div class="field"><label for="f-range">Time range</label>'
        f'<select id="f-range" name="range">{choices}</select></div>'
        + field("from", "From (custom)", values, kind="date")
        + field("to", "To (custom)", values, kind="date")
        + '<button type="submit">Show</button></form>'
    )


def parse_query(request: Request, *, default: str = "7d") -> tuple[SpendQuery, str | None]:
    """The page's query, or the default range with the reason the asked one was refused."""
    state = get_state(request)
    tz = server_zone(request)
    try:
        return SpendQuery.parse(
            request.query_params, now=state.clock(), tz=tz, default=default
        ), None
    except InvalidInputError as exc:
        fallback = {
            k: v for k, v in request.query_params.items() if k not in ("range", "from", "to")
        }
        return SpendQuery.parse(fallback, now=state.clock(), tz=tz, default=default), str(exc)


async def spend_report_section(request: Request, match: Mapping[str, str]) -> str:
    """Spend of the log entries matching ``match`` in the page's range: totals, per model
    and per day, with links to those requests and their CSV."""
    query, error = parse_query(request)
    tz = server_zone(request)
    wanted = {**query.match, **match}
    entries = [
        entry
        async for entry in scan_spend_logs(
            get_state(request).store, since=query.since, until=query.until, match=wanted
        )
    ]
    summary = summarize(entries, tz)
    models = summary.models()
    rows = [
        f'<tr><td><a href="/ui/spend?{esc(query.params(**wanted, model=m))}">{esc(m)}</a></td>'
        f'<td class="num">{s.requests}</td><td class="num">{s.tokens}</td>'
        f'<td class="num">{esc(format_dollars(s.cost))}</td></tr>'
        for m, s in models
    ]
    days = (
        [(d.isoformat(), summary.by_day.get(d, Decimal(0))) for d in query.days()]
        if query.bounded
        else [(d.isoformat(), v) for d, v in sorted(summary.by_day.items())]
    )
    listed = query.params(**wanted)
    return (
        '<section class="project report"><h2>Spend</h2>'
        + range_form(request, query, error)
        + f'<p class="summary totals"><strong class="total">{esc(format_dollars(summary.cost))}</strong>'
        f" over {summary.requests} request(s), {summary.tokens} token(s), "
        f"{esc(_span(query))} · "
        f'<a href="/ui/spend?{esc(listed)}">the requests</a> · '
        f'<a href="/ui/spend.csv?{esc(listed)}">CSV</a></p>'
        + (
            table(("Model", "Requests", "Tokens", "Cost"), rows, css="data per-model")
            if rows
            else '<p class="empty">No requests in this range.</p>'
        )
        + '<div class="charts">'
        f"<figure><figcaption>Spend per model</figcaption>"
        f"{hbar_chart_svg([(m, s.cost) for m, s in models[:12]], 'Spend per model')}</figure>"
        f"<figure><figcaption>Spend per day</figcaption>"
        f"{time_chart_svg(days if summary.requests else [], 'Spend per day')}</figure>"
        "</div></section>"
    )


def _entity_facts(entity: Entity | None, kind: EntityKind) -> str:
    if entity is None:
        return (
            f'<p class="summary">This {kind} is not in the gateway config: '
            "only its spend is shown.</p>"
        )
    facts = [
        ("Budget", entity.budget.describe() if entity.budget else "none"),
        ("Models", ", ".join(sorted(entity.models)) if entity.models is not None else "all"),
        *((label, value) for label, value in (("Team", entity.team), ("Org", entity.org)) if value),
        *((name.replace("_", " "), str(v)) for name, v in entity.limits.to_dict().items()),
        *((f"Budget for {m}", spec.describe()) for m, spec in sorted(entity.model_budgets.items())),
    ]
    items = []
    for label, value in facts:
        shown = esc(value)
        if label in ("Team", "Org"):
            shown = f'<a href="{esc(link("/ui/" + label.lower() + "s", value))}">{shown}</a>'
        items.append(f"<dt>{esc(label)}</dt><dd>{shown}</dd>")
    return f'<dl class="facts">{"".join(items)}</dl>'


@entities_router.get("/users/{name:path}")
async def user_page(request: Request, name: str) -> Response:
    return await entity_page(request, "user", name)


@entities_router.get("/teams/{name:path}")
async def team_page(request: Request, name: str) -> Response:
    return await entity_page(request, "team", name)


@entities_router.get("/orgs/{name:path}")
async def org_page(request: Request, name: str) -> Response:
    return await entity_page(request, "org", name)


async def entity_page(request: Request, kind: EntityKind, name: str) -> Response:
    """A gateway user, team or org: budget, keys and spend over a time range."""
    refused = guard(request)
    if refused is not None:
        return refused
    check_name(name, kind)
    gateway = gateway_of(request)
    if gateway is None:
        body = '<h1>Not found</h1><p class="empty">This server runs no gateway.</p>'
        return page(request, "Not found", body, status=404)
    entity = await lookup_entity(gateway, kind, name)
    parts = [f'<h1><span class="kind">{kind}</span> {esc(name)}</h1>', _entity_facts(entity, kind)]
    if entity is not None and entity.budget is not None:
        budget = entity.budget.budget(scope_key(f"gw-{kind}", name))
        status = await gateway.ledger.status(budget)
        parts.append(
            table(
                ("Budget", "Period", "Spent", "Held", "Limit", "Remaining", "Resets"),
                [
                    f"<tr><td>{bar_svg(status.spent, status.held, budget.limit)}</td>"
                    f"<td>{esc(budget.period.describe() or 'lifetime')}</td>"
                    f"{status_cells(status, request)}</tr>"
                ],
            )
        )
    if kind in ("user", "team"):
        keys = await gateway.keys.list(
            user=name if kind == "user" else None, team=name if kind == "team" else None
        )
        rows = [
            f'<tr><td><a href="{esc(link("/ui/keys", k.id))}">{esc(k.id)}</a></td>'
            f"<td>{esc(k.name or '')}</td><td>{'revoked' if k.revoked else 'active'}</td></tr>"
            for k in keys
        ]
        if rows:
            parts.append("<h2>Keys</h2>" + table(("Key", "Name", "Status"), rows))
    parts.append(await spend_report_section(request, {kind: name}))
    return page(request, f"{kind} {name}", "".join(parts))


async def library_user_page(
    request: Request,
    project: str,
    user: str,
    *,
    values: Mapping[str, str] | None = None,
    error: str | None = None,
) -> Response:
    """A library user: the budget now, its edit form, and spend per window in the range."""
    refused = guard(request)
    if refused is not None:
        return refused
    state = get_state(request)
    try:
        found = await run_in_threadpool(api.read_budget, request, project, user)
        budget: Budget = await run_in_threadpool(api.user_budget, state, project, user)
    except LLMBudgetError as exc:
        return page(request, "Not found", f"<h1>Not found</h1><p>{esc(exc)}</p>", status=404)
    query, range_error = parse_query(request, default="30d")
    history = await run_in_threadpool(state.ledger.history, budget, 400)
    in_range = sorted(
        (start, spent) for start, spent in history if query.since <= start.timestamp() < query.until
    )
    status = await run_in_threadpool(state.ledger.status, budget)
    form_values = values or {
        "amount": found.limit or "",
        "period": found.period or "",
        "timezone": found.timezone,
        "rolling": "on" if found.rolling else "",
    }
    total = sum((s for _, s in in_range), Decimal(0))
    by_model = sorted(status.by_model.items(), key=lambda kv: (-kv[1], kv[0]))
    action = link("/ui/projects", project, "users", user)
    body = (
        f'<h1><span class="kind">user</span> {esc(user)} '
        f'<small>in <a href="{esc(link("/ui/projects", project))}">{esc(project)}</a></small></h1>'
        + table(
            ("Budget", "Period", "Spent", "Held", "Limit", "Remaining", "Resets"),
            [
                f"<tr><td>{bar_svg(status.spent, status.held, budget.limit)}</td>"
                f"<td>{esc(budget.period.describe() or 'lifetime')}</td>"
                f"{status_cells(status, request)}</tr>"
            ],
        )
        + '<section class="project"><h2>Edit budget</h2>'
        + library_budget_form(request, action, form_values, new=False, error=error)
        + "</section>"
        + '<section class="project report"><h2>Spend</h2>'
        + range_form(request, query, range_error)
        + f'<p class="summary totals"><strong class="total">{esc(format_dollars(total))}</strong> '
        f"in budget windows starting {esc(_span(query))}</p>" + '<div class="charts">'
        f"<figure><figcaption>Spend per model (current window)</figcaption>"
        f"{hbar_chart_svg(by_model, 'Spend per model')}</figure>"
        f"<figure><figcaption>Spend per window</figcaption>"
        f"{time_chart_svg([(_label(s), v) for s, v in in_range], 'Spend per window')}</figure>"
        "</div></section>"
    )
    return page(request, f"{user} in {project}", body, status=400 if error else 200)


def _span(query: SpendQuery) -> str:
    if not query.bounded:
        return "at any time"
    return f"from {query.first_day.isoformat()} to {query.last_day.isoformat()}"


def _label(start: datetime) -> str:
    return (
        start.strftime("%Y-%m-%d %H:%M") if start.hour or start.minute else start.date().isoformat()
    )


@entities_router.get("/projects/{project}/users/{user:path}")
async def library_user(request: Request, project: str, user: str) -> Response:
    return await library_user_page(request, project, user)


@entities_router.post("/projects/{project}/users/{user:path}")
async def edit_budget(request: Request, project: str, user: str) -> Response:
    """Change a library budget from its user's page (the API's PATCH handler decides)."""
    fields = await checked_form(request)
    if isinstance(fields, Response):
        return fields
    try:
        body = parse(BudgetPatch, budget_body(fields, ("amount", "period", "timezone")))
        if "period" not in body.model_fields_set:
            body.period = None  # an empty period field means lifetime, as on the API
            body.model_fields_set.add("period")
        await run_in_threadpool(api.patch_budget, request, project, user, body)
    except (LLMBudgetError, ApiError) as exc:
        return await library_user_page(request, project, user, values=fields, error=str(exc))
    return RedirectResponse(link("/ui/projects", project, "users", user), status_code=303)
