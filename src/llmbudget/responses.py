"""Response shapes: OpenAI chat-completion objects built from mocks and from Anthropic
messages and stream events, and the mock transport behind ``mock_response``. Pure: no I/O.

:func:`llmbudget.completion` always returns the OpenAI SDK's ``ChatCompletion`` (or, for
``stream=True``, ``ChatCompletionChunk`` objects); when the ``openai`` package is not
installed, an :class:`AttrDict` of the same shape (``r.choices[0].message.content`` and
``r["choices"][0]["message"]["content"]`` both work).

>>> r = build_completion(mock_completion("gpt-4o", "Hi!", prompt_tokens=9, completion_tokens=2))
>>> r.choices[0].message.content, r.usage.total_tokens
('Hi!', 11)
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any

__all__ = [
    "AttrDict",
    "anthropic_events",
    "build_chunk",
    "build_completion",
    "mock_anthropic_message",
    "mock_chunks",
    "mock_completion",
    "truncate_to_tokens",
]


class AttrDict(dict[str, Any]):
    """A ``dict`` whose keys are also attributes (nested dicts and lists included).

    >>> AttrDict({"a": {"b": [{"c": 1}]}}).a.b[0].c
    1
    """

    def __init__(self, data: Mapping[str, Any] | None = None, **extra: Any) -> None:
        super().__init__()
        for key, value in {**(data or {}), **extra}.items():
            self[key] = _wrap(value)

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def model_dump(self, **_: Any) -> dict[str, Any]:
        """Plain ``dict`` copy, as pydantic models offer."""
        return json.loads(json.dumps(self, default=str))  # type: ignore[no-any-return]


def _wrap(value: Any) -> Any:
    if isinstance(value, Mapping) and not isinstance(value, AttrDict):
        return AttrDict(value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


def _build(kind: str, data: Mapping[str, Any]) -> Any:
    try:
        from openai.types.chat import ChatCompletion, ChatCompletionChunk
    except ImportError:  # the openai SDK is an optional extra
        return AttrDict(data)
    cls = ChatCompletion if kind == "completion" else ChatCompletionChunk
    return cls.model_validate(dict(data))


def build_completion(data: Mapping[str, Any]) -> Any:
    """An OpenAI ``ChatCompletion`` from its JSON shape (an :class:`AttrDict` without the SDK)."""
    return _build("completion", data)


def build_chunk(data: Mapping[str, Any]) -> Any:
    """An OpenAI ``ChatCompletionChunk`` from its JSON shape."""
    return _build("chunk", data)


# --------------------------------------------------------------------------- mocks


def truncate_to_tokens(text: str, model: str, limit: int | None) -> tuple[str, int, bool]:
    """``text`` cut to at most ``limit`` tokens of ``model``: (text, tokens, truncated).

    >>> truncate_to_tokens("one two three four", "gpt-4o", 2)
    ('one two', 2, True)
    """
    from llmbudget.tokens import count_tokens

    total = count_tokens(text, model)
    if limit is None or total <= limit:
        return text, total, False
    # Largest prefix that fits; token counts grow with the prefix, so bisect on length.
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count_tokens(text[:mid], model) <= limit:
            lo = mid
        else:
            hi = mid - 1
    cut = text[:lo].rstrip()
    return cut, count_tokens(cut, model), True


def _completion_id() -> str:
    return f"chatcmpl-llmbudget-{uuid.uuid4().hex[:24]}"


def mock_completion(
    model: str,
    content: str,
    *,
    prompt_tokens: int,
    completion_tokens: int,
    finish_reason: str = "stop",
) -> dict[str, Any]:
    """The JSON shape of a chat completion answering ``content``, with its usage."""
    return {
        "id": _completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish_reason,
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def mock_chunks(
    model: str,
    content: str,
    *,
    prompt_tokens: int,
    completion_tokens: int,
    finish_reason: str = "stop",
) -> list[dict[str, Any]]:
    """The chunks a streamed :func:`mock_completion` arrives in; the last carries usage
    (as with ``stream_options={"include_usage": True}``)."""
    base = {"id": _completion_id(), "object": "chat.completion.chunk", "created": int(time.time())}
    base["model"] = model

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    chunks = [chunk({"role": "assistant", "content": ""})]
    chunks += [chunk({"content": piece}) for piece in re.findall(r"\s*\S+|\s+$", content)]
    chunks.append(chunk({}, finish_reason))
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    chunks.append({**base, "choices": [], "usage": usage})
    return chunks


# --------------------------------------------------------------------------- Anthropic mocks


def mock_anthropic_message(
    model: str, content: str, *, input_tokens: int, output_tokens: int, stop_reason: str
) -> dict[str, Any]:
    """The JSON shape of an Anthropic ``Message`` answering ``content``."""
    return {
        "id": f"msg_llmbudget_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": content}],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }


def anthropic_events(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The stream events an Anthropic ``message`` arrives in (each event's SSE name is its
    ``type``)."""
    text = message["content"][0]["text"]
    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None,
             "usage": {"input_tokens": usage["input_tokens"], "output_tokens": 1}}  # fmt: skip
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": start},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ]
    for piece in re.findall(r"\s*\S+|\s+$", text):
        delta = {"type": "text_delta", "text": piece}
        events.append({"type": "content_block_delta", "index": 0, "delta": delta})
    events += [
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
            "usage": {"output_tokens": usage["output_tokens"]},
        },
        {"type": "message_stop"},
    ]
    return events
