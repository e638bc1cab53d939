"""``budget()`` around the real openai/anthropic SDK clients, pointed at a local server."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from llmbudget import global_budget as gb
from llmbudget.blocks import BudgetBlock, active_blocks, budget
from llmbudget.completion import completion
from llmbudget.errors import (
    BudgetExceededError,
    InvalidInputError,
    InvalidRequestError,
    UnknownModelError,
)
from llmbudget.pricing import PriceBook, TokenUsage
from llmbudget.tokens import count_message_tokens
from tests.fakes import FakeLLMServer

HI: Any = [{"role": "user", "content": "hi"}]  # Any: each SDK types messages its own way
GPT4O_CALL = Decimal("0.00008")  # 12 prompt tokens at $2.50/M + 5 output tokens at $10/M
HAIKU = "claude-3-5-haiku-latest"
HAIKU_CALL = Decimal("0.0000296")  # 12 at $0.80/M + 5 at $4/M


@pytest.fixture(autouse=True)
def fresh_global() -> Iterator[None]:
    gb._reset_for_tests()
    yield
    gb._reset_for_tests()


@pytest.fixture
def fake() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as server:
        yield server


@pytest.fixture
def oai(fake: FakeLLMServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.openai_url, api_key="x", max_retries=0)


@pytest.fixture
def claude(fake: FakeLLMServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=fake.anthropic_url, api_key="x", max_retries=0)


def original_requests() -> list[object]:
    return [
        openai._base_client.SyncAPIClient.request,
        openai._base_client.AsyncAPIClient.request,
        anthropic._base_client.SyncAPIClient.request,
        anthropic._base_client.AsyncAPIClient.request,
    ]


# --------------------------------------------------------------------------- openai


def test_openai_call_is_reserved_then_charged_and_sdk_restored(
    fake: FakeLLMServer, oai: openai.OpenAI
) -> None:
    before = original_requests()
    with budget(max_usd=5, name="agent") as b:
        assert original_requests() != before  # patched inside the block
        response = oai.chat.completions.create(model="gpt-4o", messages=HI)
    assert original_requests() == before  # restored after

    assert type(response).__name__ == "ChatCompletion"  # the SDK's own object, untouched
    assert b.spent == GPT4O_CALL and b.held == 0
    summary = b.summary()
    assert summary["calls"] == 1 and summary["spent"] == GPT4O_CALL
    assert summary["models"]["gpt-4o"] == {
        "calls": 1,
        "input_tokens": 12,
        "output_tokens": 5,
        "cost": GPT4O_CALL,
        "estimated_calls": 0,
    }
    assert gb.current_cost() == 0  # SDK calls count in blocks, not in max_budget

    oai.chat.completions.create(model="gpt-4o", messages=HI)  # outside: not budgeted
    assert b.spent == GPT4O_CALL and fake.count() == 2


def test_openai_stream_is_charged_and_usage_chunk_hidden(
    fake: FakeLLMServer, oai: openai.OpenAI
) -> None:
    with budget(max_usd=5) as b:
        stream = oai.chat.completions.create(model="gpt-4o", messages=HI, stream=True)
        chunks = list(stream)
    assert all(c.choices for c in chunks)  # the caller did not ask for the usage chunk
    assert fake.last().body["stream_options"] == {"include_usage": True}
    assert b.spent == GPT4O_CALL and b.held == 0

    with budget(max_usd=5) as b2:
        with oai.chat.completions.stream(model="gpt-4o", messages=HI) as helper:
            final = helper.get_final_completion()
        assert final.choices[0].message.content == "Hello from the fake server"
    assert b2.spent == GPT4O_CALL


def test_refused_call_is_never_sent(fake: FakeLLMServer, oai: openai.OpenAI) -> None:
    with budget(max_usd="0.00001") as b:
        with pytest.raises(BudgetExceededError):
            oai.chat.completions.create(model="gpt-4o", messages=HI)
        with pytest.raises(BudgetExceededError):
            oai.chat.completions.create(model="gpt-4o", messages=HI, max_tokens=10_000)
    assert fake.count() == 0
    assert b.spent == 0 and b.held == 0


def test_output_cap_is_added_when_the_budget_is_short(
    fake: FakeLLMServer, oai: openai.OpenAI
) -> None:
    fake.fill = True
    fake.prompt_tokens = count_message_tokens(HI, "gpt-4o")  # as OpenAI would count it
    with budget(max_usd="0.0003") as b:
        oai.chat.completions.create(model="gpt-4o", messages=HI)
        cap = fake.last().body["max_tokens"]  # not OpenAI's host: the classic field
        assert 0 < cap < 30
        assert b.spent <= Decimal("0.0003")
        with pytest.raises(BudgetExceededError):
            oai.chat.completions.create(model="gpt-4o", messages=HI)
    assert fake.count() == 1


def test_provider_error_charges_nothing_and_keeps_the_sdk_error_type(
    fake: FakeLLMServer, oai: openai.OpenAI
) -> None:
    with budget(max_usd=1) as b:
        for status, error in ((500, openai.InternalServerError), (429, openai.RateLimitError)):
            fake.fail_next(status)
            with pytest.raises(error):
                oai.chat.completions.create(model="gpt-4o", messages=HI)
    assert b.spent == 0 and b.held == 0 and b.summary()["calls"] == 0


def test_responses_api_sync_and_stream(fake: FakeLLMServer, oai: openai.OpenAI) -> None:
    with budget(max_usd=1) as b:
        response = oai.responses.create(model="gpt-4o", input="hi", max_output_tokens=50)
        assert response.output_text == "Hello from the fake server"
        stream = oai.responses.create(model="gpt-4o", input="hi", stream=True)
        events = [e.type for e in stream]
    assert events[-1] == "response.completed"
    assert b.spent == 2 * GPT4O_CALL and b.held == 0


def test_raw_responses_and_embeddings(fake: FakeLLMServer, oai: openai.OpenAI) -> None:
    with budget(max_usd=1) as b:
        raw = oai.chat.completions.with_raw_response.create(model="gpt-4o", messages=HI)
        usage = raw.parse().usage
        assert usage is not None and usage.completion_tokens == 5
        oai.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    rate = PriceBook.default().lookup("text-embedding-3-small").input_per_mtok
    assert rate is not None
    assert b.spent == GPT4O_CALL + 12 * rate / 1_000_000


async def test_async_openai_and_streaming(fake: FakeLLMServer) -> None:
    client = openai.AsyncOpenAI(base_url=fake.openai_url, api_key="x", max_retries=0)
    async with budget(max_usd=1) as b:
        await client.chat.completions.create(model="gpt-4o", messages=HI)
        stream = await client.chat.completions.create(model="gpt-4o", messages=HI, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream])
    assert text == "Hello from the fake server"
    assert b.spent == 2 * GPT4O_CALL and b.held == 0


# --------------------------------------------------------------------------- anthropic


def test_anthropic_create_and_stream_helper(
    fake: FakeLLMServer, claude: anthropic.Anthropic
) -> None:
    fake.cache_read_tokens = 100
    with budget(max_usd=1) as b:
        message = claude.messages.create(model=HAIKU, max_tokens=100, messages=HI)
        assert getattr(message.content[0], "text", None) == "Hello from the fake server"
        with claude.messages.stream(model=HAIKU, max_tokens=100, messages=HI) as stream:
            assert stream.get_final_text() == "Hello from the fake server"
        raw = claude.messages.create(model=HAIKU, max_tokens=100, messages=HI, stream=True)
        assert [getattr(e, "type", None) for e in raw][-1] == "message_stop"
    price = PriceBook.default().lookup(HAIKU)
    assert price.input_per_mtok and price.cache_read_per_mtok and price.output_per_mtok
    one = (
        12 * price.input_per_mtok + 100 * price.cache_read_per_mtok + 5 * price.output_per_mtok
    ) / 1_000_000
    assert b.spent == 3 * one and b.held == 0
    assert b.summary()["models"][HAIKU]["input_tokens"] == 3 * 112


def test_anthropic_refusal_uses_max_tokens(
    fake: FakeLLMServer, claude: anthropic.Anthropic
) -> None:
    with budget(max_usd="0.001") as b:
        with pytest.raises(BudgetExceededError):
            claude.messages.create(model=HAIKU, max_tokens=16_000, messages=HI)
        claude.messages.create(model=HAIKU, max_tokens=100, messages=HI)
    assert fake.count() == 1 and b.spent == HAIKU_CALL


async def test_async_anthropic_and_streaming(fake: FakeLLMServer) -> None:
    client = anthropic.AsyncAnthropic(base_url=fake.anthropic_url, api_key="x", max_retries=0)
    async with budget(max_usd=1) as b:
        await client.messages.create(model=HAIKU, max_tokens=100, messages=HI)
        async with client.messages.stream(model=HAIKU, max_tokens=100, messages=HI) as stream:
            assert await stream.get_final_text() == "Hello from the fake server"
    assert b.spent == 2 * HAIKU_CALL and b.held == 0


# --------------------------------------------------------------------------- nesting & limits


def test_nested_budgets_charge_every_level_and_parents_cap_children(
    fake: FakeLLMServer, oai: openai.OpenAI
) -> None:
    with budget(max_usd=1, name="outer") as outer:
        with budget(max_usd=1, name="inner") as inner:
            oai.chat.completions.create(model="gpt-4o", messages=HI, max_tokens=10)
            assert active_blocks() == (outer, inner)
        assert inner.spent == outer.spent == GPT4O_CALL
        oai.chat.completions.create(model="gpt-4o", messages=HI, max_tokens=10)
    assert outer.spent == 2 * GPT4O_CALL and inner.spent == GPT4O_CALL

    with (
        budget(max_usd="0.0001", name="parent") as parent,
        budget(max_usd=100, name="child") as child,
        pytest.raises(BudgetExceededError) as refused,
    ):
        oai.chat.completions.create(model="gpt-4o", messages=HI, max_tokens=1000)
    assert refused.value.remaining <= Decimal("0.0001")
    assert parent.held == child.held == 0


def test_warn_at_is_called_once_when_crossed(fake: FakeLLMServer, oai: openai.OpenAI) -> None:
    seen: list[Decimal] = []
    with budget(max_usd="0.0004", warn_at=0.4, on_warn=lambda b: seen.append(b.spent)) as b:
        oai.chat.completions.create(model="gpt-4o", messages=HI, max_tokens=5)
        assert seen == []  # $0.00008 < 40% of $0.0004
        oai.chat.completions.create(model="gpt-4o", messages=HI, max_tokens=5)
        oai.chat.completions.create(model="gpt-4o", messages=HI, max_tokens=5)
    assert seen == [2 * GPT4O_CALL]
    assert b.spent == 3 * GPT4O_CALL

    dollars: list[BudgetBlock] = []
    with budget(warn_at_usd="0.0001", on_warn=dollars.append) as tracked:
        for _ in range(3):
            oai.chat.completions.create(model="gpt-4o", messages=HI)
    assert dollars == [tracked]  # dollars, without a limit: spend is only tracked


def test_bad_block_arguments() -> None:
    with pytest.raises(InvalidInputError):
        budget(warn_at=0.5)  # a fraction of nothing
    with pytest.raises(InvalidInputError):
        budget(max_usd=1, warn_at=1.5)
    with pytest.raises(InvalidInputError):
        budget(max_usd=1, name="")
    with pytest.raises(ValueError):
        budget(max_usd=-1)


def test_unknown_model_is_refused_before_sending(fake: FakeLLMServer, oai: openai.OpenAI) -> None:
    with budget(max_usd=1), pytest.raises(UnknownModelError):
        oai.chat.completions.create(model="mystery-model-9000", messages=HI)
    assert fake.count() == 0

    book = PriceBook()
    book.register("mystery-model-9000", input_per_mtok=1, output_per_mtok=1)
    with budget(max_usd=1, prices=book) as b:
        oai.chat.completions.create(model="mystery-model-9000", messages=HI)
    assert b.spent == Decimal("0.000017")


def test_completion_inside_a_block_is_charged_once(fake: FakeLLMServer) -> None:
    with budget(max_usd=1) as b:
        completion("gpt-4o", HI, api_base=fake.openai_url, api_key="x", max_retries=0)
    assert b.spent == GPT4O_CALL
    assert gb.current_cost() == GPT4O_CALL
    assert b.summary()["calls"] == 1


def test_abandoned_stream_is_charged_its_reservation(
    fake: FakeLLMServer, oai: openai.OpenAI
) -> None:
    fake.pause_stream_after = 1  # the provider is still generating when we leave
    with budget(max_usd=1) as b:
        stream: Any = oai.chat.completions.create(
            model="gpt-4o", messages=HI, stream=True, max_tokens=100
        )
        with stream:
            next(iter(stream))  # one chunk, then walk away
        fake.resume.set()
        assert b.held == 0
    reservation = Decimal(1) - b.remaining if b.remaining is not None else None
    assert reservation is not None and reservation > GPT4O_CALL
    assert b.summary()["models"]["gpt-4o"]["estimated_calls"] == 1


def test_persistent_named_budget(fake: FakeLLMServer, oai: openai.OpenAI, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'blocks.db'}"
    with budget(max_usd=1, name="nightly", store=url, duration="daily"):
        oai.chat.completions.create(model="gpt-4o", messages=HI)
    with budget(max_usd=1, name="nightly", store=url, duration="daily") as again:
        assert again.spent == GPT4O_CALL  # the same name continues the same spend


# --------------------------------------------------------------------------- isolation


async def test_concurrent_tasks_see_their_own_budgets(fake: FakeLLMServer) -> None:
    client = openai.AsyncOpenAI(base_url=fake.openai_url, api_key="x", max_retries=0)

    async def agent(calls: int) -> BudgetBlock:
        async with budget(max_usd=1) as b:
            for _ in range(calls):
                await client.chat.completions.create(model="gpt-4o", messages=HI)
                await asyncio.sleep(0)
        return b

    first, second = await asyncio.gather(agent(1), agent(3))
    assert first.spent == GPT4O_CALL
    assert second.spent == 3 * GPT4O_CALL


def test_threads_do_not_inherit_a_block_unless_given_the_context(
    fake: FakeLLMServer, oai: openai.OpenAI
) -> None:
    def call() -> None:
        oai.chat.completions.create(model="gpt-4o", messages=HI)

    with budget(max_usd=1) as b:
        plain = threading.Thread(target=call)
        plain.start()
        plain.join()
        assert b.spent == 0
        shared = threading.Thread(target=contextvars.copy_context().run, args=(call,))
        shared.start()
        shared.join()
    assert b.spent == GPT4O_CALL


def test_threads_sharing_a_block_cannot_overspend(fake: FakeLLMServer) -> None:
    fake.delay = 0.02
    fake.fill = True
    fake.prompt_tokens = count_message_tokens(HI, "gpt-4o")
    client = openai.OpenAI(base_url=fake.openai_url, api_key="x", max_retries=0)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            client.chat.completions.create(model="gpt-4o", messages=HI, max_tokens=100)
        except BudgetExceededError as exc:
            errors.append(exc)

    with budget(max_usd="0.005") as b:
        threads = [
            threading.Thread(target=contextvars.copy_context().run, args=(call,)) for _ in range(16)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors
    assert b.spent <= Decimal("0.005")
    assert fake.count() == 16 - len(errors)


def test_one_block_entered_from_many_threads(fake: FakeLLMServer, oai: openai.OpenAI) -> None:
    shared = budget(max_usd=1, name="shared")

    def work() -> None:
        with shared:
            oai.chat.completions.create(model="gpt-4o", messages=HI)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert shared.spent == 8 * GPT4O_CALL
    assert active_blocks() == ()
    assert openai._base_client.SyncAPIClient.request.__name__ == "request"
    assert not hasattr(openai._base_client.SyncAPIClient.request, "__llmbudget_original__")


def test_named_persistent_block_keeps_its_window_anchor_across_runs(
    tmp_path: Path, oai: openai.OpenAI
) -> None:
    from llmbudget.clock import FrozenClock
    from llmbudget.ledger import Ledger

    url = f"sqlite:///{tmp_path / 'blocks.db'}"
    clock = FrozenClock(1_700_000_000.0)
    with budget(max_usd=5, name="agent", store=url, duration="2d", clock=clock) as first:
        oai.chat.completions.create(model="gpt-4o", messages=HI, max_tokens=20)
    spent = first.spent
    assert spent > 0

    clock.advance(86_400)  # the next run, a day later: the same 2-day window
    with budget(max_usd=5, name="agent", store=url, duration="2d", clock=clock) as second:
        assert second.spent == spent
    clock.advance(3_600)
    changed = budget(max_usd=7, name="agent", store=url, duration="2d", clock=clock)
    assert changed.spent == spent  # a changed limit is redefined, keeping the anchor
    stored = Ledger(url).get([changed.budget.scope])[0]
    assert stored is not None
    assert (stored.created_at, stored.limit) == (1_700_000_000.0, Decimal("7"))


def test_sdk_timeout_charges_every_attempt_and_sdk_retries_reserve_again(
    fake: FakeLLMServer,
) -> None:
    # A timed-out request may have been billed: its whole reservation is charged. The
    # SDK's retries are made one reservation each (the error keeps its SDK type).
    fake.delay = 0.6
    client = openai.OpenAI(base_url=fake.openai_url, api_key="x", max_retries=1, timeout=0.2)
    with budget(max_usd=1) as b, pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="gpt-4o", messages=HI, max_tokens=20)
    assert fake.count("/v1/chat/completions") == 2
    prompt = count_message_tokens(HI, "gpt-4o")
    one = (
        PriceBook.default().lookup("gpt-4o").cost(TokenUsage(input_tokens=prompt, output_tokens=20))
    )
    assert b.held == 0
    assert b.spent == 2 * one


def test_sdk_http_errors_are_retried_with_a_fresh_reservation(fake: FakeLLMServer) -> None:
    fake.fail_next(500, count=2)
    client = openai.OpenAI(base_url=fake.openai_url, api_key="x", max_retries=2)
    with budget(max_usd=1) as b:
        client.chat.completions.create(model="gpt-4o", messages=HI, max_tokens=20)
    assert fake.count("/v1/chat/completions") == 3
    assert b.held == 0
    assert b.spent == GPT4O_CALL  # the failed answers are not charged


def test_sdk_two_different_output_caps_are_refused_before_sending(
    fake: FakeLLMServer, oai: openai.OpenAI
) -> None:
    # Only one cap can be forwarded: which one the caller meant is not ours to guess (the
    # same rule as completion() and the gateway, from the metering core).
    with budget(max_usd=1) as b, pytest.raises(InvalidRequestError, match="differ"):
        oai.chat.completions.create(
            model="gpt-4o", messages=HI, max_tokens=30, max_completion_tokens=10
        )
    assert fake.count() == 0
    assert b.spent == 0 and b.held == 0
    with budget(max_usd=1):
        oai.chat.completions.create(
            model="gpt-4o", messages=HI, max_tokens=30, max_completion_tokens=30
        )
    body = fake.last("/v1/chat/completions").body
    assert body.get("max_tokens") == 30 and "max_completion_tokens" not in body


# --------------------------------------------------------------------------- every SDK path


def test_raw_streams_are_charged_their_real_usage(fake: FakeLLMServer, oai: openai.OpenAI) -> None:
    """with_raw_response and with_streaming_response streams (the path LiteLLM takes) are
    metered from the HTTP body, whoever reads it and however."""
    with budget(max_usd="0.005") as b:
        raw = oai.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=HI, stream=True
        )
        chunks = list(raw.parse())
        assert all(c.choices for c in chunks)  # the usage chunk we asked for stays hidden
        with oai.chat.completions.with_streaming_response.create(
            model="gpt-4o", messages=HI, stream=True
        ) as response:
            lines = list(response.iter_lines())
        assert any('"content":' in line for line in lines)
        assert not any('"usage": {' in line or '"usage":{' in line for line in lines)
        assert b.held == 0
    assert b.spent == 2 * GPT4O_CALL
    assert fake.count("/v1/chat/completions") == 2


async def test_async_raw_streams_are_charged_their_real_usage(fake: FakeLLMServer) -> None:
    client = openai.AsyncOpenAI(base_url=fake.openai_url, api_key="x", max_retries=0)
    async with budget(max_usd=1) as b:
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=HI, stream=True
        )
        stream = raw.parse()
        text = "".join([c.choices[0].delta.content or "" async for c in stream])
        async with client.chat.completions.with_streaming_response.create(
            model="gpt-4o", messages=HI, stream=True
        ) as response:
            lines = [line async for line in response.iter_lines()]
    assert text == "Hello from the fake server" and lines
    assert b.spent == 2 * GPT4O_CALL and b.held == 0


def test_stream_helpers_are_charged(
    fake: FakeLLMServer, oai: openai.OpenAI, claude: anthropic.Anthropic
) -> None:
    with budget(max_usd=1) as b:
        with oai.responses.stream(model="gpt-4o", input="hi") as stream:
            assert stream.get_final_response().output_text == "Hello from the fake server"
        with claude.messages.stream(model=HAIKU, max_tokens=100, messages=HI) as events:
            assert events.get_final_text() == "Hello from the fake server"
        with oai.chat.completions.stream(model="gpt-4o", messages=HI) as chat:
            assert chat.get_final_completion().choices[0].message.content
    assert b.spent == 2 * GPT4O_CALL + HAIKU_CALL and b.held == 0


def test_a_refusal_on_any_path_sends_nothing(fake: FakeLLMServer, oai: openai.OpenAI) -> None:
    with budget(max_usd="0.00001") as b:
        for attempt in (
            lambda: oai.chat.completions.with_raw_response.create(
                model="gpt-4o", messages=HI, stream=True
            ),
            lambda: oai.responses.stream(model="gpt-4o", input="hi").__enter__(),
            lambda: oai.embeddings.create(model="text-embedding-3-small", input="x" * 40_000),
        ):
            with pytest.raises(BudgetExceededError):
                attempt()
    assert fake.count() == 0 and b.spent == 0 and b.held == 0


def test_requests_that_cannot_be_metered_are_refused_inside_a_block(
    fake: FakeLLMServer, oai: openai.OpenAI
) -> None:
    with budget(max_usd=1):
        with pytest.raises(InvalidRequestError, match="cannot budget"):
            oai.images.generate(model="gpt-image-1", prompt="a cat")
        with pytest.raises(InvalidRequestError, match="background"):
            oai.responses.create(model="gpt-4o", input="hi", background=True)
        with pytest.raises(openai.NotFoundError):  # free: passed on (the fake has no route)
            oai.moderations.create(input="hi")
    assert fake.count("/v1/moderations") == 1
    assert fake.count("/v1/images/generations") == 0
    assert fake.count("/v1/responses") == 0


def test_a_stream_dropped_unread_is_charged_when_collected(
    fake: FakeLLMServer, oai: openai.OpenAI
) -> None:
    import gc

    fake.pause_stream_after = 1
    with budget(max_usd=1) as b:
        stream = oai.chat.completions.create(
            model="gpt-4o", messages=HI, stream=True, max_tokens=50
        )
        assert b.held > 0
        del stream
        gc.collect()
        fake.resume.set()
        assert b.held == 0
        assert b.spent > GPT4O_CALL  # its reservation: the provider may have billed more
