"""LiteLLM proxy's management endpoints, as aliases of the native admin API.

So that scripts written against LiteLLM's proxy keep working, these take its field names and
answer in its shapes; each is a translation onto the same :class:`~.keys.KeyManager` and
:class:`~.entities.EntityDirectory` calls the native endpoints make (one logic, two
spellings), behind the same master key:

==========================  =====================================================================
``POST /key/generate``      a key (``max_budget``, ``budget_duration``, ``models``, ``user_id``,
                            ``team_id``, ``organization_id``, ``key_alias``, ``metadata``,
                            ``duration``, ``model_max_budget`` and the rate limits)
``GET  /key/info?key=``     a key, by its secret or its id (``token``), with its ``spend``
``POST /key/update``        change a key (``key`` plus the fields of ``/key/generate``)
``POST /key/delete``        revoke ``keys: [...]`` (all or none)
``POST /user/new``          a user (``user_id``, ``teams: [one]``, ``organization_id``, budget,
                            models, limits), plus a key for it unless ``auto_create_key: false``
``GET  /user/info``         a user (``?user_id=``), its keys and team
``POST /team/new``          a team (``team_id``, ``team_alias``, ``organization_id``, budget,
                            models, limits, ``members_with_roles`` of existing users)
``GET  /team/info``         a team (``?team_id=``), its keys and members
``POST /customer/new``      an end user (``user_id``, ``alias``, ``max_budget``,
                            ``budget_duration``, limits)
``GET  /spend/logs``        the gateway's spend log (``api_key``, ``user_id``, ``start_date``,
                            ``end_date``: dates are whole UTC days, ``end_date`` included)
``GET  /global/spend``      ``spend`` and ``max_budget``: the global budget's current window, or
                            (with none) the spend log's total
==========================  =====================================================================

Unknown fields are refused (400, naming them) rather than ignored: a LiteLLM feature this
gateway does not have (``soft_budget``, ``guardrails``...) must not look applied. The
bodies and shapes are :mod:`.litellm_shapes`; this module is the routes. Money is
written as JSON numbers, as LiteLLM's are, but from the exact decimal (never via a float).
``models: []`` (or ``["all-proxy-models"]``) means every model, as in LiteLLM. A key
generated without ``user_id`` belongs to the user ``default_user_id`` (LiteLLM's name for
the admin's own user).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from llmbudget.config_models import parse
from llmbudget.errors import InvalidInputError
from llmbudget.gateway.admin import guarded, key_view, parse_time, read_json, require_admin
from llmbudget.gateway.entities import EntityRecord
from llmbudget.gateway.entity_admin import entity_view
from llmbudget.gateway.errors import GatewayError
from llmbudget.gateway.exact_json import ExactJSONResponse
from llmbudget.gateway.keys import SECRET_PREFIX, VirtualKey
from llmbudget.gateway.litellm_shapes import (
    CustomerNew,
    KeyDelete,
    KeyFields,
    KeyUpdate,
    TeamNew,
    UserNew,
    budget_fields,
    entity_out,
    key_out,
    log_out,
    to_native,
)
from llmbudget.gateway.proxy import Gateway
from llmbudget.gateway.rate_limits import RATE_LIMIT_FIELDS
from llmbudget.gateway.spendlog import query_spend_logs, total_spend

__all__ = ["install_litellm_routes"]

#: The user a key generated without ``user_id`` belongs to (LiteLLM's admin user's name).
DEFAULT_USER = "default_user_id"


async def _find_key(gateway: Gateway, given: str) -> VirtualKey:
    """A key by its secret (what LiteLLM scripts hold) or its id (LiteLLM's ``token``)."""
    key = await gateway.keys.by_secret(given)
    if key is None and not given.startswith(SECRET_PREFIX):
        key = await gateway.keys.get(given)
    if key is None:
        raise GatewayError(404, "key_not_found", "no such key")
    return key


async def _key_response(gateway: Gateway, key: VirtualKey) -> dict[str, Any]:
    return key_out(await key_view(gateway, key))


def _record_missing(kind: str, name: str) -> GatewayError:
    return GatewayError(404, f"{kind}_not_found", f"no {kind} named {name!r}")


def _query(request: Request, name: str) -> str:
    value = request.query_params.get(name)
    if not value:
        raise GatewayError(400, "invalid_request", f"{name} is required", param=name)
    return value


def _day(value: str | None, name: str, *, end: bool) -> float | None:
    """``YYYY-MM-DD`` as the start of that UTC day (of the next one for an end date, so
    the day itself is included), or an ISO 8601 time / epoch seconds as given."""
    if not value:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        return parse_time(value, 0.0, name)
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return (start + timedelta(days=1 if end else 0)).timestamp()


# --------------------------------------------------------------------------- routes

Handler = Callable[[Request], Awaitable[Any]]


def install_litellm_routes(app: FastAPI, gateway: Gateway, prefix: str = "") -> None:
    """Add LiteLLM's management endpoints (see the module docstring) to ``app``."""
    keys = gateway.keys
    directory = gateway.entities

    async def generate_key(request: Request) -> Any:
        body = parse(KeyFields, await read_json(request))
        fields = to_native(body)
        fields.setdefault("user", DEFAULT_USER)
        if fields["user"] is None:
            fields["user"] = DEFAULT_USER
        key, secret = await keys.create(fields)
        return {**await _key_response(gateway, key), "key": secret}

    async def key_info(request: Request) -> Any:
        given = _query(request, "key")
        key = await _find_key(gateway, given)
        return {"key": given, "info": await _key_response(gateway, key)}

    async def update_key(request: Request) -> Any:
        body = parse(KeyUpdate, await read_json(request))
        key = await _find_key(gateway, body.key)
        updated = await keys.update(key.id, to_native(body, skip=("key",)))
        return {**await _key_response(gateway, updated), "key": body.key}

    async def delete_key(request: Request) -> Any:
        body = parse(KeyDelete, await read_json(request))
        found = [await _find_key(gateway, given) for given in body.keys]  # all exist, or none go
        for key in found:
            await keys.revoke(key.id)
        return {"deleted_keys": body.keys}

    async def new_user(request: Request) -> Any:
        body = parse(UserNew, await read_json(request))
        fields = to_native(body, skip=("teams", "user_alias", "user_email", "auto_create_key",
                                     "key_alias", "duration"))  # fmt: skip
        fields["id"] = fields.pop("user", None) or str(uuid.uuid4())
        teams = body.teams or []
        if not isinstance(teams, list):
            raise InvalidInputError("teams must be a list of team ids")
        if len(teams) > 1:
            raise InvalidInputError("teams: a user belongs to at most one team here")
        if teams:
            fields["team"] = teams[0]
        extra = {"user_alias": body.user_alias, "user_email": body.user_email}
        if any(v is not None for v in extra.values()):
            fields["metadata"] = {
                **(fields.get("metadata") or {}),
                **{k: v for k, v in extra.items() if v is not None},
            }
        record = await directory.create("user", fields)
        out = entity_out(await entity_view(gateway, record), "user_id")
        out.update({"key": None, "expires": None, "user_alias": body.user_alias,
                    "user_email": body.user_email})  # fmt: skip
        if body.auto_create_key:
            key_fields = {"user": record.name, "name": body.key_alias, "duration": body.duration}
            try:
                key, secret = await keys.create({k: v for k, v in key_fields.items() if v})
            except BaseException:
                await directory.delete("user", record.name)  # a refused request stores nothing
                raise
            out.update({"key": secret, "token": key.id, "expires": key.public()["expires_at"]})
        return out

    async def user_info(request: Request) -> Any:
        name = _query(request, "user_id")
        record = await directory.get("user", name)
        if record is None:
            raise _record_missing("user", name)
        user_keys = await keys.list(user=name)
        team = record.entity.team
        team_record = await directory.get("team", team) if team else None
        return {
            "user_id": name,
            "user_info": entity_out(await entity_view(gateway, record), "user_id"),
            "keys": [await _key_response(gateway, k) for k in user_keys],
            "teams": [] if team_record is None else [await _team_out(team_record)],
        }

    async def _team_out(record: EntityRecord) -> dict[str, Any]:
        view = await entity_view(gateway, record)
        out = entity_out(view, "team_id")
        out["team_alias"] = record.metadata.get("team_alias")
        out["members_with_roles"] = [{"user_id": u, "role": "user"} for u in view["members"]]
        return out

    async def new_team(request: Request) -> Any:
        body = parse(TeamNew, await read_json(request))
        fields = to_native(body, skip=("team_id", "team_alias", "members_with_roles"))
        fields["id"] = body.team_id or str(uuid.uuid4())
        if body.team_alias is not None:
            fields["metadata"] = {**(fields.get("metadata") or {}), "team_alias": body.team_alias}
        members = [m.user_id for m in body.members_with_roles or []]
        for user in members:  # checked before anything is written
            found = await directory.get("user", user)
            if found is None:
                raise InvalidInputError(
                    f"members_with_roles: no user {user!r}: create it first (/user/new)"
                )
            if found.source != "api":
                raise InvalidInputError(
                    f"members_with_roles: user {user!r} is defined in the config file; set "
                    "its team there"
                )
        record = await directory.create("team", fields)
        for user in members:
            await directory.update("user", user, {"team": record.name})
        return await _team_out(record)

    async def team_info(request: Request) -> Any:
        name = _query(request, "team_id")
        record = await directory.get("team", name)
        if record is None:
            raise _record_missing("team", name)
        return {
            "team_id": name,
            "team_info": await _team_out(record),
            "keys": [await _key_response(gateway, k) for k in await keys.list(team=name)],
        }

    async def new_customer(request: Request) -> Any:
        body = parse(CustomerNew, await read_json(request))
        if body.blocked:
            raise InvalidInputError("blocked: true is not supported; set max_budget: 0 instead")
        fields = to_native(body, skip=("user_id", "alias", "blocked"))
        fields["id"] = body.user_id
        if body.alias is not None:
            fields["metadata"] = {**(fields.get("metadata") or {}), "alias": body.alias}
        record = await directory.create("end_user", fields)
        view = await entity_view(gateway, record)
        budget = budget_fields(view)
        return {
            "user_id": record.name,
            "alias": body.alias,
            "blocked": False,
            "spend": budget["spend"],
            "litellm_budget_table": {
                "max_budget": budget["max_budget"],
                "budget_duration": budget["budget_duration"],
                **{name: view[name] for name in RATE_LIMIT_FIELDS},
            },
            "metadata": view["metadata"],
        }

    async def spend_logs(request: Request) -> Any:
        q = request.query_params
        key = q.get("api_key")
        key_filter = None if not key else (await _find_key(gateway, key)).id
        rows = await query_spend_logs(
            gateway.ledger.store,
            since=_day(q.get("start_date"), "start_date", end=False) or 0.0,
            until=_day(q.get("end_date"), "end_date", end=True) or float("inf"),
            limit=1000,
            key=key_filter,
            user=q.get("user_id") or None,
        )
        return [log_out(row) for row in rows]

    async def global_spend(request: Request) -> Any:
        spec = gateway.config.global_budget
        if spec is not None:
            status = await gateway.ledger.status(spec.budget("gw-global"))
            return {"spend": status.spent, "max_budget": spec.limit}
        return {"spend": await total_spend(gateway.ledger.store), "max_budget": None}

    p = prefix.rstrip("/")
    for path, handler, method in (
        ("/key/generate", generate_key, "POST"),
        ("/key/info", key_info, "GET"),
        ("/key/update", update_key, "POST"),
        ("/key/delete", delete_key, "POST"),
        ("/user/new", new_user, "POST"),
        ("/user/info", user_info, "GET"),
        ("/team/new", new_team, "POST"),
        ("/team/info", team_info, "GET"),
        ("/customer/new", new_customer, "POST"),
        ("/spend/logs", spend_logs, "GET"),
        ("/global/spend", global_spend, "GET"),
    ):
        app.add_api_route(
            f"{p}{path}",
            _admin(gateway, handler),
            methods=[method],
            tags=["LiteLLM-compatible admin"],
            name=f"litellm{path.replace('/', '_')}",
        )


def _admin(gateway: Gateway, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    @guarded
    async def endpoint(request: Request) -> Response:
        require_admin(gateway, request)
        return ExactJSONResponse(await handler(request))

    endpoint.__name__ = handler.__name__
    return endpoint
