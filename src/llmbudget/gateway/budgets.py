"""Which budgets a gateway request is held against: one atomic reserve over all of them.

For a request by key *K* (user *U*, team *T*, org *O*) with OpenAI ``user`` field *E*, for
public model *M*, sent to deployment *D*, the scopes are, in this order:

==================================  =========================================  ===========
scope                               budget from                                when
==================================  =========================================  ===========
``gw-key:<K>``                      the key's ``budget``                       always (tracks spend even uncapped)
``gw-key-<limit>:<K>``              the key's rate limits                      if set
``gw-user:<U>``                     ``users.<U>``                              if capped
``gw-user-<limit>:<U>``             ``users.<U>``'s rate limits                if set
``gw-end-user:<E>``                 ``end_users.<E>`` or ``budgets.end_user``  if capped
``gw-end-user-<limit>:<E>``         the same entries' rate limits              if set
``gw-team:<T>``                     ``teams.<T>``                              if capped
``gw-team-<limit>:<T>``             ``teams.<T>``'s rate limits                if set
``gw-org:<O>``                      ``orgs.<O>``                               if capped
``gw-org-<limit>:<O>``              ``orgs.<O>``'s rate limits                 if set
``gw-global``                       ``budgets.global``                         if capped
``gw-key-model:<K>:<M>``            the key's ``model_budgets.<M>``            if capped
``gw-user-model:<U>:<M>``           ``users.<U>.model_budgets.<M>``            if capped
``gw-team-model:<T>:<M>``           ``teams.<T>.model_budgets.<M>``            if capped
``gw-org-model:<O>:<M>``            ``orgs.<O>.model_budgets.<M>``             if capped
``gw-model:<M>``                    ``budgets.models.<M>``                     if capped
``gw-model-<limit>:<M>``            ``budgets.models.<M>``'s rate limits       if set
``gw-deployment:<D>``               the deployment's ``budget``                if capped
``gw-deployment-tpm:<D>``           the deployment's ``tpm``                   if set
==================================  =========================================  ===========

``<limit>`` is ``rpm`` (``rpm_limit``: requests per minute), ``tpm`` (``tpm_limit``: tokens
per minute), ``tpd`` (``tpd_limit``: tokens per day) or ``parallel``
(``max_parallel_requests``: calls in flight), each a budget in its unit on its own scope
(see :mod:`.rate_limits`); ``describe_scope`` reads ``gw-key-rpm:key_1`` as ``key key_1``.

Each has its own period. The order is deliberate: the store names the *first* scope that
would go over, so a refusal on a model scope means every general scope had room (a
fallback model may still be served), and a refusal on a deployment scope (its dollars or
its ``tpm``) means everything else had room (another deployment may still be used). A
rate limit refuses like a budget does, and routes the same way.

The team is the key's, else the user's; the org is the key's, else the team's, else the
user's. End users are named globally (as in LiteLLM): two keys sending the same ``user``
share that end user's budget and limits. A named ``end_users.<E>`` entry's budget
(and, separately, its limits) replaces ``budgets.end_user``'s for that end user.

>>> from llmbudget.gateway.config import GatewayConfig
>>> cfg = GatewayConfig.from_mapping({"budgets": {"global": {"budget": 100}}})
>>> planner = ScopePlanner(cfg)
>>> [b.scope for b in planner.general_budgets(VirtualKey("key_1", "alice", "h"), None)]
['gw-key:key_1', 'gw-global']
>>> from llmbudget.gateway.rate_limits import RateLimits
>>> limited = VirtualKey("key_2", "alice", "h", limits=RateLimits(rpm_limit=10))
>>> [(b.scope, b.unit) for b in planner.general_budgets(limited, None)][:2]
[('gw-key:key_2', 'usd'), ('gw-key-rpm:key_2', 'requests')]
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TypeVar

from llmbudget.budgets import Budget, scope_key
from llmbudget.gateway.config import BudgetSpec, Deployment, Entity, GatewayConfig
from llmbudget.gateway.entities import EntityDirectory
from llmbudget.gateway.keys import VirtualKey
from llmbudget.gateway.rate_limits import LIMIT_SUFFIXES, limit_kind

__all__ = ["Owners", "ScopePlanner", "describe_scope", "scope_window"]

K = TypeVar("K")

_CACHE_MAX = 50_000
_ENTITY_SCOPES = {"user": "gw-user", "team": "gw-team", "org": "gw-org", "end_user": "gw-end-user"}
_KIND_LABELS = {
    "gw-key": "key",
    "gw-user": "user",
    "gw-end-user": "end user",
    "gw-team": "team",
    "gw-org": "org",
    "gw-global": "the gateway",
    "gw-key-model": "model on key",
    "gw-user-model": "model for user",
    "gw-team-model": "model for team",
    "gw-org-model": "model for org",
    "gw-model": "model",
    "gw-deployment": "deployment",
}


@dataclass(frozen=True, slots=True)
class Owners:
    """Who a key's spend belongs to, resolved through the entities' team/org links."""

    user: str
    team: str | None
    org: str | None


class ScopePlanner:
    """Turns (key, end user, model, deployment) into the request's budgets; cached.

    Budget objects are immutable and cheap to share, so the answer for a combination is
    computed once and reused until the key changes (its ``updated_at`` is in the cache key)
    or an entity does (the directory's ``generation`` is too). Users, teams, orgs and end
    users come from ``entities`` (default: the config's only); the gateway prefetches a
    request's into it before planning.
    """

    def __init__(self, config: GatewayConfig, entities: EntityDirectory | None = None) -> None:
        self.config = config
        self.entities = entities if entities is not None else EntityDirectory(None, config)
        self._general: dict[tuple[str, float, int, str | None], tuple[Budget, ...]] = {}
        self._model: dict[tuple[str, float, int, str], tuple[Budget, ...]] = {}
        self._deployment: dict[str, tuple[Budget, ...]] = {}
        for dep in config.deployments:
            own = () if dep.budget is None else (dep.budget.budget(dep.scope),)
            self._deployment[dep.id] = (*own, *dep.limits.budgets("gw-deployment", dep.id))
        self._deployment_scopes = {
            dep_id: frozenset({scope_key("gw-deployment", dep_id), *(b.scope for b in budgets)})
            for dep_id, budgets in self._deployment.items()
        }

    def owners(self, key: VirtualKey) -> Owners:
        user = self.entities.user(key.user)
        team_name = key.team or (user.team if user else None)
        team = self.entities.team(team_name) if team_name else None
        org = key.org or (team.org if team else None) or (user.org if user else None)
        return Owners(key.user, team_name, org)

    def _entities(self, key: VirtualKey) -> tuple[Entity | None, Entity | None, Entity | None]:
        owners = self.owners(key)
        found = self.entities
        return (
            found.user(owners.user),
            found.team(owners.team) if owners.team else None,
            found.org(owners.org) if owners.org else None,
        )

    # -- models ----------------------------------------------------------------------------

    def allows(self, key: VirtualKey, model: str) -> bool:
        """Whether the key, its user, team and org all allow ``model`` (absent list: all)."""
        if key.models is not None and model not in key.models:
            return False
        return all(e is None or e.models is None or model in e.models for e in self._entities(key))

    def allowed_models(self, key: VirtualKey) -> list[str]:
        return [m for m in self.config.models() if self.allows(key, m)]

    # -- budgets ---------------------------------------------------------------------------

    def general_budgets(self, key: VirtualKey, end_user: str | None) -> tuple[Budget, ...]:
        """Key, user, end user, team, org, global: the scopes no model or deployment changes."""
        cache_key = (key.id, key.updated_at, self.entities.generation, end_user)
        found = self._general.get(cache_key)
        if found is not None:
            return found
        cfg = self.config
        user, team, org = self._entities(key)
        budgets: list[Budget] = [_budget(key.budget, scope_key("gw-key", key.id), key.created_at)]
        budgets += key.limits.budgets("gw-key", key.id)
        if user is not None:
            budgets += _entity_budgets(user, "gw-user")
        if end_user is not None:
            # An end user without a budget of its own has the default one.
            known = self.entities.end_user(end_user)
            spec = known.budget if known is not None and known.budget else cfg.end_user_budget
            if spec is not None:
                budgets.append(spec.budget(scope_key("gw-end-user", end_user)))
            limits = known.limits if known is not None and known.limits else cfg.end_user_limits
            budgets += limits.budgets("gw-end-user", end_user)
        if team is not None:
            budgets += _entity_budgets(team, "gw-team")
        if org is not None:
            budgets += _entity_budgets(org, "gw-org")
        if cfg.global_budget is not None:
            budgets.append(cfg.global_budget.budget("gw-global"))
        result = tuple(budgets)
        self._store(self._general, cache_key, result)
        return result

    def model_budgets(self, key: VirtualKey, model: str) -> tuple[Budget, ...]:
        """Per-model caps on the key, user, team, org and globally, for public model ``model``."""
        cache_key = (key.id, key.updated_at, self.entities.generation, model)
        found = self._model.get(cache_key)
        if found is not None:
            return found
        user, team, org = self._entities(key)
        budgets: list[Budget] = []
        spec = key.model_budgets.get(model)
        if spec is not None:
            budgets.append(spec.budget(scope_key("gw-key-model", key.id, model), key.created_at))
        for kind, entity in (
            ("gw-user-model", user),
            ("gw-team-model", team),
            ("gw-org-model", org),
        ):
            if entity is not None and model in entity.model_budgets:
                budgets.append(
                    entity.model_budgets[model].budget(scope_key(kind, entity.name, model))
                )
        if model in self.config.model_budgets:
            budgets.append(self.config.model_budgets[model].budget(scope_key("gw-model", model)))
        if model in self.config.model_limits:
            budgets += self.config.model_limits[model].budgets("gw-model", model)
        result = tuple(budgets)
        self._store(self._model, cache_key, result)
        return result

    def budgets(
        self, key: VirtualKey, end_user: str | None, model: str, deployment: Deployment
    ) -> list[Budget]:
        """Every budget of one attempt, in the order described in the module docstring."""
        return [
            *self.general_budgets(key, end_user),
            *self.model_budgets(key, model),
            *self._deployment.get(deployment.id, ()),
        ]

    def deployment_scopes(self, deployment: Deployment) -> frozenset[str]:
        """The scopes of ``deployment`` itself (its dollars and its ``tpm``): a refusal by
        one of them lets another deployment be tried."""
        return self._deployment_scopes.get(deployment.id, frozenset({deployment.scope}))

    def entity_budgets(self, kind: str, entity: Entity) -> list[Budget]:
        """The budgets of one ``user``, ``team``, ``org`` or ``end_user`` (kind), as requests
        are held against them: its own, its rate limits, then its per-model ones."""
        scope_kind = _ENTITY_SCOPES[kind]
        if kind == "end_user":
            # An end user without a budget or limits of its own has the defaults.
            entity = replace(
                entity,
                budget=entity.budget or self.config.end_user_budget,
                limits=entity.limits or self.config.end_user_limits,
            )
        out = list(_entity_budgets(entity, scope_kind))
        for model, model_spec in entity.model_budgets.items():
            out.append(model_spec.budget(scope_key(f"{scope_kind}-model", entity.name, model)))
        return out

    def definitions(self) -> list[Budget]:
        """Every budget the config defines (for listing in the budget server)."""
        cfg = self.config
        out: list[Budget] = []
        for kind, table in (("user", cfg.users), ("team", cfg.teams), ("org", cfg.orgs)):
            for entity in table.values():
                out += self.entity_budgets(kind, entity)
        for name, spec in cfg.end_users.items():
            out.append(spec.budget(scope_key("gw-end-user", name)))
        for name, limits in cfg.end_users_limits.items():
            out += limits.budgets("gw-end-user", name)
        if cfg.global_budget is not None:
            out.append(cfg.global_budget.budget("gw-global"))
        for model, spec in cfg.model_budgets.items():
            out.append(spec.budget(scope_key("gw-model", model)))
        for model, limits in cfg.model_limits.items():
            out += limits.budgets("gw-model", model)
        for budgets in self._deployment.values():
            out += budgets
        return out

    @staticmethod
    def _store(table: dict[K, tuple[Budget, ...]], key: K, value: tuple[Budget, ...]) -> None:
        if len(table) >= _CACHE_MAX:
            table.clear()
        table[key] = value


def describe_scope(scope: str) -> str:
    """A readable name for a gateway scope: ``gw-team:ml`` -> ``team ml``; a rate limit's
    scope reads as its owner's (``gw-key-rpm:key_1`` -> ``key key_1``).

    >>> describe_scope("gw-key-model:key_1:gpt-4o")
    'model on key key_1:gpt-4o'
    >>> describe_scope("gw-end-user-tpm:bob")
    'end user bob'
    """
    kind, _, rest = scope.partition(":")
    split = limit_kind(kind)
    if split is not None:
        kind = split[0]
    label = _KIND_LABELS.get(kind)
    if label is None:
        return scope
    return f"{label} {rest}".strip() if rest else label


def scope_window(scope: str) -> str | None:
    """How a rate limit's window reads (``"per minute"``, ``"per day"``, ``"at once"``);
    ``None`` for a scope that is no rate limit's.

    >>> scope_window("gw-model-tpd:gpt-4o"), scope_window("gw-model:gpt-4o")
    ('per day', None)
    """
    split = limit_kind(scope.partition(":")[0])
    return LIMIT_SUFFIXES[split[1]] if split is not None else None


def _entity_budgets(entity: Entity, kind: str) -> tuple[Budget, ...]:
    """A user's, team's or org's own budget (if capped) and rate limits."""
    own = () if entity.budget is None else (entity.budget.budget(scope_key(kind, entity.name)),)
    return (*own, *entity.limits.budgets(kind, entity.name))


def _budget(spec: BudgetSpec | None, scope: str, created_at: float) -> Budget:
    if spec is None:
        return Budget(scope, None)  # tracked, not capped
    return spec.budget(scope, created_at)
