"""The gateway as a FastAPI app, or as routes added to an existing app.

Standalone::

    from llmbudget.gateway import create_gateway_app
    app = create_gateway_app("gateway.yaml")          # uvicorn module:app

Inside another app (``llmbudget serve``)::

    gateway = install_gateway(app, "gateway.yaml", store=server_store)
    ...                                                # on shutdown:
    await gateway.aclose()

Endpoints (each also without the ``/v1`` prefix, as some clients call them):
``POST /v1/chat/completions``, ``/v1/responses``, ``/v1/completions``, ``/v1/embeddings``,
``/v1/messages`` and ``/v1/messages/count_tokens`` (Anthropic's, with its error shape),
``GET /v1/models``, and the admin endpoints of :mod:`llmbudget.gateway.admin`,
:mod:`llmbudget.gateway.entity_admin` and (LiteLLM's spellings)
:mod:`llmbudget.gateway.litellm_admin`.

>>> from llmbudget.stores.memory import MemoryStore
>>> app = create_gateway_app({"model_list": []}, store=MemoryStore())
>>> [r.path for r in app.routes if r.path.startswith("/v1/chat")]
['/v1/chat/completions']
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from llmbudget.clock import Clock, system_clock
from llmbudget.gateway.admin import guarded, install_admin_routes, require_admin
from llmbudget.gateway.config import GatewayConfig, load_gateway_config
from llmbudget.gateway.entity_admin import install_entity_routes
from llmbudget.gateway.errors import anthropic_errors
from llmbudget.gateway.litellm_admin import install_litellm_routes
from llmbudget.gateway.metrics import GatewayMetrics
from llmbudget.gateway.proxy import Gateway
from llmbudget.replay import Replayer
from llmbudget.stores import open_store
from llmbudget.stores.base import AsyncStore, Store

__all__ = ["create_gateway_app", "install_gateway"]

ConfigSource = GatewayConfig | Mapping[str, Any] | str | Path


def install_gateway(
    app: FastAPI,
    config: ConfigSource,
    *,
    store: Store | AsyncStore | None = None,
    clock: Clock = system_clock,
    transport: httpx.AsyncBaseTransport | None = None,
    prefix: str = "",
    master_key: str | None = None,
    metrics: GatewayMetrics | None = None,
) -> Gateway:
    """Add the gateway's proxy and admin routes to ``app``; returns the :class:`Gateway`.

    ``store`` defaults to the config's ``general_settings.store`` (else ``$LLMBUDGET_STORE``
    or ``sqlite:///llmbudget.db``); a store passed in is not closed by the gateway.
    ``transport`` replaces the upstream HTTP transport (tests). ``master_key`` overrides the
    config's for the admin endpoints (e.g. the host server's own admin key). ``metrics``
    puts the gateway's metrics in a host's registry (default: a registry of its own). The caller
    closes the gateway (``await gateway.aclose()``) on shutdown.

    >>> from llmbudget.stores.memory import MemoryStore
    >>> gw = install_gateway(FastAPI(), {"model_list": []}, store=MemoryStore())
    >>> type(gw).__name__
    'Gateway'
    """
    cfg = load_gateway_config(config)
    owns = store is None
    opened: Store | AsyncStore = open_store(cfg.store) if store is None else store
    gateway = Gateway(
        cfg,
        opened,
        clock=clock,
        transport=transport,
        owns_store=owns,
        master_key=master_key,
        metrics=metrics,
    )
    p = prefix.rstrip("/")
    for path, handler, method in (
        ("/chat/completions", gateway.chat_completions, "POST"),
        ("/embeddings", gateway.embeddings, "POST"),
        ("/responses", gateway.responses, "POST"),
        ("/completions", gateway.completions, "POST"),
        ("/messages", gateway.messages, "POST"),
        ("/messages/count_tokens", gateway.count_tokens, "POST"),
        ("/models", gateway.models, "GET"),
    ):
        endpoint = guarded(handler)
        if path.startswith("/messages"):
            endpoint = anthropic_errors(endpoint)
        # Plain Starlette routes: the hot path skips FastAPI's parameter solving.
        app.add_route(f"{p}/v1{path}", endpoint, methods=[method], include_in_schema=False)
        app.add_route(f"{p}{path}", endpoint, methods=[method], include_in_schema=False)
    install_admin_routes(app, gateway, p)
    install_entity_routes(app, gateway, p)
    install_litellm_routes(app, gateway, p)
    return gateway


def create_gateway_app(
    config: ConfigSource,
    *,
    store: Store | AsyncStore | None = None,
    clock: Clock = system_clock,
    transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """A FastAPI app that is only the gateway; ``app.state.gateway`` is its :class:`Gateway`.

    >>> from llmbudget.stores.memory import MemoryStore
    >>> app = create_gateway_app({"model_list": []}, store=MemoryStore())
    >>> app.state.gateway.config.models()
    []
    """
    holder: dict[str, Gateway] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        gateway = holder["gateway"]
        # Settles kept by an earlier run (or another worker) are replayed from the start.
        replayer = Replayer(gateway.ledger.store, gateway.ledger.plans.journal)
        await replayer.start()
        await gateway.warm_up()
        yield
        await replayer.aclose()  # before the store closes; what is left waits for the next start
        await gateway.aclose()

    app = FastAPI(title="llmbudget gateway", lifespan=lifespan)
    gateway = install_gateway(app, config, store=store, clock=clock, transport=transport)
    holder["gateway"] = gateway
    app.state.gateway = gateway

    async def metrics(request: Request) -> Response:
        # Inside ``llmbudget serve`` the server's /metrics carries these (and its own).
        require_admin(gateway, request)
        return Response(generate_latest(gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_route("/metrics", guarded(metrics), methods=["GET"], include_in_schema=False)
    return app
