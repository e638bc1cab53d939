"""32 threads against a $1 global budget and a slow upstream: never a cent over, and every
refused call refused before it was sent."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest

from llmbudget import global_budget as gb
from llmbudget.completion import completion, response_cost
from llmbudget.errors import BudgetExceededError
from llmbudget.tokens import count_message_tokens
from tests.fakes import FakeLLMServer

THREADS = 32
MESSAGES = [{"role": "user", "content": "Write as much as you are allowed to."}]


@pytest.fixture(autouse=True)
def fresh_global() -> Iterator[None]:
    gb._reset_for_tests()
    yield
    gb._reset_for_tests()


@pytest.fixture
def slow_fake() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as server:
        server.delay = 0.05
        server.fill = True  # every call uses all the output it is allowed: worst case
        # What OpenAI would report: its tokenizer's count, which tokens.py reproduces.
        server.prompt_tokens = count_message_tokens(MESSAGES, "gpt-4o")
        yield server


def hammer(fake: FakeLLMServer, **kwargs: Any) -> tuple[list[Any], list[BaseException]]:
    def call(_: int) -> Any:
        try:
            return completion(
                "gpt-4o",
                MESSAGES,
                api_base=fake.openai_url,
                api_key="x",
                max_retries=0,
                **kwargs,
            )
        except BudgetExceededError as exc:
            return exc

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(call, range(THREADS)))
    ok = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    return ok, refused


@pytest.mark.parametrize("max_tokens", [20_000, None], ids=["fixed-max-tokens", "capped"])
def test_threads_cannot_overspend_the_global_budget(
    slow_fake: FakeLLMServer, max_tokens: int | None
) -> None:
    gb.set_max_budget(1)
    kwargs = {} if max_tokens is None else {"max_tokens": max_tokens}

    ok, refused = hammer(slow_fake, **kwargs)

    spent = gb.current_cost()
    assert spent <= Decimal(1)
    assert spent == sum(response_cost(r) or 0 for r in ok)
    assert ok and refused  # the budget was actually contended
    assert all(isinstance(r, BudgetExceededError) for r in refused)
    # Every refused call was refused before sending: the server saw only the successes.
    assert slow_fake.count() == len(ok)
    assert gb.status().held == 0
    if max_tokens is None:
        # Capped calls spent the budget down to less than one more output token's worth.
        assert Decimal(1) - spent < Decimal("0.001")
