"""The official openai SDK, pointed at the gateway (uvicorn on 127.0.0.1) with a virtual key."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import openai
import pytest

from tests.gateway_fakes import HI, HI_TOKENS, FakeUpstream, Gw, ServerThread, cost, deployment


@pytest.fixture
def gw() -> Iterator[Gw]:
    upstream = FakeUpstream()
    with (
        ServerThread(upstream.app()) as server,
        Gw({"model_list": [deployment(server.url)]}) as gateway,
    ):
        yield gateway


def client(gw: Gw, secret: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=secret, base_url=f"{gw.url}/v1", max_retries=0)


def test_sdk_chat_stream_and_embeddings(gw: Gw) -> None:
    key_id, secret = gw.key(budget=1, period="daily")
    sdk = client(gw, secret)
    reply = sdk.chat.completions.create(model="m", messages=HI, max_tokens=50)  # type: ignore[arg-type]
    assert reply.choices[0].message.content == " a" * 20
    assert reply.usage is not None and reply.usage.completion_tokens == 20

    chunks = list(
        sdk.chat.completions.create(model="m", messages=HI, max_tokens=50, stream=True)  # type: ignore[arg-type]
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == " a" * 20
    assert all(c.usage is None for c in chunks)  # the gateway's own usage chunk is stripped

    with_usage = list(
        sdk.chat.completions.create(
            model="m",
            messages=HI,  # type: ignore[arg-type]
            max_tokens=50,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert with_usage[-1].usage is not None and with_usage[-1].usage.prompt_tokens == HI_TOKENS

    emb = sdk.embeddings.create(model="m", input=["hello world"])
    assert len(emb.data) == 1 and emb.usage.prompt_tokens == 2

    assert [m.id for m in sdk.models.list()] == ["m"]
    spent = gw.settled(f"gw-key:{key_id}", "daily").spent
    assert spent == 3 * cost(HI_TOKENS, 20) + cost(2, 0)


def test_sdk_gets_a_parseable_budget_error(gw: Gw) -> None:
    key_id, secret = gw.key(budget="0.0001", period="daily")
    sdk = client(gw, secret)
    with pytest.raises(openai.RateLimitError) as info:
        sdk.chat.completions.create(model="m", messages=HI, max_tokens=100)  # type: ignore[arg-type]
    body = info.value.body
    assert isinstance(body, dict)
    error = body.get("error", body)  # SDK versions differ on whether .body is the inner dict
    assert error["type"] == "budget_exceeded"
    assert error["scope"] == f"gw-key:{key_id}"
    assert Decimal(error["limit"]) == Decimal("0.0001")
    assert int(info.value.response.headers["retry-after"]) > 0

    with pytest.raises(openai.RateLimitError):
        list(sdk.chat.completions.create(model="m", messages=HI, max_tokens=100, stream=True))  # type: ignore[arg-type]


def test_sdk_authentication_and_model_errors(gw: Gw) -> None:
    with pytest.raises(openai.AuthenticationError):
        client(gw, "sk-llmb-wrong").chat.completions.create(model="m", messages=HI)  # type: ignore[arg-type]
    _, secret = gw.key(models=["m"])
    with pytest.raises(openai.NotFoundError):
        client(gw, secret).chat.completions.create(model="gpt-9", messages=HI)  # type: ignore[arg-type]
