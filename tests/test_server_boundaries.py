"""The server refuses bad input with a 4xx (nothing stored), and a bad value already in
the store never turns a read into a 500 (issue 13, "What was found" items 1 and 6)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from llmbudget.clock import FrozenClock
from llmbudget.server import ServerConfig, create_app
from llmbudget.stores.sqlite import SQLiteStore

KEY = "boundary-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
NOON = 1_773_576_000.0  # 2026-03-15 12:00 UTC


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    opened = SQLiteStore(str(tmp_path / "server.db"))
    yield opened
    opened.close()


@pytest.fixture
def client(store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.delenv("LLMBUDGET_ADMIN_KEY", raising=False)
    app = create_app(ServerConfig(admin_key=KEY), store=store, clock=FrozenClock(NOON))
    with TestClient(app, headers=AUTH) as test_client:
        yield test_client


def _raw(client: TestClient, method: str, path: str, body: str) -> Any:
    """A request whose JSON text is sent as written (NaN, surrogate escapes ...)."""
    return client.request(
        method, path, content=body.encode(), headers={"Content-Type": "application/json"}
    )


def _nothing_stored(store: SQLiteStore) -> None:
    assert store.list_budgets("") == []


# -- strict types and names -------------------------------------------------------------------


@pytest.mark.parametrize("rolling", ['"yes"', '"true"', "1", '"1"'])
def test_rolling_must_be_a_json_boolean(
    client: TestClient, store: SQLiteStore, rolling: str
) -> None:
    body = f'{{"user": "ann", "amount": "1", "period": "daily", "rolling": {rolling}}}'
    response = _raw(client, "POST", "/v1/projects/app/budgets", body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["param"] == "rolling"
    _nothing_stored(store)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/v1/projects/app/budgets/%FF"),
        ("GET", "/v1/projects/app/budgets/a%C3%28"),
        ("GET", "/v1/projects/%C3%28/budgets"),
        ("GET", "/v1/projects/app/history/%80"),
    ],
)
def test_invalid_utf8_in_a_path_is_a_400_not_a_replacement_character(
    client: TestClient, store: SQLiteStore, method: str, path: str
) -> None:
    response = client.request(method, path, json={"amount": "1", "period": "daily"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert "UTF-8" in response.json()["error"]["message"]
    _nothing_stored(store)


def test_two_invalid_names_cannot_share_one_budget(client: TestClient, store: SQLiteStore) -> None:
    # Before: %FF and %FE both became U+FFFD, so two users wrote one budget.
    for user in ("%FF", "%FE"):
        assert (
            client.put(f"/v1/projects/app/budgets/{user}", json={"amount": "1"}).status_code == 400
        )
    assert client.get("/v1/projects/app/budgets/%EF%BF%BD").status_code == 404
    _nothing_stored(store)


@pytest.mark.parametrize("user", ['"\\ud800"', '"a\\u0000b"', '"' + "x" * 257 + '"', "5", "null"])
def test_a_bad_user_in_a_body_is_refused(client: TestClient, store: SQLiteStore, user: str) -> None:
    response = _raw(client, "POST", "/v1/projects/app/budgets", f'{{"user": {user}, "amount": 1}}')
    assert response.status_code == 422, response.text
    assert response.json()["error"]["param"] == "user"
    _nothing_stored(store)


@pytest.mark.parametrize("ttl", ["NaN", "Infinity", "true", '"5"', "0", "-1", "1e300"])
def test_a_bad_ttl_is_refused(client: TestClient, store: SQLiteStore, ttl: str) -> None:
    assert (
        client.post("/v1/projects/app/budgets", json={"user": "ann", "amount": 1}).status_code
        == 201
    )
    response = _raw(
        client,
        "POST",
        "/v1/projects/app/reserve",
        f'{{"user": "ann", "amount": "0.1", "ttl": {ttl}}}',
    )
    assert response.status_code == 422, response.text
    assert client.get("/v1/projects/app/budgets/ann").json()["held"] == "0"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/v1/store/reserve",
            '{"hold_id": 5, "lines": [{"scope": "a", "window": 0}], "amount": 1, "expires_at": 10, "now": 0}',
        ),
        (
            "/v1/store/reserve",
            '{"hold_id": "h", "lines": [{"scope": "a", "window": 0}], "amount": 1, "expires_at": -1e11, "now": 0}',
        ),
        (
            "/v1/store/reserve",
            '{"hold_id": "h", "lines": [{"scope": "a", "window": 0}], "amount": 1, "expires_at": NaN, "now": 0}',
        ),
        (
            "/v1/store/charge",
            '{"lines": [{"scope": "\\ud800", "window": 0}], "amount": 1, "now": 0}',
        ),
        ("/v1/store/charge", '{"lines": [{"scope": "a", "window": 0}], "amount": true, "now": 0}'),
        (
            "/v1/store/put_budget",
            '{"record": {"scope": "a", "limit": 1, "duration": "daily", "rolling": "yes"}}',
        ),
        ("/v1/store/put_budget", '{"record": {"scope": "a", "limit": 1, "duration": "9999y"}}'),
        (
            "/v1/store/put_budget",
            '{"record": {"scope": "' + "a" * 1025 + '", "limit": 1, "duration": null}}',
        ),
    ],
)
def test_the_store_api_refuses_what_a_store_would(
    client: TestClient, store: SQLiteStore, path: str, body: str
) -> None:
    response = _raw(client, "POST", path, body)
    assert response.status_code in (400, 422), response.text
    assert store.usage("a", 0, NOON).held == 0
    assert store.usage("a", 0, NOON).spent == 0
    _nothing_stored(store)


# -- the seed protocol ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "record",
    [
        '{"total_budget": 10, "duration": 1e300}',
        '{"total_budget": 10, "duration": 3000000}',
        '{"total_budget": 10, "duration": 1, "created_at": -1e11}',
        '{"total_budget": 10, "duration": 1, "created_at": 1e300}',
    ],
)
def test_seed_set_budget_refuses_poison_durations_and_times(
    client: TestClient, store: SQLiteStore, record: str
) -> None:
    body = f'{{"project_name": "p", "user_dict": {{"ok": {{"total_budget": 1}}, "u": {record}}}}}'
    response = _raw(client, "POST", "/set_budget", body)
    assert response.status_code == 400, response.text
    assert response.json()["status"] == "error"
    _nothing_stored(store)  # not even the good record: all or nothing
    assert client.post("/get_budget", json={"project_name": "p"}).status_code == 200


# -- a poison value already stored (by a version that let it through) ---------------------------


def _store_poison(store: SQLiteStore, scope: str, duration: str, created_at: float) -> None:
    with sqlite3.connect(store.path) as conn:
        conn.execute(
            "INSERT INTO budgets (scope, limit_units, duration, timezone, rolling, created_at, "
            "updated_at) VALUES (?, ?, ?, 'UTC', 0, ?, ?)",
            (scope, 1_000_000_000, duration, created_at, NOON),
        )


@pytest.mark.parametrize(("duration", "created_at"), [("9999y", NOON), ("daily", -1e11)])
def test_a_stored_poison_budget_never_makes_a_read_fail(
    client: TestClient, store: SQLiteStore, duration: str, created_at: float
) -> None:
    assert (
        client.post("/v1/projects/p/budgets", json={"user": "good", "amount": 5}).status_code == 201
    )
    _store_poison(store, "user:p:bad", duration, created_at)

    one = client.get("/v1/projects/p/budgets/bad")
    assert one.status_code == 409, one.text
    assert one.json()["error"]["code"] == "corrupt_budget"
    assert "PUT" in one.json()["error"]["message"]

    listing = client.get("/v1/projects/p/budgets")
    assert listing.status_code == 200, listing.text
    assert [b["user"] for b in listing.json()["budgets"]] == ["good"]
    assert listing.json()["unreadable"] == ["bad"]

    assert client.get("/v1/projects").json()["projects"] == [{"name": "p", "users": 2}]
    assert client.get("/v1/projects/p/spend").status_code == 200
    seed = client.post("/get_budget", json={"project_name": "p"})
    assert seed.status_code == 200 and seed.json()["status"] == "success"
    assert list(seed.json()["data"]) == ["good"]
    assert client.get("/ui").status_code == 200
    reserve = client.post("/v1/projects/p/reserve", json={"user": "bad", "amount": "0.1"})
    assert reserve.status_code == 409

    # A PUT replaces it; then it reads like any other budget.
    fixed = client.put("/v1/projects/p/budgets/bad", json={"amount": 2, "period": "daily"})
    assert fixed.status_code in (200, 201), fixed.text
    assert client.get("/v1/projects/p/budgets/bad").json()["limit"] == "2"
    assert client.get("/v1/projects/p/budgets").json()["unreadable"] == []
