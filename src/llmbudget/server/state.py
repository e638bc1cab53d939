"""What every request handler shares: the store, the ledger, the clock, metrics, alerts."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from llmbudget.clock import Clock
from llmbudget.ledger import Ledger
from llmbudget.stores.base import Store

from .alerts import AlertManager
from .auth import AdminAuth
from .config import ServerConfig
from .metrics import Metrics
from .seed_protocol import SeedProtocol

__all__ = ["ServerState", "get_state"]


@dataclass(slots=True)
class ServerState:
    config: ServerConfig
    store: Store
    ledger: Ledger
    clock: Clock
    auth: AdminAuth
    metrics: Metrics
    alerts: AlertManager
    seed: SeedProtocol
    owns_store: bool


def get_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.llmbudget
    return state
