"""Server configuration: one dataclass, loadable from TOML, JSON or YAML.

Every field has a safe default, so ``ServerConfig()`` is a working loopback-only server on
the default store. A config file overrides the defaults; the command line overrides the
file; ``$LLMBUDGET_STORE`` and ``$LLMBUDGET_ADMIN_KEY`` fill what neither set.

.. code-block:: toml

    store = "sqlite:////var/lib/llmbudget/ledger.db"
    admin_key = "change-me"          # or $LLMBUDGET_ADMIN_KEY
    purge_interval = 60              # seconds between sweeps of expired holds
    session_ttl = 43200              # seconds a dashboard login lasts

    [alerts]
    webhook_url = "https://hooks.example/budget"
    webhook_secret = "os.environ/ALERT_SECRET"   # signs each webhook (HMAC-SHA256)
    slack_webhook_url = "https://hooks.slack.com/services/T0/B0/XYZ"
    thresholds = [0.5, 0.8, 1.0]     # fractions of the limit, for every budget
    budgets = { "user:my-app:alice" = [0.9] }   # per-scope override
    projects = { "my-app" = [0.8, 1.0] }        # every budget of a library project
    [alerts.gateway]
    teams = { ml = [0.5, 0.9] }      # also keys, users, orgs, end_users
    [alerts.email]
    host = "smtp.example.com"
    from = "budget@example.com"
    to = ["ops@example.com"]

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
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
)

from llmbudget.config_models import StrictModel, parse
from llmbudget.errors import InvalidInputError
from llmbudget.periods import Period
from llmbudget.validation import MAX_TTL, MIN_TTL

from .alert_email import EmailSettings

__all__ = [
    "AlertConfig",
    "EntityThresholds",
    "ServerConfig",
    "load_config",
    "parse_thresholds",
]

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


Overrides = Mapping[str, tuple[float, ...]]


@dataclass(frozen=True, slots=True)
class EntityThresholds:
    """Per-entity thresholds of the gateway's budgets, by name (a key by its id). Each
    covers the entity's own budget and its per-model budgets."""

    keys: Overrides = field(default_factory=dict)
    users: Overrides = field(default_factory=dict)
    teams: Overrides = field(default_factory=dict)
    orgs: Overrides = field(default_factory=dict)
    end_users: Overrides = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AlertConfig:
    """Soft thresholds and where to send them: a JSON webhook (signed with
    ``webhook_secret``), Slack, email. No channel configured: alerts are off.

    ``timeout``, ``retries`` and ``backoff`` apply to every channel's HTTP attempts
    (email has its own ``timeout``)."""

    webhook_url: str | None = None
    webhook_secret: str | None = None
    slack_webhook_url: str | None = None
    email: EmailSettings | None = None
    thresholds: tuple[float, ...] = (0.5, 0.8, 1.0)
    budgets: Overrides = field(default_factory=dict)
    projects: Overrides = field(default_factory=dict)
    gateway: EntityThresholds = field(default_factory=EntityThresholds)
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
    session_ttl: float = 12 * 3600.0
    alerts: AlertConfig = field(default_factory=AlertConfig)
    gateway: Mapping[str, Any] | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ServerConfig:
        """Build from a parsed config file. Every mapping refuses unknown keys, naming the
        path and the closest known key (a typo fails at start-up, not silently)."""
        file = parse(_ServerFile, data)
        gateway = {k: data[k] for k in GATEWAY_KEYS if data.get(k) is not None} or None
        store = file.store
        if gateway is not None:
            from llmbudget.gateway.config_schema import GatewayFile

            # The gateway is built later (it needs prices and secrets); its layout is
            # checked now, so a typo there also fails at start-up with its path.
            schema = parse(GatewayFile, gateway)
            gateway_store = schema.general_settings.store if schema.general_settings else None
            if gateway_store is not None:
                # The server and the gateway share one store; say so rather than pick one.
                if store is not None and store != gateway_store:
                    raise InvalidInputError(
                        "store and general_settings.store name different stores; the server "
                        "and its gateway share one: set only one of them"
                    )
                store = gateway_store
        alerts = file.alerts or _AlertsFile()
        return cls(
            store=store,
            admin_key=file.admin_key,
            host=file.host,
            port=file.port,
            insecure_no_auth=file.insecure_no_auth,
            purge_interval=float(file.purge_interval),
            hold_ttl=float(file.hold_ttl),
            retention=float(file.retention),
            max_body_bytes=file.max_body_bytes,
            default_timezone=file.default_timezone,
            trust_client_clock=file.trust_client_clock,
            session_ttl=float(file.session_ttl),
            alerts=alerts.config(),
            gateway=gateway,
        )

    def with_env(self) -> ServerConfig:
        """Fill the store URL and admin key from the environment where the config has none."""
        return replace(
            self,
            store=self.store or os.environ.get("LLMBUDGET_STORE") or None,
            admin_key=self.admin_key or os.environ.get("LLMBUDGET_ADMIN_KEY") or None,
        )


def _thresholds(value: object) -> tuple[float, ...]:
    return parse_thresholds(value)


def _timezone(value: str) -> str:
    Period.parse("daily", timezone=value)
    return value


def _webhook(value: str | None) -> str | None:
    if value and not value.startswith(("http://", "https://")):
        raise ValueError(f"must be an http(s) URL, got {value!r}")
    return value or None


Positive = Annotated[StrictInt | StrictFloat, Field(gt=0, allow_inf_nan=False)]
Thresholds = Annotated[Any, AfterValidator(_thresholds)]


def _secret(value: str | None) -> str | None:
    from llmbudget.gateway.config import resolve_secret

    # os.environ/NAME reads the variable (as in the gateway's config), so no secret need
    # be written in the file.
    return resolve_secret(value, "secret")


def _address(value: str) -> str:
    # A line break would let a value add mail headers.
    if "@" not in value or any(c in value for c in "\r\n") or value != value.strip():
        raise ValueError(f"{value!r} is not an email address")
    return value


Url = Annotated[StrictStr | None, AfterValidator(_webhook)]
Secret = Annotated[StrictStr | None, AfterValidator(_secret)]
Address = Annotated[StrictStr, AfterValidator(_address)]
Names = dict[StrictStr, Thresholds]


class _EmailFile(StrictModel):
    host: Annotated[StrictStr, Field(min_length=1)]
    port: Annotated[StrictInt, Field(ge=1, le=65535)] | None = None
    security: Literal["starttls", "ssl", "none"] = "starttls"
    username: Secret = None
    password: Secret = None
    sender: Address = Field(validation_alias=AliasChoices("sender", "from"))
    to: Annotated[list[Address], Field(min_length=1)]
    ca_file: StrictStr | None = None
    subject_prefix: StrictStr = "[llmbudget]"
    timeout: Positive = 10.0

    def settings(self) -> EmailSettings:
        return EmailSettings(
            host=self.host,
            port=self.port,
            security=self.security,
            username=self.username,
            password=self.password,
            sender=self.sender,
            to=tuple(self.to),
            ca_file=self.ca_file,
            subject_prefix=self.subject_prefix,
            timeout=float(self.timeout),
        )


class _GatewayThresholdsFile(StrictModel):
    keys: Names = Field(default_factory=dict)
    users: Names = Field(default_factory=dict)
    teams: Names = Field(default_factory=dict)
    orgs: Names = Field(default_factory=dict)
    end_users: Names = Field(default_factory=dict)


class _AlertsFile(StrictModel):
    webhook_url: Url = None
    webhook_secret: Secret = None
    slack_webhook_url: Annotated[Secret, AfterValidator(_webhook)] = None
    email: _EmailFile | None = None
    thresholds: Thresholds = (0.5, 0.8, 1.0)
    budgets: Names = Field(default_factory=dict)
    projects: Names = Field(default_factory=dict)
    gateway: _GatewayThresholdsFile | None = None
    timeout: Positive = 5.0
    retries: Annotated[StrictInt, Field(ge=0, le=20)] = 3
    backoff: Positive = 0.5
    sweep_interval: Positive = 30.0
    headers: dict[StrictStr, StrictStr] = Field(default_factory=dict)

    def config(self) -> AlertConfig:
        gateway = self.gateway or _GatewayThresholdsFile()
        return AlertConfig(
            webhook_url=self.webhook_url,
            webhook_secret=self.webhook_secret,
            slack_webhook_url=self.slack_webhook_url,
            email=self.email.settings() if self.email else None,
            thresholds=tuple(self.thresholds),
            budgets=dict(self.budgets),
            projects=dict(self.projects),
            gateway=EntityThresholds(
                keys=dict(gateway.keys),
                users=dict(gateway.users),
                teams=dict(gateway.teams),
                orgs=dict(gateway.orgs),
                end_users=dict(gateway.end_users),
            ),
            timeout=float(self.timeout),
            retries=self.retries,
            backoff=float(self.backoff),
            sweep_interval=float(self.sweep_interval),
            headers=dict(self.headers),
        )


class _ServerFile(StrictModel):
    store: StrictStr | None = None
    admin_key: StrictStr | None = None
    host: StrictStr = "127.0.0.1"
    port: Annotated[StrictInt, Field(ge=0, le=65535)] = 8000
    insecure_no_auth: StrictBool = False
    purge_interval: Positive = 60.0
    hold_ttl: Annotated[StrictInt | StrictFloat, Field(ge=MIN_TTL, le=MAX_TTL)] = 600.0
    retention: Positive = 86_400.0
    max_body_bytes: Annotated[StrictInt, Field(gt=0)] = DEFAULT_MAX_BODY
    default_timezone: Annotated[StrictStr, AfterValidator(_timezone)] = "UTC"
    trust_client_clock: StrictBool = False
    session_ttl: Positive = 12 * 3600.0
    alerts: _AlertsFile | None = None
    # The gateway's part of the file: checked by the gateway's own schema.
    model_list: Any = None
    router_settings: Any = None
    general_settings: Any = None
    budgets: Any = None
    users: Any = None
    teams: Any = None
    orgs: Any = None
    end_users: Any = None
    keys: Any = None


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
    try:
        config = ServerConfig.from_mapping(data)
    except InvalidInputError as exc:
        raise InvalidInputError(f"config file {str(file)!r}: {exc}") from None
    return config.with_env()
