"""Config parsing and budgets at every level: key, user, end user, team, org, global, model."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from llmbudget.clock import FrozenClock
from llmbudget.errors import InvalidInputError
from llmbudget.gateway.budgets import ScopePlanner
from llmbudget.gateway.config import GatewayConfig, load_gateway_config
from llmbudget.gateway.keys import VirtualKey
from tests.gateway_fakes import HI_TOKENS, FakeUpstream, Gw, ServerThread, cost, deployment

TIGHT = str(cost(HI_TOKENS, 30))  # room for one 30-token worst case, not for a 50-token one


@pytest.fixture
def url() -> Iterator[tuple[FakeUpstream, str]]:
    upstream = FakeUpstream()
    with ServerThread(upstream.app()) as server:
        yield upstream, server.url


@pytest.mark.parametrize(
    ("section", "key_fields", "body", "scope"),
    [
        ({"users": {"alice": {"budget": TIGHT, "period": "daily"}}}, {}, {}, "gw-user:alice"),
        ({"teams": {"ml": {"budget": TIGHT}}}, {"team": "ml"}, {}, "gw-team:ml"),
        (
            {
                "users": {"alice": {"team": "ml"}},
                "teams": {"ml": {"budget": TIGHT, "org": "acme"}},
                "orgs": {"acme": {}},
            },
            {},
            {},
            "gw-team:ml",
        ),
        (
            {
                "teams": {"ml": {"org": "acme"}},
                "orgs": {"acme": {"budget": TIGHT, "period": "monthly"}},
            },
            {"team": "ml"},
            {},
            "gw-org:acme",
        ),
        ({"budgets": {"global": {"budget": TIGHT, "period": "weekly"}}}, {}, {}, "gw-global"),
        (
            {"budgets": {"end_user": {"budget": TIGHT, "period": "daily"}}},
            {},
            {"user": "cust-1"},
            "gw-end-user:cust-1",
        ),
        (
            {"end_users": {"cust-9": {"budget": TIGHT}}},
            {},
            {"user": "cust-9"},
            "gw-end-user:cust-9",
        ),
        (
            {"budgets": {"models": {"m": {"budget": TIGHT, "period": "daily"}}}},
            {},
            {},
            "gw-model:m",
        ),
        (
            {},
            {"model_budgets": {"m": {"budget": TIGHT, "period": "daily"}}},
            {},
            "gw-key-model:KEY:m",
        ),
        (
            {"users": {"alice": {"model_budgets": {"m": {"budget": TIGHT}}}}},
            {},
            {},
            "gw-user-model:alice:m",
        ),
    ],
)
def test_each_level_refuses_on_its_own(url, section, key_fields, body, scope) -> None:
    upstream, base = url
    config = {"model_list": [deployment(base)], **section}
    with Gw(config) as gw:
        key_id, secret = gw.key(**key_fields)
        scope = scope.replace("KEY", key_id)
        assert gw.chat(secret, max_tokens=30, **body).status_code == 200  # fits, then spends
        r = gw.chat(secret, max_tokens=30, **body)
        assert r.status_code == 429, r.text
        assert r.json()["error"]["scope"] == scope
        assert upstream.count == 1
        # Another end user / model / key is not held back by a scope it is not in.
        if scope.startswith("gw-end-user"):
            assert gw.chat(secret, max_tokens=30, user="someone-else").status_code == 200


def test_one_reserve_spans_every_scope_and_all_get_the_spend(url) -> None:
    _, base = url
    config = {
        "model_list": [deployment(base, budget=10, period="monthly", id_="dep")],
        "users": {"alice": {"budget": 10, "team": "ml"}},
        "teams": {"ml": {"budget": 10, "org": "acme"}},
        "orgs": {"acme": {"budget": 10}},
        "budgets": {
            "global": {"budget": 10},
            "models": {"m": {"budget": 10}},
            "end_user": {"budget": 10},
        },
    }
    with Gw(config) as gw:
        key_id, secret = gw.key(budget=10)
        assert gw.chat(secret, max_tokens=50, user="c1").status_code == 200
        spent = cost(HI_TOKENS, 20)
        for scope, period in (
            (f"gw-key:{key_id}", None),
            ("gw-user:alice", None),
            ("gw-team:ml", None),
            ("gw-org:acme", None),
            ("gw-global", None),
            ("gw-model:m", None),
            ("gw-end-user:c1", None),
            ("gw-deployment:dep", "monthly"),
        ):
            assert gw.settled(scope, period).spent == spent, scope
        entry = gw.logs()[0]
        assert (entry["user"], entry["team"], entry["org"], entry["end_user"]) == (
            "alice",
            "ml",
            "acme",
            "c1",
        )


def test_a_new_window_starts_at_zero(url) -> None:
    _, base = url
    clock = FrozenClock(1_773_576_000.0)
    config = {
        "model_list": [deployment(base)],
        "users": {"alice": {"budget": TIGHT, "period": "daily"}},
    }
    with Gw(config, clock=clock) as gw:
        _, secret = gw.key()
        assert gw.chat(secret, max_tokens=30).status_code == 200
        assert gw.chat(secret, max_tokens=30).status_code == 429
        clock.advance(12 * 3600)  # midnight UTC: a new day
        assert gw.chat(secret, max_tokens=30).status_code == 200


def test_allowed_models_intersect_across_key_user_and_team(url) -> None:
    _, base = url
    config = {
        "model_list": [deployment(base, "a"), deployment(base, "b"), deployment(base, "c")],
        "teams": {"ml": {"models": ["a", "b"]}},
    }
    with Gw(config) as gw:
        _, secret = gw.key(team="ml", models=["b", "c"])
        r = gw.http.get("/v1/models", headers={"authorization": f"Bearer {secret}"})
        assert [m["id"] for m in r.json()["data"]] == ["b"]
        assert gw.chat(secret, model="c", max_tokens=5).status_code == 403


def test_scope_order_puts_model_scopes_after_general_and_deployment_last() -> None:
    cfg = GatewayConfig.from_mapping(
        {
            "model_list": [deployment("http://127.0.0.1:9", budget=1)],
            "users": {"u": {"budget": 1, "model_budgets": {"m": {"budget": 1}}}},
            "budgets": {"global": {"budget": 1}, "models": {"m": {"budget": 1}}},
        }
    )
    planner = ScopePlanner(cfg)
    key = VirtualKey("key_1", "u", "hash", budget=None)
    scopes = [b.scope for b in planner.budgets(key, "e", "m", cfg.deployments[0])]
    assert scopes == [
        "gw-key:key_1",
        "gw-user:u",
        "gw-global",
        "gw-user-model:u:m",
        "gw-model:m",
        "gw-deployment:m-0",
    ]


def test_config_env_secrets_and_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSTREAM_KEY", "sk-up\n")
    monkeypatch.setenv("ADMIN", "sk-admin-0123456789")
    path = tmp_path / "gw.yaml"
    path.write_text(
        "model_list:\n"
        "  - model_name: fast\n"
        "    litellm_params: {model: openai/gpt-4o-mini, api_base: 'http://127.0.0.1:9/v1/', api_key: os.environ/UPSTREAM_KEY, rpm: 10}\n"
        "  - model_name: fast\n"
        "    litellm_params: {model: gpt-4o-mini, api_key_env: UPSTREAM_KEY, weight: 3}\n"
        "    model_info: {id: second}\n"
        "general_settings: {master_key: os.environ/ADMIN}\n"
        "router_settings: {routing_strategy: least-busy, fallbacks: [{fast: [fast]}]}\n"
        "budgets: {global: {max_budget: 0.5, budget_duration: 30d}}\n"
    )
    cfg = load_gateway_config(path)
    first, second = cfg.deployments
    assert first.api_key == "sk-up" and first.api_base == "http://127.0.0.1:9/v1"
    assert first.rpm == 10 and second.weight == 3 and second.id == "second"
    assert second.api_base == "https://api.openai.com/v1"
    assert first.price.input_per_mtok == Decimal("0.15")  # genai-prices' gpt-4o-mini price
    assert cfg.master_key == "sk-admin-0123456789"
    assert cfg.global_budget is not None and cfg.global_budget.limit == Decimal("0.5")
    assert cfg.router.strategy == "least-busy"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"model_list": [{"model_name": "x", "model": "no-such-model-xyz"}]}, "no price"),
        (
            {
                "model_list": [
                    {"model_name": "x", "model": "gpt-4o", "api_key": "os.environ/NOPE_NOT_SET"}
                ]
            },
            "NOPE_NOT_SET",
        ),
        (
            {"model_list": [{"model_name": "x", "model": "gpt-4o", "api_base": "ftp://x"}]},
            "api_base",
        ),
        ({"model_list": [{"model": "gpt-4o"}]}, "model_name"),
        ({"router_settings": {"routing_strategy": "random-ish"}}, "routing_strategy"),
        (
            {
                "model_list": [{"model_name": "x", "model": "gpt-4o"}],
                "router_settings": {"fallbacks": [{"x": ["y"]}]},
            },
            "'y'",
        ),
        ({"users": {"a": {"team": "missing"}}}, "missing"),
        ({"users": {"a": {"budget": "lots"}}}, "users.a"),
        ({"budgets": {"global": {"budget": 1, "period": "fortnight"}}}, "budgets.global"),
        ({"model_list": [{"model_name": "x", "model": "gpt-4o", "weight": 0}]}, "weight"),
    ],
)
def test_bad_configs_fail_loudly(raw: dict, message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE_NOT_SET", raising=False)
    with pytest.raises(InvalidInputError, match=message):
        GatewayConfig.from_mapping(raw)


def test_the_example_config_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
        "LLMBUDGET_ADMIN_KEY",
        "AZURE_OPENAI_KEY",
        "CI_GATEWAY_KEY",
    ):
        monkeypatch.setenv(name, f"sk-{name.lower()}-0123456789")
    path = Path(__file__).resolve().parents[1] / "examples" / "gateway.yaml"
    cfg = load_gateway_config(path)
    assert cfg.models()
    assert cfg.master_key
