"""Users, teams, orgs and end users in the store: the directory on every store, the admin
API (/v1/users, /v1/teams, /v1/orgs, /v1/end_users) over SQLite with real traffic."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest

from llmbudget.clock import FrozenClock
from llmbudget.gateway.config import GatewayConfig
from llmbudget.gateway.entities import EntityDirectory
from llmbudget.gateway.keys import KEY_DOC_KIND, VirtualKey
from llmbudget.stores.base import Store
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

CONFIG_ENTITIES = {
    "users": {"cfg-user": {"budget": 3, "period": "daily", "team": "cfg-team"}},
    "teams": {"cfg-team": {"budget": 30}},
}


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gw]:
    upstream = FakeUpstream()
    with (
        sqlite_store(tmp_path) as store,
        ServerThread(upstream.app()) as server,
        Gw(
            {
                "model_list": [deployment(server.url, "m"), deployment(server.url, "big")],
                **CONFIG_ENTITIES,
            },
            store=store,
        ) as gateway,
    ):
        yield gateway


def call(gw: Gw, method: str, path: str, body: Any = None) -> Any:
    return gw.http.request(method, path, json=body, headers={"authorization": f"Bearer {MASTER}"})


def refused(gw: Gw, method: str, path: str, body: Any, status: int = 400) -> dict[str, Any]:
    r = call(gw, method, path, body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) >= {"message", "type", "code"}
    return dict(error)


def sdk(gw: Gw, secret: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=secret, base_url=f"{gw.url}/v1", max_retries=0)


# --------------------------------------------------------------------------- every store


def test_entities_round_trip_on_every_store(store: Store, clock: FrozenClock) -> None:
    config = GatewayConfig.from_mapping({})
    mine = EntityDirectory(store, config, clock=clock)
    theirs = EntityDirectory(store, config, clock=clock)

    async def run() -> None:
        await mine.create("org", {"id": "acme", "max_budget": "1000.5"})
        await mine.create("team", {"id": "ml", "org": "acme", "budget": 50, "period": "monthly"})
        await mine.create(
            "user",
            {"id": "a:lice", "team": "ml", "budget": "0.000000001", "rpm_limit": 7,
             "metadata": {"email": "a@example.com", "n": [1, 2]}},
        )  # fmt: skip
        await mine.create("end_user", {"id": "cust-1", "budget": 2, "tpm_limit": 100})
        user = await theirs.get("user", "a:lice")
        assert user is not None and user.entity.team == "ml"
        assert user.entity.budget is not None and user.entity.budget.limit == Decimal("1E-9")
        assert user.entity.limits.rpm_limit == 7 and user.metadata["n"] == [1, 2]
        assert user.public()["budget"]["budget"] == "0.000000001"
        assert [r.name for r in await theirs.records("team")] == ["ml"]
        assert (await theirs.members("ml")) == ["a:lice"]
        org = await theirs.get("org", "acme")
        assert org is not None and org.entity.budget is not None
        assert org.entity.budget.limit == Decimal("1000.5")
        end_user = await theirs.get("end_user", "cust-1")
        assert end_user is not None and end_user.entity.limits.tpm_limit == 100

        clock.advance(5)
        changed = await theirs.update("user", "a:lice", {"max_budget": 4, "team": None})
        assert changed.entity.budget is not None and changed.entity.budget.limit == 4
        assert changed.entity.team is None and changed.updated_at > changed.created_at
        again = await mine.get("user", "a:lice")
        assert again is not None and again.entity == changed.entity
        await mine.delete("user", "a:lice")
        await mine.delete("team", "ml")
        assert await theirs.get("user", "a:lice") is None
        assert await theirs.get("team", "ml") is None

    asyncio.run(run())


def test_another_replica_sees_a_new_entity_within_the_cache_ttl(clock: FrozenClock) -> None:
    from llmbudget.stores.memory import MemoryStore

    store = MemoryStore()
    config = GatewayConfig.from_mapping({})
    mine = EntityDirectory(store, config, clock=clock, ttl=10)
    theirs = EntityDirectory(store, config, clock=clock, ttl=10)
    key = VirtualKey("key_1", "bob", "h")

    async def run() -> None:
        await theirs.prefetch(key)  # bob unknown: the miss is cached there
        generation = theirs.generation
        await theirs.prefetch_end_user("someone-new")
        assert theirs.generation == generation  # a new miss changes no plan
        await mine.create("user", {"id": "bob", "budget": 1})
        await theirs.prefetch(key)
        assert theirs.user("bob") is None  # within the documented window
        clock.advance(10.001)
        await theirs.prefetch(key)
        found = theirs.user("bob")
        assert found is not None and found.budget is not None and found.budget.limit == 1
        assert theirs.generation != generation  # cached plans from before are not reused

    asyncio.run(run())


# --------------------------------------------------------------------------- admin API


def test_bad_input_is_a_400_naming_the_field_and_stores_nothing(gw: Gw) -> None:
    error = refused(gw, "POST", "/v1/users", {"id": "al", "budgett": 5})
    assert "budgett" in error["message"] and "did you mean 'budget'" in error["message"]
    assert error["type"] == "invalid_request_error"
    error = refused(gw, "POST", "/v1/users", {"id": "al", "team": "no-such-team"})
    assert "no-such-team" in error["message"] and "team" in error["message"]
    error = refused(gw, "POST", "/v1/teams", {"id": "t", "model_budgets": {"gpt-4oo": 1}})
    assert "gpt-4oo" in error["message"]
    refused(gw, "POST", "/v1/teams", {"id": "t", "rpm_limit": 0})
    refused(gw, "POST", "/v1/teams", {"id": "t", "budget": -1})
    refused(gw, "POST", "/v1/orgs", {"id": "o", "period": "daily"})  # a period caps nothing
    refused(gw, "POST", "/v1/orgs", {"budget": 5})  # no id
    refused(gw, "POST", "/v1/end_users", {"id": "e", "models": ["m"]})  # not for end users
    refused(gw, "POST", "/v1/end_users", {"id": "e", "budget": 1, "max_budget": 2})
    for kind in ("gw-user", "gw-team", "gw-org", "gw-end-user"):
        assert gw.store.list_docs(kind) == []
    assert refused(gw, "GET", "/v1/users/al", None, 404)["code"] == "user_not_found"
    # An existing entity refused a bad patch is left as it was.
    gw.admin("POST", "/v1/orgs", {"id": "o", "budget": 5, "period": "daily"})
    refused(gw, "PATCH", "/v1/orgs/o", {"budget": "lots"})
    assert gw.admin("GET", "/v1/orgs/o")["budget"]["budget"] == "5"


def test_create_read_update_delete(gw: Gw) -> None:
    gw.admin("POST", "/v1/orgs", {"id": "acme", "budget": 100, "period": "monthly"})
    team = gw.admin(
        "POST", "/v1/teams",
        {"id": "ml", "org": "acme", "max_budget": 20, "budget_duration": "30d",
         "models": ["m"], "tpm_limit": 5000, "metadata": {"owner": "ana"}},
    )  # fmt: skip
    assert team["budget"] == {"budget": "20", "period": "30d", "timezone": "UTC", "rolling": False}
    assert team["models"] == ["m"] and team["tpm_limit"] == 5000 and team["source"] == "api"
    assert team["spend"]["gw-team:ml"]["remaining"] == "20"
    assert refused(gw, "POST", "/v1/teams", {"id": "ml"}, 409)["code"] == "team_exists"

    user = gw.admin("POST", "/v1/users", {"id": "ana", "team": "ml", "rpm_limit": 60,
                                          "max_parallel_requests": 2})  # fmt: skip
    assert user["rpm_limit"] == 60 and user["max_parallel_requests"] == 2
    # No dollar budget; the rate limits show how much of them is used.
    assert {scope: s["unit"] for scope, s in user["spend"].items()} == {
        "gw-user-rpm:ana": "requests",
        "gw-user-parallel:ana": "concurrent",
    }
    assert user["spend"]["gw-user-rpm:ana"]["limit"] == "60"
    assert gw.admin("GET", "/v1/teams/ml")["members"] == ["ana"]

    patched = gw.admin("PATCH", "/v1/teams/ml", {"budget": 25, "metadata": None})
    assert patched["budget"]["budget"] == "25" and patched["budget"]["period"] == "30d"
    assert patched["metadata"] == {} and patched["tpm_limit"] == 5000
    uncapped = gw.admin("PATCH", "/v1/teams/ml", {"max_budget": None})
    assert uncapped["budget"] is None and list(uncapped["spend"]) == ["gw-team-tpm:ml"]

    # Deleting what a live key, user or team still names is refused; nothing is detached.
    key_id, _ = gw.key(user="ana", team="ml")
    error = refused(gw, "DELETE", "/v1/teams/ml", None, 409)
    assert (
        error["code"] == "team_in_use" and "ana" in error["message"] and key_id in error["message"]
    )
    assert refused(gw, "DELETE", "/v1/orgs/acme", None, 409)["code"] == "org_in_use"
    gw.admin("DELETE", f"/v1/keys/{key_id}")
    gw.admin("PATCH", "/v1/users/ana", {"team": None})
    assert gw.admin("DELETE", "/v1/teams/ml")["deleted"] is True
    assert refused(gw, "GET", "/v1/teams/ml", None, 404)["code"] == "team_not_found"
    assert gw.store.get_doc("gw-team", "ml") is None


def test_config_entities_are_listed_but_read_only(gw: Gw) -> None:
    listed = gw.admin("GET", "/v1/users")["data"]
    assert [u["id"] for u in listed] == ["cfg-user"] and listed[0]["source"] == "config"
    assert listed[0]["spend"]["gw-user:cfg-user"]["limit"] == "3"
    for method in ("PATCH", "DELETE"):
        error = refused(gw, method, "/v1/teams/cfg-team", {}, 409)
        assert error["code"] == "team_in_config"
    assert refused(gw, "POST", "/v1/users", {"id": "cfg-user"}, 409)["code"] == "user_in_config"
    # A config team is a valid parent for an API user.
    assert gw.admin("POST", "/v1/users", {"id": "new", "team": "cfg-team"})["team"] == "cfg-team"


def test_keys_naming_an_unknown_team_or_org_are_refused(gw: Gw) -> None:
    error = refused(gw, "POST", "/v1/keys", {"user": "ana", "team": "nope"})
    assert "nope" in error["message"]
    refused(gw, "POST", "/v1/keys", {"user": "ana", "org": "nope"})
    assert gw.store.list_docs(KEY_DOC_KIND) == []
    key_id, _ = gw.key(user="ana", team="cfg-team")
    refused(gw, "PATCH", f"/v1/keys/{key_id}", {"org": "nope"})
    assert gw.admin("GET", f"/v1/keys/{key_id}")["org"] is None


def test_list_shows_spend_after_traffic_and_pages(gw: Gw) -> None:
    gw.admin("POST", "/v1/teams", {"id": "ml", "budget": 1, "period": "daily"})
    gw.admin("POST", "/v1/users", {"id": "ana", "team": "ml", "budget": "0.5"})
    _, secret = gw.key(user="ana")
    client = sdk(gw, secret)
    for _ in range(2):
        reply = client.chat.completions.create(model="m", messages=HI, max_tokens=50)  # type: ignore[arg-type]
        assert reply.usage is not None and reply.usage.completion_tokens == 20
    spent = cost(HI_TOKENS, 20) * 2
    gw.settled("gw-team:ml", "daily")
    teams = {t["id"]: t for t in gw.admin("GET", "/v1/teams")["data"]}
    assert list(teams) == ["cfg-team", "ml"]  # config ones first
    team = teams["ml"]
    status = team["spend"]["gw-team:ml"]
    assert Decimal(status["spent"]) == spent and status["held"] == "0"
    assert Decimal(status["remaining"]) == 1 - spent and status["resets_at"]
    users = {u["id"]: u for u in gw.admin("GET", "/v1/users")["data"]}
    assert Decimal(users["ana"]["spend"]["gw-user:ana"]["spent"]) == spent

    for name in ("o1", "o2", "o3"):
        gw.admin("POST", "/v1/orgs", {"id": name})
    first = gw.admin("GET", "/v1/orgs?limit=2")
    assert [o["id"] for o in first["data"]] == ["o1", "o2"] and first["has_more"] is True
    rest = gw.admin("GET", f"/v1/orgs?limit=2&after={first['last_id']}")
    assert [o["id"] for o in rest["data"]] == ["o3"] and rest["has_more"] is False
    refused(gw, "GET", "/v1/orgs?limit=0", None)


def test_an_entity_created_by_api_binds_the_next_request(gw: Gw) -> None:
    _, secret = gw.key(user="carol")
    client = sdk(gw, secret)
    client.chat.completions.create(model="m", messages=HI, max_tokens=20)  # type: ignore[arg-type]
    gw.admin("POST", "/v1/users", {"id": "carol", "budget": "0.00001", "models": ["m"]})
    with pytest.raises(openai.RateLimitError) as refusal:
        client.chat.completions.create(model="m", messages=HI, max_tokens=20)  # type: ignore[arg-type]
    body: Any = refusal.value.body
    assert body["scope"] == "gw-user:carol" and body["limit"] == "0.00001"
    with pytest.raises(openai.PermissionDeniedError):  # the user's model list binds too
        client.chat.completions.create(model="big", messages=HI, max_tokens=20)  # type: ignore[arg-type]
    gw.admin("PATCH", "/v1/users/carol", {"budget": 5})
    client.chat.completions.create(model="m", messages=HI, max_tokens=20)  # type: ignore[arg-type]

    gw.admin("POST", "/v1/end_users", {"id": "cust-9", "budget": "0.00001", "rpm_limit": 3})
    with pytest.raises(openai.RateLimitError) as refusal:
        client.chat.completions.create(model="m", messages=HI, max_tokens=20, user="cust-9")  # type: ignore[arg-type]
    body = refusal.value.body
    assert body["scope"] == "gw-end-user:cust-9"
    shown = gw.admin("GET", "/v1/end_users/cust-9")
    assert shown["rpm_limit"] == 3 and shown["spend"]["gw-end-user:cust-9"]["limit"] == "0.00001"
    entity = gw.gateway.entities.end_user("cust-9")
    assert entity is not None and entity.limits.rpm_limit == 3  # what the planner reads


def test_an_entity_changed_through_one_replica_binds_on_another(tmp_path: Path) -> None:
    upstream = FakeUpstream()
    with (
        sqlite_store(tmp_path) as first_store,
        sqlite_store(tmp_path) as second_store,  # the same file: another process's view
        ServerThread(upstream.app()) as server,
    ):
        config = {
            "model_list": [deployment(server.url, "m")],
            "general_settings": {"key_cache_ttl": 0},  # every request reads the store
        }
        with Gw(config, store=first_store) as one, Gw(config, store=second_store) as two:
            _, secret = one.key(user="rita")
            assert two.chat(secret, max_tokens=20).status_code == 200
            one.admin("POST", "/v1/users", {"id": "rita", "budget": "0.00001"})
            refused_there = two.chat(secret, max_tokens=20)
            assert refused_there.status_code == 429
            assert refused_there.json()["error"]["scope"] == "gw-user:rita"
            one.admin("PATCH", "/v1/users/rita", {"budget": None})
            assert two.chat(secret, max_tokens=20).status_code == 200
