"""LiteLLM proxy's management API, its spelling: request bodies and response shapes.

The request bodies are strict models of the fields this gateway supports under LiteLLM's
names (anything else is refused, naming it); :func:`to_native` renames the fields sent to
the native admin API's; :func:`key_out`, :func:`entity_out` and :func:`log_out` turn
native views and spend-log rows into LiteLLM's shapes, money as :class:`~decimal.Decimal`
(rendered as exact JSON numbers by :mod:`.exact_json`). Pure: no I/O.

>>> body = KeyFields.model_validate({"max_budget": 5, "team_id": "ml", "models": []})
>>> to_native(body)
{'max_budget': 5, 'models': None, 'team': 'ml'}
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import StrictBool, StrictStr

from llmbudget.config_models import StrictModel
from llmbudget.errors import InvalidInputError
from llmbudget.gateway.rate_limits import RATE_LIMIT_FIELDS

__all__ = [
    "CustomerNew",
    "KeyDelete",
    "KeyFields",
    "KeyUpdate",
    "TeamNew",
    "UserNew",
    "budget_fields",
    "entity_out",
    "key_out",
    "log_out",
    "money",
    "to_native",
]

# --------------------------------------------------------------------------- request bodies


class _Budgeted(StrictModel):
    """The fields LiteLLM shares between keys, users and teams (values checked natively)."""

    max_budget: Any = None
    budget_duration: Any = None
    models: Any = None
    metadata: Any = None
    rpm_limit: Any = None
    tpm_limit: Any = None
    tpd_limit: Any = None
    max_parallel_requests: Any = None


class KeyFields(_Budgeted):
    """``/key/generate``."""

    key_alias: Any = None
    user_id: Any = None
    team_id: Any = None
    organization_id: Any = None
    duration: Any = None
    model_max_budget: Any = None


class KeyUpdate(KeyFields):
    """``/key/update``: the key (secret or token) and what changes."""

    key: StrictStr


class KeyDelete(StrictModel):
    """``/key/delete``."""

    keys: list[StrictStr]


class UserNew(_Budgeted):
    """``/user/new``."""

    user_id: Any = None
    user_alias: Any = None
    user_email: Any = None
    teams: Any = None
    organization_id: Any = None
    model_max_budget: Any = None
    auto_create_key: StrictBool = True
    key_alias: Any = None
    duration: Any = None


class Member(StrictModel):
    """One of ``/team/new``'s ``members_with_roles``: an existing user."""

    user_id: StrictStr
    role: StrictStr | None = None


class TeamNew(_Budgeted):
    """``/team/new``."""

    team_id: Any = None
    team_alias: Any = None
    organization_id: Any = None
    model_max_budget: Any = None
    members_with_roles: list[Member] | None = None


class CustomerNew(StrictModel):
    """``/customer/new``: an end user."""

    user_id: StrictStr
    alias: Any = None
    max_budget: Any = None
    budget_duration: Any = None
    metadata: Any = None
    rpm_limit: Any = None
    tpm_limit: Any = None
    tpd_limit: Any = None
    max_parallel_requests: Any = None
    blocked: StrictBool = False


# --------------------------------------------------------------------------- translation

#: LiteLLM's name -> the native API's.
_RENAMES = {
    "key_alias": "name",
    "user_id": "user",
    "team_id": "team",
    "organization_id": "org",
    "model_max_budget": "model_budgets",
}


def to_native(model: StrictModel, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The fields sent, under the native API's names."""
    out: dict[str, Any] = {}
    for name in sorted(model.model_fields_set - set(skip)):
        value = getattr(model, name)
        if name == "models" and value in ([], ["all-proxy-models"]):
            value = None  # LiteLLM's two spellings of "every model"
        elif name == "model_max_budget":
            value = _model_budgets(value)
        out[_RENAMES.get(name, name)] = value
    return out


def _model_budgets(raw: object) -> object:
    """LiteLLM's ``{"gpt-4o": 5.0}`` or ``{"gpt-4o": {"budget_limit": 5, "time_period":
    "30d"}}`` as native model budgets."""
    if not isinstance(raw, Mapping):
        return raw  # the native validation names the problem
    out: dict[str, Any] = {}
    for model, spec in raw.items():
        if isinstance(spec, Mapping):
            unknown = sorted(set(spec) - {"budget_limit", "time_period"})
            if unknown:
                raise InvalidInputError(
                    f"model_max_budget.{model}: unknown field(s) {', '.join(unknown)}"
                )
            out[model] = {"budget": spec.get("budget_limit"), "period": spec.get("time_period")}
        else:
            out[model] = {"budget": spec}
    return out


def money(text: object) -> Decimal | None:
    return None if text is None else Decimal(str(text))


def budget_fields(view: Mapping[str, Any]) -> dict[str, Any]:
    budget = view.get("budget")
    # The own budget's scope comes first; a per-model one is never the whole spend, and a
    # rate limit counts requests or tokens, not dollars.
    scope, spend = next(
        ((s, v) for s, v in view.get("spend", {}).items() if v.get("unit", "usd") == "usd"),
        ("", None),
    )
    if scope.partition(":")[0].endswith("-model"):
        spend = None
    return {
        "max_budget": money(budget["budget"]) if budget else None,
        "budget_duration": (budget["period"] or None) if budget else None,
        "budget_reset_at": spend["resets_at"] if spend else None,
        # None, not 0: an uncapped user's or team's spend is not tracked (its keys' is).
        "spend": money(spend["spent"]) if spend else None,
    }


def key_out(view: Mapping[str, Any]) -> dict[str, Any]:
    """A native key view in LiteLLM's shape."""
    return {
        "token": view["id"],
        "token_id": view["id"],
        "key_alias": view["name"],
        "key_name": view["name"],
        "user_id": view["user"],
        "team_id": view["team"],
        "organization_id": view["org"],
        "models": view["models"] or [],
        **budget_fields(view),
        "model_max_budget": {
            m: {"budget_limit": money(s["budget"]), "time_period": s["period"] or None}
            for m, s in view["model_budgets"].items()
        },
        "expires": view["expires_at"],
        "blocked": view["revoked"],
        "metadata": view["metadata"],
        **{name: view[name] for name in RATE_LIMIT_FIELDS},
        "created_at": view["created_at"],
        "updated_at": view["updated_at"],
    }


def entity_out(view: Mapping[str, Any], id_name: str) -> dict[str, Any]:
    """A native entity view in LiteLLM's shape (``user_id``/``team_id``/...)."""
    out: dict[str, Any] = {
        id_name: view["id"],
        **budget_fields(view),
        "metadata": view["metadata"],
        **{name: view[name] for name in RATE_LIMIT_FIELDS},
        "created_at": view["created_at"],
        "updated_at": view["updated_at"],
    }
    if "models" in view:
        out["models"] = view["models"] or []
    if "org" in view:
        out["organization_id"] = view["org"]
    if "team" in view:
        out["teams"] = [view["team"]] if view["team"] else []
    return out


def log_out(row: Mapping[str, Any]) -> dict[str, Any]:
    """A spend-log row in LiteLLM's ``/spend/logs`` shape."""
    prompt = row.get("prompt_tokens") or 0
    completion = row.get("completion_tokens") or 0
    ended = datetime.fromisoformat(str(row["at"]))
    started = ended - timedelta(milliseconds=float(row.get("latency_ms") or 0))
    return {
        "request_id": row.get("id"),
        "api_key": row.get("key"),
        "model": row.get("upstream_model") or row.get("model"),
        "model_group": row.get("model"),
        "spend": money(row.get("cost")) or Decimal(0),
        "startTime": started.isoformat(),
        "endTime": ended.isoformat(),
        "user": row.get("user"),
        "end_user": row.get("end_user"),
        "team_id": row.get("team"),
        "organization_id": row.get("org"),
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "status": row.get("status"),
        "metadata": {
            name: row.get(name)
            for name in ("deployment", "endpoint", "stream", "http_status", "usage_source")
            if name in row
        },
    }
