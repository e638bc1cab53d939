"""An OpenAI-compatible gateway that never overspends: virtual keys, budgets at every level,
streaming, load balancing. See ``docs/gateway.md``.

>>> from llmbudget.stores.memory import MemoryStore
>>> app = create_gateway_app({"model_list": []}, store=MemoryStore())
>>> app.title
'llmbudget gateway'
"""

from __future__ import annotations

from llmbudget.gateway.app import create_gateway_app, install_gateway
from llmbudget.gateway.config import GatewayConfig, load_gateway_config
from llmbudget.gateway.keys import VirtualKey
from llmbudget.gateway.proxy import Gateway
from llmbudget.gateway.spendlog import query_spend_logs, render_spend_table

__all__ = [
    "Gateway",
    "GatewayConfig",
    "VirtualKey",
    "create_gateway_app",
    "install_gateway",
    "load_gateway_config",
    "query_spend_logs",
    "render_spend_table",
]
