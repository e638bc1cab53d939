"""completion(): failures that may have been billed, retries, output caps, settle errors."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

import llmbudget
from llmbudget import global_budget as gb
from llmbudget.completion import completion
from llmbudget.errors import InvalidRequestError, StoreUnavailableError
from llmbudget.journal import default_journal
from llmbudget.money import from_units
from llmbudget.pricing import PriceBook, TokenUsage
from llmbudget.providers import ProviderServerError, ProviderTimeoutError
from llmbudget.stores.memory import MemoryStore
from llmbudget.tokens import count_message_tokens
from tests.fakes import FakeLLMServer

HI = [{"role": "user", "content": "hi"}]
GPT4O_CALL = Decimal("0.00008")  # 12 * 2.5e-6 + 5 * 10e-6 (the fake's usage)


@pytest.fixture(autouse=True)
def fresh_global() -> Iterator[None]:
    gb._reset_for_tests()
    yield
    gb._reset_for_tests()


@pytest.fixture
def fake() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as server:
        yield server


def worst(output_tokens: int) -> Decimal:
    prompt = count_message_tokens(HI, "gpt-4o")
    price = PriceBook.default().lookup("gpt-4o")
    return price.cost(TokenUsage(input_tokens=prompt, output_tokens=output_tokens))


def test_timeout_charges_the_whole_reservation(fake: FakeLLMServer) -> None:
    # The request was sent: the provider may have processed and billed it.
    fake.delay = 0.6
    with pytest.raises(ProviderTimeoutError):
        completion(
            "gpt-4o", HI, api_base=fake.openai_url, api_key="x", max_retries=0,
            timeout=0.2, max_tokens=20,
        )  # fmt: skip
    status = gb.status()
    assert status.held == 0
    assert status.spent == worst(20)


def test_each_retry_is_one_attempt_reserved_and_charged_on_its_own(fake: FakeLLMServer) -> None:
    # SDK-internal retries would send up to 3 billed attempts under one hold.
    fake.delay = 0.6
    with pytest.raises(ProviderTimeoutError):
        completion(
            "gpt-4o", HI, api_base=fake.openai_url, api_key="x", max_retries=1,
            timeout=0.2, max_tokens=20,
        )  # fmt: skip
    assert fake.count("/v1/chat/completions") == 2
    assert gb.status().spent == 2 * worst(20)


def test_http_errors_release_and_are_retried(fake: FakeLLMServer) -> None:
    fake.fail_next(500, count=2)
    r = completion("gpt-4o", HI, api_base=fake.openai_url, api_key="x", max_retries=2)
    assert fake.count("/v1/chat/completions") == 3
    assert r._hidden_params["response_cost"] == GPT4O_CALL
    assert llmbudget.current_cost == GPT4O_CALL
    fake.fail_next(503)
    with pytest.raises(ProviderServerError):
        completion("gpt-4o", HI, api_base=fake.openai_url, api_key="x", max_retries=0)
    assert llmbudget.current_cost == GPT4O_CALL and gb.status().held == 0


def test_connection_refused_releases() -> None:
    llmbudget.max_budget = 1
    with pytest.raises(llmbudget.ProviderConnectionError):
        completion("gpt-4o", HI, api_base="http://127.0.0.1:9/v1", api_key="x", max_retries=0)
    assert gb.status().spent == 0 and gb.status().held == 0


def test_two_different_output_caps_are_refused_before_sending(fake: FakeLLMServer) -> None:
    with pytest.raises(InvalidRequestError, match="differ"):
        completion(
            "gpt-4o", HI, api_base=fake.openai_url, api_key="x", max_retries=0,
            max_tokens=30, max_completion_tokens=10,
        )  # fmt: skip
    assert fake.count() == 0
    assert gb.status().held == 0 and gb.current_cost() == 0
    r = completion(
        "gpt-4o", HI, api_base=fake.openai_url, api_key="x", max_retries=0,
        max_tokens=30, max_completion_tokens=30,
    )  # fmt: skip
    body = fake.last("/v1/chat/completions").body
    assert body.get("max_tokens") == 30 and "max_completion_tokens" not in body
    assert r._hidden_params["reserved"] == worst(30)


class _FlakySettle(MemoryStore):
    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def settle(self, *args: Any, **kwargs: Any) -> Any:
        if self.failures > 0:
            self.failures -= 1
            raise StoreUnavailableError("settle failed (test)")
        return super().settle(*args, **kwargs)


def test_settle_store_error_is_retried_and_the_response_kept() -> None:
    store = _FlakySettle(failures=2)
    gb.configure(store=store, max_budget=1)
    r = completion("gpt-4o", HI, mock_response="Hello there", max_tokens=20)
    assert r.choices[0].message.content == "Hello there"
    assert store.failures == 0
    assert gb.status().held == 0
    assert llmbudget.current_cost == r._hidden_params["response_cost"] > 0


def test_a_settle_that_keeps_failing_is_kept_and_lands_later() -> None:
    store = _FlakySettle(failures=100)
    gb.configure(store=store, max_budget=1)
    first = completion("gpt-4o", HI, mock_response="Hello there", max_tokens=20)
    assert first.choices[0].message.content == "Hello there"  # the call was made: answered
    [kept] = default_journal().entries()
    assert (
        kept.kind == "settle" and from_units(kept.amount) == first._hidden_params["response_cost"]
    )
    assert store.usage("global:default", 0, 0.0).spent == 0  # not in the store yet
    store.failures = 0
    second = completion("gpt-4o", HI, mock_response="Hello there", max_tokens=20)
    # The next call's store operations succeeded, so what was kept was replayed.
    assert default_journal().entries() == []
    assert gb.status().held == 0
    assert llmbudget.current_cost == sum(r._hidden_params["response_cost"] for r in (first, second))
