"""Gateway configuration: a YAML file in LiteLLM's layout, plus budgets at every level.

.. code-block:: yaml

    model_list:                       # deployments; several may share one model_name
      - model_name: gpt-4o            # what clients ask for
        litellm_params:               # (LiteLLM's nesting; the same keys may sit at top level)
          model: openai/gpt-4o        # sent upstream; a leading "openai/" is dropped
          api_base: https://api.openai.com/v1
          api_key: os.environ/OPENAI_API_KEY      # or api_key_env: OPENAI_API_KEY
          weight: 2                   # share of traffic (weighted strategies)
          rpm: 500                    # skip this deployment past 500 requests a minute
          tpm: 200000                 # ... and past 200,000 tokens a minute (enforced atomically)
          budget: 200                 # the provider account's own cap (dollars) ...
          period: monthly             # ... per calendar month
          input_cost_per_token: 0.0000025   # override prices (else genai-prices' data)
          output_cost_per_token: 0.00001
        model_info: {id: openai-main}
    router_settings:
      routing_strategy: simple-shuffle    # | weighted-round-robin | least-busy
      num_retries: 2                       # other deployments tried on 429/5xx/timeout
      fallbacks: [{gpt-4o: [gpt-4o-mini]}]          # when gpt-4o fails (429, 5xx, timeouts)
      budget_fallbacks: [{gpt-4o: [gpt-4o-mini]}]   # when a budget cannot pay for gpt-4o
      allowed_fails: 3                     # failures within cooldown_time before a cooldown
      cooldown_time: 30
    general_settings:
      master_key: os.environ/LLMBUDGET_ADMIN_KEY
      store: sqlite:///gateway.db
    budgets:
      global: {budget: 1000, period: monthly}
      end_user: {budget: 1, period: daily, rpm_limit: 20}   # every OpenAI ``user`` value
      models: {gpt-4o: {budget: 300, period: monthly, tpm_limit: 500000}}
    users: {alice: {budget: 20, period: monthly, team: ml, rpm_limit: 60}}
    teams: {ml: {budget: 200, period: monthly, org: acme, models: [gpt-4o, gpt-4o-mini]}}
    orgs:  {acme: {budget: 1000, period: monthly}}
    keys:                              # optional static keys (API-created keys live in the store)
      - {id: ci, key: os.environ/CI_GATEWAY_KEY, user: ci-bot, budget: 5, period: daily}

A budget is written ``budget`` (or LiteLLM's ``max_budget``) in dollars with ``period``
(or ``budget_duration``; absent: lifetime), optional ``timezone`` and ``rolling``.
``model_budgets: {gpt-4o: {budget: 5, period: daily}}`` caps one model's spend on a key,
user, team or org. Rate limits (``rpm_limit``, ``tpm_limit``, ``tpd_limit``,
``max_parallel_requests``: :mod:`.rate_limits`) sit beside the budget of a key, user,
team, org, end user or ``budgets.models`` entry; a deployment's ``tpm`` limits its
tokens per minute. Anything malformed raises :class:`~llmbudget.errors.InvalidInputError`
at load time, naming where: a gateway never starts with a budget it would misread. Every
mapping refuses keys it does not know, with the path and the closest known key
(``users.alice.budgett: unknown key; did you mean 'budget'?``), and a model budget must
name a model a deployment serves (the file's layout: :mod:`.config_schema`).

>>> cfg = GatewayConfig.from_mapping({"model_list": [{"model_name": "m", "model": "gpt-4o-mini",
...     "api_base": "http://127.0.0.1:9/v1"}]})
>>> cfg.deployments[0].upstream_model, cfg.models()
('gpt-4o-mini', ['m'])
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from llmbudget.budgets import Budget, scope_key
from llmbudget.config_models import parse
from llmbudget.errors import InvalidInputError, LLMBudgetError
from llmbudget.gateway.config_schema import (
    BudgetFields,
    BudgetModel,
    BudgetsModel,
    DeploymentModel,
    EntityModel,
    GatewayFile,
    GeneralSettings,
    LooseBudgetModel,
    RateLimitFields,
    RouterModel,
)
from llmbudget.gateway.rate_limits import RATE_LIMIT_FIELDS, RateLimits
from llmbudget.metering.policy import DEFAULT_OUTPUT_CAP as SAFE_OUTPUT_CAP
from llmbudget.money import format_money
from llmbudget.periods import Period
from llmbudget.pricing import ModelPrice, PriceBook

#: Output cap reserved for and forwarded when the client sends no ``max_tokens`` and
#: neither the deployment (``max_output_tokens``) nor the price data knows the model's max
#: output. The same fallback as ``llmbudget.completion`` (``SAFE_OUTPUT_CAP``): every chat
#: model accepts it, unlike the context window (gpt-4o: 128,000 > its 16,384 output limit,
#: which OpenAI refuses with a 400, and a 128k-token hold on every request).
DEFAULT_OUTPUT_TOKENS = SAFE_OUTPUT_CAP

__all__ = [
    "STRATEGIES",
    "BudgetSpec",
    "Deployment",
    "Entity",
    "GatewayConfig",
    "RouterSettings",
    "load_gateway_config",
    "resolve_secret",
]

STRATEGIES = ("simple-shuffle", "weighted-round-robin", "least-busy")
_STRATEGY_ALIASES = {
    "shuffle": "simple-shuffle",
    "weighted": "simple-shuffle",
    "round-robin": "weighted-round-robin",
    "wrr": "weighted-round-robin",
    "least-in-flight": "least-busy",
}
_ENV_PREFIX = "os.environ/"
# Statuses another deployment may answer differently: rate limits, overload, outages.
_RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
# Providers whose prefix names the protocol, not the model: stripped before sending.
_PROTOCOL_PREFIXES = ("openai/", "openai_compatible/", "hosted_vllm/", "azure/")
#: The ``anthropic-version`` sent to native Anthropic deployments when the client sends none.
ANTHROPIC_VERSION = "2023-06-01"
# Models that refuse the legacy max_tokens field and want max_completion_tokens.
_COMPLETION_TOKENS_MODELS = ("o1", "o3", "o4", "gpt-5")


def resolve_secret(value: object, where: str) -> str | None:
    """A string as given, or the environment variable named by ``os.environ/NAME``.

    >>> os.environ["LLMB_DOCTEST"] = "s3"
    >>> resolve_secret("os.environ/LLMB_DOCTEST", "x")
    's3'
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInputError(f"{where} must be a string")
    if value.startswith(_ENV_PREFIX):
        name = value[len(_ENV_PREFIX) :]
        found = os.environ.get(name)
        if not found:
            raise InvalidInputError(f"{where}: environment variable {name} is not set")
        return found
    return value


@dataclass(frozen=True, slots=True)
class BudgetSpec:
    """A limit in dollars per period, not yet attached to a scope.

    >>> BudgetSpec.parse({"budget": "2.5", "period": "daily"}, "x").describe()
    '$2.5 daily'
    """

    limit: Decimal
    period: Period

    @classmethod
    def parse(cls, raw: object, where: str) -> BudgetSpec | None:
        """From ``{budget|max_budget|limit, period|budget_duration, timezone, rolling}`` or a
        bare number (lifetime); ``None``/absent budget means no cap. Unknown keys are
        refused (see :mod:`.config_schema`)."""
        return cls.of(parse(LooseBudgetModel, raw, where))

    @classmethod
    def of(cls, model: BudgetFields | None) -> BudgetSpec | None:
        """The spec of a validated budget model (``None``: no amount, no cap)."""
        if model is None or model.budget is None:
            return None
        return cls(model.budget, model.to_period())

    def budget(self, scope: str, created_at: float = 0.0) -> Budget:
        return Budget(scope, self.limit, self.period, created_at)

    def describe(self) -> str:
        return f"${format_money(self.limit)} {self.period.describe() or 'lifetime'}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget": format_money(self.limit),  # never "1E-9"
            "period": self.period.describe(),
            "timezone": self.period.timezone,
            "rolling": self.period.rolling,
        }


def parse_model_budgets(raw: object, where: str) -> dict[str, BudgetSpec]:
    """``{model: budget spec}``, as used by keys, users, teams, orgs and ``budgets.models``."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise InvalidInputError(f"{where}.model_budgets must map model names to budgets")
    out: dict[str, BudgetSpec] = {}
    for model, spec in raw.items():
        parsed = BudgetSpec.parse(spec, f"{where}.model_budgets.{model}")
        if parsed is not None:
            out[str(model)] = parsed
    return out


def parse_models(raw: object, where: str) -> frozenset[str] | None:
    """An allowed-model list; ``None`` (absent, or containing ``"*"``) allows every model."""
    if raw is None:
        return None
    if (
        isinstance(raw, str)
        or not isinstance(raw, Sequence)
        or not all(isinstance(m, str) for m in raw)
    ):
        raise InvalidInputError(f"{where}.models must be a list of model names")
    if "*" in raw:
        return None
    return frozenset(raw)


@dataclass(frozen=True, slots=True)
class Entity:
    """A user, team or org from the config: its budget, model caps, allowed models, parents."""

    name: str
    budget: BudgetSpec | None = None
    model_budgets: Mapping[str, BudgetSpec] = field(default_factory=dict)
    models: frozenset[str] | None = None
    team: str | None = None
    org: str | None = None
    limits: RateLimits = field(default_factory=RateLimits)

    @classmethod
    def of(cls, name: str, model: EntityModel | None, where: str) -> Entity:
        """The entity of a validated ``users``/``teams``/``orgs`` entry."""
        if model is None:
            return cls(name=name)
        return cls(
            name=name,
            budget=BudgetSpec.of(model),
            model_budgets=_model_budgets(model.model_budgets),
            models=parse_models(model.models, where),
            team=getattr(model, "team", None),
            org=getattr(model, "org", None),
            limits=_limits_of(model, where),
        )


@dataclass(frozen=True, slots=True)
class Deployment:
    """One upstream that serves a public model name: an OpenAI-compatible endpoint
    (``api="openai"``) or Anthropic's Messages API (``api="anthropic"``, from a LiteLLM
    ``model: anthropic/<model>``)."""

    id: str
    model_name: str
    upstream_model: str
    api_base: str
    api_key: str | None = field(repr=False)
    price: ModelPrice
    weight: float = 1.0
    rpm: int | None = None
    timeout: float = 600.0
    budget: BudgetSpec | None = None
    max_output_tokens: int = DEFAULT_OUTPUT_TOKENS
    max_tokens_param: str = "max_tokens"
    headers: Mapping[str, str] = field(default_factory=dict)
    api: str = "openai"
    #: The deployment's own rate limits (its ``tpm``), enforced like its ``budget``.
    limits: RateLimits = field(default_factory=RateLimits)

    @property
    def scope(self) -> str:
        return scope_key("gw-deployment", self.id)

    @property
    def chat_url(self) -> str:
        return f"{self.api_base}/chat/completions"

    @property
    def embeddings_url(self) -> str:
        return f"{self.api_base}/embeddings"

    def serves(self, api: str) -> bool:
        """Whether a request of ``api`` can be sent here (translated if need be)."""
        if self.api == "anthropic":
            return api in ("messages", "chat")
        return True

    def native(self, api: str) -> str:
        """The API the upstream is called with for a request of ``api``."""
        if self.api == "anthropic":
            return "messages"
        return "chat" if api == "messages" else api

    def url(self, api: str) -> str:
        """The upstream URL for a request of ``api`` (see :meth:`native`)."""
        if self.api == "anthropic":
            return f"{self.api_base}/v1/messages"
        path = {"chat": "/chat/completions", "responses": "/responses",
                "completions": "/completions", "embeddings": "/embeddings"}  # fmt: skip
        return self.api_base + path[self.native(api)]

    def upstream_headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json", **self.headers}
        if self.api == "anthropic":
            headers.setdefault("anthropic-version", ANTHROPIC_VERSION)
            if self.api_key:
                headers["x-api-key"] = self.api_key
        elif self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        return headers


@dataclass(frozen=True, slots=True)
class RouterSettings:
    """How a model name's deployments share traffic and recover from failures."""

    strategy: str = "simple-shuffle"
    num_retries: int = 2
    fallbacks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: Cheaper models to serve instead when a budget cannot pay for the one asked for.
    budget_fallbacks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    allowed_fails: int = 3
    cooldown_time: float = 30.0
    retry_statuses: frozenset[int] = _RETRY_STATUSES


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Everything the gateway needs; build with :meth:`from_mapping` or :func:`load_gateway_config`."""

    deployments: tuple[Deployment, ...]
    router: RouterSettings = RouterSettings()
    master_key: str | None = field(default=None, repr=False)
    store: str | None = None
    global_budget: BudgetSpec | None = None
    model_budgets: Mapping[str, BudgetSpec] = field(default_factory=dict)
    end_user_budget: BudgetSpec | None = None
    end_users: Mapping[str, BudgetSpec] = field(default_factory=dict)
    #: Rate limits of ``budgets.models.<M>``, ``budgets.end_user`` and ``end_users.<E>``.
    model_limits: Mapping[str, RateLimits] = field(default_factory=dict)
    end_user_limits: RateLimits = field(default_factory=RateLimits)
    end_users_limits: Mapping[str, RateLimits] = field(default_factory=dict)
    users: Mapping[str, Entity] = field(default_factory=dict)
    teams: Mapping[str, Entity] = field(default_factory=dict)
    orgs: Mapping[str, Entity] = field(default_factory=dict)
    keys: tuple[Mapping[str, Any], ...] = field(default=(), repr=False)
    key_cache_ttl: float = 10.0
    hold_ttl: float = 3600.0
    cap_max_tokens: bool = True
    min_completion_tokens: int = 16
    max_body_bytes: int = 16 * 1024 * 1024
    log_refusals: bool = True
    upstream_client: str = "aiohttp"
    store_calls: str = "thread"
    #: TLS to upstreams: verify certificates (against this CA bundle, else the system's),
    #: and present this client certificate (mutual TLS).
    ssl_verify: bool = True
    ssl_ca_bundle: str | None = None
    ssl_client_cert: str | None = None
    ssl_client_key: str | None = None

    def models(self) -> list[str]:
        """Public model names, in config order, without repeats."""
        return list(dict.fromkeys(d.model_name for d in self.deployments))

    def replace(self, **changes: Any) -> GatewayConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_mapping(
        cls, raw: Mapping[str, Any], *, prices: PriceBook | None = None
    ) -> GatewayConfig:
        """Validate a parsed YAML/JSON document (see the module docstring for the layout).
        Any problem, a misspelt key included, raises :class:`InvalidInputError` naming
        its path."""
        file = parse(GatewayFile, dict(raw) if isinstance(raw, Mapping) else raw)
        book = prices or PriceBook.default()
        deployments = tuple(
            _deployment(entry, i, book) for i, entry in enumerate(file.model_list or [])
        )
        ids = [d.id for d in deployments]
        if len(set(ids)) != len(ids):
            raise InvalidInputError("two deployments share one id (model_info.id)")

        general = file.general_settings or GeneralSettings()
        master = resolve_secret(general.master_key, "general_settings.master_key")
        budgets = file.budgets or BudgetsModel()
        resolved_keys = []
        for i, entry in enumerate(file.keys or []):
            item = entry.model_dump(exclude_unset=True)
            item["key"] = resolve_secret(entry.key, f"keys[{i}].key")
            if not item["key"]:
                raise InvalidInputError(f"keys[{i}] needs a key (the secret, or os.environ/NAME)")
            resolved_keys.append(item)

        config = cls(
            deployments=deployments,
            router=_router(file.router_settings or RouterModel()),
            master_key=master or os.environ.get("LLMBUDGET_ADMIN_KEY") or None,
            store=general.store or file.store,
            global_budget=BudgetSpec.of(budgets.global_),
            model_budgets=_model_budgets(budgets.models),
            end_user_budget=BudgetSpec.of(budgets.end_user),
            end_users={
                name: spec
                for name, model in (file.end_users or {}).items()
                if (spec := BudgetSpec.of(model)) is not None
            },
            model_limits=_limits_table(budgets.models, "budgets.models"),
            end_user_limits=_limits_of(budgets.end_user, "budgets.end_user"),
            end_users_limits=_limits_table(file.end_users, "end_users"),
            users=_entities(file.users, "users"),
            teams=_entities(file.teams, "teams"),
            orgs=_entities(file.orgs, "orgs"),
            keys=tuple(resolved_keys),
            key_cache_ttl=float(general.key_cache_ttl),
            hold_ttl=float(general.hold_ttl),
            cap_max_tokens=general.cap_max_tokens,
            min_completion_tokens=general.min_completion_tokens,
            max_body_bytes=general.max_body_bytes,
            log_refusals=general.log_refusals,
            upstream_client=general.upstream_client,
            store_calls=general.store_calls,
            ssl_verify=general.ssl_verify,
            ssl_ca_bundle=general.ssl_ca_bundle,
            ssl_client_cert=general.ssl_client_cert,
            ssl_client_key=general.ssl_client_key,
        )
        config._check_references()
        return config

    def _check_references(self) -> None:
        names = set(self.models())
        # A model budget under a name no deployment serves caps nothing: a misspelt model
        # name ("gpt-4oo") would leave the real model uncapped.
        capped: list[tuple[str, str]] = [
            (f"budgets.models.{m}", m) for m in {**self.model_budgets, **self.model_limits}
        ]
        for kind, table in (("users", self.users), ("teams", self.teams), ("orgs", self.orgs)):
            for name, entity in table.items():
                capped += [(f"{kind}.{name}.model_budgets.{m}", m) for m in entity.model_budgets]
        for i, key in enumerate(self.keys):
            if isinstance(key.get("model_budgets"), Mapping):
                capped += [(f"keys[{i}].model_budgets.{m}", str(m)) for m in key["model_budgets"]]
        for where, model in capped:
            if model not in names:
                close = difflib.get_close_matches(model, sorted(names), n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise InvalidInputError(
                    f"{where}: no deployment serves a model named {model!r}{hint}"
                )
        for setting in ("fallbacks", "budget_fallbacks"):
            for model, targets in getattr(self.router, setting).items():
                for target in (model, *targets):
                    if target not in names:
                        raise InvalidInputError(
                            f"router_settings.{setting} names {target!r}, which no "
                            "deployment serves"
                        )
        for i, key in enumerate(self.keys):
            # A key's user need not have a budget of its own, but in a file that lists users
            # a misspelt one would silently drop that user's cap. Its team and org, like a
            # user's, must always be listed.
            refs = [("team", self.teams), ("org", self.orgs)]
            if self.users:
                refs.append(("user", self.users))
            for label, known in refs:
                ref = key.get(label)
                if ref is not None and ref not in known:
                    raise InvalidInputError(
                        f"keys[{i}].{label} is {ref!r}, which is not listed under {label}s "
                        f"(add it, even as {{}}, if it has no budget)"
                    )
        for kind, table, parents in (
            ("users", self.users, (("team", self.teams), ("org", self.orgs))),
            ("teams", self.teams, (("org", self.orgs),)),
        ):
            for name, entity in table.items():
                for label, known in parents:
                    ref = getattr(entity, label)
                    if ref is not None and ref not in known:
                        # A reference to an unlisted team/org is allowed (it just has no
                        # budget), but a typo would silently drop a cap: say so loudly.
                        raise InvalidInputError(
                            f"{kind}.{name}.{label} is {ref!r}, which is not listed under "
                            f"{label}s (add it, even as {{}}, if it has no budget)"
                        )


def load_gateway_config(
    source: str | Path | Mapping[str, Any] | GatewayConfig, *, prices: PriceBook | None = None
) -> GatewayConfig:
    """A :class:`GatewayConfig` from a YAML/JSON file path, a mapping, or one already built.

    >>> load_gateway_config({"model_list": []}).deployments
    ()
    """
    if isinstance(source, GatewayConfig):
        return source
    if isinstance(source, Mapping):
        return GatewayConfig.from_mapping(source, prices=prices)
    path = Path(source)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InvalidInputError(f"{path}: not valid YAML: {exc}") from None
    try:
        return GatewayConfig.from_mapping(data or {}, prices=prices)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{path}: {exc}") from None


# --------------------------------------------------------------------------- internals


def _model_budgets(raw: Mapping[str, BudgetModel | None] | None) -> dict[str, BudgetSpec]:
    out: dict[str, BudgetSpec] = {}
    for model, value in (raw or {}).items():
        spec = BudgetSpec.of(value)
        if spec is not None:
            out[model] = spec
    return out


def _limits_of(model: RateLimitFields | None, where: str) -> RateLimits:
    """The rate limits of a validated config entry (none set: an empty :class:`RateLimits`)."""
    if model is None:
        return RateLimits()
    return RateLimits.parse(model.model_dump(include=set(RATE_LIMIT_FIELDS)), where)


def _limits_table(
    table: Mapping[str, RateLimitFields | None] | None, where: str
) -> dict[str, RateLimits]:
    """The entries of ``table`` that set a rate limit, by name."""
    out: dict[str, RateLimits] = {}
    for name, model in (table or {}).items():
        limits = _limits_of(model, f"{where}.{name}")
        if limits:
            out[name] = limits
    return out


def _entities(table: Mapping[str, EntityModel | None] | None, where: str) -> dict[str, Entity]:
    return {
        name: Entity.of(name, value, f"{where}.{name}") for name, value in (table or {}).items()
    }


def _router(raw: RouterModel) -> RouterSettings:
    strategy = raw.routing_strategy or "simple-shuffle"
    strategy = _STRATEGY_ALIASES.get(strategy, strategy)
    if strategy not in STRATEGIES:
        raise InvalidInputError(
            f"router_settings.routing_strategy {strategy!r} is not one of {', '.join(STRATEGIES)}"
        )
    statuses = raw.retry_statuses
    return RouterSettings(
        strategy=strategy,
        num_retries=raw.num_retries,
        fallbacks=_fallbacks(raw.fallbacks),
        budget_fallbacks=_fallbacks(raw.budget_fallbacks),
        allowed_fails=raw.allowed_fails,
        cooldown_time=float(raw.cooldown_time),
        retry_statuses=_RETRY_STATUSES if statuses is None else frozenset(statuses),
    )


def _fallbacks(raw: object) -> dict[str, tuple[str, ...]]:
    """LiteLLM's list of one-key mappings (a plain mapping is accepted too)."""
    out: dict[str, tuple[str, ...]] = {}
    items = raw if isinstance(raw, list) else [raw or {}]
    for item in items:
        assert isinstance(item, Mapping)  # the schema's shape
        for model, targets in item.items():
            out[model] = (targets,) if isinstance(targets, str) else tuple(targets)
    return out


def _deployment(entry: DeploymentModel, index: int, book: PriceBook) -> Deployment:
    where = f"model_list[{index}]"
    params = entry.params()
    model_name = entry.model_name
    model: str = params.get("model") or model_name
    upstream = model
    api = "anthropic" if model.startswith("anthropic/") else "openai"
    for prefix in (*_PROTOCOL_PREFIXES, "anthropic/"):
        if upstream.startswith(prefix):
            upstream = upstream[len(prefix) :]
            break
    if api == "anthropic":
        # Anthropic's base URL has no /v1 (the SDK's convention); LiteLLM users may add one.
        api_base = str(params.get("api_base") or "https://api.anthropic.com").rstrip("/")
        api_base = api_base.removesuffix("/v1")
    else:
        api_base = str(params.get("api_base") or "https://api.openai.com/v1").rstrip("/")
    headers_raw: Mapping[str, object] = params.get("headers") or {}
    api_key = resolve_secret(params.get("api_key"), f"{where}.api_key")
    if api_key is None and params.get("api_key_env"):
        name = str(params["api_key_env"])
        api_key = os.environ.get(name)
        if not api_key:
            raise InvalidInputError(f"{where}.api_key_env: environment variable {name} is not set")
    if api_key is not None:
        api_key = api_key.strip()  # a secret file or env var often ends with a newline
    for label, value in (
        ("api_key", api_key or ""),
        *((f"headers.{k}", str(v)) for k, v in headers_raw.items()),
    ):
        if "\r" in value or "\n" in value:
            raise InvalidInputError(f"{where}.{label} must not contain line breaks")
    price = _price(params, model, upstream, book, where)
    max_out = params.get("max_output_tokens")
    if max_out is None:
        # Never the context window: that is input + output, not what a model may generate.
        max_out = price.max_output_tokens or DEFAULT_OUTPUT_TOKENS
    param_name = params.get("max_tokens_param") or (
        "max_completion_tokens"
        if upstream.lower().startswith(_COMPLETION_TOKENS_MODELS)
        else "max_tokens"
    )
    info_id = entry.model_info.id if entry.model_info is not None else None
    budget = params.get("budget")
    return Deployment(
        id=str(info_id or params.get("id") or f"{model_name}-{index}"),
        model_name=model_name,
        upstream_model=upstream,
        api_base=api_base,
        api_key=api_key,
        price=price,
        weight=float(params.get("weight", 1)),
        rpm=params.get("rpm"),
        timeout=float(params.get("timeout", 600.0)),
        budget=None
        if budget is None
        else BudgetSpec(
            budget, Period.parse(params.get("period"), timezone=params.get("timezone"))
        ),
        max_output_tokens=int(max_out),
        max_tokens_param=str(param_name),
        headers={str(k): str(v) for k, v in headers_raw.items()},
        api=api,
        limits=RateLimits(tpm_limit=params.get("tpm")),
    )


def _price(
    params: Mapping[str, Any], model: str, upstream: str, book: PriceBook, where: str
) -> ModelPrice:
    # Validated (exact Decimals) by the schema.
    inp, out = params.get("input_cost_per_token"), params.get("output_cost_per_token")
    if inp is not None or out is not None:
        per_m = Decimal(1_000_000)
        return ModelPrice(
            model=upstream,
            provider="custom",
            input_per_mtok=None if inp is None else inp * per_m,
            output_per_mtok=None if out is None else out * per_m,
            source="gateway-config",
        )
    last: LLMBudgetError | None = None
    for name in dict.fromkeys((model, upstream)):
        try:
            return book.lookup(name)
        except LLMBudgetError as exc:
            last = exc
    raise InvalidInputError(
        f"{where}: no price for {model!r} ({last}); set input_cost_per_token and "
        "output_cost_per_token, since the gateway cannot enforce budgets on an unpriced model"
    )
