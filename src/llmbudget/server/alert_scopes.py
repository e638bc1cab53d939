"""The gateway's budgets, for the alert sweep: they are not budget records in the store.

A gateway budget lives in its config (users, teams, orgs, end users, global, models,
deployments) or on its virtual key (the key's ``budget`` and ``model_budgets``), and the
gateway builds it for each request. The store's budget records, which the sweep reads for
the library's budgets, hold none of them; this lists them, through the gateway's own
:class:`~llmbudget.gateway.budgets.ScopePlanner`, so an alert checks exactly the budget
(scope, limit, period, anchor) a request reserves against.

Revoked and expired keys are left out: they cannot spend, so they cannot cross anything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmbudget.budgets import Budget

if TYPE_CHECKING:
    from llmbudget.gateway.proxy import Gateway

__all__ = ["gateway_budgets"]


async def gateway_budgets(gateway: Gateway) -> list[Budget]:
    """Every capped budget the gateway reserves against: its config's, its stored
    entities' and its keys'."""
    planner = gateway.planner
    budgets = list(planner.definitions())
    # Entities created by the admin API live in the store, not the config.
    for kind in ("user", "team", "org", "end_user"):
        for record in await gateway.entities.records(kind):
            if record.source != "config":
                budgets.extend(planner.entity_budgets(kind, record.entity))
    now = gateway.clock()
    for key in await gateway.keys.list(include_revoked=False):
        if key.problem(now) is not None:
            continue
        # The key's own scope comes first among its general budgets (see ScopePlanner).
        budgets.extend(planner.general_budgets(key, None)[:1])
        for model in key.model_budgets:
            budgets.extend(
                b for b in planner.model_budgets(key, model) if b.scope.startswith("gw-key-model:")
            )
    return [b for b in budgets if b.limit is not None]
