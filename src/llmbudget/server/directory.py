"""Where the dashboard looks up the gateway's users, teams and orgs: one function.

Today they come from the gateway's config file (``users:``, ``teams:``, ``orgs:``); when
they move into the store behind an admin API, :func:`entities` is the one place to
change. A name that the spend log shows but the directory does not know still gets a
page (spend only), so nothing depends on the directory being complete.

>>> from llmbudget.gateway.config import GatewayConfig
>>> cfg = GatewayConfig.from_mapping({"teams": {"ml": {"budget": 5, "period": "daily"}}})
>>> sorted(entities(cfg, "team"))
['ml']
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from llmbudget.gateway.config import Entity, GatewayConfig

__all__ = ["ENTITY_KINDS", "EntityKind", "entities"]

EntityKind = Literal["user", "team", "org"]
ENTITY_KINDS: tuple[EntityKind, ...] = ("user", "team", "org")


def entities(config: GatewayConfig, kind: EntityKind) -> Mapping[str, Entity]:
    """Every known entity of ``kind``, by name."""
    table = {"user": config.users, "team": config.teams, "org": config.orgs}
    return table[kind]
