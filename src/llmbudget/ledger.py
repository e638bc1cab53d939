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

Rate limits are budgets in other units (:mod:`llmbudget.units`) in the same reserve: the
call says how many requests, tokens and slots it takes (``counts``), each budget holds
its own amount, and the reserve is still all or nothing::

    rpm = Budget.of("rpm:key:k1", 10, "1m", unit="requests")
    hold = ledger.reserve([user_budget, rpm], worst_case, counts={"requests": 1})

Each operation is written once, as a *plan*: a generator that yields the store calls it
needs and receives their results (see :mod:`llmbudget.plans`). :class:`Ledger` runs
plans against a :class:`Store`; :class:`AsyncLedger` awaits them against an
:class:`AsyncStore` (or runs a synchronous store in a worker thread). Neither holds any
logic of its own.

>>> from llmbudget.budgets import Budget
>>> ledger = Ledger("memory://")
>>> alice = Budget.of("user:alice", 1, "daily")
>>> with ledger.hold([alice], "0.25") as h:
...     _ = h.settle("0.10", model="gpt-4o")
>>> ledger.status(alice).spent
Decimal('0.1')
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from llmbudget import operations as ops
from llmbudget.budgets import Budget, BudgetStatus
from llmbudget.clock import Clock, system_clock
from llmbudget.errors import BudgetExceededError, InvalidInputError
from llmbudget.journal import Journal, LogRecord, Pending, default_journal, store_identity
from llmbudget.money import MoneyLike, cost_to_units, from_units
from llmbudget.periods import Period, Window
from llmbudget.plans import Plan, run_async, run_sync
from llmbudget.replay import Load, plan_land, plan_replay_due
from llmbudget.stores import open_store
from llmbudget.stores.base import (
    AsyncStore,
    BudgetRecord,
    Line,
    Refusal,
    SettleResult,
    Store,
    Usage,
)
from llmbudget.stores.base import validate_lines as _validate_lines
from llmbudget.units import Unit, check_counts
from llmbudget.validation import check_id, check_ttl

__all__ = [
    "AsyncLedger",
    "Counts",
    "Hold",
    "HoldHandle",
    "Ledger",
    "LedgerPlans",
    "LogRecord",
    "new_hold_id",
    "settle_counts",
]

DEFAULT_HOLD_TTL = 600.0
DEFAULT_RETENTION = 86_400.0
# How many past windows a redefinition looks through for spend to carry (a year of days).
_CARRY_WINDOWS = 400
_WINDOW_CACHE = 100_000


#: What a call takes of each counted unit: ``{"requests": 1, "tokens": 900, "concurrent": 1}``.
Counts = Mapping[str, int]


@dataclass(frozen=True, slots=True)
class Hold:
    """A reservation: ``amount`` dollars held on ``scopes`` until settled, released or expired.

    ``units[i]`` is the unit of ``scopes[i]`` and ``held[i]`` what that scope holds, as
    stores keep it (nano-dollars for ``usd``, else the count), so that a settle can record
    each scope in its own unit. Settle such a hold with this object, not its id."""

    id: str
    amount: Decimal
    scopes: tuple[str, ...]
    expires_at: float
    resets_at: tuple[float | None, ...] = field(default=(), compare=False)
    units: tuple[Unit, ...] = ()
    held: tuple[int, ...] = ()
    #: The window key of each scope (where a settle records the spend).
    windows: tuple[int, ...] = field(default=(), compare=False)


class LedgerPlans:
    """Every ledger operation on one store, written once as a plan. Pure: the plans yield
    typed store operations (:mod:`llmbudget.operations`) and read only the injected clock.

    Settles and charges the store cannot take are kept in ``journal`` (default: the
    process's, :func:`~llmbudget.journal.default_journal`) and replayed until they land
    (:mod:`llmbudget.replay`); reserves count what is kept there.

    :class:`Ledger` runs them synchronously, :class:`AsyncLedger` under asyncio, and a
    budgeted call composes them (``yield from ledger.plans.reserve(...)``) with its own
    steps, so a call that spans several stores is still one plan."""

    def __init__(
        self,
        store: Store | AsyncStore,
        clock: Clock,
        hold_ttl: float,
        retention: float,
        purge_every: float,
        journal: Journal | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self._journal = journal
        #: What names this store in the journal.
        self.store_key = store_identity(store)
        self.hold_ttl = check_ttl(hold_ttl, "hold_ttl")
        self.retention = retention
        self.purge_every = purge_every
        self._next_purge = 0.0
        # Calendar maths in a timezone costs ~25 µs a budget: a window is computed once and
        # reused while the clock stays inside it (hot paths reserve thousands a second).
        self._windows: dict[tuple[Period, float], Window] = {}

    @property
    def journal(self) -> Journal:
        return self._journal if self._journal is not None else default_journal()

    def window(self, budget: Budget, now: float) -> Window:
        """``budget``'s window at ``now`` (cached until the clock leaves it)."""
        key = (budget.period, budget.created_at)
        window = self._windows.get(key)
        if window is None or now < window.start or (window.end is not None and now >= window.end):
            window = budget.window_at(now)
            if len(self._windows) >= _WINDOW_CACHE:
                self._windows.clear()
            self._windows[key] = window
        return window

    def reserve(
        self,
        budgets: Sequence[Budget],
        amount: MoneyLike,
        ttl: float | None = None,
        hold_id: str | None = None,
        counts: Counts | None = None,
    ) -> Plan[Hold]:
        """Hold ``amount`` dollars on the ``usd`` budgets and ``counts[unit]`` on each
        budget in another unit, all at once or not at all. A budget whose unit has no
        count in ``counts`` is refused (:class:`~llmbudget.errors.InvalidInputError`):
        a call must say how many requests, tokens or slots it takes."""
        now = self.clock()
        units = cost_to_units(amount, what="reserve amount")
        taken = check_counts(counts)
        ttl = check_ttl(self.hold_ttl if ttl is None else ttl)
        if hold_id is not None:
            check_id(hold_id)
        windows = [self.window(b, now) for b in budgets]
        own = [_line_amount(b, taken) for b in budgets]
        lines = [b.line(w, a) for b, w, a in zip(budgets, windows, own, strict=True)]
        _validate_lines(lines, units)
        journal = self.journal
        if journal.stale():
            yield Load(journal)
        # Spend kept in the journal is spend: the limits left for this reserve shrink by it.
        pending = journal.counted(self.store_key, lines, now)
        if pending is not None:
            lines = [_less(line, extra) for line, extra in zip(lines, pending, strict=True)]
        if now >= self._next_purge:
            # Opportunistic clean-up, so a library user needs no background job.
            self._next_purge = now + self.purge_every
            yield ops.Purge(self.store, now, self.retention)
        hold = Hold(
            id=hold_id or new_hold_id(),
            amount=from_units(units),
            scopes=tuple(b.scope for b in budgets),
            expires_at=now + ttl,
            resets_at=tuple(w.end for w in windows),
            units=tuple(b.unit for b in budgets),
            held=tuple(line.amount_or(units) for line in lines),
            windows=tuple(w.key for w in windows),
        )
        refusal: Refusal | None = yield ops.Reserve(
            self.store, hold.id, lines, units, hold.expires_at, now
        )
        # The store answered (a refusal too): a good moment to land what was kept.
        yield from plan_replay_due(self.store, journal, self.store_key)
        if refusal is not None:
            budget = budgets[refusal.index]
            assert budget.limit is not None  # only limited lines are refused
            kept = 0 if pending is None else pending[refusal.index]
            raise BudgetExceededError(
                scope=budget.scope,
                limit=budget.limit,
                spent=budget.amount(refusal.spent),
                held=budget.amount(refusal.held + kept),
                requested=budget.amount(hold.held[refusal.index]),
                resets_at=windows[refusal.index].end_datetime(budget.period.zone),
                unit=budget.unit,
            )
        return hold

    def settle(
        self,
        hold: Hold | str,
        actual: MoneyLike,
        model: str | None = None,
        log: LogRecord | None = None,
        counts: Counts | None = None,
    ) -> Plan[Decimal]:
        """Settle; with ``log``, append that entry in the same atomic store operation.

        Each scope records in its own unit: ``actual`` dollars on ``usd`` scopes;
        ``counts[unit]`` on the others, else what the scope held (a call that cannot say
        what it used counts as reserved); always 0 on ``concurrent`` scopes, whose slot is
        free once the hold ends (see :func:`settle_counts`).

        The entry is appended only by the settle that settles the hold: a retry, or a
        replay of a settle that had landed after all, appends nothing again (exactly once).

        A store that fails is tried again briefly, then the settle is kept in the journal
        and replayed until it lands: it returns ``actual`` as recorded."""
        units = cost_to_units(actual, what="actual cost")
        used = check_counts(counts)
        if isinstance(hold, str) and used:
            raise InvalidInputError("settling counts needs the Hold (it knows each scope's unit)")
        actuals = settle_counts(hold, used) if isinstance(hold, Hold) else None
        now = self.clock()
        hold_id = _hold_id(hold)
        op = ops.Settle(self.store, hold_id, units, model, now, actuals, log)
        journal = self.journal

        def entry() -> Pending:
            if isinstance(hold, str):  # by id alone: replayed, but nothing to count it on
                return Pending(
                    self.store_key, "settle", hold_id, units, model=model, at=now, log=log
                )
            # Only the scopes in dollars: reserves count a kept settle's dollars there,
            # and a purged hold's settle lands as a charge of dollars on them.
            dollars = [
                (scope, window)
                for scope, window, unit in zip(
                    hold.scopes, hold.windows, hold.units or ("usd",) * len(hold.scopes),
                    strict=False,
                )
                if unit == "usd"
            ]  # fmt: skip
            return Pending(
                self.store_key,
                "settle",
                hold_id,
                units,
                held=cost_to_units(hold.amount),
                expires_at=hold.expires_at,
                lines=tuple(dollars),
                model=model,
                at=now,
                log=log,
                actuals=actuals,
            )

        landed, outcome = yield from plan_land(
            op, journal, (self.store_key, "settle", hold_id), entry
        )
        if not landed:
            return from_units(units)
        result: SettleResult = outcome
        yield from plan_replay_due(self.store, journal, self.store_key)
        return from_units(result.actual)

    def release(self, hold: Hold | str, log: LogRecord | None = None) -> Plan[bool]:
        release = ops.Release(self.store, _hold_id(hold), self.clock())
        if log is None:
            released: bool = yield release
            return released
        results = yield ops.Batch(self.store, (release, ops.AppendLog(self.store, *log)))
        return bool(results[0])

    def charge(
        self,
        budgets: Sequence[Budget],
        amount: MoneyLike,
        model: str | None = None,
        charge_id: str | None = None,
    ) -> Plan[Decimal]:
        """Record a cost that happened. Always under a charge id (a fresh one if none is
        given), so that a retry after an ambiguous failure, or a replay from the journal,
        records it once."""
        now = self.clock()
        units = cost_to_units(amount, what="charge amount")
        if charge_id is not None:
            check_id(charge_id, "charge id")
        for budget in budgets:
            if budget.unit != "usd":
                raise InvalidInputError(
                    f"a charge records dollars; {budget.scope!r} counts {budget.unit} "
                    "(reserve and settle a call to count it)"
                )
        lines = [b.line(self.window(b, now)) for b in budgets]
        _validate_lines(lines, units)
        charge_id = charge_id or new_hold_id()
        journal = self.journal
        spots = tuple((line.scope, line.window) for line in lines)
        landed, _ = yield from plan_land(
            ops.Charge(self.store, lines, units, model, now, charge_id),
            journal,
            (self.store_key, "charge", charge_id),
            lambda: Pending(
                self.store_key, "charge", charge_id, units, lines=spots, model=model, at=now
            ),
        )
        if landed:
            yield from plan_replay_due(self.store, journal, self.store_key)
        return from_units(units)

    def status(self, budget: Budget) -> Plan[BudgetStatus]:
        now = self.clock()
        window = self.window(budget, now)
        usage: Usage = yield ops.Usage_(self.store, budget.scope, window.key, now)
        yield from plan_replay_due(self.store, self.journal, self.store_key)
        return BudgetStatus(
            scope=budget.scope,
            limit=budget.limit,
            spent=budget.amount(usage.spent),
            held=budget.amount(usage.held),
            window_start=window.start_datetime(budget.period.zone),
            resets_at=window.end_datetime(budget.period.zone),
            by_model={m: budget.amount(u) for m, u in sorted(usage.by_model.items())},
            unit=budget.unit,
        )

    def reset(self, budget: Budget) -> Plan[None]:
        yield ops.Reset(self.store, budget.scope, self.window(budget, self.clock()).key)

    def history(self, budget: Budget, limit: int) -> Plan[list[tuple[datetime, Decimal]]]:
        rows: list[tuple[int, int]] = yield ops.History(self.store, budget.scope, limit)
        zone = budget.period.zone
        return [(datetime.fromtimestamp(w, zone), budget.amount(s)) for w, s in rows]

    def purge(self) -> Plan[int]:
        removed: int = yield ops.Purge(self.store, self.clock(), self.retention)
        return removed

    def define(self, budget: Budget) -> Plan[Budget]:
        now = self.clock()
        found: list[BudgetRecord | None] = yield ops.GetBudgets(self.store, [budget.scope])
        # A stored record that cannot be used is replaced, with nothing to carry.
        old = Budget.readable(found[0])
        # A scope's spend is in one unit: dollars counted as requests would be nonsense.
        if old is not None and old.unit != budget.unit:
            raise InvalidInputError(
                f"{budget.scope!r} is a budget in {old.unit}; a budget in {budget.unit} "
                "needs a scope of its own"
            )
        yield ops.PutBudget(self.store, budget.to_record(now))
        if old is None or (old.period, old.created_at) == (budget.period, budget.created_at):
            return budget
        # The windows were laid out anew (another period, timezone or anchor). Spend is
        # keyed by window, so the new current window would start empty: carry into it every
        # old window that overlaps it. Conservative: an old window only partly inside the
        # new one is carried whole, so spend can be over-counted, never lost.
        window = budget.window_at(now)
        rows: list[tuple[int, int]] = yield ops.History(self.store, budget.scope, _CARRY_WINDOWS)
        carry = sum(
            spent
            for key, spent in rows
            if key != window.key and _overlaps(old.window_at(float(key)), window)
        )
        if carry:
            yield ops.Charge(self.store, [budget.line(window)], carry, None, now)
        return budget

    def get(self, scopes: Sequence[str]) -> Plan[list[Budget | None]]:
        records: list[BudgetRecord | None] = yield ops.GetBudgets(self.store, list(scopes))
        return [None if r is None else Budget.from_record(r) for r in records]

    def budgets(self, prefix: str) -> Plan[list[Budget]]:
        records: list[BudgetRecord] = yield ops.ListBudgets(self.store, prefix)
        # One record that cannot be used must not hide every other budget.
        return [b for r in records if (b := Budget.readable(r)) is not None]

    def delete(self, scope: str) -> Plan[bool]:
        deleted: bool = yield ops.DeleteBudget(self.store, scope)
        return deleted


def new_hold_id() -> str:
    """A fresh hold id: 128 random bits, hex (the one scheme every door uses)."""
    return os.urandom(16).hex()


def _line_amount(budget: Budget, counts: Mapping[Unit, int]) -> int | None:
    """What ``budget``'s line reserves: ``None`` (the dollars of the reserve) for ``usd``,
    else the call's count in the budget's unit."""
    if budget.unit == "usd":
        return None
    if budget.unit not in counts:
        raise InvalidInputError(
            f"{budget.scope!r} limits {budget.unit}: say how many this call takes "
            f"(counts={{{budget.unit!r}: ...}})"
        )
    return counts[budget.unit]


def settle_counts(hold: Hold, counts: Mapping[Unit, int]) -> dict[str, int] | None:
    """The per-scope amounts a settle of ``hold`` records instead of its dollars: for each
    scope in another unit, 0 for ``concurrent`` (a slot is held, never spent), else
    ``counts[unit]``, else what the scope held. ``None`` for a hold in dollars only.

    >>> hold = Hold("h", Decimal(1), ("user:a", "rpm:a", "slots:a"), 0.0,
    ...             units=("usd", "requests", "concurrent"), held=(10**9, 1, 1))
    >>> settle_counts(hold, {})
    {'rpm:a': 1, 'slots:a': 0}
    """
    actuals = {
        scope: 0 if unit == "concurrent" else counts.get(unit, held)
        for scope, unit, held in zip(hold.scopes, hold.units, hold.held, strict=True)
        if unit != "usd"
    }
    return actuals or None


def _less(line: Line, extra: int) -> Line:
    """``line`` with its limit lowered by ``extra`` units (never below zero)."""
    if line.limit is None or not extra:
        return line
    return Line(line.scope, line.window, max(0, line.limit - extra), line.amount)


def _overlaps(a: Window, b: Window) -> bool:
    return (b.end is None or a.start < b.end) and (a.end is None or a.end > b.start)


def _hold_id(hold: Hold | str) -> str:
    return hold if isinstance(hold, str) else hold.id


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
        journal: Journal | None = None,
    ) -> None:
        self.store = store if isinstance(store, Store) else open_store(store)
        self.plans = LedgerPlans(self.store, clock, hold_ttl, retention, purge_every, journal)

    @property
    def clock(self) -> Clock:
        return self.plans.clock

    def reserve(
        self,
        budgets: Sequence[Budget],
        amount: MoneyLike,
        *,
        ttl: float | None = None,
        hold_id: str | None = None,
        counts: Counts | None = None,
    ) -> Hold:
        """Hold ``amount`` on every budget at once, or raise :class:`BudgetExceededError`;
        budgets in other units hold ``counts[unit]`` (see :meth:`LedgerPlans.reserve`)."""
        return run_sync(self.plans.reserve(budgets, amount, ttl, hold_id, counts))

    def settle(
        self,
        hold: Hold | str,
        actual: MoneyLike,
        *,
        model: str | None = None,
        counts: Counts | None = None,
    ) -> Decimal:
        """Record the real cost of a held call (idempotent); returns what was recorded.
        Budgets in other units record ``counts`` (see :meth:`LedgerPlans.settle`)."""
        return run_sync(self.plans.settle(hold, actual, model, None, counts))

    def release(self, hold: Hold | str) -> bool:
        """Drop a hold without spend (the call failed); ``False`` if it had already ended."""
        return run_sync(self.plans.release(hold))

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
        return run_sync(self.plans.charge(budgets, amount, model, charge_id))

    def status(self, budget: Budget) -> BudgetStatus:
        return run_sync(self.plans.status(budget))

    def reset(self, budget: Budget) -> None:
        """Zero the spend of the budget's current window."""
        run_sync(self.plans.reset(budget))

    def history(self, budget: Budget, limit: int = 100) -> list[tuple[datetime, Decimal]]:
        return run_sync(self.plans.history(budget, limit))

    def purge(self) -> int:
        return run_sync(self.plans.purge())

    def define(self, budget: Budget) -> Budget:
        return run_sync(self.plans.define(budget))

    def get(self, scopes: Sequence[str]) -> list[Budget | None]:
        return run_sync(self.plans.get(scopes))

    def budgets(self, prefix: str = "") -> list[Budget]:
        return run_sync(self.plans.budgets(prefix))

    def delete(self, scope: str) -> bool:
        return run_sync(self.plans.delete(scope))

    def hold(
        self,
        budgets: Sequence[Budget],
        amount: MoneyLike,
        *,
        ttl: float | None = None,
        counts: Counts | None = None,
    ) -> AbstractContextManager[HoldHandle]:
        """Reserve for a ``with`` block; call ``handle.settle(cost)`` once the call returns."""
        return self.guard(self.reserve(budgets, amount, ttl=ttl, counts=counts))

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

    def settle(
        self, actual: MoneyLike, *, model: str | None = None, counts: Counts | None = None
    ) -> Decimal:
        self.cost = self.ledger.settle(self.hold, actual, model=model, counts=counts)
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
        journal: Journal | None = None,
    ) -> None:
        self.store = store
        self.plans = LedgerPlans(store, clock, hold_ttl, retention, purge_every, journal)

    @property
    def clock(self) -> Clock:
        return self.plans.clock

    async def reserve(
        self,
        budgets: Sequence[Budget],
        amount: MoneyLike,
        *,
        ttl: float | None = None,
        hold_id: str | None = None,
        counts: Counts | None = None,
    ) -> Hold:
        return await run_async(self.plans.reserve(budgets, amount, ttl, hold_id, counts))

    async def settle(
        self,
        hold: Hold | str,
        actual: MoneyLike,
        *,
        model: str | None = None,
        counts: Counts | None = None,
    ) -> Decimal:
        return await run_async(self.plans.settle(hold, actual, model, None, counts))

    async def release(self, hold: Hold | str) -> bool:
        return await run_async(self.plans.release(hold))

    async def charge(
        self,
        budgets: Sequence[Budget],
        amount: MoneyLike,
        *,
        model: str | None = None,
        charge_id: str | None = None,
    ) -> Decimal:
        return await run_async(self.plans.charge(budgets, amount, model, charge_id))

    async def status(self, budget: Budget) -> BudgetStatus:
        return await run_async(self.plans.status(budget))

    async def reset(self, budget: Budget) -> None:
        await run_async(self.plans.reset(budget))

    async def history(self, budget: Budget, limit: int = 100) -> list[tuple[datetime, Decimal]]:
        return await run_async(self.plans.history(budget, limit))

    async def purge(self) -> int:
        return await run_async(self.plans.purge())

    async def define(self, budget: Budget) -> Budget:
        return await run_async(self.plans.define(budget))

    async def get(self, scopes: Sequence[str]) -> list[Budget | None]:
        return await run_async(self.plans.get(scopes))

    async def budgets(self, prefix: str = "") -> list[Budget]:
        return await run_async(self.plans.budgets(prefix))

    async def delete(self, scope: str) -> bool:
        return await run_async(self.plans.delete(scope))
