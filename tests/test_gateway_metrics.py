"""The gateway's Prometheus metrics in one process: spend by model and by kind of budget,
refusals by kind and reason, upstream latency and errors per deployment, holds in flight.
(Across workers: tests/test_serve_workers.py.)"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from prometheus_client import generate_latest

from llmbudget.errors import BudgetExceededError
from llmbudget.gateway.metrics import scope_kind
from llmbudget.server import ServerConfig, create_app
from llmbudget.server.testing import live_server
from llmbudget.stores.memory import MemoryStore
from tests.gateway_fakes import HI, HI_TOKENS, FakeUpstream, Gw, ServerThread, cost, deployment


def _values(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for match in re.finditer(rf"^{name}(?:{{(.*?)}})? (\S+)$", text, flags=re.M):
        labels = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', match.group(1) or "")))
        out[labels] = float(match.group(2))
    return out


def _settled(scrape: Callable[[], str], timeout: float = 10.0) -> str:
    """A scrape once no gateway hold is in flight (settles run after the responses)."""
    deadline = time.monotonic() + timeout
    while True:
        text = scrape()
        if _values(text, "llmbudget_gateway_holds_in_flight") == {(): 0.0}:
            return text
        assert time.monotonic() < deadline, text
        time.sleep(0.01)


def _scrape(gw: Gw) -> str:
    return _settled(lambda: generate_latest(gw.gateway.metrics.registry).decode())


def _money(value: float) -> Decimal:
    return Decimal(str(value)).quantize(Decimal("1e-12"))


def test_spend_is_counted_once_by_model_and_once_per_kind_of_budget() -> None:
    upstream = FakeUpstream(reply_tokens=20)
    with ServerThread(upstream.app()) as up:
        config: dict[str, Any] = {
            "model_list": [deployment(up.url, id_="dep-a")],
            "budgets": {"global": {"budget": 100}},
            "teams": {"eng": {"budget": 50}},
            "users": {"alice": {"team": "eng"}},
        }
        with Gw(config) as gw:
            key_id, secret = gw.key(user="alice")
            sdk = openai.OpenAI(api_key=secret, base_url=f"{gw.url}/v1", max_retries=0)
            sdk.chat.completions.create(model="m", messages=HI, max_tokens=20)  # type: ignore[arg-type]
            stream = sdk.chat.completions.create(
                model="m",
                messages=HI,  # type: ignore[arg-type]
                max_tokens=20,
                stream=True,
            )
            assert sum(1 for _ in stream) > 1
            spent = gw.settled(f"gw-key:{key_id}").spent
            assert spent == 2 * cost(HI_TOKENS, 20)
            text = _scrape(gw)
            by_model = _values(text, "llmbudget_gateway_spend_dollars_total")
            assert {k: _money(v) for k, v in by_model.items()} == {(("model", "m"),): spent}
            kinds = _values(text, "llmbudget_gateway_scope_spend_dollars_total")
            # alice has no budget of her own: no "user" line; her team and the global do.
            assert {dict(k)["scope_kind"] for k in kinds} == {"key", "team", "global"}
            assert all(_money(v) == spent for v in kinds.values())
            latency = _values(text, "llmbudget_gateway_upstream_duration_seconds_count")
            assert latency == {(("deployment", "dep-a"),): 2.0}
            assert "alice" not in text and key_id not in text  # never an id as a label


def test_refusals_are_counted_by_kind_and_reason_as_429s() -> None:
    upstream = FakeUpstream(reply_tokens=20)
    with ServerThread(upstream.app()) as up, Gw({"model_list": [deployment(up.url)]}) as gw:
        _, secret = gw.key(budget=str(cost(HI_TOKENS, 20)), period="daily")
        codes = [gw.chat(secret, max_tokens=20).status_code for _ in range(3)]
        assert codes == [200, 429, 429]
        refusals = _values(_scrape(gw), "llmbudget_gateway_refusals_total")
        assert refusals == {(("reason", "budget"), ("scope_kind", "key")): 2.0}


def test_the_refusal_reason_follows_the_budgets_unit() -> None:
    from prometheus_client import CollectorRegistry

    from llmbudget.gateway.metrics import GatewayMetrics

    m = GatewayMetrics(CollectorRegistry())
    one = (Decimal(1), Decimal(1), Decimal(0), Decimal(1))
    m.refused(BudgetExceededError("gw-team:eng", *one))
    for unit in ("requests", "tokens", "concurrent"):
        m.refused(BudgetExceededError("gw-key:k", *one, unit=unit))  # type: ignore[arg-type]
    text = generate_latest(m.registry).decode()
    assert _values(text, "llmbudget_gateway_refusals_total") == {
        (("reason", "budget"), ("scope_kind", "team")): 1.0,
        (("reason", "rate_limit"), ("scope_kind", "key")): 3.0,
    }


@pytest.mark.parametrize(
    ("scope", "kind"),
    [("gw-key:k", "key"), ("gw-end-user:bob", "end_user"), ("gw-global", "global"),
     ("gw-org-model:acme:m", "org_model"), ("gw-deployment:d1", "deployment"),
     ("user:proj:ann", "other")],
)  # fmt: skip
def test_scope_kinds_are_bounded(scope: str, kind: str) -> None:
    assert scope_kind(scope) == kind


def test_upstream_errors_and_timeouts_per_deployment() -> None:
    failing = FakeUpstream(name="failing", fail_status=500)
    slow = FakeUpstream(name="slow", delay=1.5)
    with ServerThread(failing.app()) as bad, ServerThread(slow.app()) as late:
        config = {
            "model_list": [
                deployment(bad.url, name="a", id_="bad"),
                deployment(late.url, name="b", id_="late", timeout=0.3),
            ],
            "router_settings": {"num_retries": 0},
        }
        with Gw(config) as gw:
            key_id, secret = gw.key()
            assert gw.chat(secret, model="a", max_tokens=20).status_code == 500
            assert gw.chat(secret, model="b", max_tokens=20).status_code == 504
            status = gw.settled(f"gw-key:{key_id}")
            text = _scrape(gw)
            errors = _values(text, "llmbudget_gateway_upstream_errors_total")
            assert errors == {
                (("deployment", "bad"), ("reason", "500")): 1.0,
                (("deployment", "late"), ("reason", "timeout")): 1.0,
            }
            # The 500 answered (its latency counts); the timeout never did.
            latency = _values(text, "llmbudget_gateway_upstream_duration_seconds_count")
            assert latency == {(("deployment", "bad"),): 1.0}
            # The timed-out call may have been billed: its whole hold is the spend.
            spend = _values(text, "llmbudget_gateway_spend_dollars_total")
            assert _money(sum(spend.values())) == status.spent == cost(HI_TOKENS, 20)


def test_the_servers_metrics_include_its_gateways_and_two_servers_do_not_clash() -> None:
    upstream = FakeUpstream(reply_tokens=20)
    admin = "sk-admin-metrics-0123456789"
    with ServerThread(upstream.app()) as up:
        config = ServerConfig(admin_key=admin, gateway={"model_list": [deployment(up.url)]})
        first = create_app(config, store=MemoryStore())
        second = create_app(config, store=MemoryStore())
        headers = {"Authorization": f"Bearer {admin}"}
        with live_server(first) as one, live_server(second) as two:
            created = httpx.post(f"{one}/v1/keys", json={"user": "ann"}, headers=headers)
            secret = created.json()["key"]
            sdk = openai.OpenAI(api_key=secret, base_url=f"{one}/v1", max_retries=0)
            sdk.chat.completions.create(model="m", messages=HI, max_tokens=20)  # type: ignore[arg-type]

            def spend(url: str) -> float:
                text = _settled(lambda: httpx.get(f"{url}/metrics", headers=headers).text)
                return sum(_values(text, "llmbudget_gateway_spend_dollars_total").values())

            assert _money(spend(one)) == cost(HI_TOKENS, 20)
            assert spend(two) == 0


def test_the_standalone_gateway_serves_its_metrics_to_the_master_key() -> None:
    from tests.gateway_fakes import MASTER

    upstream = FakeUpstream(reply_tokens=20)
    with (
        ServerThread(upstream.app()) as up,
        Gw({"model_list": [deployment(up.url, id_="dep-a")]}) as gw,
    ):
        _, key = gw.key(user="alice")
        sdk = openai.OpenAI(api_key=key, base_url=f"{gw.url}/v1", max_retries=0)
        sdk.chat.completions.create(model="m", messages=HI, max_tokens=20)  # type: ignore[arg-type]
        assert gw.http.get("/metrics").status_code == 401
        assert (
            gw.http.get("/metrics", headers={"Authorization": f"Bearer {key}"}).status_code == 401
        )

        def scrape() -> str:
            answer = gw.http.get("/metrics", headers={"Authorization": f"Bearer {MASTER}"})
            assert answer.status_code == 200, answer.text
            return answer.text

        text = _settled(scrape)
        spend = _values(text, "llmbudget_gateway_spend_dollars_total")
        assert _money(spend[(("model", "m"),)]) == cost(HI_TOKENS, 20)
