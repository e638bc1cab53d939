"""LiteLLM proxy's management endpoints, as a LiteLLM admin script calls them, over SQLite;
the keys they make are used with the official openai SDK against the fake upstream."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest

from llmbudget.gateway.exact_json import ExactJSONResponse
from llmbudget.gateway.keys import KEY_DOC_KIND
from tests.gateway_fakes import (
    HI,
    HI_TOKENS,
    MASTER,
    FakeUpstream,
    Gw,
    ServerThread,
    cost,
    deployment,
)
from tests.storekit import sqlite_store


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gw]:
    upstream = FakeUpstream()
    with (
        sqlite_store(tmp_path) as store,
        ServerThread(upstream.app()) as server,
        Gw(
            {"model_list": [deployment(server.url, "m"), deployment(server.url, "big")]},
            store=store,
        ) as gateway,
    ):
        yield gateway


def post(gw: Gw, path: str, body: Any, status: int = 200) -> Any:
    r = gw.http.post(path, json=body, headers={"authorization": f"Bearer {MASTER}"})
    assert r.status_code == status, r.text
    return r.json()


def get(gw: Gw, path: str, status: int = 200, **params: str) -> Any:
    r = gw.http.get(path, params=params, headers={"authorization": f"Bearer {MASTER}"})
    assert r.status_code == status, r.text
    return r.json()


def sdk(gw: Gw, secret: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=secret, base_url=f"{gw.url}/v1", max_retries=0)


ONE_CALL = cost(HI_TOKENS, 20)  # the fake upstream answers 20 tokens when max_tokens >= 20


def test_a_litellm_admin_script_gives_keys_the_sdk_uses_and_the_budgets_bind(gw: Gw) -> None:
    team = post(gw, "/team/new", {"team_id": "eng", "team_alias": "Engineering",
                                  "max_budget": 10, "budget_duration": "30d", "rpm_limit": 100})  # fmt: skip
    assert team["team_id"] == "eng" and team["team_alias"] == "Engineering"
    assert team["max_budget"] == 10 and team["budget_duration"] == "30d"
    user = post(gw, "/user/new", {"user_id": "dana", "teams": ["eng"], "max_budget": 5,
                                  "auto_create_key": False})  # fmt: skip
    assert user["user_id"] == "dana" and user["teams"] == ["eng"] and user["key"] is None
    assert user["spend"] == 0  # it has a budget, so its spend is tracked
    uncapped = post(gw, "/user/new", {"user_id": "ulla", "auto_create_key": False})
    assert uncapped["spend"] is None and uncapped["max_budget"] is None
    # A rate limit counts requests, never dollars: still no spend.
    limited = post(gw, "/user/new", {"user_id": "rita", "rpm_limit": 5, "auto_create_key": False})
    assert limited["spend"] is None and limited["rpm_limit"] == 5

    # Room for exactly two calls: each holds its worst case (max_tokens=20) and settles it.
    budget = ONE_CALL * 2 + Decimal("0.000004")
    generated = post(
        gw, "/key/generate",
        {"user_id": "dana", "team_id": "eng", "max_budget": float(budget),
         "budget_duration": "30d", "models": ["m"], "rpm_limit": 10, "tpm_limit": 1000,
         "max_parallel_requests": 3, "key_alias": "ci-bot", "metadata": {"env": "ci"},
         "duration": "7d"},
    )  # fmt: skip
    secret = generated["key"]
    assert secret.startswith("sk-llmb-") and generated["token"].startswith("key_")
    expires = datetime.fromisoformat(generated["expires"])
    assert timedelta(days=6, hours=23) < expires - datetime.now(UTC) <= timedelta(days=7)

    info = get(gw, "/key/info", key=secret)
    assert info["key"] == secret
    shown = info["info"]
    assert shown["token"] == generated["token"] and shown["key_alias"] == "ci-bot"
    assert shown["user_id"] == "dana" and shown["team_id"] == "eng" and shown["models"] == ["m"]
    assert Decimal(str(shown["max_budget"])) == budget and shown["budget_duration"] == "30d"
    assert shown["rpm_limit"] == 10 and shown["tpm_limit"] == 1000
    assert shown["max_parallel_requests"] == 3 and shown["metadata"] == {"env": "ci"}
    assert shown["spend"] == 0 and shown["budget_reset_at"]

    client = sdk(gw, secret)
    for _ in range(2):
        reply = client.chat.completions.create(model="m", messages=HI, max_tokens=20)  # type: ignore[arg-type]
        assert reply.choices[0].message.content == " a" * 20
    with pytest.raises(openai.RateLimitError) as refusal:
        client.chat.completions.create(model="m", messages=HI, max_tokens=20)  # type: ignore[arg-type]
    body: Any = refusal.value.body
    assert body["scope"] == f"gw-key:{generated['token']}"
    with pytest.raises(openai.PermissionDeniedError):  # models: ["m"] binds
        client.chat.completions.create(model="big", messages=HI, max_tokens=20)  # type: ignore[arg-type]

    gw.settled(f"gw-key:{generated['token']}", "30d")
    spent = get(gw, "/key/info", key=secret)["info"]["spend"]
    assert Decimal(str(spent)) == ONE_CALL * 2
    user_info = get(gw, "/user/info", user_id="dana")
    assert [k["token"] for k in user_info["keys"]] == [generated["token"]]
    assert Decimal(str(user_info["user_info"]["spend"])) == ONE_CALL * 2
    assert user_info["teams"][0]["team_id"] == "eng"
    team_info = get(gw, "/team/info", team_id="eng")
    assert team_info["team_info"]["members_with_roles"] == [{"user_id": "dana", "role": "user"}]
    assert [k["token"] for k in team_info["keys"]] == [generated["token"]]
    assert Decimal(str(team_info["team_info"]["spend"])) == ONE_CALL * 2

    # /key/update raises the budget: the next call goes through.
    updated = post(gw, "/key/update", {"key": secret, "max_budget": 1, "rpm_limit": 20})
    assert updated["max_budget"] == 1 and updated["rpm_limit"] == 20
    client.chat.completions.create(model="m", messages=HI, max_tokens=20)  # type: ignore[arg-type]

    assert post(gw, "/key/delete", {"keys": [secret]}) == {"deleted_keys": [secret]}
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="m", messages=HI, max_tokens=20)  # type: ignore[arg-type]


def test_user_new_makes_a_key_and_customer_new_an_end_user_budget(gw: Gw) -> None:
    user = post(gw, "/user/new", {"user_id": "eve", "max_budget": 2, "user_email": "e@x.io",
                                  "models": ["all-proxy-models"]})  # fmt: skip
    assert user["models"] == []  # every model
    assert gw.admin("GET", "/v1/users/eve")["models"] is None
    assert user["key"].startswith("sk-llmb-") and user["max_budget"] == 2
    assert gw.admin("GET", "/v1/users/eve")["metadata"] == {"user_email": "e@x.io"}
    client = sdk(gw, user["key"])
    client.chat.completions.create(model="m", messages=HI, max_tokens=20)  # type: ignore[arg-type]

    customer = post(gw, "/customer/new", {"user_id": "acme-customer", "max_budget": 0.00001,
                                          "alias": "Acme", "rpm_limit": 7})  # fmt: skip
    assert customer["user_id"] == "acme-customer" and customer["blocked"] is False
    assert customer["litellm_budget_table"]["max_budget"] == 0.00001
    assert customer["litellm_budget_table"]["rpm_limit"] == 7
    with pytest.raises(openai.RateLimitError) as refusal:
        client.chat.completions.create(  # type: ignore[call-overload]
            model="m", messages=HI, max_tokens=20, user="acme-customer"
        )
    body: Any = refusal.value.body
    assert body["scope"] == "gw-end-user:acme-customer"


def test_spend_logs_and_global_spend(gw: Gw) -> None:
    a = post(gw, "/key/generate", {"user_id": "a"})
    b = post(gw, "/key/generate", {"user_id": "b"})
    for generated, calls in ((a, 2), (b, 1)):
        for _ in range(calls):
            client = sdk(gw, generated["key"])
            client.chat.completions.create(model="m", messages=HI, max_tokens=20)  # type: ignore[arg-type]
    today = datetime.now(UTC).date()
    rows = get(gw, "/spend/logs", api_key=a["key"], start_date=str(today), end_date=str(today))
    assert len(rows) == 2 and {r["api_key"] for r in rows} == {a["token"]}
    row = rows[0]
    assert row["user"] == "a" and row["model_group"] == "m" and row["status"] == "ok"
    assert Decimal(str(row["spend"])) == ONE_CALL
    assert row["total_tokens"] == HI_TOKENS + 20 and row["startTime"] <= row["endTime"]
    assert [r["user"] for r in get(gw, "/spend/logs", user_id="b")] == ["b"]
    tomorrow = str(today + timedelta(days=1))
    assert get(gw, "/spend/logs", start_date=tomorrow) == []
    assert (
        get(gw, "/spend/logs", start_date="yesterday", status=400)["error"]["param"] == "start_date"
    )

    total = get(gw, "/global/spend")
    assert Decimal(str(total["spend"])) == ONE_CALL * 3 and total["max_budget"] is None


def test_global_spend_reports_the_global_budget(tmp_path: Path) -> None:
    upstream = FakeUpstream()
    with (
        ServerThread(upstream.app()) as server,
        Gw(
            {
                "model_list": [deployment(server.url, "m")],
                "budgets": {"global": {"budget": 50, "period": "monthly"}},
            }
        ) as gateway,
    ):
        generated = post(gateway, "/key/generate", {})
        assert generated["user_id"] == "default_user_id"
        client = sdk(gateway, generated["key"])
        client.chat.completions.create(model="m", messages=HI, max_tokens=20)  # type: ignore[arg-type]
        gateway.settled("gw-global", "monthly")
        total = get(gateway, "/global/spend")
        assert Decimal(str(total["spend"])) == ONE_CALL and total["max_budget"] == 50


def test_unknown_or_unsupported_fields_are_refused_and_nothing_is_stored(gw: Gw) -> None:
    for path, body, named in (
        ("/key/generate", {"max_budgett": 5}, "max_budgett"),
        ("/key/generate", {"soft_budget": 5}, "soft_budget"),
        ("/key/generate", {"team_id": "no-such-team"}, "no-such-team"),
        (
            "/key/generate",
            {"model_max_budget": {"m": {"budget_limit": 1, "period": "1d"}}},
            "period",
        ),
        ("/user/new", {"user_id": "u", "teams": ["t1", "t2"]}, "teams"),
        ("/user/new", {"user_id": "u", "teams": "t1"}, "teams"),
        ("/team/new", {"team_id": "t", "members_with_roles": [{"user_id": "ghost"}]}, "ghost"),
        ("/customer/new", {"max_budget": 1}, "user_id"),
        ("/user/new", {"user_id": "u", "duration": "forever"}, "duration"),
        ("/user/new", {"user_id": "a/b"}, "'/'"),
    ):
        r = gw.http.post(path, json=body, headers={"authorization": f"Bearer {MASTER}"})
        assert r.status_code == 400, (path, r.text)
        error = r.json()["error"]
        assert named in error["message"] and error["type"] == "invalid_request_error"
    assert gw.store.list_docs(KEY_DOC_KIND) == []
    for kind in ("gw-user", "gw-team", "gw-end-user"):
        assert gw.store.list_docs(kind) == []
    assert get(gw, "/key/info", status=404, key="sk-llmb-nope")["error"]["code"] == "key_not_found"
    # Deleting a missing key among real ones revokes none of them.
    real = post(gw, "/key/generate", {"user_id": "a"})
    post(gw, "/key/delete", {"keys": [real["key"], "sk-llmb-nope"]}, status=404)
    assert get(gw, "/key/info", key=real["key"])["info"]["blocked"] is False


def test_the_admin_key_is_required(gw: Gw) -> None:
    r = gw.http.post("/key/generate", json={}, headers={"authorization": "Bearer sk-wrong"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = gw.http.get("/global/spend")
    assert r.status_code == 401


def test_money_is_an_exact_json_number() -> None:
    rendered = ExactJSONResponse(
        {"spend": Decimal("0.000000001"), "big": Decimal("1234567890.123456789"),
         "text": "\x00not-a-marker\x00", "nested": [{"v": Decimal("2.50")}]}
    ).body  # fmt: skip
    assert isinstance(rendered, bytes)
    assert b'"spend":0.000000001' in rendered and b'"big":1234567890.123456789' in rendered
    assert json.loads(rendered)["text"] == "\x00not-a-marker\x00"
    assert json.loads(rendered)["nested"] == [{"v": 2.5}]


def test_config_keys_are_found_by_secret_and_stay_read_only(tmp_path: Path) -> None:
    secret = "sk-config-secret-0123456789"
    upstream = FakeUpstream()
    with (
        ServerThread(upstream.app()) as server,
        Gw(
            {
                "model_list": [deployment(server.url, "m")],
                "keys": [{"id": "ci", "key": secret, "user": "ci-bot", "rpm_limit": 4}],
                "users": {"ci-bot": {}},
            }
        ) as gateway,
    ):
        for given in (secret, "ci"):
            info = get(gateway, "/key/info", key=given)["info"]
            assert info["token"] == "ci" and info["user_id"] == "ci-bot"
            assert info["rpm_limit"] == 4
        cfg_member = {"team_id": "t", "members_with_roles": [{"user_id": "ci-bot"}]}
        assert "ci-bot" in post(gateway, "/team/new", cfg_member, status=400)["error"]["message"]
        assert gateway.store.list_docs("gw-team") == []
        error = post(gateway, "/key/update", {"key": secret, "max_budget": 1}, status=409)
        assert error["error"]["code"] == "key_in_config"


def test_rate_limits_of_a_generated_key_and_team_bind(tmp_path: Path) -> None:
    from llmbudget.clock import FrozenClock

    # A frozen clock: the calls below must share one calendar minute.
    clock = FrozenClock(datetime(2026, 3, 15, 12, 0, 5, tzinfo=UTC).timestamp())
    upstream = FakeUpstream()
    with (
        sqlite_store(tmp_path) as store,
        ServerThread(upstream.app()) as server,
        Gw({"model_list": [deployment(server.url, "m")]}, store=store, clock=clock) as gw,
    ):
        _limits_bind(gw)


def _limits_bind(gw: Gw) -> None:
    post(gw, "/team/new", {"team_id": "ops", "rpm_limit": 3})
    generated = post(gw, "/key/generate", {"user_id": "eve", "team_id": "ops", "rpm_limit": 2})
    client = sdk(gw, generated["key"])
    for _ in range(2):
        client.chat.completions.create(model="m", messages=HI, max_tokens=20)  # type: ignore[arg-type]
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="m", messages=HI, max_tokens=20)  # type: ignore[arg-type]
    assert refused.value.code == "rate_limit_exceeded"
    assert refused.value.response.headers["x-ratelimit-limit-requests"] == "2"
    # The team's own limit binds a second key of the team: 2 calls made, 1 left.
    other = sdk(gw, post(gw, "/key/generate", {"user_id": "fay", "team_id": "ops"})["key"])
    other.chat.completions.create(model="m", messages=HI, max_tokens=20)  # type: ignore[arg-type]
    with pytest.raises(openai.RateLimitError) as team_refused:
        other.chat.completions.create(model="m", messages=HI, max_tokens=20)  # type: ignore[arg-type]
    assert "team ops" in str(team_refused.value)
