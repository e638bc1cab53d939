"""``BudgetManager``: the seed's per-user budgets, with the same methods and arguments.

The seed's examples run with only the import changed::

    from llmbudget import BudgetManager

    budget_manager = BudgetManager(project_name="test_project")
    user = "1234"
    if not budget_manager.is_valid_user(user):
        budget_manager.create_budget(total_budget=10, user=user)
    if budget_manager.get_current_cost(user=user) <= budget_manager.get_total_budget(user):
        response = completion(model="gpt-3.5-turbo", messages=[...])
        budget_manager.update_cost(completion_obj=response, user=user)

What changes underneath: every update is one atomic write to a store (SQLite by default,
shared safely by threads and processes) instead of rewriting a JSON file of all users;
money is ``Decimal``; periods reset by themselves at their calendar boundary. What it
adds: :meth:`BudgetManager.reserve` / :meth:`~BudgetManager.settle` (and
:meth:`~BudgetManager.hold` as a context manager), so concurrent calls cannot overspend
the way check-then-update can, and :meth:`~BudgetManager.remaining`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import unquote

from llmbudget.budgets import Budget, BudgetStatus, scope_key
from llmbudget.clock import Clock, system_clock
from llmbudget.errors import InvalidAmountError, InvalidInputError, UnknownUserError
from llmbudget.ledger import DEFAULT_HOLD_TTL, Hold, HoldHandle, Ledger
from llmbudget.money import MoneyLike
from llmbudget.periods import Period
from llmbudget.stores import Store, open_store

__all__ = ["BudgetManager", "UserRecord"]

UserRecord = dict[str, Any]
"""The seed's user record: ``total_budget``, ``current_cost``, ``model_cost``, ``duration``
(days, as the seed stored it), ``created_at``, ``last_updated_at`` (start of the current
window), plus ``period``, ``timezone``, ``held`` and ``resets_at``."""

_DAY = 86_400.0
# The seed's day counts for its named durations (it treated a month as 28 days); kept for
# the ``duration`` field only. The windows themselves follow the real calendar.
_SEED_DAYS = {"daily": 1, "weekly": 7, "monthly": 28, "yearly": 365}
_UNIT_SECONDS = {
    "second": 1.0,
    "minute": 60.0,
    "hour": 3600.0,
    "day": _DAY,
    "week": 7 * _DAY,
    "month": 30 * _DAY,
    "year": 365 * _DAY,
}


class BudgetManager:
    """Per-user budgets for one project.

    ``client_type="local"`` keeps budgets in ``store`` (a :class:`Store` or URL; default
    ``$LLMBUDGET_STORE`` or ``sqlite:///llmbudget.db``). ``client_type="hosted"`` talks to a
    budget server (``llmbudget serve``) at ``api_base`` (or ``$LLMBUDGET_SERVER``).
    Projects sharing one store are isolated by ``project_name``.

    >>> bm = BudgetManager("demo", store="memory://")
    >>> _ = bm.create_budget(total_budget=10, user="ann", duration="daily")
    >>> _ = bm.update_cost(user="ann", model="gpt-4o", input_text="hi", output_text="hello")
    >>> bm.get_current_cost("ann") > 0
    True
    """

    def __init__(
        self,
        project_name: str,
        client_type: str = "local",
        api_base: str | None = None,
        headers: dict[str, str] | None = None,
        *,
        store: Store | str | None = None,
        clock: Clock = system_clock,
        timezone: str = "UTC",
        rolling: bool = False,
        hold_ttl: float = DEFAULT_HOLD_TTL,
    ) -> None:
        if not isinstance(project_name, str) or not project_name:
            raise InvalidInputError("project_name must be a non-empty string")
        Period.parse("daily", timezone=timezone)  # refuse a bad timezone now, not at first use
        self.project_name = project_name
        self.client_type = client_type
        self.timezone = timezone
        self.rolling = rolling
        if client_type == "local":
            backend = store if isinstance(store, Store) else open_store(store)
        elif client_type == "hosted":
            if store is not None:
                raise InvalidInputError("client_type='hosted' talks to api_base; pass no store")
            base = api_base or os.environ.get("LLMBUDGET_SERVER")
            if not base:
                raise InvalidInputError(
                    "client_type='hosted' needs api_base (or $LLMBUDGET_SERVER): the URL of an "
                    "`llmbudget serve` budget server"
                )
            from llmbudget.stores.http import HttpStore

            backend = HttpStore(base, headers=headers)
        else:
            raise InvalidInputError(f"client_type must be 'local' or 'hosted', not {client_type!r}")
        self.api_base = api_base
        self.ledger = Ledger(backend, clock=clock, hold_ttl=hold_ttl)

    # -- helpers ---------------------------------------------------------------------

    def _scope(self, user: str) -> str:
        if not isinstance(user, str) or not user:
            raise InvalidInputError(f"user must be a non-empty string, got {user!r}")
        return scope_key("user", self.project_name, user)

    def get_budget(self, user: str) -> Budget:
        """The user's :class:`~llmbudget.budgets.Budget` (scope, limit, period), for use with
        the :attr:`ledger` directly, e.g. in a multi-scope reserve with a team budget."""
        found = self.ledger.get([self._scope(user)])[0]
        if found is None:
            raise UnknownUserError(user, self.project_name)
        return found

    def _record(self, budget: Budget, status: BudgetStatus | None = None) -> UserRecord:
        status = status or self.ledger.status(budget)
        period = budget.period
        return {
            "total_budget": budget.limit,
            "current_cost": status.spent,
            "model_cost": dict(status.by_model),
            "duration": _seed_days(period),
            "created_at": budget.created_at,
            "last_updated_at": status.window_start.timestamp(),
            "period": period.describe(),
            "timezone": period.timezone,
            "held": status.held,
            "resets_at": status.resets_at,
        }

    # -- the seed's API ----------------------------------------------------------------

    def create_budget(
        self,
        total_budget: MoneyLike,
        user: str,
        duration: str | None = None,
        created_at: float | datetime | None = None,
        *,
        timezone: str | None = None,
        rolling: bool | None = None,
    ) -> UserRecord:
        """Give ``user`` a budget of ``total_budget`` dollars per ``duration``.

        ``duration``: ``"daily"``, ``"weekly"``, ``"monthly"``, ``"yearly"``, a count such as
        ``"1h"``, ``"30d"``, ``"1mo"``, or ``None`` for a lifetime budget. Calling it again
        for an existing user changes the budget but keeps the spend already recorded (use
        :meth:`reset_cost` to zero it); ``created_at`` then defaults to the original one.
        """
        if total_budget is None:
            raise InvalidAmountError("total_budget is required (a number of dollars)")
        scope = self._scope(user)
        existing = self.ledger.get([scope])[0]
        if created_at is None:
            created_at = existing.created_at if existing is not None else self.ledger.clock()
        budget = Budget.of(
            scope,
            total_budget,
            duration,
            timezone=self.timezone if timezone is None else timezone,
            rolling=self.rolling if rolling is None else rolling,
            created_at=created_at,
        )
        self.ledger.define(budget)
        return self._record(budget)

    def projected_cost(
        self, model: str, messages: list[Any], user: str, *, max_tokens: int | None = None
    ) -> Decimal:
        """The user's cost if this conversation were sent: spent + held + the worst case of
        the call (its prompt plus ``max_tokens``, or the model's maximum output)."""
        from llmbudget.pricing import worst_case_cost

        status = self.ledger.status(self.get_budget(user))
        return status.spent + status.held + worst_case_cost(model, messages, max_tokens)

    def get_total_budget(self, user: str) -> Decimal:
        limit = self.get_budget(user).limit
        assert limit is not None  # BudgetManager always sets a limit
        return limit

    def update_cost(
        self,
        user: str,
        completion_obj: Any = None,
        model: str | None = None,
        input_text: str | None = None,
        output_text: str | None = None,
    ) -> dict[str, UserRecord]:
        """Add a call's cost: from a response object (``completion_obj``) or from the
        ``model`` and the ``input_text`` / ``output_text`` it was given and returned.

        The cost is recorded even if it takes the user past the budget (the call already
        happened); use :meth:`reserve` to refuse calls *before* they are made.
        """
        from llmbudget import pricing

        budget = self.get_budget(user)
        if model is not None and (input_text is not None or output_text is not None):
            cost = pricing.cost_from_text(model, input_text or "", output_text or "")
        elif completion_obj is not None:
            priced = pricing.cost_from_response(completion_obj, model=model)
            cost, model = priced.amount, priced.model
        else:
            raise InvalidInputError(
                "update_cost needs a completion_obj, or a model with input_text/output_text"
            )
        self.ledger.charge([budget], cost, model=model)
        return {"user": self._record(budget)}

    def get_current_cost(self, user: str) -> Decimal:
        """Spent in the current window."""
        return self.ledger.status(self.get_budget(user)).spent

    def get_model_cost(self, user: str) -> dict[str, Decimal]:
        """Spent in the current window, per model."""
        return dict(self.ledger.status(self.get_budget(user)).by_model)

    def is_valid_user(self, user: str) -> bool:
        return self.ledger.get([self._scope(user)])[0] is not None

    def get_users(self) -> list[str]:
        prefix = scope_key("user", self.project_name) + ":"
        return [unquote(b.scope[len(prefix) :]) for b in self.ledger.budgets(prefix)]

    def reset_cost(self, user: str) -> dict[str, UserRecord]:
        """Zero the user's spend in the current window (holds in flight stay)."""
        budget = self.get_budget(user)
        self.ledger.reset(budget)
        return {"user": self._record(budget)}

    def reset_on_duration(self, user: str) -> None:
        """Kept for the seed's callers. Spend is keyed by window, so a user's cost is
        already zero from the first moment of a new period: there is nothing left to do
        but check that the user exists."""
        self.get_budget(user)

    def update_budget_all_users(self) -> None:
        """Kept for the seed's daily job. Periods roll over by themselves; this only drops
        expired holds, and is safe to call at any time, as often as you like."""
        self.ledger.purge()

    def save_data(self) -> dict[str, str]:
        """Every update is already stored atomically when it is made; nothing is pending."""
        return {"status": "success"}

    # -- what the seed lacks -------------------------------------------------------------

    def remaining(self, user: str) -> Decimal:
        """What the user can still spend in this window (budget − spent − held, ≥ 0)."""
        remaining = self.ledger.status(self.get_budget(user)).remaining
        assert remaining is not None
        return remaining

    def status(self, user: str) -> BudgetStatus:
        return self.ledger.status(self.get_budget(user))

    def get_user(self, user: str) -> UserRecord:
        """The user's record in the seed's shape."""
        return self._record(self.get_budget(user))

    def delete_budget(self, user: str) -> bool:
        """Remove the user's budget definition (recorded spend stays for the audit trail)."""
        return self.ledger.delete(self._scope(user))

    def reserve(
        self,
        user: str,
        amount: MoneyLike | None = None,
        *,
        model: str | None = None,
        messages: Sequence[Any] | None = None,
        max_tokens: int | None = None,
        ttl: float | None = None,
    ) -> Hold:
        """Hold ``amount`` dollars (or the worst-case cost of ``model`` on ``messages``) on the
        user's budget before a call; raises :class:`~llmbudget.errors.BudgetExceededError`.
        Concurrent reserves can never together pass the budget."""
        budget = self.get_budget(user)
        if amount is None:
            if model is None or messages is None:
                raise InvalidInputError("reserve needs an amount, or a model and messages")
            from llmbudget.pricing import worst_case_cost

            amount = worst_case_cost(model, list(messages), max_tokens)
        return self.ledger.reserve([budget], amount, ttl=ttl)

    def settle(
        self,
        hold: Hold | str,
        actual: MoneyLike | None = None,
        *,
        completion_obj: Any = None,
        model: str | None = None,
    ) -> Decimal:
        """Record the real cost of a reserved call: ``actual`` dollars, or priced from the
        ``completion_obj``. Idempotent."""
        if actual is None:
            if completion_obj is None:
                raise InvalidInputError("settle needs the actual cost or the completion_obj")
            from llmbudget.pricing import cost_from_response

            priced = cost_from_response(completion_obj, model=model)
            actual, model = priced.amount, priced.model
        return self.ledger.settle(hold, actual, model=model)

    def release(self, hold: Hold | str) -> bool:
        """Drop a hold whose call failed."""
        return self.ledger.release(hold)

    def hold(
        self,
        user: str,
        amount: MoneyLike | None = None,
        *,
        model: str | None = None,
        messages: Sequence[Any] | None = None,
        max_tokens: int | None = None,
        ttl: float | None = None,
    ) -> AbstractContextManager[HoldHandle]:
        """Reserve for a ``with`` block; settle inside it with ``handle.settle(cost)``.

        >>> bm = BudgetManager("demo", store="memory://")
        >>> _ = bm.create_budget(1, "bob")
        >>> with bm.hold("bob", "0.50") as h:
        ...     _ = h.settle("0.20", model="gpt-4o")
        >>> bm.remaining("bob")
        Decimal('0.8')
        """
        hold = self.reserve(
            user, amount, model=model, messages=messages, max_tokens=max_tokens, ttl=ttl
        )
        return self.ledger.guard(hold)

    def close(self) -> None:
        self.ledger.close()


def _seed_days(period: Period) -> float | int | None:
    name = period.describe()
    if name is None or period.unit is None:
        return None
    if name in _SEED_DAYS:
        return _SEED_DAYS[name]
    days = period.count * _UNIT_SECONDS[period.unit] / _DAY
    return int(days) if days == int(days) else days
