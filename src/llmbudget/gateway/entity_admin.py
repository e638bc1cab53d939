"""Admin endpoints for users, teams, orgs and end users (behind the master key, as ``/v1/keys``).

For each of ``users``, ``teams``, ``orgs`` and ``end_users``:

===============================  ==============================================================
``POST   /v1/<kind>s``           create (``id`` names it; the other fields as in the config file)
``GET    /v1/<kind>s``           list, with current spend (``?limit=`` 1-1000, default 100;
                                 ``?after=<id>`` for the next page)
``GET    /v1/<kind>s/{id}``      one, with the current spend of each of its budgets
``PATCH  /v1/<kind>s/{id}``      change the fields sent (``null`` removes one); others stay
``DELETE /v1/<kind>s/{id}``      remove (409 while a live key, user or team still names it)
===============================  ==============================================================

Bodies are validated strictly (:mod:`.entities`): an unknown field or a parent that does
not exist is a 400 with an OpenAI-style error body, and nothing is stored. Entities from
the config file are listed and shown but read-only (409). A team's view lists its
``members`` (the users naming it).
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from llmbudget.gateway.admin import guarded, query_limit, read_json, require_admin
from llmbudget.gateway.entities import ENTITY_KINDS, EntityRecord
from llmbudget.gateway.errors import GatewayError
from llmbudget.gateway.proxy import Gateway

__all__ = ["entity_view", "install_entity_routes"]

_MAX_PAGE = 1000


async def entity_view(gateway: Gateway, record: EntityRecord) -> dict[str, Any]:
    """An entity's admin view with the current spend of its budgets, by scope (a budget's
    spend is tracked while it has an amount; an uncapped entity shows none)."""
    view = record.public()
    if record.kind == "team":
        view["members"] = await gateway.entities.members(record.name)
    spend: dict[str, Any] = {}
    for budget in gateway.planner.entity_budgets(record.kind, record.entity):
        spend[budget.scope] = (await gateway.ledger.status(budget)).to_dict()
    view["spend"] = spend
    return view


def _page(request: Request) -> tuple[int, str | None]:
    return query_limit(request, _MAX_PAGE), request.query_params.get("after") or None


def install_entity_routes(app: FastAPI, gateway: Gateway, prefix: str = "") -> None:
    """Add ``/v1/users``, ``/v1/teams``, ``/v1/orgs`` and ``/v1/end_users`` to ``app``."""
    p = prefix.rstrip("/")
    directory = gateway.entities

    def routes(kind: str) -> None:
        @guarded
        async def create(request: Request) -> Response:
            require_admin(gateway, request)
            record = await directory.create(kind, await read_json(request))
            return JSONResponse(await entity_view(gateway, record), status_code=201)

        @guarded
        async def list_(request: Request) -> Response:
            require_admin(gateway, request)
            limit, after = _page(request)
            records = await directory.records(kind)
            if after is not None:
                names = [r.name for r in records]
                start = names.index(after) + 1 if after in names else len(records)
                records = records[start:]
            page = records[:limit]
            data = [await entity_view(gateway, r) for r in page]
            return JSONResponse(
                {
                    "object": "list",
                    "data": data,
                    "has_more": len(records) > limit,
                    "last_id": page[-1].name if page else None,
                }
            )

        @guarded
        async def get(request: Request) -> Response:
            require_admin(gateway, request)
            name = request.path_params["entity_id"]
            record = await directory.get(kind, name)
            if record is None:
                raise GatewayError(
                    404, f"{kind}_not_found", f"no {kind.replace('_', ' ')} named {name!r}"
                )
            return JSONResponse(await entity_view(gateway, record))

        @guarded
        async def update(request: Request) -> Response:
            require_admin(gateway, request)
            name = request.path_params["entity_id"]
            record = await directory.update(kind, name, await read_json(request))
            return JSONResponse(await entity_view(gateway, record))

        @guarded
        async def delete(request: Request) -> Response:
            require_admin(gateway, request)
            record = await directory.delete(kind, request.path_params["entity_id"])
            return JSONResponse({**record.public(), "deleted": True})

        base = f"{p}/v1/{kind}s"
        tags: list[str | Enum] = ["gateway admin"]
        app.add_api_route(base, create, methods=["POST"], tags=tags, name=f"create_{kind}")
        app.add_api_route(base, list_, methods=["GET"], tags=tags, name=f"list_{kind}s")
        one = f"{base}/{{entity_id}}"
        app.add_api_route(one, get, methods=["GET"], tags=tags, name=f"get_{kind}")
        app.add_api_route(one, update, methods=["PATCH"], tags=tags, name=f"update_{kind}")
        app.add_api_route(one, delete, methods=["DELETE"], tags=tags, name=f"delete_{kind}")

    for kind in ENTITY_KINDS:
        routes(kind)
