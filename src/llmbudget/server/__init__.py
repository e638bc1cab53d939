"""The budget server (``llmbudget serve``): the seed's hosted/self-hosted mode.

>>> from llmbudget.server import ServerConfig, create_app
>>> app = create_app(ServerConfig(store="memory://"))
>>> app.title
'llmbudget server'

Needs the ``server`` extra (FastAPI, uvicorn, httpx, prometheus-client).
"""

from __future__ import annotations

from llmbudget.server.app import app_from_env, create_app
from llmbudget.server.config import AlertConfig, ServerConfig, load_config

__all__ = ["AlertConfig", "ServerConfig", "app_from_env", "create_app", "load_config"]
