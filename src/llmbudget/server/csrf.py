"""CSRF tokens for the dashboard's forms: one per browser session, checked on every POST.

A token is the HMAC-SHA256 of the browser's secret cookie: the login session's id when
signed in, else a random ``llmbudget_csrf`` cookie (an open server, which has no login).
Both cookies are HttpOnly and SameSite=Strict, so a page on another site can neither read
the cookie nor compute the token, and a forged form, which cannot carry the token, is
refused with 403 before anything is read or stored. Nothing is kept server-side: every
worker derives the same token from the same cookie, and a new login (a new session id)
means a new token.

The login form is the one form without a token: it is the form that *opens* the session,
and a forged login would need the admin key, which is the secret a forger lacks.

>>> token_for("cookie-value") == token_for("cookie-value") != token_for("other")
True
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from starlette.requests import Request
from starlette.responses import Response

from .auth import SESSION_COOKIE

__all__ = ["CSRF_COOKIE", "CSRF_FIELD", "csrf_token", "ensure_cookie", "token_for", "valid"]

CSRF_COOKIE = "llmbudget_csrf"
CSRF_FIELD = "csrf_token"
_LABEL = b"llmbudget-dashboard-csrf-v1"
_MAX_COOKIE = 128


def token_for(cookie: str) -> str:
    """The token of the session whose secret cookie is ``cookie``."""
    return hmac.new(cookie.encode("utf-8", "surrogatepass"), _LABEL, hashlib.sha256).hexdigest()


def _cookie(request: Request) -> str | None:
    for name in (SESSION_COOKIE, CSRF_COOKIE):
        value = request.cookies.get(name)
        if value and len(value) <= _MAX_COOKIE:
            return value
    return None


def csrf_token(request: Request) -> str:
    """The token forms on this page must carry. A request without a secret cookie gets
    one (set on the response by :func:`ensure_cookie`), so its forms work once loaded."""
    cookie = _cookie(request) or getattr(request.state, "csrf_cookie", None)
    if cookie is None:
        cookie = secrets.token_urlsafe(32)
        request.state.csrf_cookie = cookie
    return token_for(cookie)


def ensure_cookie(request: Request, response: Response) -> None:
    """Set the fallback cookie whose token :func:`csrf_token` handed out, if it made one."""
    fresh = getattr(request.state, "csrf_cookie", None)
    if fresh is not None:
        response.set_cookie(
            CSRF_COOKIE,
            fresh,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/ui",
        )


def valid(request: Request, presented: str | None) -> bool:
    """Whether ``presented`` is this browser session's token (constant-time compare)."""
    cookie = _cookie(request)
    if cookie is None or not presented:
        return False
    return hmac.compare_digest(
        presented.encode("utf-8", "surrogatepass"), token_for(cookie).encode()
    )
