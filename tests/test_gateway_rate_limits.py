"""Rate limits enforced by the gateway: requests and tokens per minute or day, and calls in
flight, per key, user, team, org, end user, model and deployment, in the same atomic
reserve as the budgets; refused with 429 ``rate_limit_exceeded`` and OpenAI's
``x-ratelimit-*`` headers. The race tests run on every store (the ``store`` fixture).

The clock is frozen at 2026-03-15 12:00:00 UTC, on a minute boundary: the minute's
window resets 60 seconds later.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from llmbudget.budgets import Budget
from llmbudget.clock import FrozenClock
from llmbudget.errors import InvalidInputError
from llmbudget.gateway.budgets import ScopePlanner
from llmbudget.gateway.config import GatewayConfig
from llmbudget.stores.base import Store
from llmbudget.units import Unit
from tests.fakes import FakeLLMServer
from tests.gateway_fakes import HI, HI_TOKENS, FakeUpstream, Gw, ServerThread, deployment

MINUTE = "1m"
MESSAGES: Any = HI  # the SDKs type their message params


def used(gw: Gw, scope: str, unit: Unit, period: str | None = MINUTE) -> tuple[int, int]:
    """(spent, held) of a rate limit's scope, in its unit."""
    status = gw.ledger.status(Budget.of(scope, None, period, unit=unit))
    return int(status.spent), int(status.held)


def settled(
    gw: Gw, scope: str, unit: Unit, period: str | None = MINUTE, timeout: float = 10.0
) -> tuple[int, int]:
    """(spent, held) once no hold is left on ``scope`` (settles run after the response)."""
    deadline = time.monotonic() + timeout
    while True:
        spent, held = used(gw, scope, unit, period)
        if held == 0 or time.monotonic() > deadline:
            return spent, held
        time.sleep(0.01)


@pytest.fixture
def upstream() -> Iterator[tuple[FakeUpstream, str]]:
    fake = FakeUpstream()
    with ServerThread(fake.app()) as server:
        yield fake, server.url


def gateway(url: str, store: Store | None, clock: FrozenClock | None, **config: Any) -> Gw:
    config.setdefault("model_list", [deployment(url)])
    return Gw(config, store=store, clock=clock)


def client(gw: Gw, secret: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key=secret, max_retries=0)


async def chat_many(gw: Gw, secret: str, n: int, **body: Any) -> list[Any]:
    """``n`` chat calls at once with the openai SDK: completions or the errors raised."""
    async with client(gw, secret) as sdk:
        calls = (
            sdk.chat.completions.create(model=body.pop("model", "m"), messages=MESSAGES, **body)
            for _ in range(n)
        )
        return await asyncio.gather(*calls, return_exceptions=True)


# -- requests per minute -----------------------------------------------------------------------


def test_64_concurrent_requests_on_rpm_10_forward_exactly_10_and_refuse_54_with_headers(
    store: Store, clock: FrozenClock, upstream: tuple[FakeUpstream, str]
) -> None:
    fake, url = upstream
    with gateway(url, store, clock) as gw:
        key_id, secret = gw.key(rpm_limit=10, budget=5)
        results = asyncio.run(chat_many(gw, secret, 64, max_tokens=20))
        ok = [r for r in results if isinstance(r, openai.types.chat.ChatCompletion)]
        refused = [r for r in results if isinstance(r, openai.RateLimitError)]
        assert (len(ok), len(refused)) == (10, 54), [r for r in results if r not in ok]
        assert fake.count == 10  # a refused request is never sent upstream
        for error in refused:
            headers = error.response.headers
            assert headers["x-ratelimit-limit-requests"] == "10"
            assert headers["x-ratelimit-remaining-requests"] == "0"
            assert headers["x-ratelimit-reset-requests"] == "1m0s"
            assert headers["retry-after"] == "60"
            body = error.body
            assert isinstance(body, dict)
            assert (body["type"], body["code"], body["unit"]) == (
                "rate_limit_exceeded", "rate_limit_exceeded", "requests")  # fmt: skip
            assert body["scope"] == f"gw-key-rpm:{key_id}"
            message = body["message"]
            assert message.startswith(f"rate limit exceeded for key {key_id} ")
            assert "10 requests per minute" in message and "$" not in message
            assert "resets at 2026-03-15T12:01:00+00:00" in message
        assert settled(gw, f"gw-key-rpm:{key_id}", "requests") == (10, 0)
        # The key's own view shows the limit's use, in its unit.
        view = gw.admin("GET", f"/v1/keys/{key_id}")
        assert view["spend"][f"gw-key-rpm:{key_id}"]["spent"] == "10"
        assert view["rpm_limit"] == 10
        # The refusals are logged with their unit, and charged nothing.
        refusals = [e for e in gw.logs(limit=100) if e["status"] == "budget_exceeded"]
        assert len(refusals) == 54
        assert {e["refused_unit"] for e in refusals} == {"requests"}

        clock.advance(59)  # still the same window
        assert gw.chat(secret).status_code == 429
        clock.advance(1)  # 12:01:00: a new minute, a new window
        answer = gw.chat(secret)
        assert answer.status_code == 200, answer.text
        assert fake.count == 11


# -- tokens --------------------------------------------------------------------------------------


def test_a_tpm_limit_covering_5_worst_cases_settles_at_most_the_limit(
    store: Store, clock: FrozenClock, upstream: tuple[FakeUpstream, str]
) -> None:
    fake, url = upstream
    fake.reply_tokens = 60
    worst = HI_TOKENS + 100  # the prompt and the requested cap
    limit = 5 * worst + 50
    with gateway(url, store, clock) as gw:
        key_id, secret = gw.key(tpm_limit=limit)
        results = asyncio.run(chat_many(gw, secret, 24, max_tokens=100))
        ok = [r for r in results if isinstance(r, openai.types.chat.ChatCompletion)]
        refused = [r for r in results if isinstance(r, openai.RateLimitError)]
        assert len(ok) + len(refused) == 24 and len(ok) >= 5
        assert fake.count == len(ok)
        spent, held = settled(gw, f"gw-key-tpm:{key_id}", "tokens")
        # Settled with the real usage (input + output), not the worst case reserved.
        real = sum(r.usage.prompt_tokens + r.usage.completion_tokens for r in ok if r.usage)
        assert (spent, held) == (real, 0)
        assert spent <= limit
        for error in refused:
            headers = error.response.headers
            assert headers["x-ratelimit-limit-tokens"] == str(limit)
            assert int(headers["x-ratelimit-remaining-tokens"]) < worst
            assert "x-should-retry" not in headers  # waiting for the window does help
            assert "tokens per minute" in error.message and "$" not in error.message


def test_tokens_per_day_settle_the_real_usage_of_every_api() -> None:
    """Chat, Responses, Messages (translated and native), completions and embeddings,
    streamed and not: the day's tokens are what each response reported."""
    with FakeLLMServer() as fake:
        cfg = {
            "model_list": [
                {"model_name": "gpt", "litellm_params": {"model": "openai/gpt-4o-mini",
                                                         "api_base": fake.openai_url}},
                {"model_name": "emb", "litellm_params": {"model": "openai/text-embedding-3-small",
                                                         "api_base": fake.openai_url}},
                {"model_name": "claude", "litellm_params": {
                    "model": "anthropic/claude-3-5-haiku-latest", "api_base": fake.anthropic_url,
                    "api_key": "sk-ant-upstream"}},
            ]
        }  # fmt: skip
        with Gw(cfg) as gw:
            key_id, secret = gw.key(tpd_limit=1_000_000)
            scope = f"gw-key-tpd:{key_id}"
            sdk = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=secret, max_retries=0)
            claude = anthropic.Anthropic(base_url=gw.url, api_key=secret, max_retries=0)
            expected = 0

            def check(tokens: int) -> None:
                nonlocal expected
                assert tokens > 0
                expected += tokens
                assert settled(gw, scope, "tokens", "1d") == (expected, 0)

            chat = sdk.chat.completions.create(model="gpt", messages=MESSAGES)
            assert chat.usage is not None
            check(chat.usage.total_tokens)
            stream = sdk.chat.completions.create(
                model="gpt", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
            )
            usage = [c.usage for c in stream if c.usage is not None][-1]
            check(usage.prompt_tokens + usage.completion_tokens)
            response = sdk.responses.create(model="gpt", input="hi")
            assert response.usage is not None
            check(response.usage.input_tokens + response.usage.output_tokens)
            with sdk.responses.stream(model="gpt", input="hi") as events:
                final = events.get_final_response()
            assert final.usage is not None
            check(final.usage.input_tokens + final.usage.output_tokens)
            legacy = sdk.completions.create(model="gpt", prompt="hi", max_tokens=20)
            assert legacy.usage is not None
            check(legacy.usage.prompt_tokens + legacy.usage.completion_tokens)
            vectors = sdk.embeddings.create(model="emb", input="hello world")
            check(vectors.usage.prompt_tokens)
            for model in ("claude", "gpt"):  # native Anthropic, and translated to chat
                message = claude.messages.create(model=model, max_tokens=50, messages=MESSAGES)
                check(message.usage.input_tokens + message.usage.output_tokens)
                with claude.messages.stream(model=model, max_tokens=50, messages=MESSAGES) as s:
                    streamed = s.get_final_message()
                check(streamed.usage.input_tokens + streamed.usage.output_tokens)


# -- calls in flight -------------------------------------------------------------------------------


def test_max_parallel_requests_3_never_has_more_than_3_in_flight_upstream(
    store: Store, clock: FrozenClock, upstream: tuple[FakeUpstream, str]
) -> None:
    fake, url = upstream
    fake.delay = 1.0  # slow: every call is still in flight while the others arrive
    with gateway(url, store, clock) as gw:
        key_id, secret = gw.key(max_parallel_requests=3)
        results = asyncio.run(chat_many(gw, secret, 12))
        ok = [r for r in results if isinstance(r, openai.types.chat.ChatCompletion)]
        refused = [r for r in results if isinstance(r, openai.RateLimitError)]
        assert len(ok) + len(refused) == 12 and len(ok) >= 3
        assert 1 <= fake.max_in_flight <= 3
        assert fake.count == len(ok)
        for error in refused:
            assert error.response.headers["retry-after"] == "1"
            assert error.response.headers["x-ratelimit-limit-concurrent"] == "3"
            assert "x-ratelimit-reset-concurrent" not in error.response.headers
            assert "3 requests at once, 3 in flight" in error.message
        # Every slot is free once the calls have ended: a later call goes through.
        assert settled(gw, f"gw-key-parallel:{key_id}", "concurrent", None) == (0, 0)
        fake.delay = 0
        assert gw.chat(secret).status_code == 200
        assert settled(gw, f"gw-key-parallel:{key_id}", "concurrent", None) == (0, 0)


def test_a_stream_holds_its_slot_until_it_ends(
    store: Store, clock: FrozenClock, upstream: tuple[FakeUpstream, str]
) -> None:
    fake, url = upstream
    fake.gate = threading.Event()  # the stream stops after its first event until set
    with gateway(url, store, clock) as gw:
        key_id, secret = gw.key(max_parallel_requests=1)
        scope = f"gw-key-parallel:{key_id}"
        body = {"model": "m", "messages": HI, "stream": True}
        auth = {"authorization": f"Bearer {secret}"}
        with gw.http.stream("POST", "/v1/chat/completions", json=body, headers=auth) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            assert next(lines).startswith("data: ")  # the stream has begun
            assert used(gw, scope, "concurrent", None) == (0, 1)
            second = gw.chat(secret)
            assert second.status_code == 429
            assert second.json()["error"]["code"] == "rate_limit_exceeded"
            assert fake.count == 1
            fake.gate.set()
            rest = list(lines)
        assert "data: [DONE]" in rest
        assert settled(gw, scope, "concurrent", None) == (0, 0)
        assert gw.chat(secret).status_code == 200
        assert fake.count == 2


# -- every owner of a limit ----------------------------------------------------------------------

OWNERS: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {
    # kind: (config, request fields, the label the refusal names)
    "user": ({"users": {"alice": {"rpm_limit": 2}}}, {}, "user alice"),
    "team": ({"users": {"alice": {"team": "ml"}}, "teams": {"ml": {"rpm_limit": 2}}}, {},
             "team ml"),
    "org": ({"users": {"alice": {"team": "ml"}}, "teams": {"ml": {"org": "acme"}},
             "orgs": {"acme": {"rpm_limit": 2}}}, {}, "org acme"),
    "end-user": ({"end_users": {"bob": {"rpm_limit": 2}}}, {"user": "bob"}, "end user bob"),
    "default-end-user": ({"budgets": {"end_user": {"rpm_limit": 2}}}, {"user": "carol"},
                         "end user carol"),
    "model": ({"budgets": {"models": {"m": {"rpm_limit": 2}}}}, {}, "model m"),
}  # fmt: skip


@pytest.mark.parametrize("owner", sorted(OWNERS))
def test_user_team_org_end_user_and_model_limits_bind(
    owner: str, clock: FrozenClock, upstream: tuple[FakeUpstream, str]
) -> None:
    fake, url = upstream
    config, fields, label = OWNERS[owner]
    with gateway(url, None, clock, **config) as gw:
        _, secret = gw.key()
        _, other = gw.key()  # another key of the same owner shares the limit
        assert gw.chat(secret, **fields).status_code == 200
        assert gw.chat(other, **fields).status_code == 200
        refused = gw.chat(secret, **fields)
        assert refused.status_code == 429
        error = refused.json()["error"]
        assert error["code"] == "rate_limit_exceeded"
        assert error["message"].startswith(f"rate limit exceeded for {label} (")
        assert refused.headers["x-ratelimit-limit-requests"] == "2"
        assert fake.count == 2
        if owner.endswith("end-user"):
            # Another end user has a window of its own.
            assert gw.chat(secret, user="dave").status_code == 200


def test_a_deployment_tpm_refusal_routes_to_another_deployment(
    clock: FrozenClock, upstream: tuple[FakeUpstream, str]
) -> None:
    fake, url = upstream
    deployments = [deployment(url, id_="small", tpm=50), deployment(url, id_="big")]
    with gateway(url, None, clock, model_list=deployments) as gw:
        _, secret = gw.key()
        answers = [gw.chat(secret, max_tokens=100) for _ in range(6)]
        assert [a.status_code for a in answers] == [200] * 6
        # "small" can never hold a worst case of 108 tokens: every call went to "big".
        assert {a.headers["x-llmbudget-deployment"] for a in answers} == {"big"}
        assert used(gw, "gw-deployment-tpm:small", "tokens") == (0, 0)
        assert fake.count == 6
    # With "small" alone, the refusal names it.
    one = [deployment(url, id_="small", tpm=50)]
    with gateway(url, None, clock, model_list=one) as gw:
        _, secret = gw.key()
        refused = gw.chat(secret, max_tokens=100)
        assert refused.status_code == 429
        error = refused.json()["error"]
        assert error["scope"] == "gw-deployment-tpm:small"
        assert "deployment small" in error["message"]
        # The request alone is more than the limit: waiting would not help.
        assert refused.headers["x-should-retry"] == "false"
        assert fake.count == 6


def test_a_model_rate_limit_refusal_falls_back_to_another_model(
    clock: FrozenClock, upstream: tuple[FakeUpstream, str]
) -> None:
    fake, url = upstream
    config = {
        "model_list": [deployment(url, "m", id_="m-dep"), deployment(url, "m2", id_="m2-dep")],
        "budgets": {"models": {"m": {"rpm_limit": 1}}},
        "router_settings": {"fallbacks": [{"m": ["m2"]}]},
    }
    with gateway(url, None, clock, **config) as gw:
        _, secret = gw.key()
        first, second = gw.chat(secret), gw.chat(secret)
        assert (first.status_code, second.status_code) == (200, 200)
        assert first.headers["x-llmbudget-deployment"] == "m-dep"
        assert second.headers["x-llmbudget-deployment"] == "m2-dep"
        # A general limit (the key's) refuses outright: no fallback can help.
    with gateway(url, None, clock, **config) as gw:
        _, secret = gw.key(rpm_limit=1)
        assert gw.chat(secret).status_code == 200
        refused = gw.chat(secret)
        assert refused.status_code == 429 and fake.count == 3


def test_anthropic_routes_refuse_in_anthropic_shape_with_the_headers(
    clock: FrozenClock, upstream: tuple[FakeUpstream, str]
) -> None:
    fake, url = upstream
    with gateway(url, None, clock) as gw:
        _, secret = gw.key(rpm_limit=1)
        sdk = anthropic.Anthropic(base_url=gw.url, api_key=secret, max_retries=0)
        sdk.messages.create(model="m", max_tokens=20, messages=MESSAGES)
        with pytest.raises(anthropic.RateLimitError) as refused:
            sdk.messages.create(model="m", max_tokens=20, messages=MESSAGES)
        body = refused.value.body
        assert isinstance(body, dict)
        assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
        assert "1 requests per minute" in body["error"]["message"]
        headers = refused.value.response.headers
        assert headers["x-ratelimit-remaining-requests"] == "0"
        assert headers["retry-after"] == "60"
        assert fake.count == 1


def test_a_dollar_budget_keeps_its_code_and_dollars(
    clock: FrozenClock, upstream: tuple[FakeUpstream, str]
) -> None:
    _, url = upstream
    with gateway(url, None, clock) as gw:
        _, secret = gw.key(budget="0.000001", rpm_limit=100)
        refused = gw.chat(secret, max_tokens=100)
        assert refused.status_code == 429
        error = refused.json()["error"]
        assert (error["code"], error["unit"]) == ("budget_exceeded", "usd")
        assert "limit $0.000001" in error["message"]
        assert refused.headers["x-should-retry"] == "false"
        assert not any(h.startswith("x-ratelimit") for h in refused.headers)


# -- config ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"end_users": {"bob": {"rpm_limt": 1}}}, "end_users.bob.rpm_limt: unknown key; did you mean 'rpm_limit'?"),
        ({"budgets": {"end_user": {"tpm_limit": 0}}}, "budgets.end_user.tpm_limit"),
        ({"budgets": {"models": {"m": {"max_parallel_requests": 1.5}}}}, "budgets.models.m.max_parallel_requests"),
        ({"budgets": {"models": {"mm": {"rpm_limit": 5}}}}, "budgets.models.mm: no deployment serves a model named 'mm'"),
        ({"model_list": [{"model_name": "m", "model": "gpt-4o", "tpm": "many"}]}, "model_list[0].tpm"),
    ],
)  # fmt: skip
def test_rate_limits_in_the_config_are_strictly_checked(raw: dict[str, Any], message: str) -> None:
    raw.setdefault("model_list", [{"model_name": "m", "model": "gpt-4o"}])
    with pytest.raises(InvalidInputError) as refused:
        GatewayConfig.from_mapping(raw)
    assert message in str(refused.value)


def test_config_rate_limits_are_read() -> None:
    cfg = GatewayConfig.from_mapping(
        {
            "model_list": [{"model_name": "m", "model": "gpt-4o", "tpm": 9000}],
            "budgets": {"end_user": {"budget": 1, "rpm_limit": 5},
                        "models": {"m": {"tpd_limit": 7}}},
            "end_users": {"bob": {"max_parallel_requests": 2}},
        }
    )  # fmt: skip
    assert cfg.deployments[0].limits.tpm_limit == 9000
    assert cfg.end_user_limits.rpm_limit == 5 and cfg.end_user_budget is not None
    assert cfg.end_users_limits["bob"].max_parallel_requests == 2
    assert "bob" not in cfg.end_users  # no dollars of its own: budgets.end_user's apply
    assert cfg.model_limits["m"].tpd_limit == 7 and "m" not in cfg.model_budgets
    # The budget server lists every budget the config defines, rate limits in their units.
    defined = {b.scope: (b.unit, b.limit) for b in ScopePlanner(cfg).definitions()}
    assert defined["gw-deployment-tpm:m-0"] == ("tokens", 9000)
    assert defined["gw-end-user-parallel:bob"] == ("concurrent", 2)
    assert defined["gw-model-tpd:m"] == ("tokens", 7)
