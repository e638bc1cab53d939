"""The dashboard's budget overview at ``/ui``: projects, users, budget bars, spend per model,
spend over time, the gateway's budgets beside them; and signing in and out.

Server-rendered HTML with inline SVG charts drawn here, in Python: no JavaScript, no chart
library, nothing loaded from anywhere but this server (the one stylesheet is shipped in
the package, under ``static/``). Every name shown is HTML-escaped.

Access: with an admin key configured, the login form (``/ui/login``) takes the key once
and opens a server-side session (random id in an HttpOnly, SameSite=Strict cookie;
expiring, revoked at logout: see :mod:`.auth`). The key is never accepted in a URL
(``/ui?key=...`` is refused: it would end up in access logs). A request with
``Authorization: Bearer <key>`` is let in as well. Every form that changes something
carries a CSRF token (:mod:`.csrf`). The other pages: keys (:mod:`.dashboard_keys`),
budget forms (:mod:`.dashboard_budgets`), a page per entity (:mod:`.dashboard_entities`)
and the request log (:mod:`.dashboard_requests`).

>>> bar_svg(Decimal("2"), Decimal("1"), Decimal("10")).startswith("<svg")
True
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from importlib import resources
from urllib.parse import parse_qs, unquote

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from llmbudget.budgets import Budget, BudgetStatus, scope_key
from llmbudget.money import format_dollars

from .auth import SESSION_COOKIE
from .dashboard_budgets import gateway_budgets_section
from .dashboard_page import (
    authorized,
    checked_form,
    esc,
    form,
    guard,
    link,
    login_page,
    page,
    set_session,
    table,
)
from .schemas import check_name
from .state import ServerState, get_state

__all__ = ["bar_svg", "dashboard_router", "hbar_chart_svg", "time_chart_svg"]

dashboard_router = APIRouter(prefix="/ui", include_in_schema=False)

_PALETTE = ("#2563eb", "#16a34a", "#d97706", "#9333ea", "#dc2626", "#0891b2", "#4d7c0f", "#be185d")
_MAX_PROJECTS = 25
_MAX_LOG_ROWS = 200
_MAX_USERS = 200  # per project section: the page must stay quick to render and to read
_HISTORY_WINDOWS = 14


# -- SVG charts ------------------------------------------------------------------------


def bar_svg(spent: Decimal, held: Decimal, limit: Decimal | None, width: int = 260) -> str:
    """A budget bar: spent (solid), held (striped), the rest of the limit (grey)."""
    height = 18
    if limit is None or limit <= 0:
        label = f"spent {format_dollars(spent)}, no limit"
        return (
            f'<svg class="bar" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'preserveAspectRatio="none" role="img" aria-label="{esc(label)}"><title>{esc(label)}</title><rect width="{width}" height="{height}" rx="4" fill="#e5e7eb"/></svg>'
        )
    over = spent + held > limit
    spent_w = min(width, float(spent / limit) * width)
    held_w = min(width - spent_w, float(held / limit) * width)
    pct = float(spent / limit) * 100
    label = f"spent {format_dollars(spent)} + held {format_dollars(held)} of {format_dollars(limit)} ({pct:.0f}%)"
    color = "#dc2626" if over or spent >= limit else ("#d97706" if pct >= 80 else "#2563eb")
    return (
        f'<svg class="bar" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'preserveAspectRatio="none" role="img" aria-label="{esc(label)}"><title>{esc(label)}</title>'
        '<defs><pattern id="held" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="3" height="6" fill="#93c5fd"/></pattern></defs>'
        f'<rect width="{width}" height="{height}" rx="4" fill="#e5e7eb"/>'
        f'<rect class="spent" width="{spent_w:.1f}" height="{height}" rx="4" fill="{color}"/>'
        f'<rect class="held" x="{spent_w:.1f}" width="{held_w:.1f}" height="{height}" fill="url(#held)"/>'
        "</svg>"
    )


def hbar_chart_svg(items: list[tuple[str, Decimal]], title: str, width: int = 520) -> str:
    """Horizontal bars, one per label (spend per model)."""
    if not items:
        return f'<p class="empty">No spend recorded yet for {esc(title.lower())}.</p>'
    row, label_w, pad = 26, 170, 8
    height = row * len(items) + pad * 2
    top = max(v for _, v in items) or Decimal(1)
    bars = []
    for i, (name, value) in enumerate(items):
        y = pad + i * row
        w = float(value / top) * (width - label_w - 110)
        color = _PALETTE[i % len(_PALETTE)]
        short = name if len(name) <= 24 else name[:23] + "…"
        bars.append(
            f'<g class="series"><title>{esc(name)}: {esc(format_dollars(value))}</title>'
            f'<text x="{label_w - 8}" y="{y + 17}" text-anchor="end">{esc(short)}</text>'
            f'<rect x="{label_w}" y="{y + 4}" width="{max(w, 1.0):.1f}" height="{row - 8}" rx="3" fill="{color}"/>'
            f'<text x="{label_w + w + 6:.1f}" y="{y + 17}" class="value">{esc(format_dollars(value))}</text></g>'
        )
    return (
        f'<svg class="chart chart-models" width="{width}" height="{height}" role="img" '
        f'aria-label="{esc(title)}" viewBox="0 0 {width} {height}">'
        f"<title>{esc(title)}</title>{''.join(bars)}</svg>"
    )


def time_chart_svg(points: list[tuple[str, Decimal]], title: str, width: int = 520) -> str:
    """Vertical bars over time, oldest on the left (spend per window)."""
    if not points:
        return '<p class="empty">No spend history yet.</p>'
    height, bottom, top_pad = 200, 40, 12
    top = max(v for _, v in points) or Decimal(1)
    # Room for the axis label, however many digits the top amount has (~7 px a digit).
    left = max(56, 7 * len(format_dollars(top)) + 12)
    plot_h = height - bottom - top_pad
    plot_w = width - left - 8
    step = plot_w / len(points)
    bar_w = min(max(4.0, step * 0.7), 48.0)
    parts = [
        f'<line x1="{left}" y1="{top_pad + plot_h}" x2="{width - 4}" y2="{top_pad + plot_h}" stroke="#9ca3af"/>',
        f'<text x="{left - 6}" y="{top_pad + 10}" text-anchor="end" class="axis">{esc(format_dollars(top))}</text>',
        f'<text x="{left - 6}" y="{top_pad + plot_h}" text-anchor="end" class="axis">$0</text>',
    ]
    for i, (label, value) in enumerate(points):
        h = float(value / top) * plot_h
        x = left + i * step + (step - bar_w) / 2
        y = top_pad + plot_h - h
        parts.append(
            f'<g class="series"><title>{esc(label)}: {esc(format_dollars(value))}</title>'
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{max(h, 1.0):.1f}" rx="2" fill="#2563eb"/></g>'
        )
        if len(points) <= 8 or i % max(1, len(points) // 7) == 0:
            parts.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{height - bottom + 16}" text-anchor="middle" '
                f'class="axis">{esc(label[5:] if len(label) >= 10 else label)}</text>'
            )
    return (
        f'<svg class="chart chart-time" width="{width}" height="{height}" role="img" '
        f'aria-label="{esc(title)}" viewBox="0 0 {width} {height}">'
        f"<title>{esc(title)}</title>{''.join(parts)}</svg>"
    )


# -- pages -----------------------------------------------------------------------------


def _projects(state: ServerState) -> dict[str, list[tuple[str, Budget]]]:
    projects: dict[str, list[tuple[str, Budget]]] = {}
    for budget in state.ledger.budgets("user:"):
        parts = budget.scope.split(":")
        if len(parts) < 3:
            continue
        project = unquote(parts[1])
        user = unquote(":".join(parts[2:]))
        projects.setdefault(project, []).append((user, budget))
    return projects


def _project_section(
    state: ServerState, project: str, users: list[tuple[str, Budget]], *, detail: bool
) -> str:
    rows = []
    by_model: dict[str, Decimal] = {}
    by_window: dict[str, Decimal] = {}
    statuses: list[tuple[str, Budget, BudgetStatus]] = []
    hidden = max(0, len(users) - _MAX_USERS)
    for user, budget in users[:_MAX_USERS]:
        status = state.ledger.status(budget)
        statuses.append((user, budget, status))
        for model, cost in status.by_model.items():
            by_model[model] = by_model.get(model, Decimal(0)) + cost
        for start, spent in state.ledger.history(budget, _HISTORY_WINDOWS):
            key = (
                start.date().isoformat()
                if budget.period.unit not in ("second", "minute", "hour")
                else start.strftime("%Y-%m-%d %H:%M")
            )
            by_window[key] = by_window.get(key, Decimal(0)) + spent
    for user, budget, status in statuses:
        rows.append(
            f'<tr class="user-row" data-user="{esc(user)}">'
            f'<td class="user"><a href="{esc(link("/ui/projects", project, "users", user))}">'
            f"{esc(user)}</a></td>"
            f"<td>{bar_svg(status.spent, status.held, budget.limit)}</td>"
            f'<td class="num">{esc(format_dollars(status.spent))}</td>'
            f'<td class="num">{esc(format_dollars(status.held))}</td>'
            f'<td class="num">{esc(format_dollars(budget.limit))}</td>'
            f'<td class="num">{esc(format_dollars(status.remaining))}</td>'
            f"<td>{esc(budget.period.describe() or 'lifetime')}</td>"
            f'<td class="when">{esc(_when(status.resets_at))}</td></tr>'
        )
    href = link("/ui/projects", project)
    total = sum((s.spent for _, _, s in statuses), Decimal(0))
    held = sum((s.held for _, _, s in statuses), Decimal(0))
    models = sorted(by_model.items(), key=lambda kv: (-kv[1], kv[0]))[:12]
    windows = sorted(by_window.items())[-_HISTORY_WINDOWS:]
    heading = (
        f"<h2>{esc(project)}</h2>"
        if detail
        else f'<h2><a href="{esc(href)}">{esc(project)}</a></h2>'
    )
    return (
        f'<section class="project" data-project="{esc(project)}">{heading}'
        f'<p class="summary">{len(users)} user(s) · spent {esc(format_dollars(total))} · '
        f"held {esc(format_dollars(held))} in current windows</p>"
        + table(
            ("User", "Budget", "Spent", "Held", "Limit", "Remaining", "Period", "Resets"),
            rows,
            css="budgets",
        )
        + (
            f'<p class="more">{hidden} more user(s) not shown; see '
            f"<code>GET /v1/projects/{esc(project)}/spend</code>.</p>"
            if hidden
            else ""
        )
        + '<div class="charts">'
        f"<figure><figcaption>Spend per model (current windows)</figcaption>{hbar_chart_svg(models, 'Spend per model')}</figure>"
        f"<figure><figcaption>Spend over time (per window)</figcaption>{time_chart_svg(windows, 'Spend over time')}</figure>"
        "</div></section>"
    )


def _when(moment: datetime | None) -> str:
    return "never" if moment is None else moment.strftime("%Y-%m-%d %H:%M %Z").strip()


@dashboard_router.get("")
@dashboard_router.get("/")
async def overview(request: Request) -> Response:
    """The library's budgets (the first 25 projects, each with its users, bars and charts)
    next to the gateway's."""
    state = get_state(request)
    if "key" in request.query_params and state.auth.enabled:
        # Whether right or wrong, the same answer: a URL is never a way in.
        return login_page(
            request,
            "The admin key is not accepted in a URL (it would end up in access logs): "
            "sign in with this form.",
            status=400,
        )
    refused = guard(request)
    if refused is not None:
        return refused
    projects = await run_in_threadpool(_projects, state)
    head = (
        '<div class="title"><h1>Budgets</h1>'
        '<a class="button" href="/ui/budgets/new">New library budget</a></div>'
    )
    gateway = await gateway_budgets_section(request)
    if not projects:
        body = (
            '<p class="empty">No budgets yet. Create a library budget here, with '
            "<code>llmbudget budgets create</code> or <code>POST /v1/projects/{project}/budgets</code>.</p>"
        )
        return page(request, "Budgets", head + body + gateway)
    names = sorted(projects)
    sections = await run_in_threadpool(
        lambda: [
            _project_section(state, name, projects[name], detail=False)
            for name in names[:_MAX_PROJECTS]
        ]
    )
    more = ""
    if len(names) > _MAX_PROJECTS:
        links = ", ".join(
            f'<a href="{esc(link("/ui/projects", n))}">{esc(n)}</a>' for n in names[_MAX_PROJECTS:]
        )
        more = f'<p class="more">More projects: {links}</p>'
    library = f'<h2 class="group">Library budgets</h2>{"".join(sections)}{more}'
    return page(request, "Budgets", head + library + gateway)


@dashboard_router.get("/projects/{project}")
def project_page(request: Request, project: str) -> Response:
    """One project in detail."""
    state = get_state(request)
    refused = guard(request)
    if refused is not None:
        return refused
    check_name(project, "project")
    users = [
        (unquote(b.scope[len(scope_key("user", project)) + 1 :]), b)
        for b in state.ledger.budgets(scope_key("user", project) + ":")
    ]
    if not users:
        return page(request, "Not found", f"<h1>No project {esc(project)}</h1>", status=404)
    return page(request, project, _project_section(state, project, users, detail=True))


@dashboard_router.get("/login")
def login_form(request: Request) -> Response:
    state = get_state(request)
    if not state.auth.enabled or authorized(state, request):
        return RedirectResponse("/ui", status_code=303)
    return login_page(request)


@dashboard_router.post("/login")
async def login(request: Request) -> Response:
    """Check the key from the form; on success set the session cookie."""
    state = get_state(request)
    body = (await request.body()).decode("utf-8", errors="replace")
    key = (parse_qs(body).get("key") or [""])[0]
    if state.auth.enabled and not state.auth.verify(key):
        return login_page(request, "That key is not valid.", status=403)
    response = RedirectResponse("/ui", status_code=303)
    if state.auth.enabled:
        set_session(state, request, response)
    return response


@dashboard_router.get("/logout")
def confirm_logout(request: Request) -> Response:
    """Ask: a GET changes nothing, so another site's link cannot sign anyone out."""
    refused = guard(request)
    if refused is not None:
        return refused
    inner = '<p>Sign out of this dashboard?</p><button type="submit">Log out</button>'
    return page(request, "Log out", "<h1>Log out</h1>" + form(request, "/ui/logout", inner))


@dashboard_router.post("/logout")
async def logout(request: Request) -> Response:
    """End the session (a form with this session's CSRF token, like every change)."""
    fields = await checked_form(request)
    if isinstance(fields, Response):
        return fields
    get_state(request).auth.end_session(request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@dashboard_router.get("/static/dashboard.css")
def stylesheet() -> Response:
    css = resources.files("llmbudget.server").joinpath("static/dashboard.css").read_text("utf-8")
    return Response(css, media_type="text/css", headers={"Cache-Control": "max-age=3600"})
