"""Where the dashboard looks up the gateway's users, teams and orgs: one function.

They come from the gateway's entity directory (:mod:`llmbudget.gateway.entities`): the
config file's ``users:``/``teams:``/``orgs:`` and those created by the admin API, kept in
the store. A name that the spend log shows but the directory does not know still gets a
page (spend only), so nothing depends on the directory being complete.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from llmbudget.gateway.config import Entity

if TYPE_CHECKING:
    from llmbudget.gateway.proxy import Gateway

__all__ = ["ENTITY_KINDS", "EntityKind", "entity"]

EntityKind = Literal["user", "team", "org"]
ENTITY_KINDS: tuple[EntityKind, ...] = ("user", "team", "org")


async def entity(gateway: Gateway, kind: EntityKind, name: str) -> Entity | None:
    """The gateway's ``kind`` named ``name`` (config or store), or ``None``."""
    record = await gateway.entities.get(kind, name)
    return None if record is None else record.entity
