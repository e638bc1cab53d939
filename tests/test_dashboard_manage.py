"""The dashboard that manages: keys (create, edit, revoke), library budgets (create, edit),
the gateway's budgets, a page per entity with spend over a time range, the request log
with filters, paging and CSV, and CSRF on every form. Real gateway traffic (the openai
SDK against the fake upstream) feeds the spend log. The browser half is in
tests/test_dashboard_browser.py."""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import openai
import pytest
from fastapi.testclient import TestClient

from llmbudget.clock import FrozenClock
from llmbudget.gateway.keys import KEY_DOC_KIND
from llmbudget.gateway.spendlog import SPEND_LOG_KIND
from llmbudget.money import format_dollars
from llmbudget.server import ServerConfig, create_app
from llmbudget.server.csrf import CSRF_FIELD
from llmbudget.server.testing import live_server
from llmbudget.stores.memory import MemoryStore
from tests.dashboard_kit import logout
from tests.gateway_fakes import HI, HI_TOKENS, FakeUpstream, ServerThread, cost, deployment

KEY = "dash-admin-key-0123456789"
NOON = 1_773_576_000.0  # 2026-03-15 12:00 UTC
GATEWAY = {
    "users": {"ann": {"budget": "5", "period": "daily", "team": "ml"}},
    "teams": {"ml": {"budget": "20", "period": "monthly", "org": "acme"}},
    "orgs": {"acme": {"budget": "100", "period": "monthly"}},
    "budgets": {"global": {"budget": "1000", "period": "monthly"}},
}


def token(page: str) -> str:
    found = re.search(rf'name="{CSRF_FIELD}" value="([^"]+)"', page)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


@dataclass
class Dash:
    client: TestClient
    store: MemoryStore
    clock: FrozenClock

    def post(self, path: str, form_page: str, fields: dict[str, str]) -> Any:
        """Submit a form the way a browser would: with the token of the page it is on."""
        data = {**fields, CSRF_FIELD: token(self.client.get(form_page).text)}
        return self.client.post(path, data=data, follow_redirects=False)

    def log(self, at: float, **entry: Any) -> None:
        base = {"key": "key_x", "user": "ann", "team": "ml", "org": "acme", "model": "m",
                "cost": "0.001", "status": "ok", "stream": False, "prompt_tokens": 8,
                "completion_tokens": 20, "latency_ms": 12.5}  # fmt: skip
        self.store.append_log(SPEND_LOG_KIND, at, {**base, **entry})


@pytest.fixture
def dash(monkeypatch: pytest.MonkeyPatch) -> Iterator[Dash]:
    monkeypatch.delenv("LLMBUDGET_ADMIN_KEY", raising=False)
    store = MemoryStore()
    clock = FrozenClock(NOON)
    config = ServerConfig(admin_key=KEY, gateway={"model_list": [], **GATEWAY})
    with TestClient(create_app(config, store=store, clock=clock)) as client:
        response = client.post("/ui/login", data={"key": KEY}, follow_redirects=False)
        assert response.status_code == 303
        yield Dash(client, store, clock)


def _keys(store: MemoryStore) -> list[dict[str, Any]]:
    return [doc for _, doc in store.list_docs(KEY_DOC_KIND)]


# -- keys --------------------------------------------------------------------------------


def test_create_a_key_shows_the_secret_once_and_stores_only_its_hash(dash: Dash) -> None:
    response = dash.post(
        "/ui/keys/new",
        "/ui/keys/new",
        {"user": "ann", "name": "bot", "budget": "2.5", "period": "daily",
         "models": "m, other", "rpm_limit": "10", "tpm_limit": "", "max_parallel_requests": "3"},
    )  # fmt: skip
    assert response.status_code == 201, response.text
    secret = re.search(r'<code id="secret" class="secret">(sk-llmb-[^<]+)</code>', response.text)
    assert secret is not None
    [doc] = _keys(dash.store)
    assert doc["user"] == "ann" and doc["name"] == "bot" and doc["rpm_limit"] == 10
    assert doc["max_parallel_requests"] == 3 and doc["tpm_limit"] is None
    assert doc["budget"]["budget"] == "2.5" and doc["models"] == ["m", "other"]
    assert secret.group(1) not in str(doc)
    # Never again: neither the key's page nor the list shows it.
    for path in (f"/ui/keys/{doc['id']}", "/ui/keys"):
        page = dash.client.get(path).text
        assert secret.group(1) not in page and doc["id"] in page
    listing = dash.client.get("/ui/keys").text
    assert "$2.5 daily" in listing and 'href="/ui/users/ann"' in listing and "active" in listing


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"user": ""}, "user is required"),
        ({"user": "ann", "rpm_limit": "ten"}, "rpm_limit must be a whole number"),
        ({"user": "ann", "rpm_limit": "0"}, "rpm_limit must be at least 1"),
        ({"user": "ann", "budget": "-1"}, "budget"),
        ({"user": "ann", "budget": "1", "period": "fortnightly"}, "unknown duration"),
        ({"user": "ann", "duration": "soon"}, "duration must look like"),
    ],
)
def test_a_bad_key_form_is_shown_inline_and_stores_nothing(
    dash: Dash, fields: dict[str, str], message: str
) -> None:
    response = dash.post("/ui/keys/new", "/ui/keys/new", fields)
    assert response.status_code == 400
    error = re.search(r'<p class="error" role="alert">([^<]*)</p>', response.text)
    assert error is not None and message in error.group(1), response.text
    # The form comes back with what was typed, to fix it.
    for name, value in fields.items():
        if value:
            assert f'name="{name}" type="text" value="{value}"' in response.text
    assert _keys(dash.store) == []


def test_edit_a_key_budget_models_and_limits(dash: Dash) -> None:
    dash.post("/ui/keys/new", "/ui/keys/new", {"user": "ann", "budget": "1"})
    [doc] = _keys(dash.store)
    page = f"/ui/keys/{doc['id']}"
    edit = {"name": "renamed", "team": "ml", "org": "", "budget": "3", "period": "weekly",
            "models": "m", "rpm_limit": "5", "tpm_limit": "1000", "tpd_limit": "",
            "max_parallel_requests": "2"}  # fmt: skip
    response = dash.post(page, page, edit)
    assert response.status_code == 303 and response.headers["location"] == page
    [doc] = _keys(dash.store)
    assert doc["name"] == "renamed" and doc["team"] == "ml" and doc["models"] == ["m"]
    assert doc["budget"]["budget"] == "3" and doc["budget"]["period"] == "weekly"
    assert (doc["rpm_limit"], doc["tpm_limit"], doc["tpd_limit"]) == (5, 1000, None)
    shown = dash.client.get(page).text
    assert "Requests / minute" in shown and 'value="renamed"' in shown
    # A bad edit: shown inline on the key's page, the stored key unchanged.
    response = dash.post(page, page, {**edit, "tpm_limit": "-4", "name": "other"})
    assert response.status_code == 400 and "tpm_limit" in response.text
    assert _keys(dash.store) == [doc]


def test_revoke_asks_first_then_the_key_stops_working(dash: Dash) -> None:
    dash.post("/ui/keys/new", "/ui/keys/new", {"user": "ann"})
    [doc] = _keys(dash.store)
    confirm = dash.client.get(f"/ui/keys/{doc['id']}/revoke")
    assert confirm.status_code == 200 and "cannot be undone" in confirm.text
    assert _keys(dash.store)[0]["revoked"] is False  # asking changed nothing
    response = dash.post(f"/ui/keys/{doc['id']}/revoke", f"/ui/keys/{doc['id']}/revoke", {})
    assert response.status_code == 303
    assert _keys(dash.store)[0]["revoked"] is True
    page = dash.client.get(f"/ui/keys/{doc['id']}").text
    assert "revoked" in page and "Edit key" not in page


# -- CSRF ----------------------------------------------------------------------------------


def test_every_form_refuses_a_post_without_its_token(dash: Dash) -> None:
    dash.post("/ui/keys/new", "/ui/keys/new", {"user": "ann", "budget": "1"})
    dash.post("/ui/budgets/new", "/ui/budgets/new",
              {"project": "p", "user": "u", "amount": "1"})  # fmt: skip
    [doc] = _keys(dash.store)
    before = (_keys(dash.store), dash.store.list_budgets(""))
    forms = [
        ("/ui/keys/new", {"user": "mallory"}),
        (f"/ui/keys/{doc['id']}", {"budget": "999"}),
        (f"/ui/keys/{doc['id']}/revoke", {}),
        ("/ui/budgets/new", {"project": "p", "user": "x", "amount": "5"}),
        ("/ui/projects/p/users/u", {"amount": "999"}),
    ]
    for path, fields in forms:
        for forged in (None, "0" * 64, token(dash.client.get("/ui/keys/new").text)[:-1] + "x"):
            data = dict(fields) if forged is None else {**fields, CSRF_FIELD: forged}
            response = dash.client.post(path, data=data, follow_redirects=False)
            assert response.status_code == 403, (path, forged, response.text)
            assert "nothing was changed" in response.text
    assert (_keys(dash.store), dash.store.list_budgets("")) == before


def test_the_token_belongs_to_the_session(dash: Dash) -> None:
    stale = token(dash.client.get("/ui/keys/new").text)
    logout(dash.client)
    dash.client.post("/ui/login", data={"key": KEY})
    response = dash.client.post(
        "/ui/keys/new", data={"user": "ann", CSRF_FIELD: stale}, follow_redirects=False
    )
    assert response.status_code == 403 and _keys(dash.store) == []


def test_open_server_forms_need_a_token_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLMBUDGET_ADMIN_KEY", raising=False)
    store = MemoryStore()
    with TestClient(create_app(ServerConfig(), store=store)) as client:
        data = {"project": "p", "user": "u", "amount": "1"}
        assert client.post("/ui/budgets/new", data=data).status_code == 403
        assert store.list_budgets("") == []
        form = client.get("/ui/budgets/new")
        assert "llmbudget_csrf=" in form.headers["set-cookie"]
        ok = client.post(
            "/ui/budgets/new", data={**data, CSRF_FIELD: token(form.text)}, follow_redirects=False
        )
        assert ok.status_code == 303 and len(store.list_budgets("")) == 1


# -- library budgets -------------------------------------------------------------------------


def test_create_and_edit_a_library_budget(dash: Dash) -> None:
    response = dash.post("/ui/budgets/new", "/ui/budgets/new",
                         {"project": "bot", "user": "zoe", "amount": "10", "period": "daily"})  # fmt: skip
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/projects/bot/users/zoe"
    [record] = dash.store.list_budgets("user:bot:")
    assert record.scope == "user:bot:zoe"
    page = dash.client.get("/ui/projects/bot/users/zoe").text
    assert "$10.00" in page and 'value="daily"' in page
    response = dash.post("/ui/projects/bot/users/zoe", "/ui/projects/bot/users/zoe",
                         {"amount": "12.5", "period": "weekly", "timezone": "UTC"})  # fmt: skip
    assert response.status_code == 303
    api = dash.client.get("/v1/projects/bot/budgets/zoe").json()
    assert (api["limit"], api["period"]) == ("12.5", "weekly")
    # The overview links the user to that page.
    assert 'href="/ui/projects/bot/users/zoe"' in dash.client.get("/ui").text


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"project": "bot", "user": "zoe", "amount": "ten"}, "not a number"),
        ({"project": "bot", "user": "zoe", "amount": "1", "period": "sometimes"}, "sometimes"),
        ({"project": "bot", "user": "zoe", "amount": "1", "timezone": "Mars/Base"}, "Mars/Base"),
        ({"project": "", "user": "zoe", "amount": "1"}, "project"),
        ({"project": "bot", "user": "", "amount": "1"}, "user"),
    ],
)
def test_a_bad_budget_form_is_shown_inline_and_stores_nothing(
    dash: Dash, fields: dict[str, str], message: str
) -> None:
    response = dash.post("/ui/budgets/new", "/ui/budgets/new", fields)
    assert response.status_code == 400
    error = re.search(r'<p class="error" role="alert">([^<]*)</p>', response.text)
    assert error is not None and message in error.group(1), response.text
    assert dash.store.list_budgets("") == []


def test_an_existing_budget_is_not_overwritten_by_create(dash: Dash) -> None:
    fields = {"project": "bot", "user": "zoe", "amount": "10"}
    assert dash.post("/ui/budgets/new", "/ui/budgets/new", fields).status_code == 303
    again = dash.post("/ui/budgets/new", "/ui/budgets/new", {**fields, "amount": "99"})
    assert again.status_code == 400 and "already has a budget" in again.text
    assert dash.client.get("/v1/projects/bot/budgets/zoe").json()["limit"] == "10"
    bad = dash.post("/ui/projects/bot/users/zoe", "/ui/projects/bot/users/zoe", {"amount": "x"})
    assert bad.status_code == 400 and 'role="alert"' in bad.text
    assert dash.client.get("/v1/projects/bot/budgets/zoe").json()["limit"] == "10"


def test_gateway_budgets_are_shown_next_to_the_librarys(dash: Dash) -> None:
    dash.post("/ui/keys/new", "/ui/keys/new", {"user": "ann", "budget": "2", "period": "daily"})
    page = dash.client.get("/ui").text
    section = page[page.index("Gateway budgets") :]
    for scope in ("gw-user:ann", "gw-team:ml", "gw-org:acme", "gw-global"):
        assert f'data-scope="{scope}"' in section
    assert f'data-scope="gw-key:{_keys(dash.store)[0]["id"]}"' in section
    assert 'href="/ui/teams/ml"' in section and "$1,000.00" in section


# -- entity pages and time ranges ---------------------------------------------------------


def test_entity_pages_sum_spend_over_the_chosen_range(dash: Dash) -> None:
    day = 86_400
    dash.log(NOON - 1 * 3600, model="a", cost="0.25")  # today
    dash.log(NOON - 3 * day, model="b", cost="0.5")  # in 7 days
    dash.log(NOON - 20 * day, model="a", cost="2")  # in 30 days
    dash.log(NOON - 40 * day, model="a", cost="8")  # older
    dash.log(NOON, user="bob", team="other", org="x", cost="100")  # someone else
    expected = {"today": "$0.25", "7d": "$0.75", "30d": "$2.75"}
    for path in ("/ui/users/ann", "/ui/teams/ml", "/ui/orgs/acme"):
        for name, total in expected.items():
            page = dash.client.get(f"{path}?range={name}").text
            shown = re.search(r'<strong class="total">([^<]+)</strong>', page)
            assert shown is not None and shown.group(1) == total, (path, name)
    custom = dash.client.get("/ui/users/ann?range=custom&from=2026-02-04&to=2026-02-28").text
    assert re.search(r'<strong class="total">\$2\.00</strong>', custom)  # Feb 23, not Feb 3
    per_model = dash.client.get("/ui/users/ann?range=30d").text
    table = per_model[per_model.index("per-model") :]
    assert table.index(">a<") < table.index(">b<")  # costliest first: a $2.25, b $0.50
    assert "$2.25" in table and "$0.50" in table
    facts = dash.client.get("/ui/users/ann").text
    assert 'href="/ui/teams/ml"' in facts and "$5 daily" in facts


def test_a_bad_range_is_explained_and_the_default_shown(dash: Dash) -> None:
    page = dash.client.get("/ui/users/ann?range=custom&from=2026-03-10&to=2026-03-01")
    assert page.status_code == 200 and "ends before it starts" in page.text
    page = dash.client.get("/ui/users/ann?range=custom&from=yesterday")
    assert "must be a date" in page.text
    assert "range must be one of" in dash.client.get("/ui/users/ann?range=forever").text


def test_library_user_page_shows_spend_per_window(dash: Dash) -> None:
    dash.post("/ui/budgets/new", "/ui/budgets/new",
              {"project": "bot", "user": "zoe", "amount": "10", "period": "daily"})  # fmt: skip
    for days_ago, amount in ((0, "1"), (2, "0.5"), (10, "4")):
        dash.clock.set(NOON - days_ago * 86_400)
        dash.client.post("/v1/projects/bot/charge", json={"user": "zoe", "amount": amount,
                         "model": "gpt-4o"}, headers={"Authorization": f"Bearer {KEY}"})  # fmt: skip
    dash.clock.set(NOON)
    week = dash.client.get("/ui/projects/bot/users/zoe?range=7d").text
    assert re.search(r'<strong class="total">\$1\.50</strong>', week)
    month = dash.client.get("/ui/projects/bot/users/zoe?range=30d").text
    assert re.search(r'<strong class="total">\$5\.50</strong>', month)
    assert dash.client.get("/ui/projects/bot/users/nobody").status_code == 404


# -- the request log and its CSV ------------------------------------------------------------


def test_request_log_is_readable(dash: Dash) -> None:
    dash.log(NOON, cost="6E-8", stream=True, model="gpt-4o", key="key_abc")
    page = dash.client.get("/ui/spend").text
    row = page[page.index('class="request-row"') :]
    row = row[: row.index("</tr>")]
    assert "2026-03-15 12:00:00" in row and 'class="when"' in row
    assert "$0.00000006" in row and "E-8" not in row
    assert ">yes<" in row and "True" not in row
    assert 'href="/ui/keys/key_abc"' in row and 'href="/ui/users/ann"' in row
    for header in ("Time", "Tokens in", "Tokens out", "Latency", "Streamed"):
        assert f"<th>{header}</th>" in page
    assert "prompt_tokens" not in page.split("<tbody>")[0]


def test_request_log_filters_and_pages(dash: Dash) -> None:
    for i in range(120):
        dash.log(NOON - i, id=f"req_{i}", model="a" if i % 2 else "b",
                 status="ok" if i % 3 else "upstream_error", user="ann" if i < 100 else "bob")  # fmt: skip
    page1 = dash.client.get("/ui/spend?user=ann").text
    assert page1.count('class="request-row"') == 50 and "older →" in page1
    older = re.search(r'href="/ui/spend\?([^"]+page=2[^"]*)"', page1)
    assert older is not None and "user=ann" in older.group(1)
    page2 = dash.client.get("/ui/spend?" + older.group(1).replace("&amp;", "&")).text
    assert page2.count('class="request-row"') == 50 and "older →" not in page2
    assert "← newer" in page2 and "req_99<" not in page2
    # ann's odd i are model a: 50 rows, one page.
    both = dash.client.get("/ui/spend?user=ann&model=a").text
    assert both.count('class="request-row"') == 50 and "older →" not in both
    errors = dash.client.get("/ui/spend?status=upstream_error").text
    assert errors.count('class="request-row"') == 40
    assert dash.client.get("/ui/spend?range=today&user=nobody").text.count("request-row") == 0


def test_csv_export_has_the_same_filters_and_exact_money(dash: Dash) -> None:
    dash.log(NOON - 10, id="req_1", cost="6E-8", model="a")
    dash.log(NOON - 20, id="req_2", cost="0.5", model="b")
    dash.log(NOON - 30, id="req_3", cost="1.25", model="a", user="=cmd()")
    response = dash.client.get("/ui/spend.csv?model=a")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["id"] for r in rows] == ["req_1", "req_3"]
    assert rows[0]["cost"] == "0.00000006" and Decimal(rows[1]["cost"]) == Decimal("1.25")
    assert rows[0]["time"] == "2026-03-15T11:59:50+00:00" and rows[0]["stream"] == "false"
    assert rows[1]["user"] == "'=cmd()"  # never run as a spreadsheet formula
    assert dash.client.get("/ui/spend.csv?range=custom&from=x").status_code == 400
    logout(dash.client)
    assert dash.client.get("/ui/spend.csv", follow_redirects=False).status_code == 303


# -- real traffic ------------------------------------------------------------------------------


def test_a_key_made_in_the_ui_works_with_the_sdk_and_its_spend_shows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import httpx

    monkeypatch.delenv("LLMBUDGET_ADMIN_KEY", raising=False)
    upstream = FakeUpstream()
    with ServerThread(upstream.app()) as up:
        config = ServerConfig(admin_key=KEY, gateway={"model_list": [deployment(up.url)]})
        app = create_app(config, store=MemoryStore())
        with live_server(app) as url, httpx.Client(base_url=url, follow_redirects=False) as http:
            assert http.post("/ui/login", data={"key": KEY}).status_code == 303
            form = http.get("/ui/keys/new").text
            data = {"user": "ann", "budget": "1", CSRF_FIELD: token(form)}
            made = http.post("/ui/keys/new", data=data)
            assert made.status_code == 201
            found = re.search(r'id="secret" class="secret">([^<]+)<', made.text)
            key_id = re.search(r'href="/ui/keys/(key_[0-9a-f]+)"', made.text)
            assert found is not None and key_id is not None
            sdk = openai.OpenAI(api_key=found.group(1), base_url=f"{url}/v1", max_retries=0)
            sdk.chat.completions.create(model="m", messages=HI, max_tokens=50)  # type: ignore[arg-type]
            deadline = time.monotonic() + 20
            page = ""
            while time.monotonic() < deadline:  # the log entry lands as the settle does
                page = http.get(f"/ui/keys/{key_id.group(1)}?range=today").text
                if "1 request(s)" in page:
                    break
            assert "1 request(s)" in page, page
            assert f">{format_dollars(cost(HI_TOKENS, 20))}<" in page


def test_an_entity_created_by_the_admin_api_has_its_page(dash: Dash) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    created = dash.client.post(
        "/v1/teams",
        json={"id": "research", "budget": 7, "period": "monthly", "rpm_limit": 30},
        headers=auth,
    )
    assert created.status_code == 201, created.text
    dash.log(NOON, team="research", cost="0.5")
    page = dash.client.get("/ui/teams/research?range=today").text
    assert "$7 monthly" in page
    assert re.search(r'<strong class="total">\$0\.50</strong>', page)
