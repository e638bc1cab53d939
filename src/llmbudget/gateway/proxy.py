"""The gateway engine: authenticate, reserve, forward, settle, log.

One request, start to end::

    key      = authenticate(Bearer secret)                    401 on failure
    call     = metering.describe(api, JSON body)              400; nothing reserved or stored
    model    = must be served (404) and allowed for the key (403)
    for each (model, deployment) in router.plan(model):       deployments, then fallbacks
        meter.plan_open(): one atomic reserve over every      429 if refused (a lowered
            scope of the request, worst case                  cap is tried first)
        send upstream the body metering.forward made          no connection / 429 / 5xx:
                                                              release, next; answer lost
                                                              after sending (timeout, broken
                                                              body, cancelled): charge the
                                                              whole hold, log it, next
        pass the response (or SSE events) through as received
        settle the real cost + spend-log entry                one trip to the store, after
                                                              the response (streams: at end)

Every rule about money — the worst case, the output cap forwarded, what a response
without usage costs, when a failure was billed — is the metering core's
(:mod:`llmbudget.metering`); the gateway only routes, relays and logs.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, cast

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from llmbudget import operations as ops
from llmbudget.budgets import Budget
from llmbudget.clock import Clock, system_clock
from llmbudget.errors import (
    BudgetExceededError,
    InvalidInputError,
    InvalidRequestError,
    LLMBudgetError,
    PricingError,
    StoreError,
)
from llmbudget.gateway.budgets import ScopePlanner, describe_scope, scope_window
from llmbudget.gateway.config import Deployment, GatewayConfig
from llmbudget.gateway.entities import EntityDirectory
from llmbudget.gateway.errors import GatewayError, budget_error
from llmbudget.gateway.keys import KeyManager, VirtualKey
from llmbudget.gateway.metrics import GatewayMetrics
from llmbudget.gateway.relay import (
    EventConverter,
    SettlingResponse,
    StreamEnd,
    StreamRelay,
    dumps,
    loads,
)
from llmbudget.gateway.router import Router
from llmbudget.gateway.spendlog import SPEND_LOG_KIND
from llmbudget.gateway.upstream import (
    AiohttpClient,
    HttpxClient,
    UpstreamClient,
    UpstreamError,
    UpstreamResponse,
    UpstreamTimeoutError,
)
from llmbudget.ledger import AsyncLedger, LogRecord
from llmbudget.metering import (
    Api,
    BillableCall,
    BodyWatcher,
    Meter,
    describe,
    forward,
    needs_usage_request,
    not_sent,
)
from llmbudget.money import format_money
from llmbudget.plans import Plan, run_async
from llmbudget.reservations import ScopeGroup
from llmbudget.retrying import retry_after
from llmbudget.stores.base import AsyncStore, Store
from llmbudget.tokens import count_tokens
from llmbudget.translate import (
    anthropic_error,
    anthropic_request,
    anthropic_to_openai,
    chat_request,
    message_from_chat,
    openai_error,
)

__all__ = ["Gateway", "bearer_secret"]

log = logging.getLogger("llmbudget.gateway")

_HOP_HEADERS = ("x-request-id", "openai-processing-ms", "openai-organization")
# How each ending of an attempt is logged: its status and the HTTP status it stands for.
_HTTP_STATUS = {
    "ok": 200,
    "client_disconnected": 200,
    "upstream_error": 200,
    "upstream_timeout": 504,
    "upstream_failed": 502,
    "cancelled": 499,
}
# Endings whose entry is the request's own; the others are one failed attempt of it.
_REQUEST_ENDINGS = ("ok", "client_disconnected", "upstream_error")


def _request_id() -> str:
    return "req_" + os.urandom(12).hex()


_READ_HEADERS = frozenset(
    {b"authorization", b"api-key", b"x-api-key", b"anthropic-version", b"anthropic-beta"}
)


def request_headers(request: Request) -> dict[str, str]:
    """The few request headers the proxy reads, found in one pass over the raw list
    (Starlette's ``request.headers`` decodes every header, then scans them per lookup)."""
    found: dict[str, str] | None = request.scope.get("llmbudget.headers")
    if found is None:
        found = {}
        for name, value in request.scope["headers"]:
            if name in _READ_HEADERS:  # ASGI servers send names in lower case
                # The first of repeated headers, as Starlette's Headers.get answers.
                found.setdefault(name.decode("latin-1"), value.decode("latin-1"))
        request.scope["llmbudget.headers"] = found
    return found


def bearer_secret(request: Request) -> str | None:
    """The key a client presented: ``Authorization: Bearer``, or ``api-key``/``x-api-key``."""
    headers = request_headers(request)
    header = headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        return value.strip() if scheme.lower() == "bearer" else None
    return headers.get("api-key") or headers.get("x-api-key")


def _upstream_client(
    config: GatewayConfig, transport: httpx.AsyncBaseTransport | None
) -> UpstreamClient:
    if transport is not None or config.upstream_client == "httpx":
        return HttpxClient(transport)
    return AiohttpClient(
        ca_bundle=config.ssl_ca_bundle,
        client_cert=config.ssl_client_cert,
        client_key=config.ssl_client_key,
        verify=config.ssl_verify,
    )


class _InlineStore:
    """A synchronous store called on the event loop itself (``store_calls: inline``):
    not a :class:`Store` to the runners, so its calls are not sent to a thread."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@dataclass(slots=True)
class Call:
    """One proxied request as it goes through the gateway."""

    api: Api
    endpoint: str
    key: VirtualKey
    model: str
    payload: dict[str, Any]
    billable: BillableCall
    started: float
    id: str = field(default_factory=_request_id)
    attempts: int = 0
    by_tokenizer: dict[str, BillableCall] = field(default_factory=dict)
    #: Headers passed on to a native Anthropic upstream (``anthropic-version``, ``-beta``).
    anthropic_headers: dict[str, str] = field(default_factory=dict)
    #: The model asked for, when a budget could not pay for it and a cheaper one answers.
    downgraded_from: str | None = None

    @property
    def stream(self) -> bool:
        return self.billable.stream

    @property
    def end_user(self) -> str | None:
        return self.billable.end_user


class _RetryError(Exception):
    """An attempt failed in a way another deployment may not (429, 5xx, timeout)."""

    def __init__(self, response: Response) -> None:
        self.response = response


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
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.config = config
        #: Prometheus metrics (the host server's registry when mounted, else its own).
        self.metrics = metrics if metrics is not None else GatewayMetrics()
        self.clock = clock
        self.store = store
        working: Store | AsyncStore = store
        if config.store_calls == "inline" and isinstance(store, Store):
            working = cast(AsyncStore, _InlineStore(store))
        self.ledger = AsyncLedger(working, clock=clock, hold_ttl=config.hold_ttl)
        self.owns_store = owns_store
        self.master_key = master_key if master_key is not None else config.master_key
        self.entities = EntityDirectory(working, config, clock=clock, ttl=config.key_cache_ttl)
        self.keys = KeyManager(
            working,
            clock=clock,
            ttl=config.key_cache_ttl,
            static=config.keys,
            master_key=self.master_key,
            parents=self.entities,
        )
        self.entities.keys = self.keys
        self.planner = ScopePlanner(config, self.entities)
        self.router = Router(config, clock=clock)
        self.upstream = _upstream_client(config, transport)
        self._headers = {d.id: d.upstream_headers() for d in config.deployments}
        self._tasks: set[asyncio.Task[None]] = set()

    async def warm_up(self) -> None:
        """Prepare what the first request would otherwise wait for: each deployment's
        tokenizer description (not its vocabulary: prompts are bounded without one until
        an exact count is needed, and the first such count loads it in a worker thread)."""

        def load() -> None:
            for name in {d.upstream_model for d in self.config.deployments}:
                count_tokens("warm up", name, bound=True)

        await asyncio.to_thread(load)

    async def aclose(self) -> None:
        """Finish pending settles, close the HTTP pool (and the store if the gateway opened it)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.upstream.aclose()
        if self.owns_store:
            await ops.Close(self.store).arun()

    # -- endpoints ---------------------------------------------------------------------------

    async def models(self, request: Request) -> Response:
        key = await self.keys.authenticate(bearer_secret(request))
        await self.entities.prefetch(key)
        data = [
            {"id": m, "object": "model", "created": 0, "owned_by": "llmbudget"}
            for m in self.planner.allowed_models(key)
        ]
        return JSONResponse({"object": "list", "data": data})

    async def chat_completions(self, request: Request) -> Response:
        return await self._run(await self._start(request, "chat", "chat.completions"))

    async def embeddings(self, request: Request) -> Response:
        return await self._run(await self._start(request, "embeddings", "embeddings"))

    async def responses(self, request: Request) -> Response:
        """OpenAI's Responses API (the Agents SDK, Codex)."""
        return await self._run(await self._start(request, "responses", "responses"))

    async def messages(self, request: Request) -> Response:
        """Anthropic's Messages API (the ``anthropic`` SDK, Claude Code)."""
        return await self._run(await self._start(request, "messages", "messages"))

    async def completions(self, request: Request) -> Response:
        """OpenAI's legacy text completions."""
        return await self._run(await self._start(request, "completions", "completions"))

    async def count_tokens(self, request: Request) -> Response:
        """Anthropic's ``/v1/messages/count_tokens``, answered here, offline: the prompt's
        tokens as the budgets count them (exact for OpenAI models, an over-estimate for
        Claude: see :mod:`llmbudget.tokens`). Nothing is reserved or charged."""
        call = await self._start(request, "messages", "count_tokens")
        billable = call.billable
        if billable.prompt_bound:
            # This endpoint answers the count itself: never a bound (the first exact count
            # may load a vocabulary, so not on the event loop).
            tokenizer = self.router.first_upstream_model(call.model)
            billable = await asyncio.to_thread(
                self._describe, call.api, call.payload, tokenizer, exact=True
            )
        return JSONResponse({"input_tokens": billable.prompt_tokens})

    # -- request pipeline --------------------------------------------------------------------

    async def _start(self, request: Request, api: Api, endpoint: str) -> Call:
        started = time.perf_counter()
        key = await self.keys.authenticate(bearer_secret(request))
        body = await request.body()
        if len(body) > self.config.max_body_bytes:
            raise GatewayError(413, "request_too_large", "request body is too large")
        try:
            payload = loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise GatewayError(400, "invalid_json", "the request body is not valid JSON") from None
        if not isinstance(payload, dict):
            raise GatewayError(400, "invalid_request", "the request body must be a JSON object")
        model = payload.get("model")
        if not isinstance(model, str) or not model:
            raise GatewayError(400, "invalid_request", "model is required", param="model")
        if not self.router.has_model(model):
            raise GatewayError(
                404, "model_not_found", f"the model {model!r} does not exist", param="model"
            )
        await self.entities.prefetch(key)
        if not self.planner.allows(key, model):
            raise GatewayError(
                403, "model_not_allowed", f"this key may not use the model {model!r}", param="model"
            )
        tokenizer = self.router.first_upstream_model(model)
        billable = self._describe(api, payload, tokenizer)
        if billable.end_user is not None:
            await self.entities.prefetch_end_user(billable.end_user)
        call = Call(api, endpoint, key, model, payload, billable, started)
        call.by_tokenizer[tokenizer] = billable
        headers = request_headers(request)
        for name in ("anthropic-version", "anthropic-beta"):
            value = headers.get(name)
            if value is not None:
                call.anthropic_headers[name] = value
        return call

    @staticmethod
    def _describe(
        api: Api, payload: Mapping[str, Any], tokenizer: str, *, exact: bool = False
    ) -> BillableCall:
        # Bounded, not counted, unless asked (or the vocabulary is loaded anyway): the
        # meter counts exactly the moment the prompt's size decides anything.
        try:
            return describe(api, payload, tokenizer, bound=not exact)
        except InvalidRequestError as exc:
            raise GatewayError(400, "invalid_request", str(exc), param=exc.param) from None
        except (InvalidInputError, TypeError, AttributeError, RecursionError) as exc:
            raise GatewayError(400, "invalid_request", f"cannot read the request: {exc}") from None

    def _billable(self, call: Call, dep: Deployment, *, exact: bool = False) -> BillableCall:
        """The call as ``dep`` bills it: its prompt counted with that model's tokenizer
        (bounded, unless ``exact``)."""
        tokenizer = dep.upstream_model
        found = call.by_tokenizer.get(tokenizer)
        if found is None or (exact and found.prompt_bound):
            found = self._describe(call.api, call.payload, tokenizer, exact=exact)
            call.by_tokenizer[tokenizer] = found
        if dep.native(call.api) == "messages" and not found.requires_cap:
            found = replace(found, cap_required=True)  # Anthropic refuses a call without one
        return found

    async def _run(self, call: Call) -> Response:
        key = call.key
        general = {b.scope for b in self.planner.general_budgets(key, call.end_user)}
        plan = self.router.plan(call.model, lambda m: self.planner.allows(key, m))
        outcome = await self._route(call, plan, general)
        if isinstance(outcome, Response):
            return outcome
        refusal, failure, served = outcome
        cheaper = [
            m for m in self.config.router.budget_fallbacks.get(call.model, ())
            if self.planner.allows(key, m)
        ]  # fmt: skip
        if refusal is not None and refusal.unit == "usd" and cheaper:
            # The budget cannot pay for the model asked for: degrade rather than stop.
            call.downgraded_from = call.model
            downgrade = [(m, self.router.plan(m)[0][1]) for m in cheaper]
            outcome = await self._route(call, downgrade, general)
            if isinstance(outcome, Response):
                return outcome
            refusal = outcome[0] or refusal
            call.downgraded_from = None
        if refusal is not None:
            self.metrics.refused(refusal)
            await self._log_refusal(call, call.model, refusal)
            raise self._budget_error(refusal)
        if failure is not None:
            return failure
        if not served:
            raise GatewayError(
                400,
                "unsupported_api",
                f"no deployment of {call.model!r} speaks the {call.endpoint} API "
                "(Anthropic deployments serve /v1/messages and /v1/chat/completions)",
                param="model",
            )
        wait = self.router.cooldown_remaining(call.model)
        headers = {"Retry-After": str(max(1, int(wait + 0.999)))} if wait > 0 else {}
        raise GatewayError(
            503,
            "no_deployment",
            f"no deployment of {call.model!r} is available (all cooling down or over rpm)",
            headers=headers,
        )

    async def _route(
        self, call: Call, plan: Sequence[tuple[str, Sequence[Deployment]]], general: set[str]
    ) -> Response | tuple[BudgetExceededError | None, Response | None, bool]:
        """Try ``plan``'s models and deployments in order: the response, or why none
        answered (a budget refusal, the last retryable failure, whether any could serve)."""
        refusal: BudgetExceededError | None = None
        failure: Response | None = None
        served = False
        for model, deployments in plan:
            tries = 0
            for dep in deployments:
                if tries > self.config.router.num_retries:
                    break
                if not dep.serves(call.api):
                    continue
                served = True
                budgets = self.planner.budgets(call.key, call.end_user, model, dep)
                try:
                    meter = await self._open(call, model, dep, budgets)
                except BudgetExceededError as exc:
                    if exc.scope in self.planner.deployment_scopes(dep):
                        refusal = refusal or exc
                        continue  # this provider account is spent: try another deployment
                    refusal = exc
                    if exc.scope not in general:
                        break  # a per-model cap: a fallback model may still fit
                    return refusal, failure, served  # no other model of this plan helps
                tries += 1
                try:
                    return await self._send(call, dep, meter)
                except _RetryError as retry:
                    failure = retry.response
        return refusal, failure, served

    async def _open(
        self, call: Call, model: str, dep: Deployment, budgets: Sequence[Budget]
    ) -> Meter:
        """Reserve one attempt on ``dep``: the meter, with its cap decided."""
        call.attempts += 1
        own = self.planner.deployment_scopes(dep)
        squeeze: Callable[[str], bool] = (
            (lambda scope: scope not in own)  # an exhausted deployment is skipped instead
            if self.config.cap_max_tokens
            else (lambda scope: False)
        )
        meter = Meter(
            self._billable(call, dep),
            dep.price,
            [ScopeGroup(self.ledger.plans, tuple(budgets))],
            recount=functools.partial(self._billable, call, dep, exact=True),
            label=call.model,
            configured_cap=dep.max_output_tokens,
            min_output_tokens=self.config.min_completion_tokens,
            squeeze=squeeze,
            ttl=self.config.hold_ttl,
            entry=functools.partial(self._entry, call, model, dep, call.attempts),
        )
        try:
            await run_async(meter.plan_open())
        except BudgetExceededError:
            raise
        except StoreError:
            raise
        except InvalidInputError as exc:
            raise GatewayError(
                400,
                "invalid_request",
                f"this request's worst-case cost cannot be reserved: {exc}",
                param="max_tokens" if call.billable.requested_cap is not None else None,
            ) from None
        except (PricingError, LLMBudgetError) as exc:
            raise GatewayError(500, "pricing_error", f"cannot price {model}: {exc}") from None
        self.metrics.opened(meter)
        return meter

    def _budget_error(self, exc: BudgetExceededError) -> GatewayError:
        return budget_error(
            exc, self.clock(), label=describe_scope(exc.scope), per=scope_window(exc.scope)
        )

    # -- upstream ------------------------------------------------------------------------------

    def _upstream_body(self, call: Call, dep: Deployment, meter: Meter) -> bytes:
        """The request sent to ``dep``: the client's, with the reserved cap, translated to
        the upstream's API when it speaks another."""
        body = {**call.payload, "model": dep.upstream_model}
        target = dep.native(call.api)
        if target == call.api:
            cap_field = dep.max_tokens_param if call.api == "chat" else None
            return dumps(
                forward(body, call.api, cap=meter.cap, cap_field=cap_field, stream=call.stream)
            )
        if target == "messages":  # a chat request to Anthropic
            chat = forward(body, "chat", cap=meter.cap, cap_field="max_tokens")
            params = {k: v for k, v in chat.items() if k not in ("messages", "model")}
            params.pop("stream_options", None)
            request = anthropic_request(chat["messages"], params)
            request["model"] = dep.upstream_model
            return dumps(request)
        # A Messages request to an OpenAI-compatible model.
        request = chat_request(forward(body, "messages", cap=meter.cap))
        request["model"] = dep.upstream_model
        if "max_tokens" in request and dep.max_tokens_param != "max_tokens":
            request[dep.max_tokens_param] = request.pop("max_tokens")
        return dumps(forward(request, "chat", cap=None, stream=call.stream))

    def _upstream_headers(self, call: Call, dep: Deployment) -> Mapping[str, str]:
        headers = self._headers[dep.id]
        if dep.api == "anthropic" and call.anthropic_headers:
            return {**headers, **call.anthropic_headers}
        return headers

    async def _send(self, call: Call, dep: Deployment, meter: Meter) -> Response:
        """Forward the attempt; its hold is released, charged, or handed to the response.

        The hold is released only when nothing can have been billed (the upstream answered
        an error, or the request never reached it). Once it may have been sent, a lost
        answer (timeout, broken body, the handler cancelled while waiting) charges the
        whole hold and logs it, before any other deployment is tried.
        """
        try:
            body = self._upstream_body(call, dep, meter)
        except InvalidInputError as exc:
            await self._release(meter)  # nothing was sent
            param = exc.param if isinstance(exc, InvalidRequestError) else None
            raise GatewayError(400, "invalid_request", str(exc), param=param) from None
        self.router.started(dep)
        streaming = False
        try:
            sent = time.perf_counter()
            try:
                upstream = await self.upstream.post(
                    dep.url(call.api), body, self._upstream_headers(call, dep), dep.timeout
                )
            except UpstreamError as exc:
                self.metrics.failed(dep.id, timed_out=isinstance(exc, UpstreamTimeoutError))
                raise await self._lost(dep, meter, exc) from None
            self.metrics.answered(dep.id, upstream.status_code, time.perf_counter() - sent)
            if upstream.status_code >= 400:
                return await self._upstream_error(call, dep, meter, upstream)
            self.router.succeeded(dep)
            if call.stream:
                streaming = True
                return self._relay(call, dep, meter, upstream)
            return await self._complete(call, dep, meter, upstream)
        except asyncio.CancelledError:
            # The handler was cancelled (client gone, shutdown) with the call in flight: the
            # upstream may still do and bill the work, so the whole hold is charged.
            if not meter.done:
                await self._detached(meter, meter.plan_close(None, status="cancelled"))
            raise
        finally:
            if not streaming:
                self.router.finished(dep)

    async def _lost(self, dep: Deployment, meter: Meter, exc: UpstreamError) -> _RetryError:
        """End the hold of a call whose upstream answer was lost; the error to retry with."""
        timed_out = isinstance(exc, UpstreamTimeoutError)
        self.router.failed(dep, None)
        if not exc.sent:
            not_sent(exc)
        status = "upstream_timeout" if timed_out else "upstream_failed"
        await self._detached(meter, meter.plan_fail(exc, status=status))
        if timed_out:
            error = GatewayError(504, "upstream_timeout", f"deployment {dep.id} timed out: {exc}")
        else:
            error = GatewayError(502, "upstream_unreachable", f"deployment {dep.id} failed: {exc}")
        return _RetryError(error.response())

    async def _upstream_error(
        self, call: Call, dep: Deployment, meter: Meter, upstream: UpstreamResponse
    ) -> Response:
        try:
            content = await upstream.aread()
        except UpstreamError:
            content = b""
        finally:
            await upstream.aclose()
        status = upstream.status_code
        headers = {"content-type": upstream.headers.get("content-type", "application/json")}
        if dep.native(call.api) != call.api:
            # The client speaks the other API: its SDK parses its own error shape.
            try:
                doc = loads(content) if content else None
            except ValueError:
                doc = None
            body = doc if isinstance(doc, dict) else None
            shaped = (
                anthropic_error(status, body)
                if call.api == "messages"
                else openai_error(status, body)
            )
            content, headers = dumps(shaped), {"content-type": "application/json"}
        response = Response(content, status_code=status, headers=headers)
        # An HTTP error answer is not billed: the hold is released either way.
        await self._release(meter)
        if status in self.config.router.retry_statuses:
            self.router.failed(dep, status, retry_after(upstream.headers))
            raise _RetryError(response)
        # The client's request was bad (400, 401 upstream, 404 ...): another deployment would
        # say the same, so pass the upstream's answer through.
        return response

    async def _complete(
        self, call: Call, dep: Deployment, meter: Meter, upstream: UpstreamResponse
    ) -> Response:
        try:
            content = await upstream.aread()
        except UpstreamError as exc:
            # The upstream accepted the call (2xx) and then broke: it may have billed it.
            exc.sent = True
            raise await self._lost(dep, meter, exc) from None
        finally:
            await upstream.aclose()
        watcher = BodyWatcher(sse=False)
        watcher.feed(content)
        watcher.close()
        tracker = watcher.tracker
        if tracker.usage is None:
            await run_async(meter.plan_exact())  # charged by counting: the prompt too
        charged = meter.assess(tracker.usage, text=tracker.text, finished=tracker.finished)
        if dep.native(call.api) != call.api:
            content = self._translated(call, dep, content)
        cost = charged.cost if charged is not None else Decimal(0)
        headers = {
            "x-llmbudget-cost": format_money(cost),
            "x-llmbudget-deployment": dep.id,
            "x-llmbudget-request-id": call.id,
        }
        if call.downgraded_from is not None:
            headers["x-llmbudget-downgraded-from"] = call.downgraded_from
        for name in _HOP_HEADERS:
            value = upstream.headers.get(name)
            if value is not None:
                headers[name] = value
        return SettlingResponse(
            content,
            status_code=upstream.status_code,
            headers=headers,
            settle=functools.partial(self._settle, meter, meter.plan_record()),
        )

    @staticmethod
    def _translated(call: Call, dep: Deployment, content: bytes) -> bytes:
        """A complete upstream answer in the client's API."""
        try:
            doc = loads(content)
        except ValueError:
            return content
        if not isinstance(doc, dict):
            return content
        if call.api == "messages":
            return dumps(message_from_chat(doc, call.model))
        return dumps(anthropic_to_openai(doc, call.model))

    def _relay(
        self, call: Call, dep: Deployment, meter: Meter, upstream: UpstreamResponse
    ) -> Response:
        billable = meter.call
        translate: EventConverter | None = None
        if dep.native(call.api) != call.api:
            translate = (
                EventConverter.to_anthropic(call.model)
                if call.api == "messages"
                else EventConverter.to_openai(call.model, billable.wants_usage)
            )
        watcher = BodyWatcher(
            sse=True,
            # A translated stream needs its usage chunk; the converter decides what to show.
            hide_usage_chunk=translate is None
            and needs_usage_request(call.api, True)
            and not billable.wants_usage,
        )

        async def finish(end: StreamEnd, watcher: BodyWatcher) -> None:
            self.router.finished(dep)
            if end.failed:
                self.router.failed(dep, None)
            watcher.close()  # reads what is left (a no-op after a normal end)
            tracker = watcher.tracker
            if end.disconnected:
                status = "client_disconnected"
            elif end.failed or not end.completed or tracker.error:
                status = "upstream_error"
            else:
                status = "ok"
            if tracker.usage is None:
                await run_async(meter.plan_exact())  # charged by counting: the prompt too
            meter.assess(tracker.usage, text=tracker.text, finished=tracker.finished, status=status)
            await self._settle(meter, meter.plan_record())

        headers = [
            (b"x-llmbudget-deployment", dep.id.encode("latin-1", "replace")),
            (b"x-llmbudget-request-id", call.id.encode("ascii")),
        ]
        if call.downgraded_from is not None:
            headers.append((b"x-llmbudget-downgraded-from", call.downgraded_from.encode()))
        return StreamRelay(
            upstream, watcher, headers, finish, convert=translate, anthropic=call.api == "messages"
        )

    # -- settling ------------------------------------------------------------------------------

    async def _release(self, meter: Meter) -> None:
        try:
            await run_async(meter.plan_release("upstream_error"))
        except StoreError:
            # The hold expires by itself after hold_ttl; nothing was spent.
            log.exception("could not release a hold of %s", meter.label)
        finally:
            self.metrics.ended(meter)

    async def _settle(self, meter: Meter, plan: Plan[Any]) -> None:
        """Record ``meter``'s charge (``plan``). A store that fails keeps it in the
        journal, replayed until it lands (:mod:`llmbudget.replay`): only a journal that
        cannot be written either raises here."""
        try:
            await run_async(plan)
        except StoreError:
            log.exception("could not record a gateway charge, nor keep it in the journal")
        finally:
            self.metrics.ended(meter)

    async def _detached(self, meter: Meter, plan: Plan[Any]) -> None:
        """Run ``plan`` in a task of its own and wait for it, so that cancelling the request's
        task cannot stop the settle (:meth:`aclose` waits for such tasks)."""
        task = asyncio.get_running_loop().create_task(self._settle(meter, plan))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        # If this wait is cancelled, the settle still runs to its end in its own task.
        await asyncio.shield(task)

    def _entry(
        self, call: Call, model: str, dep: Deployment, number: int, meter: Meter, status: str
    ) -> LogRecord:
        """The spend-log entry recorded with an attempt's charge."""
        owners = self.planner.owners(call.key)
        charged = meter.charged
        tokens = meter.tokens
        billable = meter.call
        if tokens is not None:
            prompt, completion = tokens.input_tokens, tokens.output_tokens
        else:  # charged the reservation: what it was for
            prompt, completion = billable.prompt_tokens, (meter.cap or 0) * billable.n
        entry: dict[str, Any] = {
            "id": call.id,
            "key": call.key.id,
            "user": owners.user,
            "team": owners.team,
            "org": owners.org,
            "end_user": call.end_user,
            "model": model,
            "requested_model": call.model,
            "deployment": dep.id,
            "upstream_model": dep.upstream_model,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "cost": format_money(charged.cost if charged else Decimal(0)),
            "reserved": format_money(meter.reserved),
            "latency_ms": round((time.perf_counter() - call.started) * 1000, 3),
            "status": status,
            "http_status": _HTTP_STATUS.get(status, 200),
            "stream": call.stream,
            "endpoint": call.endpoint,
            "usage_source": charged.source if charged else "reserved",
        }
        if call.downgraded_from is not None:
            entry["downgraded_from"] = call.downgraded_from
        if status not in _REQUEST_ENDINGS:
            # A failed attempt of a retried request: one entry per recorded attempt (the
            # log dedupes by id), each under the request's id plus the attempt's number.
            entry["id"] = f"{call.id}.{number}"
            entry["request_id"] = call.id
        return (SPEND_LOG_KIND, self.clock(), entry)

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
            "refused_unit": exc.unit,
        }
        try:
            await ops.AppendLog(self.ledger.store, SPEND_LOG_KIND, self.clock(), entry).arun()
        except StoreError:
            log.exception("could not log a refusal")
