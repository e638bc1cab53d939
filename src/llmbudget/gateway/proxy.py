"""The gateway engine: authenticate, reserve, forward, settle, log.

One request, start to end::

    key      = authenticate(Bearer secret)                    401 on failure
    payload  = parse + validate JSON                          400; nothing reserved or stored
    model    = must be served (404) and allowed for the key (403)
    for each (model, deployment) in router.plan(model):       deployments, then fallbacks
        hold = reserve(all scopes, worst case)                one atomic reserve; 429 if refused
        send upstream (stream_options.include_usage on)       no connection / 429 / 5xx:
                                                              release, next; answer lost
                                                              after sending (timeout, broken
                                                              body, cancelled): settle the
                                                              full hold, log it, next
        pass the response (or SSE chunks) through as received
        settle(hold, real cost) + spend-log entry             one store round trip, after the
                                                              response (streams: at their end)

Worst case = the prompt's tokens (always counted: tiktoken, ~10 µs for a short prompt)
plus ``n x max_tokens`` at the deployment's prices, taking the dearest output rate
(reasoning/audio) when they differ. ``max_tokens`` and ``max_completion_tokens`` are one
cap: both may be sent only if equal (else 400), and only the reserved cap is forwarded,
under the deployment's ``max_tokens_param``.

``max_tokens`` rule, when the client sends none: the gateway reserves for the deployment's
max output (config, else price data, else 4096; at most the context window minus the
prompt) and *forwards that number* so the upstream can never produce more than was
reserved. If that reserve is refused by a key/user/team/org/global/model budget
and ``cap_max_tokens`` is on (default), the gateway lowers the forwarded ``max_tokens`` to
what the refusing budget can still pay after the prompt, and tries again; if that is fewer
than ``min_completion_tokens`` (default 16) the request is refused with 429. An explicit
``max_tokens`` from the client is never lowered: it is reserved as asked, or refused.

Streams: chunks are passed on as the upstream sends them. The usage chunk the gateway asked
for is stripped unless the client asked for it too. The cost comes from that usage; if the
upstream sends none, or the client disconnects first, from counting the streamed text
(prompt tokens counted here + completion tokens counted from the deltas received).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import anyio
import httpx
import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from llmbudget.budgets import Budget
from llmbudget.clock import Clock, system_clock
from llmbudget.errors import (
    BudgetExceededError,
    InvalidInputError,
    LLMBudgetError,
    PricingError,
    StoreError,
)
from llmbudget.gateway.budgets import ScopePlanner, describe_scope
from llmbudget.gateway.config import Deployment, GatewayConfig
from llmbudget.gateway.errors import GatewayError, budget_error
from llmbudget.gateway.keys import KeyManager, VirtualKey
from llmbudget.gateway.router import Router
from llmbudget.gateway.spendlog import SPEND_LOG_KIND
from llmbudget.gateway.storeio import StoreIO
from llmbudget.gateway.upstream import (
    FastClient,
    HttpxClient,
    UpstreamClient,
    UpstreamError,
    UpstreamResponse,
    UpstreamTimeoutError,
)
from llmbudget.ledger import Hold
from llmbudget.money import cost_to_units
from llmbudget.pricing import ModelPrice, TokenUsage, normalize_usage
from llmbudget.stores.base import AsyncStore, Store
from llmbudget.tokens import count_message_tokens, count_tokens

__all__ = ["Gateway"]

log = logging.getLogger("llmbudget.gateway")

_MAX_N = 128
_SETTLE_ATTEMPTS = 5
_HOP_HEADERS = ("x-request-id", "openai-processing-ms", "openai-organization")


def loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass  # e.g. integers beyond 64 bits, which orjson refuses: let the stdlib decide
    return json.loads(data)


def dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # e.g. integers beyond 64 bits
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _request_id() -> str:
    return "req_" + os.urandom(12).hex()


def bearer_secret(request: Request) -> str | None:
    """The key a client presented: ``Authorization: Bearer``, or ``api-key``/``x-api-key``."""
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        return value.strip() if scheme.lower() == "bearer" else None
    return request.headers.get("api-key") or request.headers.get("x-api-key")


# --------------------------------------------------------------------------- costing


def worst_case(price: ModelPrice, prompt: int, output: int) -> Decimal:
    """Most a call with ``prompt`` input and up to ``output`` generated tokens can cost."""
    cost = price.cost(TokenUsage(input_tokens=prompt, output_tokens=output))
    if output:
        # Reasoning or audio output may be dearer than text: reserve the dearest way.
        base = price.rate("output_per_mtok", prompt) or Decimal(0)
        reasoning = price.rate("output_reasoning_per_mtok", prompt)
        audio = price.rate("output_audio_per_mtok", prompt)
        if reasoning is not None and reasoning > base:
            cost = max(
                cost,
                price.cost(
                    TokenUsage(input_tokens=prompt, output_tokens=output, reasoning_tokens=output)
                ),
            )
        if audio is not None and audio > base:
            cost = max(
                cost,
                price.cost(
                    TokenUsage(
                        input_tokens=prompt, output_tokens=output, output_audio_tokens=output
                    )
                ),
            )
    return cost


def affordable_output(price: ModelPrice, prompt: int, remaining: Decimal, n: int) -> int:
    """Largest per-choice ``max_tokens`` whose worst case fits in ``remaining`` (0 if none)."""
    if worst_case(price, prompt, 0) > remaining:
        return 0
    rates = [
        price.rate(name, prompt)
        for name in ("output_per_mtok", "output_reasoning_per_mtok", "output_audio_per_mtok")
    ]
    rate = max((r for r in rates if r is not None), default=Decimal(0))
    if rate <= 0:
        return 0  # output is free: capping cannot make the request fit
    left = remaining - worst_case(price, prompt, 0)
    tokens = int(left * 1_000_000 / rate) // n
    # The linear estimate ignores rounding; step down until the exact cost fits.
    while tokens > 0 and worst_case(price, prompt, tokens * n) > remaining:
        tokens -= 1
    return tokens


def _usage_cost(price: ModelPrice, usage: object) -> tuple[Decimal, int, int] | None:
    try:
        normalized = normalize_usage(usage)
        return price.cost(normalized), normalized.input_tokens, normalized.output_tokens
    except (PricingError, InvalidInputError, TypeError, ValueError):
        return None


def _message_text(choices: object) -> str:
    """Generated text of a non-streamed response (content, refusals, tool calls)."""
    parts: list[str] = []
    if isinstance(choices, list):
        for choice in choices:
            message = choice.get("message") if isinstance(choice, Mapping) else None
            if isinstance(message, Mapping):
                _collect_text(message, parts)
    return "".join(parts)


def _collect_text(delta: Mapping[str, Any], parts: list[str]) -> None:
    for name in ("content", "reasoning_content", "reasoning", "refusal"):
        value = delta.get(name)
        if isinstance(value, str):
            parts.append(value)
    calls = delta.get("tool_calls")
    if isinstance(calls, list):
        for call in calls:
            fn = call.get("function") if isinstance(call, Mapping) else None
            if isinstance(fn, Mapping):
                for name in ("name", "arguments"):
                    value = fn.get(name)
                    if isinstance(value, str):
                        parts.append(value)


# --------------------------------------------------------------------------- request state


@dataclass(slots=True)
class Call:
    """One proxied request as it goes through the gateway."""

    endpoint: str
    key: VirtualKey
    model: str
    payload: dict[str, Any]
    stream: bool
    end_user: str | None
    started: float
    id: str = field(default_factory=_request_id)
    max_tokens: int | None = None
    n: int = 1
    wants_usage: bool = False
    attempts: int = 0
    prompt_cache: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class Attempt:
    """A reserved try on one deployment."""

    call: Call
    model: str
    deployment: Deployment
    hold: Hold
    prompt_tokens: int
    output_tokens: int
    number: int = 1  # 1 for the first deployment tried, 2 for the next ...
    #: The hold's fate is decided (released, settled, or handed to a response that settles it).
    ended: bool = False


class _RetryError(Exception):
    """An attempt failed in a way another deployment may not (429, 5xx, timeout)."""

    def __init__(self, response: Response) -> None:
        self.response = response


# --------------------------------------------------------------------------- the gateway


class Gateway:
    """Everything one gateway process holds: config, store, keys, router, HTTP client.

    Build it through :func:`~llmbudget.gateway.app.create_gateway_app` or
    :func:`~llmbudget.gateway.app.install_gateway`; call :meth:`aclose` on shutdown.
    """

    def __init__(
        self,
        config: GatewayConfig,
        store: Store | AsyncStore,
        *,
        clock: Clock = system_clock,
        transport: httpx.AsyncBaseTransport | None = None,
        owns_store: bool = False,
        master_key: str | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.io = StoreIO(
            store,
            clock=clock,
            hold_ttl=config.hold_ttl,
            inline=True if config.store_calls == "inline" else None,
        )
        self.owns_store = owns_store
        self.master_key = master_key if master_key is not None else config.master_key
        self.keys = KeyManager(
            self.io,
            clock=clock,
            ttl=config.key_cache_ttl,
            static=config.keys,
            master_key=self.master_key,
        )
        self.planner = ScopePlanner(config)
        self.router = Router(config, clock=clock)
        self.upstream: UpstreamClient = (
            HttpxClient(transport)
            if transport is not None or config.upstream_client == "httpx"
            else FastClient()
        )
        self._headers = {d.id: d.upstream_headers() for d in config.deployments}
        self._tasks: set[asyncio.Task[None]] = set()

    async def warm_up(self) -> None:
        """Load each deployment's tokenizer now, not on the first request (~0.3 s each)."""

        def load() -> None:
            for name in {d.upstream_model for d in self.config.deployments}:
                count_tokens("warm up", name)

        await asyncio.to_thread(load)

    async def aclose(self) -> None:
        """Finish pending settles, close the HTTP pool (and the store if the gateway opened it)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.upstream.aclose()
        await self.io.aclose(close_store=self.owns_store)

    # -- endpoints ---------------------------------------------------------------------------

    async def models(self, request: Request) -> Response:
        key = await self.keys.authenticate(bearer_secret(request))
        data = [
            {"id": m, "object": "model", "created": 0, "owned_by": "llmbudget"}
            for m in self.planner.allowed_models(key)
        ]
        return JSONResponse({"object": "list", "data": data})

    async def chat_completions(self, request: Request) -> Response:
        call = await self._start(request, "chat.completions")
        payload = call.payload
        messages = payload.get("messages")
        if not isinstance(messages, list) or not messages:
            raise GatewayError(
                400, "invalid_request", "messages must be a non-empty list", param="messages"
            )
        if not all(isinstance(m, Mapping) for m in messages):
            raise GatewayError(
                400, "invalid_request", "each message must be an object", param="messages"
            )
        stream = payload.get("stream", False)
        if not isinstance(stream, bool):
            raise GatewayError(400, "invalid_request", "stream must be a boolean", param="stream")
        call.stream = stream
        n = payload.get("n", 1)
        if n is None:
            n = 1
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= _MAX_N:
            raise GatewayError(
                400, "invalid_request", f"n must be an integer in 1..{_MAX_N}", param="n"
            )
        call.n = n
        caps: dict[str, int] = {}
        for name in ("max_completion_tokens", "max_tokens"):
            value = payload.get(name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise GatewayError(
                    400, "invalid_request", f"{name} must be a positive integer", param=name
                )
            caps[name] = value
        if len(set(caps.values())) > 1:
            # Only one cap is forwarded (the one reserved for); two different ones leave it
            # unclear which the client meant, and an upstream reading the other could
            # generate past the hold. Refuse rather than guess.
            raise GatewayError(
                400,
                "invalid_request",
                "max_tokens and max_completion_tokens differ "
                f"({caps['max_tokens']} and {caps['max_completion_tokens']}): send one of "
                "them, or the same number in both",
                param="max_tokens",
            )
        call.max_tokens = next(iter(caps.values()), None)
        options = payload.get("stream_options")
        if options is not None and not isinstance(options, Mapping):
            raise GatewayError(
                400, "invalid_request", "stream_options must be an object", param="stream_options"
            )
        call.wants_usage = bool(stream and options and options.get("include_usage"))
        return await self._run(call)

    async def embeddings(self, request: Request) -> Response:
        call = await self._start(request, "embeddings")
        value = call.payload.get("input")
        if not _valid_embedding_input(value):
            raise GatewayError(
                400,
                "invalid_request",
                "input must be a non-empty string, list of strings, or list of token arrays",
                param="input",
            )
        return await self._run(call)

    # -- request pipeline --------------------------------------------------------------------

    async def _start(self, request: Request, endpoint: str) -> Call:
        started = time.perf_counter()
        key = await self.keys.authenticate(bearer_secret(request))
        body = await request.body()
        if len(body) > self.config.max_body_bytes:
            raise GatewayError(413, "request_too_large", "request body is too large")
        try:
            payload = loads(body)
        except (ValueError, UnicodeDecodeError):
            raise GatewayError(400, "invalid_json", "the request body is not valid JSON") from None
        if not isinstance(payload, dict):
            raise GatewayError(400, "invalid_request", "the request body must be a JSON object")
        model = payload.get("model")
        if not isinstance(model, str) or not model:
            raise GatewayError(400, "invalid_request", "model is required", param="model")
        end_user = payload.get("user")
        if end_user is not None and not isinstance(end_user, str):
            raise GatewayError(400, "invalid_request", "user must be a string", param="user")
        if not self.router.has_model(model):
            raise GatewayError(
                404, "model_not_found", f"the model {model!r} does not exist", param="model"
            )
        if not self.planner.allows(key, model):
            raise GatewayError(
                403, "model_not_allowed", f"this key may not use the model {model!r}", param="model"
            )
        return Call(endpoint, key, model, payload, False, end_user or None, started)

    def _prompt_tokens(self, call: Call, dep: Deployment) -> int:
        tokenizer = dep.upstream_model
        cached = call.prompt_cache.get(tokenizer)
        if cached is not None:
            return cached
        payload = call.payload
        try:
            if call.endpoint == "embeddings":
                tokens = _embedding_tokens(payload["input"], tokenizer)
            else:
                tools = payload.get("tools") or payload.get("functions")
                tokens = count_message_tokens(payload["messages"], tokenizer, tools=tools)
                for extra in ("response_format", "tool_choice", "function_call", "prediction"):
                    # Not in the chat template's count, but sent to the model: over-count.
                    if payload.get(extra) is not None:
                        tokens += count_tokens(dumps(payload[extra]).decode("utf-8"), tokenizer)
        except (InvalidInputError, TypeError, AttributeError) as exc:
            raise GatewayError(400, "invalid_request", f"cannot read the prompt: {exc}") from None
        call.prompt_cache[tokenizer] = tokens
        return tokens

    async def _reserve(
        self, call: Call, dep: Deployment, budgets: Sequence[Budget]
    ) -> tuple[Hold, int, int]:
        """Reserve the worst case; returns the hold, prompt tokens and per-choice output cap."""
        prompt = self._prompt_tokens(call, dep)
        if call.endpoint == "embeddings":
            amount = self._amount(call, dep, prompt, 0)
            return await self.io.reserve(budgets, amount), prompt, 0
        if call.max_tokens is not None:
            output = call.max_tokens
        else:
            # The deployment's max output (config, else price data, else 4096), and never
            # more than the context window leaves after the prompt.
            output = dep.max_output_tokens
            window = dep.price.context_window
            if window:
                output = max(1, min(output, window - prompt))
        for _ in range(len(budgets) + 1):
            try:
                hold = await self.io.reserve(budgets, self._amount(call, dep, prompt, output))
                return hold, prompt, output
            except BudgetExceededError as exc:
                if call.max_tokens is not None or not self.config.cap_max_tokens:
                    raise
                if exc.scope == dep.scope:
                    raise  # an exhausted deployment is skipped, not squeezed
                fits = affordable_output(dep.price, prompt, exc.remaining, call.n)
                if fits < self.config.min_completion_tokens or fits >= output:
                    raise
                output = fits
        raise AssertionError("unreachable: each pass lowers output or raises")

    def _amount(self, call: Call, dep: Deployment, prompt: int, output: int) -> Decimal:
        """The worst case to reserve; 400 if it is beyond what a budget can hold."""
        try:
            amount = worst_case(dep.price, prompt, output * call.n)
            cost_to_units(amount, what="reserve amount")
        except (InvalidInputError, PricingError, ArithmeticError) as exc:
            param = "max_tokens" if call.max_tokens is not None else None
            raise GatewayError(
                400,
                "invalid_request",
                f"this request's worst-case cost cannot be reserved: {exc}",
                param=param,
            ) from None
        return amount

    async def _run(self, call: Call) -> Response:
        key = call.key
        general = {b.scope for b in self.planner.general_budgets(key, call.end_user)}
        refusal: BudgetExceededError | None = None
        failure: Response | None = None
        plan = self.router.plan(call.model, lambda m: self.planner.allows(key, m))
        for model, deployments in plan:
            tries = 0
            for dep in deployments:
                if tries > self.config.router.num_retries:
                    break
                budgets = self.planner.budgets(key, call.end_user, model, dep)
                try:
                    hold, prompt, output = await self._reserve(call, dep, budgets)
                except BudgetExceededError as exc:
                    if exc.scope == dep.scope:
                        refusal = refusal or exc
                        continue  # this provider account is spent: try another deployment
                    if exc.scope not in general:
                        refusal = exc
                        break  # a per-model cap: a fallback model may still fit
                    await self._log_refusal(call, model, exc)
                    raise self._budget_error(exc) from None
                except (PricingError, LLMBudgetError) as exc:
                    if isinstance(exc, StoreError):
                        raise
                    raise GatewayError(
                        500, "pricing_error", f"cannot price {model}: {exc}"
                    ) from None
                tries += 1
                call.attempts += 1
                attempt = Attempt(call, model, dep, hold, prompt, output, call.attempts)
                try:
                    return await self._send(attempt)
                except _RetryError as retry:
                    failure = retry.response
        if refusal is not None:
            await self._log_refusal(call, call.model, refusal)
            raise self._budget_error(refusal)
        if failure is not None:
            return failure
        wait = self.router.cooldown_remaining(call.model)
        headers = {"Retry-After": str(max(1, int(wait + 0.999)))} if wait > 0 else {}
        raise GatewayError(
            503,
            "no_deployment",
            f"no deployment of {call.model!r} is available (all cooling down or over rpm)",
            headers=headers,
        )

    def _budget_error(self, exc: BudgetExceededError) -> GatewayError:
        return budget_error(exc, self.clock(), label=describe_scope(exc.scope))

    # -- upstream ------------------------------------------------------------------------------

    def _upstream_body(self, attempt: Attempt) -> bytes:
        call, dep = attempt.call, attempt.deployment
        body = dict(call.payload)
        body["model"] = dep.upstream_model
        if call.endpoint == "chat.completions":
            # Forward exactly the cap that was reserved for, under the deployment's name for
            # it, and nothing else: an upstream reading the other field could otherwise
            # generate past the hold.
            body.pop("max_tokens", None)
            body.pop("max_completion_tokens", None)
            body[dep.max_tokens_param] = attempt.output_tokens
            if call.stream:
                options = dict(body.get("stream_options") or {})
                options["include_usage"] = True
                body["stream_options"] = options
        return dumps(body)

    async def _send(self, attempt: Attempt) -> Response:
        """Forward the attempt; its hold is released, settled, or handed to the response.

        The hold is released only when the request never reached the upstream (no
        connection). Once it may have been sent, the provider may have done and billed the
        work, so a lost answer (timeout, broken body, the handler cancelled while waiting)
        settles the *full* hold and logs it, before any other deployment is tried.
        """
        call, dep = attempt.call, attempt.deployment
        url = dep.chat_url if call.endpoint == "chat.completions" else dep.embeddings_url
        self.router.started(dep)
        streaming = False
        try:
            try:
                upstream = await self.upstream.post(
                    url, self._upstream_body(attempt), self._headers[dep.id], dep.timeout
                )
            except UpstreamError as exc:
                raise await self._lost(attempt, exc) from None
            if upstream.status_code >= 400:
                return await self._upstream_error(attempt, upstream)
            self.router.succeeded(dep)
            if call.stream:
                streaming = True
                attempt.ended = True  # the stream settles when it ends
                return _StreamResponse(self, attempt, upstream)
            return await self._complete(attempt, upstream)
        except asyncio.CancelledError:
            # The handler was cancelled (client gone, shutdown) with the call in flight: the
            # upstream may still do and bill the work, so record the whole hold as spent.
            if not attempt.ended:
                attempt.ended = True
                await self._settle_in_full(attempt, "cancelled", 499)
            raise
        finally:
            if not streaming:
                self.router.finished(dep)

    async def _lost(self, attempt: Attempt, exc: UpstreamError) -> _RetryError:
        """End the hold of a call whose upstream answer was lost; the error to retry with."""
        dep = attempt.deployment
        timed_out = isinstance(exc, UpstreamTimeoutError)
        self.router.failed(dep, None)
        if exc.sent:
            attempt.ended = True
            status = "upstream_timeout" if timed_out else "upstream_failed"
            await self._settle_in_full(attempt, status, 504 if timed_out else 502)
        else:
            await self._release(attempt)
        if timed_out:
            error = GatewayError(504, "upstream_timeout", f"deployment {dep.id} timed out: {exc}")
        else:
            error = GatewayError(502, "upstream_unreachable", f"deployment {dep.id} failed: {exc}")
        return _RetryError(error.response())

    async def _failed(
        self, attempt: Attempt, status: int | None, retry_after: float | None = None
    ) -> None:
        self.router.failed(attempt.deployment, status, retry_after)
        await self._release(attempt)

    async def _release(self, attempt: Attempt) -> None:
        """End a hold without spend: only for a call the upstream answered with an error,
        or one that never reached it."""
        attempt.ended = True
        try:
            await self.io.release(attempt.hold)
        except StoreError:
            # The hold expires by itself after hold_ttl; nothing was spent.
            log.exception("could not release hold %s", attempt.hold.id)

    async def _settle_in_full(self, attempt: Attempt, status: str, http_status: int) -> None:
        """Record the whole hold as spent (the provider may have billed up to it) and log it."""
        hold = attempt.hold
        entry = self._entry(
            attempt,
            hold.amount,
            attempt.prompt_tokens,
            attempt.output_tokens * attempt.call.n,
            status,
            http_status,
            "reserved",
        )
        # A retried request logs one entry per recorded attempt; the spend log dedupes by
        # id, so each gets its own (the request's id, plus the attempt's number).
        entry["id"] = f"{attempt.call.id}.{attempt.number}"
        entry["request_id"] = attempt.call.id
        await self._settle_detached(hold, hold.amount, attempt.call.model, entry)

    async def _upstream_error(self, attempt: Attempt, upstream: UpstreamResponse) -> Response:
        try:
            content = await upstream.aread()
        except UpstreamError:
            content = b""
        finally:
            await upstream.aclose()
        status = upstream.status_code
        headers = {"content-type": upstream.headers.get("content-type", "application/json")}
        response = Response(content, status_code=status, headers=headers)
        if status in self.config.router.retry_statuses:
            await self._failed(attempt, status, _retry_after(upstream.headers.get("retry-after")))
            raise _RetryError(response)
        # The client's request was bad (400, 401 upstream, 404 ...): another deployment would
        # say the same, so pass the upstream's answer through.
        await self._release(attempt)
        return response

    async def _complete(self, attempt: Attempt, upstream: UpstreamResponse) -> Response:
        call, dep = attempt.call, attempt.deployment
        try:
            content = await upstream.aread()
        except UpstreamError as exc:
            # The upstream accepted the call (2xx) and then broke: it may have billed it.
            exc.sent = True
            raise await self._lost(attempt, exc) from None
        finally:
            await upstream.aclose()
        doc: Any = None
        with contextlib.suppress(ValueError):
            doc = loads(content)
        usage = doc.get("usage") if isinstance(doc, dict) else None
        priced = _usage_cost(dep.price, usage) if usage else None
        source = "upstream"
        if priced is None:
            # No usage from upstream: our prompt count plus the generated text, counted.
            text = _message_text(doc.get("choices")) if isinstance(doc, dict) else ""
            completion = count_tokens(text, dep.upstream_model) if text else 0
            cost = worst_case(dep.price, attempt.prompt_tokens, completion)
            priced = (cost, attempt.prompt_tokens, completion)
            source = "counted"
        cost, prompt_tokens, completion_tokens = priced
        entry = self._entry(attempt, cost, prompt_tokens, completion_tokens, "ok", 200, source)
        headers = {
            "x-llmbudget-cost": str(cost),
            "x-llmbudget-deployment": dep.id,
            "x-llmbudget-request-id": call.id,
        }
        for name in _HOP_HEADERS:
            value = upstream.headers.get(name)
            if value is not None:
                headers[name] = value
        attempt.ended = True  # the response settles once it is sent (or fails to be)
        return _SettlingResponse(
            content,
            status_code=upstream.status_code,
            headers=headers,
            settle=functools.partial(self._settle, attempt.hold, cost, call.model, entry),
        )

    # -- settling ------------------------------------------------------------------------------

    def _entry(
        self,
        attempt: Attempt,
        cost: Decimal,
        prompt_tokens: int,
        completion_tokens: int,
        status: str,
        http_status: int,
        usage_source: str,
    ) -> dict[str, Any]:
        call, dep = attempt.call, attempt.deployment
        owners = self.planner.owners(call.key)
        return {
            "id": call.id,
            "key": call.key.id,
            "user": owners.user,
            "team": owners.team,
            "org": owners.org,
            "end_user": call.end_user,
            "model": attempt.model,
            "requested_model": call.model,
            "deployment": dep.id,
            "upstream_model": dep.upstream_model,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "cost": str(cost),
            "reserved": str(attempt.hold.amount),
            "latency_ms": round((time.perf_counter() - call.started) * 1000, 3),
            "status": status,
            "http_status": http_status,
            "stream": call.stream,
            "endpoint": call.endpoint,
            "usage_source": usage_source,
        }

    async def _settle(
        self, hold: Hold, cost: Decimal, model: str, entry: Mapping[str, Any]
    ) -> None:
        """Settle and log; retried, because an unsettled hold would expire unrecorded."""
        record = (SPEND_LOG_KIND, self.clock(), entry)
        for attempt in range(_SETTLE_ATTEMPTS):
            try:
                await self.io.settle(hold, cost, model, record)
                return
            except StoreError:
                if attempt == _SETTLE_ATTEMPTS - 1:
                    log.exception("could not settle hold %s ($%s); giving up", hold.id, cost)
                    return
                await asyncio.sleep(0.05 * 2**attempt)

    async def _settle_detached(
        self, hold: Hold, cost: Decimal, model: str, entry: Mapping[str, Any]
    ) -> None:
        """Settle in a task of its own and wait for it, so that cancelling the request's task
        cannot stop the settle (:meth:`aclose` waits for such tasks)."""
        task = asyncio.get_running_loop().create_task(self._settle(hold, cost, model, entry))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        # If this wait is cancelled, the settle still runs to its end in its own task.
        await asyncio.shield(task)

    async def _log_refusal(self, call: Call, model: str, exc: BudgetExceededError) -> None:
        if not self.config.log_refusals:
            return
        owners = self.planner.owners(call.key)
        entry = {
            "id": call.id,
            "key": call.key.id,
            "user": owners.user,
            "team": owners.team,
            "org": owners.org,
            "end_user": call.end_user,
            "model": model,
            "requested_model": call.model,
            "deployment": None,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "cost": "0",
            "reserved": "0",
            "latency_ms": round((time.perf_counter() - call.started) * 1000, 3),
            "status": "budget_exceeded",
            "http_status": 429,
            "stream": call.stream,
            "endpoint": call.endpoint,
            "refused_scope": exc.scope,
        }
        try:
            await self.io.append_log(SPEND_LOG_KIND, self.clock(), entry)
        except StoreError:
            log.exception("could not log a refusal")


# --------------------------------------------------------------------------- streaming


class _SettlingResponse(Response):
    """A complete JSON response whose hold is settled once it is sent — or when sending it
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


class _StreamState:
    __slots__ = ("buffer", "error", "parts", "usage")

    def __init__(self) -> None:
        self.buffer = b""
        self.parts: list[str] = []
        self.usage: Any = None
        self.error = False


class _StreamResponse(Response):
    """Server-sent events passed through chunk by chunk, settled when the stream ends.

    A hand-written ASGI response rather than ``StreamingResponse`` so that the end of the
    stream — finished, upstream failure, or client gone — always reaches :meth:`_finish`
    within the request, shielded from cancellation.
    """

    media_type = "text/event-stream"

    def __init__(self, gateway: Gateway, attempt: Attempt, upstream: UpstreamResponse) -> None:
        super().__init__(content=None, status_code=200)
        self.gateway = gateway
        self.attempt = attempt
        self.upstream = upstream
        self.state = _StreamState()
        self.raw_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-llmbudget-deployment", attempt.deployment.id.encode("latin-1", "replace")),
            (b"x-llmbudget-request-id", attempt.call.id.encode("ascii")),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        disconnected = False
        completed = False
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async with anyio.create_task_group() as group:

                async def watch() -> None:
                    nonlocal disconnected
                    while True:
                        message = await receive()
                        if message["type"] == "http.disconnect":
                            disconnected = True
                            group.cancel_scope.cancel()
                            return

                group.start_soon(watch)
                try:
                    completed = await self._pump(send)
                except OSError:
                    disconnected = True  # the client went away while we wrote to it
                group.cancel_scope.cancel()
            if not disconnected:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            disconnected = True
        finally:
            with anyio.CancelScope(shield=True):
                await self._finish(completed, disconnected)

    async def _pump(self, send: Send) -> bool:
        """Relay the upstream's events; ``True`` if it ended normally."""
        state = self.state
        keep_usage = self.attempt.call.wants_usage
        try:
            async for chunk in self.upstream.aiter_bytes():
                out = _take_events(state, chunk, keep_usage)
                if out:
                    await send({"type": "http.response.body", "body": out, "more_body": True})
        except UpstreamError as exc:
            state.error = True
            message = {
                "error": {
                    "type": "api_error",
                    "code": "upstream_error",
                    "message": f"upstream stream failed: {exc}",
                    "param": None,
                }
            }
            await send(
                {
                    "type": "http.response.body",
                    "body": b"data: " + dumps(message) + b"\n\n",
                    "more_body": True,
                }
            )
            return False
        if state.buffer.strip():
            # The upstream ended without a final blank line: flush what is left.
            state.buffer += b"\n\n"
            out = _take_events(state, b"", keep_usage)
            if out:
                await send({"type": "http.response.body", "body": out, "more_body": True})
        return True

    async def _finish(self, completed: bool, disconnected: bool) -> None:
        gateway, attempt = self.gateway, self.attempt
        dep, call = attempt.deployment, attempt.call
        try:
            await self.upstream.aclose()
        except Exception:  # closing a broken connection must not stop settling
            log.debug("closing the upstream stream failed", exc_info=True)
        gateway.router.finished(dep)
        if self.state.error:
            gateway.router.failed(dep, None)
        priced = _usage_cost(dep.price, self.state.usage) if self.state.usage else None
        source = "upstream"
        if priced is None:
            text = "".join(self.state.parts)
            completion = count_tokens(text, dep.upstream_model) if text else 0
            priced = (
                worst_case(dep.price, attempt.prompt_tokens, completion),
                attempt.prompt_tokens,
                completion,
            )
            source = "counted"
        cost, prompt_tokens, completion_tokens = priced
        if disconnected:
            status = "client_disconnected"
        elif self.state.error or not completed:
            status = "upstream_error"
        else:
            status = "ok"
        entry = gateway._entry(attempt, cost, prompt_tokens, completion_tokens, status, 200, source)
        await gateway._settle(attempt.hold, cost, call.model, entry)


def _take_events(state: _StreamState, chunk: bytes, keep_usage: bool) -> bytes:
    """Append ``chunk``; return the complete events to forward, noting usage and text."""
    buffer = state.buffer + chunk
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
        if _keep_event(state, event, keep_usage):
            out.append(event)
            out.append(b"\n\n")
    state.buffer = buffer[start:]
    return b"".join(out)


def _keep_event(state: _StreamState, event: bytes, keep_usage: bool) -> bool:
    data = b""
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            data += line[5:].lstrip(b" ")
    if not data and event.lstrip().startswith(b"{"):
        data = event  # an upstream that ignored stream=true and sent one JSON body
    if not data or data == b"[DONE]":
        return True
    try:
        doc = loads(data)
    except ValueError:
        return True
    if not isinstance(doc, dict):
        return True
    if doc.get("error") is not None:
        state.error = True
        return True
    usage = doc.get("usage")
    if usage:
        state.usage = usage
    choices = doc.get("choices")
    if choices:
        for choice in choices:
            delta = (
                (choice.get("delta") or choice.get("message")) if isinstance(choice, dict) else None
            )
            if isinstance(delta, dict):
                _collect_text(delta, state.parts)
        return True
    # A usage-only chunk (empty choices) exists because the gateway asked for it.
    return keep_usage or not usage


# --------------------------------------------------------------------------- embeddings


def _valid_embedding_input(value: object) -> bool:
    if isinstance(value, str):
        return bool(value)
    if not isinstance(value, list) or not value:
        return False
    if all(isinstance(v, str) for v in value):
        return True
    if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return True
    return all(
        isinstance(v, list) and v and all(isinstance(t, int) and not isinstance(t, bool) for t in v)
        for v in value
    )


def _embedding_tokens(value: object, model: str) -> int:
    if isinstance(value, str):
        return count_tokens(value, model)
    assert isinstance(value, list)
    if all(isinstance(v, str) for v in value):
        return sum(count_tokens(v, model) for v in value)
    if all(isinstance(v, int) for v in value):
        return len(value)  # already token ids
    return sum(len(v) for v in value)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        return None
