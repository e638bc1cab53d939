"""The budget server: ``create_app(config)`` builds the FastAPI application.

>>> from llmbudget.server import ServerConfig, create_app
>>> app = create_app(ServerConfig(store="memory://", admin_key="s3cret"))
>>> sorted(p for p in app.openapi()["paths"] if p.startswith("/v1/store/"))[:3]
['/v1/store/append_log', '/v1/store/charge', '/v1/store/create_doc']

Run it with ``llmbudget serve`` (uvicorn), or any ASGI server::

    uvicorn --factory llmbudget.server.app:app_from_env

What it serves: the JSON API (:mod:`.api`), the store API (:mod:`.store_api`), the seed's
protocol (:mod:`.seed_protocol`), the dashboard at ``/ui`` (:mod:`.dashboard` and the
``dashboard_*`` modules),
Prometheus ``/metrics`` and ``/openapi.json``. The interactive docs pages are off: they
load scripts from a CDN, and nothing here may.

Background work (started by the ASGI lifespan): a sweep of expired holds every
``purge_interval`` seconds, and, with an alert channel configured, the alert threads and
a periodic alert sweep (the gateway's budgets included).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import llmbudget
from llmbudget.clock import Clock, system_clock
from llmbudget.ledger import Ledger
from llmbudget.replay import Replayer
from llmbudget.stores import open_store
from llmbudget.stores.base import Store

from .alert_scopes import gateway_budgets
from .alerts import AlertManager
from .api import health_router, require_admin, router, seed_router
from .auth import AdminAuth
from .config import ServerConfig
from .dashboard import dashboard_router
from .dashboard_budgets import budgets_router
from .dashboard_entities import entities_router
from .dashboard_keys import keys_router
from .dashboard_requests import requests_router
from .errors import error_body, install_error_handlers
from .metrics import Metrics
from .seed_protocol import SeedProtocol
from .state import ServerState
from .store_api import store_router

if TYPE_CHECKING:
    from llmbudget.gateway.proxy import Gateway

__all__ = ["app_from_env", "create_app"]

log = logging.getLogger("llmbudget.server")


def create_app(
    config: ServerConfig | None = None,
    *,
    store: Store | None = None,
    clock: Clock = system_clock,
) -> FastAPI:
    """Build the server. ``store`` overrides ``config.store`` (and is then not closed at
    shutdown: its owner closes it); ``clock`` is injectable so tests can move time.

    The admin key and store URL fall back to ``$LLMBUDGET_ADMIN_KEY`` and
    ``$LLMBUDGET_STORE`` when the config has none.
    """
    config = (config or ServerConfig()).with_env()
    owns_store = store is None
    backend = store if store is not None else open_store(config.store)
    # Expired holds are swept by the lifespan task, so the ledger's opportunistic purge on
    # the reserve path is pushed far apart: it would only add latency to requests.
    ledger = Ledger(
        backend,
        clock=clock,
        hold_ttl=config.hold_ttl,
        retention=config.retention,
        purge_every=max(config.purge_interval * 10, 3600.0),
    )
    metrics = Metrics(clock, pending=ledger.plans.journal.count)
    state = ServerState(
        config=config,
        store=backend,
        ledger=ledger,
        clock=clock,
        auth=AdminAuth(config.admin_key, backend, clock=clock, session_ttl=config.session_ttl),
        metrics=metrics,
        alerts=AlertManager(config.alerts, ledger, backend, clock),
        seed=SeedProtocol(ledger, backend, clock, config.default_timezone),
        owns_store=owns_store,
    )

    gateway: Gateway | None = None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if gateway is not None:
            await gateway.warm_up()
        # Settles kept by an earlier run (or another worker) are replayed from the start.
        replayer = Replayer(state.store, state.ledger.plans.journal)
        await replayer.start()
        state.alerts.start()
        purge = functools.partial(asyncio.to_thread, state.ledger.purge)
        tasks = [asyncio.create_task(_every(config.purge_interval, purge, "purge"))]
        if state.alerts.enabled:
            tasks.append(
                asyncio.create_task(
                    _every(config.alerts.sweep_interval, state.alerts.asweep, "alert sweep")
                )
            )
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.to_thread(state.alerts.stop)
            if gateway is not None:
                await gateway.aclose()
            await replayer.aclose()
            if state.owns_store:
                state.store.close()

    app = FastAPI(
        title="llmbudget server",
        version=llmbudget.__version__,
        summary="Budgets for LLM API calls that never overspend.",
        description=(
            "Atomic reserve/settle/release/charge per project and user, the seed's "
            "`/get_budget` + `/set_budget` protocol, and every Store operation under "
            "`/v1/store/`. Money is a decimal string in dollars (store endpoints: integer "
            "nano-dollars). Every endpoint but `/v1/health` needs `Authorization: Bearer "
            "<admin key>`."
        ),
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.llmbudget = state
    app.state.clock = clock
    install_error_handlers(app)
    app.include_router(health_router)
    app.include_router(router)
    app.include_router(store_router)
    app.include_router(seed_router)
    for dashboard_part in (
        dashboard_router,
        budgets_router,
        keys_router,
        requests_router,
        entities_router,
    ):
        app.include_router(dashboard_part)
    if config.gateway:
        from llmbudget.gateway.app import install_gateway
        from llmbudget.gateway.metrics import GatewayMetrics

        # One store, one admin key and one /metrics for both: the gateway's spend and
        # budgets are the server's, and its admin endpoints answer to the server's key.
        gateway = install_gateway(
            app,
            config.gateway,
            store=backend,
            clock=clock,
            master_key=config.admin_key,
            metrics=GatewayMetrics(metrics.registry),
        )
        app.state.gateway = gateway
        # The gateway's budgets are not records in the store: the alert sweep asks it.
        state.alerts.add_source(functools.partial(gateway_budgets, gateway))

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(require_admin)])
    def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/metrics", include_in_schema=False, dependencies=[Depends(require_admin)])
    def prometheus() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/ui", status_code=307)

    # Outermost last: timing sees every response, 413s included.
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_body_bytes)
    app.add_middleware(TimingMiddleware, metrics=metrics)
    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory``: config from ``$LLMBUDGET_CONFIG`` (a file) and
    the environment."""
    import os

    from .config import load_config

    return create_app(load_config(os.environ.get("LLMBUDGET_CONFIG") or None))


async def _every(interval: float, fn: Callable[[], Awaitable[Any]], what: str) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await fn()
        except Exception:  # a failed sweep is retried next time; it must not end the loop
            log.exception("periodic %s failed", what)


class BodyLimitMiddleware:
    """413 for request bodies over ``max_bytes`` (declared or streamed), before any
    handler runs, so a refused request stores nothing. The body is read here (at most
    ``max_bytes`` of it) and replayed to the application."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > self.max_bytes):
                await self._reject(scope, receive, send)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                # The client went away before sending its body: nothing to serve.
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._reject(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = error_body(
            "invalid_request_error",
            f"request body is larger than {self.max_bytes} bytes",
            "request_too_large",
        )
        await JSONResponse(body, status_code=413)(scope, receive, send)


class TimingMiddleware:
    """Request latency by method, route template and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.observe(scope["method"], template, status, time.perf_counter() - start)
