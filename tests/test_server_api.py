"""The JSON API under /v1: budgets CRUD, reserve/settle/release/charge, errors, auth, limits."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from llmbudget.clock import FrozenClock
from llmbudget.server import ServerConfig, create_app
from llmbudget.stores.memory import MemoryStore

KEY = "api-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
# 2026-03-15 12:00:00 UTC, a Sunday.
NOON = 1_773_576_000.0


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(NOON)


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def client(
    store: MemoryStore, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    monkeypatch.delenv("LLMBUDGET_ADMIN_KEY", raising=False)
    app = create_app(ServerConfig(admin_key=KEY), store=store, clock=clock)
    with TestClient(app, headers=AUTH) as test_client:
        yield test_client


def _create(client: TestClient, user: str = "ann", amount: Any = "1", **extra: Any) -> Any:
    body = {"user": user, "amount": amount, "period": "daily", **extra}
    response = client.post("/v1/projects/app/budgets", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def _spent(client: TestClient, user: str = "ann", project: str = "app") -> str:
    response = client.get(f"/v1/projects/{project}/budgets/{user}")
    assert response.status_code == 200, response.text
    spent: str = response.json()["spent"]
    return spent


# -- health, auth, documents ------------------------------------------------------------


def test_health_needs_no_key(client: TestClient) -> None:
    response = client.get("/v1/health", headers={"Authorization": ""})
    assert response.status_code == 200
    assert response.json()["status"] == "ok" and response.json()["store"] == "ok"


@pytest.mark.parametrize(
    "path", ["/v1/projects", "/openapi.json", "/metrics", "/v1/projects/app/budgets"]
)
def test_every_other_endpoint_needs_the_key(client: TestClient, path: str) -> None:
    missing = client.get(path, headers={"Authorization": ""})
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["error"]["type"] == "authentication_error"
    wrong = client.get(path, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403
    assert wrong.json()["error"]["code"] == "invalid_api_key"
    basic = client.get(path, headers={"Authorization": "Basic YTpi"})
    assert basic.status_code == 403
    assert client.get(path, headers={"Authorization": "", "X-API-Key": KEY}).status_code == 200


def test_store_endpoints_need_the_key_and_refuse_without_storing(
    client: TestClient, store: MemoryStore
) -> None:
    body = {"lines": [{"scope": "user:x", "window": 0}], "amount": 5, "now": 1.0}
    assert (
        client.post("/v1/store/charge", json=body, headers={"Authorization": ""}).status_code == 401
    )
    assert store.usage("user:x", 0, 1.0).spent == 0
    assert client.post("/v1/store/charge", json=body).status_code == 200
    assert store.usage("user:x", 0, 1.0).spent == 5


def test_openapi_lists_every_endpoint(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = set(spec["paths"])
    for method in ("reserve", "settle", "release", "charge", "usage", "reset", "history", "purge",
                   "put_budget", "get_budgets", "list_budgets", "delete_budget", "put_doc",
                   "create_doc", "get_doc", "list_docs", "delete_doc", "append_log", "read_log"):  # fmt: skip
        assert f"/v1/store/{method}" in paths
    assert {"/get_budget", "/set_budget", "/v1/health", "/v1/projects"} <= paths
    assert "HTTPBearer" in spec["components"]["securitySchemes"]


def test_no_interactive_docs_that_would_load_a_cdn(client: TestClient) -> None:
    assert client.get("/docs").status_code == 404
    assert client.get("/redoc").status_code == 404


# -- budgets ------------------------------------------------------------------------------


def test_put_without_timezone_rolling_or_created_at_keeps_the_existing_ones(
    client: TestClient, clock: FrozenClock
) -> None:
    created = _create(client, timezone="Europe/Paris", rolling=True, created_at=NOON - 3600)
    assert created["timezone"] == "Europe/Paris" and created["rolling"] is True
    clock.advance(5000)
    put = client.put("/v1/projects/app/budgets/ann", json={"amount": "2", "period": "daily"})
    assert put.status_code == 200, put.text
    body = put.json()
    assert body["limit"] == "2" and body["timezone"] == "Europe/Paris"
    assert body["rolling"] is True and body["created_at"] == NOON - 3600
    # Given explicitly, they do replace.
    put = client.put(
        "/v1/projects/app/budgets/ann",
        json={"amount": "2", "period": "daily", "timezone": "UTC", "rolling": False},
    )
    assert put.json()["timezone"] == "UTC" and put.json()["rolling"] is False


def test_budget_crud(client: TestClient) -> None:
    created = _create(client, amount="2.50", timezone="Europe/Paris", alert_thresholds=[0.9])
    assert created["limit"] == "2.50" or created["limit"] == "2.5"
    assert created["period"] == "daily" and created["timezone"] == "Europe/Paris"
    assert created["alert_thresholds"] == [0.9]
    again = client.post("/v1/projects/app/budgets", json={"user": "ann", "amount": "9"})
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "budget_exists"
    assert client.get("/v1/projects/app/budgets/ann").json()["limit"] in ("2.5", "2.50")

    patched = client.patch("/v1/projects/app/budgets/ann", json={"amount": 3})
    assert patched.status_code == 200
    assert patched.json()["limit"] == "3" and patched.json()["timezone"] == "Europe/Paris"
    put = client.put("/v1/projects/app/budgets/bob", json={"amount": "1", "period": "weekly"})
    assert put.status_code == 201
    assert client.put("/v1/projects/app/budgets/bob", json={"amount": "2"}).status_code == 200

    listed = client.get("/v1/projects/app/budgets").json()
    assert [b["user"] for b in listed["budgets"]] == ["ann", "bob"]
    assert client.get("/v1/projects").json() == {"projects": [{"name": "app", "users": 2}]}

    assert client.delete("/v1/projects/app/budgets/bob").status_code == 200
    missing = client.get("/v1/projects/app/budgets/bob")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "unknown_user"
    assert client.delete("/v1/projects/app/budgets/bob").status_code == 404


def test_users_with_awkward_names(client: TestClient) -> None:
    for user in ("a/b", "ü ber:1", "<script>"):
        response = client.post("/v1/projects/app/budgets", json={"user": user, "amount": 1})
        assert response.status_code == 201
    from urllib.parse import quote

    assert client.get(f"/v1/projects/app/budgets/{quote('ü ber:1')}").json()["user"] == "ü ber:1"
    assert client.get("/v1/projects/app/budgets/a/b").json()["user"] == "a/b"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"user": "ann", "amount": "0.0000000001"}, 400, "invalid_amount"),
        ({"user": "ann", "amount": "-1"}, 400, "invalid_amount"),
        ({"user": "ann", "amount": "NaN"}, 400, "invalid_amount"),
        ({"user": "ann", "amount": True}, 422, "validation_error"),
        ({"user": "ann", "amount": "1", "period": "fortnightly"}, 400, "invalid_duration"),
        ({"user": "ann", "amount": "1", "timezone": "Mars/Olympus"}, 400, "invalid_duration"),
        ({"user": "ann", "amount": "1", "alert_thresholds": [0]}, 422, "validation_error"),
        ({"user": "ann", "amount": "1", "surprise": 1}, 422, "validation_error"),
        ({"user": "", "amount": "1"}, 422, "validation_error"),
        ({"user": "a\u0000b", "amount": "1"}, 422, "validation_error"),
        ({"amount": "1"}, 422, "validation_error"),
    ],
)
def test_bad_budget_input_is_refused_and_stores_nothing(
    client: TestClient, store: MemoryStore, body: dict[str, Any], status: int, code: str
) -> None:
    response = client.post("/v1/projects/app/budgets", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    assert set(error) >= {"type", "message", "param", "code"}
    assert store.list_budgets("") == []
    assert store.list_docs("alert-config") == []


def test_malformed_json_is_a_clean_422(client: TestClient) -> None:
    response = client.post(
        "/v1/projects/app/charge",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"


def test_oversized_body_is_413_and_stores_nothing(
    store: MemoryStore, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LLMBUDGET_ADMIN_KEY", raising=False)
    app = create_app(ServerConfig(admin_key=KEY, max_body_bytes=1024), store=store, clock=clock)
    with TestClient(app, headers=AUTH) as client:
        big = {
            "user": "ann",
            "amount": "1",
            "period": "daily",
            "timezone": "UTC",
            "pad": "x" * 2000,
        }
        response = client.post("/v1/projects/app/budgets", json=big)
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "request_too_large"

        # Streamed (no Content-Length): counted as it arrives.
        def chunks() -> Iterator[bytes]:
            yield b'{"user": "ann", "amount": "1", "pad": "'
            for _ in range(10):
                yield b"y" * 200
            yield b'"}'

        streamed = client.post(
            "/v1/projects/app/budgets",
            content=chunks(),
            headers={"Content-Type": "application/json"},
        )
        assert streamed.status_code == 413
    assert store.list_budgets("") == []


# -- holds and charges ------------------------------------------------------------------


def test_reserve_settle_release_charge(client: TestClient) -> None:
    _create(client)
    hold = client.post("/v1/projects/app/reserve", json={"user": "ann", "amount": "0.40"})
    assert hold.status_code == 201
    held = client.get("/v1/projects/app/budgets/ann").json()
    assert (held["held"], held["remaining"]) == ("0.4", "0.6")
    settled = client.post(
        "/v1/projects/app/settle",
        json={"user": "ann", "hold_id": hold.json()["hold_id"], "actual": 0.1, "model": "gpt-4o"},
    )
    assert settled.json()["recorded"] == "0.1"
    replay = client.post(
        "/v1/projects/app/settle",
        json={"user": "ann", "hold_id": hold.json()["hold_id"], "actual": "0.3"},
    )
    assert replay.json()["recorded"] == "0.1"  # idempotent: the first settle stands
    second = client.post("/v1/projects/app/reserve", json={"user": "ann", "amount": 0.5})
    released = client.post(
        "/v1/projects/app/release", json={"user": "ann", "hold_id": second.json()["hold_id"]}
    )
    assert released.json()["released"] is True
    for _ in range(2):
        client.post("/v1/projects/app/charge", json={"user": "ann", "amount": 0.1})
    status = client.get("/v1/projects/app/budgets/ann").json()
    # Floats through their repr: 0.1 + 0.1 + 0.1 is exactly 0.3 here.
    assert (status["spent"], status["held"]) == ("0.3", "0")
    assert status["by_model"] == {"gpt-4o": "0.1"}


def test_idempotent_reserve_and_per_user_hold_ids(client: TestClient) -> None:
    _create(client)
    _create(client, user="bob")
    for _ in range(3):
        response = client.post(
            "/v1/projects/app/reserve", json={"user": "ann", "amount": "0.3", "hold_id": "req-1"}
        )
        assert response.status_code == 201
    assert client.get("/v1/projects/app/budgets/ann").json()["held"] == "0.3"
    # Bob may use the same key: holds are per user, and his cannot touch Ann's.
    bob = client.post(
        "/v1/projects/app/reserve", json={"user": "bob", "amount": "0.2", "hold_id": "req-1"}
    )
    assert bob.status_code == 201
    wrong_user = client.post(
        "/v1/projects/app/settle", json={"user": "carol", "hold_id": "req-1", "actual": "1"}
    )
    assert wrong_user.status_code == 404
    assert wrong_user.json()["error"]["code"] == "unknown_hold"
    assert wrong_user.json()["error"]["hold_id"] == "req-1"


def test_refusal_is_429_openai_style_with_retry_after(client: TestClient) -> None:
    _create(client)
    client.post("/v1/projects/app/charge", json={"user": "ann", "amount": "0.7"})
    refused = client.post("/v1/projects/app/reserve", json={"user": "ann", "amount": "0.5"})
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == str(12 * 3600)  # noon → midnight
    error = refused.json()["error"]
    assert error["type"] == "budget_exceeded" and error["code"] == "budget_exceeded"
    assert error["param"] is None and "budget exceeded" in error["message"]
    assert (error["scope"], error["limit"], error["spent"], error["held"]) == (
        "user:app:ann", "1", "0.7", "0")  # fmt: skip
    assert error["requested"] == "0.5" and error["remaining"] == "0.3"
    assert error["resets_at"] == "2026-03-16T00:00:00+00:00"
    assert client.get("/v1/projects/app/budgets/ann").json()["held"] == "0"


def test_lifetime_refusal_has_no_retry_after(client: TestClient) -> None:
    client.post("/v1/projects/app/budgets", json={"user": "ann", "amount": "1"})
    refused = client.post("/v1/projects/app/reserve", json={"user": "ann", "amount": "2"})
    assert refused.status_code == 429
    assert "retry-after" not in refused.headers
    assert refused.json()["error"]["resets_at"] is None


def test_concurrent_reserves_never_pass_the_limit(client: TestClient) -> None:
    _create(client)
    wins: list[int] = []
    barrier = threading.Barrier(20)

    def one() -> None:
        barrier.wait()
        response = client.post("/v1/projects/app/reserve", json={"user": "ann", "amount": "0.1"})
        if response.status_code == 201:
            wins.append(1)
        else:
            assert response.status_code == 429

    threads = [threading.Thread(target=one) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 10
    assert client.get("/v1/projects/app/budgets/ann").json()["held"] == "1"


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("charge", {"user": "ann", "amount": "-0.1"}, 400),
        ("charge", {"user": "ann", "amount": "abc"}, 400),
        ("charge", {"user": "ann", "amount": "1e999"}, 400),
        ("charge", {"user": "ann", "amount": [1]}, 422),
        ("charge", {"user": "nobody", "amount": "0.1"}, 404),
        ("reserve", {"user": "ann", "amount": "0.1", "ttl": 0}, 422),
        ("reserve", {"user": "ann", "amount": "0.1", "hold_id": "has space"}, 422),
        ("settle", {"user": "ann", "hold_id": "never", "actual": "0.1"}, 404),
        ("release", {"user": "ann", "hold_id": "never"}, 404),
    ],
)
def test_bad_operations_store_nothing(
    client: TestClient, store: MemoryStore, path: str, body: dict[str, Any], status: int
) -> None:
    _create(client)
    response = client.post(f"/v1/projects/app/{path}", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["message"]
    current = client.get("/v1/projects/app/budgets/ann").json()
    assert (current["spent"], current["held"]) == ("0", "0")
    assert store.history("user:app:ann") == []


def test_reset_zeroes_only_the_current_window(client: TestClient, clock: FrozenClock) -> None:
    _create(client)
    client.post("/v1/projects/app/charge", json={"user": "ann", "amount": "0.2"})
    clock.advance(86_400)
    client.post("/v1/projects/app/charge", json={"user": "ann", "amount": "0.3"})
    reset = client.post("/v1/projects/app/reset", json={"user": "ann"})
    assert reset.json()["spent"] == "0"
    history = client.get("/v1/projects/app/history/ann").json()["history"]
    assert [h["spent"] for h in history] == ["0.2"]


def test_spend_per_user_and_model(client: TestClient) -> None:
    _create(client)
    _create(client, user="bob", amount="2")
    for user, amount, model in (("ann", "0.1", "a"), ("bob", "0.2", "a"), ("bob", "0.3", "b")):
        client.post(
            "/v1/projects/app/charge", json={"user": user, "amount": amount, "model": model}
        )
    hold = client.post("/v1/projects/app/reserve", json={"user": "ann", "amount": "0.25"}).json()
    assert hold["resets_at"] == "2026-03-16T00:00:00+00:00"
    spend = client.get("/v1/projects/app/spend").json()
    assert (spend["spent"], spend["held"]) == ("0.6", "0.25")
    assert spend["by_model"] == {"a": "0.3", "b": "0.3"}
    users = {u["user"]: u for u in spend["users"]}
    assert users["bob"]["remaining"] == "1.5" and users["ann"]["remaining"] == "0.65"


def test_daily_spend_is_zero_just_after_midnight(client: TestClient, clock: FrozenClock) -> None:
    clock.set(NOON + 12 * 3600 - 1)  # 23:59:59
    _create(client)
    client.post("/v1/projects/app/charge", json={"user": "ann", "amount": "0.9"})
    assert _spent(client) == "0.9"
    refused = client.post("/v1/projects/app/reserve", json={"user": "ann", "amount": "0.2"})
    assert refused.headers["retry-after"] == "1"
    clock.advance(1)  # 00:00:00: a new window, no reset job involved
    assert _spent(client) == "0"
    assert (
        client.post("/v1/projects/app/reserve", json={"user": "ann", "amount": "0.2"}).status_code
        == 201
    )
    history = client.get("/v1/projects/app/history/ann").json()["history"]
    assert history == [{"window_start": "2026-03-15T00:00:00+00:00", "spent": "0.9"}]


def test_background_task_purges_expired_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLMBUDGET_ADMIN_KEY", raising=False)
    purges: list[float] = []

    class CountingStore(MemoryStore):
        def purge(self, now: float, retention: float) -> int:
            purges.append(now)
            return super().purge(now, retention)

    store = CountingStore()
    clock = FrozenClock(NOON)
    config = ServerConfig(admin_key=KEY, purge_interval=0.05, retention=10)
    with TestClient(create_app(config, store=store, clock=clock), headers=AUTH) as client:
        _create(client)
        hold = client.post(
            "/v1/projects/app/reserve", json={"user": "ann", "amount": "0.5", "ttl": 1}
        ).json()["hold_id"]
        clock.advance(60)  # expired, and past the retention
        deadline = time.monotonic() + 5
        while sum(1 for at in purges if at >= NOON + 60) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        # The lifespan task keeps sweeping, with the injected clock.
        assert sum(1 for at in purges if at >= NOON + 60) >= 2
        late = client.post(
            "/v1/projects/app/settle", json={"user": "ann", "hold_id": hold, "actual": "0.1"}
        )
        assert late.status_code == 404  # purged: the hold is forgotten


def test_store_api_round_trip_with_integers(client: TestClient, store: MemoryStore) -> None:
    line = {"scope": "team:t", "window": 5, "limit": 1000}
    ok = client.post(
        "/v1/store/reserve",
        json={"hold_id": "h", "lines": [line], "amount": 600, "expires_at": 200, "now": 100},
    )
    assert ok.json() == {"refusal": None}
    refused = client.post(
        "/v1/store/reserve",
        json={"hold_id": "h2", "lines": [line], "amount": 600, "expires_at": 200, "now": 100},
    )
    assert refused.json() == {"refusal": {"index": 0, "spent": 0, "held": 600}}
    settled = client.post(
        "/v1/store/settle", json={"hold_id": "h", "actual": 250, "model": "m", "now": 101}
    )
    assert settled.json() == {"actual": 250, "already": False}
    usage = client.post("/v1/store/usage", json={"scope": "team:t", "window": 5, "now": 102})
    assert usage.json() == {"spent": 250, "held": 0, "by_model": {"m": 250}}
    assert store.usage("team:t", 5, 102).spent == 250
    too_big = client.post(
        "/v1/store/charge",
        json={"lines": [{"scope": "team:t", "window": 5}], "amount": 2**63, "now": 1},
    )
    assert too_big.status_code == 422
    assert store.usage("team:t", 5, 102).spent == 250
    nan_doc = client.post(
        "/v1/store/put_doc",
        content=b'{"kind": "k", "key": "x", "data": {"v": NaN}}',
        headers={"Content-Type": "application/json"},
    )
    assert nan_doc.status_code == 422
    assert store.get_doc("k", "x") is None


def test_metrics(client: TestClient) -> None:
    _create(client)
    client.post("/v1/projects/app/charge", json={"user": "ann", "amount": "0.25"})
    client.post("/v1/projects/app/reserve", json={"user": "ann", "amount": "0.5"})
    client.post("/v1/projects/app/reserve", json={"user": "ann", "amount": "0.5"})  # refused
    text = client.get("/metrics").text
    assert 'llmbudget_spend_dollars_total{project="app"} 0.25' in text
    assert 'llmbudget_refusals_total{project="app"} 1.0' in text
    assert "llmbudget_active_holds 1.0" in text
    assert 'route="/v1/projects/{project}/reserve"' in text
    assert 'status="429"' in text
    # Raw user paths never become labels.
    assert "/v1/projects/app/" not in text


def test_two_apps_have_separate_metrics(store: MemoryStore, clock: FrozenClock) -> None:
    first = create_app(ServerConfig(), store=store, clock=clock)
    second = create_app(ServerConfig(), store=store, clock=clock)
    first.state.llmbudget.metrics.record_spend("user:a:b", 1.0)
    assert b"1.0" in first.state.llmbudget.metrics.render()
    assert b'project="a"' not in second.state.llmbudget.metrics.render()


def test_charge_is_idempotent_by_charge_id(client: TestClient) -> None:
    _create(client, amount="10")
    first = client.post(
        "/v1/projects/app/charge",
        json={"user": "ann", "amount": "0.5", "model": "m", "charge_id": "req-1"},
    )
    assert first.status_code == 200, first.text
    assert first.json() == {"user": "ann", "charged": "0.5", "charge_id": "req-1", "recorded": True}
    again = client.post(
        "/v1/projects/app/charge",
        json={"user": "ann", "amount": "0.5", "model": "m", "charge_id": "req-1"},
    )
    assert again.json()["recorded"] is False
    assert _spent(client) == "0.5"
    other = client.post(
        "/v1/projects/app/charge", json={"user": "ann", "amount": "0.7", "charge_id": "req-1"}
    )
    assert other.status_code == 400
    assert _spent(client) == "0.5"
    # Without an id the server makes one and says which.
    generated = client.post("/v1/projects/app/charge", json={"user": "ann", "amount": "0.1"})
    assert generated.json()["recorded"] is True and len(generated.json()["charge_id"]) == 32
    assert _spent(client) == "0.6"
    # Ids are per user, as hold ids are.
    _create(client, user="bob", amount="10")
    bob = client.post(
        "/v1/projects/app/charge", json={"user": "bob", "amount": "0.7", "charge_id": "req-1"}
    )
    assert bob.json()["recorded"] is True
