"""LiteLLM callback: charges budgets for litellm.completion calls (skipped without LiteLLM)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest

# LiteLLM fetches its price map from the web at import unless told otherwise.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
litellm = pytest.importorskip("litellm")

from llmbudget import global_budget as gb  # noqa: E402
from llmbudget.blocks import budget  # noqa: E402
from llmbudget.errors import BudgetExceededError  # noqa: E402
from llmbudget.manager import BudgetManager  # noqa: E402
from tests.fakes import FakeLLMServer  # noqa: E402

HI = [{"role": "user", "content": "hi"}]
GPT4O_CALL = Decimal("0.00008")  # 12 prompt tokens at $2.50/M + 5 output tokens at $10/M


@pytest.fixture(autouse=True)
def fresh_global() -> Iterator[None]:
    gb._reset_for_tests()
    yield
    from llmbudget.integrations.litellm import LLMBudgetCallback, uninstall

    for name in ("callbacks", "success_callback", "_async_success_callback"):
        for entry in list(getattr(litellm, name, None) or []):
            if isinstance(entry, LLMBudgetCallback):
                uninstall(entry)
    gb._reset_for_tests()


@pytest.fixture
def fake() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as server:
        yield server


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    # LiteLLM runs success callbacks on a background thread.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


def _drain_litellm_logging() -> None:
    """Wait until every callback LiteLLM queued so far has run: occupy all its logging
    threads at once with tasks queued after them (the queue is first in, first out)."""
    from litellm.litellm_core_utils.thread_pool_executor import executor

    workers = executor._max_workers
    barrier = threading.Barrier(workers + 1)
    for _ in range(workers):
        executor.submit(barrier.wait, 30)
    barrier.wait(30)


def call_args(fake: FakeLLMServer, **extra: Any) -> dict[str, Any]:
    return {
        "model": "openai/gpt-4o",
        "messages": HI,
        "api_base": fake.openai_url,
        "api_key": "x",
        "num_retries": 0,
        **extra,
    }


def test_callback_charges_the_user_and_the_global_budget(fake: FakeLLMServer) -> None:
    from llmbudget.integrations.litellm import install

    bm = BudgetManager("litellm-test", store="memory://")
    bm.create_budget(total_budget=1, user="1234")
    callback = install(bm)

    litellm.completion(**call_args(fake, user="1234"))

    assert eventually(lambda: bool(callback.charged))
    assert callback.charged == [("1234", "gpt-4o", GPT4O_CALL)]
    assert bm.get_current_cost("1234") == GPT4O_CALL
    assert gb.current_cost() == GPT4O_CALL


def test_callback_charges_streams_once_when_complete(fake: FakeLLMServer) -> None:
    from llmbudget.integrations.litellm import install

    callback = install(charge_global=True)
    stream = litellm.completion(**call_args(fake, stream=True))
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)

    assert text == "Hello from the fake server"
    assert eventually(lambda: bool(callback.charged))
    _drain_litellm_logging()  # a second charge, if any, would have been made by now
    assert len(callback.charged) == 1
    assert gb.current_cost() == callback.charged[0][2] > 0


async def test_callback_charges_async_calls(fake: FakeLLMServer) -> None:
    from llmbudget.integrations.litellm import install

    callback = install()
    await litellm.acompletion(**call_args(fake))
    for _ in range(500):  # the success handler runs as a task on this loop
        if callback.charged:
            break
        await asyncio.sleep(0.02)
    assert len(callback.charged) == 1
    assert gb.current_cost() == GPT4O_CALL


def test_litellm_inside_a_budget_block_is_reserved_before_sending(fake: FakeLLMServer) -> None:
    # LiteLLM reaches OpenAI-compatible providers through the openai SDK, which the block
    # patches: refused calls are never sent and raise llmbudget's own error, successful
    # ones are charged their usage.
    for retries in (0, 2):
        with budget(max_usd="0.00001") as tight, pytest.raises(BudgetExceededError):
            litellm.completion(**{**call_args(fake), "num_retries": retries})
        assert fake.count() == 0 and tight.spent == 0 and tight.held == 0

    with budget(max_usd=1) as roomy:
        litellm.completion(**call_args(fake))
    assert roomy.spent == GPT4O_CALL


def test_litellm_streams_inside_a_budget_block_are_charged_their_usage(
    fake: FakeLLMServer,
) -> None:
    # LiteLLM streams OpenAI through with_raw_response: the raw body is what is metered.
    with budget(max_usd=1) as b:
        stream = litellm.completion(**call_args(fake, stream=True))
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    assert text == "Hello from the fake server"
    assert b.spent == GPT4O_CALL and b.held == 0


async def test_litellm_async_streams_inside_a_budget_block_are_charged(
    fake: FakeLLMServer,
) -> None:
    async with budget(max_usd=1) as b:
        stream = await litellm.acompletion(**call_args(fake, stream=True))
        text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream])
    assert text == "Hello from the fake server"
    assert b.spent == GPT4O_CALL and b.held == 0
    async with budget(max_usd="0.00001"):
        with pytest.raises(BudgetExceededError):
            await litellm.acompletion(**call_args(fake, stream=True))
    assert fake.count() == 1
