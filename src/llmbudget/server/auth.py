"""Admin-key authentication: one shared secret guards every endpoint but ``/v1/health``.

Clients send ``Authorization: Bearer <key>`` (``X-API-Key: <key>`` also works, for tools
that cannot set ``Authorization``). The key is never accepted in a URL: query strings end
up in access logs and browser history. Comparisons use :func:`hmac.compare_digest`, so
timing reveals nothing of the key.

The dashboard logs in once with the key (a form) and then carries a **session**: a random
id (256 bits) in an HttpOnly cookie, kept server-side as a store document (kind
``ui-session``) under the SHA-256 of the id, so a leaked database leaks no usable session,
and every server worker sharing the store knows it. A session expires after
``session_ttl`` (12 hours by default), is deleted at logout (the cookie is worthless
afterwards, even replayed), and is bound to the admin key it was opened with: rotating the
key logs every browser out.

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
import secrets

from fastapi import Request
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException

from llmbudget.clock import Clock, system_clock
from llmbudget.stores.base import Store

__all__ = [
    "SESSION_COOKIE",
    "SESSION_KIND",
    "SESSION_TTL",
    "AdminAuth",
    "bearer_scheme",
    "check_bind",
    "is_loopback",
]

SESSION_COOKIE = "llmbudget_session"
SESSION_KIND = "ui-session"
SESSION_TTL = 12 * 3600.0
_KEY_LABEL = b"llmbudget-dashboard-session-v2"

# Declared so the OpenAPI document shows the scheme; the check itself is AdminAuth's.
bearer_scheme = HTTPBearer(auto_error=False, description="The server's admin API key.")


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()


class AdminAuth:
    """Checks requests against the admin key (``None``: no authentication), and keeps the
    dashboard's sessions in ``store`` (without a store, no session can be opened)."""

    def __init__(
        self,
        key: str | None,
        store: Store | None = None,
        *,
        clock: Clock = system_clock,
        session_ttl: float = SESSION_TTL,
    ) -> None:
        self.key = key or None
        self.store = store
        self.clock = clock
        self.session_ttl = session_ttl

    @property
    def enabled(self) -> bool:
        return self.key is not None

    def verify(self, candidate: str | None) -> bool:
        if self.key is None:
            return True
        if not candidate:
            return False
        return hmac.compare_digest(
            candidate.encode("utf-8", "surrogatepass"), self.key.encode("utf-8")
        )

    def _key_tag(self) -> str:
        """Which admin key a session was opened with (an HMAC, never the key)."""
        assert self.key is not None
        return hmac.new(self.key.encode("utf-8"), _KEY_LABEL, hashlib.sha256).hexdigest()

    def new_session(self) -> str:
        """Open a session; returns its id (the cookie value, never stored as such)."""
        if self.store is None or self.key is None:
            raise RuntimeError("sessions need an admin key and a store")
        now = self.clock()
        self._forget_expired(now)
        session_id = secrets.token_urlsafe(32)
        self.store.put_doc(
            SESSION_KIND,
            _digest(session_id),
            {"created_at": now, "expires_at": now + self.session_ttl, "key": self._key_tag()},
        )
        return session_id

    def verify_session(self, cookie: str | None) -> bool:
        if self.key is None:
            return True
        if not cookie or self.store is None or len(cookie) > 128:
            return False
        found = self.store.get_doc(SESSION_KIND, _digest(cookie))
        if found is None:
            return False
        expires_at = found.get("expires_at")
        if not isinstance(expires_at, int | float) or expires_at <= self.clock():
            self.store.delete_doc(SESSION_KIND, _digest(cookie))
            return False
        return hmac.compare_digest(str(found.get("key", "")), self._key_tag())

    def end_session(self, cookie: str | None) -> None:
        """Revoke a session (logout): its cookie is refused from now on."""
        if cookie and self.store is not None and len(cookie) <= 128:
            self.store.delete_doc(SESSION_KIND, _digest(cookie))

    def _forget_expired(self, now: float) -> None:
        assert self.store is not None
        for key, data in self.store.list_docs(SESSION_KIND):
            expires_at = data.get("expires_at")
            if not isinstance(expires_at, int | float) or expires_at <= now:
                self.store.delete_doc(SESSION_KIND, key)

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
