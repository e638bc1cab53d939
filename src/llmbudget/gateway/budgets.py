"""Which budgets a gateway request is held against: one atomic reserve over all of them.

For a request by key *K* (user *U*, team *T*, org *O*) with OpenAI ``user`` field *E*, for
public model *M*, sent to deployment *D*, the scopes are, in this order:

==================================  =========================================  ===========
scope                               budget from                                when
==================================  =========================================  ===========
``gw-key:<K>``                      the key's ``budget``                       always (tracks spend even uncapped)
``gw-user:<U>``                     ``users.<U>``                              if capped
``gw-end-user:<E>``                 ``end_users.<E>`` or ``budgets.end_user``  if capped
``gw-team:<T>``                     ``teams.<T>``                              if capped
``gw-org:<O>``                      ``orgs.<O>``                               if capped
``gw-global``                       ``budgets.global``                         if capped
``gw-key-model:<K>:<M>``            the key's ``model_budgets.<M>``            if capped
``gw-user-model:<U>:<M>``           ``users.<U>.model_budgets.<M>``            if capped
``gw-team-model:<T>:<M>``           ``teams.<T>.model_budgets.<M>``            if capped
``gw-org-model:<O>:<M>``            ``orgs.<O>.model_budgets.<M>``             if capped
``gw-model:<M>``                    ``budgets.models.<M>``                     if capped
``gw-deployment:<D>``               the deployment's ``budget``                if capped
==================================  =========================================  ===========

Each has its own period. The order is deliberate: the store names the *first* scope that
would go over, so a refusal on a model scope means every general scope had room (a
fallback model may still be served), and a refusal on the deployment scope means
everything else had room (another deployment may still be used).

The team is the key's, else the user's; the org is the key's, else the team's, else the
user's. End users are named globally (as in LiteLLM): two keys sending the same ``user``
share that end user's budget.

>>> from llmbudget.gateway.config import GatewayConfig
>>> cfg = GatewayConfig.from_mapping({"budgets": {"global": {"budget": 100}}})
>>> planner = ScopePlanner(cfg)
>>> [b.scope for b in planner.general_budgets(VirtualKey("key_1", "alice", "h"), None)]
['gw-key:key_1', 'gw-global']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from llmbudget.budgets import Budget, scope_key
from llmbudget.gateway.config import BudgetSpec, Deployment, Entity, GatewayConfig
from llmbudget.gateway.entities import EntityDirectory
from llmbudget.gateway.keys import VirtualKey

__all__ = ["Owners", "ScopePlanner", "describe_scope"]

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
        owners = self.owners(key)
        user, team, org = self._entities(key)
        budgets: list[Budget] = [_budget(key.budget, scope_key("gw-key", key.id), key.created_at)]
        if user is not None and user.budget is not None:
            budgets.append(user.budget.budget(scope_key("gw-user", owners.user)))
        if end_user is not None:
            # An end user without a budget of its own has the default one.
            known = self.entities.end_user(end_user)
            spec = known.budget if known is not None and known.budget else cfg.end_user_budget
            if spec is not None:
                budgets.append(spec.budget(scope_key("gw-end-user", end_user)))
        if team is not None and team.budget is not None:
            budgets.append(team.budget.budget(scope_key("gw-team", team.name)))
        if org is not None and org.budget is not None:
            budgets.append(org.budget.budget(scope_key("gw-org", org.name)))
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
        result = tuple(budgets)
        self._store(self._model, cache_key, result)
        return result

    def budgets(
        self, key: VirtualKey, end_user: str | None, model: str, deployment: Deployment
    ) -> list[Budget]:
        """Every budget of one attempt, in the order described in the module docstring."""
        out = [*self.general_budgets(key, end_user), *self.model_budgets(key, model)]
        if deployment.budget is not None:
            out.append(deployment.budget.budget(deployment.scope))
        return out

    def entity_budgets(self, kind: str, entity: Entity) -> list[Budget]:
        """The budgets of one ``user``, ``team``, ``org`` or ``end_user`` (kind), as requests
        are held against them: its own, then its per-model ones."""
        scope_kind = _ENTITY_SCOPES[kind]
        spec = entity.budget
        if kind == "end_user" and spec is None:
            spec = self.config.end_user_budget
        out = [] if spec is None else [spec.budget(scope_key(scope_kind, entity.name))]
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
        if cfg.global_budget is not None:
            out.append(cfg.global_budget.budget("gw-global"))
        for model, spec in cfg.model_budgets.items():
            out.append(spec.budget(scope_key("gw-model", model)))
        for dep in cfg.deployments:
            if dep.budget is not None:
                out.append(dep.budget.budget(dep.scope))
        return out

    @staticmethod
    def _store(table: dict[K, tuple[Budget, ...]], key: K, value: tuple[Budget, ...]) -> None:
        if len(table) >= _CACHE_MAX:
            table.clear()
        table[key] = value


def describe_scope(scope: str) -> str:
    """A readable name for a gateway scope: ``gw-team:ml`` -> ``team ml``.

    >>> describe_scope("gw-key-model:key_1:gpt-4o")
    'model on key key_1:gpt-4o'
    """
    kind, _, rest = scope.partition(":")
    label = _KIND_LABELS.get(kind)
    if label is None:
        return scope
    return f"{label} {rest}".strip() if rest else label


def _budget(spec: BudgetSpec | None, scope: str, created_at: float) -> Budget:
    if spec is None:
        return Budget(scope, None)  # tracked, not capped
    return spec.budget(scope, created_at)
