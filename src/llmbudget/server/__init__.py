"""The budget server (``llmbudget serve``): the seed's hosted/self-hosted mode.

>>> from llmbudget.server import ServerConfig, create_app
>>> app = create_app(ServerConfig(store="memory://"))
>>> app.title
'llmbudget server'

Needs the ``server`` extra (FastAPI, uvicorn, httpx, prometheus-client). Its names are
imported on first use, so the library can use :mod:`llmbudget.server.seed_protocol`
(LiteLLM's data, for ``llmbudget import``) without the extra installed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmbudget.server.app import app_from_env, create_app
    from llmbudget.server.config import AlertConfig, ServerConfig, load_config

__all__ = ["AlertConfig", "ServerConfig", "app_from_env", "create_app", "load_config"]

_HOME = {
    "AlertConfig": "config",
    "ServerConfig": "config",
    "load_config": "config",
    "app_from_env": "app",
    "create_app": "app",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
