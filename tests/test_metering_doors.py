"""The metering rules, run through every door with the same cases.

The gateway, ``completion()`` and the SDK patch inside ``budget()`` are three ways to send
one call; the metering core decides for all of them. Each case here runs through each
door against the same fake provider, at the same prices, on a budget of the same size,
and must give the same verdict: the same output cap forwarded, the same reservation, the
same refusal, the same "was it billed" outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import openai
import pytest

import llmbudget
from llmbudget import global_budget as gb
from llmbudget.errors import BudgetExceededError, InvalidRequestError, LLMBudgetError
from llmbudget.metering import BillableCall, affordable_cap, worst_case
from llmbudget.pricing import PriceBook, TokenUsage
from llmbudget.tokens import count_message_tokens
from tests.fakes import FakeLLMServer
from tests.gateway_fakes import Gw

MODEL = "gpt-4o-mini"
HI: Any = [{"role": "user", "content": "hi"}]
PROMPT = count_message_tokens(HI, MODEL)
PRICE = PriceBook.default().lookup(MODEL)
CALL = BillableCall("chat", MODEL, PROMPT)


@dataclass
class Outcome:
    error: str | None  # "refused", "invalid", "provider" or None
    spent: Decimal
    held: Decimal
    requests: int
    forwarded: dict[str, Any] | None


Door = Callable[..., Outcome]


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, BudgetExceededError):
        return "refused"
    if isinstance(exc, InvalidRequestError):
        return "invalid"
    return "provider"


def _forwarded(fake: FakeLLMServer) -> dict[str, Any] | None:
    return fake.last().body if fake.count() else None


def _completion_door(
    fake: FakeLLMServer, budget: str, body: dict[str, Any], timeout: float | None, base: str | None
) -> Outcome:
    llmbudget.max_budget = budget
    error = None
    try:
        result = llmbudget.completion(
            MODEL, HI, api_base=base or fake.openai_url, api_key="x", max_retries=0,
            timeout=timeout, **body,
        )  # fmt: skip
        if body.get("stream"):
            list(result)
    except LLMBudgetError as exc:
        error = _error_kind(exc)
    status = gb.status()
    return Outcome(error, status.spent, status.held, fake.count(), _forwarded(fake))


def _sdk_door(
    fake: FakeLLMServer, budget: str, body: dict[str, Any], timeout: float | None, base: str | None
) -> Outcome:
    client = openai.OpenAI(
        base_url=base or fake.openai_url, api_key="x", max_retries=0, timeout=timeout or 30
    )
    error = None
    with llmbudget.budget(max_usd=budget) as block:
        try:
            result = client.chat.completions.create(model=MODEL, messages=HI, **body)
            if body.get("stream"):
                list(result)
        except (LLMBudgetError, openai.OpenAIError) as exc:
            error = _error_kind(exc)
    status = block.status()
    return Outcome(error, status.spent, status.held, fake.count(), _forwarded(fake))


def _gateway_door(
    fake: FakeLLMServer, budget: str, body: dict[str, Any], timeout: float | None, base: str | None
) -> Outcome:
    params: dict[str, Any] = {"model": f"openai/{MODEL}", "api_base": base or fake.openai_url}
    if timeout is not None:
        params["timeout"] = timeout
    config = {
        "model_list": [{"model_name": MODEL, "litellm_params": params}],
        # The library's floor, so that the same cases give the same caps.
        "general_settings": {"min_completion_tokens": 1},
        "router_settings": {"num_retries": 0},
    }
    with Gw(config) as gw:
        key_id, secret = gw.key(budget=budget)
        response = gw.chat(secret, model=MODEL, messages=HI, **body)
        if response.status_code == 429:
            error: str | None = "refused"
        elif response.status_code == 400:
            error = "invalid"
        elif response.status_code >= 500 or '"upstream_error"' in response.text:
            error = "provider"
        else:
            error = None
        status = gw.settled(f"gw-key:{key_id}")
    return Outcome(error, status.spent, status.held, fake.count(), _forwarded(fake))


DOORS: dict[str, Door] = {
    "gateway": _gateway_door,
    "completion": _completion_door,
    "sdk": _sdk_door,
}


@pytest.fixture(autouse=True)
def fresh_global() -> Iterator[None]:
    gb._reset_for_tests()
    yield
    gb._reset_for_tests()


@pytest.fixture
def fake() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as server:
        server.prompt_tokens = PROMPT
        yield server


@pytest.fixture(params=sorted(DOORS))
def door(request: pytest.FixtureRequest, fake: FakeLLMServer) -> Callable[..., Outcome]:
    run = DOORS[request.param]

    def call(
        budget: str, timeout: float | None = None, base: str | None = None, **body: Any
    ) -> Outcome:
        return run(fake, budget, body, timeout, base)

    return call


# --------------------------------------------------------------------------- caps and worst case


def test_without_max_tokens_the_cap_is_what_the_budget_pays_for(
    door: Callable[..., Outcome], fake: FakeLLMServer
) -> None:
    budget = "0.0003"
    outcome = door(budget)
    expected = affordable_cap(PRICE, CALL, Decimal(budget))
    assert 0 < expected < 4096  # the budget, not the default cap, decides here
    assert outcome.error is None
    assert outcome.forwarded is not None and outcome.forwarded["max_tokens"] == expected
    assert outcome.held == 0


def test_a_roomy_budget_forwards_the_default_cap(door: Callable[..., Outcome]) -> None:
    outcome = door("5")
    assert outcome.forwarded is not None and outcome.forwarded["max_tokens"] == 4096


def test_the_callers_max_tokens_is_reserved_as_asked_or_refused(
    door: Callable[..., Outcome], fake: FakeLLMServer
) -> None:
    fake.fill = True  # the model uses all it may
    asked = 40
    fits = worst_case(PRICE, CALL, asked)
    ok = door(str(fits), max_tokens=asked)
    assert ok.error is None and ok.forwarded is not None and ok.forwarded["max_tokens"] == asked
    assert ok.spent == worst_case(PRICE, CALL, asked)  # the fake filled it: exactly the hold


def test_an_explicit_cap_the_budget_cannot_pay_is_refused_unsent(
    door: Callable[..., Outcome],
) -> None:
    short = worst_case(PRICE, CALL, 40) - Decimal("0.000000001")
    outcome = door(str(short), max_tokens=40)
    assert outcome.error == "refused"
    assert outcome.requests == 0 and outcome.spent == 0 and outcome.held == 0


def test_not_even_one_output_token_fits_refused_unsent(door: Callable[..., Outcome]) -> None:
    outcome = door(str(worst_case(PRICE, CALL, 0)))
    assert outcome.error == "refused"
    assert outcome.requests == 0 and outcome.spent == 0


def test_two_different_output_limits_are_refused_unsent(door: Callable[..., Outcome]) -> None:
    outcome = door("1", max_tokens=30, max_completion_tokens=10)
    assert outcome.error == "invalid"
    assert outcome.requests == 0 and outcome.spent == 0 and outcome.held == 0


# --------------------------------------------------------------------------- billed or not


def test_an_http_error_answer_is_released(
    door: Callable[..., Outcome], fake: FakeLLMServer
) -> None:
    fake.fail_next(500)
    outcome = door("1")
    assert outcome.error == "provider"
    assert outcome.requests == 1 and outcome.spent == 0 and outcome.held == 0


def test_a_connection_never_made_is_released(door: Callable[..., Outcome]) -> None:
    outcome = door("1", base="http://127.0.0.1:9/v1")
    assert outcome.error == "provider"
    assert outcome.spent == 0 and outcome.held == 0


def test_a_timeout_after_sending_is_charged_its_reservation(
    door: Callable[..., Outcome], fake: FakeLLMServer
) -> None:
    fake.delay = 3.0
    outcome = door("1", timeout=0.5, max_tokens=50)
    assert outcome.error == "provider"
    assert outcome.requests == 1 and outcome.held == 0
    assert outcome.spent == worst_case(PRICE, CALL, 50)


def test_usage_is_charged_exactly(door: Callable[..., Outcome], fake: FakeLLMServer) -> None:
    outcome = door("1", max_tokens=50)
    assert outcome.error is None
    words = len(fake.reply.split())
    assert outcome.spent == PRICE.cost(TokenUsage(input_tokens=PROMPT, output_tokens=words))


def test_a_stream_is_charged_its_usage(door: Callable[..., Outcome], fake: FakeLLMServer) -> None:
    outcome = door("1", stream=True, max_tokens=50)
    assert outcome.error is None and outcome.held == 0
    words = len(fake.reply.split())
    assert outcome.spent == PRICE.cost(TokenUsage(input_tokens=PROMPT, output_tokens=words))


def test_a_finished_stream_without_usage_is_counted(
    door: Callable[..., Outcome], fake: FakeLLMServer
) -> None:
    from llmbudget.tokens import count_tokens

    fake.stream_usage = False
    outcome = door("1", stream=True, max_tokens=50)
    assert outcome.error is None and outcome.held == 0
    counted = count_tokens(fake.reply, MODEL)
    assert outcome.spent == PRICE.cost(TokenUsage(input_tokens=PROMPT, output_tokens=counted))


def test_a_stream_broken_midway_is_charged_its_reservation(
    door: Callable[..., Outcome], fake: FakeLLMServer
) -> None:
    fake.break_stream_after = 2
    outcome = door("1", stream=True, max_tokens=50)
    assert outcome.held == 0
    assert outcome.spent == worst_case(PRICE, CALL, 50)
