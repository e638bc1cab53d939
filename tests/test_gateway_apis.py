"""The gateway's agent APIs with the official SDKs: Responses, Messages, legacy completions,
and Claude natively (an ``anthropic/<model>`` deployment), both ways.

Every call is charged exactly the usage the fake upstream reports; a refusal sends nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import httpx
import openai
import pytest

from llmbudget.metering import affordable_cap, describe
from llmbudget.pricing import PriceBook, TokenUsage
from tests.fakes import FakeLLMServer
from tests.gateway_fakes import Gw

GPT = "gpt-4o-mini"
CLAUDE = "claude-3-5-haiku-latest"
HI: Any = [{"role": "user", "content": "hi"}]
WORDS = 5  # "Hello from the fake server"


@pytest.fixture
def fake() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as server:
        server.prompt_tokens = 12
        yield server


def config(fake: FakeLLMServer, **general: Any) -> dict[str, Any]:
    return {
        "model_list": [
            {"model_name": "gpt", "litellm_params": {"model": f"openai/{GPT}",
                                                     "api_base": fake.openai_url}},
            {"model_name": "claude", "litellm_params": {"model": f"anthropic/{CLAUDE}",
                                                        "api_base": fake.anthropic_url,
                                                        "api_key": "sk-ant-upstream"}},
        ],
        "general_settings": general,
    }  # fmt: skip


def cost(model: str, **usage: int) -> Decimal:
    return PriceBook.default().lookup(model).cost(TokenUsage(**usage))


GPT_CALL = cost(GPT, input_tokens=12, output_tokens=WORDS)
CLAUDE_CALL = cost(f"anthropic/{CLAUDE}", input_tokens=12, output_tokens=WORDS)


def spent(gw: Gw, key_id: str) -> tuple[Decimal, Decimal]:
    status = gw.settled(f"gw-key:{key_id}")
    return status.spent, status.held


# --------------------------------------------------------------------------- Responses


def test_responses_plain_and_streaming(fake: FakeLLMServer) -> None:
    with Gw(config(fake)) as gw:
        key_id, secret = gw.key(budget=1)
        client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=secret, max_retries=0)
        response = client.responses.create(model="gpt", input="hi", max_output_tokens=50)
        assert response.output_text == "Hello from the fake server"
        with client.responses.stream(model="gpt", input="hi") as stream:
            assert stream.get_final_response().output_text == "Hello from the fake server"
        assert spent(gw, key_id) == (2 * GPT_CALL, 0)
        assert fake.count("/v1/responses") == 2
        entries = gw.logs()
        assert {e["endpoint"] for e in entries} == {"responses"}
        assert all(e["usage_source"] == "upstream" for e in entries)


def test_responses_output_cap_is_what_the_budget_pays_for(fake: FakeLLMServer) -> None:
    with Gw(config(fake)) as gw:
        _, secret = gw.key(budget="0.0001")
        client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=secret, max_retries=0)
        client.responses.create(model="gpt", input="hi")
        cap = fake.last("/v1/responses").body["max_output_tokens"]
        call = describe("responses", {"model": GPT, "input": "hi"})
        assert cap == affordable_cap(PriceBook.default().lookup(GPT), call, Decimal("0.0001"))
        assert 0 < cap < 4096


def test_responses_features_that_cannot_be_budgeted_are_refused(fake: FakeLLMServer) -> None:
    with Gw(config(fake)) as gw:
        _, secret = gw.key(budget=1)
        client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=secret, max_retries=0)
        with pytest.raises(openai.BadRequestError, match="background"):
            client.responses.create(model="gpt", input="hi", background=True)
        with pytest.raises(openai.BadRequestError, match="speaks"):
            client.responses.create(model="claude", input="hi")
    assert fake.count() == 0


def test_a_refusal_sends_nothing_on_every_api(fake: FakeLLMServer) -> None:
    with Gw(config(fake)) as gw:
        _, secret = gw.key(budget="0.000001")
        oai = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=secret, max_retries=0)
        claude = anthropic.Anthropic(base_url=gw.url, api_key=secret, max_retries=0)
        with pytest.raises(openai.RateLimitError):
            oai.responses.create(model="gpt", input="hi")
        with pytest.raises(openai.RateLimitError):
            oai.completions.create(model="gpt", prompt="hi", max_tokens=5)
        with pytest.raises(anthropic.RateLimitError) as refused:
            claude.messages.create(model="claude", max_tokens=50, messages=HI)
        assert refused.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert fake.count() == 0


def test_legacy_completions(fake: FakeLLMServer) -> None:
    with Gw(config(fake)) as gw:
        key_id, secret = gw.key(budget=1)
        client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=secret, max_retries=0)
        completion = client.completions.create(model="gpt", prompt="hi", max_tokens=50)
        assert completion.choices[0].text
        usage = completion.usage
        assert usage is not None
        expected = cost(
            GPT, input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens
        )
        assert spent(gw, key_id) == (expected, 0)


# --------------------------------------------------------------------------- Messages


@pytest.mark.parametrize("model", ["claude", "gpt"])
def test_messages_create_and_stream(fake: FakeLLMServer, model: str) -> None:
    """To a native Anthropic deployment, and to an OpenAI-compatible one (translated)."""
    fake.cache_read_tokens = 100
    if model == "gpt":
        fake.prompt_tokens = 112  # OpenAI's prompt_tokens include the cached ones
    with Gw(config(fake)) as gw:
        key_id, secret = gw.key(budget=1)
        client = anthropic.Anthropic(base_url=gw.url, api_key=secret, max_retries=0)
        message = client.messages.create(model=model, max_tokens=100, messages=HI)
        assert message.content[0].text == "Hello from the fake server"  # type: ignore[union-attr]
        assert message.stop_reason == "end_turn"
        with client.messages.stream(model=model, max_tokens=100, messages=HI) as stream:
            assert stream.get_final_text() == "Hello from the fake server"
            final = stream.get_final_message()
        assert final.usage.output_tokens == WORDS
        if model == "claude":
            # Anthropic's input_tokens exclude cache reads, which are priced apart.
            one = cost(f"anthropic/{CLAUDE}", input_tokens=112, cache_read_tokens=100,
                       output_tokens=WORDS)  # fmt: skip
            assert message.usage.cache_read_input_tokens == 100
            assert fake.count("/v1/messages") == 2
        else:
            one = cost(GPT, input_tokens=112, cache_read_tokens=100, output_tokens=WORDS)
            # Translated back: Anthropic's input_tokens without the cache reads.
            assert (message.usage.input_tokens, message.usage.cache_read_input_tokens) == (12, 100)
            assert fake.count("/v1/chat/completions") == 2
        assert spent(gw, key_id) == (2 * one, 0)


def test_messages_accept_x_api_key_and_pass_anthropic_headers(fake: FakeLLMServer) -> None:
    with Gw(config(fake)) as gw:
        _, secret = gw.key(budget=1)
        r = httpx.post(
            f"{gw.url}/v1/messages",
            json={"model": "claude", "max_tokens": 20, "messages": HI},
            headers={"x-api-key": secret, "anthropic-version": "2023-06-01",
                     "anthropic-beta": "prompt-caching-2024-07-31"},
        )  # fmt: skip
        assert r.status_code == 200, r.text
        sent = fake.last("/v1/messages")
        assert sent.headers["x-api-key"] == "sk-ant-upstream"  # the deployment's key, not ours
        assert sent.headers["anthropic-beta"] == "prompt-caching-2024-07-31"
        assert sent.headers["anthropic-version"] == "2023-06-01"
        assert "authorization" not in {k.lower() for k in sent.headers}


def test_messages_errors_are_in_anthropics_shape(fake: FakeLLMServer) -> None:
    with Gw(config(fake)) as gw:
        _, secret = gw.key(budget=1)
        r = httpx.post(f"{gw.url}/v1/messages", json={"model": "claude", "messages": "hi"},
                       headers={"x-api-key": secret})  # fmt: skip
        assert r.status_code == 400
        body = r.json()
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
        r = httpx.post(f"{gw.url}/v1/messages", json={"model": "claude", "messages": HI,
                       "max_tokens": 5}, headers={"x-api-key": "sk-llmb-wrong"})  # fmt: skip
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        fake.fail_next(400, {"error": {"message": "bad thing", "type": "invalid_request_error"}})
        client = anthropic.Anthropic(base_url=gw.url, api_key=secret, max_retries=0)
        with pytest.raises(anthropic.BadRequestError, match="bad thing"):
            client.messages.create(model="gpt", max_tokens=20, messages=HI)  # translated


def test_count_tokens_is_answered_offline(fake: FakeLLMServer) -> None:
    with Gw(config(fake)) as gw:
        _, secret = gw.key(budget=1)
        client = anthropic.Anthropic(base_url=gw.url, api_key=secret, max_retries=0)
        counted = client.messages.count_tokens(model="claude", messages=HI)
        assert counted.input_tokens > 0
    assert fake.count() == 0


# --------------------------------------------------------------------------- chat to Claude


def test_chat_completions_to_a_native_anthropic_deployment(fake: FakeLLMServer) -> None:
    with Gw(config(fake)) as gw:
        key_id, secret = gw.key(budget=1)
        client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=secret, max_retries=0)
        chat = client.chat.completions.create(
            model="claude", messages=[{"role": "system", "content": "Be brief."}, *HI]
        )
        assert chat.choices[0].message.content == "Hello from the fake server"
        assert chat.choices[0].finish_reason == "stop"
        sent = fake.last("/v1/messages").body
        assert sent["system"] == "Be brief." and sent["max_tokens"] > 0
        stream = client.chat.completions.create(model="claude", messages=HI, stream=True)
        chunks = list(stream)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
            "Hello from the fake server"
        )
        assert all(c.choices for c in chunks)  # no usage chunk unless asked for
        assert spent(gw, key_id) == (2 * CLAUDE_CALL, 0)


# --------------------------------------------------------------------------- races


@pytest.mark.parametrize("api", ["responses", "messages"])
def test_64_streams_never_pass_a_key_budget(fake: FakeLLMServer, api: str) -> None:
    fake.fill = True  # every call uses its whole cap: exactly its reservation
    with Gw(config(fake)) as gw:
        one = (
            cost(GPT, input_tokens=12, output_tokens=40)
            if api == "responses"
            else cost(f"anthropic/{CLAUDE}", input_tokens=12, output_tokens=40)
        )
        budget = one * 10 + one / 2  # room for 10 calls, not 11
        key_id, secret = gw.key(budget=str(budget))

        async def one_call(client: httpx.AsyncClient) -> int:
            if api == "responses":
                body = {"model": "gpt", "input": "hi", "stream": True, "max_output_tokens": 40}
                path = "/v1/responses"
            else:
                body = {"model": "claude", "messages": HI, "stream": True, "max_tokens": 40}
                path = "/v1/messages"
            async with client.stream("POST", path, json=body,
                                     headers={"authorization": f"Bearer {secret}"}) as r:  # fmt: skip
                async for _ in r.aiter_bytes():
                    pass
                return r.status_code

        async def main() -> list[int]:
            async with httpx.AsyncClient(base_url=gw.url, timeout=60) as client:
                return await asyncio.gather(*(one_call(client) for _ in range(64)))

        statuses = asyncio.run(main())
        allowed = statuses.count(200)
        assert allowed == 10 and statuses.count(429) == 54
        total, held = spent(gw, key_id)
        assert held == 0 and total == one * allowed <= budget
        path = "/v1/responses" if api == "responses" else "/v1/messages"
        assert fake.count(path) == allowed


# --------------------------------------------------------------------------- budget-aware routing


def test_a_budget_that_cannot_pay_degrades_to_a_cheaper_model(fake: FakeLLMServer) -> None:
    cfg = config(fake)
    cfg["model_list"].append(
        {
            "model_name": "big",
            "litellm_params": {"model": "openai/gpt-4o", "api_base": fake.openai_url},
        }
    )
    cfg["router_settings"] = {"budget_fallbacks": [{"big": ["gpt"]}]}
    with Gw(cfg) as gw:
        # Enough for gpt-4o-mini's worst case at 200 output tokens, not for gpt-4o's.
        big = cost("gpt-4o", input_tokens=8, output_tokens=200)
        small = cost(GPT, input_tokens=8, output_tokens=200)
        assert small < big
        key_id, secret = gw.key(budget=str((small + big) / 2))
        body = {"model": "big", "messages": HI, "max_tokens": 200}
        r = gw.http.post("/v1/chat/completions", json=body,
                         headers={"authorization": f"Bearer {secret}"})  # fmt: skip
        assert r.status_code == 200, r.text
        assert r.headers["x-llmbudget-downgraded-from"] == "big"
        assert fake.last("/v1/chat/completions").body["model"] == GPT
        [entry] = gw.logs()
        assert entry["downgraded_from"] == "big" and entry["model"] == "gpt"
        assert spent(gw, key_id) == (GPT_CALL, 0)
        # Without a cheaper model to fall back on, the same request is refused.
        del cfg["router_settings"]
    with Gw(cfg) as gw:
        _, secret = gw.key(budget=str((small + big) / 2))
        r = gw.http.post("/v1/chat/completions", json=body,
                         headers={"authorization": f"Bearer {secret}"})  # fmt: skip
        assert r.status_code == 429
    assert fake.count("/v1/chat/completions") == 1
