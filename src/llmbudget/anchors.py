"""Anchors: every process sharing a persistent budget counts the same windows.

Periods of several units (``"30d"``, ``"2w"``, ``"12h"``...) count their windows from the
budget's creation. A budget defined by code on each start (a named ``budget()`` block, the
global budget in a shared store) must therefore take the ``created_at`` its scope already
has in the store, or each process and each run would count spend in windows of its own.

>>> from llmbudget.budgets import Budget
>>> from llmbudget.ledger import Ledger
>>> ledger = Ledger("memory://")
>>> first = anchor(ledger, Budget.of("block:nightly", 5, "2d", created_at=100.0))
>>> anchor(ledger, Budget.of("block:nightly", 5, "2d", created_at=900.0)).created_at
100.0
"""

from __future__ import annotations

from dataclasses import replace

from llmbudget.budgets import Budget
from llmbudget.ledger import Ledger

__all__ = ["anchor"]

_ANCHOR_DOC = "budget_anchor"


def anchor(ledger: Ledger, budget: Budget) -> Budget:
    """``budget`` with the ``created_at`` its scope already has in ``ledger``'s store.

    Periods of several units (``"30d"``, ``"2w"``, ``"12h"``...) count their windows from
    the budget's creation, so every process and every run sharing a persistent budget must
    use the same anchor, or each would count spend in windows of its own (and a restart
    would start again from $0). The first definer wins: a stored definition keeps its
    ``created_at``; when there is none, an insert-if-absent document settles races between
    processes defining it at once. The definition is (re)written, keeping that
    ``created_at``, when it is new or its limit, period or unit changed."""
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
    anchored = replace(budget, created_at=created_at)
    stored = None if existing is None else Budget.from_record(existing)
    if stored is None or (stored.limit, stored.period, stored.unit) != (
        anchored.limit,
        anchored.period,
        anchored.unit,
    ):
        ledger.define(anchored)
    return anchored
