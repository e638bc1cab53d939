"""What an LLM call costs, in exact ``Decimal`` dollars, offline, for thousands of models.

Prices come from `genai-prices <https://pypi.org/project/genai-prices/>`_'s bundled data
(no hand-written table, no network): every model it prices per token, under every
provider it lists. Your own prices (:meth:`PriceBook.register`, :meth:`PriceBook.load_file`
in llmbudget's format or LiteLLM's ``model_prices_and_context_window.json``) take
precedence over it.

Usage blocks from OpenAI (Chat Completions and Responses), Anthropic, Gemini, Bedrock
Converse, DeepSeek and LiteLLM are normalised into one :class:`TokenUsage`, minding where
each provider counts cache and reasoning tokens:

=================  ==========================================  ===========================
provider           prompt total                                output total
=================  ==========================================  ===========================
OpenAI chat        ``prompt_tokens`` (cached tokens included)  ``completion_tokens`` (incl.
                                                                reasoning and audio)
OpenAI Responses   ``input_tokens`` (cached included)          ``output_tokens`` (incl.
                                                                reasoning)
Anthropic          ``input_tokens`` + ``cache_creation_…`` +   ``output_tokens``
                   ``cache_read_…`` (cache is *not* included)
Gemini             ``promptTokenCount`` (cached included) +    ``candidatesTokenCount`` +
                   ``toolUsePromptTokenCount``                 ``thoughtsTokenCount``
=================  ==========================================  ===========================

Tiered prices (e.g. above 200k prompt tokens) apply to *all* tokens of a call once its
prompt total (cache reads and writes included) passes the threshold, as the providers bill.

>>> cost_from_usage("gpt-4o", {"prompt_tokens": 1000, "completion_tokens": 500})
Decimal('0.0075')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from llmbudget.errors import InvalidInputError, PricingError
from llmbudget.fields import first as _first
from llmbudget.pricing.book import PriceBook, default_prices
from llmbudget.pricing.types import Cost, ModelPrice, PriceTier, TokenUsage
from llmbudget.pricing.usage import normalize_usage

__all__ = [
    "Cost",
    "ModelPrice",
    "PriceBook",
    "PriceTier",
    "TokenUsage",
    "cost_from_response",
    "cost_from_text",
    "cost_from_usage",
    "default_prices",
    "normalize_usage",
    "prompt_cost",
    "worst_case_cost",
]

# --------------------------------------------------------------------------- public helpers


def cost_from_usage(
    model: str, usage: Mapping[str, Any] | object, *, prices: PriceBook | None = None
) -> Decimal:
    """Exact dollar cost of one call from the provider's usage block.

    ``usage`` may be a mapping or SDK object in any shape :func:`normalize_usage` accepts.

    >>> cost_from_usage("claude-3-5-haiku-latest", {"input_tokens": 1000, "output_tokens": 100})
    Decimal('0.0012')
    """
    book = prices if prices is not None else PriceBook.default()
    return book.lookup(model).cost(normalize_usage(usage))


def _find_usage(response: object) -> object:
    usage = _first(response, "usage", "usageMetadata", "usage_metadata")
    if usage is None:
        raise PricingError("response carries no usage block; it cannot be priced")
    return usage


def cost_from_response(
    response: Mapping[str, Any] | object,
    *,
    model: str | None = None,
    prices: PriceBook | None = None,
) -> Cost:
    """Price a whole provider response (OpenAI, Anthropic, Gemini, LiteLLM; dict or SDK object).

    The model comes from the response's ``model`` (Gemini: ``modelVersion``) unless given.

    >>> cost_from_response({"model": "gpt-4o-2024-08-06",
    ...     "usage": {"prompt_tokens": 1000, "completion_tokens": 500}}).amount
    Decimal('0.0075')
    """
    if response is None:
        raise PricingError("no response to price")
    usage = normalize_usage(_find_usage(response))
    name = model or _first(response, "model", "modelVersion", "model_version")
    if not isinstance(name, str) or not name:
        raise PricingError("the response names no model; pass model=")
    book = prices if prices is not None else PriceBook.default()
    amount = book.lookup(name).cost(usage)
    return Cost(name, amount, usage.input_tokens, usage.output_tokens)


def cost_from_text(
    model: str, input_text: str, output_text: str, *, prices: PriceBook | None = None
) -> Decimal:
    """Cost of a call given its prompt and completion text (tokens counted offline).

    ``input_text`` is priced as the API bills it: one user message, with the model's chat
    overhead (counted by :func:`~llmbudget.tokens.count_message_tokens`, as every prompt
    is metered); ``output_text`` as completion text, which carries no overhead.

    >>> cost_from_text("gpt-4o", "hello world", "hi")
    Decimal('0.0000325')
    """
    from llmbudget.tokens import count_message_tokens, count_tokens

    usage = TokenUsage(
        input_tokens=count_message_tokens(input_text, model),
        output_tokens=count_tokens(output_text, model),
    )
    book = prices if prices is not None else PriceBook.default()
    return book.lookup(model).cost(usage)


def prompt_cost(
    model: str,
    messages: Sequence[Any] | str,
    *,
    prices: PriceBook | None = None,
    tools: Sequence[Any] | None = None,
) -> Decimal:
    """Cost of sending ``messages`` (prompt only), tokens counted offline.

    >>> prompt_cost("gpt-4o", [{"role": "user", "content": "hello world"}])
    Decimal('0.0000225')
    """
    from llmbudget.tokens import count_message_tokens

    book = prices if prices is not None else PriceBook.default()
    price = book.lookup(model)
    tokens = count_message_tokens(messages, model, tools=tools)
    return price.cost(TokenUsage(input_tokens=tokens))


def worst_case_cost(
    model: str,
    messages: Sequence[Any] | str,
    max_tokens: int | None = None,
    *,
    prices: PriceBook | None = None,
    tools: Sequence[Any] | None = None,
) -> Decimal:
    """Most a chat call can cost: its prompt plus the largest completion it may be sent
    with — ``max_tokens`` when given, else the output cap every door of llmbudget sends
    (the model's max output where known, else
    :data:`~llmbudget.metering.DEFAULT_OUTPUT_CAP`, within the context window). Reasoning
    and audio output are counted at their rate where it is dearer. See
    :mod:`llmbudget.metering.policy`.

    >>> worst_case_cost("gpt-4o", [{"role": "user", "content": "hello world"}], max_tokens=100)
    Decimal('0.0010225')
    """
    from llmbudget.metering import BillableCall, default_cap, worst_case
    from llmbudget.tokens import count_message_tokens

    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 0
    ):
        raise InvalidInputError(f"max_tokens must be a non-negative int, got {max_tokens!r}")
    book = prices if prices is not None else PriceBook.default()
    price = book.lookup(model)
    call = BillableCall("chat", model, count_message_tokens(messages, model, tools=tools))
    cap = max_tokens if max_tokens is not None else default_cap(price, call)
    return worst_case(price, call, cap)
