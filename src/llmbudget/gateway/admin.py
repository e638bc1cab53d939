"""Admin endpoints: virtual keys and the spend log, behind the master key.

=========================  ==================================================================
``POST   /v1/keys``        create; the only response that ever contains the secret (``key``)
``GET    /v1/keys``        list (``?user=``, ``?team=``, ``?include_revoked=false``)
``GET    /v1/keys/{id}``   one key, with the current spend of its budgets
``PATCH  /v1/keys/{id}``   change models, budget/period, model_budgets, expiry, name, team, org, rate limits
``DELETE /v1/keys/{id}``   revoke (the record stays so logs and budgets still name it)
``GET    /v1/spend/logs``  spend log (``since``/``until`` ISO 8601 or epoch, ``limit``,
                           ``key``, ``user``, ``team``, ``model``)
=========================  ==================================================================

Every call needs ``Authorization: Bearer <master key>`` (``general_settings.master_key``
or ``$LLMBUDGET_ADMIN_KEY``), compared with :func:`hmac.compare_digest`. With no master key
configured the admin API is closed (401), never open.
"""

from __future__ import annotations

import hmac
import math
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from llmbudget.budgets import scope_key
from llmbudget.errors import InvalidInputError, LLMBudgetError, StoreError, StoreUnavailableError
from llmbudget.gateway.errors import GatewayError, error_response
from llmbudget.gateway.keys import VirtualKey
from llmbudget.gateway.proxy import Gateway, bearer_secret
from llmbudget.gateway.relay import loads
from llmbudget.gateway.spendlog import query_spend_logs

__all__ = [
    "guarded",
    "install_admin_routes",
    "key_view",
    "parse_time",
    "query_limit",
    "read_json",
    "require_admin",
]

Endpoint = Callable[[Request], Awaitable[Response]]


def guarded(fn: Endpoint) -> Endpoint:
    """Turn every refusal into an OpenAI-style JSON error, whatever the host app handles."""

    async def endpoint(request: Request) -> Response:
        try:
            return await fn(request)
        except GatewayError as exc:
            return exc.response()
        except InvalidInputError as exc:
            return error_response(400, "invalid_request", str(exc))
        except StoreUnavailableError as exc:
            return error_response(
                503, "store_unavailable", f"the budget store is unavailable: {exc}"
            )
        except StoreError as exc:
            return error_response(500, "store_error", f"the budget store failed: {exc}")
        except LLMBudgetError as exc:
            return error_response(400, "invalid_request", str(exc))

    endpoint.__name__ = fn.__name__
    endpoint.__doc__ = fn.__doc__
    return endpoint


def query_limit(request: Request, maximum: int | None = None) -> int:
    """The ``?limit=`` of a listing (100 when absent): a whole number from 1 to ``maximum``."""
    try:
        limit = int(request.query_params.get("limit", "100"))
    except ValueError:
        raise GatewayError(
            400, "invalid_request", "limit must be an integer", param="limit"
        ) from None
    if limit < 1 or (maximum is not None and limit > maximum):
        bounds = "at least 1" if maximum is None else f"between 1 and {maximum}"
        raise GatewayError(400, "invalid_request", f"limit must be {bounds}", param="limit")
    return limit


def require_admin(gateway: Gateway, request: Request) -> None:
    """A 401 unless the request carries the master key."""
    expected = gateway.master_key
    if not expected:
        raise GatewayError(
            401,
            "admin_disabled",
            "the admin API is disabled: set general_settings.master_key or $LLMBUDGET_ADMIN_KEY",
        )
    presented = bearer_secret(request)
    if not presented:
        raise GatewayError(
            401,
            "missing_api_key",
            "admin endpoints need 'Authorization: Bearer <master key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8")):
        raise GatewayError(401, "invalid_api_key", "invalid master key")


async def read_json(request: Request) -> dict[str, Any]:
    """The request's JSON object body (``{}`` when empty); a 400 for anything else."""
    body = await request.body()
    if not body:
        return {}
    try:
        data = loads(body)
    except ValueError:
        raise GatewayError(400, "invalid_json", "the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise GatewayError(400, "invalid_request", "the request body must be a JSON object")
    return data


def parse_time(value: str | None, default: float, name: str) -> float:
    """A query parameter as epoch seconds: epoch seconds or ISO 8601 with an offset."""
    if value is None or value == "":
        return default
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise GatewayError(
            400, "invalid_request", f"{name} must be ISO 8601 or epoch seconds", param=name
        ) from None
    if parsed.tzinfo is None:
        raise GatewayError(400, "invalid_request", f"{name} needs a timezone offset", param=name)
    return parsed.timestamp()


async def key_view(gateway: Gateway, key: VirtualKey) -> dict[str, Any]:
    """A key's admin view with the current spend of its budgets, by scope."""
    view = key.public()
    spend: dict[str, Any] = {}
    budgets = [
        *gateway.planner.general_budgets(key, None)[:1],  # the key's own scope comes first
        *key.limits.budgets("gw-key", key.id),  # then its rate limits, in their units
        *(
            spec.budget(scope_key("gw-key-model", key.id, m), key.created_at)
            for m, spec in key.model_budgets.items()
        ),
    ]
    for budget in budgets:
        status = await gateway.ledger.status(budget)
        spend[budget.scope] = status.to_dict()
    view["spend"] = spend
    return view


def install_admin_routes(app: FastAPI, gateway: Gateway, prefix: str = "") -> None:
    """Add the admin endpoints to ``app`` (under ``prefix``)."""

    @guarded
    async def create_key(request: Request) -> Response:
        require_admin(gateway, request)
        key, secret = await gateway.keys.create(await read_json(request))
        view = await key_view(gateway, key)
        view["key"] = secret  # shown once: only its hash is stored
        return JSONResponse(view, status_code=201)

    @guarded
    async def list_keys(request: Request) -> Response:
        require_admin(gateway, request)
        q = request.query_params
        keys = await gateway.keys.list(
            user=q.get("user"),
            team=q.get("team"),
            include_revoked=q.get("include_revoked", "true").lower() not in ("0", "false", "no"),
        )
        return JSONResponse({"object": "list", "data": [k.public() for k in keys]})

    async def _found(request: Request) -> VirtualKey:
        id_ = request.path_params["key_id"]
        key = await gateway.keys.get(id_)
        if key is None:
            raise GatewayError(404, "key_not_found", f"no key with id {id_!r}")
        return key

    @guarded
    async def get_key(request: Request) -> Response:
        require_admin(gateway, request)
        return JSONResponse(await key_view(gateway, await _found(request)))

    @guarded
    async def update_key(request: Request) -> Response:
        require_admin(gateway, request)
        key = await gateway.keys.update(request.path_params["key_id"], await read_json(request))
        return JSONResponse(await key_view(gateway, key))

    @guarded
    async def revoke_key(request: Request) -> Response:
        require_admin(gateway, request)
        key = await gateway.keys.revoke(request.path_params["key_id"])
        return JSONResponse(key.public())

    @guarded
    async def spend_logs(request: Request) -> Response:
        require_admin(gateway, request)
        q = request.query_params
        limit = query_limit(request)
        rows = await query_spend_logs(
            gateway.ledger.store,
            since=parse_time(q.get("since"), 0.0, "since"),
            until=parse_time(q.get("until"), math.inf, "until"),
            limit=limit,
            key=q.get("key"),
            user=q.get("user"),
            model=q.get("model"),
            team=q.get("team"),
        )
        return JSONResponse({"object": "list", "data": rows})

    p = prefix.rstrip("/")
    app.add_api_route(f"{p}/v1/keys", create_key, methods=["POST"], tags=["gateway admin"])
    app.add_api_route(f"{p}/v1/keys", list_keys, methods=["GET"], tags=["gateway admin"])
    app.add_api_route(f"{p}/v1/keys/{{key_id}}", get_key, methods=["GET"], tags=["gateway admin"])
    app.add_api_route(
        f"{p}/v1/keys/{{key_id}}", update_key, methods=["PATCH"], tags=["gateway admin"]
    )
    app.add_api_route(
        f"{p}/v1/keys/{{key_id}}", revoke_key, methods=["DELETE"], tags=["gateway admin"]
    )
    app.add_api_route(f"{p}/v1/spend/logs", spend_logs, methods=["GET"], tags=["gateway admin"])
