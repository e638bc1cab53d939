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
shared safely by threads and processes) instead of rewriting ``user_cost.json`` (which is
imported on first use, see :mod:`llmbudget.migration`); periods reset by themselves at
their calendar boundary. Money comes back as :class:`~llmbudget.dollars.Dollars`: floats
for your code (``cost + 0.5``, ``json.dumps``), exact underneath (``cost.exact``); the
native API (:meth:`BudgetManager.status`, :meth:`~BudgetManager.remaining`, the
:attr:`~BudgetManager.ledger`) speaks ``Decimal``. What it adds:
:meth:`BudgetManager.reserve` / :meth:`~BudgetManager.settle` (and
:meth:`~BudgetManager.hold` as a context manager), so concurrent calls cannot overspend
the way check-then-update can, and :meth:`~BudgetManager.remaining`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from llmbudget import seed_resets
from llmbudget.budgets import Budget, BudgetStatus, scope_key
from llmbudget.clock import Clock, system_clock
from llmbudget.dollars import Dollars
from llmbudget.errors import (
    InvalidAmountError,
    InvalidInputError,
    StoreUnavailableError,
    UnknownUserError,
)
from llmbudget.ledger import DEFAULT_HOLD_TTL, Hold, HoldHandle, Ledger
from llmbudget.money import MoneyLike
from llmbudget.periods import Period
from llmbudget.self_hosted import self_hosted_provider
from llmbudget.server.seed_protocol import seed_days
from llmbudget.stores import Store, default_store_url, open_store
from llmbudget.user_dict import ModelCosts, UserDict, UserRecord
from llmbudget.validation import check_timestamp

__all__ = ["DEFAULT_SERVER_URL", "BudgetManager", "UserRecord"]

#: Where ``client_type="hosted"`` looks without ``api_base`` or ``$LLMBUDGET_SERVER``:
#: the address ``llmbudget serve`` listens on by default.
DEFAULT_SERVER_URL = "http://127.0.0.1:8000"


class BudgetManager:
    """Per-user budgets for one project.

    ``client_type="local"`` keeps budgets in ``store`` (a :class:`Store` or URL; default
    ``$LLMBUDGET_STORE`` or ``sqlite:///llmbudget.db``) and, the first time a project
    with no budgets runs in a directory holding LiteLLM's ``user_cost.json``, imports it
    (``import_litellm=False`` to skip). ``client_type="hosted"`` talks to a budget server
    (``llmbudget serve``) at ``api_base``, else ``$LLMBUDGET_SERVER``, else
    :data:`DEFAULT_SERVER_URL`, and raises
    :class:`~llmbudget.errors.StoreUnavailableError` at once if nothing answers there.
    Projects sharing one store are isolated by ``project_name``.

    >>> bm = BudgetManager("demo", store="memory://")
    >>> _ = bm.create_budget(total_budget=10, user="ann", duration="daily")
    >>> _ = bm.update_cost(user="ann", model="gpt-4o", input_text="hi", output_text="hello")
    >>> cost = bm.get_current_cost("ann")
    >>> cost + 0.5 > 0.5, cost.exact
    (True, Decimal('0.00003'))
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
        import_litellm: bool = True,
    ) -> None:
        if not isinstance(project_name, str) or not project_name:
            raise InvalidInputError("project_name must be a non-empty string")
        Period.parse("daily", timezone=timezone)  # refuse a bad timezone now, not at first use
        self.project_name = project_name
        self.client_type = client_type
        self.timezone = timezone
        self.rolling = rolling
        self.headers = headers
        self._import_litellm = import_litellm
        if client_type == "local":
            backend = store if isinstance(store, Store) else open_store(store)
            named = default_store_url() if store is None else store
            self._where = f"store {_redacted(named)}" if isinstance(named, str) else "its store"
            self.api_base = api_base
        elif client_type == "hosted":
            if store is not None:
                raise InvalidInputError("client_type='hosted' talks to api_base; pass no store")
            env = os.environ.get("LLMBUDGET_SERVER")
            base = api_base or env or DEFAULT_SERVER_URL
            self._where = (
                f"api_base {base}"
                if api_base
                else f"$LLMBUDGET_SERVER ({base})"
                if env
                else f"{base}, the default when neither api_base nor $LLMBUDGET_SERVER is set"
            )
            from llmbudget.stores.http import HttpStore

            backend = HttpStore(base, headers=headers)
            self.api_base = base
        else:
            raise InvalidInputError(f"client_type must be 'local' or 'hosted', not {client_type!r}")
        self.ledger = Ledger(backend, clock=clock, hold_ttl=hold_ttl)
        self._user_dict = UserDict(self)
        self.load_data()

    # -- helpers ---------------------------------------------------------------------

    def _scope(self, user: str) -> str:
        if not isinstance(user, str) or not user:
            raise InvalidInputError(f"user must be a non-empty string, got {user!r}")
        return scope_key("user", self.project_name, user)

    @property
    def _prefix(self) -> str:
        return scope_key("user", self.project_name) + ":"

    def get_budget(self, user: str) -> Budget:
        """The user's :class:`~llmbudget.budgets.Budget` (scope, limit, period), for use with
        the :attr:`ledger` directly, e.g. in a multi-scope reserve with a team budget."""
        found = self.ledger.get([self._scope(user)])[0]
        if found is None:
            raise UnknownUserError(user, self.project_name)
        return found

    def _fields_of(self, budget: Budget, status: BudgetStatus | None = None) -> dict[str, Any]:
        status = status or self.ledger.status(budget)
        period = budget.period
        assert budget.limit is not None  # BudgetManager always sets a limit
        fields: dict[str, Any] = {
            "total_budget": Dollars(budget.limit),
            "current_cost": Dollars(status.spent),
            "model_cost": ModelCosts({m: Dollars(v) for m, v in status.by_model.items()}),
        }
        days = seed_days(period)
        if days is not None:
            # As LiteLLM's records: a lifetime budget has no duration (its code tests
            # `"duration" in record` before resetting).
            fields["duration"] = days
        fields["created_at"] = budget.created_at
        fields["last_updated_at"] = (
            seed_resets.last_updated_at(self.ledger, budget)
            if days is not None
            else status.window_start.timestamp()
        )
        fields["period"] = period.describe()
        fields["timezone"] = period.timezone
        fields["held"] = Dollars(status.held)
        fields["resets_at"] = None if status.resets_at is None else status.resets_at.timestamp()
        return fields

    def _fields(self, user: str) -> dict[str, Any]:
        return self._fields_of(self.get_budget(user))

    def _record(self, user: str, budget: Budget) -> UserRecord:
        return UserRecord(self, user, self._fields_of(budget))

    def _price(self, completion_obj: Any, model: str | None) -> tuple[str | None, Decimal]:
        """(model, cost) of a response; self-hosted providers cost $0 (see
        :mod:`llmbudget.self_hosted`), a paid provider's unknown model raises."""
        name = model or _response_model(completion_obj)
        if self_hosted_provider(name, completion_obj) is not None:
            return name, Decimal(0)
        from llmbudget.pricing import cost_from_response

        priced = cost_from_response(completion_obj, model=model)
        return priced.model, priced.amount

    # -- the seed's API ----------------------------------------------------------------

    @property
    def user_dict(self) -> UserDict:
        """LiteLLM's ``user_dict``: every user's record, read from the store on each access;
        writes keep the seed's meaning or raise (see :mod:`llmbudget.user_dict`).

        >>> bm = BudgetManager("demo", store="memory://")
        >>> _ = bm.create_budget(total_budget=5, user="ann", duration="daily")
        >>> "ann" in bm.user_dict, bm.user_dict["ann"]["total_budget"]
        (True, 5)
        """
        return self._user_dict

    @user_dict.setter
    def user_dict(self, value: object) -> None:
        raise InvalidInputError(
            "user_dict is a live view of the store and cannot be replaced; change users "
            "with create_budget(), delete_budget() or user_dict[user] = record"
        )

    def load_data(self) -> None:
        """LiteLLM loads its users here; llmbudget reads them from the store on every
        access, so there is nothing to reload. What it does instead: a local manager
        imports ``./user_cost.json`` when its project has no budgets yet (once, see
        :mod:`llmbudget.migration`); a hosted one checks that the server answers."""
        if self.client_type == "hosted":
            try:
                self.ledger.get([self._prefix])  # one small read, as LiteLLM's /get_budget
            except StoreUnavailableError as exc:
                raise StoreUnavailableError(
                    f"no llmbudget budget server answers at {self._where}: start one with "
                    "`llmbudget serve` (it listens on http://127.0.0.1:8000), or pass "
                    f"api_base= / set $LLMBUDGET_SERVER to where it runs ({exc})"
                ) from exc
        elif self._import_litellm:
            from llmbudget.migration import import_on_first_use

            import_on_first_use(
                self.ledger, self.project_name, timezone=self.timezone, store_name=self._where
            )

    def create_budget(
        self,
        total_budget: MoneyLike,
        user: str,
        duration: str | Period | None = None,
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
        _check_time(created_at)
        existing = self.ledger.get([scope])[0]
        if created_at is None:
            created_at = existing.created_at if existing is not None else self.ledger.clock()
        budget = Budget.of(
            scope,
            _exact(total_budget),
            duration,
            timezone=self.timezone if timezone is None else timezone,
            rolling=self.rolling if rolling is None else rolling,
            created_at=created_at,
        )
        self.ledger.define(budget)
        return self._record(user, budget)

    def projected_cost(
        self, model: str, messages: list[Any], user: str, *, max_tokens: int | None = None
    ) -> Dollars:
        """The user's cost if this conversation were sent: spent + held + the worst case of
        the call (its prompt plus ``max_tokens``, or the model's maximum output)."""
        from llmbudget.pricing import worst_case_cost

        status = self.ledger.status(self.get_budget(user))
        return Dollars(status.spent + status.held + worst_case_cost(model, messages, max_tokens))

    def get_total_budget(self, user: str) -> Dollars:
        limit = self.get_budget(user).limit
        assert limit is not None  # BudgetManager always sets a limit
        return Dollars(limit)

    def update_cost(
        self,
        user: str,
        completion_obj: Any = None,
        model: str | None = None,
        input_text: str | None = None,
        output_text: str | None = None,
    ) -> dict[str, UserRecord]:
        """Add a call's cost: from a response object (``completion_obj``) or from the
        ``model`` and the ``input_text`` / ``output_text`` it was given and returned
        (``input_text`` priced as one user message with the model's chat overhead,
        ``output_text`` as completion text: see :func:`~llmbudget.pricing.cost_from_text`).

        Self-hosted models (``ollama/…``, ``vllm/…``, … see :mod:`llmbudget.self_hosted`)
        cost $0; an unknown model of a paid provider raises
        :class:`~llmbudget.errors.UnknownModelError` and records nothing. The cost is
        recorded even if it takes the user past the budget (the call already happened);
        use :meth:`reserve` to refuse calls *before* they are made.
        """
        from llmbudget import pricing

        budget = self.get_budget(user)
        if model is not None and (input_text is not None or output_text is not None):
            cost = (
                Decimal(0)
                if self_hosted_provider(model) is not None
                else pricing.cost_from_text(model, input_text or "", output_text or "")
            )
        elif completion_obj is not None:
            model, cost = self._price(completion_obj, model)
        else:
            raise InvalidInputError(
                "update_cost needs a completion_obj, or a model with input_text/output_text"
            )
        self.ledger.charge([budget], cost, model=model)
        return {"user": self._record(user, budget)}

    def get_current_cost(self, user: str) -> Dollars:
        """Spent in the current window."""
        return Dollars(self.ledger.status(self.get_budget(user)).spent)

    def get_model_cost(self, user: str) -> dict[str, Dollars]:
        """Spent in the current window, per model."""
        by_model = self.ledger.status(self.get_budget(user)).by_model
        return {model: Dollars(cost) for model, cost in by_model.items()}

    def is_valid_user(self, user: str) -> bool:
        return self.ledger.get([self._scope(user)])[0] is not None

    def get_users(self) -> list[str]:
        prefix = self._prefix
        return [unquote(b.scope[len(prefix) :]) for b in self.ledger.budgets(prefix)]

    def reset_cost(self, user: str) -> dict[str, UserRecord]:
        """Zero the user's spend in the current window (holds in flight stay)."""
        budget = self.get_budget(user)
        self.ledger.reset(budget)
        return {"user": self._record(user, budget)}

    def reset_on_duration(self, user: str) -> None:
        """The seed's reset once ``duration`` days have passed. Spend is keyed by window,
        so a user's cost is already zero from the first moment of a new period; what is
        left is a ``last_updated_at`` moved back by hand (``user_dict``, an import): reset
        the user if ``duration`` days have passed since it (:mod:`llmbudget.seed_resets`)."""
        seed_resets.apply_due(self.ledger, self.get_budget(user))

    def update_budget_all_users(self) -> None:
        """The seed's daily job: :meth:`reset_on_duration` for every user whose
        ``last_updated_at`` was moved back, and drop expired holds. Periods roll over by
        themselves; this is safe to call at any time, as often as you like."""
        scopes = seed_resets.due_scopes(self.ledger, self._prefix)
        if scopes:
            for budget in self.ledger.get(scopes):
                if budget is not None:
                    seed_resets.apply_due(self.ledger, budget)
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
        """The user's record in the seed's shape (what ``user_dict[user]`` returns)."""
        return self._record(user, self.get_budget(user))

    def delete_budget(self, user: str) -> bool:
        """Remove the user's budget definition (recorded spend stays for the audit trail)."""
        scope = self._scope(user)
        self.ledger.store.delete_doc(seed_resets.KIND, scope)
        return self.ledger.delete(scope)

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
        """Hold ``amount`` dollars (or the worst-case cost of ``model`` on ``messages``; $0
        for a self-hosted model) on the user's budget before a call; raises
        :class:`~llmbudget.errors.BudgetExceededError`. Concurrent reserves can never
        together pass the budget."""
        budget = self.get_budget(user)
        if amount is None:
            if model is None or messages is None:
                raise InvalidInputError("reserve needs an amount, or a model and messages")
            from llmbudget.pricing import worst_case_cost

            amount = (
                Decimal(0)
                if self_hosted_provider(model) is not None
                else worst_case_cost(model, list(messages), max_tokens)
            )
        return self.ledger.reserve([budget], _exact(amount), ttl=ttl)

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
            model, actual = self._price(completion_obj, model)
        return self.ledger.settle(hold, _exact(actual), model=model)

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


def _exact(value: MoneyLike) -> MoneyLike:
    """A :class:`Dollars` back as its exact ``Decimal`` (anything else as given)."""
    return value.exact if isinstance(value, Dollars) else value


def _check_time(value: object) -> None:
    if value is None or isinstance(value, datetime):
        return
    check_timestamp(value, "created_at")


def _redacted(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def _response_model(response: Any) -> str | None:
    name = (
        response.get("model") if isinstance(response, Mapping) else getattr(response, "model", None)
    )
    return name if isinstance(name, str) and name else None
