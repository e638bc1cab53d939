"""Which thresholds a budget's alerts use, from the config file: the most specific wins.

1. ``alerts.budgets``: one budget by its exact scope (``user:my-app:alice``, ``gw-key:key_1``);
2. the budget's owner: ``alerts.projects`` for a library user's budget (``user:<project>:…``),
   ``alerts.gateway.keys`` / ``users`` / ``teams`` / ``orgs`` / ``end_users`` for the
   gateway's scopes, per-model ones included (``gw-team-model:ml:gpt-4o`` is team ``ml``'s);
3. ``alerts.thresholds``, the default for every budget.

Thresholds set through the API on one budget (store documents) come before all of these;
the alert manager looks those up first.

>>> from llmbudget.server.config import AlertConfig, EntityThresholds
>>> cfg = AlertConfig(projects={"app": (0.9,)}, gateway=EntityThresholds(teams={"ml": (0.7,)}))
>>> configured_thresholds(cfg, "user:app:ann"), configured_thresholds(cfg, "gw-team-model:ml:gpt-4o")
((0.9,), (0.7,))
>>> configured_thresholds(cfg, "gw-org:acme")
(0.5, 0.8, 1.0)
"""

from __future__ import annotations

from urllib.parse import unquote

from .config import AlertConfig, Overrides

__all__ = ["configured_thresholds", "owner"]

# Scope kind -> (table of EntityThresholds, or "projects"). The owner's name is the
# scope's first part after the kind.
_OWNER_TABLES = {
    "user": "projects",
    "gw-key": "keys",
    "gw-key-model": "keys",
    "gw-user": "users",
    "gw-user-model": "users",
    "gw-team": "teams",
    "gw-team-model": "teams",
    "gw-org": "orgs",
    "gw-org-model": "orgs",
    "gw-end-user": "end_users",
}


def owner(scope: str) -> tuple[str, str] | None:
    """``(table, name)`` of the entity a scope belongs to, or ``None``.

    >>> owner("gw-key-model:key_1:gpt-4o"), owner("user:my%3Aapp:ann"), owner("gw-global")
    (('keys', 'key_1'), ('projects', 'my:app'), None)
    """
    kind, _, rest = scope.partition(":")
    table = _OWNER_TABLES.get(kind)
    if table is None or not rest:
        return None
    return table, unquote(rest.split(":", 1)[0])


def configured_thresholds(config: AlertConfig, scope: str) -> tuple[float, ...]:
    """The config file's thresholds for ``scope`` (see the module docstring for the order)."""
    exact = config.budgets.get(scope)
    if exact is not None:
        return exact
    found = owner(scope)
    if found is not None:
        table, name = found
        overrides: Overrides = (
            config.projects if table == "projects" else getattr(config.gateway, table)
        )
        if name in overrides:
            return overrides[name]
    return config.thresholds
