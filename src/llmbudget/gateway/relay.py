"""Answering the client: a complete JSON body, or server-sent events relayed as they come.

Both are hand-written ASGI responses whose *end* always reaches the gateway, shielded from
cancellation, so a call's charge is recorded whatever happens to the connection: sent,
failed to send, client gone, server shutting down.

* :class:`SettlingResponse` sends the upstream's JSON, then records the charge.
* :class:`StreamRelay` passes the upstream's events on chunk by chunk through a
  :class:`~llmbudget.metering.BodyWatcher` (which notes usage and text, and drops the usage
  chunk the gateway asked for when the client did not), then reports how the stream
  ended.

>>> loads(b'{"a": 1}'), dumps({"a": 1})
({'a': 1}, b'{"a":1}')
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import anyio
import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from llmbudget.gateway.upstream import UpstreamError, UpstreamResponse
from llmbudget.metering import BodyWatcher
from llmbudget.translate import AnthropicChunks, MessageEvents

__all__ = ["EventConverter", "SettlingResponse", "StreamEnd", "StreamRelay", "dumps", "loads"]

log = logging.getLogger("llmbudget.gateway")


def loads(data: bytes) -> Any:
    """Parse JSON (orjson; the stdlib for what orjson refuses, such as huge integers)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    return json.loads(data)


def dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # e.g. integers beyond 64 bits
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class SettlingResponse(Response):
    """A complete JSON response whose charge is recorded once it is sent — or when sending
    fails or is cancelled: shielded, so the spend is never left to expire unrecorded."""

    media_type = "application/json"

    def __init__(
        self,
        content: bytes,
        *,
        status_code: int,
        headers: Mapping[str, str],
        settle: Callable[[], Awaitable[None]],
    ) -> None:
        super().__init__(content, status_code=status_code, headers=headers)
        self._settle = settle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self._settle()


class EventConverter:
    """Relayed server-sent events re-written in the client's API (see
    :mod:`llmbudget.translate`): complete events in, complete events out.

    >>> to_openai = EventConverter.to_openai("m", usage_chunk=False)
    >>> out = to_openai.feed(b'event: content_block_delta\ndata: {"type": "content_block_delta",'
    ...                      b' "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}\n\n')
    >>> b'"content":"Hi"' in out
    True
    """

    def __init__(
        self,
        translate: Callable[[dict[str, Any]], list[dict[str, Any]]],
        close: Callable[[], list[dict[str, Any]]],
        *,
        named: bool,
        done: bytes = b"",
    ) -> None:
        self._translate = translate
        self._close = close
        self._named = named  # Anthropic's events carry an ``event:`` line
        self._done = done

    @classmethod
    def to_openai(cls, model: str, usage_chunk: bool) -> EventConverter:
        """Anthropic Messages events in, OpenAI chat chunks out."""
        chunks = AnthropicChunks(model, usage_chunk)
        return cls(chunks.chunks, list, named=False, done=b"data: [DONE]\n\n")

    @classmethod
    def to_anthropic(cls, model: str) -> EventConverter:
        """OpenAI chat chunks in, Anthropic Messages events out."""
        events = MessageEvents(model)
        return cls(events.events, events.close, named=True)

    def _encode(self, docs: list[dict[str, Any]]) -> bytes:
        out = []
        for doc in docs:
            head = b"event: " + str(doc.get("type", "")).encode() + b"\n" if self._named else b""
            out.append(head + b"data: " + dumps(doc) + b"\n\n")
        return b"".join(out)

    def feed(self, events: bytes) -> bytes:
        """Convert whole events (as :class:`~llmbudget.metering.BodyWatcher` passes them)."""
        docs: list[dict[str, Any]] = []
        for event in events.split(b"\n\n"):
            data = b"".join(
                line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:")
            )
            if not data or data == b"[DONE]":
                continue
            try:
                doc = loads(data)
            except ValueError:
                continue
            if isinstance(doc, dict):
                docs += self._translate(doc)
        return self._encode(docs)

    def close(self) -> bytes:
        """What ends the stream in the client's API."""
        return self._encode(self._close()) + self._done


class StreamEnd:
    """How a relayed stream ended."""

    __slots__ = ("completed", "disconnected", "failed")

    def __init__(self) -> None:
        self.completed = False
        self.disconnected = False
        self.failed = False


class StreamRelay(Response):
    """Server-sent events passed through chunk by chunk; ``finish(end, watcher)`` is
    awaited, shielded, once the stream is over however it ended."""

    media_type = "text/event-stream"

    def __init__(
        self,
        upstream: UpstreamResponse,
        watcher: BodyWatcher,
        headers: Sequence[tuple[bytes, bytes]],
        finish: Callable[[StreamEnd, BodyWatcher], Awaitable[None]],
        *,
        convert: EventConverter | None = None,
        anthropic: bool = False,
    ) -> None:
        super().__init__(content=None, status_code=200)
        self.upstream = upstream
        self.watcher = watcher
        self.finish = finish
        self.convert = convert
        self.anthropic = anthropic  # the client reads Anthropic's event shapes
        self.raw_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            *headers,
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        end = StreamEnd()
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async with anyio.create_task_group() as group:

                async def watch() -> None:
                    while True:
                        message = await receive()
                        if message["type"] == "http.disconnect":
                            end.disconnected = True
                            group.cancel_scope.cancel()
                            return

                group.start_soon(watch)
                try:
                    end.completed = await self._pump(send, end)
                except OSError:
                    end.disconnected = True  # the client went away while we wrote to it
                group.cancel_scope.cancel()
            if not end.disconnected:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            end.disconnected = True
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await self.upstream.aclose()
                except Exception:  # closing a broken connection must not stop settling
                    log.debug("closing the upstream stream failed", exc_info=True)
                await self.finish(end, self.watcher)

    async def _pump(self, send: Send, end: StreamEnd) -> bool:
        """Relay the upstream's events; ``True`` if it ended normally."""
        watcher, convert = self.watcher, self.convert
        try:
            async for chunk in self.upstream.aiter_bytes():
                out = watcher.feed(chunk)
                if out and convert is not None:
                    out = convert.feed(out)
                if out:
                    await send({"type": "http.response.body", "body": out, "more_body": True})
        except UpstreamError as exc:
            end.failed = True
            text = f"upstream stream failed: {exc}"
            if self.anthropic:
                error = {"type": "error", "error": {"type": "api_error", "message": text}}
                body = b"event: error\ndata: " + dumps(error) + b"\n\n"
            else:
                error = {"error": {"type": "api_error", "code": "upstream_error",
                                   "message": text, "param": None}}  # fmt: skip
                body = b"data: " + dumps(error) + b"\n\n"
            await send({"type": "http.response.body", "body": body, "more_body": True})
            return False
        rest = watcher.close()
        if convert is not None:
            rest = convert.feed(rest) + convert.close()
        if rest:
            await send({"type": "http.response.body", "body": rest, "more_body": True})
        return True
