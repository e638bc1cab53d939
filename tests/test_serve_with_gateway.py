"""``llmbudget serve`` with a ``model_list`` serves the gateway beside the budget API, on
one store and one admin key."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest
import yaml

from llmbudget.errors import InvalidInputError
from llmbudget.server import create_app, load_config
from llmbudget.server.testing import live_server
from tests.gateway_fakes import HI, HI_TOKENS, FakeUpstream, ServerThread, cost, deployment

ADMIN = "sk-admin-serve-0123456789"


def test_one_server_budget_api_and_gateway(tmp_path: Path) -> None:
    upstream = FakeUpstream()
    with ServerThread(upstream.app()) as up:
        config_file = tmp_path / "llmbudget.yaml"
        config_file.write_text(
            yaml.safe_dump(
                {
                    "admin_key": ADMIN,
                    "store": f"sqlite:///{tmp_path / 'ledger.db'}",
                    "model_list": [deployment(up.url)],
                }
            )
        )
        app = create_app(load_config(config_file))
        with live_server(app) as url, httpx.Client(base_url=url, timeout=30) as http:
            admin = {"Authorization": f"Bearer {ADMIN}"}
            created = http.post(
                "/v1/keys", json={"user": "ann", "budget": "1", "period": "daily"}, headers=admin
            )
            assert created.status_code in (200, 201), created.text
            secret = created.json()["key"]
            sdk = openai.OpenAI(api_key=secret, base_url=f"{url}/v1", max_retries=0)
            reply = sdk.chat.completions.create(model="m", messages=HI, max_tokens=50)  # type: ignore[arg-type]
            assert reply.usage is not None and reply.usage.completion_tokens == 20

            # The budget API of the same server sees the gateway's spend in the same store.
            health = http.get("/v1/health")
            assert health.status_code == 200
            logs = http.get("/v1/spend/logs", headers=admin).json()
            rows = logs["data"] if isinstance(logs, dict) else logs
            assert len(rows) == 1 and rows[0]["user"] == "ann"
            assert rows[0]["cost"] == str(cost(HI_TOKENS, 20))
            # Without the admin key, the gateway's admin endpoints are closed.
            assert http.get("/v1/spend/logs").status_code == 401


def test_bad_gateway_config_fails_at_start(tmp_path: Path) -> None:
    config_file = tmp_path / "bad.yaml"
    config_file.write_text(yaml.safe_dump({"model_list": [{"model_name": "m"}]}))
    with pytest.raises(InvalidInputError):
        create_app(load_config(config_file))


def test_the_gateways_store_setting_is_the_servers_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gw.db'}"
    config_file = tmp_path / "gw.yaml"
    config_file.write_text(yaml.safe_dump({"general_settings": {"store": url}, "model_list": []}))
    assert load_config(config_file).store == url
    config_file.write_text(
        yaml.safe_dump({"store": "memory://", "general_settings": {"store": url}, "model_list": []})
    )
    with pytest.raises(InvalidInputError, match="share one"):
        load_config(config_file)
