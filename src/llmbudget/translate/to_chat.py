"""Anthropic Messages → OpenAI chat: requests, and chat completions and chunks back as
Messages responses and stream events (Anthropic-shaped clients reaching any
OpenAI-compatible model).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from llmbudget.errors import InvalidRequestError
from llmbudget.fields import as_dict as _as_dict
from llmbudget.fields import get as _get

__all__ = ["MessageEvents", "chat_request", "message_from_chat"]

from llmbudget.translate.content import text_of

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
            text = content if isinstance(content, str) else text_of(content or [])
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
            {"role": "system", "content": system if isinstance(system, str) else text_of(system)}
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
