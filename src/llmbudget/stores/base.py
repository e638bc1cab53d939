"""The store interface: the few atomic operations every backend implements.

Amounts here are integers: nano-dollars (see :mod:`llmbudget.money`), or counts for
budgets in other units (requests, tokens, slots: see :mod:`llmbudget.units`); a store
never needs to know which. Time is epoch seconds passed in by the caller: stores never
read a clock and never compute periods. The ledger turns budgets into :class:`Line` s
(scope, window key, limit, and the line's own amount when it differs) before calling.

Each operation is small enough to be one SQL transaction, one PostgreSQL statement or
one Redis Lua script. Semantics every store must keep (the conformance suite checks them):

``reserve(hold_id, lines, amount, expires_at, now)``
    All or nothing: for every line with a limit, ``spent + active holds + amount <= limit``
    in that line's window, where a line's amount is its own ``Line.amount`` when set,
    else the operation's ``amount``; else nothing changes and a :class:`Refusal` names the
    first line (in the given order) that would go over. Holds whose ``expires_at <= now``
    do not count. Reserving again with a ``hold_id`` the store already has changes nothing
    and succeeds only if that hold is still held (not settled or released; expiry does
    not matter) with the same ``amount`` and the same lines (``(scope, window)`` and each
    line's amount), so a client may retry a reserve whose answer it lost. Any other reuse
    of a ``hold_id`` raises :class:`~llmbudget.errors.InvalidInputError` and changes
    nothing.
``settle(hold_id, actual, model, now, actuals=None)``
    Records ``actual`` as spend on every line of the hold (in the windows it was reserved
    in), or ``actuals[scope]`` on the lines of the scopes ``actuals`` names (a hold's
    lines in other units: requests, tokens; scopes the hold lacks are ignored), and ends
    the hold. Idempotent: settling again records nothing and returns the first result.
    Settling a released or expired hold still records the spend, because the money was
    spent. Unknown ids raise :class:`~llmbudget.errors.UnknownHoldError`.
``release(hold_id, now)``
    Ends a hold without spend; ``False`` if it was already settled or released.
``charge(lines, amount, model, now, charge_id=None)``
    Records ``amount`` on every line (lines carry no amount of their own here)
    unconditionally (a cost that has already happened) and returns ``True``.
    With a ``charge_id`` it is idempotent: charging again under an id the store has seen,
    with the same amount on the same scopes, records nothing and returns ``False`` (the
    window may differ: a retry just after a window boundary is still the same charge), so
    a client may retry a charge whose answer it lost. Any other reuse of the id raises
    :class:`~llmbudget.errors.InvalidInputError` and changes nothing. Charge ids are kept
    ``retention`` seconds (see ``purge``).
``usage(scope, window, now)``
    Spent, active holds, and spend per model of one scope's window.
``purge(now, retention)``
    Forgets holds that expired more than ``retention`` seconds ago (so a late settle
    within the retention still lands) and returns how many it removed. Also forgets the
    ids of charges recorded more than ``retention`` seconds ago.

Beside the ledger, two small generic facilities serve the server and the gateway, so
that they need no storage of their own on any backend:

*documents*: JSON objects by ``(kind, key)`` — virtual keys, alert markers.
    ``create_doc`` inserts only if absent and says whether it did (atomic, so "fire this
    alert once per window" holds across server workers).
*logs*: append-only JSON entries by ``kind`` with a timestamp — the gateway's spend log.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, cast

from llmbudget.errors import CounterOverflowError, InvalidInputError
from llmbudget.periods import Period
from llmbudget.units import Unit, check_unit
from llmbudget.validation import (
    INT64_MAX,
    check_id,
    check_int,
    check_int64,
    check_json_object,
    check_name,
    check_seconds,
    check_timestamp,
    check_units,
)

if TYPE_CHECKING:
    from llmbudget.stores.group_commit import GroupWriter

__all__ = [
    "AsyncStore",
    "BudgetRecord",
    "Checks",
    "Line",
    "LogEntry",
    "Refusal",
    "SettleResult",
    "Store",
    "Usage",
    "charge_conflict",
    "check_counter",
    "validate_lines",
]


@dataclass(frozen=True, slots=True)
class Line:
    """One scope's window in an operation, with its limit (``None``: no limit) and, in a
    reserve, its own amount (``None``: the operation's), in the scope's units.

    >>> Line("user:a", 0, 10, amount=1).amount
    1
    """

    scope: str
    window: int
    limit: int | None = None
    amount: int | None = None

    def amount_or(self, amount: int) -> int:
        """What this line reserves in an operation of ``amount``."""
        return amount if self.amount is None else self.amount


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a reserve was refused: the index of the line that would go over, and its state."""

    index: int
    spent: int
    held: int


@dataclass(frozen=True, slots=True)
class SettleResult:
    """What a settle recorded; ``already`` is true when it replayed an earlier settle."""

    actual: int
    already: bool


@dataclass(frozen=True, slots=True)
class Usage:
    spent: int = 0
    held: int = 0
    by_model: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One appended log entry: when, and its JSON data."""

    at: float
    data: Mapping[str, Any]


#: A log entry to append: ``(kind, at, data)``. Given to ``settle``, it is appended in the
#: same atomic operation as the settle, and only by the call that settles the hold: a
#: retry of a settle that landed finds it settled and appends nothing again.
LogRecord = tuple[str, float, Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class BudgetRecord:
    """A stored budget definition. ``limit`` is in ``unit`` (nano-dollars for ``usd``, a
    count otherwise); ``None`` tracks without limit."""

    scope: str
    limit: int | None
    duration: str | None
    timezone: str = "UTC"
    rolling: bool = False
    created_at: float = 0.0
    updated_at: float = 0.0
    unit: Unit = "usd"


class Store(ABC):
    """A synchronous store. Implementations must be safe to share between threads."""

    #: Calls may wait on I/O (a file lock, the network): under asyncio they run in a thread.
    blocking: ClassVar[bool] = True
    #: Writes are serialised by the store anyway (SQLite's one write lock): under asyncio
    #: its calls share one dedicated thread instead of competing for the lock.
    serial: ClassVar[bool] = False
    #: The longest one call may take, in seconds (``None``: no limit, in-process stores).
    #: Under asyncio a call still running then is abandoned with
    #: :class:`~llmbudget.errors.StoreUnavailableError` (see :mod:`llmbudget.operations`).
    timeout: float | None = None

    @property
    def identity(self) -> str:
        """What names this store's data in the journal (:mod:`llmbudget.journal`): the same
        for every process that opens the same data, never a password. In-process stores
        have one that is valid in this process only."""
        return f"{type(self).__name__}@{id(self):x}"

    def group_writer(self) -> GroupWriter | None:
        """Where asyncio callers send this store's calls to be committed in groups (a
        store with one write lock: see :mod:`llmbudget.stores.group_commit`); ``None``:
        each call runs on its own in a worker thread."""
        return None

    # -- ledger ----------------------------------------------------------------------
    @abstractmethod
    def reserve(
        self, hold_id: str, lines: Sequence[Line], amount: int, expires_at: float, now: float
    ) -> Refusal | None: ...

    @abstractmethod
    def settle(
        self,
        hold_id: str,
        actual: int,
        model: str | None,
        now: float,
        actuals: Mapping[str, int] | None = None,
        log: LogRecord | None = None,
    ) -> SettleResult: ...

    @abstractmethod
    def release(self, hold_id: str, now: float) -> bool: ...

    @abstractmethod
    def charge(
        self,
        lines: Sequence[Line],
        amount: int,
        model: str | None,
        now: float,
        charge_id: str | None = None,
    ) -> bool: ...

    @abstractmethod
    def usage(self, scope: str, window: int, now: float) -> Usage: ...

    @abstractmethod
    def reset(self, scope: str, window: int) -> None:
        """Zero the spend (total and per model) of one scope's window."""

    @abstractmethod
    def history(self, scope: str, limit: int = 100) -> list[tuple[int, int]]:
        """``(window, spent)`` pairs of a scope, newest window first."""

    @abstractmethod
    def purge(self, now: float, retention: float) -> int: ...

    # -- budget definitions ----------------------------------------------------------
    @abstractmethod
    def put_budget(self, record: BudgetRecord) -> None:
        """Create or replace the budget of ``record.scope`` (spend is kept)."""

    @abstractmethod
    def get_budgets(self, scopes: Sequence[str]) -> list[BudgetRecord | None]:
        """The records of ``scopes``, in order, ``None`` where there is none (one round trip)."""

    @abstractmethod
    def list_budgets(self, prefix: str) -> list[BudgetRecord]:
        """Every record whose scope starts with ``prefix``, sorted by scope."""

    @abstractmethod
    def delete_budget(self, scope: str) -> bool: ...

    # -- documents and logs -----------------------------------------------------------
    @abstractmethod
    def put_doc(self, kind: str, key: str, data: Mapping[str, Any]) -> None:
        """Create or replace a JSON document."""

    @abstractmethod
    def create_doc(self, kind: str, key: str, data: Mapping[str, Any]) -> bool:
        """Insert a document only if none has this key; ``True`` if this call inserted it."""

    @abstractmethod
    def get_doc(self, kind: str, key: str) -> dict[str, Any] | None: ...

    @abstractmethod
    def list_docs(self, kind: str, prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
        """``(key, data)`` of every document of ``kind`` whose key starts with ``prefix``, by key."""

    @abstractmethod
    def delete_doc(self, kind: str, key: str) -> bool: ...

    @abstractmethod
    def append_log(self, kind: str, at: float, data: Mapping[str, Any]) -> None: ...

    @abstractmethod
    def read_log(
        self, kind: str, since: float = 0.0, until: float = float("inf"), limit: int = 100
    ) -> list[LogEntry]:
        """Entries with ``since <= at < until``, newest first, at most ``limit``."""

    def close(self) -> None:  # noqa: B027 - optional hook, most stores hold nothing
        """Release connections. The store must not be used afterwards."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncStore(Protocol):
    """The same operations as :class:`Store`, as coroutines (PostgreSQL, Redis, HTTP).
    Like a :class:`Store`, it may have a ``timeout`` and an ``identity``."""

    async def reserve(
        self, hold_id: str, lines: Sequence[Line], amount: int, expires_at: float, now: float
    ) -> Refusal | None: ...
    async def settle(
        self,
        hold_id: str,
        actual: int,
        model: str | None,
        now: float,
        actuals: Mapping[str, int] | None = None,
        log: LogRecord | None = None,
    ) -> SettleResult: ...
    async def release(self, hold_id: str, now: float) -> bool: ...
    async def charge(
        self,
        lines: Sequence[Line],
        amount: int,
        model: str | None,
        now: float,
        charge_id: str | None = None,
    ) -> bool: ...
    async def usage(self, scope: str, window: int, now: float) -> Usage: ...
    async def reset(self, scope: str, window: int) -> None: ...
    async def history(self, scope: str, limit: int = 100) -> list[tuple[int, int]]: ...
    async def purge(self, now: float, retention: float) -> int: ...
    async def put_budget(self, record: BudgetRecord) -> None: ...
    async def get_budgets(self, scopes: Sequence[str]) -> list[BudgetRecord | None]: ...
    async def list_budgets(self, prefix: str) -> list[BudgetRecord]: ...
    async def delete_budget(self, scope: str) -> bool: ...
    async def put_doc(self, kind: str, key: str, data: Mapping[str, Any]) -> None: ...
    async def create_doc(self, kind: str, key: str, data: Mapping[str, Any]) -> bool: ...
    async def get_doc(self, kind: str, key: str) -> dict[str, Any] | None: ...
    async def list_docs(self, kind: str, prefix: str = "") -> list[tuple[str, dict[str, Any]]]: ...
    async def delete_doc(self, kind: str, key: str) -> bool: ...
    async def append_log(self, kind: str, at: float, data: Mapping[str, Any]) -> None: ...
    async def read_log(
        self, kind: str, since: float = 0.0, until: float = float("inf"), limit: int = 100
    ) -> list[LogEntry]: ...
    async def aclose(self) -> None: ...


def validate_lines(lines: object, amount: object) -> None:
    """Shared argument checks, so every backend refuses the same bad calls the same way."""
    check_units(amount, "amount")
    if isinstance(lines, str | bytes) or not isinstance(lines, Sequence) or not lines:
        raise InvalidInputError("reserve/charge needs at least one scope")
    seen: set[tuple[str, int]] = set()
    for line in lines:
        if not isinstance(line, Line):
            raise InvalidInputError(f"lines must be Line objects, got {type(line).__name__}")
        check_name(line.scope, "scope")
        check_int64(line.window, "window")
        if line.limit is not None:
            check_units(line.limit, "limit")
        if line.amount is not None:
            check_units(line.amount, "line amount")
        key = (line.scope, line.window)
        if key in seen:
            raise InvalidInputError(f"scope {line.scope!r} given twice in one operation")
        seen.add(key)


def charge_conflict(charge_id: str) -> InvalidInputError:
    """The error for a charge id reused with another amount or other scopes."""
    return InvalidInputError(
        f"charge id {charge_id!r} was already used for a different charge (another amount "
        "or other scopes)"
    )


def check_counter(scope: str, window: int, current: int, add: int) -> None:
    """Refuse adding ``add`` to a counter at ``current`` past int64 (stores that cannot
    check inside the database call this under their write lock)."""
    if current + add > INT64_MAX:
        raise CounterOverflowError(scope, window)


def _model(model: object) -> None:
    if model is not None:
        check_name(model, "model")


class Checks:
    """The argument checks of every :class:`Store` operation, shared by all backends.

    Each store calls the check of an operation before touching its data, so every
    backend refuses the same calls with the same typed error and nothing is stored.
    """

    @staticmethod
    def reserve(
        hold_id: object, lines: object, amount: object, expires_at: object, now: object
    ) -> None:
        check_id(hold_id, "hold id")
        validate_lines(lines, amount)
        check_timestamp(expires_at, "expires_at")
        check_timestamp(now, "now")

    @staticmethod
    def settle(
        hold_id: object,
        actual: object,
        model: object,
        now: object,
        actuals: object = None,
        log: object = None,
    ) -> None:
        check_id(hold_id, "hold id")
        check_units(actual, "actual")
        _model(model)
        check_timestamp(now, "now")
        if log is not None:
            if not isinstance(log, tuple) or len(log) != 3:
                raise InvalidInputError("log must be a (kind, at, data) entry")
            Checks.log(*log)
        if actuals is not None:
            if not isinstance(actuals, Mapping):
                raise InvalidInputError("actuals must map a scope to an amount")
            for scope, value in actuals.items():
                check_name(scope, "scope in actuals")
                check_units(value, f"actual of {scope!r}")

    @staticmethod
    def release(hold_id: object, now: object) -> None:
        check_id(hold_id, "hold id")
        check_timestamp(now, "now")

    @staticmethod
    def charge(
        lines: object, amount: object, model: object, now: object, charge_id: object
    ) -> None:
        validate_lines(lines, amount)
        # validate_lines checked that these are Line objects.
        if any(line.amount is not None for line in cast(Sequence[Line], lines)):
            raise InvalidInputError(
                "a charge records one amount on every line: lines of a "
                "charge carry no amount of their own"
            )
        _model(model)
        check_timestamp(now, "now")
        if charge_id is not None:
            check_id(charge_id, "charge id")

    @staticmethod
    def window(scope: object, window: object, now: object = None) -> None:
        check_name(scope, "scope")
        check_int64(window, "window")
        if now is not None:
            check_timestamp(now, "now")

    @staticmethod
    def history(scope: object, limit: object) -> None:
        check_name(scope, "scope")
        check_int(limit, "limit", 0, 1_000_000)

    @staticmethod
    def purge(now: object, retention: object) -> None:
        check_timestamp(now, "now")
        check_seconds(retention, "retention")

    @staticmethod
    def record(record: object) -> None:
        if not isinstance(record, BudgetRecord):
            raise InvalidInputError(f"expected a BudgetRecord, got {type(record).__name__}")
        check_name(record.scope, "scope")
        if record.limit is not None:
            check_units(record.limit, "limit")
        check_unit(record.unit)
        if record.duration is not None and not isinstance(record.duration, str):
            raise InvalidInputError("duration must be a string or None")
        check_name(record.timezone, "timezone")
        check_timestamp(record.created_at, "created_at")
        check_timestamp(record.updated_at, "updated_at")
        # A record the ledger could not read back would break every later read of it.
        Period.parse(record.duration, timezone=record.timezone, rolling=record.rolling)

    @staticmethod
    def scopes(scopes: object) -> None:
        if isinstance(scopes, str) or not isinstance(scopes, Sequence):
            raise InvalidInputError("scopes must be a list of scope names")
        for scope in scopes:
            check_name(scope, "scope")

    @staticmethod
    def name(value: object, what: str, *, allow_empty: bool = False) -> None:
        check_name(value, what, allow_empty=allow_empty)

    @staticmethod
    def doc(kind: object, key: object, data: object = None) -> None:
        check_name(kind, "document kind")
        check_name(key, "document key")
        if data is not None:
            check_json_object(data)

    @staticmethod
    def list_docs(kind: object, prefix: object) -> None:
        check_name(kind, "document kind")
        check_name(prefix, "prefix", allow_empty=True)

    @staticmethod
    def log(kind: object, at: object, data: object) -> None:
        check_name(kind, "log kind")
        check_timestamp(at, "at")
        check_json_object(data, "log entry")

    @staticmethod
    def read_log(kind: object, since: object, until: object, limit: object) -> None:
        check_name(kind, "log kind")
        for value, what in ((since, "since"), (until, "until")):
            if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
                raise InvalidInputError(f"{what} must be a number of epoch seconds")
        check_int(limit, "limit", 0, 1_000_000)
