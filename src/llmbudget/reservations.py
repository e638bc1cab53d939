"""Reservations across ledgers: one call held against budgets kept in several stores.

A call may be limited by budgets in different ledgers at once: the global one, a user's
in a :class:`~llmbudget.BudgetManager`, every enclosing ``llmbudget.budget()`` block, the
gateway's key/team/org scopes. :func:`plan_reserve` holds the call on all of them: one
atomic multi-scope reserve per store, and when several stores are involved, one after
the other, the earlier holds released if a later one is refused. :func:`plan_settle`
records the real cost on every part; a part whose store fails is kept in the journal and
replayed until it lands (see :mod:`llmbudget.replay`), so a settle is never lost.

Rate limits ride along: ``counts`` says how many requests, tokens and slots the call
takes (reserve) and used (settle), and each budget in such a unit holds and records its
count beside the dollars, in the same atomic reserve (see :meth:`LedgerPlans.reserve
<llmbudget.ledger.LedgerPlans.reserve>`).

These are plans (see :mod:`llmbudget.plans`): the same code runs under ``run_sync`` and
``run_async``.

>>> from llmbudget.budgets import Budget
>>> from llmbudget.ledger import Ledger
>>> from llmbudget.plans import run_sync
>>> ledger = Ledger("memory://")
>>> group = ScopeGroup(ledger.plans, (Budget.of("user:a", 1),))
>>> hold = run_sync(plan_reserve([group], "0.5"))
>>> run_sync(plan_settle(hold, "0.2", "gpt-4o"))
Decimal('0.2')
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from llmbudget.budgets import Budget
from llmbudget.ledger import Counts, Hold, LedgerPlans, LogRecord
from llmbudget.money import MoneyLike, cost_to_units, from_units
from llmbudget.plans import Plan

__all__ = [
    "MultiHold",
    "ScopeGroup",
    "merge_groups",
    "plan_release",
    "plan_reserve",
    "plan_settle",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ScopeGroup:
    """Budgets kept in one ledger (its :class:`~llmbudget.ledger.LedgerPlans`) that a call
    must fit in."""

    plans: LedgerPlans
    budgets: tuple[Budget, ...]

    @property
    def limited(self) -> bool:
        return any(b.limit is not None for b in self.budgets)


@dataclass(frozen=True, slots=True)
class MultiHold:
    """Holds taken for one call, one per store involved; ``counts`` is what the call
    reserved of each counted unit (requests, tokens, slots)."""

    amount: Decimal
    parts: tuple[tuple[ScopeGroup, Hold], ...]
    counts: Mapping[str, int] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """The first part's hold id (the one a log entry names)."""
        return self.parts[0][1].id if self.parts else ""


def merge_groups(groups: Sequence[ScopeGroup]) -> list[ScopeGroup]:
    """Budgets that share a store go into one reserve: atomic across all of them."""
    merged: dict[int, tuple[LedgerPlans, list[Budget]]] = {}
    for group in groups:
        if not group.budgets:
            continue
        key = id(group.plans.store)
        if key not in merged:
            merged[key] = (group.plans, [])
        target = merged[key][1]
        for budget in group.budgets:
            if all(b.scope != budget.scope for b in target):
                target.append(budget)
    return [ScopeGroup(plans, tuple(budgets)) for plans, budgets in merged.values()]


def plan_reserve(
    groups: Sequence[ScopeGroup],
    amount: MoneyLike,
    *,
    ttl: float | None = None,
    counts: Counts | None = None,
) -> Plan[MultiHold]:
    """Hold ``amount`` on every budget of every group, or on none of them; budgets in
    other units hold ``counts[unit]``."""
    exact = from_units(cost_to_units(amount, what="reserve amount"))
    taken: list[tuple[ScopeGroup, Hold]] = []
    try:
        for group in merge_groups(groups):
            hold = yield from group.plans.reserve(list(group.budgets), exact, ttl, None, counts)
            taken.append((group, hold))
    except BaseException:
        # A later store refused (or failed): give back what the earlier ones granted. A
        # release that fails too leaves its hold to expire; the refusal is what matters.
        for group, hold in taken:
            try:
                yield from group.plans.release(hold)
            except Exception:
                log.warning("could not release hold %s; it expires by itself", hold.id)
        raise
    return MultiHold(exact, tuple(taken), dict(counts or {}))


def plan_settle(
    hold: MultiHold,
    actual: MoneyLike,
    model: str | None,
    entry: LogRecord | None = None,
    counts: Counts | None = None,
) -> Plan[Decimal]:
    """Record ``actual`` on every part of ``hold`` (and ``counts`` on its budgets in other
    units); ``entry`` is appended to the first part's store in the same trip as its settle.

    A part whose store fails is retried, then kept in the journal (by
    :meth:`LedgerPlans.settle <llmbudget.ledger.LedgerPlans.settle>`, through
    :func:`llmbudget.replay.plan_land`): it counts as recorded. An error that nothing
    could keep (the journal unwritable too, a refused argument) is raised once every
    other part has been settled."""
    recorded = Decimal(0)
    first_error: BaseException | None = None
    for index, (group, part) in enumerate(hold.parts):
        record = entry if index == 0 else None
        try:
            recorded = yield from group.plans.settle(part, actual, model, record, counts)
        except Exception as exc:
            first_error = first_error or exc
    if first_error is not None:
        raise first_error
    return recorded


def plan_release(hold: MultiHold, entry: LogRecord | None = None) -> Plan[None]:
    """Drop every part of ``hold`` (the call failed and nothing was billed); ``entry`` is
    appended with the first part's release."""
    first_error: BaseException | None = None
    for index, (group, part) in enumerate(hold.parts):
        try:
            yield from group.plans.release(part, entry if index == 0 else None)
        except Exception as exc:
            first_error = first_error or exc
    if first_error is not None:
        raise first_error
