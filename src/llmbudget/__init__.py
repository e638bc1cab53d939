"""llmbudget: budgets for LLM API calls that never overspend.

>>> from llmbudget import BudgetManager
>>> bm = BudgetManager(project_name="test_project", store="memory://")
>>> bm.create_budget(total_budget=10, user="1234")["total_budget"]
10
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmbudget import global_budget
from llmbudget.blocks import BudgetBlock, budget, bypass
from llmbudget.budgets import Budget, BudgetStatus, scope_key
from llmbudget.clock import Clock, FrozenClock, system_clock
from llmbudget.completion import (
    AsyncCompletionStream,
    CompletionStream,
    acompletion,
    completion,
    response_cost,
)
from llmbudget.errors import (
    BudgetExceededError,
    InvalidAmountError,
    InvalidDurationError,
    InvalidInputError,
    InvalidRequestError,
    LLMBudgetError,
    NotFoundError,
    PricingError,
    ProviderError,
    StoreError,
    StoreUnavailableError,
    UnknownHoldError,
    UnknownModelError,
    UnknownUserError,
)
from llmbudget.ledger import AsyncLedger, Hold, HoldHandle, Ledger
from llmbudget.manager import BudgetManager
from llmbudget.periods import Period, Window
from llmbudget.providers import (
    Provider,
    ProviderAuthError,
    ProviderBadRequestError,
    ProviderConnectionError,
    ProviderRateLimitError,
    ProviderServerError,
    ProviderTimeoutError,
    register_provider,
)
from llmbudget.stores import AsyncStore, Store, open_store

if TYPE_CHECKING:
    # Live module attributes, served by global_budget.install() below (the seed's
    # `litellm.max_budget` / `litellm._current_cost`); declared so type checkers know them.
    from decimal import Decimal

    from llmbudget.money import MoneyLike

    max_budget: MoneyLike | None
    current_cost: Decimal
    _current_cost: Decimal

__version__ = "0.1.0"

__all__ = [
    "AsyncCompletionStream",
    "AsyncLedger",
    "AsyncStore",
    "Budget",
    "BudgetBlock",
    "BudgetExceededError",
    "BudgetManager",
    "BudgetStatus",
    "Clock",
    "CompletionStream",
    "FrozenClock",
    "Hold",
    "HoldHandle",
    "InvalidAmountError",
    "InvalidDurationError",
    "InvalidInputError",
    "InvalidRequestError",
    "LLMBudgetError",
    "Ledger",
    "NotFoundError",
    "Period",
    "PricingError",
    "Provider",
    "ProviderAuthError",
    "ProviderBadRequestError",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderRateLimitError",
    "ProviderServerError",
    "ProviderTimeoutError",
    "Store",
    "StoreError",
    "StoreUnavailableError",
    "UnknownHoldError",
    "UnknownModelError",
    "UnknownUserError",
    "Window",
    "acompletion",
    "budget",
    "bypass",
    "completion",
    "global_budget",
    "open_store",
    "register_provider",
    "response_cost",
    "scope_key",
    "system_clock",
]

global_budget.install(__name__)
