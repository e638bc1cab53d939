"""The gateway config file's layout, as strict pydantic models (see :mod:`.config`).

Every mapping refuses unknown keys with their path and a "did you mean"
(:class:`~llmbudget.config_models.StrictModel`), so ``budgett: 500`` or ``wieght: 2`` is an
error at load time instead of a budget silently uncapped. LiteLLM's names are accepted
as aliases (``max_budget`` for ``budget``, ``budget_duration`` for ``period``,
``max_tokens`` for ``max_output_tokens``, ``extra_headers`` for ``headers``,
``strategy`` for ``routing_strategy``). Values are checked here, where the error can name
its path; :mod:`.config` then builds the gateway's dataclasses from them.

>>> from llmbudget.config_models import parse
>>> parse(GatewayFile, {"budgets": {"global": {"budget": 5}}}).budgets.global_.budget
Decimal('5')
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    model_validator,
)

from llmbudget.config_models import StrictModel
from llmbudget.money import from_units, to_money, to_units
from llmbudget.periods import Period
from llmbudget.validation import MAX_TTL

__all__ = [
    "BudgetModel",
    "BudgetsModel",
    "DeploymentModel",
    "DeploymentParams",
    "EntityModel",
    "GatewayFile",
    "GeneralSettings",
    "LimitedBudgetModel",
    "LooseBudgetModel",
    "RateLimitFields",
    "RouterModel",
    "StaticKeyModel",
]


def _limit(value: object) -> Decimal | None:
    # YAML gives floats for 0.01; to_units goes through their shortest repr, exactly (and
    # refuses bools, NaN, negatives and sub-nano amounts).
    return None if value is None else from_units(to_units(value, what="budget"))


def _price(value: object) -> Decimal | None:
    return None if value is None else to_money(value, what="price")


def _http_url(value: str | None) -> str | None:
    if value is not None and not value.startswith(("http://", "https://")):
        raise ValueError("must be an http(s) URL")
    return value


Money = Annotated[Any, AfterValidator(_limit)]
Price = Annotated[Any, AfterValidator(_price)]
Number = Annotated[StrictInt | StrictFloat, Field(allow_inf_nan=False)]
Name = Annotated[StrictStr, Field(min_length=1)]


def _alias(*names: str) -> Any:
    return Field(None, validation_alias=AliasChoices(*names))


class BudgetFields(StrictModel):
    """A budget written inline: ``budget`` dollars per ``period`` (absent: lifetime).

    In a config file a period without an amount is refused (it caps nothing, and is
    most likely a misspelt amount); :class:`LooseBudgetModel` allows it (the admin API
    removes a key's cap with ``budget: null``, its period left as it was).
    """

    require_amount: ClassVar[bool] = True

    budget: Money = _alias("budget", "max_budget", "limit")
    period: StrictStr | None = _alias("period", "budget_duration", "duration")
    timezone: StrictStr | None = None
    rolling: StrictBool | None = None

    @model_validator(mode="after")
    def _period(self) -> BudgetFields:
        extra = [
            name
            for name in ("period", "timezone", "rolling")
            if getattr(self, name) is not None and name in self.model_fields_set
        ]
        if self.budget is None:
            if extra and self.require_amount:
                # A period without an amount caps nothing: probably a misspelt budget.
                raise ValueError(f"{', '.join(extra)} given without a budget (dollars)")
            return self
        self.to_period()  # refuses an unknown period or timezone, with this path
        return self

    def to_period(self) -> Period:
        return Period.parse(self.period, timezone=self.timezone, rolling=self.rolling)


class BudgetModel(BudgetFields):
    """A budget on its own: a mapping, or a bare number of dollars (a lifetime budget)."""

    @model_validator(mode="before")
    @classmethod
    def _bare(cls, data: Any) -> Any:
        if data is None or isinstance(data, dict):
            return data
        return {"budget": data}


class LooseBudgetModel(BudgetModel):
    require_amount: ClassVar[bool] = False


ModelBudgets = dict[Name, BudgetModel | None]


Limit = Annotated[StrictInt, Field(ge=1)] | None


class RateLimitFields(StrictModel):
    """Rate limits under LiteLLM's names (see :mod:`.rate_limits`)."""

    rpm_limit: Limit = None
    tpm_limit: Limit = None
    tpd_limit: Limit = None
    max_parallel_requests: Limit = None


class LimitedBudgetModel(BudgetModel, RateLimitFields):
    """A budget with rate limits: an end user's (``end_users.<E>``, ``budgets.end_user``)
    or a model's (``budgets.models.<M>``). Either may be given alone."""


class EntityModel(BudgetFields, RateLimitFields):
    """An org: its budget, per-model budgets, allowed models and rate limits."""

    model_budgets: ModelBudgets | None = None
    models: list[StrictStr] | None = None


class TeamModel(EntityModel):
    org: StrictStr | None = None


class UserModel(EntityModel):
    team: StrictStr | None = None
    org: StrictStr | None = None


class DeploymentParams(StrictModel):
    """What LiteLLM puts under ``litellm_params`` (it may also sit at the top level)."""

    model: Name | None = None
    api_base: Annotated[StrictStr | None, AfterValidator(_http_url)] = None
    api_key: StrictStr | None = None
    api_key_env: Name | None = None
    headers: dict[StrictStr, StrictStr | StrictInt | StrictFloat] | None = _alias(
        "headers", "extra_headers"
    )
    weight: Annotated[Number, Field(gt=0)] | None = None
    rpm: Annotated[StrictInt, Field(ge=1)] | None = None
    tpm: Annotated[StrictInt, Field(ge=1)] | None = None
    budget: Money = _alias("budget", "max_budget")
    period: StrictStr | None = _alias("period", "budget_duration")
    timezone: StrictStr | None = None
    input_cost_per_token: Price = None
    output_cost_per_token: Price = None
    max_output_tokens: Annotated[StrictInt, Field(ge=1)] | None = _alias(
        "max_output_tokens", "max_tokens"
    )
    max_tokens_param: Literal["max_tokens", "max_completion_tokens"] | None = None
    timeout: Annotated[Number, Field(ge=0.001)] | None = None
    id: Name | None = None


class ModelInfo(StrictModel):
    id: Name | StrictInt | None = None


class DeploymentModel(DeploymentParams):
    """One entry of ``model_list``."""

    model_name: Name
    litellm_params: DeploymentParams | None = None
    model_info: ModelInfo | None = None

    @model_validator(mode="after")
    def _budget(self) -> DeploymentModel:
        params = self.params()
        if "budget" in params:
            Period.parse(params.get("period"), timezone=params.get("timezone"))
        elif "period" in params or "timezone" in params:
            raise ValueError("period given without a budget (dollars)")
        return self

    def params(self) -> dict[str, Any]:
        """Top-level params overridden by ``litellm_params`` (LiteLLM's nesting)."""
        fields = set(DeploymentParams.model_fields)
        merged = {name: getattr(self, name) for name in self.model_fields_set & fields}
        if self.litellm_params is not None:
            nested = self.litellm_params
            merged.update({name: getattr(nested, name) for name in nested.model_fields_set})
        return {name: value for name, value in merged.items() if value is not None}


Fallbacks = dict[Name, list[StrictStr] | StrictStr]


class RouterModel(StrictModel):
    routing_strategy: StrictStr | None = _alias("routing_strategy", "strategy")
    num_retries: Annotated[StrictInt, Field(ge=0)] = 2
    fallbacks: list[Fallbacks] | Fallbacks | None = None
    budget_fallbacks: list[Fallbacks] | Fallbacks | None = None
    allowed_fails: Annotated[StrictInt, Field(ge=1)] = 3
    cooldown_time: Annotated[Number, Field(ge=0)] = 30.0
    retry_statuses: list[Annotated[StrictInt, Field(ge=100, le=599)]] | None = None


class GeneralSettings(StrictModel):
    master_key: StrictStr | None = None
    store: StrictStr | None = None
    key_cache_ttl: Annotated[Number, Field(ge=0)] = 10.0
    hold_ttl: Annotated[Number, Field(ge=1, le=MAX_TTL)] = 3600.0
    cap_max_tokens: StrictBool = True
    min_completion_tokens: Annotated[StrictInt, Field(ge=1)] = 16
    max_body_bytes: Annotated[StrictInt, Field(ge=1)] = 16 * 1024 * 1024
    log_refusals: StrictBool = True
    upstream_client: Literal["aiohttp", "httpx"] = "aiohttp"
    store_calls: Literal["thread", "inline"] = "thread"
    ssl_verify: StrictBool = True
    ssl_ca_bundle: StrictStr | None = None
    ssl_client_cert: StrictStr | None = None
    ssl_client_key: StrictStr | None = None


class BudgetsModel(StrictModel):
    global_: BudgetModel | None = _alias("global")
    end_user: LimitedBudgetModel | None = None
    models: dict[Name, LimitedBudgetModel | None] | None = None


class StaticKeyModel(StrictModel):
    """A key of ``keys:``. Its fields are the admin API's (checked again by
    :mod:`.keys` when the key is built); only the names are checked here."""

    id: Name | None = None
    key: StrictStr
    user: Name
    team: StrictStr | None = None
    org: StrictStr | None = None
    name: StrictStr | None = None
    models: Any = None
    budget: Any = None
    max_budget: Any = None
    period: Any = None
    budget_duration: Any = None
    timezone: Any = None
    rolling: Any = None
    model_budgets: Any = None
    expires_at: Any = None
    duration: Any = None
    metadata: Any = None
    rpm_limit: Any = None
    tpm_limit: Any = None
    tpd_limit: Any = None
    max_parallel_requests: Any = None


class GatewayFile(StrictModel):
    """The whole file (or the gateway's keys of a server config file)."""

    model_list: list[DeploymentModel] | None = None
    router_settings: RouterModel | None = None
    general_settings: GeneralSettings | None = None
    budgets: BudgetsModel | None = None
    users: dict[Name, UserModel | None] | None = None
    teams: dict[Name, TeamModel | None] | None = None
    orgs: dict[Name, EntityModel | None] | None = None
    end_users: dict[Name, LimitedBudgetModel | None] | None = None
    keys: list[StaticKeyModel] | None = None
    store: StrictStr | None = None
