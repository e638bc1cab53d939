"""The process-wide budget (``llmbudget.max_budget``).

As in the seed::

    import llmbudget
    llmbudget.max_budget = 0.001          # USD, for every llmbudget.completion() call
    llmbudget.completion(model="gpt-4", messages=[...])
    print(llmbudget.current_cost)         # also readable as llmbudget._current_cost
    llmbudget.completion(model="gpt-4", messages=[...])   # raises BudgetExceededError

Unlike the seed, the limit is enforced *before* a call is sent, by reserving its worst
case, so concurrent calls cannot overshoot it together. ``max_budget = None`` turns the
limit off (spend is still counted); ``llmbudget.current_cost = 0`` zeroes the count.
By default the spend lives in memory and lasts as long as the process;
:func:`configure` puts it in a store and gives it a period::

    llmbudget.global_budget.configure(store="sqlite:///spend.db", duration="daily")

A call limited by the global budget and others at once (a user's, ``budget()`` blocks)
is reserved on all of them by :mod:`llmbudget.reservations`.
"""

from __future__ import annotations

import sys
import threading
import types
from decimal import Decimal
from typing import Any, cast

from llmbudget.anchors import anchor
from llmbudget.budgets import Budget, BudgetStatus, scope_key
from llmbudget.clock import Clock
from llmbudget.errors import InvalidAmountError, InvalidInputError
from llmbudget.ledger import Ledger
from llmbudget.money import MoneyLike, cost_to_units
from llmbudget.reservations import ScopeGroup
from llmbudget.stores import Store
from llmbudget.stores.memory import MemoryStore

__all__ = [
    "configure",
    "current_cost",
    "get_max_budget",
    "global_group",
    "install",
    "reset",
    "set_max_budget",
    "status",
]

# --------------------------------------------------------------------------- the global budget


class _Global:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ledger = Ledger(MemoryStore())
        self.name = "default"
        self.limit: Decimal | None = None
        self.duration: str | None = None
        self.timezone = "UTC"
        self.created_at = 0.0

    def budget(self) -> Budget:
        return Budget.of(
            scope_key("global", self.name),
            self.limit,
            self.duration,
            timezone=self.timezone,
            created_at=self.created_at,
        )


_state = _Global()
_KEEP: Any = object()


def set_max_budget(value: MoneyLike | None) -> None:
    """Set the global limit in USD (``None``: no limit). Raises InvalidAmountError for
    NaN, infinities, negatives, bools, non-numbers and sub-nano-dollar precision."""
    if value is None:
        limit = None
    else:
        limit = Budget.of("global", value).limit  # validates exactly as every budget
        if limit is None:  # pragma: no cover - Budget.of keeps a given limit
            raise InvalidAmountError("max_budget could not be read")
    with _state.lock:
        _state.limit = limit


def get_max_budget() -> Decimal | None:
    """The global limit in USD, or ``None``."""
    return _state.limit


def global_group() -> ScopeGroup:
    """The global budget as a :class:`ScopeGroup` (limit-less when ``max_budget`` is None,
    so spend is still counted)."""
    with _state.lock:
        return ScopeGroup(_state.ledger.plans, (_state.budget(),))


def status() -> BudgetStatus:
    """The global budget's spend, holds and limit in its current window."""
    with _state.lock:
        ledger, budget = _state.ledger, _state.budget()
    return ledger.status(budget)


def current_cost() -> Decimal:
    """Spent through :func:`llmbudget.completion` in the current window (the seed's
    ``_current_cost``)."""
    return status().spent


def reset() -> None:
    """Zero the global spend of the current window (holds in flight stay)."""
    with _state.lock:
        ledger, budget = _state.ledger, _state.budget()
    ledger.reset(budget)


def configure(
    store: Store | str | None = None,
    *,
    duration: str | None = None,
    name: str = "default",
    timezone: str = "UTC",
    max_budget: object = _KEEP,
    clock: Clock | None = None,
) -> None:
    """Where the global budget's spend is kept and how often it resets.

    ``store``: a :class:`Store` or URL (``None``: a fresh in-memory store). A shared store
    (SQLite, PostgreSQL, Redis) makes processes share one global budget, named ``name``.
    ``duration``: ``"daily"``, ``"monthly"``, ``"1h"``... or ``None`` (never resets).
    ``max_budget``: also set the limit (left as it is when not given). Spend recorded in
    the previous store stays there. In a persistent store the budget's definition is
    kept under ``global:<name>``; its first ``created_at`` anchors the windows of
    multi-unit periods (``"30d"``) for every process and every later run.
    ``clock``: the time source (tests pass a :class:`~llmbudget.clock.FrozenClock`).

    >>> configure(duration="daily", max_budget=5)
    >>> get_max_budget()
    Decimal('5')
    >>> configure(max_budget=None)  # back to the default: in memory, no period, no limit
    """
    from llmbudget.periods import Period
    from llmbudget.stores import open_store

    if not isinstance(name, str) or not name:
        raise InvalidInputError("name must be a non-empty string")
    Period.parse(duration, timezone=timezone)  # refuse a bad period before changing anything
    if store is None:
        opened: Store = MemoryStore()
    else:
        opened = store if isinstance(store, Store) else open_store(store)
    ledger = Ledger(opened) if clock is None else Ledger(opened, clock=clock)
    limit = _state.limit if max_budget is _KEEP else cast("MoneyLike | None", max_budget)
    # Validates the limit before anything changes.
    defined = Budget.of(
        scope_key("global", name), limit, duration, timezone=timezone, created_at=ledger.clock()
    )
    created_at = defined.created_at
    if not isinstance(opened, MemoryStore):
        # A persistent budget keeps the anchor of its first definition (see anchor()), so
        # processes sharing the store, and later runs, count the same windows.
        created_at = anchor(ledger, defined).created_at
    with _state.lock:
        _state.ledger = ledger
        _state.duration = duration
        _state.timezone = timezone
        _state.name = name
        _state.created_at = created_at
    if max_budget is not _KEEP:
        set_max_budget(cast("MoneyLike | None", max_budget))


def _reset_for_tests() -> None:
    """Back to the import-time state: no limit, nothing spent, in memory."""
    configure()
    set_max_budget(None)


# --------------------------------------------------------------------------- module attributes


class _BudgetModule(types.ModuleType):
    """``llmbudget``'s module type: ``max_budget`` and ``current_cost`` are live."""

    @property
    def max_budget(self) -> Decimal | None:
        return get_max_budget()

    @max_budget.setter
    def max_budget(self, value: MoneyLike | None) -> None:
        set_max_budget(value)

    @property
    def current_cost(self) -> Decimal:
        return current_cost()

    @current_cost.setter
    def current_cost(self, value: MoneyLike) -> None:
        _set_cost(value)

    @property
    def _current_cost(self) -> Decimal:
        return current_cost()

    @_current_cost.setter
    def _current_cost(self, value: MoneyLike) -> None:
        _set_cost(value)


def _set_cost(value: object) -> None:
    # Callers of the seed reset with `_current_cost = 0`; any other value would invent or
    # erase spend that the ledger records, so it is refused.
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
        raise InvalidAmountError(f"current_cost can only be set to 0, got {value!r}")
    if cost_to_units(value, what="current_cost") != 0:
        raise InvalidInputError("current_cost can only be set to 0 (use reset())")
    reset()


def install(module: types.ModuleType | str) -> None:
    """Make ``max_budget``, ``current_cost`` and ``_current_cost`` live attributes of
    ``module`` (the ``llmbudget`` package calls this at the end of its ``__init__``)."""
    target = sys.modules[module] if isinstance(module, str) else module
    if not isinstance(target, _BudgetModule):
        for name in ("max_budget", "current_cost", "_current_cost"):
            # A plain attribute set earlier would be shadowed by the property anyway.
            target.__dict__.pop(name, None)
        target.__class__ = _BudgetModule
