"""Translating between OpenAI Chat Completions and Anthropic Messages, both ways. Pure.

* chat request → Messages request (:func:`anthropic_request`), Messages response → chat
  completion (:func:`anthropic_to_openai`), Messages stream events → chat chunks
  (:class:`AnthropicChunks`): OpenAI-shaped clients (``completion()``, the gateway's
  ``/v1/chat/completions``) reaching Claude natively.
* Messages request → chat request (:func:`chat_request`), chat completion → Messages
  response (:func:`message_from_chat`), chat chunks → Messages stream events
  (:class:`MessageEvents`): Anthropic-shaped clients (the ``anthropic`` SDK, Claude Code,
  the gateway's ``/v1/messages``) reaching any OpenAI-compatible model.
* Error bodies of either API in the other's shape (:func:`anthropic_error`,
  :func:`openai_error`).

System prompts, text and image parts, tools, tool calls and tool results, stop reasons and
usage (cache reads and writes included) are carried over; what one API has and the other
lacks is dropped (``top_k``, ``logprobs``) or refused when dropping it would change what
is billed (Anthropic server tools such as ``web_search``).

>>> chat_request({"model": "m", "max_tokens": 5, "system": "Be brief.",
...               "messages": [{"role": "user", "content": "Hi"}]})["messages"][0]
{'role': 'system', 'content': 'Be brief.'}
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from llmbudget.errors import InvalidInputError, InvalidRequestError
from llmbudget.fields import as_dict as _as_dict
from llmbudget.fields import get as _get

__all__ = [
    "AnthropicChunks",
    "MessageEvents",
    "anthropic_error",
    "anthropic_request",
    "anthropic_to_openai",
    "anthropic_usage_to_openai",
    "chat_request",
    "message_from_chat",
    "openai_error",
]


def _completion_id() -> str:
    return f"chatcmpl-llmbudget-{uuid.uuid4().hex[:24]}"


# --------------------------------------------------------------------------- chat -> Messages


_STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def _text_of(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return "".join(str(_get(part, "text") or "") for part in content)
    return "" if content is None else str(content)


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
            system.append(_text_of(content))
            continue
        if role == "tool":
            blocks: list[dict[str, Any]] = [
                {
                    "type": "tool_result",
                    "tool_use_id": data.get("tool_call_id"),
                    "content": _text_of(content) if not isinstance(content, str) else content,
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


# --------------------------------------------------------------------------- Messages -> chat

# Anthropic stop reasons for OpenAI finish reasons.
_FINISH_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
# Messages request fields with the same meaning in a chat request.
_SAME = ("temperature", "top_p", "stream")


def _image_url(source: Mapping[str, Any]) -> str:
    if source.get("type") == "base64":
        return f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    return str(source.get("url", ""))


def _chat_parts(blocks: Sequence[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Chat content parts and tool-result messages of a list of Messages blocks."""
    parts: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for block in blocks:
        data = {"type": "text", "text": block} if isinstance(block, str) else _as_dict(block)
        kind = data.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": str(data.get("text", ""))})
        elif kind == "image":
            given = data.get("source")
            source: Mapping[str, Any] = given if isinstance(given, Mapping) else {}
            parts.append({"type": "image_url", "image_url": {"url": _image_url(source)}})
        elif kind == "tool_result":
            content = data.get("content")
            text = content if isinstance(content, str) else _text_of(content or [])
            results.append(
                {"role": "tool", "tool_call_id": data.get("tool_use_id"), "content": text}
            )
        elif kind in ("thinking", "redacted_thinking"):
            continue  # earlier reasoning is not re-sent to another model
        elif kind == "document":
            parts.append({"type": "text", "text": json.dumps(data.get("source", {}))})
        else:
            raise InvalidRequestError(
                f"content blocks of type {kind!r} cannot be sent to this model", "messages"
            )
    return parts, results


def chat_request(body: Mapping[str, Any]) -> dict[str, Any]:
    """The chat-completions request for a Messages request ``body``.

    >>> chat_request({"model": "m", "max_tokens": 9, "messages": [
    ...     {"role": "assistant", "content": [
    ...         {"type": "tool_use", "id": "t1", "name": "f", "input": {"x": 1}}]},
    ...     {"role": "user", "content": [
    ...         {"type": "tool_result", "tool_use_id": "t1", "content": "2"}]}]})["messages"][1]
    {'role': 'tool', 'tool_call_id': 't1', 'content': '2'}
    """
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system:
        messages.append(
            {"role": "system", "content": system if isinstance(system, str) else _text_of(system)}
        )
    for message in body.get("messages") or ():
        data = _as_dict(message)
        role = data.get("role")
        content = data.get("content")
        blocks = (
            [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])
        )
        if role == "assistant":
            texts = [str(_get(b, "text") or "") for b in blocks if _get(b, "type") == "text"]
            calls = [
                {
                    "id": _get(b, "id"),
                    "type": "function",
                    "function": {
                        "name": _get(b, "name"),
                        "arguments": json.dumps(_get(b, "input") or {}),
                    },
                }
                for b in blocks
                if _get(b, "type") == "tool_use"
            ]
            out: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
            if calls:
                out["tool_calls"] = calls
            messages.append(out)
            continue
        parts, results = _chat_parts([b for b in blocks if _get(b, "type") != "tool_use"])
        messages.extend(results)  # tool results answer the previous assistant turn first
        if parts:
            plain = all(p["type"] == "text" for p in parts)
            messages.append(
                {"role": "user", "content": "".join(p["text"] for p in parts) if plain else parts}
            )
    request: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    for key in _SAME:
        if body.get(key) is not None:
            request[key] = body[key]
    if body.get("max_tokens") is not None:
        request["max_tokens"] = body["max_tokens"]
    if body.get("stop_sequences"):
        request["stop"] = list(body["stop_sequences"])
    metadata = body.get("metadata")
    if isinstance(metadata, Mapping) and metadata.get("user_id"):
        request["user"] = str(metadata["user_id"])
    tools = body.get("tools")
    if tools:
        request["tools"] = [_chat_tool(t) for t in tools]
    choice = body.get("tool_choice")
    if choice is not None:
        request["tool_choice"] = _chat_tool_choice(choice)
    return request


def _chat_tool(tool: object) -> dict[str, Any]:
    data = _as_dict(tool)
    if "input_schema" not in data:
        raise InvalidRequestError(
            f"the server tool {data.get('type') or data.get('name')!r} runs on Anthropic's "
            "servers and cannot be sent to this model",
            "tools",
        )
    function = {"name": data.get("name"), "parameters": data["input_schema"]}
    if data.get("description"):
        function["description"] = data["description"]
    return {"type": "function", "function": function}


def _chat_tool_choice(choice: object) -> Any:
    data = _as_dict(choice)
    kind = data.get("type")
    if kind == "tool":
        return {"type": "function", "function": {"name": data.get("name")}}
    return {"auto": "auto", "any": "required", "none": "none"}.get(str(kind), "auto")


def _anthropic_usage(usage: object) -> dict[str, int]:
    """Anthropic usage fields for an OpenAI usage block: cache reads apart from input."""
    prompt = int(_get(usage, "prompt_tokens") or 0)
    details = _get(usage, "prompt_tokens_details")
    cached = int(_get(details, "cached_tokens") or 0)
    written = int(_get(details, "cache_write_tokens") or 0)
    return {
        "input_tokens": max(0, prompt - cached - written),
        "output_tokens": int(_get(usage, "completion_tokens") or 0),
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": written,
    }


def message_from_chat(completion: Mapping[str, Any], model: str | None = None) -> dict[str, Any]:
    """The Messages response for a chat completion (its first choice).

    >>> message_from_chat({"id": "c1", "model": "m", "choices": [{"index": 0,
    ...     "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
    ...     "usage": {"prompt_tokens": 3, "completion_tokens": 1}})["stop_reason"]
    'end_turn'
    """
    choices = completion.get("choices") or [{}]
    choice = choices[0] if isinstance(choices, list) and choices else {}
    message = _get(choice, "message") or {}
    content: list[dict[str, Any]] = []
    text = _get(message, "content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    for call in _get(message, "tool_calls") or ():
        function = _get(call, "function") or {}
        try:
            arguments = json.loads(_get(function, "arguments") or "{}")
        except json.JSONDecodeError:
            arguments = {"_raw": _get(function, "arguments")}
        content.append(
            {
                "type": "tool_use",
                "id": _get(call, "id"),
                "name": _get(function, "name"),
                "input": arguments,
            }
        )
    return {
        "id": f"msg_{completion.get('id') or uuid.uuid4().hex}",
        "type": "message",
        "role": "assistant",
        "model": completion.get("model") or model or "",
        "content": content,
        "stop_reason": _FINISH_REASONS.get(str(_get(choice, "finish_reason")), "end_turn"),
        "stop_sequence": None,
        "usage": _anthropic_usage(completion.get("usage")),
    }


class MessageEvents:
    """OpenAI chat chunks (parsed) in, Anthropic Messages stream events out.

    Anthropic's stream reports usage at its end (``message_delta``); the chat stream's
    usage chunk comes after the finish reason, so the closing events wait for it (or for
    :meth:`close`).

    >>> t = MessageEvents("m")
    >>> [e["type"] for e in t.events({"choices": [{"index": 0, "delta": {"content": "Hi"}}]})]
    ['message_start', 'content_block_start', 'content_block_delta']
    """

    def __init__(self, model: str) -> None:
        self.model = model
        self.started = False
        self.block: int | None = None
        self.block_kind: str | None = None
        self.index = -1
        self.tools: dict[int, int] = {}
        self.stop: str | None = None
        self.usage: dict[str, int] = {}
        self.done = False

    def _start(self, chunk: Mapping[str, Any]) -> list[dict[str, Any]]:
        if self.started:
            return []
        self.started = True
        message: dict[str, Any] = {
            "id": f"msg_{chunk.get('id') or uuid.uuid4().hex}",
            "type": "message",
            "role": "assistant",
            "model": chunk.get("model") or self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [{"type": "message_start", "message": message}]

    def _close_block(self) -> list[dict[str, Any]]:
        if self.block is None:
            return []
        index, self.block, self.block_kind = self.block, None, None
        return [{"type": "content_block_stop", "index": index}]

    def _open_block(self, kind: str, block: dict[str, Any]) -> list[dict[str, Any]]:
        out = self._close_block()
        self.index += 1
        self.block, self.block_kind = self.index, kind
        out.append({"type": "content_block_start", "index": self.index, "content_block": block})
        return out

    def events(self, chunk: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The Messages events for one chat chunk."""
        out = self._start(chunk)
        if chunk.get("usage"):
            self.usage = _anthropic_usage(chunk["usage"])
        for choice in chunk.get("choices") or ():
            delta = _get(choice, "delta") or {}
            text = _get(delta, "content")
            if isinstance(text, str) and text:
                if self.block_kind != "text":
                    out += self._open_block("text", {"type": "text", "text": ""})
                out.append(
                    {"type": "content_block_delta", "index": self.block,
                     "delta": {"type": "text_delta", "text": text}}
                )  # fmt: skip
            for call in _get(delta, "tool_calls") or ():
                position = int(_get(call, "index") or 0)
                function = _get(call, "function") or {}
                if position not in self.tools:
                    out += self._open_block(
                        "tool",
                        {"type": "tool_use", "id": _get(call, "id") or f"toolu_{uuid.uuid4().hex[:20]}",
                         "name": _get(function, "name") or "", "input": {}},
                    )  # fmt: skip
                    self.tools[position] = self.index
                arguments = _get(function, "arguments")
                if isinstance(arguments, str) and arguments:
                    out.append(
                        {"type": "content_block_delta", "index": self.tools[position],
                         "delta": {"type": "input_json_delta", "partial_json": arguments}}
                    )  # fmt: skip
            reason = _get(choice, "finish_reason")
            if reason:
                self.stop = _FINISH_REASONS.get(str(reason), "end_turn")
        if self.stop is not None and self.usage:
            out += self.close()
        return out

    def close(self) -> list[dict[str, Any]]:
        """The closing events (once): the last block's stop, the stop reason and usage."""
        if self.done:
            return []
        self.done = True
        out = self._start({}) + self._close_block()
        delta = {"stop_reason": self.stop or "end_turn", "stop_sequence": None}
        out.append(
            {"type": "message_delta", "delta": delta, "usage": self.usage or {"output_tokens": 0}}
        )
        out.append({"type": "message_stop"})
        return out


# --------------------------------------------------------------------------- errors

_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def anthropic_error(
    status: int, body: Mapping[str, Any] | None, fallback: str = ""
) -> dict[str, Any]:
    """An error body in Anthropic's shape (``{"type": "error", "error": {...}}``), from an
    OpenAI-style one (its extra fields kept) or from nothing.

    >>> anthropic_error(429, {"error": {"message": "slow down", "type": "budget_exceeded"}})
    {'type': 'error', 'error': {'type': 'rate_limit_error', 'message': 'slow down', 'code': 'budget_exceeded'}}
    """
    if body is not None and body.get("type") == "error":
        return dict(body)  # already Anthropic's
    inner = body.get("error") if isinstance(body, Mapping) else None
    inner = dict(inner) if isinstance(inner, Mapping) else {}
    message = str(inner.pop("message", "") or fallback or f"HTTP {status}")
    code = inner.pop("code", None) or inner.pop("type", None)
    inner.pop("type", None)
    kind = _ANTHROPIC_ERROR_TYPES.get(
        status, "api_error" if status >= 500 else "invalid_request_error"
    )
    error: dict[str, Any] = {"type": kind, "message": message}
    if code and code != kind:
        error["code"] = code
    error.update({k: v for k, v in inner.items() if v is not None and k != "param"})
    return {"type": "error", "error": error}


def openai_error(status: int, body: Mapping[str, Any] | None, fallback: str = "") -> dict[str, Any]:
    """An error body in OpenAI's shape, from an Anthropic-style one.

    >>> openai_error(400, {"type": "error", "error": {"type": "invalid_request_error",
    ...     "message": "bad"}})["error"]["message"]
    'bad'
    """
    if body is not None and isinstance(body.get("error"), Mapping) and body.get("type") != "error":
        return dict(body)  # already OpenAI's
    inner = body.get("error") if isinstance(body, Mapping) else None
    inner = inner if isinstance(inner, Mapping) else {}
    kind = str(inner.get("type") or ("api_error" if status >= 500 else "invalid_request_error"))
    message = str(inner.get("message") or fallback or f"HTTP {status}")
    return {"error": {"message": message, "type": kind, "param": None, "code": kind}}
