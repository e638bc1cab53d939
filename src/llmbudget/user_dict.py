"""``BudgetManager.user_dict``: LiteLLM's dict of users, as a live view of the store.

Code written for LiteLLM reads and writes ``budget_manager.user_dict`` directly::

    if user_id in bm.user_dict: ...
    cost = bm.user_dict[user_id]["current_cost"]
    bm.user_dict[user_id]["last_updated_at"] -= 86_400   # LiteLLM's own test

:class:`UserDict` answers from the store every time (so every process sees the same
users), and each lookup returns a :class:`UserRecord`: a real ``dict`` in LiteLLM's shape
(``json.dumps`` works) holding what the store said at that moment. Writing to it goes to
the store with the seed's meaning, or raises
:class:`~llmbudget.errors.InvalidInputError` saying what to call instead; nothing is
ever changed only in memory.

=======================  ================================================================
write                    effect
=======================  ================================================================
``total_budget = x``     the budget becomes ``x`` (spend kept)
``duration = days``      the period becomes that many days (1 daily, 7 weekly, 28/30/31
                         monthly, 365 yearly, else ``"<n>d"``); ``None``: lifetime
``created_at = t``       the budget's anchor moves (spend in overlapping windows kept)
``last_updated_at = t``  earlier than now's value: the next duration check
                         (``update_budget_all_users()``) once ``duration`` days have passed
                         since ``t`` resets the user (:mod:`llmbudget.seed_resets`)
``current_cost = 0``     ``reset_cost(user)``
``current_cost += x``    ``x`` is charged (no model); lowering it other than to 0 raises
``del user_dict[u]``     ``delete_budget(u)``
``user_dict[u] = rec``   ``create_budget`` from the record's ``total_budget``,
                         ``duration`` and ``created_at``, then the writes above
=======================  ================================================================

Writing the value a field already has changes nothing (so ``record.update({...})`` of
unchanged fields is harmless); ``model_cost`` and the fields llmbudget adds (``period``,
``timezone``, ``held``, ``resets_at``) are read-only, and other keys are refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NoReturn

from llmbudget.errors import InvalidInputError, UnknownUserError
from llmbudget.money import to_money
from llmbudget.server.seed_protocol import period_from_days, seed_days

if TYPE_CHECKING:
    from llmbudget.manager import BudgetManager

__all__ = ["ModelCosts", "UserDict", "UserRecord"]

_BUDGET_KEYS = ("total_budget", "duration", "created_at")
_READ_ONLY = ("model_cost", "period", "timezone", "held", "resets_at")


class ModelCosts(dict[str, Any]):
    """A record's ``model_cost``: a ``dict`` of :class:`~llmbudget.dollars.Dollars` by
    model that refuses writes (spend per model is recorded by ``update_cost``)."""

    def _refuse(self, *_: object, **__: object) -> NoReturn:
        raise InvalidInputError(
            "model_cost is read from the store; record spend with update_cost() "
            "(or reset_cost() to zero it)"
        )

    __setitem__ = __delitem__ = update = setdefault = pop = popitem = clear = _refuse
    __ior__ = _refuse

    def __reduce__(self) -> tuple[Any, ...]:
        return (dict, (dict(self),))


class UserRecord(dict[str, Any]):
    """One user's record in LiteLLM's shape, read when it was looked up; writes go to the
    store (see the module docstring) and the record is then re-read."""

    def __init__(self, manager: BudgetManager, user: str, fields: Mapping[str, Any]) -> None:
        super().__init__(fields)
        self._manager = manager
        self._user = user

    def __setitem__(self, key: str, value: Any) -> None:
        if key in self and _same(dict.__getitem__(self, key), value):
            return
        _write(self._manager, self._user, key, value, dict.get(self, key))
        self._refresh()

    def update(self, other: Iterable[Any] | Mapping[str, Any] = (), /, **more: Any) -> None:  # type: ignore[override]
        items = other.items() if isinstance(other, Mapping) else other
        for key, value in [*items, *more.items()]:
            self[key] = value

    def __ior__(self, other: Any) -> UserRecord:  # type: ignore[override,misc]
        self.update(other)
        return self

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def _refuse(self, *_: object, **__: object) -> NoReturn:
        raise InvalidInputError(
            f"fields of user {self._user!r} cannot be removed; delete the user with "
            "delete_budget() (or `del user_dict[user]`)"
        )

    __delitem__ = pop = popitem = clear = _refuse

    def _refresh(self) -> None:
        dict.clear(self)
        dict.update(self, self._manager._fields(self._user))

    def __reduce__(self) -> tuple[Any, ...]:
        # Copies and pickles are plain dicts: a snapshot, not a handle on the store.
        return (dict, (dict(self),))


class UserDict(MutableMapping[str, UserRecord]):
    """Every user of one project, read from the store on each access.

    ``json.dumps(dict(bm.user_dict))`` serialises it (a live view is not a ``dict``).
    """

    def __init__(self, manager: BudgetManager) -> None:
        self._manager = manager

    def __getitem__(self, user: str) -> UserRecord:
        return self._manager.get_user(user)

    def __contains__(self, user: object) -> bool:
        return isinstance(user, str) and bool(user) and self._manager.is_valid_user(user)

    def __iter__(self) -> Iterator[str]:
        return iter(self._manager.get_users())

    def __len__(self) -> int:
        return len(self._manager.get_users())

    def __setitem__(self, user: str, record: Mapping[str, Any]) -> None:
        if not isinstance(record, Mapping) or "total_budget" not in record:
            raise InvalidInputError(
                "user_dict[user] = record needs a mapping with total_budget (and optionally "
                "duration in days, created_at)"
            )
        manager = self._manager
        exists = manager.is_valid_user(user)
        current = manager.get_budget(user) if exists else None
        days = record.get("duration")
        manager.create_budget(
            total_budget=_dollars(record["total_budget"], "total_budget"),
            user=user,
            duration=_period(days) if days is not None else None,
            created_at=record.get("created_at"),
            timezone=None if current is None else current.period.timezone,
        )
        rest = {k: v for k, v in record.items() if k not in _BUDGET_KEYS}
        if rest:
            manager.get_user(user).update(rest)

    def __delitem__(self, user: str) -> None:
        if not self._manager.delete_budget(user):
            raise UnknownUserError(user, self._manager.project_name)

    def copy(self) -> dict[str, dict[str, Any]]:
        """A plain-``dict`` snapshot of every record."""
        return {user: dict(record) for user, record in self.items()}

    __copy__ = copy

    def __deepcopy__(self, memo: object) -> dict[str, dict[str, Any]]:
        return self.copy()

    def __repr__(self) -> str:
        return f"UserDict({self.copy()!r})"


def _write(manager: BudgetManager, user: str, key: str, value: Any, before: Any) -> None:
    """Apply one field write with the seed's meaning (see the module docstring)."""
    from llmbudget import seed_resets

    budget = manager.get_budget(user)
    period = budget.period
    limit = budget.limit
    assert limit is not None  # BudgetManager always sets a limit
    if key == "total_budget":
        manager.create_budget(
            _dollars(value, key),
            user,
            duration=period,
            timezone=period.timezone,
            rolling=period.rolling,
        )
    elif key == "duration":
        duration = None if value is None else _period(value)
        if value is not None and seed_days(period) == value:
            return  # the same number of days: keep the period as it is (e.g. "30d")
        manager.create_budget(
            limit, user, duration=duration, timezone=period.timezone, rolling=period.rolling
        )
    elif key == "created_at":
        manager.create_budget(
            limit,
            user,
            duration=period,
            created_at=value,
            timezone=period.timezone,
            rolling=period.rolling,
        )
    elif key == "last_updated_at":
        seed_resets.move_back(manager.ledger, budget, value)
    elif key == "current_cost":
        target = _dollars(value, key)
        base = to_money(before if before is not None else 0)
        if target == 0:
            manager.reset_cost(user)
        elif target > base:
            manager.ledger.charge([budget], target - base)
        else:
            raise InvalidInputError(
                f"current_cost of {user!r} can only grow (the difference is charged) or be "
                f"set to 0 (reset_cost); it is {base}, not {target}"
            )
    elif key in _READ_ONLY:
        raise InvalidInputError(
            f"{key} is read from the store and cannot be written; "
            + (
                "record spend with update_cost()"
                if key == "model_cost"
                else "change the budget with create_budget()"
            )
        )
    else:
        raise InvalidInputError(
            f"llmbudget's user records hold only total_budget, current_cost, model_cost, "
            f"duration, created_at, last_updated_at (plus {', '.join(_READ_ONLY[1:])}); "
            f"keep {key!r} in your own data"
        )


def _same(current: Any, value: Any) -> bool:
    try:
        return bool(current == value) and type(value) is not bool
    except TypeError:
        return False


def _dollars(value: object, what: str) -> Decimal:
    exact = getattr(value, "exact", None)
    return exact if isinstance(exact, Decimal) else to_money(value, what=what)


def _period(days: object) -> str:
    if isinstance(days, bool) or not isinstance(days, int | float):
        raise InvalidInputError(f"duration must be a number of days, got {days!r}")
    return period_from_days(float(days))
