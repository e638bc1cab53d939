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
          budget: 200                 # the provider account's own cap (dollars) ...
          period: monthly             # ... per calendar month
          input_cost_per_token: 0.0000025   # override prices (else genai-prices' data)
          output_cost_per_token: 0.00001
        model_info: {id: openai-main}
    router_settings:
      routing_strategy: simple-shuffle    # | weighted-round-robin | least-busy
      num_retries: 2                       # other deployments tried on 429/5xx/timeout
      fallbacks: [{gpt-4o: [gpt-4o-mini]}]
      allowed_fails: 3                     # failures within cooldown_time before a cooldown
      cooldown_time: 30
    general_settings:
      master_key: os.environ/LLMBUDGET_ADMIN_KEY
      store: sqlite:///gateway.db
    budgets:
      global: {budget: 1000, period: monthly}
      end_user: {budget: 1, period: daily}         # every OpenAI ``user`` value
      models: {gpt-4o: {budget: 300, period: monthly}}
    users: {alice: {budget: 20, period: monthly, team: ml}}
    teams: {ml: {budget: 200, period: monthly, org: acme, models: [gpt-4o, gpt-4o-mini]}}
    orgs:  {acme: {budget: 1000, period: monthly}}
    keys:                              # optional static keys (API-created keys live in the store)
      - {id: ci, key: os.environ/CI_GATEWAY_KEY, user: ci-bot, budget: 5, period: daily}

A budget is written ``budget`` (or LiteLLM's ``max_budget``) in dollars with ``period``
(or ``budget_duration``; absent: lifetime), optional ``timezone`` and ``rolling``.
``model_budgets: {gpt-4o: {budget: 5, period: daily}}`` caps one model's spend on a key,
user, team or org. Anything malformed raises :class:`~llmbudget.errors.InvalidInputError`
at load time, naming where: a gateway never starts with a budget it would misread.

>>> cfg = GatewayConfig.from_mapping({"model_list": [{"model_name": "m", "model": "gpt-4o-mini",
...     "api_base": "http://127.0.0.1:9/v1"}]})
>>> cfg.deployments[0].upstream_model, cfg.models()
('gpt-4o-mini', ['m'])
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from llmbudget.budgets import Budget, scope_key
from llmbudget.errors import InvalidInputError, LLMBudgetError
from llmbudget.metering.policy import DEFAULT_OUTPUT_CAP as SAFE_OUTPUT_CAP
from llmbudget.money import from_units, to_money, to_units
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
        bare number (lifetime); ``None``/absent budget means no cap."""
        if raw is None:
            return None
        if not isinstance(raw, Mapping):
            raw = {"budget": raw}
        amount = _first(raw, "budget", "max_budget", "limit")
        if amount is None:
            return None
        try:
            # YAML gives floats for 0.01; to_units goes through their shortest repr, exactly.
            limit = from_units(to_units(amount, what=f"{where} budget"))
            period = Period.parse(
                _first(raw, "period", "budget_duration", "duration"),
                timezone=_opt_str(raw.get("timezone"), f"{where}.timezone"),
                rolling=None if raw.get("rolling") is None else bool(raw.get("rolling")),
            )
        except LLMBudgetError as exc:
            raise InvalidInputError(f"{where}: {exc}") from None
        return cls(limit, period)

    def budget(self, scope: str, created_at: float = 0.0) -> Budget:
        return Budget(scope, self.limit, self.period, created_at)

    def describe(self) -> str:
        return f"${self.limit} {self.period.describe() or 'lifetime'}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget": str(self.limit),
            "period": self.period.describe(),
            "timezone": self.period.timezone,
            "rolling": self.period.rolling,
        }


def _opt_str(value: object, where: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InvalidInputError(f"{where} must be a string")
    return value


def _first(raw: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if raw.get(name) is not None:
            return raw[name]
    return None


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

    @classmethod
    def parse(cls, name: str, raw: object, where: str) -> Entity:
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise InvalidInputError(f"{where} must be a mapping")
        team, org = raw.get("team"), raw.get("org")
        for label, value in (("team", team), ("org", org)):
            if value is not None and not isinstance(value, str):
                raise InvalidInputError(f"{where}.{label} must be a string")
        return cls(
            name=name,
            budget=BudgetSpec.parse(raw, where),
            model_budgets=parse_model_budgets(raw.get("model_budgets"), where),
            models=parse_models(raw.get("models"), where),
            team=team,
            org=org,
        )


@dataclass(frozen=True, slots=True)
class Deployment:
    """One upstream that serves a public model name (an OpenAI-compatible endpoint)."""

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

    @property
    def scope(self) -> str:
        return scope_key("gw-deployment", self.id)

    @property
    def chat_url(self) -> str:
        return f"{self.api_base}/chat/completions"

    @property
    def embeddings_url(self) -> str:
        return f"{self.api_base}/embeddings"

    def upstream_headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json", **self.headers}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        return headers


@dataclass(frozen=True, slots=True)
class RouterSettings:
    """How a model name's deployments share traffic and recover from failures."""

    strategy: str = "simple-shuffle"
    num_retries: int = 2
    fallbacks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
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
    upstream_client: str = "fast"
    store_calls: str = "thread"

    def models(self) -> list[str]:
        """Public model names, in config order, without repeats."""
        return list(dict.fromkeys(d.model_name for d in self.deployments))

    def replace(self, **changes: Any) -> GatewayConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_mapping(
        cls, raw: Mapping[str, Any], *, prices: PriceBook | None = None
    ) -> GatewayConfig:
        """Validate a parsed YAML/JSON document (see the module docstring for the layout)."""
        if not isinstance(raw, Mapping):
            raise InvalidInputError("the gateway config must be a mapping")
        book = prices or PriceBook.default()
        model_list = raw.get("model_list") or []
        if not isinstance(model_list, list):
            raise InvalidInputError("model_list must be a list of deployments")
        deployments = tuple(_deployment(entry, i, book) for i, entry in enumerate(model_list))
        ids = [d.id for d in deployments]
        if len(set(ids)) != len(ids):
            raise InvalidInputError("two deployments share one id (model_info.id)")

        general = _mapping(raw.get("general_settings"), "general_settings")
        master = resolve_secret(general.get("master_key"), "general_settings.master_key")
        budgets = _mapping(raw.get("budgets"), "budgets")
        users = _entities(raw.get("users"), "users")
        teams = _entities(raw.get("teams"), "teams")
        orgs = _entities(raw.get("orgs"), "orgs")
        end_users_raw = _mapping(raw.get("end_users"), "end_users")
        end_users = {
            str(name): spec
            for name, value in end_users_raw.items()
            if (spec := BudgetSpec.parse(value, f"end_users.{name}")) is not None
        }
        keys = raw.get("keys") or []
        if not isinstance(keys, list) or not all(isinstance(k, Mapping) for k in keys):
            raise InvalidInputError("keys must be a list of mappings")
        resolved_keys = []
        for i, entry in enumerate(keys):
            item = dict(entry)
            item["key"] = resolve_secret(item.get("key"), f"keys[{i}].key")
            if not item["key"]:
                raise InvalidInputError(f"keys[{i}] needs a key (the secret, or os.environ/NAME)")
            resolved_keys.append(item)

        config = cls(
            deployments=deployments,
            router=_router(_mapping(raw.get("router_settings"), "router_settings")),
            master_key=master or os.environ.get("LLMBUDGET_ADMIN_KEY") or None,
            store=general.get("store") or raw.get("store"),
            global_budget=BudgetSpec.parse(budgets.get("global"), "budgets.global"),
            model_budgets=parse_model_budgets(budgets.get("models"), "budgets"),
            end_user_budget=BudgetSpec.parse(budgets.get("end_user"), "budgets.end_user"),
            end_users=end_users,
            users=users,
            teams=teams,
            orgs=orgs,
            keys=tuple(resolved_keys),
            key_cache_ttl=_number(general, "key_cache_ttl", 10.0, minimum=0.0),
            hold_ttl=_number(general, "hold_ttl", 3600.0, minimum=1.0),
            cap_max_tokens=bool(general.get("cap_max_tokens", True)),
            min_completion_tokens=int(_number(general, "min_completion_tokens", 16, minimum=1)),
            max_body_bytes=int(_number(general, "max_body_bytes", 16 * 1024 * 1024, minimum=1)),
            log_refusals=bool(general.get("log_refusals", True)),
            upstream_client=_choice(general, "upstream_client", ("fast", "httpx"), "fast"),
            store_calls=_choice(general, "store_calls", ("thread", "inline"), "thread"),
        )
        config._check_references()
        return config

    def _check_references(self) -> None:
        names = set(self.models())
        for model, targets in self.router.fallbacks.items():
            for target in (model, *targets):
                if target not in names:
                    raise InvalidInputError(
                        f"router_settings.fallbacks names {target!r}, which no deployment serves"
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
    return GatewayConfig.from_mapping(data or {}, prices=prices)


# --------------------------------------------------------------------------- internals


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInputError(f"{where} must be a mapping")
    return value


def _number(raw: Mapping[str, Any], name: str, default: float, *, minimum: float) -> float:
    value = raw.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise InvalidInputError(f"{name} must be a number >= {minimum}, got {value!r}")
    return float(value)


def _choice(raw: Mapping[str, Any], name: str, options: tuple[str, ...], default: str) -> str:
    value = raw.get(name, default)
    if value not in options:
        raise InvalidInputError(f"general_settings.{name} must be one of {', '.join(options)}")
    return str(value)


def _entities(raw: object, where: str) -> dict[str, Entity]:
    table = _mapping(raw, where)
    return {
        str(name): Entity.parse(str(name), value, f"{where}.{name}")
        for name, value in table.items()
    }


def _router(raw: Mapping[str, Any]) -> RouterSettings:
    strategy = str(raw.get("routing_strategy") or raw.get("strategy") or "simple-shuffle")
    strategy = _STRATEGY_ALIASES.get(strategy, strategy)
    if strategy not in STRATEGIES:
        raise InvalidInputError(
            f"router_settings.routing_strategy {strategy!r} is not one of {', '.join(STRATEGIES)}"
        )
    fallbacks: dict[str, tuple[str, ...]] = {}
    raw_fallbacks = raw.get("fallbacks") or []
    # LiteLLM writes a list of one-key mappings; a plain mapping is accepted too.
    items = raw_fallbacks if isinstance(raw_fallbacks, list) else [raw_fallbacks]
    for item in items:
        if not isinstance(item, Mapping):
            raise InvalidInputError("router_settings.fallbacks must be [{model: [fallback, ...]}]")
        for model, raw_targets in item.items():
            targets = [raw_targets] if isinstance(raw_targets, str) else raw_targets
            if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
                raise InvalidInputError(f"router_settings.fallbacks.{model} must be a list")
            fallbacks[str(model)] = tuple(targets)
    statuses = raw.get("retry_statuses")
    return RouterSettings(
        strategy=strategy,
        num_retries=int(_number(raw, "num_retries", 2, minimum=0)),
        fallbacks=fallbacks,
        allowed_fails=int(_number(raw, "allowed_fails", 3, minimum=1)),
        cooldown_time=_number(raw, "cooldown_time", 30.0, minimum=0.0),
        retry_statuses=(
            frozenset(int(s) for s in statuses) if isinstance(statuses, list) else _RETRY_STATUSES
        ),
    )


def _deployment(entry: object, index: int, book: PriceBook) -> Deployment:
    where = f"model_list[{index}]"
    if not isinstance(entry, Mapping):
        raise InvalidInputError(f"{where} must be a mapping")
    params = {**entry, **_mapping(entry.get("litellm_params"), f"{where}.litellm_params")}
    info = _mapping(entry.get("model_info"), f"{where}.model_info")
    model_name = entry.get("model_name")
    if not isinstance(model_name, str) or not model_name:
        raise InvalidInputError(f"{where}.model_name is required")
    model = params.get("model") or model_name
    if not isinstance(model, str):
        raise InvalidInputError(f"{where}.model must be a string")
    upstream = model
    for prefix in _PROTOCOL_PREFIXES:
        if upstream.startswith(prefix):
            upstream = upstream[len(prefix) :]
            break
    api_base = str(params.get("api_base") or "https://api.openai.com/v1").rstrip("/")
    if not api_base.startswith(("http://", "https://")):
        raise InvalidInputError(f"{where}.api_base must be an http(s) URL")
    headers_raw = _mapping(params.get("extra_headers") or params.get("headers"), f"{where}.headers")
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
    max_out = params.get("max_output_tokens") or params.get("max_tokens")
    if max_out is None:
        # Never the context window: that is input + output, not what a model may generate.
        max_out = price.max_output_tokens or DEFAULT_OUTPUT_TOKENS
    weight = params.get("weight", 1)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or weight <= 0:
        raise InvalidInputError(f"{where}.weight must be a positive number")
    rpm = params.get("rpm")
    if rpm is not None and (isinstance(rpm, bool) or not isinstance(rpm, int) or rpm < 1):
        raise InvalidInputError(f"{where}.rpm must be a positive integer")
    param_name = params.get("max_tokens_param") or (
        "max_completion_tokens"
        if upstream.lower().startswith(_COMPLETION_TOKENS_MODELS)
        else "max_tokens"
    )
    return Deployment(
        id=str(info.get("id") or params.get("id") or f"{model_name}-{index}"),
        model_name=model_name,
        upstream_model=upstream,
        api_base=api_base,
        api_key=api_key,
        price=price,
        weight=float(weight),
        rpm=rpm,
        timeout=_number(params, "timeout", 600.0, minimum=0.001),
        budget=BudgetSpec.parse(
            {
                "budget": _first(params, "budget", "max_budget"),
                "period": _first(params, "period", "budget_duration"),
                "timezone": params.get("timezone"),
            },
            where,
        ),
        max_output_tokens=int(max_out),
        max_tokens_param=str(param_name),
        headers={str(k): str(v) for k, v in headers_raw.items()},
    )


def _price(
    params: Mapping[str, Any], model: str, upstream: str, book: PriceBook, where: str
) -> ModelPrice:
    inp, out = params.get("input_cost_per_token"), params.get("output_cost_per_token")
    if inp is not None or out is not None:
        try:
            per_m = Decimal(1_000_000)
            return ModelPrice(
                model=upstream,
                provider="custom",
                input_per_mtok=None if inp is None else to_money(inp) * per_m,
                output_per_mtok=None if out is None else to_money(out) * per_m,
                source="gateway-config",
            )
        except LLMBudgetError as exc:
            raise InvalidInputError(f"{where}: {exc}") from None
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
