"""Store access for the gateway: holds, documents and logs, off the event loop, cheaply.

This is the ledger's reserve/settle/release (same store operations, same semantics:
one atomic multi-scope reserve, idempotent settle, opportunistic purge) specialised for a
hot path that runs them thousands of times a second:

* **One store thread.** A synchronous store (SQLite) runs every call on a single
  dedicated thread. SQLite has one write lock; several threads of one process competing
  for it fall into SQLite's busy handler, which *sleeps* (1, 2, 5 … 100 ms) — that alone
  put p99 latency near 200 ms. One thread never contends with itself.
* **One hop per step.** Settling a hold and appending its spend-log entry share one trip
  to that thread.
* **Cached windows.** A budget's current window is computed once and reused until it
  ends, instead of twice per reserve (calendar maths in a timezone is ~25 µs a budget).
* An in-memory store never blocks and runs inline; an async store is awaited.

>>> import asyncio
>>> from llmbudget.budgets import Budget
>>> from llmbudget.stores.memory import MemoryStore
>>> io = StoreIO(MemoryStore())
>>> hold = asyncio.run(io.reserve([Budget.of("k", 1)], "0.5"))
>>> asyncio.run(io.settle(hold, "0.2", "m", None))
Decimal('0.2')
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any, TypeVar

from llmbudget.budgets import Budget, BudgetStatus
from llmbudget.clock import Clock, system_clock
from llmbudget.errors import BudgetExceededError
from llmbudget.ledger import DEFAULT_RETENTION, Hold
from llmbudget.money import MoneyLike, cost_to_units, from_units, to_units
from llmbudget.periods import Window
from llmbudget.stores.base import AsyncStore, Line, LogEntry, Refusal, SettleResult, Store, Usage
from llmbudget.stores.base import validate_lines as _validate_lines
from llmbudget.stores.memory import MemoryStore

__all__ = ["LogRecord", "StoreIO"]

T = TypeVar("T")

#: ``(kind, at, data)`` of a log entry to append with a ledger operation.
LogRecord = tuple[str, float, Mapping[str, Any]]

_PURGE_EVERY = 60.0
_CACHE_MAX = 100_000


class StoreIO:
    """The gateway's one door to its store (sync, async or in-memory)."""

    def __init__(
        self,
        store: Store | AsyncStore,
        *,
        clock: Clock = system_clock,
        hold_ttl: float = 3600.0,
        retention: float = DEFAULT_RETENTION,
        inline: bool | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.hold_ttl = hold_ttl
        self.retention = retention
        self._sync: Store | None = store if isinstance(store, Store) else None
        self._inline = isinstance(store, MemoryStore) if inline is None else inline
        self._executor = (
            ThreadPoolExecutor(1, thread_name_prefix="llmbudget-store")
            if self._sync is not None and not self._inline
            else None
        )
        self._next_purge = 0.0
        self._windows: dict[tuple[Any, float], Window] = {}
        self._limits: dict[Decimal, int] = {}

    # -- plumbing -----------------------------------------------------------------------------

    async def _run(self, fn: Callable[[], T]) -> T:
        if self._executor is None:
            return fn()
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def call(self, name: str, *args: Any) -> Any:
        """Any store method by name (``get_doc``, ``list_docs``, ``read_log`` ...)."""
        method = getattr(self.store, name)
        if self._sync is not None:
            return await self._run(lambda: method(*args))
        result = method(*args)
        if inspect.isawaitable(result):
            result = await result
        return result

    def _window(self, budget: Budget, now: float) -> Window:
        key = (budget.period, budget.created_at)
        window = self._windows.get(key)
        if window is None or now < window.start or (window.end is not None and now >= window.end):
            window = budget.window_at(now)
            if len(self._windows) >= _CACHE_MAX:
                self._windows.clear()
            self._windows[key] = window
        return window

    def _limit(self, limit: Decimal | None) -> int | None:
        if limit is None:
            return None
        units = self._limits.get(limit)
        if units is None:
            units = to_units(limit)
            if len(self._limits) >= _CACHE_MAX:
                self._limits.clear()
            self._limits[limit] = units
        return units

    # -- ledger operations ------------------------------------------------------------------

    async def reserve(self, budgets: Sequence[Budget], amount: MoneyLike) -> Hold:
        """Hold ``amount`` on every budget or none; raises :class:`BudgetExceededError`."""
        now = self.clock()
        units = cost_to_units(amount, what="reserve amount")
        windows = [self._window(b, now) for b in budgets]
        lines = [
            Line(b.scope, w.key, self._limit(b.limit))
            for b, w in zip(budgets, windows, strict=True)
        ]
        _validate_lines(lines, units)
        hold = Hold(
            id=os.urandom(16).hex(),
            amount=from_units(units),
            scopes=tuple(b.scope for b in budgets),
            expires_at=now + self.hold_ttl,
            resets_at=tuple(w.end for w in windows),
        )
        purge = now >= self._next_purge
        if purge:
            # Opportunistic clean-up of expired holds, as the ledger does: no background job.
            self._next_purge = now + _PURGE_EVERY
        refusal: Refusal | None
        if self._sync is not None:
            store = self._sync

            def run() -> Refusal | None:
                if purge:
                    store.purge(now, self.retention)
                return store.reserve(hold.id, lines, units, hold.expires_at, now)

            refusal = await self._run(run)
        else:
            if purge:
                await self.call("purge", now, self.retention)
            refusal = await self.call("reserve", hold.id, lines, units, hold.expires_at, now)
        if refusal is not None:
            budget, window = budgets[refusal.index], windows[refusal.index]
            assert budget.limit is not None  # only limited lines are refused
            raise BudgetExceededError(
                scope=budget.scope,
                limit=budget.limit,
                spent=from_units(refusal.spent),
                held=from_units(refusal.held),
                requested=hold.amount,
                resets_at=window.end_datetime(budget.period.zone),
            )
        return hold

    async def settle(
        self, hold: Hold, actual: MoneyLike, model: str | None, log: LogRecord | None
    ) -> Decimal:
        """Record the real cost (idempotent), then the log entry, in one trip.

        The log entry is appended even when the store says the hold was ``already``
        settled: that is a retry of a settle whose log append failed (the settle had been
        committed, the entry had not), and skipping it would lose the entry. The entry is
        thus written at least once; a retry after an append that did commit but reported a
        failure can write it twice (same ``id``), never zero times.
        """
        units = cost_to_units(actual, what="actual cost")
        now = self.clock()
        if self._sync is not None:
            store = self._sync

            def run() -> SettleResult:
                result = store.settle(hold.id, units, model, now)
                if log is not None:
                    store.append_log(*log)
                return result

            result: SettleResult = await self._run(run)
        else:
            result = await self.call("settle", hold.id, units, model, now)
            if log is not None:
                await self.call("append_log", *log)
        return from_units(result.actual)

    async def release(self, hold: Hold, log: LogRecord | None = None) -> bool:
        """End a hold without spend; ``False`` if it had already ended."""
        now = self.clock()
        if self._sync is not None:
            store = self._sync

            def run() -> bool:
                released = store.release(hold.id, now)
                if log is not None:
                    store.append_log(*log)
                return released

            return await self._run(run)
        released: bool = await self.call("release", hold.id, now)
        if log is not None:
            await self.call("append_log", *log)
        return released

    async def append_log(self, kind: str, at: float, data: Mapping[str, Any]) -> None:
        await self.call("append_log", kind, at, data)

    async def read_log(self, kind: str, since: float, until: float, limit: int) -> list[LogEntry]:
        entries: list[LogEntry] = await self.call("read_log", kind, since, until, limit)
        return entries

    async def status(self, budget: Budget) -> BudgetStatus:
        """Where ``budget`` stands in its current window."""
        now = self.clock()
        window = budget.window_at(now)
        usage: Usage = await self.call("usage", budget.scope, window.key, now)
        zone = budget.period.zone
        return BudgetStatus(
            scope=budget.scope,
            limit=budget.limit,
            spent=from_units(usage.spent),
            held=from_units(usage.held),
            window_start=window.start_datetime(zone),
            resets_at=window.end_datetime(zone),
            by_model={m: from_units(u) for m, u in sorted(usage.by_model.items())},
        )

    async def aclose(self, *, close_store: bool) -> None:
        if close_store:
            if self._sync is not None:
                await self._run(self._sync.close)
            else:
                closer = getattr(self.store, "aclose", None)
                if closer is not None:
                    await closer()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
