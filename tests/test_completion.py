"""completion()/acompletion() against a real local HTTP server speaking OpenAI and Anthropic."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from llmbudget import global_budget as gb
from llmbudget.completion import acompletion, completion, response_cost
from llmbudget.errors import (
    BudgetExceededError,
    InvalidInputError,
    ProviderError,
    UnknownModelError,
    UnknownUserError,
)
from llmbudget.manager import BudgetManager
from llmbudget.pricing import PriceBook, TokenUsage
from llmbudget.providers import (
    ProviderAuthError,
    ProviderRateLimitError,
    ProviderServerError,
    providers,
    resolve,
)
from llmbudget.tokens import count_message_tokens, count_tokens
from llmbudget.translate import anthropic_request
from tests.fakes import FakeLLMServer

HI = [{"role": "user", "content": "hi"}]
# gpt-4o: $2.50 / $10 per Mtok; claude-3-5-haiku: $0.80 / $4. The fake answers 12 prompt
# tokens and 5 completion tokens ("Hello from the fake server").
GPT4O_CALL = Decimal("0.00008")  # 12 * 2.5e-6 + 5 * 10e-6
HAIKU_CALL = Decimal("0.0000296")  # 12 * 0.8e-6 + 5 * 4e-6


@pytest.fixture(autouse=True)
def fresh_global() -> Iterator[None]:
    gb._reset_for_tests()
    yield
    gb._reset_for_tests()


@pytest.fixture
def fake() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as server:
        yield server


def openai_args(fake: FakeLLMServer, **extra: Any) -> dict[str, Any]:
    return {"api_base": fake.openai_url, "api_key": "test", "max_retries": 0, **extra}


def anthropic_args(fake: FakeLLMServer, **extra: Any) -> dict[str, Any]:
    return {"api_base": fake.anthropic_url, "api_key": "test", "max_retries": 0, **extra}


def nothing_held() -> bool:
    return gb.status().held == 0


# --------------------------------------------------------------------------- OpenAI


def test_openai_call_is_charged_its_exact_usage(fake: FakeLLMServer) -> None:
    response = completion("gpt-4o", HI, **openai_args(fake))

    assert response.choices[0].message.content == "Hello from the fake server"
    assert response._hidden_params["response_cost"] == GPT4O_CALL
    assert response_cost(response) == GPT4O_CALL
    assert gb.current_cost() == GPT4O_CALL
    assert gb.status().by_model == {"gpt-4o": GPT4O_CALL}
    assert nothing_held()
    sent = fake.last().body
    assert sent["model"] == "gpt-4o" and sent["messages"] == HI
    assert fake.last().headers["authorization"] == "Bearer test"


def test_openai_stream_is_charged_from_the_final_usage_chunk(fake: FakeLLMServer) -> None:
    stream = completion("gpt-4o", HI, stream=True, **openai_args(fake))
    chunks = list(stream)

    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "Hello from the fake server"
    # We asked for usage to charge the call, but the caller did not: no usage-only chunk.
    assert all(c.choices for c in chunks)
    assert fake.last().body["stream_options"] == {"include_usage": True}
    assert stream.cost == GPT4O_CALL
    assert stream.usage.completion_tokens == 5
    assert gb.current_cost() == GPT4O_CALL
    assert nothing_held()


def test_stream_usage_chunk_is_passed_on_when_the_caller_asks(fake: FakeLLMServer) -> None:
    stream = completion(
        "gpt-4o", HI, stream=True, stream_options={"include_usage": True}, **openai_args(fake)
    )
    chunks = list(stream)
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == 12


def test_stream_without_usage_is_charged_by_counting_the_text(fake: FakeLLMServer) -> None:
    fake.stream_usage = False
    stream = completion("gpt-4o", HI, stream=True, **openai_args(fake))
    list(stream)

    price = PriceBook.default().lookup("gpt-4o")
    expected = price.cost(
        TokenUsage(
            input_tokens=count_message_tokens(HI, "gpt-4o"),
            output_tokens=count_tokens("Hello from the fake server", "gpt-4o"),
        )
    )
    assert expected > 0
    assert stream.cost == expected  # never $0 silently
    assert stream._hidden_params["usage_estimated"] is True
    assert gb.current_cost() == expected


def test_stream_cut_short_is_charged_its_reservation(fake: FakeLLMServer) -> None:
    fake.break_stream_after = 3  # role chunk + two words, then the connection closes
    stream = completion("gpt-4o", HI, stream=True, max_tokens=50, **openai_args(fake))
    assert "".join(c.choices[0].delta.content or "" for c in stream) == "Hello from"
    reserved = stream._hidden_params["reserved"]
    # No usage and no finish reason: the provider may have billed output never seen.
    assert reserved > 0 and stream.cost == reserved
    assert gb.current_cost() == reserved
    assert nothing_held()


def test_stream_closed_early_after_finish_is_charged_by_text(fake: FakeLLMServer) -> None:
    with completion("gpt-4o", HI, stream=True, **openai_args(fake)) as stream:
        for chunk in stream:
            if chunk.choices[0].finish_reason:
                break  # the usage chunk is never read
    assert stream.cost is not None and 0 < stream.cost < stream._hidden_params["reserved"]
    assert nothing_held()


def test_unread_stream_is_charged_when_closed(fake: FakeLLMServer) -> None:
    stream = completion("gpt-4o", HI, stream=True, max_tokens=20, **openai_args(fake))
    assert gb.status().held > 0
    stream.close()
    assert nothing_held()
    assert gb.current_cost() == stream._hidden_params["reserved"]


# --------------------------------------------------------------------------- Anthropic


def test_anthropic_call_is_converted_and_charged_exactly(fake: FakeLLMServer) -> None:
    fake.cache_read_tokens = 100
    fake.cache_write_tokens = 50
    messages = [{"role": "system", "content": "Be brief."}, *HI]
    response = completion("claude-3-5-haiku-latest", messages, **anthropic_args(fake))

    price = PriceBook.default().lookup("claude-3-5-haiku-latest")
    assert price.input_per_mtok and price.cache_read_per_mtok
    assert price.cache_write_per_mtok and price.output_per_mtok
    expected = (
        12 * price.input_per_mtok
        + 100 * price.cache_read_per_mtok
        + 50 * price.cache_write_per_mtok
        + 5 * price.output_per_mtok
    ) / 1_000_000
    assert response._hidden_params["response_cost"] == expected
    assert gb.current_cost() == expected
    assert type(response).__name__ == "ChatCompletion"
    assert response.choices[0].message.content == "Hello from the fake server"
    assert response.choices[0].finish_reason == "stop"
    usage = response.usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (162, 5)
    assert usage.prompt_tokens_details.cached_tokens == 100
    assert usage.cache_read_input_tokens == 100 and usage.cache_creation_input_tokens == 50

    sent = fake.last("/v1/messages")
    assert sent.body["system"] == "Be brief."
    assert sent.body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert sent.body["max_tokens"] == 4096  # Anthropic requires one; none was given
    # (SDK versions differ on the header: x-api-key or a bearer token)
    assert "test" in (sent.headers.get("x-api-key", "") + sent.headers.get("authorization", ""))

    # The converted response prices the same through the seed's update_cost.
    bm = BudgetManager("conv", store="memory://")
    bm.create_budget(10, "u")
    bm.update_cost(user="u", completion_obj=response)
    assert bm.get_current_cost("u") == expected


def test_anthropic_stream_is_charged_from_message_delta(fake: FakeLLMServer) -> None:
    stream = completion("claude-3-5-haiku-latest", HI, stream=True, **anthropic_args(fake))
    chunks = list(stream)

    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello from the fake server"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert stream.cost == HAIKU_CALL
    assert gb.current_cost() == HAIKU_CALL
    assert nothing_held()


def test_anthropic_max_tokens_finish_reason_is_length(fake: FakeLLMServer) -> None:
    response = completion("claude-3-5-haiku-latest", HI, max_tokens=2, **anthropic_args(fake))
    assert response.choices[0].finish_reason == "length"
    assert response.usage.completion_tokens == 2
    assert fake.last().body["max_tokens"] == 2


def test_anthropic_request_conversion() -> None:
    messages = [
        {"role": "system", "content": "sys"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get", "arguments": '{"x": 1}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
        {"role": "tool", "tool_call_id": "call_2", "content": "43"},
    ]
    tools = [{"type": "function", "function": {"name": "get", "parameters": {"type": "object"}}}]
    request = anthropic_request(
        messages, {"tools": tools, "tool_choice": "required", "stop": "END", "user": "u1"}
    )
    assert request["system"] == "sys"
    user, assistant, results = request["messages"]
    assert user["content"][1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
    }
    assert assistant["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "get", "input": {"x": 1}}
    ]
    assert [b["tool_use_id"] for b in results["content"]] == ["call_1", "call_2"]
    assert request["tools"] == [
        {"name": "get", "description": "", "input_schema": {"type": "object"}}
    ]
    assert request["tool_choice"] == {"type": "any"}
    assert request["stop_sequences"] == ["END"]
    assert request["metadata"] == {"user_id": "u1"}
    with pytest.raises(InvalidInputError):
        anthropic_request(HI, {"n": 2})


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("status", "error"),
    [(500, ProviderServerError), (429, ProviderRateLimitError), (401, ProviderAuthError)],
)
@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_provider_errors_release_the_hold_and_charge_nothing(
    fake: FakeLLMServer, status: int, error: type[ProviderError], kind: str
) -> None:
    gb.set_max_budget(1)
    bm = BudgetManager("errs", store="memory://")
    bm.create_budget(1, "u")
    fake.fail_next(status)
    model, args = (
        ("gpt-4o", openai_args(fake))
        if kind == "openai"
        else ("claude-3-5-haiku-latest", anthropic_args(fake))
    )
    with pytest.raises(error) as raised:
        completion(model, HI, user="u", budget_manager=bm, **args)

    assert raised.value.status_code == status
    assert raised.value.provider == kind
    assert raised.value.body is not None
    assert fake.count() == 1
    assert gb.status().spent == 0 and nothing_held()
    assert bm.status("u").spent == 0 and bm.status("u").held == 0


def test_stream_that_fails_before_starting_charges_nothing(fake: FakeLLMServer) -> None:
    fake.fail_next(503)
    with pytest.raises(ProviderServerError):
        completion("gpt-4o", HI, stream=True, **openai_args(fake))
    assert gb.status().spent == 0 and nothing_held()


def test_unreachable_provider_is_a_connection_error() -> None:
    from llmbudget.providers import ProviderConnectionError

    with pytest.raises(ProviderConnectionError):
        completion("gpt-4o", HI, api_base="http://127.0.0.1:9/v1", api_key="x", max_retries=0)
    assert nothing_held()


# --------------------------------------------------------------------------- budgets


def test_user_budget_and_global_budget_are_both_charged(fake: FakeLLMServer) -> None:
    gb.set_max_budget(1)
    bm = BudgetManager("proj", store="memory://")
    bm.create_budget(total_budget=10, user="1234")

    response = completion("gpt-4o", HI, user="1234", budget_manager=bm, **openai_args(fake))

    assert response_cost(response) == GPT4O_CALL
    assert bm.get_current_cost("1234") == GPT4O_CALL
    assert bm.get_model_cost("1234") == {"gpt-4o": GPT4O_CALL}
    assert gb.current_cost() == GPT4O_CALL
    assert fake.last().body["user"] == "1234"  # still sent to the provider, as OpenAI's field


def test_user_budget_refuses_before_sending_and_rolls_back_the_global_hold(
    fake: FakeLLMServer,
) -> None:
    gb.set_max_budget(1)
    bm = BudgetManager("proj", store="memory://")
    bm.create_budget(total_budget="0.00001", user="poor")

    with pytest.raises(BudgetExceededError) as refused:
        completion("gpt-4o", HI, user="poor", budget_manager=bm, **openai_args(fake))

    assert refused.value.scope == "user:proj:poor"
    assert fake.count() == 0
    assert nothing_held() and gb.status().spent == 0


def test_unknown_user_is_refused_before_sending(fake: FakeLLMServer) -> None:
    bm = BudgetManager("proj", store="memory://")
    with pytest.raises(UnknownUserError):
        completion("gpt-4o", HI, user="nobody", budget_manager=bm, **openai_args(fake))
    with pytest.raises(InvalidInputError):
        completion("gpt-4o", HI, budget_manager=bm, **openai_args(fake))
    assert fake.count() == 0


def test_output_cap_is_what_the_budget_can_pay_for(fake: FakeLLMServer) -> None:
    gb.set_max_budget("0.0005")
    fake.fill = True  # the model writes until the cap
    prompt = count_message_tokens(HI, "gpt-4o")
    fake.prompt_tokens = prompt
    # room after the prompt, at $10 per Mtok of output
    expected_cap = int((Decimal("0.0005") - prompt * Decimal("0.0000025")) / Decimal("0.00001"))

    response = completion("openai/gpt-4o", HI, **openai_args(fake))

    assert fake.last().body["max_tokens"] == expected_cap
    assert response._hidden_params["output_cap"] == expected_cap
    assert response.choices[0].finish_reason == "length"
    assert gb.current_cost() <= Decimal("0.0005")
    # Not even the prompt and one output token fit any more: refused, not sent.
    with pytest.raises(BudgetExceededError):
        completion("openai/gpt-4o", HI, **openai_args(fake))
    assert fake.count() == 1


def test_callers_max_tokens_is_kept_and_reserved_in_full(fake: FakeLLMServer) -> None:
    gb.set_max_budget(1)
    completion("gpt-4o", HI, max_tokens=100, **openai_args(fake))
    body = fake.last().body
    assert body["max_tokens"] == 100 and "max_completion_tokens" not in body

    gb.set_max_budget("0.0001")
    gb.reset()
    with pytest.raises(BudgetExceededError) as refused:
        completion("gpt-4o", HI, max_tokens=10_000, **openai_args(fake))
    assert refused.value.requested > Decimal("0.1")
    assert fake.count() == 1


def test_n_choices_multiply_the_worst_case(fake: FakeLLMServer) -> None:
    gb.set_max_budget("0.0005")
    completion("openai/gpt-4o", HI, n=3, **openai_args(fake))
    single = fake.last().body["max_tokens"]
    gb.reset()
    completion("openai/gpt-4o", HI, **openai_args(fake))
    assert fake.last().body["max_tokens"] // 3 == single


def test_unknown_model_under_a_limit_is_refused_before_sending(fake: FakeLLMServer) -> None:
    gb.set_max_budget(1)
    with pytest.raises(UnknownModelError):
        completion("no-such-model-xyz", HI, **openai_args(fake))
    assert fake.count() == 0


def test_local_models_without_a_price_are_free(fake: FakeLLMServer) -> None:
    gb.set_max_budget("0.000001")
    response = completion("ollama/my-local-llama", HI, api_base=fake.openai_url, max_retries=0)
    assert response_cost(response) == 0
    assert fake.last().body["model"] == "my-local-llama"
    assert "max_tokens" not in fake.last().body  # free output needs no cap


def test_prices_can_be_given_per_call(fake: FakeLLMServer) -> None:
    book = PriceBook(defaults=False)
    book.register("house-model", input_per_mtok=1, output_per_mtok=2)
    response = completion("house-model", HI, prices=book, **openai_args(fake))
    assert response_cost(response) == Decimal("0.000022")  # 12 * 1e-6 + 5 * 2e-6


# --------------------------------------------------------------------------- mocks


def test_mock_response_is_realistic_and_charged() -> None:
    response = completion("gpt-4o", HI, mock_response="Hi there, friend!")
    prompt = count_message_tokens(HI, "gpt-4o")
    output = count_tokens("Hi there, friend!", "gpt-4o")
    assert response.choices[0].message.content == "Hi there, friend!"
    assert response.id.startswith("chatcmpl-")
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (prompt, output)
    price = PriceBook.default().lookup("gpt-4o")
    expected = price.cost(TokenUsage(input_tokens=prompt, output_tokens=output))
    assert response_cost(response) == expected == gb.current_cost()


def test_mock_stream_and_mock_failure() -> None:
    stream = completion("claude-3-5-haiku-latest", HI, mock_response="a b c", stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream) == "a b c"
    assert stream.cost is not None and stream.cost > 0

    spent = gb.current_cost()
    with pytest.raises(ProviderError):
        completion("gpt-4o", HI, mock_response=ProviderError("boom", status_code=500))
    assert gb.current_cost() == spent and nothing_held()


def test_mock_response_respects_max_tokens() -> None:
    response = completion("gpt-4o", HI, mock_response="one two three four five", max_tokens=2)
    assert response.usage.completion_tokens == 2
    assert response.choices[0].finish_reason == "length"


# --------------------------------------------------------------------------- routing


def test_provider_table_covers_the_usual_providers() -> None:
    table = providers()
    assert len(table) >= 20
    for name in (
        "openai",
        "azure",
        "anthropic",
        "groq",
        "together_ai",
        "fireworks_ai",
        "deepseek",
        "mistral",
        "xai",
        "openrouter",
        "perplexity",
        "cerebras",
        "gemini",
        "ollama",
        "lm_studio",
        "vllm",
        "nvidia_nim",
        "deepinfra",
        "sambanova",
        "anyscale",
        "hyperbolic",
    ):
        assert name in table

    route = resolve("groq/llama-3.1-8b-instant", api_key="k")
    assert (route.base_url, route.model) == (
        "https://api.groq.com/openai/v1",
        "llama-3.1-8b-instant",
    )
    assert resolve("together/meta-llama/Llama-3-8b").provider.name == "together_ai"
    assert resolve("together/meta-llama/Llama-3-8b").model == "meta-llama/Llama-3-8b"
    assert str(resolve("gemini/gemini-2.0-flash").base_url).startswith("https://generativelanguage")
    assert resolve("claude-sonnet-4-5").provider.name == "anthropic"
    assert resolve("gpt-4o").provider.name == "openai"
    assert resolve("ollama/llama3").api_key == "not-needed"
    assert resolve("meta/llama", api_base="http://x/v1").provider.name == "openai_compatible"
    with pytest.raises(InvalidInputError):
        resolve("nosuchprovider/model")
    with pytest.raises(InvalidInputError):
        resolve("azure/deployment")  # no endpoint configured


def test_environment_overrides_base_and_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GROQ_API_KEY", "from-env")
    monkeypatch.setenv("GROQ_API_BASE", "http://127.0.0.1:1/v1")
    route = resolve("groq/x")
    assert (route.api_key, route.base_url) == ("from-env", "http://127.0.0.1:1/v1")


def test_azure_deployment_priced_by_its_base_model(fake: FakeLLMServer) -> None:
    response = completion(
        "azure/my-gpt4o",
        HI,
        api_base=fake.url,
        api_key="k",
        api_version="2024-10-21",
        pricing_model="gpt-4o",
        max_retries=0,
    )
    assert response_cost(response) == GPT4O_CALL
    sent = fake.last()
    assert sent.path == "/openai/deployments/my-gpt4o/chat/completions"
    assert sent.headers["api-key"] == "k"
    assert gb.status().by_model == {"azure/my-gpt4o": GPT4O_CALL}


def test_provider_specific_fields_travel_in_the_body(fake: FakeLLMServer) -> None:
    completion("gpt-4o", HI, top_k=5, temperature=0.2, **openai_args(fake))
    body = fake.last().body
    assert body["top_k"] == 5 and body["temperature"] == 0.2


# --------------------------------------------------------------------------- async


async def test_acompletion_non_stream_and_stream(fake: FakeLLMServer) -> None:
    response = await acompletion("gpt-4o", HI, **openai_args(fake))
    assert response_cost(response) == GPT4O_CALL

    stream = await acompletion("claude-3-5-haiku-latest", HI, stream=True, **anthropic_args(fake))
    text = "".join([c.choices[0].delta.content or "" async for c in stream])
    assert text == "Hello from the fake server"
    assert stream.cost == HAIKU_CALL
    assert gb.current_cost() == GPT4O_CALL + HAIKU_CALL
    assert nothing_held()


async def test_acompletion_errors_and_concurrency(fake: FakeLLMServer) -> None:
    fake.fail_next(500)
    with pytest.raises(ProviderServerError):
        await acompletion("gpt-4o", HI, **openai_args(fake))
    assert nothing_held() and gb.current_cost() == 0

    gb.set_max_budget(1)
    results = await asyncio.gather(
        *(acompletion("gpt-4o", HI, **openai_args(fake)) for _ in range(10))
    )
    assert all(response_cost(r) == GPT4O_CALL for r in results)
    assert gb.current_cost() == 10 * GPT4O_CALL


@pytest.mark.parametrize(
    ("model", "variable", "base_variable"),
    [
        ("gpt-4o", "OPENAI_API_KEY", "OPENAI_API_BASE"),
        ("claude-3-5-haiku-latest", "ANTHROPIC_API_KEY", "ANTHROPIC_API_BASE"),
        ("groq/llama-3.1-8b-instant", "GROQ_API_KEY", "GROQ_API_BASE"),
    ],
)
def test_a_missing_key_fails_at_once_naming_the_variable(
    fake: FakeLLMServer,
    monkeypatch: pytest.MonkeyPatch,
    model: str,
    variable: str,
    base_variable: str,
) -> None:
    for name in providers()[resolve(model, api_key="k").provider.name].api_key_env:
        monkeypatch.delenv(name, raising=False)
    base = fake.anthropic_url if variable == "ANTHROPIC_API_KEY" else fake.openai_url
    monkeypatch.setenv(base_variable, base)  # were anything sent, the fake would see it
    with pytest.raises(ProviderAuthError) as caught:
        completion(model, HI)
    assert f"${variable}" in str(caught.value)
    assert fake.count() == 0
    assert gb.status().held == 0 and gb.current_cost() == 0
