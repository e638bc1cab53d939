"""The process-wide budget (``llmbudget.max_budget``), and reservations across ledgers.

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

This module also holds the machinery every budgeted call uses: a call may be limited by
several budgets held in different ledgers (the global one, a user's in a
:class:`~llmbudget.BudgetManager`, ``llmbudget.budget()`` blocks). :func:`plan_reserve`
reserves on all of them: one atomic multi-scope reserve per store, and when several
stores are involved, one after the other with the earlier holds released if a later one
is refused. Operations are *plans* (generators yielding :class:`Io` effects), run by
:func:`~llmbudget.plans.run_sync` or :func:`~llmbudget.plans.run_async` (see
:mod:`llmbudget.plans`): the logic is written once for both.
"""

from __future__ import annotations

import functools
import sys
import threading
import time
import types
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar, cast

from llmbudget.budgets import Budget, BudgetStatus, scope_key
from llmbudget.clock import Clock
from llmbudget.errors import (
    BudgetExceededError,
    InvalidAmountError,
    InvalidInputError,
    StoreError,
)
from llmbudget.ledger import Hold, Ledger
from llmbudget.money import MoneyLike, cost_to_units, from_units
from llmbudget.plans import Io, Plan
from llmbudget.stores import Store
from llmbudget.stores.memory import MemoryStore

__all__ = [
    "MultiHold",
    "ScopeGroup",
    "anchor",
    "configure",
    "current_cost",
    "get_max_budget",
    "global_group",
    "install",
    "plan_release",
    "plan_reserve",
    "plan_settle",
    "plan_tightest",
    "reset",
    "set_max_budget",
    "status",
]

T = TypeVar("T")


# --------------------------------------------------------------------------- scope groups


@dataclass(frozen=True, slots=True)
class ScopeGroup:
    """Budgets kept in one ledger that a call must fit in."""

    ledger: Ledger
    budgets: tuple[Budget, ...]

    @property
    def blocking(self) -> bool:
        return not isinstance(self.ledger.store, MemoryStore)


@dataclass(frozen=True, slots=True)
class MultiHold:
    """Holds taken for one call, one per store involved."""

    amount: Decimal
    parts: tuple[tuple[ScopeGroup, Hold], ...]


def _merge(groups: Sequence[ScopeGroup]) -> list[ScopeGroup]:
    # Budgets that share a store go into one reserve: atomic across all of them.
    merged: dict[int, tuple[Ledger, list[Budget]]] = {}
    for group in groups:
        if not group.budgets:
            continue
        key = id(group.ledger.store)
        if key not in merged:
            merged[key] = (group.ledger, [])
        target = merged[key][1]
        for budget in group.budgets:
            if all(b.scope != budget.scope for b in target):
                target.append(budget)
    return [ScopeGroup(ledger, tuple(budgets)) for ledger, budgets in merged.values()]


def plan_reserve(groups: Sequence[ScopeGroup], amount: MoneyLike) -> Plan[MultiHold]:
    """Hold ``amount`` on every budget of every group, or on none of them."""
    exact = from_units(cost_to_units(amount, what="reserve amount"))
    taken: list[tuple[ScopeGroup, Hold]] = []
    try:
        for group in _merge(groups):
            hold = yield Io(group.ledger.reserve, (list(group.budgets), exact), group.blocking)
            taken.append((group, hold))
    except BaseException:
        # A later store refused (or failed): give back what the earlier ones granted.
        for group, hold in taken:
            yield Io(group.ledger.release, (hold,), group.blocking)
        raise
    return MultiHold(exact, tuple(taken))


# A settle that fails after a successful call would lose the response and leave the hold
# to expire unrecorded; settle is idempotent, so it is tried again after these pauses.
SETTLE_RETRY_DELAYS: tuple[float, ...] = (0.05, 0.2, 0.5)


def plan_settle(hold: MultiHold, actual: MoneyLike, model: str | None) -> Plan[Decimal]:
    """Record ``actual`` on every part of ``hold`` (each store's settle is idempotent).

    A store that fails (:class:`StoreError`) is tried again, up to
    ``len(SETTLE_RETRY_DELAYS)`` more times with short pauses, before the error is raised."""
    recorded = Decimal(0)
    first_error: BaseException | None = None
    for group, part in hold.parts:
        settle = functools.partial(group.ledger.settle, model=model)
        for attempt in range(len(SETTLE_RETRY_DELAYS) + 1):
            try:
                recorded = yield Io(settle, (part, actual), group.blocking)
                break
            except StoreError as exc:
                if attempt == len(SETTLE_RETRY_DELAYS):
                    first_error = first_error or exc  # settle the other stores anyway
                    break
                yield Io(time.sleep, (SETTLE_RETRY_DELAYS[attempt],), True)
            except Exception as exc:  # settle the other stores anyway, then report
                first_error = first_error or exc
                break
    if first_error is not None:
        raise first_error
    return recorded


def plan_release(hold: MultiHold) -> Plan[None]:
    """Drop every part of ``hold`` (the call failed)."""
    first_error: BaseException | None = None
    for group, part in hold.parts:
        try:
            yield Io(group.ledger.release, (part,), group.blocking)
        except Exception as exc:
            first_error = first_error or exc
    if first_error is not None:
        raise first_error


def plan_tightest(groups: Sequence[ScopeGroup]) -> Plan[tuple[Budget, BudgetStatus] | None]:
    """The limited budget with the least room left now (``None`` when nothing is limited)."""
    best: tuple[Budget, BudgetStatus] | None = None
    for group in _merge(groups):
        for budget in group.budgets:
            if budget.limit is None:
                continue
            current: BudgetStatus = yield Io(group.ledger.status, (budget,), group.blocking)
            remaining = current.remaining
            assert remaining is not None
            if best is None or remaining < cast(Decimal, best[1].remaining):
                best = (budget, current)
    return best


def exceeded(budget: Budget, current: BudgetStatus, requested: Decimal) -> BudgetExceededError:
    """The error for a call of ``requested`` dollars that ``budget`` cannot take."""
    assert budget.limit is not None
    return BudgetExceededError(
        scope=budget.scope,
        limit=budget.limit,
        spent=current.spent,
        held=current.held,
        requested=requested,
        resets_at=current.resets_at,
    )


# --------------------------------------------------------------------------- anchors

_ANCHOR_DOC = "budget_anchor"


def anchor(ledger: Ledger, budget: Budget) -> Budget:
    """``budget`` with the ``created_at`` its scope already has in ``ledger``'s store.

    Periods of several units (``"30d"``, ``"2w"``, ``"12h"``...) count their windows from
    the budget's creation, so every process and every run sharing a persistent budget must
    use the same anchor, or each would count spend in windows of its own (and a restart
    would start again from $0). The first definer wins: a stored definition keeps its
    ``created_at``; when there is none, an insert-if-absent document settles races between
    processes defining it at once. The definition is (re)written, keeping that
    ``created_at``, when it is new or its limit or period changed."""
    store = ledger.store
    existing = store.get_budgets([budget.scope])[0]
    if existing is not None:
        created_at = existing.created_at
    else:
        store.create_doc(_ANCHOR_DOC, budget.scope, {"created_at": budget.created_at})
        doc = store.get_doc(_ANCHOR_DOC, budget.scope) or {}
        try:
            created_at = float(doc.get("created_at", budget.created_at))
        except (TypeError, ValueError):
            created_at = budget.created_at
    anchored = Budget(budget.scope, budget.limit, budget.period, created_at)
    stored = None if existing is None else Budget.from_record(existing)
    if stored is None or (stored.limit, stored.period) != (anchored.limit, anchored.period):
        ledger.define(anchored)
    return anchored


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
        return ScopeGroup(_state.ledger, (_state.budget(),))


def status() -> BudgetStatus:
    """The global budget's spend, holds and limit in its current window."""
    group = global_group()
    return group.ledger.status(group.budgets[0])


def current_cost() -> Decimal:
    """Spent through :func:`llmbudget.completion` in the current window (the seed's
    ``_current_cost``)."""
    return status().spent


def reset() -> None:
    """Zero the global spend of the current window (holds in flight stay)."""
    group = global_group()
    group.ledger.reset(group.budgets[0])


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
