"""Load balancing: weights, retries, cooldowns, fallbacks, exhausted deployment budgets."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator

import pytest

from llmbudget.clock import FrozenClock
from llmbudget.gateway.config import GatewayConfig
from llmbudget.gateway.router import Router
from tests.gateway_fakes import HI_TOKENS, FakeUpstream, Gw, ServerThread, cost, deployment


@pytest.fixture
def two() -> Iterator[tuple[FakeUpstream, str, FakeUpstream, str]]:
    a, b = FakeUpstream(name="a"), FakeUpstream(name="b")
    with ServerThread(a.app()) as sa, ServerThread(b.app()) as sb:
        yield a, sa.url, b, sb.url


def _router(strategy: str, weights: dict[str, float], rng: random.Random | None = None) -> Router:
    cfg = GatewayConfig.from_mapping(
        {
            "router_settings": {"routing_strategy": strategy},
            "model_list": [
                deployment("http://127.0.0.1:9", "m", name, weight=w) for name, w in weights.items()
            ],
        }
    )
    return Router(cfg, rng=rng)


def test_weighted_round_robin_is_exact_and_interleaved() -> None:
    router = _router("weighted-round-robin", {"a": 3, "b": 1})
    picks = [router.plan("m")[0][1][0].id for _ in range(400)]
    assert Counter(picks) == {"a": 300, "b": 100}
    assert "bbb" not in "".join(p for p in picks)  # never bursts the light one
    # The rest of each plan is the retry order: the other deployment.
    assert {d.id for d in router.plan("m")[0][1]} == {"a", "b"}


def test_weighted_shuffle_follows_the_weights() -> None:
    router = _router("simple-shuffle", {"a": 4, "b": 1}, rng=random.Random(7))
    picks = Counter(router.plan("m")[0][1][0].id for _ in range(5000))
    assert 0.76 < picks["a"] / 5000 < 0.84


def test_least_busy_prefers_the_idle_deployment() -> None:
    router = _router("least-busy", {"a": 1, "b": 1})
    first = router.plan("m")[0][1][0]
    router.started(first)
    second = router.plan("m")[0][1][0]
    assert second.id != first.id
    router.started(second)
    router.finished(first)
    assert router.plan("m")[0][1][0].id == first.id


def test_requests_spread_over_deployments_by_weight(two) -> None:
    a, url_a, b, url_b = two
    config = {
        "router_settings": {"routing_strategy": "weighted-round-robin"},
        "model_list": [
            deployment(url_a, "m", "a", weight=3),
            deployment(url_b, "m", "b", weight=1),
        ],
    }
    with Gw(config) as gw:
        _, secret = gw.key()
        for _ in range(40):
            assert gw.chat(secret, max_tokens=5).status_code == 200
        assert (a.count, b.count) == (30, 10)
        assert Counter(e["deployment"] for e in gw.logs(limit=100)) == {"a": 30, "b": 10}


@pytest.mark.parametrize("status", [500, 429, 503])
def test_a_failing_deployment_is_retried_elsewhere_and_cooled_down(two, status) -> None:
    a, url_a, b, url_b = two
    a.fail_status = status
    clock = FrozenClock(1_773_576_000.0)
    config = {
        "router_settings": {
            "routing_strategy": "weighted-round-robin",
            "allowed_fails": 1,
            "cooldown_time": 30,
            "num_retries": 1,
        },
        "model_list": [
            deployment(url_a, "m", "a", weight=1),
            deployment(url_b, "m", "b", weight=1),
        ],
    }
    with Gw(config, clock=clock) as gw:
        key_id, secret = gw.key(budget=1)
        for _ in range(6):
            r = gw.chat(secret, max_tokens=50)
            assert r.status_code == 200
            assert r.headers["x-llmbudget-deployment"] == "b"
        assert a.count == 1  # tried once, then cooled down for 30 s
        assert b.count == 6
        status_now = gw.settled(f"gw-key:{key_id}")
        assert status_now.spent == 6 * cost(HI_TOKENS, 20)  # the failed attempt cost nothing
        a.fail_status = None
        clock.advance(31)  # cooldown over: a is back in the rotation
        for _ in range(4):
            assert gw.chat(secret, max_tokens=50).status_code == 200
        assert a.count == 3


def test_when_every_deployment_fails_the_upstream_error_is_returned(two) -> None:
    a, url_a, b, url_b = two
    a.fail_status = b.fail_status = 500
    with Gw({"model_list": [deployment(url_a, "m", "a"), deployment(url_b, "m", "b")]}) as gw:
        key_id, secret = gw.key(budget=1)
        r = gw.chat(secret, max_tokens=50)
        assert r.status_code == 500
        assert a.count == 1 and b.count == 1
        status = gw.status(f"gw-key:{key_id}", 1)
        assert (status.spent, status.held) == (0, 0)
        # Both are now cooling down (allowed_fails 3 not reached: one more try each).


def test_fallback_model_serves_when_the_primary_fails(two) -> None:
    a, url_a, _b, url_b = two
    a.fail_status = 503
    config = {
        "router_settings": {"fallbacks": [{"big": ["small"]}], "num_retries": 0},
        "model_list": [deployment(url_a, "big", "a"), deployment(url_b, "small", "b")],
    }
    with Gw(config) as gw:
        _, secret = gw.key()
        r = gw.chat(secret, model="big", max_tokens=5)
        assert r.status_code == 200
        assert r.headers["x-llmbudget-deployment"] == "b"
        [entry] = gw.logs()
        assert entry["model"] == "small" and entry["requested_model"] == "big"


def test_fallback_model_serves_when_a_model_budget_is_spent(two) -> None:
    a, url_a, b, url_b = two
    config = {
        "router_settings": {"fallbacks": [{"big": ["small"]}]},
        "budgets": {"models": {"big": {"budget": "0.00001", "period": "daily"}}},
        "model_list": [deployment(url_a, "big", "a"), deployment(url_b, "small", "b")],
    }
    with Gw(config) as gw:
        _, secret = gw.key()
        r = gw.chat(secret, model="big", max_tokens=50)
        assert r.status_code == 200
        assert (a.count, b.count) == (0, 1)


def test_fallbacks_the_key_may_not_use_are_not_tried(two) -> None:
    a, url_a, b, url_b = two
    a.fail_status = 503
    config = {
        "router_settings": {"fallbacks": [{"big": ["small"]}], "num_retries": 0},
        "model_list": [deployment(url_a, "big", "a"), deployment(url_b, "small", "b")],
    }
    with Gw(config) as gw:
        _, secret = gw.key(models=["big"])
        assert gw.chat(secret, model="big", max_tokens=5).status_code == 503
        assert b.count == 0


def test_a_deployment_whose_own_budget_is_spent_is_skipped(two) -> None:
    a, url_a, b, url_b = two
    a.reply_tokens = b.reply_tokens = 50  # every call costs exactly its worst case
    one_call = cost(HI_TOKENS, 50)
    config = {
        "router_settings": {"routing_strategy": "weighted-round-robin"},
        "model_list": [
            # Deployment a's provider account can pay for exactly one such call today.
            deployment(url_a, "m", "a", weight=100, budget=str(one_call), period="daily"),
            deployment(url_b, "m", "b", weight=1, budget=str(2 * one_call), period="daily"),
        ],
    }
    with Gw(config) as gw:
        _, secret = gw.key()
        codes = [gw.chat(secret, max_tokens=50).status_code for _ in range(3)]
        # a is picked first every time (weight 100) but after one call it cannot pay for
        # another worst case: the second and third go to b.
        assert codes == [200, 200, 200]
        assert (a.count, b.count) == (1, 2)
        # Both provider accounts are spent: the refusal names a deployment scope.
        r = gw.chat(secret, max_tokens=50)
        assert r.status_code == 429
        assert r.json()["error"]["scope"].startswith("gw-deployment:")
