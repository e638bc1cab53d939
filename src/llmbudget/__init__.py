"""llmbudget: budgets for LLM API calls that never overspend.

>>> from llmbudget import BudgetManager
>>> bm = BudgetManager(project_name="test_project", store="memory://")
>>> bm.create_budget(total_budget=10, user="1234")["total_budget"]
Decimal('10')
"""

from __future__ import annotations

from llmbudget.budgets import Budget, BudgetStatus, scope_key
from llmbudget.clock import Clock, FrozenClock, system_clock
from llmbudget.errors import (
    BudgetExceededError,
    InvalidAmountError,
    InvalidDurationError,
    InvalidInputError,
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
from llmbudget.stores import AsyncStore, Store, open_store

__version__ = "0.1.0"

__all__ = [
    "AsyncLedger",
    "AsyncStore",
    "Budget",
    "BudgetExceededError",
    "BudgetManager",
    "BudgetStatus",
    "Clock",
    "FrozenClock",
    "Hold",
    "HoldHandle",
    "InvalidAmountError",
    "InvalidDurationError",
    "InvalidInputError",
    "LLMBudgetError",
    "Ledger",
    "NotFoundError",
    "Period",
    "PricingError",
    "ProviderError",
    "Store",
    "StoreError",
    "StoreUnavailableError",
    "UnknownHoldError",
    "UnknownModelError",
    "UnknownUserError",
    "Window",
    "open_store",
    "scope_key",
    "system_clock",
]
