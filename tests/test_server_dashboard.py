"""The /ui dashboard as HTML: login, what it shows, escaping, and that it loads nothing
from elsewhere. (tests/test_dashboard_browser.py renders it in a real browser.)"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from llmbudget.clock import FrozenClock
from llmbudget.server import ServerConfig, create_app
from llmbudget.server.dashboard import bar_svg, hbar_chart_svg, time_chart_svg
from llmbudget.stores.memory import MemoryStore
from tests.dashboard_kit import logout

KEY = "ui-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
NOON = 1_773_576_000.0


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.delenv("LLMBUDGET_ADMIN_KEY", raising=False)
    clock = FrozenClock(NOON - 3 * 86_400)
    app = create_app(ServerConfig(admin_key=KEY), store=MemoryStore(), clock=clock)
    with TestClient(app) as test_client:
        for user, amount in (("alice", "10"), ("bob", "2"), ("<script>x</script>", "1")):
            test_client.post(
                "/v1/projects/demo/budgets",
                json={"user": user, "amount": amount, "period": "daily"},
                headers=AUTH,
            )
        for day in range(4):
            for user, cost, model in (
                ("alice", "1.5", "gpt-4o"),
                ("bob", "0.4", "claude-3-5-haiku"),
            ):
                test_client.post(
                    "/v1/projects/demo/charge",
                    json={"user": user, "amount": str(float(cost) + day / 10), "model": model},
                    headers=AUTH,
                )
            if day < 3:
                clock.advance(86_400)
        test_client.post(
            "/v1/projects/demo/reserve", json={"user": "bob", "amount": "0.5"}, headers=AUTH
        )
        yield test_client


def test_login_flow_sets_an_httponly_session_cookie(client: TestClient) -> None:
    anonymous = client.get("/ui", follow_redirects=False)
    assert anonymous.status_code == 303 and anonymous.headers["location"] == "/ui/login"
    form = client.get("/ui/login")
    assert form.status_code == 200 and 'name="key"' in form.text and 'type="password"' in form.text
    wrong = client.post("/ui/login", data={"key": "guess"}, follow_redirects=False)
    assert wrong.status_code == 403 and "not valid" in wrong.text
    assert "llmbudget_session" not in wrong.headers.get("set-cookie", "")
    ok = client.post("/ui/login", data={"key": KEY}, follow_redirects=False)
    assert ok.status_code == 303
    cookie = ok.headers["set-cookie"]
    assert "llmbudget_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert KEY not in cookie  # a derived token, never the key itself
    page = client.get("/ui")
    assert page.status_code == 200 and "alice" in page.text
    # The session cookie is also enough for the API (same key), and logout drops it.
    logout(client)
    assert client.get("/ui", follow_redirects=False).status_code == 303


def test_the_key_is_never_accepted_in_a_url(client: TestClient) -> None:
    # Before: /ui?key=<admin key> logged in, and the key went into access logs.
    for key in (KEY, "wrong"):
        response = client.get(f"/ui?key={key}", follow_redirects=False)
        assert response.status_code == 400 and "not accepted in a URL" in response.text
        assert "set-cookie" not in response.headers
    assert client.get("/ui", follow_redirects=False).status_code == 303
    assert client.get(f"/v1/projects?key={KEY}").status_code == 401


def test_overview_shows_users_bars_and_charts(client: TestClient) -> None:
    page = client.get("/ui", headers=AUTH).text
    for user in ("alice", "bob"):
        assert f'data-user="{user}"' in page
    assert page.count('class="bar"') == 3
    assert 'class="chart chart-models"' in page and 'class="chart chart-time"' in page
    assert "gpt-4o" in page and "claude-3-5-haiku" in page
    # alice: 1.8 spent today of 10; bob 0.7 spent + 0.5 held of 2.
    assert "$1.80" in page and "$0.50" in page and "$10.00" in page
    # Four days of history, as four bars.
    time_chart = page[page.index('class="chart chart-time"') :]
    time_chart = time_chart[: time_chart.index("</svg>")]
    assert time_chart.count("<rect") == 4


def test_names_are_escaped(client: TestClient) -> None:
    page = client.get("/ui", headers=AUTH).text
    assert "<script>x</script>" not in page
    assert "&lt;script&gt;x&lt;/script&gt;" in page


def test_pages_load_nothing_from_elsewhere(client: TestClient) -> None:
    response = client.get("/ui", headers=AUTH)
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "style-src 'self'" in csp
    assert "<script" not in response.text.replace("&lt;script", "")
    urls = re.findall(r'(?:href|src)="([^"]+)"', response.text)
    assert urls and all(u.startswith("/") for u in urls), urls
    css = client.get("/ui/static/dashboard.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert "http" not in css.text


def test_project_page_and_unknown_project(client: TestClient) -> None:
    page = client.get("/ui/projects/demo", headers=AUTH)
    assert page.status_code == 200 and "alice" in page.text
    assert client.get("/ui/projects/nope", headers=AUTH).status_code == 404


def test_open_server_needs_no_login(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLMBUDGET_ADMIN_KEY", raising=False)
    with TestClient(create_app(ServerConfig(), store=MemoryStore())) as client:
        page = client.get("/ui")
        assert page.status_code == 200 and "No budgets yet" in page.text


def test_svg_helpers() -> None:
    from decimal import Decimal

    over = bar_svg(Decimal("3"), Decimal("0"), Decimal("2"))
    assert "#dc2626" in over  # over the limit: red
    assert 'width="260.0"' in over  # capped at the full width
    assert "no limit" in bar_svg(Decimal("1"), Decimal("0"), None)
    assert "No spend" in hbar_chart_svg([], "Spend per model")
    assert "No spend" in time_chart_svg([], "Spend over time")
    chart = hbar_chart_svg([("a&b", Decimal("1")), ("c", Decimal("0.5"))], "t")
    assert "a&amp;b" in chart and chart.count("<rect") == 2


def test_gateway_spend_log_page(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLMBUDGET_ADMIN_KEY", raising=False)
    store = MemoryStore()
    app = create_app(ServerConfig(admin_key=KEY), store=store)
    with TestClient(app) as test_client:
        assert test_client.get("/ui/spend", follow_redirects=False).status_code == 303
        test_client.post("/ui/login", data={"key": KEY})
        assert "No gateway requests yet" in test_client.get("/ui/spend").text
        store.append_log(
            "gateway",
            NOON,
            {"key": "key_1", "user": "<b>ann</b>", "model": "gpt-4o", "cost": "0.0012",
             "status": 200},
        )  # fmt: skip
        page = test_client.get("/ui/spend").text
        # Readable: names link to their pages, money in dollars, a plain time.
        assert '<a href="/ui/keys/key_1">key_1</a>' in page and ">$0.0012<" in page
        assert "&lt;b&gt;ann&lt;/b&gt;" in page and "<b>ann</b>" not in page
        assert '<td class="when">2026-03-15 12:00:00</td>' in page
