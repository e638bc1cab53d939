"""Users, teams, orgs and end users: the config file's, plus those created by the admin API.

An entity has a budget (``budget``/``max_budget`` dollars per ``period``/``budget_duration``,
``timezone``, ``rolling``), per-model budgets (``model_budgets``), allowed ``models``, rate
limits (``rpm_limit``, ``tpm_limit``, ``tpd_limit``, ``max_parallel_requests``) and
``metadata``; a user may name its ``team`` and ``org``, a team its ``org``. A team's members
are the users naming it. End users (the OpenAI ``user`` field) have a budget, rate limits
and metadata only.

The fields are the config file's (:mod:`.config_schema`), validated by the same strict
models: an unknown field is refused with its name and a "did you mean", and a parent that
does not exist is refused. Config entities are read-only here (409, like config keys); the
API's are store documents (kinds ``gw-user``, ``gw-team``, ``gw-org``, ``gw-end-user``), so
every backend holds them and every worker and replica sees them.

The request path reads entities synchronously (the :class:`~.budgets.ScopePlanner` is
sync and cached): :meth:`EntityDirectory.prefetch` first brings the request's user, team,
org and end user into a cache, each entry kept for ``key_cache_ttl`` seconds (misses
too), exactly as resolved keys are. A write through this process updates its cache at
once; other workers and replicas see it within the TTL. :attr:`EntityDirectory.generation`
changes whenever a cached entity does, so cached budget plans built from the old one are
never reused.

>>> import asyncio
>>> from llmbudget.gateway.config import GatewayConfig
>>> from llmbudget.stores.memory import MemoryStore
>>> directory = EntityDirectory(MemoryStore(), GatewayConfig.from_mapping({}))
>>> team = asyncio.run(directory.create("team", {"id": "ml", "budget": 50, "period": "monthly"}))
>>> team.public()["budget"]["budget"], directory.team("ml") is not None
('50', True)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, StrictStr

from llmbudget import operations as ops
from llmbudget.clock import Clock, system_clock
from llmbudget.config_models import StrictModel, parse
from llmbudget.errors import InvalidInputError
from llmbudget.gateway.config import BudgetSpec, Entity, GatewayConfig
from llmbudget.gateway.config_schema import (
    BudgetFields,
    EntityModel,
    Limit,
    TeamModel,
    UserModel,
)
from llmbudget.gateway.errors import GatewayError
from llmbudget.gateway.rate_limits import RATE_LIMIT_FIELDS, RateLimits
from llmbudget.stores.base import AsyncStore, Store
from llmbudget.validation import check_json_object, check_name

if TYPE_CHECKING:
    from llmbudget.gateway.keys import KeyManager, VirtualKey

__all__ = ["ENTITY_KINDS", "EntityDirectory", "EntityRecord"]

#: The entity kinds, as the admin API and the directory name them.
ENTITY_KINDS: tuple[str, ...] = ("user", "team", "org", "end_user")
_DOC_KINDS = {"user": "gw-user", "team": "gw-team", "org": "gw-org", "end_user": "gw-end-user"}
_PARENTS: dict[str, tuple[str, ...]] = {"user": ("team", "org"), "team": ("org",)}
_CACHE_MAX = 100_000


def _metadata(value: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if value is None else check_json_object(value, "metadata")


Metadata = Annotated[dict[StrictStr, Any] | None, AfterValidator(_metadata)]


class UserFields(UserModel):
    metadata: Metadata = None


class TeamFields(TeamModel):
    metadata: Metadata = None


class OrgFields(EntityModel):
    metadata: Metadata = None


class EndUserFields(BudgetFields):
    rpm_limit: Limit = None
    tpm_limit: Limit = None
    tpd_limit: Limit = None
    max_parallel_requests: Limit = None
    metadata: Metadata = None


_SCHEMAS: dict[str, type[StrictModel]] = {
    "user": UserFields,
    "team": TeamFields,
    "org": OrgFields,
    "end_user": EndUserFields,
}


@dataclass(frozen=True, slots=True)
class EntityRecord:
    """One user, team, org or end user as the admin API shows it.

    ``entity`` is what budgets and limits are built from; ``fields`` is what was stored
    (the validated fields in their JSON form; empty for config entities, which are
    ``source="config"``).
    """

    kind: str
    entity: Entity
    fields: Mapping[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0
    source: str = "api"

    @property
    def name(self) -> str:
        return self.entity.name

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self.fields.get("metadata") or {})

    def public(self) -> dict[str, Any]:
        """JSON-friendly view (money as plain decimal strings, times as ISO 8601)."""
        e = self.entity
        view: dict[str, Any] = {
            "id": e.name,
            "object": self.kind,
            "budget": None if e.budget is None else e.budget.to_dict(),
        }
        if self.kind != "end_user":
            view["model_budgets"] = {m: s.to_dict() for m, s in sorted(e.model_budgets.items())}
            view["models"] = None if e.models is None else sorted(e.models)
        for parent in _PARENTS.get(self.kind, ()):
            view[parent] = getattr(e, parent)
        view.update({name: getattr(e.limits, name) for name in RATE_LIMIT_FIELDS})
        view["metadata"] = self.metadata
        view["created_at"] = _iso(self.created_at) if self.source == "api" else None
        view["updated_at"] = _iso(self.updated_at) if self.source == "api" else None
        view["source"] = self.source
        return view

    def to_doc(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "fields": dict(self.fields),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_doc(cls, kind: str, doc: Mapping[str, Any]) -> EntityRecord:
        name = str(doc["name"])
        fields = dict(doc.get("fields") or {})
        return cls(
            kind=kind,
            entity=_entity(kind, name, _validated(kind, name, fields)),
            fields=fields,
            created_at=float(doc.get("created_at") or 0.0),
            updated_at=float(doc.get("updated_at") or 0.0),
        )


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat()


def _validated(kind: str, name: str, fields: Mapping[str, Any]) -> StrictModel:
    return parse(_SCHEMAS[kind], dict(fields), f"{kind}s.{name}")


def _entity(kind: str, name: str, model: StrictModel) -> Entity:
    if kind == "end_user":
        assert isinstance(model, EndUserFields)
        return Entity(
            name=name,
            budget=BudgetSpec.of(model),
            limits=RateLimits.parse(model.model_dump(include=set(RATE_LIMIT_FIELDS)), name),
        )
    assert isinstance(model, EntityModel)
    return Entity.of(name, model, f"{kind}s.{name}")


class EntityDirectory:
    """Where the gateway finds users, teams, orgs and end users; the admin API edits it.

    Reads on the request path (:meth:`user`, :meth:`team`, :meth:`org`, :meth:`end_user`)
    are synchronous lookups in the config and this process's cache, which
    :meth:`prefetch` fills. Admin calls (:meth:`create`, :meth:`get`, :meth:`records`,
    :meth:`update`, :meth:`delete`) always read the store. ``keys`` (set by the gateway)
    lets :meth:`delete` refuse to remove a team, org or user a live key still names.
    """

    def __init__(
        self,
        store: Store | AsyncStore | None,
        config: GatewayConfig,
        *,
        clock: Clock = system_clock,
        ttl: float = 10.0,
    ) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self.ttl = ttl
        self.keys: KeyManager | None = None
        #: Changes whenever an entity seen by this process changes (plans cache on it).
        self.generation = 0
        self._static: dict[str, Mapping[str, Entity]] = {
            "user": config.users,
            "team": config.teams,
            "org": config.orgs,
            # An end user of the config may have a budget, rate limits, or both.
            "end_user": {
                name: Entity(
                    name=name,
                    budget=config.end_users.get(name),
                    limits=config.end_users_limits.get(name, RateLimits()),
                )
                for name in sorted({*config.end_users, *config.end_users_limits})
            },
        }
        self._cache: dict[tuple[str, str], tuple[float, EntityRecord | None]] = {}

    # -- request path (sync reads) ------------------------------------------------------------

    def lookup(self, kind: str, name: str) -> Entity | None:
        """The entity as this process last saw it (config first), without a store call."""
        static = self._static[kind].get(name)
        if static is not None:
            return static
        hit = self._cache.get((kind, name))
        return None if hit is None or hit[1] is None else hit[1].entity

    def user(self, name: str) -> Entity | None:
        return self.lookup("user", name)

    def team(self, name: str) -> Entity | None:
        return self.lookup("team", name)

    def org(self, name: str) -> Entity | None:
        return self.lookup("org", name)

    def end_user(self, name: str) -> Entity | None:
        return self.lookup("end_user", name)

    async def prefetch(self, key: VirtualKey) -> None:
        """Make the sync reads current (within the TTL) for ``key``'s user, team and org: at
        most one store read per entity per TTL, none while cached."""
        if self.store is None:
            return
        user = await self._fresh("user", key.user)
        team_name = key.team or (user.team if user else None)
        team = await self._fresh("team", team_name) if team_name else None
        org_name = key.org or (team.org if team else None) or (user.org if user else None)
        if org_name:
            await self._fresh("org", org_name)

    async def prefetch_end_user(self, name: str) -> None:
        """The same for an end user (the request's OpenAI ``user``)."""
        if self.store is not None:
            await self._fresh("end_user", name)

    async def _fresh(self, kind: str, name: str) -> Entity | None:
        static = self._static[kind].get(name)
        if static is not None:
            return static
        now = self.clock()
        hit = self._cache.get((kind, name))
        if hit is not None and hit[0] > now:
            return None if hit[1] is None else hit[1].entity
        record = await self._load(kind, name)
        self._remember(kind, name, record, now)
        return None if record is None else record.entity

    def _remember(self, kind: str, name: str, record: EntityRecord | None, now: float) -> None:
        old = self._cache.get((kind, name))
        # An entity first seen missing changes nothing the planner read (it read None):
        # a stream of new end-user names must not invalidate every cached plan.
        if (old[1] if old is not None else None) != record:
            self.generation += 1
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()  # bounded: a flood of end-user names cannot grow memory
            self.generation += 1
        self._cache[(kind, name)] = (now + self.ttl, record)

    async def _load(self, kind: str, name: str) -> EntityRecord | None:
        if self.store is None:
            return None
        doc = await ops.GetDoc(self.store, _DOC_KINDS[kind], name).arun()
        return None if doc is None else EntityRecord.from_doc(kind, doc)

    # -- admin -------------------------------------------------------------------------------

    async def get(self, kind: str, name: str) -> EntityRecord | None:
        """The entity named ``name``, from the config or the store (never the cache)."""
        _check_kind(kind)
        static = self._static[kind].get(name)
        if static is not None:
            return EntityRecord(kind, static, source="config")
        return await self._load(kind, name)

    async def records(self, kind: str) -> list[EntityRecord]:
        """Every entity of ``kind``, config ones first, then the store's, each sorted by name."""
        _check_kind(kind)
        out = [
            EntityRecord(kind, e, source="config") for _, e in sorted(self._static[kind].items())
        ]
        if self.store is not None:
            docs = await ops.ListDocs(self.store, _DOC_KINDS[kind]).arun()
            out += sorted(
                (EntityRecord.from_doc(kind, doc) for _, doc in docs), key=lambda r: r.name
            )
        return out

    async def create(self, kind: str, fields: Mapping[str, Any]) -> EntityRecord:
        """A new entity from admin-API fields (``id`` names it); 409 if the name is taken."""
        _check_kind(kind)
        body = _body(fields)
        name = body.pop("id", None)
        if not isinstance(name, str) or not name:
            raise InvalidInputError(f"id is required: the {kind}'s name")
        check_name(name, f"the {kind} id")
        if "/" in name:
            # It could never be addressed as /v1/<kind>s/{id}.
            raise InvalidInputError(f"the {kind} id must not contain '/'")
        if name in self._static[kind]:
            raise _in_config(kind, name)
        record = await self._build(kind, name, body, self.clock(), None)
        store = self._require_store()
        if not await ops.CreateDoc(store, _DOC_KINDS[kind], name, record.to_doc()).arun():
            raise GatewayError(409, f"{kind}_exists", f"a {_label(kind)} named {name!r} exists")
        self._remember(kind, name, record, self.clock())
        return record

    async def update(self, kind: str, name: str, fields: Mapping[str, Any]) -> EntityRecord:
        """Change the fields present in ``fields`` (``null`` removes one); the others stay."""
        current = await self._editable(kind, name)
        body = _body(fields)
        if "id" in body:
            raise InvalidInputError("id cannot be changed: create a new one")
        record = await self._build(kind, name, body, current.created_at, current.fields)
        await ops.PutDoc(self._require_store(), _DOC_KINDS[kind], name, record.to_doc()).arun()
        self._remember(kind, name, record, self.clock())
        return record

    async def delete(self, kind: str, name: str) -> EntityRecord:
        """Remove an API-created entity. A team, org or user still named by a live key (or a
        team or org by a user or team) is refused with 409: detaching them silently would
        move their spend out from under the parent's budget."""
        record = await self._editable(kind, name)
        users = await self.members(name, kind) if kind in ("team", "org") else []
        teams = await self.members(name, "org", "team") if kind == "org" else []
        keys = []
        if self.keys is not None and kind != "end_user":
            attr = "user" if kind == "user" else kind
            keys = [
                k.id
                for k in await self.keys.list(include_revoked=False)
                if getattr(k, attr) == name
            ]
        blockers = [
            f"{label} {', '.join(sorted(names)[:5])}"
            for label, names in (("users", users), ("teams", teams), ("keys", keys))
            if names
        ]
        if blockers:
            raise GatewayError(
                409,
                f"{kind}_in_use",
                f"{_label(kind)} {name!r} is still named by {'; '.join(blockers)}: move or "
                "revoke them first",
            )
        await ops.DeleteDoc(self._require_store(), _DOC_KINDS[kind], name).arun()
        self._remember(kind, name, None, self.clock())
        return record

    async def members(self, name: str, parent: str = "team", kind: str = "user") -> list[str]:
        """The names of the ``kind`` entities (users, by default) whose ``parent`` (team, by
        default) is ``name``, sorted: a team's members, an org's users or teams."""
        return sorted(r.name for r in await self.records(kind) if getattr(r.entity, parent) == name)

    async def require(self, kind: str, name: str, where: str) -> None:
        """A 400 unless an entity ``kind`` named ``name`` exists (config or store)."""
        if await self.get(kind, name) is None:
            raise InvalidInputError(
                f"{where} is {name!r}, which is not a known {_label(kind)}: create it first "
                f"(POST /v1/{kind}s)"
            )

    # -- internals ---------------------------------------------------------------------------

    async def _editable(self, kind: str, name: str) -> EntityRecord:
        _check_kind(kind)
        if name in self._static[kind]:
            raise _in_config(kind, name)
        record = await self._load(kind, name)
        if record is None:
            raise GatewayError(404, f"{kind}_not_found", f"no {_label(kind)} named {name!r}")
        return record

    async def _build(
        self,
        kind: str,
        name: str,
        body: dict[str, Any],
        created_at: float,
        current: Mapping[str, Any] | None,
    ) -> EntityRecord:
        schema = _SCHEMAS[kind]
        merged = dict(current or {})
        patch = _canonical(schema, body)
        merged.update(patch)
        if merged.get("budget") is None:
            # Removing the amount removes its period too (a period alone caps nothing, and
            # the schema refuses it), unless this very request sends one.
            for name_ in ("period", "timezone", "rolling"):
                if name_ not in patch:
                    merged.pop(name_, None)
        merged = {k: v for k, v in merged.items() if v is not None}
        model = parse(schema, merged, f"{kind}s.{name}")
        entity = _entity(kind, name, model)
        self._check_models(kind, name, entity)
        for parent in _PARENTS.get(kind, ()):
            ref = getattr(entity, parent)
            if ref is not None:
                await self.require(parent, ref, f"{kind}s.{name}.{parent}")
        stored = model.model_dump(mode="json", exclude_none=True)
        now = self.clock()
        return EntityRecord(kind, entity, stored, created_at or now, now)

    def _check_models(self, kind: str, name: str, entity: Entity) -> None:
        served = set(self.config.models())
        for model in entity.model_budgets:
            if model not in served:
                raise InvalidInputError(
                    f"{kind}s.{name}.model_budgets.{model}: no deployment serves a model named "
                    f"{model!r}"
                )

    def _require_store(self) -> Store | AsyncStore:
        if self.store is None:
            raise InvalidInputError("this directory has no store: entities are config-only")
        return self.store


def _check_kind(kind: str) -> None:
    if kind not in _DOC_KINDS:
        raise InvalidInputError(f"unknown entity kind {kind!r}: one of {', '.join(ENTITY_KINDS)}")


def _label(kind: str) -> str:
    return kind.replace("_", " ")


def _in_config(kind: str, name: str) -> GatewayError:
    return GatewayError(
        409,
        f"{kind}_in_config",
        f"{_label(kind)} {name!r} is defined in the config file; edit it there",
    )


def _body(fields: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(fields, Mapping):
        raise InvalidInputError("the request body must be a JSON object")
    return dict(fields)


def _canonical(schema: type[StrictModel], body: Mapping[str, Any]) -> dict[str, Any]:
    """``body`` with aliases (``max_budget``, ``budget_duration``) under their field's name,
    so a patch replaces what was stored under another spelling. Unknown names stay as they
    are, for the schema to refuse with a "did you mean"."""
    by_alias = {alias: name for name, names in schema.key_names().items() for alias in names}
    out: dict[str, Any] = {}
    for given, value in body.items():
        target = by_alias.get(given, given)
        if target in out:
            raise InvalidInputError(f"{target} is given twice (as {given!r} and another name)")
        out[target] = value
    return out
