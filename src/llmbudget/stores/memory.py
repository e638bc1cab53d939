"""In-process store (``memory://``): dictionaries behind one lock. For tests and single processes."""

from __future__ import annotations

import copy
import json
import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llmbudget.errors import InvalidInputError, UnknownHoldError
from llmbudget.stores.base import (
    BudgetRecord,
    Checks,
    Line,
    LogEntry,
    LogRecord,
    Refusal,
    SettleResult,
    Store,
    Usage,
    charge_conflict,
    check_counter,
)

__all__ = ["MemoryStore"]


@dataclass(slots=True)
class _Hold:
    lines: tuple[tuple[str, int], ...]
    amount: int
    expires_at: float
    # What each line holds (its own amount, else the reserve's).
    amounts: dict[tuple[str, int], int]
    state: str = "held"  # held | settled | released
    actual: int = 0


@dataclass(frozen=True, slots=True)
class _Charge:
    amount: int
    scopes: frozenset[str]
    at: float


class MemoryStore(Store):
    """Thread-safe, not shared between processes, gone when the process ends."""

    blocking = False  # a lock held for microseconds: cheaper inline than in a thread

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spent: dict[tuple[str, int], int] = defaultdict(int)
        self._by_model: dict[tuple[str, int], dict[str, int]] = defaultdict(dict)
        self._holds: dict[str, _Hold] = {}
        # Holds still counting, per (scope, window): reserves scan only these, not every
        # hold kept for late settles.
        self._active: dict[tuple[str, int], dict[str, _Hold]] = defaultdict(dict)
        self._charges: dict[str, _Charge] = {}
        self._budgets: dict[str, BudgetRecord] = {}
        self._docs: dict[tuple[str, str], dict[str, Any]] = {}
        self._logs: dict[str, list[LogEntry]] = defaultdict(list)

    def _held(self, key: tuple[str, int], now: float) -> int:
        active = self._active.get(key)
        return sum(h.amounts[key] for h in active.values() if h.expires_at > now) if active else 0

    def _deactivate(self, hold_id: str, hold: _Hold) -> None:
        for key in hold.lines:
            active = self._active.get(key)
            if active is not None:
                active.pop(hold_id, None)
                if not active:
                    del self._active[key]

    def _record(self, amounts: Mapping[tuple[str, int], int], model: str | None) -> None:
        # Every counter is checked before the first changes: all or nothing.
        for (scope, window), amount in amounts.items():
            check_counter(scope, window, self._spent.get((scope, window), 0), amount)
        for key, amount in amounts.items():
            self._spent[key] += amount
            if model is not None:
                models = self._by_model[key]
                models[model] = models.get(model, 0) + amount

    def reserve(
        self, hold_id: str, lines: Sequence[Line], amount: int, expires_at: float, now: float
    ) -> Refusal | None:
        Checks.reserve(hold_id, lines, amount, expires_at, now)
        with self._lock:
            wanted = {(line.scope, line.window): line.amount_or(amount) for line in lines}
            existing = self._holds.get(hold_id)
            if existing is not None:
                # A retry of this very reserve: the hold must still be live and identical.
                if (
                    existing.state != "held"
                    or existing.amount != amount
                    or existing.amounts != wanted
                ):
                    raise InvalidInputError(
                        f"hold id {hold_id!r} was already used for a different or finished "
                        "reservation"
                    )
                return None
            for index, line in enumerate(lines):
                key = (line.scope, line.window)
                spent, held, need = self._spent.get(key, 0), self._held(key, now), wanted[key]
                check_counter(line.scope, line.window, spent + held, need)
                if line.limit is not None and spent + held + need > line.limit:
                    return Refusal(index, spent, held)
            keys = tuple(wanted)
            hold = self._holds[hold_id] = _Hold(keys, amount, expires_at, wanted)
            for key in keys:
                self._active[key][hold_id] = hold
            return None

    def settle(
        self,
        hold_id: str,
        actual: int,
        model: str | None,
        now: float,
        actuals: Mapping[str, int] | None = None,
        log: LogRecord | None = None,
    ) -> SettleResult:
        Checks.settle(hold_id, actual, model, now, actuals, log)
        over = actuals or {}
        entry = None if log is None else (log[0], LogEntry(log[1], _json_copy(log[2])))
        with self._lock:
            hold = self._holds.get(hold_id)
            if hold is None:
                raise UnknownHoldError(hold_id)
            if hold.state == "settled":
                return SettleResult(hold.actual, already=True)
            self._record({key: over.get(key[0], actual) for key in hold.lines}, model)
            self._deactivate(hold_id, hold)
            hold.state, hold.actual = "settled", actual
            if entry is not None:
                self._logs[entry[0]].append(entry[1])
            return SettleResult(actual, already=False)

    def release(self, hold_id: str, now: float) -> bool:
        Checks.release(hold_id, now)
        with self._lock:
            hold = self._holds.get(hold_id)
            if hold is None:
                raise UnknownHoldError(hold_id)
            if hold.state != "held":
                return False
            self._deactivate(hold_id, hold)
            hold.state = "released"
            return True

    def charge(
        self,
        lines: Sequence[Line],
        amount: int,
        model: str | None,
        now: float,
        charge_id: str | None = None,
    ) -> bool:
        Checks.charge(lines, amount, model, now, charge_id)
        scopes = frozenset(line.scope for line in lines)
        with self._lock:
            if charge_id is not None and charge_id in self._charges:
                seen = self._charges[charge_id]
                if (seen.amount, seen.scopes) != (amount, scopes):
                    raise charge_conflict(charge_id)
                return False
            self._record({(line.scope, line.window): amount for line in lines}, model)
            if charge_id is not None:
                self._charges[charge_id] = _Charge(amount, scopes, now)
            return True

    def usage(self, scope: str, window: int, now: float) -> Usage:
        Checks.window(scope, window, now)
        key = (scope, window)
        with self._lock:
            return Usage(
                self._spent.get(key, 0),
                self._held(key, now),
                dict(self._by_model.get(key, {})),
            )

    def reset(self, scope: str, window: int) -> None:
        Checks.window(scope, window)
        with self._lock:
            self._spent.pop((scope, window), None)
            self._by_model.pop((scope, window), None)

    def history(self, scope: str, limit: int = 100) -> list[tuple[int, int]]:
        Checks.history(scope, limit)
        with self._lock:
            rows = [(w, v) for (s, w), v in self._spent.items() if s == scope]
        return sorted(rows, reverse=True)[:limit]

    def purge(self, now: float, retention: float) -> int:
        Checks.purge(now, retention)
        with self._lock:
            for hold_id, hold in list(self._holds.items()):
                if hold.expires_at <= now:
                    self._deactivate(hold_id, hold)
            gone = [k for k, h in self._holds.items() if h.expires_at + retention <= now]
            for key in gone:
                del self._holds[key]
            for charge_id in [k for k, c in self._charges.items() if c.at + retention <= now]:
                del self._charges[charge_id]
            return len(gone)

    def put_budget(self, record: BudgetRecord) -> None:
        Checks.record(record)
        with self._lock:
            self._budgets[record.scope] = record

    def get_budgets(self, scopes: Sequence[str]) -> list[BudgetRecord | None]:
        Checks.scopes(scopes)
        with self._lock:
            return [self._budgets.get(scope) for scope in scopes]

    def list_budgets(self, prefix: str) -> list[BudgetRecord]:
        Checks.name(prefix, "prefix", allow_empty=True)
        with self._lock:
            return sorted(
                (r for s, r in self._budgets.items() if s.startswith(prefix)),
                key=lambda r: r.scope,
            )

    def delete_budget(self, scope: str) -> bool:
        Checks.name(scope, "scope")
        with self._lock:
            return self._budgets.pop(scope, None) is not None

    # Documents are copied through JSON on the way in, so callers cannot mutate stored
    # state and every backend accepts and returns exactly the same values.
    def put_doc(self, kind: str, key: str, data: Mapping[str, Any]) -> None:
        Checks.doc(kind, key, data)
        stored = _json_copy(data)
        with self._lock:
            self._docs[(kind, key)] = stored

    def create_doc(self, kind: str, key: str, data: Mapping[str, Any]) -> bool:
        Checks.doc(kind, key, data)
        stored = _json_copy(data)
        with self._lock:
            if (kind, key) in self._docs:
                return False
            self._docs[(kind, key)] = stored
            return True

    def get_doc(self, kind: str, key: str) -> dict[str, Any] | None:
        Checks.doc(kind, key)
        with self._lock:
            found = self._docs.get((kind, key))
            return None if found is None else copy.deepcopy(found)

    def list_docs(self, kind: str, prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
        Checks.list_docs(kind, prefix)
        with self._lock:
            rows = [
                (k, copy.deepcopy(v))
                for (kd, k), v in self._docs.items()
                if kd == kind and k.startswith(prefix)
            ]
        return sorted(rows, key=lambda row: row[0])

    def delete_doc(self, kind: str, key: str) -> bool:
        Checks.doc(kind, key)
        with self._lock:
            return self._docs.pop((kind, key), None) is not None

    def append_log(self, kind: str, at: float, data: Mapping[str, Any]) -> None:
        Checks.log(kind, at, data)
        entry = LogEntry(at, _json_copy(data))
        with self._lock:
            self._logs[kind].append(entry)

    def read_log(
        self, kind: str, since: float = 0.0, until: float = float("inf"), limit: int = 100
    ) -> list[LogEntry]:
        Checks.read_log(kind, since, until, limit)
        with self._lock:
            rows = [e for e in self._logs.get(kind, []) if since <= e.at < until]
        # Newest first; among equal times the later append first, as the SQL stores do.
        rows.reverse()
        rows.sort(key=lambda e: e.at, reverse=True)
        return [LogEntry(e.at, copy.deepcopy(dict(e.data))) for e in rows[:limit]]


def _json_copy(data: Mapping[str, Any]) -> dict[str, Any]:
    copied: dict[str, Any] = json.loads(json.dumps(dict(data)))
    return copied
