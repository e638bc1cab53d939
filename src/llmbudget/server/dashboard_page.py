"""The dashboard's page shell and form parts: layout, navigation, sign-in guard, escaping.

Every dashboard page is built by :func:`page` (one stylesheet from this server, a
Content-Security-Policy that loads nothing from elsewhere and runs no script), and every
form by :func:`form` (which carries the session's CSRF token, see :mod:`.csrf`). Every
value shown goes through :func:`esc`.

>>> esc("<b>")
'&lt;b&gt;'
>>> fmt_time(0.0, ZoneInfo("UTC"))
'1970-01-01 00:00:00'
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, quote
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

import llmbudget

from . import csrf
from .auth import SESSION_COOKIE
from .state import ServerState, get_state

if TYPE_CHECKING:
    from llmbudget.gateway.proxy import Gateway

__all__ = [
    "FormError",
    "authorized",
    "checked_form",
    "esc",
    "field",
    "fmt_time",
    "form",
    "gateway_of",
    "guard",
    "link",
    "login_page",
    "page",
    "server_zone",
    "set_session",
    "table",
]

_NAV = (
    ("/ui", "Budgets"),
    ("/ui/keys", "Keys"),
    ("/ui/spend", "Requests"),
)
_HEADERS = {
    # Nothing from other origins and no script at all: the pages need none.
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class FormError(Exception):
    """A form submission refused before anything was stored (shown inline)."""


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def link(path: str, *parts: str) -> str:
    """``path`` followed by each part percent-encoded (names may hold ``/`` or ``?``)."""
    return path + "".join("/" + quote(p, safe="") for p in parts)


def server_zone(request: Request) -> ZoneInfo:
    return ZoneInfo(get_state(request).config.default_timezone)


def fmt_time(at: float | None, tz: ZoneInfo) -> str:
    """A readable instant in ``tz`` (seconds, no offset clutter); ``—`` for none."""
    if at is None:
        return "—"
    return datetime.fromtimestamp(at, tz).strftime("%Y-%m-%d %H:%M:%S")


def page(request: Request, title: str, body: str, *, status: int = 200) -> HTMLResponse:
    """A whole dashboard page around ``body``."""
    here = request.url.path
    nav = "".join(
        f'<a href="{href}" class="here">{label}</a>'
        if _within(here, href)
        else f'<a href="{href}">{label}</a>'
        for href, label in _NAV
    )
    # Signing out is a POST with the session's CSRF token: a link would let any site do it.
    # Only a signed-in browser has something to sign out of (and gets a token for it).
    signed_in = get_state(request).auth.enabled and bool(request.cookies.get(SESSION_COOKIE))
    logout_form = (
        form(request, "/ui/logout", '<button type="submit">log out</button>', css="logout")
        if signed_in
        else ""
    )
    doc = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)} · llmbudget</title>"
        '<link rel="stylesheet" href="/ui/static/dashboard.css"></head><body>'
        f'<header><a class="brand" href="/ui">llmbudget</a><nav>{nav}</nav>'
        f'<span class="version">server {esc(llmbudget.__version__)}</span>'
        f"{logout_form}</header>"
        f"<main>{body}</main></body></html>"
    )
    response = HTMLResponse(doc, status_code=status, headers=_HEADERS)
    csrf.ensure_cookie(request, response)
    return response


def _within(path: str, section: str) -> bool:
    if section == "/ui":  # the overview and the pages it links to directly
        return path in ("/ui", "/ui/") or path.startswith(("/ui/projects", "/ui/budgets"))
    return path == section or path.startswith(section + "/") or path.startswith(section + ".")


def login_page(request: Request, message: str | None = None, status: int = 200) -> HTMLResponse:
    note = f'<p class="error">{esc(message)}</p>' if message else ""
    body = (
        '<section class="login"><h1>Sign in</h1>'
        "<p>Enter the server's admin key.</p>"
        f"{note}"
        '<form method="post" action="/ui/login">'
        '<label for="key">Admin key</label>'
        '<input id="key" name="key" type="password" autocomplete="current-password" required autofocus>'
        '<button type="submit">Sign in</button></form></section>'
    )
    return page(request, "Sign in", body, status=status)


def authorized(state: ServerState, request: Request) -> bool:
    auth = state.auth
    if not auth.enabled:
        return True
    presented = auth.presented_key(request)
    if presented is not None:
        return auth.verify(presented)
    return auth.verify_session(request.cookies.get(SESSION_COOKIE))


def guard(request: Request) -> Response | None:
    """A redirect to the login form unless the request may see the dashboard."""
    if authorized(get_state(request), request):
        return None
    return RedirectResponse("/ui/login", status_code=303)


def set_session(state: ServerState, request: Request, response: Response) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        state.auth.new_session(),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
        max_age=int(state.auth.session_ttl),
    )


async def checked_form(request: Request) -> dict[str, str] | Response:
    """The POSTed form's fields, or the response that ends the request: the login
    redirect, or 403 when the CSRF token is missing or wrong (nothing is read further)."""
    refused = guard(request)
    if refused is not None:
        return refused
    body = (await request.body()).decode("utf-8", errors="replace")
    fields = {k: v[-1] for k, v in parse_qs(body, keep_blank_values=True).items()}
    if not csrf.valid(request, fields.pop(csrf.CSRF_FIELD, None)):
        message = (
            "This form was not sent by a page of this dashboard (its CSRF token is missing "
            "or out of date), so nothing was changed. Reload the page and try again."
        )
        return page(
            request, "Refused", f'<h1>Refused</h1><p class="error">{esc(message)}</p>', status=403
        )
    return fields


def form(request: Request, action: str, inner: str, *, css: str = "edit") -> str:
    """A POST form to ``action`` carrying this session's CSRF token."""
    token = csrf.csrf_token(request)
    return (
        f'<form method="post" action="{esc(action)}" class="{css}">'
        f'<input type="hidden" name="{csrf.CSRF_FIELD}" value="{esc(token)}">{inner}</form>'
    )


def field(
    name: str,
    label: str,
    values: Mapping[str, str],
    *,
    kind: str = "text",
    hint: str = "",
    required: bool = False,
    options: Iterable[str] | None = None,
) -> str:
    """A labelled input (or ``<select>`` with ``options``) holding ``values[name]``."""
    value = values.get(name, "")
    ident = f"f-{name}"
    if options is not None:
        opts = "".join(
            f'<option value="{esc(o)}"{" selected" if o == value else ""}>{esc(o.replace("_", " ") or "any")}</option>'
            for o in options
        )
        control = f'<select id="{ident}" name="{esc(name)}">{opts}</select>'
    elif kind == "checkbox":
        control = (
            f'<input id="{ident}" name="{esc(name)}" type="checkbox" value="on"'
            f"{' checked' if value else ''}>"
        )
    else:
        control = (
            f'<input id="{ident}" name="{esc(name)}" type="{kind}" value="{esc(value)}"'
            f"{' required' if required else ''}>"
        )
    note = f"<small>{esc(hint)}</small>" if hint else ""
    return f'<div class="field"><label for="{ident}">{esc(label)}</label>{control}{note}</div>'


def table(headers: Iterable[str], rows: Iterable[str], *, css: str = "data") -> str:
    """A table in a horizontally scrolling box (narrow screens scroll it, not the page);
    ``rows`` are ready ``<tr>`` strings."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    return (
        f'<div class="table-wrap"><table class="{css}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def gateway_of(request: Request) -> Gateway | None:
    """The gateway served by this server, if it was started with a gateway config."""
    gateway: Gateway | None = getattr(request.app.state, "gateway", None)
    return gateway
