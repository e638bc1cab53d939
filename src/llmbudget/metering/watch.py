"""Watching what comes back: usage, generated text and whether the model finished.

One watcher for every door and every API:

* :class:`Tracker` reads events and whole responses — OpenAI chat chunks and completions,
  legacy completions, Responses events (``response.completed`` ...) and objects, Anthropic
  message events (``message_start`` / ``message_delta`` usage, cache fields included) and
  messages — as parsed JSON or as SDK objects.
* :class:`BodyWatcher` reads an HTTP response body as it streams by, in bytes (the
  gateway relays them; the SDK patch sees them under the SDK): server-sent events or one
  JSON document. It hands back the bytes to pass on, minus the usage-only chunk when the
  door asked for it and its caller did not.

Neither does I/O: the doors feed them.

>>> w = BodyWatcher(sse=True, hide_usage_chunk=True)
>>> w.feed(b'data: {"choices":[{"delta":{"content":"Hi"},"finish_reason":"stop"}]}\\n\\n')
b'data: {"choices":[{"delta":{"content":"Hi"},"finish_reason":"stop"}]}\\n\\n'
>>> w.feed(b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1}}\\n\\n')
b''
>>> w.tracker.usage["completion_tokens"], w.tracker.text, w.tracker.finished
(1, 'Hi', True)
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping
from typing import Any

from llmbudget.fields import as_dict, get

__all__ = ["BodyWatcher", "Tracker"]

_ANTHROPIC_CACHE = ("cache_read_input_tokens", "cache_creation_input_tokens")


class Tracker:
    """Usage, generated text and the finish of one response, from its events or whole."""

    def __init__(self) -> None:
        self.usage: Any = None
        self.parts: list[str] = []
        self.finish_reason: str | None = None
        self.error = False
        self._anthropic: dict[str, Any] | None = None

    @property
    def text(self) -> str:
        """Everything generated that was seen: text, reasoning, refusals, tool calls."""
        return "".join(self.parts)

    @property
    def finished(self) -> bool:
        """The model is known to have finished (a finish or stop reason arrived)."""
        return self.finish_reason is not None

    # -- events ------------------------------------------------------------------------

    def observe(self, event: object) -> None:
        """Record what one stream event (or chunk) says."""
        kind = get(event, "type")
        if isinstance(kind, str) and (
            kind.startswith(("message_", "content_block_")) or kind == "ping"
        ):
            self._anthropic_event(kind, event)
        elif isinstance(kind, str) and kind.startswith("response."):
            self._responses_event(kind, event)
        elif kind == "error" or get(event, "error") is not None:
            self.error = True
        else:
            self._chunk(event)

    def _chunk(self, chunk: object) -> None:
        usage = get(chunk, "usage")
        if usage is not None:
            self.usage = usage
        for choice in get(chunk, "choices") or ():
            delta = get(choice, "delta")
            if delta is None:
                delta = get(choice, "message")
            if delta is not None:
                _message_text(delta, self.parts)
            text = get(choice, "text")  # legacy completions
            if isinstance(text, str):
                self.parts.append(text)
            reason = get(choice, "finish_reason")
            if reason:
                self.finish_reason = str(reason)

    def _responses_event(self, kind: str, event: object) -> None:
        if kind in ("response.completed", "response.incomplete", "response.failed"):
            response = get(event, "response")
            usage = get(response, "usage")
            if usage is not None:
                self.usage = usage
            self.finish_reason = kind.rsplit(".", 1)[1]
        elif kind == "error":
            self.error = True
        elif kind.endswith(".delta"):
            delta = get(event, "delta")
            if isinstance(delta, str):
                self.parts.append(delta)

    def _anthropic_event(self, kind: str, event: object) -> None:
        if kind == "message_start":
            start = {
                k: v
                for k, v in as_dict(get(get(event, "message"), "usage")).items()
                if v is not None
            }
            for key in _ANTHROPIC_CACHE:
                start.setdefault(key, 0)  # marks the block as Anthropic's for pricing
            self._anthropic = start
        elif kind == "message_delta":
            # message_delta's counts are cumulative and final: they replace message_start's.
            merged = dict(self._anthropic or {})
            merged.update({k: v for k, v in as_dict(get(event, "usage")).items() if v is not None})
            for key in _ANTHROPIC_CACHE:
                merged.setdefault(key, 0)
            self._anthropic = merged
            self.usage = dict(merged)  # only now are the output tokens final
            reason = get(get(event, "delta"), "stop_reason")
            if reason:
                self.finish_reason = str(reason)
        elif kind == "content_block_delta":
            delta = get(event, "delta")
            for key in ("text", "partial_json", "thinking"):
                value = get(delta, key)
                if isinstance(value, str):
                    self.parts.append(value)
        elif kind == "content_block_start":
            block = get(event, "content_block")
            if get(block, "type") == "tool_use":
                self.parts.append(str(get(block, "name") or ""))

    # -- whole responses -----------------------------------------------------------------

    def observe_response(self, response: object) -> None:
        """Record a complete (non-streamed) response of any API."""
        if get(response, "error") is not None:
            self.error = True
            return
        usage = get(response, "usage")
        if usage is not None:
            self.usage = usage
        if get(response, "choices") is not None:
            self._chunk(response)
            return
        kind = get(response, "type")
        if kind == "message" or get(response, "stop_reason") is not None:
            for block in get(response, "content") or ():
                _block_text(block, self.parts)
            self.finish_reason = str(get(response, "stop_reason") or "end_turn")
            return
        output = get(response, "output")
        if output is not None or get(response, "object") == "response":
            for item in output or ():
                _block_text(item, self.parts)
                for part in get(item, "content") or ():
                    _block_text(part, self.parts)
            status = get(response, "status")
            if status not in ("queued", "in_progress"):
                self.finish_reason = str(status or "completed")
            return
        # Embeddings and anything else complete: finished, nothing generated.
        self.finish_reason = "stop"


def _message_text(message: object, parts: list[str]) -> None:
    for key in ("content", "reasoning_content", "reasoning", "refusal"):
        value = get(message, key)
        if isinstance(value, str):
            parts.append(value)
    for call in get(message, "tool_calls") or ():
        function = get(call, "function")
        for key in ("name", "arguments"):
            value = get(function, key)
            if isinstance(value, str):
                parts.append(value)


def _block_text(block: object, parts: list[str]) -> None:
    kind = get(block, "type")
    for key in ("text", "thinking", "arguments", "name"):
        value = get(block, key)
        if isinstance(value, str) and (key != "name" or kind in ("tool_use", "function_call")):
            parts.append(value)
    if kind == "tool_use":
        parts.append(json.dumps(get(block, "input") or {}, default=str))


_MAX_DEFERRED = 1 << 20
_NO_FINISH = re.compile(rb'"finish_reason":\s*null')
_EAGER = (
    b'"usage"',
    b'"error"',
    b"message_start",
    b"message_delta",
    b"content_block_start",
    b"response.completed",
    b"response.incomplete",
    b"response.failed",
)


def _may_matter(data: bytes) -> bool:
    """Whether an event may carry usage, a finish, an error or structure (so it is parsed
    now); plain text deltas are not."""
    if any(mark in data for mark in _EAGER):
        return True
    return b'"finish_reason"' in data and _NO_FINISH.search(data) is None


class BodyWatcher:
    """Watches an HTTP response body in bytes (see the module doc). ``sse`` selects
    server-sent events; otherwise the body is one JSON document, read at :meth:`close`."""

    def __init__(self, *, sse: bool, hide_usage_chunk: bool = False) -> None:
        self.sse = sse
        self.hide_usage_chunk = hide_usage_chunk
        self.tracker = Tracker()
        self._buffer = b""
        self._body: list[bytes] = []
        # Events that can carry only generated text (deltas), kept unparsed: their text is
        # needed only if the stream ends without usage, which is rare.
        self._deferred: list[bytes] = []
        self._deferred_bytes = 0
        self.closed = False

    def feed(self, data: bytes) -> bytes:
        """Take the next bytes of the body; returns the bytes to pass on."""
        if not self.sse:
            self._body.append(data)
            return data
        buffer = self._buffer + data
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
        out: list[bytes] = []
        start = 0
        while True:
            end = buffer.find(b"\n\n", start)
            if end < 0:
                break
            event = buffer[start:end]
            start = end + 2
            if self._event(event):
                out.append(event + b"\n\n")
        self._buffer = buffer[start:]
        return b"".join(out)

    def close(self) -> bytes:
        """The body ended: read what is left; returns the bytes still to pass on."""
        if self.closed:
            return b""
        self.closed = True
        if not self.sse:
            self._document(b"".join(self._body))
            self._body.clear()
            return b""
        rest, self._buffer = self._buffer, b""
        out = rest + b"\n\n" if rest.strip() and self._event(rest) else b""
        if self.tracker.usage is None:
            self._read_deferred()
        self._deferred.clear()
        return out

    def _read_deferred(self) -> None:
        for data in self._deferred:
            with contextlib.suppress(ValueError):
                doc = json.loads(data)
                if isinstance(doc, Mapping):
                    self.tracker.observe(doc)
        self._deferred.clear()
        self._deferred_bytes = 0

    def _document(self, body: bytes) -> None:
        try:
            doc = json.loads(body) if body.strip() else None
        except ValueError:
            return
        if isinstance(doc, Mapping):
            self.tracker.observe_response(doc)

    def _event(self, event: bytes) -> bool:
        """Observe one event; whether to pass it on."""
        data = b""
        for line in event.split(b"\n"):
            if line.startswith(b"data:"):
                data += line[5:].lstrip(b" ")
        if not data and event.lstrip().startswith(b"{"):
            # An upstream that ignored stream=true and sent one JSON body.
            self._document(event)
            return True
        if not data or data == b"[DONE]":
            return True
        if not _may_matter(data):
            self._deferred.append(data)
            self._deferred_bytes += len(data)
            if self._deferred_bytes > _MAX_DEFERRED:
                self._read_deferred()  # a long stream: keep memory bounded
            return True
        try:
            doc = json.loads(data)
        except ValueError:
            return True
        if not isinstance(doc, Mapping):
            return True
        self.tracker.observe(doc)
        usage_only = not doc.get("choices") and doc.get("usage") and "type" not in doc
        return not (usage_only and self.hide_usage_chunk)
