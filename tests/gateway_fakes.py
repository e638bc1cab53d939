"""A fake OpenAI-compatible upstream and a uvicorn-in-a-thread runner for the gateway tests.

The fake answers ``/v1/chat/completions`` (plain and SSE) and ``/v1/embeddings`` with a
reply of ``reply_tokens`` one-token words (" a"), cut at ``max_tokens``; its usage counts
the prompt with llmbudget's own tokenizer, so a test knows the exact cost. It counts every
call, and can be told to fail, to be slow (``delay`` > a deployment's ``timeout`` gives a
timeout after the request was sent), to break its body off, or to omit usage. It also
counts the chat calls in flight (``in_flight``, and the most at once: ``max_in_flight``),
a streamed one until its last event is sent; a stream waits after its first event while
``gate`` (a ``threading.Event``) is set up and not yet set.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from llmbudget.server.testing import live_server
from llmbudget.tokens import count_message_tokens, count_tokens

WORD = " a"  # one o200k token


@dataclass
class FakeUpstream:
    """Behaviour switches a test flips between requests."""

    name: str = "fake"
    reply_tokens: int = 20
    fail_status: int | None = None
    fail_times: int | None = None  # fail only the next N calls (None: every call)
    retry_after: str | None = None
    delay: float = 0.0
    chunk_delay: float = 0.0
    send_usage: bool = True
    break_body: bool = False  # non-streamed replies: send 200 and part of the body, then drop
    calls: list[dict[str, Any]] = field(default_factory=list)
    stream_chunks_sent: int = 0
    closed_early: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    gate: threading.Event | None = None

    @property
    def count(self) -> int:
        return len(self.calls)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/embeddings", self._embeddings, methods=["POST"]),
            ]
        )

    def _failure(self) -> Response | None:
        if self.fail_status is None:
            return None
        if self.fail_times is not None:
            if self.fail_times <= 0:
                return None
            self.fail_times -= 1
        headers = {"retry-after": self.retry_after} if self.retry_after else None
        return JSONResponse(
            {"error": {"type": "server_error", "message": f"{self.name} failed", "code": None}},
            status_code=self.fail_status,
            headers=headers,
        )

    def _enter(self) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        self.calls.append(body)
        self._enter()
        streaming = False
        try:
            response = await self._answer(body)
            streaming = isinstance(response, StreamingResponse) and bool(body.get("stream"))
            return response
        finally:
            if not streaming:
                self.in_flight -= 1

    async def _answer(self, body: dict[str, Any]) -> Response:
        if self.delay:
            await asyncio.sleep(self.delay)
        failure = self._failure()
        if failure is not None:
            return failure
        if self.break_body and not body.get("stream"):
            return StreamingResponse(_broken_body(), media_type="application/json")
        model = body["model"]
        limit = body.get("max_completion_tokens") or body.get("max_tokens") or 10**9
        n_out = min(self.reply_tokens, limit)
        prompt = count_message_tokens(body["messages"], model, tools=body.get("tools"))
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": n_out,
            "total_tokens": prompt + n_out,
        }
        base = {"id": "chatcmpl-fake", "created": 1, "model": model}
        if not body.get("stream"):
            doc: dict[str, Any] = {
                **base,
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": WORD * n_out},
                        "finish_reason": "length" if n_out == limit else "stop",
                    }
                ],
            }
            if self.send_usage:
                doc["usage"] = usage
            return JSONResponse(doc, headers={"x-upstream": self.name})
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return StreamingResponse(
            self._events(base, n_out, usage if include_usage and self.send_usage else None),
            media_type="text/event-stream",
        )

    async def _events(
        self, base: dict[str, Any], n_out: int, usage: dict[str, Any] | None
    ) -> AsyncIterator[bytes]:
        import json

        def event(doc: dict[str, Any]) -> bytes:
            return b"data: " + json.dumps(doc).encode() + b"\n\n"

        chunk = {**base, "object": "chat.completion.chunk"}
        try:
            yield event(
                {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
            )
            if self.gate is not None:
                await asyncio.to_thread(self.gate.wait, 30)
            for _ in range(n_out):
                if self.chunk_delay:
                    await asyncio.sleep(self.chunk_delay)
                self.stream_chunks_sent += 1
                yield event({**chunk, "choices": [{"index": 0, "delta": {"content": WORD}}]})
            yield event({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            if usage is not None:
                yield event({**chunk, "choices": [], "usage": usage})
            yield b"data: [DONE]\n\n"
        except (asyncio.CancelledError, GeneratorExit):
            self.closed_early += 1
            raise
        finally:
            self.in_flight -= 1

    async def _embeddings(self, request: Request) -> Response:
        body = await request.json()
        self.calls.append(body)
        failure = self._failure()
        if failure is not None:
            return failure
        inputs = body["input"]
        if isinstance(inputs, str):
            inputs = [inputs]
        tokens = 0
        for item in inputs:
            tokens += (
                count_tokens(item, body["model"])
                if isinstance(item, str)
                else (len(item) if isinstance(item, list) else 1)
            )
        data = [
            {"object": "embedding", "index": i, "embedding": [0.1] * 8} for i in range(len(inputs))
        ]
        doc = {"object": "list", "data": data, "model": body["model"]}
        if self.send_usage:
            doc["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
        return JSONResponse(doc)


async def _broken_body() -> AsyncIterator[bytes]:
    yield b'{"id": "chatcmpl-fake", "choices": ['
    await asyncio.sleep(0.05)
    raise RuntimeError("the fake upstream drops the connection mid-body")


class ServerThread:
    """Runs an ASGI app under uvicorn on 127.0.0.1 (random port) in a daemon thread;
    ``url`` is set once entered. A context-manager object over the server's own
    :func:`~llmbudget.server.testing.live_server`, so harnesses can hold it as a field."""

    def __init__(self, app: Any, **tls: Any) -> None:
        self._serving = live_server(app, **tls)
        self.url = ""

    def __enter__(self) -> ServerThread:
        self.url = self._serving.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._serving.__exit__(None, None, None)


# --------------------------------------------------------------------------- gateway harness

MASTER = "sk-test-master-0123456789"
PRICE_IN = "0.000001"  # $1 per million prompt tokens
PRICE_OUT = "0.000002"  # $2 per million completion tokens
HI = [{"role": "user", "content": "hi"}]
HI_TOKENS = 8  # OpenAI chat accounting of HI for gpt-4o-mini


def cost(prompt: int, completion: int) -> Any:
    """Exact dollars for a call at the test prices."""
    from decimal import Decimal

    return Decimal(PRICE_IN) * prompt + Decimal(PRICE_OUT) * completion


def deployment(url: str, name: str = "m", id_: str | None = None, **extra: Any) -> dict[str, Any]:
    params = {
        "model": "openai/gpt-4o-mini",
        "api_base": f"{url}/v1",
        "api_key": "upstream-secret",
        "input_cost_per_token": PRICE_IN,
        "output_cost_per_token": PRICE_OUT,
        "max_output_tokens": 1000,
        **extra,
    }
    entry: dict[str, Any] = {"model_name": name, "litellm_params": params}
    if id_:
        entry["model_info"] = {"id": id_}
    return entry


class Gw:
    """A gateway served by uvicorn on 127.0.0.1 over ``store``, with admin helpers."""

    def __init__(self, config: dict[str, Any], store: Any = None, clock: Any = None) -> None:
        from llmbudget.clock import system_clock
        from llmbudget.gateway import create_gateway_app
        from llmbudget.ledger import Ledger
        from llmbudget.stores.memory import MemoryStore

        config = {**config}
        config.setdefault("general_settings", {})
        config["general_settings"] = {"master_key": MASTER, **config["general_settings"]}
        self.store = store if store is not None else MemoryStore()
        self.clock = clock or system_clock
        self.app = create_gateway_app(config, store=self.store, clock=self.clock)
        self.gateway = self.app.state.gateway
        self.ledger = Ledger(self.store, clock=self.clock)
        self.server = ServerThread(self.app)

    def __enter__(self) -> Gw:
        import httpx

        self.server.__enter__()
        self.url = self.server.url
        self.http = httpx.Client(base_url=self.url, timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()
        self.server.__exit__(*exc)

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        r = self.http.request(
            method, path, json=body, headers={"authorization": f"Bearer {MASTER}"}
        )
        assert r.status_code < 300, r.text
        return r.json()

    def key(self, **fields: Any) -> tuple[str, str]:
        fields.setdefault("user", "alice")
        doc = self.admin("POST", "/v1/keys", fields)
        return doc["id"], doc["key"]

    def chat(self, secret: str, **body: Any) -> Any:
        body.setdefault("model", "m")
        body.setdefault("messages", HI)
        return self.http.post(
            "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {secret}"}
        )

    def status(self, scope: str, limit: Any = None, period: str | None = None) -> Any:
        from llmbudget.budgets import Budget

        return self.ledger.status(Budget.of(scope, limit, period))

    def settled(self, scope: str, period: str | None = None, timeout: float = 5.0) -> Any:
        """The scope's status once no hold is left on it (settles run after responses)."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(scope, None, period)
            if status.held == 0 or time.monotonic() > deadline:
                return status
            time.sleep(0.01)

    def logs(self, **query: Any) -> list[dict[str, Any]]:
        r = self.http.get(
            "/v1/spend/logs", params=query, headers={"authorization": f"Bearer {MASTER}"}
        )
        assert r.status_code == 200, r.text
        return list(r.json()["data"])
