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

__all__ = ["SettlingResponse", "StreamEnd", "StreamRelay", "dumps", "loads"]

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
    ) -> None:
        super().__init__(content=None, status_code=200)
        self.upstream = upstream
        self.watcher = watcher
        self.finish = finish
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
        watcher = self.watcher
        try:
            async for chunk in self.upstream.aiter_bytes():
                out = watcher.feed(chunk)
                if out:
                    await send({"type": "http.response.body", "body": out, "more_body": True})
        except UpstreamError as exc:
            end.failed = True
            message = {
                "error": {
                    "type": "api_error",
                    "code": "upstream_error",
                    "message": f"upstream stream failed: {exc}",
                    "param": None,
                }
            }
            body = b"data: " + dumps(message) + b"\n\n"
            await send({"type": "http.response.body", "body": body, "more_body": True})
            return False
        rest = watcher.close()
        if rest:
            await send({"type": "http.response.body", "body": rest, "more_body": True})
        return True
