"""The seed's ``last_updated_at``, moved back by hand: the next duration check resets.

In LiteLLM's ``BudgetManager`` a user's window starts at ``last_updated_at``, and
``reset_on_duration`` / ``update_budget_all_users()`` zero the spend once ``duration``
days have passed since. Its own test moves ``user_dict[user]["last_updated_at"]`` back a
day and expects the next ``update_budget_all_users()`` to reset that user.

llmbudget's windows follow the calendar by themselves, so ``last_updated_at`` reads as
the start of the current window. Moving it *back* is kept with the seed's meaning: the
new start is stored (a small document of kind :data:`KIND` per user, in the same store,
so every process sees it), ``last_updated_at`` reads as that start for the rest of the
current window, and the first duration check made ``duration`` days after it resets the
user's current window, once. When the calendar window ends first, the mark lapses: the
new window already starts from zero. Moving it *forward* is refused (the window's
boundary is the calendar's, not a counter's).

>>> from llmbudget.budgets import Budget
>>> from llmbudget.clock import FrozenClock
>>> from llmbudget.ledger import Ledger
>>> clock = FrozenClock(1_773_576_000.0)  # 2026-03-15 12:00 UTC
>>> ledger = Ledger("memory://", clock=clock)
>>> ann = ledger.define(Budget.of("user:app:ann", 10, "daily"))
>>> _ = ledger.charge([ann], "2.5")
>>> move_back(ledger, ann, last_updated_at(ledger, ann) - 86_400)
>>> apply_due(ledger, ann), ledger.status(ann).spent
(True, Decimal('0'))
"""

from __future__ import annotations

import math

from llmbudget.budgets import Budget
from llmbudget.errors import InvalidInputError
from llmbudget.ledger import Ledger
from llmbudget.server.seed_protocol import seed_days

__all__ = ["KIND", "apply_due", "due_scopes", "last_updated_at", "move_back"]

KIND = "seed-window-start"
_DAY = 86_400


def last_updated_at(ledger: Ledger, budget: Budget) -> float:
    """The seed's ``last_updated_at``: a start moved back in this window, else the
    window's own start (epoch seconds)."""
    now = ledger.clock()
    window = budget.window_at(now)
    mark = ledger.store.get_doc(KIND, budget.scope)
    if mark is not None and mark.get("window") == window.key:
        start = mark.get("start")
        if isinstance(start, int | float):
            return float(start)
    return window.start


def move_back(ledger: Ledger, budget: Budget, start: float) -> None:
    """Make ``start`` the seed's ``last_updated_at`` for the current window.

    Raises :class:`~llmbudget.errors.InvalidInputError` for a lifetime budget (the seed's
    record has no duration to reset on), a time that is not a finite number, or a time
    after the window's start.
    """
    if isinstance(start, bool) or not isinstance(start, int | float) or not math.isfinite(start):
        raise InvalidInputError(f"last_updated_at must be epoch seconds, got {start!r}")
    if budget.period.is_lifetime:
        raise InvalidInputError(
            "last_updated_at of a budget without a duration cannot move: it never resets"
        )
    now = ledger.clock()
    window = budget.window_at(now)
    if start > window.start:
        raise InvalidInputError(
            f"last_updated_at can only move back: this {budget.period.describe()} window "
            f"started at {window.start} and resets by itself at its calendar boundary"
        )
    if start == window.start:
        ledger.store.delete_doc(KIND, budget.scope)
        return
    ledger.store.put_doc(KIND, budget.scope, {"start": float(start), "window": window.key})


def apply_due(ledger: Ledger, budget: Budget) -> bool:
    """The seed's ``reset_on_duration`` for a moved-back start: reset the current window
    if ``duration`` days have passed since that start. ``True`` if it reset.

    Only the caller that removes the mark resets, so two processes running the seed's
    daily job at once reset a user once, not twice.
    """
    mark = ledger.store.get_doc(KIND, budget.scope)
    if mark is None:
        return False
    now = ledger.clock()
    days = seed_days(budget.period)
    start = mark.get("start")
    if (
        days is None
        or mark.get("window") != budget.window_at(now).key
        or not isinstance(start, int | float)
    ):
        # The calendar window it was made in is over (or the budget changed): lapsed.
        ledger.store.delete_doc(KIND, budget.scope)
        return False
    if now - start < days * _DAY:
        return False
    if not ledger.store.delete_doc(KIND, budget.scope):
        return False
    ledger.reset(budget)
    return True


def due_scopes(ledger: Ledger, prefix: str) -> list[str]:
    """Scopes under ``prefix`` that carry a moved-back start (due or not)."""
    return [key for key, _ in ledger.store.list_docs(KIND, prefix)]
