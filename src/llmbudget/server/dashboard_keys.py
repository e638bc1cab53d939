"""The gateway's virtual keys on the dashboard: list, create, edit, revoke.

Every change goes through the gateway's :class:`~llmbudget.gateway.keys.KeyManager`, the
same code as the admin API (``/v1/keys``), so a form accepts and refuses exactly what the
API does; a refusal is shown on the form and stores nothing. The form only turns text
into the API's field types (a whole number into an int, a comma-separated model list
into a list, an empty field into "not set").

``/ui/keys`` (list), ``/ui/keys/new`` (create: the secret is shown once, on the page
after creation), ``/ui/keys/{id}`` (budget, limits, edit form, spend over a time range),
``/ui/keys/{id}/revoke`` (a confirmation page, then the revoke).

>>> key_fields({"user": " ann ", "rpm_limit": "10", "models": "a, b", "team": ""}, edit=False)
{'user': 'ann', 'models': ['a', 'b'], 'rpm_limit': 10}
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from llmbudget.errors import LLMBudgetError
from llmbudget.gateway.keys import VirtualKey
from llmbudget.gateway.rate_limits import RATE_LIMIT_FIELDS
from llmbudget.http_errors import ApiError
from llmbudget.money import format_dollars

from .dashboard import bar_svg
from .dashboard_budgets import status_cells
from .dashboard_entities import spend_report_section
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
from .state import get_state

if TYPE_CHECKING:
    from llmbudget.gateway.proxy import Gateway

__all__ = ["key_fields", "keys_router"]

keys_router = APIRouter(prefix="/ui", include_in_schema=False)

_TEXT = ("user", "name", "team", "org", "budget", "period")
_WHOLE = re.compile(r"^\s*\d{1,30}\s*$")
_LIMIT_LABELS = {
    "rpm_limit": "Requests / minute",
    "tpm_limit": "Tokens / minute",
    "tpd_limit": "Tokens / day",
    "max_parallel_requests": "Parallel requests",
}


def key_fields(values: Mapping[str, str], *, edit: bool) -> dict[str, Any]:
    """A key form's text as KeyManager fields. Creating, an empty field is left out;
    editing, it clears the setting. Nothing is validated here: KeyManager does that."""
    out: dict[str, Any] = {}
    for name in (*_TEXT, "models", *RATE_LIMIT_FIELDS, "duration"):
        if name not in values or (edit and name in ("user", "duration")):
            continue
        text = values[name].strip()
        if not text:
            if edit:
                out[name] = None
            continue
        if name == "models":
            out[name] = [m for m in re.split(r"[,\s]+", text) if m]
        elif name in RATE_LIMIT_FIELDS and _WHOLE.match(text):
            out[name] = int(text)
        else:
            out[name] = text  # anything else is KeyManager's to accept or refuse
    return out


def _values(key: VirtualKey) -> dict[str, str]:
    budget = key.budget.to_dict() if key.budget else {}
    values = {
        "name": key.name or "",
        "team": key.team or "",
        "org": key.org or "",
        "budget": str(budget.get("budget") or ""),
        "period": str(budget.get("period") or ""),
        "models": ", ".join(sorted(key.models)) if key.models is not None else "",
    }
    for name, limit in key.limits.to_dict().items():
        values[name] = str(limit)
    return values


def _key_form(
    request: Request, action: str, values: Mapping[str, str], *, new: bool, error: str | None
) -> str:
    note = f'<p class="error" role="alert">{esc(error)}</p>' if error else ""
    who = field("user", "User", values, required=True, hint="who the key belongs to") if new else ""
    limits = "".join(
        field(name, _LIMIT_LABELS[name], values, kind="text", hint="empty: no limit")
        for name in RATE_LIMIT_FIELDS
    )
    inner = (
        note
        + '<div class="grid">'
        + who
        + field("name", "Name", values)
        + field("team", "Team", values)
        + field("org", "Org", values)
        + field("budget", "Budget ($)", values, hint="empty: no cap")
        + field("period", "Period", values, hint="daily, monthly, 30d… empty: lifetime")
        + field("models", "Models", values, hint="comma-separated; empty: all")
        + limits
        + (
            field("duration", "Expires after", values, hint="e.g. 30d, 12h; empty: never")
            if new
            else ""
        )
        + "</div>"
        + f'<button type="submit">{"Create key" if new else "Save key"}</button>'
    )
    return form(request, action, inner)


def _no_gateway(request: Request) -> Response:
    body = (
        '<h1>Keys</h1><p class="empty">This server runs no gateway: start it with a config '
        "that has a <code>model_list</code> to issue virtual keys.</p>"
    )
    return page(request, "Keys", body, status=404)


async def _posted(request: Request) -> tuple[dict[str, str], Gateway] | Response:
    """A key form's fields (its CSRF token checked) and the gateway they are for, or the
    response that ends the request."""
    fields = await checked_form(request)
    if isinstance(fields, Response):
        return fields
    gateway = gateway_of(request)
    if gateway is None:
        return _no_gateway(request)
    return fields, gateway


def _state_word(key: VirtualKey, now: float) -> str:
    if key.revoked:
        return "revoked"
    problem = key.problem(now)
    return "expired" if problem else "active"


def _name(kind: str, name: str | None) -> str:
    """A link to the page of user/team/org ``name`` ('' for none)."""
    return f'<a href="{esc(link(f"/ui/{kind}s", name))}">{esc(name)}</a>' if name else ""


def _who(kind: str, name: str | None) -> str:
    return f"<td>{_name(kind, name)}</td>"


async def _spend(gateway: Gateway, key: VirtualKey) -> tuple[str, Any]:
    budget = gateway.planner.general_budgets(key, None)[0]  # the key's own scope
    return budget.scope, await gateway.ledger.status(budget)


@keys_router.get("/keys")
async def list_keys(request: Request) -> Response:
    """Every key: who it belongs to, its budget, what it spent, whether it works."""
    refused = guard(request)
    if refused is not None:
        return refused
    gateway = gateway_of(request)
    if gateway is None:
        return _no_gateway(request)
    now = get_state(request).clock()
    rows = []
    for key in sorted(await gateway.keys.list(), key=lambda k: (k.revoked, -k.created_at, k.id)):
        _, status = await _spend(gateway, key)
        word = _state_word(key, now)
        rows.append(
            f'<tr class="key-row" data-key="{esc(key.id)}">'
            f'<td><a href="{esc(link("/ui/keys", key.id))}">{esc(key.id)}</a></td>'
            f"<td>{esc(key.name or '')}</td>"
            f"{_who('user', key.user)}{_who('team', key.team)}"
            f"<td>{esc(key.budget.describe() if key.budget else 'none')}</td>"
            f'<td class="num">{esc(format_dollars(status.spent))}</td>'
            f'<td><span class="badge {word}">{word}</span></td></tr>'
        )
    listing = (
        table(("Key", "Name", "User", "Team", "Budget", "Spent", "Status"), rows)
        if rows
        else '<p class="empty">No keys yet.</p>'
    )
    head = '<div class="title"><h1>Keys</h1><a class="button" href="/ui/keys/new">New key</a></div>'
    return page(request, "Keys", head + listing)


@keys_router.get("/keys/new")
def new_key_form(request: Request) -> Response:
    refused = guard(request)
    if refused is not None:
        return refused
    if gateway_of(request) is None:
        return _no_gateway(request)
    body = "<h1>New key</h1>" + _key_form(request, "/ui/keys/new", {}, new=True, error=None)
    return page(request, "New key", body)


@keys_router.post("/keys/new")
async def create_key(request: Request) -> Response:
    """Create a key; the page that answers is the only one that ever shows its secret."""
    posted = await _posted(request)
    if isinstance(posted, Response):
        return posted
    fields, gateway = posted
    try:
        key, secret = await gateway.keys.create(key_fields(fields, edit=False))
    except (LLMBudgetError, ApiError) as exc:
        body = "<h1>New key</h1>" + _key_form(
            request, "/ui/keys/new", fields, new=True, error=str(exc)
        )
        return page(request, "New key", body, status=400)
    body = (
        f"<h1>Key created</h1>"
        '<section class="project secret"><p>Copy the secret now: it is shown only this once '
        "(only its hash is stored).</p>"
        f'<p><code id="secret" class="secret">{esc(secret)}</code></p>'
        f'<p><a href="{esc(link("/ui/keys", key.id))}">Go to key {esc(key.id)}</a></p></section>'
    )
    return page(request, "Key created", body, status=201)


def _key_facts(key: VirtualKey, request: Request) -> str:
    tz = server_zone(request)
    models = ", ".join(sorted(key.models)) if key.models is not None else "all"
    facts = [
        ("User", _name("user", key.user)),
        ("Team", _name("team", key.team) or "—"),
        ("Org", _name("org", key.org) or "—"),
        ("Models", esc(models)),
        *((_LIMIT_LABELS[n], esc(v)) for n, v in key.limits.to_dict().items()),
        ("Created", esc(fmt_time(key.created_at, tz))),
        ("Expires", esc(fmt_time(key.expires_at, tz) if key.expires_at else "never")),
    ]
    if key.revoked_at is not None:
        facts.append(("Revoked", esc(fmt_time(key.revoked_at, tz))))
    items = "".join(f"<dt>{esc(label)}</dt><dd>{value}</dd>" for label, value in facts)
    return f'<dl class="facts">{items}</dl>'


async def _key_page(request: Request, key_id: str, *, values: Mapping[str, str] | None = None,
                    error: str | None = None) -> Response:  # fmt: skip
    gateway = gateway_of(request)
    if gateway is None:
        return _no_gateway(request)
    key = await gateway.keys.get(key_id)
    if key is None:
        return page(request, "Not found", f"<h1>No key {esc(key_id)}</h1>", status=404)
    word = _state_word(key, get_state(request).clock())
    _, status = await _spend(gateway, key)
    budget_row = (
        f"<tr><td>{bar_svg(status.spent, status.held, status.limit)}</td>"
        f"<td>{esc(key.budget.period.describe() or 'lifetime') if key.budget else 'no cap'}</td>"
        f"{status_cells(status, request)}</tr>"
    )
    parts = [
        f'<div class="title"><h1><span class="kind">key</span> {esc(key.id)} '
        f'<span class="badge {word}">{word}</span></h1>'
        + (
            f'<a class="button danger" href="{esc(link("/ui/keys", key.id, "revoke"))}">Revoke</a>'
            if not key.revoked and key.source == "api"
            else ""
        )
        + "</div>",
        f"<p class=summary>{esc(key.name or '')}</p>" if key.name else "",
        _key_facts(key, request),
        table(("Budget", "Period", "Spent", "Held", "Limit", "Remaining", "Resets"), [budget_row]),
    ]
    if key.source == "api" and not key.revoked:
        parts.append(
            '<section class="project"><h2>Edit key</h2>'
            + _key_form(
                request, link("/ui/keys", key.id), values or _values(key), new=False, error=error
            )
            + "</section>"
        )
    elif key.source != "api":
        parts.append(
            '<p class="summary">This key is defined in the config file; edit it there.</p>'
        )
    parts.append(await spend_report_section(request, {"key": key.id}))
    return page(request, key.id, "".join(parts), status=400 if error else 200)


@keys_router.get("/keys/{key_id}")
async def key_page(request: Request, key_id: str) -> Response:
    refused = guard(request)
    if refused is not None:
        return refused
    return await _key_page(request, key_id)


@keys_router.post("/keys/{key_id}")
async def edit_key(request: Request, key_id: str) -> Response:
    """Change a key's budget, period, models, rate limits, name, team or org."""
    posted = await _posted(request)
    if isinstance(posted, Response):
        return posted
    fields, gateway = posted
    try:
        await gateway.keys.update(key_id, key_fields(fields, edit=True))
    except (LLMBudgetError, ApiError) as exc:
        return await _key_page(request, key_id, values=fields, error=str(exc))
    return RedirectResponse(link("/ui/keys", key_id), status_code=303)


@keys_router.get("/keys/{key_id}/revoke")
async def confirm_revoke(request: Request, key_id: str) -> Response:
    """Ask before revoking: a revoked key never works again."""
    refused = guard(request)
    if refused is not None:
        return refused
    gateway = gateway_of(request)
    if gateway is None:
        return _no_gateway(request)
    key = await gateway.keys.get(key_id)
    if key is None:
        return page(request, "Not found", f"<h1>No key {esc(key_id)}</h1>", status=404)
    inner = (
        f"<p>Revoke key <strong>{esc(key.id)}</strong> of user <strong>{esc(key.user)}</strong>? "
        "Requests with it are refused from now on; this cannot be undone.</p>"
        '<button type="submit" class="danger">Revoke key</button> '
        f'<a href="{esc(link("/ui/keys", key.id))}">Cancel</a>'
    )
    body = "<h1>Revoke key</h1>" + form(request, link("/ui/keys", key.id, "revoke"), inner)
    return page(request, "Revoke key", body)


@keys_router.post("/keys/{key_id}/revoke")
async def revoke_key(request: Request, key_id: str) -> Response:
    posted = await _posted(request)
    if isinstance(posted, Response):
        return posted
    _, gateway = posted
    try:
        await gateway.keys.revoke(key_id)
    except (LLMBudgetError, ApiError) as exc:
        return page(
            request, "Refused", f'<h1>Refused</h1><p class="error">{esc(exc)}</p>', status=400
        )
    return RedirectResponse(link("/ui/keys", key_id), status_code=303)
