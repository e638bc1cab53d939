"""Dashboard sessions: random ids kept server-side, expiring, revoked at logout, bound to
the admin key (issue 13, found 9: the cookie was a fixed HMAC of the key, valid forever
and still valid after logout)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from llmbudget.clock import FrozenClock
from llmbudget.server import ServerConfig, create_app
from llmbudget.server.auth import SESSION_COOKIE, SESSION_KIND
from llmbudget.stores.base import Store
from tests.dashboard_kit import logout
from tests.storekit import FACTORIES

KEY = "session-key"
NOON = 1_773_576_000.0


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(NOON)


def _app(store: Store, clock: FrozenClock, key: str = KEY, ttl: float = 3600.0) -> TestClient:
    config = ServerConfig(admin_key=key, session_ttl=ttl)
    return TestClient(create_app(config, store=store, clock=clock))


def _login(client: TestClient, key: str = KEY) -> str:
    response = client.post("/ui/login", data={"key": key}, follow_redirects=False)
    assert response.status_code == 303, response.text
    return response.cookies[SESSION_COOKIE]


def _use(client: TestClient, session: str) -> None:
    client.cookies.clear()
    client.cookies.set(SESSION_COOKIE, session)


def _allowed(client: TestClient, session: str) -> bool:
    _use(client, session)
    response = client.get("/v1/projects")
    assert response.status_code in (200, 401), response.text
    return response.status_code == 200


@pytest.fixture(params=sorted(FACTORIES))
def store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Store]:
    monkeypatch.delenv("LLMBUDGET_ADMIN_KEY", raising=False)
    with FACTORIES[request.param](tmp_path) as opened:
        yield opened


def test_sessions_are_random_server_side_and_revoked_at_logout(
    store: Store, clock: FrozenClock
) -> None:
    with _app(store, clock) as client:
        first, second = _login(client), _login(client)
        assert first != second and KEY not in first and len(first) >= 40
        # Kept server-side under a hash of the id, never the id itself.
        stored = [key for key, _ in store.list_docs(SESSION_KIND)]
        assert len(stored) == 2 and first not in stored and second not in stored
        assert _allowed(client, first) and _allowed(client, second)
        _use(client, first)
        logout(client)
        # The cookie replayed after logout is refused; the other session lives on.
        assert not _allowed(client, first)
        assert _allowed(client, second)
        assert not _allowed(client, "made-up-" + first[8:])


def test_sessions_expire(store: Store, clock: FrozenClock) -> None:
    with _app(store, clock, ttl=600) as client:
        session = _login(client)
        clock.advance(599)
        assert _allowed(client, session)
        clock.advance(1)
        assert not _allowed(client, session)
        assert store.list_docs(SESSION_KIND) == []  # dropped once seen expired
        _use(client, session)
        page = client.get("/ui", follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"] == "/ui/login"


def test_a_new_admin_key_logs_every_browser_out(store: Store, clock: FrozenClock) -> None:
    with _app(store, clock) as client:
        session = _login(client)
    with _app(store, clock, key="rotated-key") as client:
        assert not _allowed(client, session)
        assert _allowed(client, _login(client, "rotated-key"))


def test_login_sweeps_expired_sessions(store: Store, clock: FrozenClock) -> None:
    with _app(store, clock, ttl=60) as client:
        for _ in range(3):
            _login(client)
        clock.advance(61)
        _login(client)
        assert len(store.list_docs(SESSION_KIND)) == 1


def test_the_cookie_carries_the_session_lifetime(store: Store, clock: FrozenClock) -> None:
    with _app(store, clock, ttl=900) as client:
        response = client.post("/ui/login", data={"key": KEY}, follow_redirects=False)
        cookie = response.headers["set-cookie"]
        assert "Max-Age=900" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie


def test_logout_is_a_form_with_a_csrf_token(store: Store, clock: FrozenClock) -> None:
    # Before: GET /ui/logout ended the session, so any site could sign a user out.
    with _app(store, clock) as client:
        session = _login(client)
        _use(client, session)
        assert client.get("/ui/logout").status_code == 200
        assert _allowed(client, session)  # a GET changes nothing
        forged = client.post("/ui/logout", data={"csrf_token": "forged"}, follow_redirects=False)
        assert forged.status_code == 403 and _allowed(client, session)
        _use(client, session)
        assert logout(client).status_code == 303
        assert not _allowed(client, session)
