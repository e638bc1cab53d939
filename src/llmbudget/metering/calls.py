"""What a request will be billed for, read from its body: one :class:`BillableCall`.

Every door reads the request it is about to send through :func:`describe`, whatever API
it speaks:

==============  ==========================================  ============================
``api``         prompt                                      output limit (one field)
==============  ==========================================  ============================
``chat``        ``messages``, ``tools``/``functions``,      ``max_completion_tokens`` or
                ``response_format``, ``tool_choice``...     ``max_tokens`` (equal if both)
``responses``   ``instructions``, ``input``, ``tools``      ``max_output_tokens``
``messages``    ``system``, ``messages``, ``tools``         ``max_tokens``
``completions`` ``prompt`` (text or token ids)              ``max_tokens`` (default 16),
                                                            × ``best_of`` or ``n``
``embeddings``  ``input`` (text or token ids)               none
==============  ==========================================  ============================

A request that cannot be budgeted as sent raises
:class:`~llmbudget.errors.InvalidRequestError` (naming the field) before anything is
reserved: a malformed message, two different output limits, ``n`` out of range, or a
feature whose cost cannot be bounded here (``background: true`` on Responses).

>>> call = describe("chat", {"model": "gpt-4o", "max_tokens": 50,
...                          "messages": [{"role": "user", "content": "hello world"}]})
>>> call.prompt_tokens, call.requested_cap, call.n
(9, 50, 1)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from llmbudget.errors import InvalidInputError, InvalidRequestError
from llmbudget.tokens import count_message_tokens, count_tokens, vocabulary_loaded

__all__ = ["API_CAP_FIELDS", "MAX_N", "Api", "BillableCall", "describe"]

Api = Literal["chat", "responses", "messages", "embeddings", "completions"]

#: The request fields that limit generated tokens, per API.
API_CAP_FIELDS: Mapping[str, tuple[str, ...]] = {
    "chat": ("max_completion_tokens", "max_tokens"),
    "responses": ("max_output_tokens",),
    "messages": ("max_tokens",),
    "completions": ("max_tokens",),
    "embeddings": (),
}
#: Most choices one request may ask for (``n``, ``best_of``).
MAX_N = 128
# The legacy completions endpoint's documented default output limit.
_COMPLETIONS_DEFAULT_CAP = 16
# Model families that bill reasoning tokens they do not show (OpenAI's o-series and GPT-5,
# Gemini's thinking models, ...): a response without usage cannot be costed from its text.
_HIDDEN_REASONING = (
    "o1",
    "o3",
    "o4",
    "gpt-5",
    "gpt-oss",
    "codex",
    "gemini-2.5",
    "gemini-3",
    "grok-3-mini",
    "grok-4",
    "deepseek-reasoner",
)
_ROLES = {
    "chat": frozenset({"system", "developer", "user", "assistant", "tool", "function"}),
    "messages": frozenset({"user", "assistant"}),
}
_MAX_USER = 256  # the OpenAI `user` field: an id, not a document


@dataclass(frozen=True, slots=True)
class BillableCall:
    """One request as the budget sees it. Token counts are for ``tokenizer_model``."""

    api: Api
    model: str
    prompt_tokens: int
    n: int = 1
    requested_cap: int | None = None
    stream: bool = False
    wants_usage: bool = False
    cache_writes: bool = False
    hidden_reasoning: bool = False
    unbounded_prompt: bool = False
    end_user: str | None = None
    tokenizer: str = ""  # the model whose tokens were counted ("": ``model``)
    #: ``prompt_tokens`` is a proven upper bound (bytes), not a count: cheap, and enough
    #: unless it decides something (see :class:`~llmbudget.metering.meter.Meter`).
    prompt_bound: bool = False
    #: The upstream demands an output limit although this API does not (a chat request
    #: translated to Anthropic's Messages API).
    cap_required: bool = False

    @property
    def counter(self) -> str:
        """The model to count generated text with (the one the prompt was counted for)."""
        return self.tokenizer or self.model

    @property
    def has_output(self) -> bool:
        return self.api != "embeddings"

    @property
    def requires_cap(self) -> bool:
        """Anthropic's Messages API refuses a request without ``max_tokens``."""
        return self.api == "messages" or self.cap_required


def describe(
    api: Api, body: Mapping[str, Any], tokenizer_model: str | None = None, *, bound: bool = False
) -> BillableCall:
    """The :class:`BillableCall` of a request ``body`` for ``api``; prompt tokens are
    counted for ``tokenizer_model`` (default: the body's ``model``).

    ``bound=True`` allows a proven upper bound instead (UTF-8 bytes; ``prompt_bound`` is
    then set) while that model's vocabulary is not loaded: a process that never needs an
    exact count never loads one. Once loaded, counts are exact again.
    """
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequestError("model is required", "model")
    counting = tokenizer_model or model
    counter = _Counter(counting, bound and not vocabulary_loaded(counting))
    stream = _bool(body, "stream")
    end_user = _user(body)
    call: BillableCall
    if api == "chat":
        call = _chat(body, model, counter, stream, end_user)
    elif api == "responses":
        call = _responses(body, model, counter, stream, end_user)
    elif api == "messages":
        call = _messages(body, model, counter, stream)
    elif api == "completions":
        call = _completions(body, model, counter, stream, end_user)
    elif api == "embeddings":
        tokens = _texts(body.get("input"), counter, "input")
        call = BillableCall("embeddings", model, tokens, end_user=end_user)
    else:
        raise InvalidInputError(f"unknown API {api!r}")
    if counter.bound:
        call = replace(call, prompt_bound=True)
    return replace(call, tokenizer=counter.model) if counter.model != model else call


# --------------------------------------------------------------------------- per API


def _chat(
    body: Mapping[str, Any], model: str, counter: _Counter, stream: bool, end_user: str | None
) -> BillableCall:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("messages must be a non-empty list", "messages")
    _check_messages(messages, "chat")
    tools = body.get("tools") or body.get("functions")
    tokens = _prompt(messages, counter, tools)
    for extra in ("response_format", "tool_choice", "function_call", "prediction"):
        # Not in the chat template's count, but sent to the model: counted as their JSON.
        if body.get(extra) is not None:
            tokens += counter.text(_json(body[extra]))
    options = body.get("stream_options")
    if options is not None and not isinstance(options, Mapping):
        raise InvalidRequestError("stream_options must be an object", "stream_options")
    return BillableCall(
        "chat",
        model,
        tokens,
        n=_n(body, "n"),
        requested_cap=_cap(body, API_CAP_FIELDS["chat"]),
        stream=stream,
        wants_usage=bool(stream and options and options.get("include_usage")),
        cache_writes=_marks_cache(body),
        hidden_reasoning=_reasons(model, body.get("reasoning_effort")),
        end_user=end_user,
    )


def _responses(
    body: Mapping[str, Any], model: str, counter: _Counter, stream: bool, end_user: str | None
) -> BillableCall:
    if body.get("background"):
        # The answer is produced later, out of this request's sight: its real cost could
        # never be settled, so the call is refused rather than let through unbudgeted.
        raise InvalidRequestError(
            "background responses cannot be budgeted: send the request without background",
            "background",
        )
    items: list[Any] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise InvalidRequestError("instructions must be a string", "instructions")
        items.append({"role": "system", "content": instructions})
    given = body.get("input")
    if isinstance(given, str):
        items.append({"role": "user", "content": given})
    elif isinstance(given, list):
        if not all(isinstance(i, Mapping) for i in given):
            raise InvalidRequestError("each input item must be an object", "input")
        items.extend(given)
    elif given is not None:
        raise InvalidRequestError("input must be a string or a list of items", "input")
    if not items:
        raise InvalidRequestError("input is required", "input")
    tokens = _prompt(items, counter, body.get("tools"))
    for extra in ("text", "tool_choice"):
        if body.get(extra) is not None:
            tokens += counter.text(_json(body[extra]))
    return BillableCall(
        "responses",
        model,
        tokens,
        requested_cap=_cap(body, API_CAP_FIELDS["responses"]),
        stream=stream,
        hidden_reasoning=_reasons(model, body.get("reasoning")),
        # Earlier turns the server keeps (previous_response_id, a conversation) are billed
        # as prompt but invisible here: the worst case assumes the whole context window.
        unbounded_prompt=bool(body.get("previous_response_id") or body.get("conversation")),
        end_user=end_user,
    )


def _messages(body: Mapping[str, Any], model: str, counter: _Counter, stream: bool) -> BillableCall:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("messages must be a non-empty list", "messages")
    _check_messages(messages, "messages")
    items: list[Any] = []
    system = body.get("system")
    if system is not None:
        if not isinstance(system, str | list):
            raise InvalidRequestError("system must be a string or a list of blocks", "system")
        items.append({"role": "system", "content": system})
    items.extend(messages)
    cap = _cap(body, API_CAP_FIELDS["messages"])
    thinking = body.get("thinking")
    if isinstance(thinking, Mapping) and thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens")
        if cap is not None and isinstance(budget, int) and budget >= cap:
            raise InvalidRequestError("thinking.budget_tokens must be below max_tokens", "thinking")
    return BillableCall(
        "messages",
        model,
        _prompt(items, counter, _as_openai_tools(body.get("tools"))),
        requested_cap=cap,
        stream=stream,
        cache_writes=_marks_cache(body),
        hidden_reasoning=_reasons(model, thinking),
    )


def _completions(
    body: Mapping[str, Any], model: str, counter: _Counter, stream: bool, end_user: str | None
) -> BillableCall:
    prompt = body.get("prompt")
    if prompt is None:
        raise InvalidRequestError("prompt is required", "prompt")
    n = _n(body, "n")
    best_of = _n(body, "best_of") if body.get("best_of") is not None else n
    if best_of < n:
        raise InvalidRequestError("best_of must be at least n", "best_of")
    cap = _cap(body, API_CAP_FIELDS["completions"])
    options = body.get("stream_options")
    return BillableCall(
        "completions",
        model,
        _texts(prompt, counter, "prompt"),
        # best_of candidates are all generated, and billed, even if only n come back.
        n=best_of,
        requested_cap=_COMPLETIONS_DEFAULT_CAP if cap is None else cap,
        stream=stream,
        wants_usage=bool(stream and isinstance(options, Mapping) and options.get("include_usage")),
        hidden_reasoning=False,
        end_user=end_user,
    )


# --------------------------------------------------------------------------- checks


def _check_messages(messages: Sequence[Any], api: str) -> None:
    roles = _ROLES[api]
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, Mapping):
            raise InvalidRequestError(f"{where} must be an object", "messages")
        role = message.get("role")
        if not isinstance(role, str) or role not in roles:
            raise InvalidRequestError(
                f"{where}.role must be one of {', '.join(sorted(roles))}, got {role!r}", "messages"
            )
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise InvalidRequestError(
                f"{where}.content must be a string, a list of parts or null", "messages"
            )
        if isinstance(content, list) and not all(isinstance(p, Mapping | str) for p in content):
            raise InvalidRequestError(f"{where}.content parts must be objects", "messages")
        if content is None and api == "messages":
            raise InvalidRequestError(f"{where}.content is required", "messages")
        calls = message.get("tool_calls")
        if calls is not None and (
            not isinstance(calls, list) or not all(isinstance(c, Mapping) for c in calls)
        ):
            raise InvalidRequestError(f"{where}.tool_calls must be a list of objects", "messages")


def _cap(body: Mapping[str, Any], fields: Sequence[str]) -> int | None:
    """The caller's output limit. Two fields given must agree: only one is forwarded (the
    one reserved for), and an upstream reading the other could generate past the hold."""
    given: dict[str, int] = {}
    for name in fields:
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidRequestError(f"{name} must be a positive integer", name)
        given[name] = value
    if len(set(given.values())) > 1:
        a, b = given
        raise InvalidRequestError(
            f"{a} and {b} differ ({given[a]} and {given[b]}): send one of them, "
            "or the same number in both",
            fields[-1],
        )
    return next(iter(given.values()), None)


def _n(body: Mapping[str, Any], name: str) -> int:
    value = body.get(name, 1)
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_N:
        raise InvalidRequestError(f"{name} must be an integer in 1..{MAX_N}", name)
    return value


def _bool(body: Mapping[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidRequestError(f"{name} must be a boolean", name)
    return value


def _user(body: Mapping[str, Any]) -> str | None:
    user = body.get("user")
    if user is None or user == "":
        return None
    if not isinstance(user, str):
        raise InvalidRequestError("user must be a string", "user")
    if len(user) > _MAX_USER:
        raise InvalidRequestError(f"user must be at most {_MAX_USER} characters", "user")
    return user


def _reasons(model: str, setting: object) -> bool:
    if isinstance(setting, Mapping):
        if setting.get("type") == "enabled" or setting.get("effort") not in (None, "none"):
            return True
    elif isinstance(setting, str) and setting != "none":
        return True
    name = model.rsplit("/", 1)[-1].lower()
    return name.startswith(_HIDDEN_REASONING)


def _marks_cache(body: Mapping[str, Any]) -> bool:
    # Anthropic-style prompt caching: marked blocks may be billed at the cache-write price.
    return "cache_control" in _json(body)


# --------------------------------------------------------------------------- counting


@dataclass(frozen=True, slots=True)
class _Counter:
    """Counts for one tokenizer model, exactly or (``bound``) as an upper bound."""

    model: str
    bound: bool

    def text(self, text: str) -> int:
        return count_tokens(text, self.model, bound=self.bound)

    def messages(self, items: list[Any], tools: Sequence[Any] | None) -> int:
        return count_message_tokens(items, self.model, tools=tools, bound=self.bound)


def _prompt(items: Sequence[Any], counter: _Counter, tools: object) -> int:
    if tools is not None and not isinstance(tools, list):
        raise InvalidRequestError("tools must be a list", "tools")
    try:
        return counter.messages(list(items), tools or None)
    except (InvalidInputError, TypeError, AttributeError) as exc:
        raise InvalidRequestError(f"cannot read the prompt: {exc}", "messages") from None


def _texts(value: object, counter: _Counter, param: str) -> int:
    """Tokens of text inputs: a string, a list of strings, token ids, or lists of ids."""
    if isinstance(value, str):
        if not value:
            raise InvalidRequestError(f"{param} must not be empty", param)
        return counter.text(value)
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            return sum(counter.text(v) for v in value)
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return len(value)  # already token ids
        if all(
            isinstance(v, list)
            and v
            and all(isinstance(t, int) and not isinstance(t, bool) for t in v)
            for v in value
        ):
            return sum(len(v) for v in value)
    raise InvalidRequestError(
        f"{param} must be a non-empty string, list of strings, or list of token arrays", param
    )


def _as_openai_tools(tools: object) -> object:
    """Anthropic tools counted as OpenAI counts function definitions."""
    if not isinstance(tools, list):
        return tools
    out: list[Any] = []
    for tool in tools:
        if isinstance(tool, Mapping) and "input_schema" in tool and "function" not in tool:
            function = {k: v for k, v in tool.items() if k != "input_schema"}
            out.append(
                {"type": "function", "function": {**function, "parameters": tool["input_schema"]}}
            )
        else:
            out.append(tool)
    return out


def _json(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
