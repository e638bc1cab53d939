"""The ledger: reserve the worst case before a call, settle the real cost after.

::

    hold = ledger.reserve([user_budget, team_budget], worst_case)   # all scopes or none
    try:
        response = call_the_llm()
    except Exception:
        ledger.release(hold)                                         # failed: nothing spent
        raise
    ledger.settle(hold, real_cost, model="gpt-4o")                   # idempotent

Holds expire (``hold_ttl``): a process that dies mid-call stops blocking its budget once
the hold expires. A settle that arrives later still records its spend.

Each operation is written once, as a *plan*: a generator that yields the store calls it
needs and receives their results (see :mod:`llmbudget.plans`). :class:`Ledger` runs
plans against a :class:`Store`; :class:`AsyncLedger` awaits them against an
:class:`AsyncStore` (or runs a synchronous store in a worker thread). Neither holds any
logic of its own.

>>> from llmbudget.budgets import Budget
>>> ledger = Ledger("memory://")
>>> alice = Budget.of("user:alice", 1, "daily")
>>> with ledger.hold([alice], "0.25") as h:
...     h.settle("0.10", model="gpt-4o")
>>> ledger.status(alice).spent
Decimal('0.1')
"""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from llmbudget.budgets import Budget, BudgetStatus
from llmbudget.clock import Clock, system_clock
from llmbudget.errors import BudgetExceededError
from llmbudget.money import MoneyLike, cost_to_units, from_units
from llmbudget.periods import Window
from llmbudget.plans import Plan, run_async, run_sync
from llmbudget.stores import open_store
from llmbudget.stores.base import AsyncStore, BudgetRecord, Refusal, SettleResult, Store, Usage
from llmbudget.stores.base import validate_lines as _validate_lines
from llmbudget.validation import check_id, check_ttl

__all__ = ["AsyncLedger", "Hold", "HoldHandle", "Ledger"]

T = TypeVar("T")
Call = tuple[str, tuple[Any, ...]]

DEFAULT_HOLD_TTL = 600.0
DEFAULT_RETENTION = 86_400.0
# How many past windows a redefinition looks through for spend to carry (a year of days).
_CARRY_WINDOWS = 400


@dataclass(frozen=True, slots=True)
class Hold:
    """A reservation: ``amount`` dollars held on ``scopes`` until settled, released or expired."""

    id: str
    amount: Decimal
    scopes: tuple[str, ...]
    expires_at: float
    resets_at: tuple[float | None, ...] = field(default=(), compare=False)


class _Plans:
    """Every ledger operation, written once as a plan. Pure: no I/O, no clock reads."""

    def __init__(self, clock: Clock, hold_ttl: float, retention: float, purge_every: float) -> None:
        self.clock = clock
        self.hold_ttl = check_ttl(hold_ttl, "hold_ttl")
        self.retention = retention
        self.purge_every = purge_every
        self._next_purge = 0.0

    def reserve(
        self,
        budgets: Sequence[Budget],
        amount: MoneyLike,
        ttl: float | None,
        hold_id: str | None,
    ) -> Plan[Hold]:
        now = self.clock()
        units = cost_to_units(amount, what="reserve amount")
        ttl = check_ttl(self.hold_ttl if ttl is None else ttl)
        if hold_id is not None:
            check_id(hold_id)
        windows = [b.window_at(now) for b in budgets]
        lines = [b.line(w) for b, w in zip(budgets, windows, strict=True)]
        _validate_lines(lines, units)
        if now >= self._next_purge:
            # Opportunistic clean-up, so a library user needs no background job.
            self._next_purge = now + self.purge_every
            yield ("purge", (now, self.retention))
        hold = Hold(
            id=hold_id or uuid.uuid4().hex,
            amount=from_units(units),
            scopes=tuple(b.scope for b in budgets),
            expires_at=now + ttl,
            resets_at=tuple(w.end for w in windows),
        )
        refusal: Refusal | None = yield ("reserve", (hold.id, lines, units, hold.expires_at, now))
        if refusal is not None:
            budget = budgets[refusal.index]
            assert budget.limit is not None  # only limited lines are refused
            raise BudgetExceededError(
                scope=budget.scope,
                limit=budget.limit,
                spent=from_units(refusal.spent),
                held=from_units(refusal.held),
                requested=hold.amount,
                resets_at=windows[refusal.index].end_datetime(budget.period.zone),
            )
        return hold

    def settle(self, hold: Hold | str, actual: MoneyLike, model: str | None) -> Plan[Decimal]:
        units = cost_to_units(actual, what="actual cost")
        result: SettleResult = yield ("settle", (_hold_id(hold), units, model, self.clock()))
        return from_units(result.actual)

    def release(self, hold: Hold | str) -> Plan[bool]:
        released: bool = yield ("release", (_hold_id(hold), self.clock()))
        return released

    def charge(
        self,
        budgets: Sequence[Budget],
        amount: MoneyLike,
        model: str | None,
        charge_id: str | None = None,
    ) -> Plan[Decimal]:
        now = self.clock()
        units = cost_to_units(amount, what="charge amount")
        if charge_id is not None:
            check_id(charge_id, "charge id")
        lines = [b.line(b.window_at(now)) for b in budgets]
        _validate_lines(lines, units)
        yield ("charge", (lines, units, model, now, charge_id))
        return from_units(units)

    def status(self, budget: Budget) -> Plan[BudgetStatus]:
        now = self.clock()
        window = budget.window_at(now)
        usage: Usage = yield ("usage", (budget.scope, window.key, now))
        return BudgetStatus(
            scope=budget.scope,
            limit=budget.limit,
            spent=from_units(usage.spent),
            held=from_units(usage.held),
            window_start=window.start_datetime(budget.period.zone),
            resets_at=window.end_datetime(budget.period.zone),
            by_model={m: from_units(u) for m, u in sorted(usage.by_model.items())},
        )

    def reset(self, budget: Budget) -> Plan[None]:
        yield ("reset", (budget.scope, budget.window_at(self.clock()).key))

    def history(self, budget: Budget, limit: int) -> Plan[list[tuple[datetime, Decimal]]]:
        rows: list[tuple[int, int]] = yield ("history", (budget.scope, limit))
        zone = budget.period.zone
        return [(datetime.fromtimestamp(w, zone), from_units(s)) for w, s in rows]

    def purge(self) -> Plan[int]:
        removed: int = yield ("purge", (self.clock(), self.retention))
        return removed

    def define(self, budget: Budget) -> Plan[Budget]:
        now = self.clock()
        found: list[BudgetRecord | None] = yield ("get_budgets", ([budget.scope],))
        yield ("put_budget", (budget.to_record(now),))
        # A stored record that cannot be used is replaced, with nothing to carry.
        old = Budget.readable(found[0])
        if old is None or (old.period, old.created_at) == (budget.period, budget.created_at):
            return budget
        # The windows were laid out anew (another period, timezone or anchor). Spend is
        # keyed by window, so the new current window would start empty: carry into it every
        # old window that overlaps it. Conservative: an old window only partly inside the
        # new one is carried whole, so spend can be over-counted, never lost.
        window = budget.window_at(now)
        rows: list[tuple[int, int]] = yield ("history", (budget.scope, _CARRY_WINDOWS))
        carry = sum(
            spent
            for key, spent in rows
            if key != window.key and _overlaps(old.window_at(float(key)), window)
        )
        if carry:
            yield ("charge", ([budget.line(window)], carry, None, now))
        return budget

    def get(self, scopes: Sequence[str]) -> Plan[list[Budget | None]]:
        records: list[BudgetRecord | None] = yield ("get_budgets", (list(scopes),))
        return [None if r is None else Budget.from_record(r) for r in records]

    def budgets(self, prefix: str) -> Plan[list[Budget]]:
        records: list[BudgetRecord] = yield ("list_budgets", (prefix,))
        # One record that cannot be used must not hide every other budget.
        return [b for r in records if (b := Budget.readable(r)) is not None]

    def delete(self, scope: str) -> Plan[bool]:
        deleted: bool = yield ("delete_budget", (scope,))
        return deleted


def _overlaps(a: Window, b: Window) -> bool:
    return (b.end is None or a.start < b.end) and (a.end is None or a.end > b.start)


def _hold_id(hold: Hold | str) -> str:
    return hold if isinstance(hold, str) else hold.id


def _store_call(store: Store) -> Callable[[Call], Any]:
    def call(effect: Call) -> Any:
        name, args = effect
        return getattr(store, name)(*args)

    return call


def _async_store_call(store: AsyncStore | Store) -> Callable[[Call], Awaitable[Any]]:
    async def call(effect: Call) -> Any:
        name, args = effect
        method: Callable[..., Any] = getattr(store, name)
        if isinstance(store, Store):
            # A synchronous store (SQLite) may wait on a file lock: keep the loop free.
            return await asyncio.to_thread(method, *args)
        result = method(*args)
        return await result if inspect.isawaitable(result) else result

    return call


class Ledger:
    """Synchronous ledger over a :class:`Store` (or a store URL; default: ``$LLMBUDGET_STORE``
    or ``sqlite:///llmbudget.db``)."""

    def __init__(
        self,
        store: Store | str | None = None,
        *,
        clock: Clock = system_clock,
        hold_ttl: float = DEFAULT_HOLD_TTL,
        retention: float = DEFAULT_RETENTION,
        purge_every: float = 60.0,
    ) -> None:
        self.store = store if isinstance(store, Store) else open_store(store)
        self._call = _store_call(self.store)
        self._plans = _Plans(clock, hold_ttl, retention, purge_every)

    @property
    def clock(self) -> Clock:
        return self._plans.clock

    def reserve(
        self,
        budgets: Sequence[Budget],
        amount: MoneyLike,
        *,
        ttl: float | None = None,
        hold_id: str | None = None,
    ) -> Hold:
        """Hold ``amount`` on every budget at once, or raise :class:`BudgetExceededError`."""
        return run_sync(self._plans.reserve(budgets, amount, ttl, hold_id), self._call)

    def settle(self, hold: Hold | str, actual: MoneyLike, *, model: str | None = None) -> Decimal:
        """Record the real cost of a held call (idempotent); returns what was recorded."""
        return run_sync(self._plans.settle(hold, actual, model), self._call)

    def release(self, hold: Hold | str) -> bool:
        """Drop a hold without spend (the call failed); ``False`` if it had already ended."""
        return run_sync(self._plans.release(hold), self._call)

    def charge(
        self,
        budgets: Sequence[Budget],
        amount: MoneyLike,
        *,
        model: str | None = None,
        charge_id: str | None = None,
    ) -> Decimal:
        """Record a cost that already happened, limit or not (the seed's ``update_cost``).
        With a ``charge_id``, charging again under it records nothing (a safe retry)."""
        return run_sync(self._plans.charge(budgets, amount, model, charge_id), self._call)

    def status(self, budget: Budget) -> BudgetStatus:
        return run_sync(self._plans.status(budget), self._call)

    def reset(self, budget: Budget) -> None:
        """Zero the spend of the budget's current window."""
        run_sync(self._plans.reset(budget), self._call)

    def history(self, budget: Budget, limit: int = 100) -> list[tuple[datetime, Decimal]]:
        return run_sync(self._plans.history(budget, limit), self._call)

    def purge(self) -> int:
        return run_sync(self._plans.purge(), self._call)

    def define(self, budget: Budget) -> Budget:
        return run_sync(self._plans.define(budget), self._call)

    def get(self, scopes: Sequence[str]) -> list[Budget | None]:
        return run_sync(self._plans.get(scopes), self._call)

    def budgets(self, prefix: str = "") -> list[Budget]:
        return run_sync(self._plans.budgets(prefix), self._call)

    def delete(self, scope: str) -> bool:
        return run_sync(self._plans.delete(scope), self._call)

    def hold(
        self, budgets: Sequence[Budget], amount: MoneyLike, *, ttl: float | None = None
    ) -> AbstractContextManager[HoldHandle]:
        """Reserve for a ``with`` block; call ``handle.settle(cost)`` once the call returns."""
        return self.guard(self.reserve(budgets, amount, ttl=ttl))

    @contextmanager
    def guard(self, hold: Hold) -> Iterator[HoldHandle]:
        """End ``hold`` with the block: an exception before settling releases it (the call
        is taken as failed); a block that ends without settling is charged the full held
        amount, since its real cost is unknown and under-recording is never an option."""
        handle = HoldHandle(self, hold)
        try:
            yield handle
        except BaseException:
            if not handle.done:
                self.release(hold)
            raise
        if not handle.done:
            handle.settle(hold.amount)

    def close(self) -> None:
        self.store.close()


class HoldHandle:
    """What :meth:`Ledger.hold` yields: settle or release the hold it wraps."""

    def __init__(self, ledger: Ledger, hold: Hold) -> None:
        self.ledger = ledger
        self.hold = hold
        self.done = False
        self.cost: Decimal | None = None

    def settle(self, actual: MoneyLike, *, model: str | None = None) -> Decimal:
        self.cost = self.ledger.settle(self.hold, actual, model=model)
        self.done = True
        return self.cost

    def release(self) -> None:
        self.ledger.release(self.hold)
        self.done = True


class AsyncLedger:
    """The same operations as :class:`Ledger`, awaitable, over an async or sync store."""

    def __init__(
        self,
        store: AsyncStore | Store,
        *,
        clock: Clock = system_clock,
        hold_ttl: float = DEFAULT_HOLD_TTL,
        retention: float = DEFAULT_RETENTION,
        purge_every: float = 60.0,
    ) -> None:
        self.store = store
        self._call = _async_store_call(store)
        self._plans = _Plans(clock, hold_ttl, retention, purge_every)

    async def reserve(
        self,
        budgets: Sequence[Budget],
        amount: MoneyLike,
        *,
        ttl: float | None = None,
        hold_id: str | None = None,
    ) -> Hold:
        return await run_async(self._plans.reserve(budgets, amount, ttl, hold_id), self._call)

    async def settle(
        self, hold: Hold | str, actual: MoneyLike, *, model: str | None = None
    ) -> Decimal:
        return await run_async(self._plans.settle(hold, actual, model), self._call)

    async def release(self, hold: Hold | str) -> bool:
        return await run_async(self._plans.release(hold), self._call)

    async def charge(
        self,
        budgets: Sequence[Budget],
        amount: MoneyLike,
        *,
        model: str | None = None,
        charge_id: str | None = None,
    ) -> Decimal:
        return await run_async(self._plans.charge(budgets, amount, model, charge_id), self._call)

    async def status(self, budget: Budget) -> BudgetStatus:
        return await run_async(self._plans.status(budget), self._call)

    async def reset(self, budget: Budget) -> None:
        await run_async(self._plans.reset(budget), self._call)

    async def history(self, budget: Budget, limit: int = 100) -> list[tuple[datetime, Decimal]]:
        return await run_async(self._plans.history(budget, limit), self._call)

    async def purge(self) -> int:
        return await run_async(self._plans.purge(), self._call)

    async def define(self, budget: Budget) -> Budget:
        return await run_async(self._plans.define(budget), self._call)

    async def get(self, scopes: Sequence[str]) -> list[Budget | None]:
        return await run_async(self._plans.get(scopes), self._call)

    async def budgets(self, prefix: str = "") -> list[Budget]:
        return await run_async(self._plans.budgets(prefix), self._call)

    async def delete(self, scope: str) -> bool:
        return await run_async(self._plans.delete(scope), self._call)
