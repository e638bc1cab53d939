"""Self-hosted models cost $0 by provider; an unknown model of a paid provider still raises."""

from __future__ import annotations

from typing import Any

import pytest

from llmbudget import BudgetManager
from llmbudget.clock import FrozenClock
from llmbudget.errors import UnknownModelError
from llmbudget.providers import Provider, register_provider
from llmbudget.self_hosted import mark_self_hosted, self_hosted_provider

USAGE = {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500}


class LiteLLMResponse:
    """The parts of LiteLLM's ``ModelResponse`` that matter here: a ``model`` as the
    server named it, and the provider LiteLLM routed to in ``_hidden_params``."""

    def __init__(self, model: str, provider: str) -> None:
        self.model = model
        self.usage = USAGE
        self._hidden_params = {"custom_llm_provider": provider}


@pytest.fixture
def bm(clock: FrozenClock) -> BudgetManager:
    manager = BudgetManager("local", store="memory://", clock=clock)
    manager.create_budget(total_budget=1, user="u", duration="daily")
    return manager


@pytest.mark.parametrize(
    "model",
    [
        "ollama/llama3",
        "ollama_chat/llama3.1:8b",
        "lm_studio/qwen2.5-7b-instruct",
        "lmstudio/qwen2.5-7b-instruct",
        "vllm/meta-llama/Llama-3.1-8B-Instruct",
        "hosted_vllm/meta-llama/Llama-3.1-8B-Instruct",
        "llamafile/mistral-7b",
        "llama_cpp/llama-3.2-3b",
        "llama.cpp/llama-3.2-3b",
        # A self-hosted copy of a model that paid providers also sell: still $0.
        "ollama/llama3.1-8b",
    ],
)
def test_self_hosted_responses_cost_nothing(bm: BudgetManager, model: str) -> None:
    response = {"model": model, "usage": USAGE}
    record = bm.update_cost(user="u", completion_obj=response)["user"]
    assert record["current_cost"] == 0 and record["model_cost"] == {model: 0}
    bm.update_cost(user="u", model=model, input_text="hello", output_text="hi")
    hold = bm.reserve("u", model=model, messages=[{"role": "user", "content": "hi"}])
    assert hold.amount == 0
    assert bm.settle(hold, completion_obj=response) == 0
    assert bm.get_current_cost("u") == 0


def test_litellm_responses_name_their_provider(bm: BudgetManager) -> None:
    # vLLM and Ollama answer with the bare model id; LiteLLM keeps who served it.
    bm.update_cost(user="u", completion_obj=LiteLLMResponse("llama3", "ollama"))
    bm.update_cost(user="u", completion_obj=LiteLLMResponse("Qwen/Qwen2.5-7B", "hosted_vllm"))
    assert bm.get_current_cost("u") == 0
    assert set(bm.get_model_cost("u")) == {"llama3", "Qwen/Qwen2.5-7B"}
    # The same for a paid provider is priced as usual.
    bm.update_cost(user="u", completion_obj=LiteLLMResponse("gpt-4o", "openai"))
    assert bm.get_current_cost("u") == 0.0075


def test_unknown_models_of_paid_providers_still_raise(bm: BudgetManager) -> None:
    for model in ("gpt-99-turbo", "groq/no-such-model", "openai/llama3"):
        with pytest.raises(UnknownModelError):
            bm.update_cost(user="u", completion_obj={"model": model, "usage": USAGE})
        with pytest.raises(UnknownModelError):
            bm.update_cost(user="u", model=model, input_text="a", output_text="b")
    with pytest.raises(UnknownModelError):
        bm.update_cost(user="u", completion_obj=LiteLLMResponse("mystery", "openai"))
    assert bm.get_current_cost("u") == 0 and bm.get_model_cost("u") == {}


def test_deployments_marked_self_hosted(bm: BudgetManager) -> None:
    # A provider of one's own (it stays registered: names are process-wide, as in LiteLLM).
    register_provider(Provider("gpu-box", "http://gpu.internal:8000/v1", local=True))
    bm.update_cost(user="u", completion_obj={"model": "gpu-box/any-model", "usage": USAGE})
    name = "openai/team-qwen-local"
    with pytest.raises(UnknownModelError):
        bm.update_cost(user="u", completion_obj={"model": name, "usage": USAGE})
    mark_self_hosted(name)
    bm.update_cost(user="u", completion_obj={"model": name, "usage": USAGE})
    assert bm.get_current_cost("u") == 0
    assert self_hosted_provider("gpu-box/x") == "gpu-box"
    assert self_hosted_provider(name.upper()) == name.upper()
    assert self_hosted_provider(None) is None and self_hosted_provider("groq/llama3") is None


def test_helper_ignores_what_is_not_a_litellm_response() -> None:
    odd: Any = type("Odd", (), {"_hidden_params": "not a mapping"})()
    assert self_hosted_provider("mystery", odd) is None
    assert self_hosted_provider("mystery", {"_hidden_params": {"custom_llm_provider": 3}}) is None
