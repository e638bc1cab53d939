"""Admin-key authentication: one shared secret guards every endpoint but ``/v1/health``.

Clients send ``Authorization: Bearer <key>`` (``X-API-Key: <key>`` also works, for tools
that cannot set ``Authorization``). The dashboard logs in once with the key and then
carries a session cookie derived from it (HMAC-SHA256 of a fixed label under the key), so
the key itself never sits in a cookie and rotating the key logs every browser out.
Comparisons use :func:`hmac.compare_digest`, so timing reveals nothing of the key.

With no key configured the server is open, which is why ``llmbudget serve`` refuses to
listen on anything but a loopback address without one (see :func:`check_bind`).

>>> auth = AdminAuth("s3cret")
>>> auth.verify("s3cret"), auth.verify("guess")
(True, False)
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress

from fastapi import Request
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException

__all__ = ["SESSION_COOKIE", "AdminAuth", "bearer_scheme", "check_bind", "is_loopback"]

SESSION_COOKIE = "llmbudget_session"
_SESSION_LABEL = b"llmbudget-dashboard-session-v1"

# Declared so the OpenAPI document shows the scheme; the check itself is AdminAuth's.
bearer_scheme = HTTPBearer(auto_error=False, description="The server's admin API key.")


class AdminAuth:
    """Checks requests against the admin key (``None``: no authentication)."""

    def __init__(self, key: str | None) -> None:
        self.key = key or None

    @property
    def enabled(self) -> bool:
        return self.key is not None

    def verify(self, candidate: str | None) -> bool:
        if self.key is None:
            return True
        if not candidate:
            return False
        return hmac.compare_digest(candidate.encode("utf-8"), self.key.encode("utf-8"))

    def session_token(self) -> str:
        """The dashboard cookie value for the current key."""
        assert self.key is not None
        return hmac.new(self.key.encode("utf-8"), _SESSION_LABEL, hashlib.sha256).hexdigest()

    def verify_session(self, cookie: str | None) -> bool:
        if self.key is None:
            return True
        if not cookie:
            return False
        return hmac.compare_digest(cookie.encode("utf-8"), self.session_token().encode("utf-8"))

    def presented_key(self, request: Request) -> str | None:
        header = request.headers.get("authorization")
        if header:
            scheme, _, value = header.partition(" ")
            if scheme.lower() == "bearer":
                return value.strip()
            return ""  # some other scheme: presented, but not a key we accept
        return request.headers.get("x-api-key")

    def require(self, request: Request) -> None:
        """Raise 401 (no credentials) or 403 (wrong credentials) unless the request is allowed."""
        if self.key is None:
            return
        presented = self.presented_key(request)
        if presented is None:
            if self.verify_session(request.cookies.get(SESSION_COOKIE)):
                return
            raise HTTPException(
                401,
                "missing admin API key: send 'Authorization: Bearer <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not self.verify(presented):
            raise HTTPException(403, "invalid admin API key")


def is_loopback(host: str) -> bool:
    """``True`` for ``localhost`` and loopback addresses (``127.0.0.0/8``, ``::1``)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, admin_key: str | None, insecure_no_auth: bool) -> str | None:
    """Why the server must not start (``None``: it may). Open servers stay on loopback."""
    if admin_key or insecure_no_auth or is_loopback(host):
        return None
    return (
        f"refusing to listen on {host!r} without an admin key: anyone who can reach it could "
        "change budgets. Set $LLMBUDGET_ADMIN_KEY (or admin_key in the config file), listen "
        "on 127.0.0.1, or pass --insecure-no-auth if the network is trusted."
    )
