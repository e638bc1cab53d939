"""The seed's self-hosted protocol (``/get_budget``, ``/set_budget``), made safe.

LiteLLM's hosted ``BudgetManager`` keeps every user of a project in a local dict. It
loads the dict once (``POST /get_budget``) and after each change POSTs the *whole* dict
back (``POST /set_budget``) from a background thread. Storing that dict as sent would
lose money: two clients, or one client and any other writer, would overwrite each other's
spend. So ``/set_budget`` turns the dict into the same atomic store operations every
other path uses:

* **Budgets** are upserted: ``total_budget`` is the limit, ``duration`` (days) the period
  (1 → daily, 7 → weekly, 28/30/31 → monthly, 365/366 → yearly, other whole days →
  ``"<n>d"``, fractions → hours or seconds, absent → lifetime). A duration equal to what
  ``/get_budget`` reported for the stored period keeps that period as it is (so a
  ``"30d"`` or a rolling budget is not rewritten as ``"monthly"``). Spend is never touched
  by an upsert. Since the client posts back every record it loaded, the sync marker also
  carries the ``total_budget`` and ``duration`` handed out, and a marked record only
  writes the one(s) the client changed: an admin's later change of the limit or period
  is not undone by a stale copy, and a budget deleted since is not re-created (nor
  charged) unless the client changed its limit or duration.
* **Spend** only ever moves by *increments*. Every record ``/get_budget`` hands out
  carries a sync marker (``"llmbudget_sync"``: a session id and the exact costs it
  reported), which LiteLLM's client keeps and sends back untouched. Per session, user and
  model, the server keeps how much it has already charged on behalf of that client (a
  spend counter under the reserved scope prefix ``~sync:``, beside a small store document
  of kind ``seed-sync`` per session and user). What the client reports above
  ``baseline + already charged`` is charged, per model (so by-model totals stay right),
  and any unattributed remainder with ``model=None``. The "already charged" counter
  advances by compare-and-set (a reserve whose limit is the client's reported total,
  then a settle that records the increment on the counter and on the user in one
  transaction), so concurrent and repeated posts never charge the same increment twice,
  and increments from other clients or other writers are never overwritten. Posting the
  same dict twice charges nothing the second time.
* **A decrease** means the client reset its counter. LiteLLM does that in two ways:
  ``reset_cost(user)`` (only the counter changes) → the server resets the *current window*
  of that user and rebases the session; ``reset_on_duration`` (the client's
  ``last_updated_at`` moves too) → the client noticed a period end, which the server's
  window-keyed spend has already applied at the exact calendar boundary, so nothing is
  reset (which also keeps spend that other writers made in the new window).
  One exception: LiteLLM posts from background threads, so an older snapshot can arrive
  after a newer one. A decrease within ``stale_window`` seconds (default 5) of the
  session's last increment is taken for such a straggler and ignored; a real
  ``reset_cost`` is then applied by the client's next post after that window, with all
  that was spent since the reset (until then the server errs on the safe side: it still
  counts the spend from before the reset). A post whose ``last_updated_at`` is older than
  one already seen is a straggler from before a duration reset, and is ignored whole.

A record without a marker (a user the client created itself with ``create_budget``) is
counted from zero, in a session named after its ``created_at``.

Costs arrive as floats; they go through their ``repr`` (:func:`~llmbudget.money.to_money`)
and are rounded to the nearest nano-dollar, as are float limits.

>>> period_from_days(28), period_from_days(2), period_from_days(0.5)
('monthly', '2d', '12h')
"""

from __future__ import annotations

import hashlib
import math
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any
from urllib.parse import quote, unquote

from llmbudget.budgets import Budget, BudgetStatus, scope_key
from llmbudget.clock import Clock
from llmbudget.errors import InvalidAmountError, InvalidInputError, StoreUnavailableError
from llmbudget.ledger import Ledger
from llmbudget.money import UNITS_PER_DOLLAR, format_money, from_units, to_money
from llmbudget.periods import Period
from llmbudget.stores.base import BudgetRecord, Line, Store
from llmbudget.validation import check_name, check_timestamp

__all__ = [
    "SYNC_KIND",
    "SYNC_MARKER",
    "SYNC_PREFIX",
    "SeedProtocol",
    "SetBudgetResult",
    "period_from_days",
    "seed_days",
]

SYNC_MARKER = "llmbudget_sync"
SYNC_PREFIX = "~sync:"
SYNC_KIND = "seed-sync"
_SEED_DAYS = {"daily": 1, "weekly": 7, "monthly": 28, "yearly": 365}
_MONTH_DAYS = {28, 30, 31}
_YEAR_DAYS = {365, 366}
_UNIT_SECONDS = {
    "second": 1,
    "minute": 60,
    "hour": 3600,
    "day": 86_400,
    "week": 7 * 86_400,
    "month": 30 * 86_400,
    "year": 365 * 86_400,
}
_SESSION_RE = re.compile(r"^[0-9a-f]{32}$|^anon-[0-9a-f]{16}$")
# Float sums and per-model rounding can make a client's total drift from the sum of its
# increments by a few nano-dollars; only a drop larger than this is taken as a reset.
_RESET_TOLERANCE = 100
_MAX_UNITS = 2**63 - 1
_HOLD_TTL = 60.0
_MAX_CAS_ATTEMPTS = 50
_MAX_USERS = 10_000
_MAX_MODELS = 1_000


def seed_days(period: Period) -> int | float | None:
    """The seed's ``duration`` (a number of days) for a period; ``None`` for lifetime.

    >>> seed_days(Period.parse("weekly")), seed_days(Period.parse("1h"))
    (7, 0.041666666666666664)
    """
    name = period.describe()
    if name is None or period.unit is None:
        return None
    if name in _SEED_DAYS:
        return _SEED_DAYS[name]
    seconds = period.count * _UNIT_SECONDS[period.unit]
    return seconds // 86_400 if seconds % 86_400 == 0 else seconds / 86_400


def period_from_days(days: float) -> str:
    """Our period for the seed's ``duration`` in days (see the module docstring)."""
    if not math.isfinite(days) or days <= 0:
        raise InvalidInputError(f"duration must be a positive number of days, got {days!r}")
    if days == int(days):
        whole = int(days)
        if whole == 1:
            return "daily"
        if whole == 7:
            return "weekly"
        if whole in _MONTH_DAYS:
            return "monthly"
        if whole in _YEAR_DAYS:
            return "yearly"
        return f"{whole}d"
    hours = days * 24
    if abs(hours - round(hours)) < 1e-9:
        return f"{round(hours)}h"
    seconds = round(days * 86_400)
    if seconds < 1:
        raise InvalidInputError(f"duration {days!r} days is shorter than a second")
    return f"{seconds}s"


def _units(value: object, what: str) -> int:
    """Dollars (number or numeric string) to nano-dollars, rounded to the nearest unit."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidAmountError(f"{what} must be a number of dollars, got {value!r}")
    money = to_money(value, what=what)
    units = int((money * UNITS_PER_DOLLAR).to_integral_value(rounding=ROUND_HALF_EVEN))
    if units > _MAX_UNITS:
        raise InvalidAmountError(f"{what} is larger than llmbudget can store (~$9.2 billion)")
    return units


def _days(value: object, what: str) -> float:
    """The seed's ``duration``: a number of days, or one of daily/weekly/monthly/yearly."""
    if isinstance(value, str):
        named = _SEED_DAYS.get(value.strip().lower())
        if named is None:
            raise InvalidInputError(
                f"{what} must be a number of days (or daily/weekly/monthly/yearly)"
            )
        days = float(named)
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(f"{what} must be a number of days")
    else:
        days = float(value)
    # Validates the period too, windows included: a duration such as 1e300 days is refused
    # here, before anything is written, instead of breaking every later read.
    Period.parse(period_from_days(days))
    return days


def _epoch(value: object, what: str) -> float | None:
    return None if value is None else check_timestamp(value, what)


def _text(value: object, what: str) -> str:
    return check_name(value, what)


@dataclass(slots=True)
class _Incoming:
    """One user record of a ``/set_budget`` body, validated."""

    user: str
    scope: str
    limit: int
    days: float | None
    created_at: float | None
    last_updated_at: float | None
    current: int
    models: dict[str, int]
    session: str
    marked: bool
    base_current: int = 0
    base_models: dict[str, int] = field(default_factory=dict)
    base_last_updated_at: float | None = None
    # The limit (nano-dollars) and duration (days) the marker says were handed out;
    # ``base_known`` is False for markers of servers that did not send them.
    base_known: bool = False
    base_limit: int | None = None
    base_days: float | None = None

    @property
    def limit_changed(self) -> bool:
        """The client changed ``total_budget`` since it loaded the record (or it has no
        marker saying what it loaded: then its value is all there is)."""
        return not self.base_known or self.limit != self.base_limit

    @property
    def days_changed(self) -> bool:
        """Same for ``duration``."""
        return not self.base_known or self.days != self.base_days

    def progress(
        self, base_current: int, base_models: Mapping[str, int]
    ) -> tuple[int, dict[str, int]]:
        """What the client has spent since its baseline: in total and per model. The total
        is never below the sum of the models, so a client whose numbers disagree cannot
        make the server mistake its own charges for a reset."""
        models = {m: units - base_models.get(m, 0) for m, units in self.models.items()}
        positive = sum(v for v in models.values() if v > 0)
        return max(self.current - base_current, positive), models


@dataclass(slots=True)
class SetBudgetResult:
    """What a ``/set_budget`` did: scopes whose spend changed and the dollars charged."""

    touched: list[str] = field(default_factory=list)
    charged: Decimal = Decimal(0)
    resets: int = 0
    upserts: int = 0


class SeedProtocol:
    """The two endpoints' logic, over a ledger and its store (no HTTP here)."""

    def __init__(
        self,
        ledger: Ledger,
        store: Store,
        clock: Clock,
        timezone: str = "UTC",
        *,
        stale_window: float = 5.0,
    ) -> None:
        self.ledger = ledger
        self.store = store
        self.clock = clock
        self.timezone = timezone
        self.stale_window = stale_window

    # -- /get_budget -------------------------------------------------------------------

    def get_budget(self, project: str) -> dict[str, Any]:
        """``{"status": "success", "data": {user: record}}``, or ``status: error`` when
        the project has no budgets (LiteLLM then starts from an empty dict)."""
        project = _text(project, "project_name")
        prefix = scope_key("user", project) + ":"
        budgets = self.ledger.budgets(prefix)
        if not budgets:
            return {"status": "error", "message": f"no budgets stored for project {project!r}"}
        session = uuid.uuid4().hex
        data = {
            unquote(b.scope[len(prefix) :]): self.record(b, self.ledger.status(b), session)
            for b in budgets
        }
        return {"status": "success", "data": data}

    @staticmethod
    def record(budget: Budget, status: BudgetStatus, session: str) -> dict[str, Any]:
        """A user record in the seed's shape, plus the sync marker (see the module doc)."""
        last = status.window_start.timestamp()
        record: dict[str, Any] = {
            "total_budget": None if budget.limit is None else float(budget.limit),
            "current_cost": float(status.spent),
            "model_cost": {m: float(v) for m, v in status.by_model.items()},
            "created_at": budget.created_at,
            "last_updated_at": last,
        }
        days = seed_days(budget.period)
        if days is not None:
            # LiteLLM multiplies this by 86400: it must be a number, never "daily".
            record["duration"] = days
        record["period"] = budget.period.describe()
        record["timezone"] = budget.period.timezone
        record[SYNC_MARKER] = {
            "session": session,
            # What the client was given, so /set_budget can tell its own changes from
            # the stale copy it posts back with every update.
            "total_budget": record["total_budget"],
            "duration": days,
            "current_cost": format_money(status.spent),
            "model_cost": {m: format_money(v) for m, v in status.by_model.items()},
            "last_updated_at": last,
        }
        return record

    # -- /set_budget -------------------------------------------------------------------

    def set_budget(self, project: str, user_dict: object) -> SetBudgetResult:
        """Apply a whole-dict write as upserts and increments. Everything is validated
        before anything is written: a bad record anywhere stores nothing."""
        project = _text(project, "project_name")
        if not isinstance(user_dict, Mapping):
            raise InvalidInputError("user_dict must be an object mapping users to records")
        if len(user_dict) > _MAX_USERS:
            raise InvalidInputError(f"user_dict has more than {_MAX_USERS} users")
        incoming = [self._parse(project, user, rec) for user, rec in user_dict.items()]
        result = SetBudgetResult()
        if not incoming:
            return result
        now = self.clock()
        existing = self.store.get_budgets([i.scope for i in incoming])
        # One listing per session (normally one per post) instead of a read per user.
        states: dict[str, dict[str, Any]] = {}
        for session in {i.session for i in incoming}:
            states.update(self.store.list_docs(SYNC_KIND, f"{session}|"))
        for item, record in zip(incoming, existing, strict=True):
            budget = self._upsert(item, record, now, result)
            if budget is not None:
                self._sync(item, budget, states.get(self._state_key(item)), now, result)
        return result

    def _parse(self, project: str, user: object, rec: object) -> _Incoming:
        name = _text(user, "user")
        where = f"user_dict[{name!r}]"
        if not isinstance(rec, Mapping):
            raise InvalidInputError(f"{where} must be an object")
        if "total_budget" not in rec:
            raise InvalidInputError(f"{where}.total_budget is required")
        limit = _units(rec["total_budget"], f"{where}.total_budget")
        days: float | None = None
        duration = rec.get("duration")
        if duration is not None:
            days = _days(duration, f"{where}.duration")
        current = _units(rec.get("current_cost") or 0, f"{where}.current_cost")
        models_in = rec.get("model_cost") or {}
        if not isinstance(models_in, Mapping):
            raise InvalidInputError(f"{where}.model_cost must map models to costs")
        if len(models_in) > _MAX_MODELS:
            raise InvalidInputError(f"{where}.model_cost has more than {_MAX_MODELS} models")
        models = {
            _text(m, f"{where}.model_cost key"): _units(v, f"{where}.model_cost[{m!r}]")
            for m, v in models_in.items()
        }
        created_at = _epoch(rec.get("created_at"), f"{where}.created_at")
        last_updated = _epoch(rec.get("last_updated_at"), f"{where}.last_updated_at")
        item = _Incoming(
            user=name,
            scope=scope_key("user", project, name),
            limit=limit,
            days=days,
            created_at=created_at,
            last_updated_at=last_updated,
            current=current,
            models=models,
            session="",
            marked=False,
        )
        marker = rec.get(SYNC_MARKER)
        if marker is not None:
            if not isinstance(marker, Mapping):
                raise InvalidInputError(f"{where}.{SYNC_MARKER} must be the object it was sent as")
            session = marker.get("session")
            if not isinstance(session, str) or not _SESSION_RE.match(session):
                raise InvalidInputError(f"{where}.{SYNC_MARKER}.session is not a session id")
            base_models = marker.get("model_cost") or {}
            if not isinstance(base_models, Mapping):
                raise InvalidInputError(f"{where}.{SYNC_MARKER}.model_cost must be an object")
            item.session = session
            item.marked = True
            item.base_last_updated_at = _epoch(
                marker.get("last_updated_at"), f"{where}.{SYNC_MARKER}.last_updated_at"
            )
            if "total_budget" in marker:
                given = marker["total_budget"]
                item.base_known = True
                item.base_limit = (
                    None if given is None else _units(given, f"{where}.{SYNC_MARKER}.total_budget")
                )
                given_days = marker.get("duration")
                item.base_days = (
                    None
                    if given_days is None
                    else _days(given_days, f"{where}.{SYNC_MARKER}.duration")
                )
            item.base_current = _units(marker.get("current_cost") or 0, f"{where} baseline")
            item.base_models = {
                _text(m, f"{where} baseline model"): _units(v, f"{where} baseline")
                for m, v in base_models.items()
            }
        else:
            # No marker: the client made this record itself and counts from zero. Its
            # created_at (fixed per client process in LiteLLM) names the session.
            digest = hashlib.sha256(repr(created_at).encode()).hexdigest()[:16]
            item.session = f"anon-{digest}"
        return item

    @staticmethod
    def _state_key(item: _Incoming) -> str:
        return f"{item.session}|{item.scope}"

    @staticmethod
    def _counter_base(item: _Incoming) -> str:
        return f"{SYNC_PREFIX}{item.session}:{quote(item.scope, safe='')}"

    def _upsert(
        self, item: _Incoming, record: BudgetRecord | None, now: float, result: SetBudgetResult
    ) -> Budget | None:
        """Apply the record's limit and duration, as far as the client changed them.

        LiteLLM posts back the whole dict it loaded, so a marked record's ``total_budget``
        and ``duration`` are usually stale copies of what ``/get_budget`` handed out: only
        a value that differs from the marker's is the client's own change (and written).
        Anything else stays as stored, so a limit an admin changed since is not undone,
        and a budget deleted since is not re-created (``None``: nothing to sync)."""
        # A stored record that cannot be used is replaced as if absent.
        existing = Budget.readable(record)
        if not item.limit_changed and not item.days_changed:
            return existing
        if existing is not None and not item.days_changed:
            period = existing.period
        elif item.days is None:
            period = Period.parse(None, timezone=existing.period.timezone if existing else None)
        elif existing is not None and seed_days(existing.period) == item.days:
            period = existing.period  # unchanged as far as the client can tell: keep it
        else:
            period = Period.parse(
                period_from_days(item.days),
                timezone=existing.period.timezone if existing else self.timezone,
            )
        limit = from_units(item.limit) if existing is None or item.limit_changed else existing.limit
        if existing is not None and existing.limit == limit and existing.period == period:
            return existing
        created = (
            existing.created_at
            if existing is not None
            else (item.created_at if item.created_at is not None else now)
        )
        budget = Budget(item.scope, limit, period, created)
        self.store.put_budget(budget.to_record(now))
        result.upserts += 1
        return budget

    def _sync(
        self,
        item: _Incoming,
        budget: Budget,
        state: dict[str, Any] | None,
        now: float,
        result: SetBudgetResult,
    ) -> None:
        state_scope = self._counter_base(item)
        generation = int(state.get("generation", 0)) if state is not None else 0
        # The client's last_updated_at as of its previous post (or as we handed it out).
        seen_last = state.get("last_updated_at") if state is not None else item.base_last_updated_at
        last = item.last_updated_at
        if last is not None and isinstance(seen_last, int | float) and last < seen_last:
            # Sent before a reset_on_duration whose post overtook it: all it reports was
            # already counted (or belongs to the period the client has since closed).
            return
        if generation == 0:
            total, models = item.progress(item.base_current, item.base_models)
        else:
            total, models = item.progress(0, {})
        total_scope = f"{state_scope}:{generation}:*"
        done_total = 0 if state is None else self.store.usage(total_scope, 0, now).spent
        rebase = False
        if total < done_total - _RESET_TOLERANCE:
            # The client's counter went backwards.
            advanced_at = state.get("advanced_at") if state is not None else None
            if last is not None and seen_last is not None and last != seen_last:
                # reset_on_duration (last_updated_at moved): a period end, which the
                # window-keyed spend has already applied at the calendar boundary.
                rebase = True
            elif isinstance(advanced_at, int | float) and now - advanced_at < self.stale_window:
                # LiteLLM posts from background threads, so an older snapshot can arrive
                # after a newer one. Right after an advance, a lower total is taken for
                # such a straggler and ignored (the CAS counters already hold more).
                # Were it a real reset_cost, the client's next post, once this short
                # window has passed, applies it with everything spent since.
                return
            else:
                # reset_cost(user): the client zeroed its counter. Reset the current
                # window of the user on the server too, as the seed's server did.
                self.ledger.reset(budget)
                result.resets += 1
                result.touched.append(budget.scope)
                rebase = True
            generation += 1
            total, models = item.progress(0, {})
            done_total = 0
            total_scope = f"{state_scope}:{generation}:*"
        # The total is never below the sum of the models' increments, so "nothing new in
        # total" means nothing new at all: unchanged users cost one read, no write.
        wants_charge = total > done_total
        if rebase or wants_charge or (state is not None and last != seen_last):
            # Written before any counter moves, so "no state document" always means
            # "nothing charged yet for this session"; advanced_at dates the latest move.
            previous = state.get("advanced_at") if state is not None and not rebase else None
            self.store.put_doc(
                SYNC_KIND,
                self._state_key(item),
                {
                    "generation": generation,
                    "last_updated_at": last,
                    "advanced_at": now if wants_charge else previous,
                    "updated_at": now,
                },
            )
        if not wants_charge:
            return
        user_line = Line(budget.scope, budget.window_at(now).key, None)
        charged = 0
        for model, target in sorted(models.items()):
            if target > 0:
                model_scope = f"{state_scope}:{generation}:m:{quote(model, safe='')}"
                charged += self._advance(
                    model_scope, target, [Line(total_scope, 0, None), user_line], model, now
                )
        if total > 0:
            # Whatever the models do not account for is charged without a model.
            charged += self._advance(total_scope, total, [user_line], None, now)
        if charged:
            result.charged += from_units(charged)
            result.touched.append(budget.scope)

    def _advance(
        self, counter: str, target: int, lines: list[Line], model: str | None, now: float
    ) -> int:
        """Raise ``counter``'s spend to ``target``, charging the increment on ``lines`` in
        the same settle. Compare-and-set: the reserve's limit is ``target``, so a
        concurrent writer that got there first makes it refuse, and we re-read."""
        for attempt in range(_MAX_CAS_ATTEMPTS):
            done = self.store.usage(counter, 0, now).spent
            delta = target - done
            if delta <= 0:
                return 0
            hold_id = f"sync-{uuid.uuid4().hex}"
            refusal = self.store.reserve(
                hold_id, [Line(counter, 0, target), *lines], delta, now + _HOLD_TTL, now
            )
            if refusal is None:
                self.store.settle(hold_id, delta, model, now)
                return delta
            time.sleep(min(0.001 * 2**attempt, 0.05))
        raise StoreUnavailableError(
            f"could not record the increment of {counter!r}: too much contention, try again"
        )
