"""A fake LLM provider on 127.0.0.1 speaking the OpenAI and Anthropic wire formats.

One server answers every format, so a test points any SDK or gateway at it:

=====================================  ============================================
``POST .../chat/completions``          OpenAI Chat Completions (``stream`` too; Azure's
                                       ``/openai/deployments/<d>/...`` paths as well)
``POST /v1/responses``                 OpenAI Responses (``stream`` too)
``POST /v1/completions``               OpenAI legacy Completions
``POST /v1/embeddings``                OpenAI Embeddings
``POST /v1/messages``                  Anthropic Messages (``stream`` too)
=====================================  ============================================

Behaviour is set on the server object, and every request is recorded::

    with FakeLLMServer() as fake:
        fake.reply = "one two three"          # 3 completion tokens (one per word)
        fake.prompt_tokens = 12               # reported prompt tokens
        fake.fail_next(429)                   # next request answers HTTP 429
        client = openai.OpenAI(base_url=fake.openai_url, api_key="x")
        ...
        assert fake.count("/v1/chat/completions") == 1

Token accounting is deliberately simple and predictable, so tests can assert exact
costs: the completion has one token per word of :attr:`reply`, cut at the request's
``max_tokens`` / ``max_completion_tokens`` / ``max_output_tokens`` (finish reason
``length``); with :attr:`fill` it always uses the whole limit.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

__all__ = ["FakeLLMServer", "RecordedRequest"]


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float = field(default_factory=time.monotonic)


class FakeLLMServer:
    """A threaded HTTP server; configure its attributes, then point clients at :attr:`url`."""

    def __init__(self) -> None:
        self.reply = "Hello from the fake server"
        self.prompt_tokens = 12
        self.cache_read_tokens = 0
        self.cache_write_tokens = 0
        self.reasoning_tokens = 0
        self.fill = False
        self.delay = 0.0
        self.stream_usage = True  # False: streams never carry usage (to test estimation)
        self.break_stream_after: int | None = None  # drop the connection after N events
        # Stop after N events until `resume` is set (or 10 s pass): a stream still going
        # when the client walks away, whatever the machine's speed.
        self.pause_stream_after: int | None = None
        self.resume = threading.Event()
        self.model_override: str | None = None
        self.requests: list[RecordedRequest] = []
        self._failures: list[tuple[int, Any]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> FakeLLMServer:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = _Server(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def openai_url(self) -> str:
        """Base URL for ``openai.OpenAI(base_url=...)``."""
        return f"{self.url}/v1"

    @property
    def anthropic_url(self) -> str:
        """Base URL for ``anthropic.Anthropic(base_url=...)``."""
        return self.url

    # -- behaviour -------------------------------------------------------------------

    def fail_next(self, status: int, body: Any = None, *, count: int = 1) -> None:
        """Answer the next ``count`` requests with HTTP ``status`` (and an error body)."""
        with self._lock:
            self._failures.extend([(status, body)] * count)

    def _take_failure(self) -> tuple[int, Any] | None:
        with self._lock:
            return self._failures.pop(0) if self._failures else None

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def count(self, path: str | None = None) -> int:
        """Requests received (for one path, e.g. ``"/v1/chat/completions"``)."""
        with self._lock:
            return sum(1 for r in self.requests if path is None or r.path == path)

    def last(self, path: str | None = None) -> RecordedRequest:
        with self._lock:
            return [r for r in self.requests if path is None or r.path == path][-1]

    def completion_tokens(self, limit: int | None) -> tuple[list[str], str]:
        """The words answered for an output limit, and the finish reason."""
        words = self.reply.split()
        if self.fill and limit is not None:
            # The model would have gone on: it stops only because of the limit.
            return [words[i % len(words)] for i in range(limit)], "length"
        if limit is not None and len(words) > limit:
            return words[:limit], "length"
        return words, "stop"


# --------------------------------------------------------------------------- the handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Tests open dozens of connections at once; the default backlog of 5 makes the
    # kernel reset some of them.
    request_queue_size = 256


def _pieces(words: list[str]) -> list[str]:
    return [w if i == 0 else f" {w}" for i, w in enumerate(words)]


class _Handler(BaseHTTPRequestHandler):
    fake: FakeLLMServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    # -- plumbing --------------------------------------------------------------------

    def _json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-request-id", uuid.uuid4().hex)
        self.end_headers()
        self.wfile.write(data)

    def _sse(self, events: Iterator[tuple[str | None, Any]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            for sent, (event, data) in enumerate(events):
                if (
                    self.fake.break_stream_after is not None
                    and sent >= self.fake.break_stream_after
                ):
                    return  # the connection drops mid-stream
                if sent == self.fake.pause_stream_after:
                    self.fake.resume.wait(10)
                text = data if isinstance(data, str) else json.dumps(data)
                frame = (f"event: {event}\n" if event else "") + f"data: {text}\n\n"
                self.wfile.write(frame.encode())
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client walked away mid-stream, as clients may

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            body = {}
        path = self.path.split("?", 1)[0]
        self.fake._record(
            RecordedRequest("POST", path, {k.lower(): v for k, v in self.headers.items()}, body)
        )
        if self.fake.delay:
            time.sleep(self.fake.delay)
        failure = self.fake._take_failure()
        if failure is not None:
            self._error(path, *failure)
            return
        # Matched on the path's end, so prefixed deployments (Azure's
        # /openai/deployments/<name>/chat/completions) reach the same handlers.
        routes = (
            ("/chat/completions", self._chat),
            ("/responses", self._responses),
            ("/completions", self._legacy),
            ("/embeddings", self._embeddings),
            ("/messages", self._messages),
        )
        route = next((handler for suffix, handler in routes if path.endswith(suffix)), None)
        if route is None:
            self._json(404, {"error": {"message": f"no route {path}", "type": "not_found"}})
            return
        route(body)

    def _error(self, path: str, status: int, body: Any) -> None:
        if body is None:
            if path.endswith("/messages"):
                body = {
                    "type": "error",
                    "error": {"type": "api_error", "message": f"fake failure {status}"},
                }
            else:
                body = {"error": {"message": f"fake failure {status}", "type": "fake_error"}}
        self._json(status, body)

    def _model(self, body: dict[str, Any]) -> str:
        return self.fake.model_override or str(body.get("model", "fake-model"))

    # -- OpenAI chat -----------------------------------------------------------------

    def _chat_usage(self, completion: int) -> dict[str, Any]:
        fake = self.fake
        usage: dict[str, Any] = {
            "prompt_tokens": fake.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": fake.prompt_tokens + completion,
        }
        if fake.cache_read_tokens:
            usage["prompt_tokens_details"] = {"cached_tokens": fake.cache_read_tokens}
        if fake.reasoning_tokens:
            usage["completion_tokens_details"] = {"reasoning_tokens": fake.reasoning_tokens}
        return usage

    def _chat(self, body: dict[str, Any]) -> None:
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        words, finish = self.fake.completion_tokens(limit)
        model = self._model(body)
        ident = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        created = int(time.time())
        if not body.get("stream"):
            self._json(
                200,
                {
                    "id": ident,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": " ".join(words)},
                            "finish_reason": finish,
                            "logprobs": None,
                        }
                    ],
                    "usage": self._chat_usage(len(words)),
                },
            )
            return
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def events() -> Iterator[tuple[str | None, Any]]:
            base = {"id": ident, "object": "chat.completion.chunk", "created": created}
            base["model"] = model
            first = {"index": 0, "delta": {"role": "assistant", "content": ""}}
            yield None, {**base, "choices": [{**first, "finish_reason": None}]}
            for piece in _pieces(words):
                choice = {"index": 0, "delta": {"content": piece}, "finish_reason": None}
                yield None, {**base, "choices": [choice]}
            yield None, {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}
            if include_usage and self.fake.stream_usage:
                yield None, {**base, "choices": [], "usage": self._chat_usage(len(words))}
            yield None, "[DONE]"

        self._sse(events())

    # -- OpenAI legacy completions and embeddings -----------------------------------

    def _legacy(self, body: dict[str, Any]) -> None:
        words, finish = self.fake.completion_tokens(body.get("max_tokens", 16))
        self._json(
            200,
            {
                "id": f"cmpl-{uuid.uuid4().hex[:12]}",
                "object": "text_completion",
                "created": int(time.time()),
                "model": self._model(body),
                "choices": [
                    {"index": 0, "text": " ".join(words), "finish_reason": finish, "logprobs": None}
                ],
                "usage": self._chat_usage(len(words)),
            },
        )

    def _embeddings(self, body: dict[str, Any]) -> None:
        inputs = body.get("input")
        count = len(inputs) if isinstance(inputs, list) else 1
        self._json(
            200,
            {
                "object": "list",
                "model": self._model(body),
                "data": [
                    {"object": "embedding", "index": i, "embedding": [0.0, 0.1, 0.2]}
                    for i in range(count)
                ],
                "usage": {
                    "prompt_tokens": self.fake.prompt_tokens,
                    "total_tokens": self.fake.prompt_tokens,
                },
            },
        )

    # -- OpenAI Responses ------------------------------------------------------------

    def _responses_usage(self, output: int) -> dict[str, Any]:
        fake = self.fake
        return {
            "input_tokens": fake.prompt_tokens,
            "input_tokens_details": {"cached_tokens": fake.cache_read_tokens},
            "output_tokens": output,
            "output_tokens_details": {"reasoning_tokens": fake.reasoning_tokens},
            "total_tokens": fake.prompt_tokens + output,
        }

    def _responses(self, body: dict[str, Any]) -> None:
        words, finish = self.fake.completion_tokens(body.get("max_output_tokens"))
        text = " ".join(words)
        ident = f"resp_{uuid.uuid4().hex[:12]}"
        message = {
            "id": f"msg_{uuid.uuid4().hex[:12]}",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }
        response = {
            "id": ident,
            "object": "response",
            "created_at": int(time.time()),
            "model": self._model(body),
            "status": "completed" if finish == "stop" else "incomplete",
            "output": [message],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "usage": self._responses_usage(len(words)),
        }
        if not body.get("stream"):
            self._json(200, response)
            return

        def events() -> Iterator[tuple[str | None, Any]]:
            # The event sequence of OpenAI's Responses streams (what responses.stream()
            # helpers check): item and part added before deltas, done after.
            seq = iter(range(10_000))

            def event(kind: str, **data: Any) -> tuple[str, Any]:
                return kind, {"type": kind, "sequence_number": next(seq), **data}

            created = {**response, "status": "in_progress", "output": [], "usage": None}
            yield event("response.created", response=created)
            yield event("response.in_progress", response=created)
            item = {**message, "status": "in_progress", "content": []}
            yield event("response.output_item.added", output_index=0, item=item)
            part = {"type": "output_text", "text": "", "annotations": []}
            where = {"item_id": message["id"], "output_index": 0, "content_index": 0}
            yield event("response.content_part.added", **where, part=part)
            for piece in _pieces(words):
                yield event("response.output_text.delta", **where, delta=piece, logprobs=[])
            yield event("response.output_text.done", **where, text=text, logprobs=[])
            yield event("response.content_part.done", **where, part=message["content"][0])
            yield event("response.output_item.done", output_index=0, item=message)
            done = response if self.fake.stream_usage else {**response, "usage": None}
            kind = "response.completed" if finish == "stop" else "response.incomplete"
            yield event(kind, response=done)

        self._sse(events())

    # -- Anthropic -------------------------------------------------------------------

    def _anthropic_usage(self, output: int) -> dict[str, Any]:
        fake = self.fake
        return {
            "input_tokens": fake.prompt_tokens,
            "cache_creation_input_tokens": fake.cache_write_tokens,
            "cache_read_input_tokens": fake.cache_read_tokens,
            "output_tokens": output,
        }

    def _messages(self, body: dict[str, Any]) -> None:
        if "max_tokens" not in body:
            self._json(
                400,
                {
                    "type": "error",
                    "error": {"type": "invalid_request_error", "message": "max_tokens: required"},
                },
            )
            return
        words, finish = self.fake.completion_tokens(body.get("max_tokens"))
        stop = "end_turn" if finish == "stop" else "max_tokens"
        model = self._model(body)
        ident = f"msg_{uuid.uuid4().hex[:12]}"
        if not body.get("stream"):
            self._json(
                200,
                {
                    "id": ident,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [{"type": "text", "text": " ".join(words)}],
                    "stop_reason": stop,
                    "stop_sequence": None,
                    "usage": self._anthropic_usage(len(words)),
                },
            )
            return

        def events() -> Iterator[tuple[str | None, Any]]:
            start_usage = self._anthropic_usage(1)
            yield (
                "message_start",
                {
                    "type": "message_start",
                    "message": {
                        "id": ident,
                        "type": "message",
                        "role": "assistant",
                        "model": model,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": start_usage,
                    },
                },
            )
            yield (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            )
            yield "ping", {"type": "ping"}
            for piece in _pieces(words):
                yield (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": piece},
                    },
                )
            yield "content_block_stop", {"type": "content_block_stop", "index": 0}
            if self.fake.stream_usage:
                yield (
                    "message_delta",
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": stop, "stop_sequence": None},
                        "usage": {"output_tokens": len(words)},
                    },
                )
            yield "message_stop", {"type": "message_stop"}

        self._sse(events())
