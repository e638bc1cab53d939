"""Prompts bounded without a tokenizer: a proven upper bound, counted exactly the moment
it would decide anything, and no vocabulary loaded by a gateway that never needs one."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from llmbudget import tokens
from llmbudget.errors import BudgetExceededError
from llmbudget.ledger import Budget, Ledger
from llmbudget.metering import Meter, describe, worst_case
from llmbudget.plans import run_sync
from llmbudget.pricing import ModelPrice
from llmbudget.reservations import ScopeGroup
from llmbudget.stores.memory import MemoryStore
from tests.gateway_fakes import Gw, ServerThread

PRICE = ModelPrice("m", "test", Decimal("1"), Decimal("2"), context_window=1000)
MODELS = ["gpt-4o", "gpt-4", "claude-sonnet-4", "llama-3.1-8b"]


@pytest.fixture
def fresh_vocabularies(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a new process: no vocabulary loaded yet (they load again on demand)."""
    monkeypatch.setattr(tokens, "_encodings", {})
    monkeypatch.setattr(tokens, "_exact_encoders", {})


def _forget() -> None:
    """Unload what an exact count loaded (the fixture restores the real caches after)."""
    tokens._encodings.clear()
    tokens._exact_encoders.clear()


# --------------------------------------------------------------------------- the bound


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=300), model=st.sampled_from(MODELS))
def test_the_bound_is_never_below_the_count(text: str, model: str) -> None:
    assert tokens.count_tokens(text, model, bound=True) >= tokens.count_tokens(text, model)


@settings(max_examples=80, deadline=None)
@given(
    contents=st.lists(st.text(max_size=80), min_size=1, max_size=5),
    name=st.none() | st.text(min_size=1, max_size=10),
    model=st.sampled_from(MODELS),
)
def test_the_bound_of_a_chat_is_never_below_its_count(
    contents: list[str], name: str | None, model: str
) -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": c} for c in contents]
    if name:
        messages[0]["name"] = name
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    exact = tokens.count_message_tokens(messages, model, tools=tools)
    assert tokens.count_message_tokens(messages, model, tools=tools, bound=True) >= exact


def test_a_bound_is_given_only_while_the_vocabulary_is_not_loaded(fresh_vocabularies: None) -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello world"}]}
    bounded = describe("chat", body, bound=True)
    assert bounded.prompt_bound and not tokens.vocabulary_loaded("gpt-4o")
    assert tokens._encodings == {}  # bounding loaded nothing
    exact = describe("chat", body)
    assert not exact.prompt_bound and exact.prompt_tokens == 9 < bounded.prompt_tokens
    # Loaded now: a bound costs nothing to replace, so none is given any more.
    assert describe("chat", body, bound=True) == exact


# --------------------------------------------------------------------------- the meter


def _meter(body: dict[str, Any], budget: str, **kw: Any) -> tuple[Meter, Ledger]:
    ledger = Ledger(MemoryStore())
    group = ScopeGroup(ledger.plans, (Budget.of("user:a", budget, "daily"),))
    meter = Meter(
        describe("chat", body, "gpt-4o", bound=True),
        PRICE,
        [group],
        recount=lambda: describe("chat", body, "gpt-4o"),
        **kw,
    )
    return meter, ledger


BODY = {"model": "m", "messages": [{"role": "user", "content": "hello world " * 20}]}


def test_a_reserve_refused_on_the_bound_is_retried_with_the_exact_count(
    fresh_vocabularies: None,
) -> None:
    exact = describe("chat", {**BODY, "max_tokens": 10}, "gpt-4o")
    fits_exactly = worst_case(PRICE, exact, 10)
    _forget()
    meter, ledger = _meter({**BODY, "max_tokens": 10}, str(fits_exactly))
    assert meter.call.prompt_bound
    assert worst_case(PRICE, meter.call, 10) > fits_exactly  # the bound alone would not fit
    run_sync(meter.plan_open())
    assert not meter.call.prompt_bound and meter.reserved == fits_exactly
    assert ledger.status(Budget.of("user:a", str(fits_exactly), "daily")).held == fits_exactly


def test_a_call_the_exact_count_cannot_pay_either_is_still_refused(
    fresh_vocabularies: None,
) -> None:
    exact = describe("chat", {**BODY, "max_tokens": 10}, "gpt-4o")
    short = worst_case(PRICE, exact, 10) - Decimal("0.000001")
    _forget()
    meter, _ = _meter({**BODY, "max_tokens": 10}, str(short))
    with pytest.raises(BudgetExceededError):
        run_sync(meter.plan_open())


def test_the_bound_never_shortens_the_cap_against_the_context_window(
    fresh_vocabularies: None,
) -> None:
    # ~240 prompt tokens, ~500 bytes: with a 1,000-token window the bound would leave
    # less room for output than the real prompt does.
    body = {"model": "m", "messages": [{"role": "user", "content": "hello world " * 40}]}
    meter, _ = _meter(body, "100", configured_cap=700)
    assert meter.call.prompt_tokens + 700 > 1000  # the bound alone would cut the cap
    run_sync(meter.plan_open())
    exact = describe("chat", body, "gpt-4o")
    assert not meter.call.prompt_bound and meter.cap == min(700, 1000 - exact.prompt_tokens)


def test_a_charge_without_usage_counts_the_prompt_exactly(fresh_vocabularies: None) -> None:
    meter, _ = _meter({**BODY, "max_tokens": 50}, "100")
    run_sync(meter.plan_open())
    assert meter.call.prompt_bound  # the reservation went through on the bound
    run_sync(meter.plan_close(None, text="four words of output", finished=True))
    exact = describe("chat", {**BODY, "max_tokens": 50}, "gpt-4o")
    assert meter.tokens is not None and meter.tokens.input_tokens == exact.prompt_tokens


# --------------------------------------------------------------------------- the gateway

USAGE = {"prompt_tokens": 8, "completion_tokens": 3, "total_tokens": 11}


class _Upstream:
    """Fixed answers that never count tokens (so nothing but the gateway could load a
    vocabulary in this process)."""

    def __init__(self) -> None:
        self.usage = True

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/chat/completions", self.chat, methods=["POST"])])

    async def chat(self, request: Request) -> Response:
        body = await request.json()
        message = {"role": "assistant", "content": "one two three"}
        if not body.get("stream"):
            return JSONResponse(
                {"id": "c", "object": "chat.completion", "model": body["model"],
                 "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                 "usage": USAGE}
            )  # fmt: skip

        async def events() -> Iterator[bytes]:  # type: ignore[misc]
            chunk = {"id": "c", "object": "chat.completion.chunk", "model": body["model"],
                     "choices": [{"index": 0, "delta": {"content": "one two three"},
                                  "finish_reason": "stop"}]}  # fmt: skip
            yield f"data: {json.dumps(chunk)}\n\n".encode()
            if self.usage:
                yield f"data: {json.dumps({**chunk, 'choices': [], 'usage': USAGE})}\n\n".encode()
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")


def test_a_gateway_whose_calls_report_usage_never_loads_a_vocabulary(
    fresh_vocabularies: None,
) -> None:
    upstream = _Upstream()
    deployment = {
        "model_name": "m",
        "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": "", "api_key": "k",
                           "input_cost_per_token": "0.000001",
                           "output_cost_per_token": "0.000002", "max_output_tokens": 100},
    }  # fmt: skip
    with ServerThread(upstream.app()) as server:
        deployment["litellm_params"]["api_base"] = f"{server.url}/v1"  # type: ignore[index]
        with Gw({"model_list": [deployment]}) as gw:
            key_id, secret = gw.key(budget=1, period="daily")
            for stream in (False, True):
                r = gw.chat(secret, max_tokens=20, stream=stream)
                assert r.status_code == 200, r.text
            assert gw.settled(f"gw-key:{key_id}", "daily").spent == 2 * (
                Decimal("0.000001") * 8 + Decimal("0.000002") * 3
            )
            assert tokens._encodings == {}  # bounded, reserved, settled: nothing loaded

            # A stream that ends without usage is charged by counting, the prompt exactly.
            upstream.usage = False
            r = gw.chat(secret, max_tokens=20, stream=True)
            assert r.status_code == 200
            gw.settled(f"gw-key:{key_id}", "daily")
            entry = gw.logs()[0]
            assert entry["usage_source"] == "counted"
            hi = tokens.count_message_tokens([{"role": "user", "content": "hi"}], "gpt-4o-mini")
            assert entry["prompt_tokens"] == hi

            # count_tokens answers the exact count, never the bound.
            ask = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
            r = gw.http.post("/v1/messages/count_tokens", json=ask, headers={"x-api-key": secret})
            assert r.status_code == 200, r.text
            assert r.json() == {
                "input_tokens": describe("messages", ask, "gpt-4o-mini").prompt_tokens
            }
