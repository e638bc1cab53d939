"""Server configuration: one dataclass, loadable from TOML, JSON or YAML.

Every field has a safe default, so ``ServerConfig()`` is a working loopback-only server on
the default store. A config file overrides the defaults; the command line overrides the
file; ``$LLMBUDGET_STORE`` and ``$LLMBUDGET_ADMIN_KEY`` fill what neither set.

.. code-block:: toml

    store = "sqlite:////var/lib/llmbudget/ledger.db"
    admin_key = "change-me"          # or $LLMBUDGET_ADMIN_KEY
    purge_interval = 60              # seconds between sweeps of expired holds

    [alerts]
    webhook_url = "https://hooks.example/budget"
    thresholds = [0.5, 0.8, 1.0]     # fractions of the limit, for every budget
    budgets = { "user:my-app:alice" = [0.9] }   # per-scope override

The gateway's keys (``model_list``, ``router_settings``, ``general_settings``, ``budgets``,
``users``, ``teams``, ``orgs``, ``end_users``, ``keys``; see ``docs/gateway.md``) may sit in
the same file: with a ``model_list``, ``llmbudget serve`` also serves the OpenAI-compatible
gateway.

>>> cfg = ServerConfig.from_mapping({"alerts": {"thresholds": [0.5, 1]}})
>>> cfg.alerts.thresholds
(0.5, 1.0)
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from llmbudget.errors import InvalidInputError
from llmbudget.periods import Period

__all__ = ["AlertConfig", "ServerConfig", "load_config", "parse_thresholds"]

DEFAULT_MAX_BODY = 1024 * 1024
GATEWAY_KEYS = frozenset(
    {"model_list", "router_settings", "general_settings", "budgets", "users", "teams", "orgs",
     "end_users", "keys"}
)  # fmt: skip


def parse_thresholds(value: object, *, what: str = "thresholds") -> tuple[float, ...]:
    """Validate alert thresholds: fractions of the limit in ``(0, 10]``, sorted, no repeats.

    >>> parse_thresholds([1, 0.5, 0.5])
    (0.5, 1.0)
    """
    if not isinstance(value, list | tuple):
        raise InvalidInputError(f"{what} must be a list of fractions such as [0.5, 0.8, 1.0]")
    out: set[float] = set()
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int | float):
            raise InvalidInputError(f"{what}: {item!r} is not a number")
        number = float(item)
        # Above 10x the limit no alert makes sense; it also keeps markers bounded.
        if not math.isfinite(number) or number <= 0 or number > 10:
            raise InvalidInputError(f"{what}: {item!r} must be a fraction in (0, 10]")
        out.add(round(number, 6))
    if len(out) > 20:
        raise InvalidInputError(f"{what}: at most 20 thresholds")
    return tuple(sorted(out))


@dataclass(frozen=True, slots=True)
class AlertConfig:
    """Soft thresholds and where to send them. No ``webhook_url``: alerts are off."""

    webhook_url: str | None = None
    thresholds: tuple[float, ...] = (0.5, 0.8, 1.0)
    budgets: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    timeout: float = 5.0
    retries: int = 3
    backoff: float = 0.5
    sweep_interval: float = 30.0
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything ``create_app`` needs. ``store=None`` means ``$LLMBUDGET_STORE`` or SQLite."""

    store: str | None = None
    admin_key: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    insecure_no_auth: bool = False
    purge_interval: float = 60.0
    hold_ttl: float = 600.0
    retention: float = 86_400.0
    max_body_bytes: int = DEFAULT_MAX_BODY
    default_timezone: str = "UTC"
    trust_client_clock: bool = False
    alerts: AlertConfig = field(default_factory=AlertConfig)
    gateway: Mapping[str, Any] | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ServerConfig:
        """Build from a parsed config file; unknown keys are refused (typos fail loudly)."""
        known = {f for f in cls.__dataclass_fields__ if f not in ("alerts", "gateway")}
        unknown = set(data) - known - {"alerts"} - GATEWAY_KEYS
        if unknown:
            raise InvalidInputError(f"unknown config keys: {', '.join(sorted(unknown))}")
        kwargs: dict[str, Any] = {k: data[k] for k in known if k in data}
        for key in ("purge_interval", "hold_ttl", "retention"):
            if key in kwargs:
                kwargs[key] = _positive(kwargs[key], key)
        if "max_body_bytes" in kwargs:
            kwargs["max_body_bytes"] = int(_positive(kwargs["max_body_bytes"], "max_body_bytes"))
        if "trust_client_clock" in kwargs and not isinstance(kwargs["trust_client_clock"], bool):
            raise InvalidInputError("trust_client_clock must be true or false")
        if "port" in kwargs:
            kwargs["port"] = int(kwargs["port"])
        if "default_timezone" in kwargs:
            Period.parse("daily", timezone=str(kwargs["default_timezone"]))
        alerts = data.get("alerts") or {}
        if not isinstance(alerts, Mapping):
            raise InvalidInputError("[alerts] must be a table")
        gateway = {k: data[k] for k in GATEWAY_KEYS if k in data} or None
        settings = (gateway or {}).get("general_settings") or {}
        gateway_store = settings.get("store") if isinstance(settings, Mapping) else None
        if gateway_store is not None:
            # The server and the gateway share one store; say so rather than pick one.
            if "store" in kwargs and kwargs["store"] != gateway_store:
                raise InvalidInputError(
                    "store and general_settings.store name different stores; the server and "
                    "its gateway share one: set only one of them"
                )
            kwargs["store"] = gateway_store
        return cls(**kwargs, alerts=_alerts(alerts), gateway=gateway)

    def with_env(self) -> ServerConfig:
        """Fill the store URL and admin key from the environment where the config has none."""
        return replace(
            self,
            store=self.store or os.environ.get("LLMBUDGET_STORE") or None,
            admin_key=self.admin_key or os.environ.get("LLMBUDGET_ADMIN_KEY") or None,
        )


def _positive(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise InvalidInputError(f"{what} must be a positive number, got {value!r}")
    return float(value)


def _alerts(data: Mapping[str, Any]) -> AlertConfig:
    allowed = set(AlertConfig.__dataclass_fields__)
    unknown = set(data) - allowed
    if unknown:
        raise InvalidInputError(f"unknown [alerts] keys: {', '.join(sorted(unknown))}")
    kwargs: dict[str, Any] = {}
    if data.get("webhook_url"):
        url = str(data["webhook_url"])
        if not url.startswith(("http://", "https://")):
            raise InvalidInputError(f"alerts.webhook_url must be http(s), got {url!r}")
        kwargs["webhook_url"] = url
    if "thresholds" in data:
        kwargs["thresholds"] = parse_thresholds(data["thresholds"], what="alerts.thresholds")
    if "budgets" in data:
        budgets = data["budgets"]
        if not isinstance(budgets, Mapping):
            raise InvalidInputError("alerts.budgets must map scopes to threshold lists")
        kwargs["budgets"] = {
            str(scope): parse_thresholds(v, what=f"alerts.budgets[{scope!r}]")
            for scope, v in budgets.items()
        }
    for key in ("timeout", "backoff", "sweep_interval"):
        if key in data:
            kwargs[key] = _positive(data[key], f"alerts.{key}")
    if "retries" in data:
        retries = data["retries"]
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise InvalidInputError("alerts.retries must be a non-negative integer")
        kwargs["retries"] = retries
    if "headers" in data:
        kwargs["headers"] = {str(k): str(v) for k, v in dict(data["headers"]).items()}
    return AlertConfig(**kwargs)


def load_config(path: str | Path | None) -> ServerConfig:
    """Read a ``.toml``, ``.json`` or ``.yaml`` file (``None``: defaults), then the environment."""
    if path is None:
        return ServerConfig().with_env()
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInputError(f"cannot read config file {str(file)!r}: {exc}") from None
    suffix = file.suffix.lower()
    try:
        if suffix == ".toml":
            data: object = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            raise InvalidInputError(f"config file must be .toml, .json or .yaml: {str(file)!r}")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"config file {str(file)!r} is not valid: {exc}") from None
    except Exception as exc:  # yaml.YAMLError without importing yaml at module level
        if isinstance(exc, InvalidInputError):
            raise
        raise InvalidInputError(f"config file {str(file)!r} is not valid: {exc}") from None
    if not isinstance(data, Mapping):
        raise InvalidInputError(f"config file {str(file)!r} must hold a table/object")
    return ServerConfig.from_mapping(data).with_env()
