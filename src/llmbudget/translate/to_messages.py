"""OpenAI chat → Anthropic Messages: requests, and Claude's answers and stream events back
as chat completions and chunks (OpenAI-shaped clients reaching Claude natively).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from llmbudget.errors import InvalidInputError
from llmbudget.fields import as_dict as _as_dict
from llmbudget.fields import get as _get

__all__ = [
    "AnthropicChunks",
    "anthropic_request",
    "anthropic_to_openai",
    "anthropic_usage_to_openai",
]

from llmbudget.translate.content import text_of


def _completion_id() -> str:
    return f"chatcmpl-llmbudget-{uuid.uuid4().hex[:24]}"


_STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def _anthropic_part(part: object) -> dict[str, Any]:
    if isinstance(part, str):
        return {"type": "text", "text": part}
    data = _as_dict(part)
    kind = data.get("type")
    if kind == "text":
        out: dict[str, Any] = {"type": "text", "text": data.get("text", "")}
    elif kind == "image_url":
        image = data.get("image_url")
        url = image.get("url") if isinstance(image, Mapping) else image
        url = str(url or "")
        match = re.match(r"data:([^;]+);base64,(.*)", url, re.DOTALL)
        if match:
            source = {"type": "base64", "media_type": match.group(1), "data": match.group(2)}
        else:
            source = {"type": "url", "url": url}
        out = {"type": "image", "source": source}
    else:
        out = data  # already an Anthropic block (image, document, tool_result...)
    if "cache_control" in data:
        out["cache_control"] = data["cache_control"]
    return out


def _anthropic_content(content: object) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return [_anthropic_part(part) for part in content]  # type: ignore[attr-defined]


def anthropic_request(messages: Sequence[Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """Anthropic Messages API arguments for an OpenAI-style chat request.

    System (and developer) messages become ``system``; tool calls become ``tool_use``
    blocks and ``tool`` messages ``tool_result`` blocks; consecutive messages of one role
    are merged, as Anthropic requires alternation. ``params`` are OpenAI request fields:
    ``stop``, ``tools``, ``tool_choice``, ``user`` and ``max_tokens`` are translated,
    ``n`` > 1 is refused, the rest passed on.

    >>> anthropic_request([{"role": "system", "content": "Be brief."},
    ...                    {"role": "user", "content": "Hi"}], {"max_tokens": 5})["system"]
    'Be brief.'
    """
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for message in messages:
        data = _as_dict(message)
        role = data.get("role")
        content = data.get("content")
        if role in ("system", "developer"):
            system.append(text_of(content))
            continue
        if role == "tool":
            blocks: list[dict[str, Any]] = [
                {
                    "type": "tool_result",
                    "tool_use_id": data.get("tool_call_id"),
                    "content": text_of(content) if not isinstance(content, str) else content,
                }
            ]
            role = "user"
        else:
            blocks = _anthropic_content(content)
        if role == "assistant":
            for call in data.get("tool_calls") or ():
                function = _get(call, "function") or {}
                raw = _get(function, "arguments") or "{}"
                try:
                    arguments = json.loads(raw) if isinstance(raw, str) else raw
                except json.JSONDecodeError:
                    arguments = {"_raw": raw}
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": _get(call, "id"),
                        "name": _get(function, "name"),
                        "input": arguments,
                    }
                )
        if role not in ("user", "assistant"):
            raise InvalidInputError(f"message role {role!r} cannot be sent to Anthropic")
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})

    request: dict[str, Any] = {"messages": out}
    if system:
        request["system"] = "\n\n".join(s for s in system if s)
    for key, value in params.items():
        if value is None:
            continue
        if key in ("max_tokens", "max_completion_tokens"):
            request["max_tokens"] = value
        elif key == "stop":
            request["stop_sequences"] = [value] if isinstance(value, str) else list(value)
        elif key == "tools":
            request["tools"] = [_anthropic_tool(t) for t in value]
        elif key == "tool_choice":
            request["tool_choice"] = _anthropic_tool_choice(value)
        elif key == "user":
            request["metadata"] = {**request.get("metadata", {}), "user_id": value}
        elif key == "n":
            if value != 1:
                raise InvalidInputError("Anthropic returns one choice per call; n must be 1")
        elif key in ("stream_options", "parallel_tool_calls", "seed", "logprobs"):
            continue  # no Anthropic equivalent; harmless to leave out
        else:
            request[key] = value
    return request


def _anthropic_tool(tool: object) -> dict[str, Any]:
    data = _as_dict(tool)
    function = data.get("function")
    if data.get("type") == "function" and isinstance(function, Mapping):
        out = {
            "name": function.get("name"),
            "description": function.get("description") or "",
            "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
        }
        if "cache_control" in data:
            out["cache_control"] = data["cache_control"]
        return out
    return data  # already an Anthropic tool (or a server tool such as web_search)


def _anthropic_tool_choice(choice: object) -> dict[str, Any]:
    if choice == "auto":
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    data = _as_dict(choice)
    function = data.get("function")
    if isinstance(function, Mapping):
        return {"type": "tool", "name": function.get("name")}
    return data


def anthropic_usage_to_openai(usage: object) -> dict[str, Any]:
    """OpenAI usage fields for an Anthropic usage block, cache fields kept.

    ``prompt_tokens`` includes cache reads and writes (Anthropic's ``input_tokens`` does
    not); ``prompt_tokens_details`` says how many of them were cached or written, in the
    fields :func:`llmbudget.pricing.normalize_usage` prices exactly.

    >>> anthropic_usage_to_openai({"input_tokens": 10, "output_tokens": 5,
    ...     "cache_read_input_tokens": 90, "cache_creation_input_tokens": 0})["prompt_tokens"]
    100
    """
    uncached = int(_get(usage, "input_tokens") or 0)
    read = int(_get(usage, "cache_read_input_tokens") or 0)
    write = int(_get(usage, "cache_creation_input_tokens") or 0)
    output = int(_get(usage, "output_tokens") or 0)
    prompt = uncached + read + write
    details: dict[str, Any] = {"cached_tokens": read, "cache_creation_tokens": write}
    breakdown = _get(usage, "cache_creation")
    one_hour = int(_get(breakdown, "ephemeral_1h_input_tokens") or 0)
    if one_hour:
        details["cache_creation_token_details"] = {"ephemeral_1h_input_tokens": one_hour}
    return {
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt + output,
        "prompt_tokens_details": details,
        "cache_read_input_tokens": read,
        "cache_creation_input_tokens": write,
    }


def anthropic_to_openai(message: object, model: str | None = None) -> dict[str, Any]:
    """The OpenAI chat-completion JSON shape of an Anthropic ``Message``."""
    texts: list[str] = []
    thinking: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for block in _get(message, "content") or ():
        kind = _get(block, "type")
        if kind == "text":
            texts.append(str(_get(block, "text") or ""))
        elif kind == "thinking":
            thinking.append(str(_get(block, "thinking") or ""))
        elif kind == "tool_use":
            tool_calls.append(
                {
                    "id": _get(block, "id"),
                    "type": "function",
                    "function": {
                        "name": _get(block, "name"),
                        "arguments": json.dumps(_get(block, "input") or {}),
                    },
                }
            )
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if tool_calls:
        reply["tool_calls"] = tool_calls
    if thinking:
        reply["reasoning_content"] = "".join(thinking)
    stop = _get(message, "stop_reason")
    return {
        "id": _get(message, "id") or _completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": _get(message, "model") or model or "",
        "choices": [
            {
                "index": 0,
                "message": reply,
                "finish_reason": _STOP_REASONS.get(str(stop), "stop"),
                "logprobs": None,
            }
        ],
        "usage": anthropic_usage_to_openai(_get(message, "usage")),
    }


# --------------------------------------------------------------------------- Messages stream -> chat chunks


class AnthropicChunks:
    """Anthropic stream events (SDK objects or dicts) as OpenAI chat-chunk shapes.

    The usage chunk (at ``message_stop``) is produced only when ``usage_chunk`` is true,
    as an OpenAI stream carries it only when asked for.

    >>> t = AnthropicChunks("claude", usage_chunk=False)
    >>> t.chunks({"type": "content_block_delta", "index": 0,
    ...           "delta": {"type": "text_delta", "text": "Hi"}})[0]["choices"][0]["delta"]
    {'content': 'Hi'}
    """

    def __init__(self, model: str, usage_chunk: bool) -> None:
        self.model = model
        self.usage_chunk = usage_chunk
        self.id: str | None = None
        self.created = int(time.time())
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] = {}
        self._tool_index: dict[int, int] = {}

    def _base(self) -> dict[str, Any]:
        return {
            "id": self.id or "chatcmpl-llmbudget",
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
        }

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**self._base(), "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    def chunks(self, event: object) -> list[dict[str, Any]]:
        """The OpenAI chunks for one Anthropic event (none for most bookkeeping events)."""
        kind = _get(event, "type")
        if kind == "message_start":
            message = _get(event, "message")
            self.id = _get(message, "id") or self.id
            self.model = _get(message, "model") or self.model
            self.usage.update(
                {k: v for k, v in _as_dict(_get(message, "usage")).items() if v is not None}
            )
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = _get(event, "content_block")
            if _get(block, "type") == "tool_use":
                index = len(self._tool_index)
                self._tool_index[int(_get(event, "index") or 0)] = index
                call = {
                    "index": index,
                    "id": _get(block, "id"),
                    "type": "function",
                    "function": {"name": _get(block, "name"), "arguments": ""},
                }
                return [self._chunk({"tool_calls": [call]})]
            return []
        if kind == "content_block_delta":
            delta = _get(event, "delta")
            dtype = _get(delta, "type")
            if dtype == "text_delta":
                return [self._chunk({"content": _get(delta, "text")})]
            if dtype == "thinking_delta":
                return [self._chunk({"reasoning_content": _get(delta, "thinking")})]
            if dtype == "input_json_delta":
                index = self._tool_index.get(int(_get(event, "index") or 0), 0)
                call = {"index": index, "function": {"arguments": _get(delta, "partial_json")}}
                return [self._chunk({"tool_calls": [call]})]
            return []
        if kind == "message_delta":
            self.usage.update(
                {k: v for k, v in _as_dict(_get(event, "usage")).items() if v is not None}
            )
            reason = _get(_get(event, "delta"), "stop_reason")
            self.finish_reason = _STOP_REASONS.get(str(reason), "stop")
            return [self._chunk({}, self.finish_reason)]
        if kind == "message_stop" and self.usage_chunk and self.usage:
            return [{**self._base(), "choices": [], "usage": anthropic_usage_to_openai(self.usage)}]
        return []
