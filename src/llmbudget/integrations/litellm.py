"""Charge llmbudget budgets for ``litellm.completion`` calls, via a LiteLLM callback.

::

    import litellm  # type: ignore[import-not-found,unused-ignore]
    from llmbudget import BudgetManager
    from llmbudget.integrations.litellm import LLMBudgetCallback

    bm = BudgetManager("my-app")
    litellm.callbacks = [LLMBudgetCallback(budget_manager=bm)]
    litellm.completion(model="gpt-4o", messages=[...], user="1234")   # charged to user 1234

What it charges: each successful call (streamed calls once, when complete) to the
global budget (``llmbudget.max_budget`` / ``current_cost``, unless
``charge_global=False``) and, with a ``budget_manager``, to the budget of the call's
``user`` (``user=`` or ``metadata={"user": ...}``). The cost is priced by llmbudget's
own price book from the response's usage, falling back to LiteLLM's ``response_cost``
for models llmbudget cannot price.

What it cannot do: refuse a call. LiteLLM runs callbacks after the call and swallows
their exceptions, so this adapter records spend (as the seed's ``update_cost`` did)
but does not stop it. For a hard limit, call LiteLLM inside
``with llmbudget.budget(max_usd=...)``: the providers LiteLLM reaches through the
``openai`` SDK are then reserved before sending. Or use :func:`llmbudget.completion`.

LiteLLM is not a dependency of llmbudget; importing this module without it installed
raises ``ImportError``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

from llmbudget.errors import LLMBudgetError, PricingError, UnknownModelError
from llmbudget.fields import get as _get
from llmbudget.global_budget import global_group
from llmbudget.manager import BudgetManager
from llmbudget.money import to_money
from llmbudget.plans import run_sync
from llmbudget.pricing import PriceBook, cost_from_response

if TYPE_CHECKING:
    _CustomLogger = object
else:
    try:
        from litellm.integrations.custom_logger import (  # type: ignore[import-not-found,unused-ignore]
            CustomLogger as _CustomLogger,
        )
    except ImportError as exc:  # pragma: no cover - exercised only without litellm
        raise ImportError(
            "llmbudget.integrations.litellm needs LiteLLM: pip install litellm"
        ) from exc

__all__ = ["LLMBudgetCallback", "install", "uninstall"]

logger = logging.getLogger(__name__)


class LLMBudgetCallback(_CustomLogger):
    """A LiteLLM ``CustomLogger`` that records each call's cost on llmbudget budgets.

    ``budget_manager``: charge the call's user there (calls without a user, or with a
    user that has no budget, are charged to the global budget only).
    ``charge_global``: also count the call in ``llmbudget.current_cost``.
    ``prices``: the :class:`~llmbudget.pricing.PriceBook` to price with.
    """

    def __init__(
        self,
        budget_manager: BudgetManager | None = None,
        *,
        charge_global: bool = True,
        prices: PriceBook | None = None,
    ) -> None:
        super().__init__()
        self.budget_manager = budget_manager
        self.charge_global = charge_global
        self.prices = prices
        self.charged: list[tuple[str | None, str, Decimal]] = []  # (user, model, cost)

    # -- LiteLLM hooks ---------------------------------------------------------------

    def log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._charge(kwargs, response_obj)

    async def async_log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        # The ledger may wait on a file lock or a network store: keep the loop free.
        await asyncio.to_thread(self._charge, kwargs, response_obj)

    # -- charging --------------------------------------------------------------------

    def cost_of(self, kwargs: Mapping[str, Any], response_obj: Any) -> tuple[str, Decimal] | None:
        """``(model, dollars)`` of one call, or ``None`` when it cannot be priced."""
        response = kwargs.get("complete_streaming_response") or response_obj
        model = str(kwargs.get("model") or _get(response, "model") or "")
        try:
            priced = cost_from_response(response, model=model or None, prices=self.prices)
            return priced.model, priced.amount
        except (UnknownModelError, PricingError):
            fallback = kwargs.get("response_cost")
            if fallback is None:
                logging_object = kwargs.get("standard_logging_object") or {}
                fallback = _get(logging_object, "response_cost")
            if fallback is None:
                logger.warning("llmbudget: cannot price LiteLLM call to %r; not charged", model)
                return None
            return model, to_money(fallback, what="LiteLLM response_cost")

    def user_of(self, kwargs: Mapping[str, Any]) -> str | None:
        """The end user of a call: ``user=``, else ``metadata["user"]``."""
        user = kwargs.get("user")
        if not user:
            params = kwargs.get("litellm_params") or {}
            metadata = _get(params, "metadata") or {}
            user = _get(metadata, "user") or _get(metadata, "user_api_key_end_user_id")
        if not user:
            optional = kwargs.get("optional_params") or {}
            user = _get(optional, "user")
        return str(user) if user else None

    def _charge(self, kwargs: dict[str, Any], response_obj: Any) -> None:
        try:
            priced = self.cost_of(kwargs, response_obj)
            if priced is None:
                return
            model, cost = priced
            user = self.user_of(kwargs)
            if self.charge_global:
                group = global_group()
                run_sync(group.plans.charge(list(group.budgets), cost, model))
            manager = self.budget_manager
            if manager is not None and user is not None and manager.is_valid_user(user):
                manager.ledger.charge([manager.get_budget(user)], cost, model=model)
            self.charged.append((user, model, cost))
        except LLMBudgetError:
            # LiteLLM would swallow it silently; at least say that spend went unrecorded.
            logger.exception("llmbudget: could not record a LiteLLM call's cost")


def install(budget_manager: BudgetManager | None = None, **options: Any) -> LLMBudgetCallback:
    """Create a :class:`LLMBudgetCallback` and append it to ``litellm.callbacks``."""
    import litellm  # type: ignore[import-not-found,unused-ignore]

    callback = LLMBudgetCallback(budget_manager, **options)
    # A CustomLogger at run time; typed against ``object`` so mypy passes without LiteLLM.
    litellm.callbacks = [*(litellm.callbacks or []), cast(Any, callback)]
    return callback


def uninstall(callback: LLMBudgetCallback) -> None:
    """Remove ``callback`` from every LiteLLM callback list it was copied into.

    LiteLLM copies ``litellm.callbacks`` into internal lists on first use and will not
    add a second callback equal to one already there, so removing it from
    ``litellm.callbacks`` alone is not enough.
    """
    import litellm  # type: ignore[import-not-found,unused-ignore]

    for name in (
        "callbacks",
        "input_callback",
        "success_callback",
        "failure_callback",
        "_async_success_callback",
        "_async_failure_callback",
        "service_callback",
    ):
        entries = getattr(litellm, name, None)
        if isinstance(entries, list):
            entries[:] = [entry for entry in entries if entry is not callback]
