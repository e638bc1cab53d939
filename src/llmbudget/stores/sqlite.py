"""SQLite store (``sqlite:///path``), the zero-setup default.

Safe across threads and processes: WAL journal, one connection per thread and process,
and every write in a ``BEGIN IMMEDIATE`` transaction, which takes SQLite's single write
lock before reading, so a check and the write that follows it can never interleave with
another writer's. ``busy_timeout`` makes waiting writers queue instead of failing.

The database file is created at the first write, not on open or read: reading a store
whose file does not exist answers "nothing" (no budgets, no spend), so
``BudgetManager("p").get_users()`` in an empty directory leaves no ``llmbudget.db`` behind.

Durability: ``synchronous=NORMAL`` in WAL mode loses nothing when the *process* is
killed (kill -9): a committed transaction is in the WAL file, which the next open
replays. Only an OS crash or power cut can lose the last transactions; pass
``?synchronous=FULL`` in the URL to fsync every commit for that too.

Under asyncio (the gateway, the server) calls go to one writer thread per store that
commits them in groups (:mod:`llmbudget.stores.group_commit`): every call queued while a
group runs joins the next one, each in a savepoint of its own, with one ``BEGIN
IMMEDIATE`` and one ``COMMIT`` per group; a call's outcome is delivered after the commit.
That thread's connection never checkpoints the WAL on commit (the fsyncs would land on a
request); a checkpointer thread does it beside it (``PASSIVE``: it never blocks writers).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from llmbudget.errors import InvalidInputError, StoreError, StoreUnavailableError, UnknownHoldError
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
from llmbudget.stores.checkpoints import Checkpointer
from llmbudget.stores.group_commit import GroupWriter
from llmbudget.stores.outcomes import capture
from llmbudget.stores.sql import migrations
from llmbudget.units import Unit

__all__ = ["SQLiteStore"]

T = TypeVar("T")

# The schema, one migration per file in ``stores/sql/`` (``sqlite_<version>_<name>.sql``),
# applied in order (PRAGMA user_version); never edit one that has shipped.
_MIGRATIONS = migrations("sqlite")

_SPENT = "SELECT spent FROM spend WHERE scope = ? AND window = ?"
_HELD = (
    "SELECT COALESCE(SUM(amount), 0) FROM active_holds "
    "WHERE scope = ? AND window = ? AND expires_at > ?"
)
_ADD_SPEND = (
    "INSERT INTO spend (scope, window, spent) VALUES (?, ?, ?) "
    "ON CONFLICT (scope, window) DO UPDATE SET spent = spent + excluded.spent"
)
_ADD_MODEL_SPEND = (
    "INSERT INTO spend_model (scope, window, model, spent) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (scope, window, model) DO UPDATE SET spent = spent + excluded.spent"
)
_BUDGET_COLUMNS = "scope, limit_units, duration, timezone, rolling, created_at, updated_at, unit"


class _Owned:
    """One thread's connection. Server thread pools retire idle threads; when a thread's
    local storage goes, so does this holder, and the finalizer closes the connection, so
    connections do not pile up for the life of the store."""

    __slots__ = ("__weakref__", "closer", "conn", "pid")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.pid = os.getpid()
        self.closer = weakref.finalize(self, conn.close)


class SQLiteStore(Store):
    """SQLite-backed store. ``path`` may be ``":memory:"`` only for single-connection use."""

    def __init__(
        self, path: str = "llmbudget.db", *, timeout: float = 30.0, synchronous: str = "NORMAL"
    ) -> None:
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise InvalidInputError(f"unknown synchronous mode {synchronous!r}")
        self.path = path
        self._timeout = timeout
        self.timeout = timeout
        self._synchronous = synchronous.upper()
        self._local = threading.local()
        self._all: weakref.WeakSet[_Owned] = weakref.WeakSet()
        self._all_lock = threading.Lock()
        self._writer_lock = threading.Lock()
        self._lock_pid = os.getpid()
        directory = os.path.dirname(os.path.abspath(path))
        if path != ":memory:" and not os.path.isdir(directory):
            raise StoreUnavailableError(f"directory of SQLite database {path!r} does not exist")
        self._ready = False
        self._ready_lock = threading.Lock()
        self._writer: GroupWriter | None = None
        self._writer_pid = 0
        self._checkpoints: Checkpointer | None = None
        if path == ":memory:" or os.path.exists(path):
            self._guard(self._ensure)

    @property
    def identity(self) -> str:
        if self.path == ":memory:":
            return super().identity
        return "sqlite://" + os.path.realpath(self.path)

    # -- connections -----------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        owned: _Owned | None = getattr(self._local, "owned", None)
        if owned is not None and owned.pid == os.getpid():
            return owned.conn
        if owned is not None:
            # Forked child: never close (and so maybe checkpoint) the parent's connection.
            owned.closer.detach()
        conn = sqlite3.connect(
            self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False
        )
        self._use_wal(conn)
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute(f"PRAGMA busy_timeout={int(self._timeout * 1000)}")
        owned = _Owned(conn)
        self._local.owned = owned
        with self._all_lock:
            self._all.add(owned)
        return conn

    def _use_wal(self, conn: sqlite3.Connection) -> None:
        """Switch to WAL (persistent once set). While another process is creating the
        same new database file, the switch can fail at once with "database is locked",
        without waiting in the busy handler: try again for up to the store's timeout."""
        deadline = time.monotonic() + self._timeout
        pause = 0.005
        while True:
            try:
                if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 0.1)

    def _guard(self, fn: Callable[[], T]) -> T:
        """Run ``fn``, translating driver errors at the store boundary."""
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            text = str(exc).lower()
            if "locked" in text or "busy" in text or "unable to open" in text:
                raise StoreUnavailableError(f"SQLite store {self.path!r}: {exc}") from exc
            raise StoreError(f"SQLite store {self.path!r}: {exc}") from exc
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store {self.path!r}: {exc}") from exc

    def _ensure(self) -> None:
        """Create the database (file and schema) unless this store already has."""
        if self._ready:
            return
        with self._ready_lock:
            if not self._ready:
                self._migrate()
                self._ready = True

    def _absent(self) -> bool:
        """``True`` while there is no database: reads answer "nothing" without creating
        the file, which only the first write does (so a read in an empty directory
        leaves no ``llmbudget.db`` behind)."""
        if self._ready:
            return False
        if not os.path.exists(self.path):
            return True
        self._guard(self._ensure)  # created by another store or process since
        return False

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        self._ensure()
        with self._transaction() as conn:
            yield conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        if getattr(self._local, "grouping", False):
            # Inside a group (run_group): its transaction is open, this call's savepoint too.
            yield self._conn()
            return
        # Writers of this process queue on a mutex first: SQLite's own busy handler sleeps
        # in steps of up to 100 ms, which under thread contention turns into long tail
        # latency. Other processes still meet at SQLite's lock (busy_timeout).
        lock = self._process_write_lock()
        with lock:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _process_write_lock(self) -> threading.Lock:
        if self._lock_pid != os.getpid():
            # A child forked while another thread held the lock must not inherit it held.
            self._writer_lock, self._lock_pid = threading.Lock(), os.getpid()
        return self._writer_lock

    def _migrate(self) -> None:
        with self._transaction() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
                for statement in script.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version={number}")

    # -- group commit (asyncio callers) ------------------------------------------------

    def group_writer(self) -> GroupWriter:
        """This process's writer thread for this store (see the module docstring)."""
        writer = self._writer
        if writer is not None and self._writer_pid == os.getpid():
            return writer
        with self._all_lock:
            if self._writer is None or self._writer_pid != os.getpid():
                # A forked child gets a writer (and a checkpointer) of its own.
                self._writer = GroupWriter(self._run_group, name="llmbudget-sqlite-writer")
                self._writer_pid = os.getpid()
                if self.path != ":memory:":
                    self._checkpoints = Checkpointer(self.path)
            return self._writer

    def _run_group(self, calls: Sequence[Callable[[], Any]]) -> list[Any]:
        """Run ``calls`` in one transaction, each in a savepoint of its own; one outcome
        (result or exception) per call, delivered only once the commit succeeded."""
        if self._absent():
            # No database yet (a read must not create the file): one call at a time.
            return [capture(call) for call in calls]
        conn = self._conn()
        if self._checkpoints is not None:
            self._checkpoints.own(conn)
        if len(calls) == 1:
            return [capture(calls[0])]
        outcomes: list[Any] = []
        with self._process_write_lock():
            self._guard(lambda: conn.execute("BEGIN IMMEDIATE"))
            self._local.grouping = True
            try:
                for call in calls:
                    conn.execute("SAVEPOINT op")
                    try:
                        outcomes.append(call())
                    except BaseException as exc:
                        conn.execute("ROLLBACK TO op")
                        outcomes.append(exc)
                    conn.execute("RELEASE op")
                self._guard(lambda: conn.execute("COMMIT"))
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            finally:
                self._local.grouping = False
        return outcomes

    def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None and self._writer_pid == os.getpid():
            writer.close()
        if self._checkpoints is not None:
            self._checkpoints.stop()
            self._checkpoints = None
        with self._all_lock:
            for owned in list(self._all):
                owned.closer()
            self._all.clear()
        self._local = threading.local()

    # -- ledger ----------------------------------------------------------------------

    def reserve(
        self, hold_id: str, lines: Sequence[Line], amount: int, expires_at: float, now: float
    ) -> Refusal | None:
        Checks.reserve(hold_id, lines, amount, expires_at, now)

        def run() -> Refusal | None:
            with self._write() as conn:
                existing = conn.execute(
                    "SELECT state, amount, lines FROM holds WHERE id = ?", (hold_id,)
                ).fetchone()
                wanted = [(line.scope, line.window, line.amount_or(amount)) for line in lines]
                if existing is not None:
                    # A retry of this very reserve: the hold must still be live and identical.
                    state, held_amount, held_lines = existing
                    if (
                        state != "held"
                        or held_amount != amount
                        or set(_lines(held_lines, held_amount)) != set(wanted)
                    ):
                        raise InvalidInputError(
                            f"hold id {hold_id!r} was already used for a different or finished "
                            "reservation"
                        )
                    return None
                for index, (scope, window, need) in enumerate(wanted):
                    row = conn.execute(_SPENT, (scope, window)).fetchone()
                    spent = row[0] if row else 0
                    held = conn.execute(_HELD, (scope, window, now)).fetchone()[0]
                    # Also for lines without a limit: SUM() of the holds must stay int64.
                    check_counter(scope, window, spent + held, need)
                    limit = lines[index].limit
                    if limit is not None and spent + held + need > limit:
                        return Refusal(index, spent, held)
                conn.execute(
                    "INSERT INTO holds (id, amount, expires_at, state, lines) "
                    "VALUES (?, ?, ?, 'held', ?)",
                    (hold_id, amount, expires_at, _lines_json(wanted, amount)),
                )
                conn.executemany(
                    "INSERT INTO active_holds VALUES (?, ?, ?, ?, ?)",
                    [(s, w, hold_id, a, expires_at) for s, w, a in wanted],
                )
                return None

        return self._guard(run)

    def _end_hold(
        self, conn: sqlite3.Connection, hold_id: str, lines: str
    ) -> list[tuple[str, int]]:
        """Stop the hold counting; its ``(scope, window)`` keys."""
        keys = [(s, w) for s, w, _ in _lines(lines, 0)]
        conn.executemany(
            "DELETE FROM active_holds WHERE scope = ? AND window = ? AND hold_id = ?",
            [(s, w, hold_id) for s, w in keys],
        )
        return keys

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
        if self._absent():
            raise UnknownHoldError(hold_id)
        over = actuals or {}
        entry = None if log is None else (log[0], log[1], json.dumps(dict(log[2])))

        def run() -> SettleResult:
            with self._write() as conn:
                row = conn.execute(
                    "SELECT state, actual, lines FROM holds WHERE id = ?", (hold_id,)
                ).fetchone()
                if row is None:
                    raise UnknownHoldError(hold_id)
                state, previous, lines = row
                if state == "settled":
                    return SettleResult(previous, already=True)
                keys = self._end_hold(conn, hold_id, lines)
                _record(conn, [(s, w, over.get(s, actual)) for s, w in keys], model)
                conn.execute(
                    "UPDATE holds SET state = 'settled', actual = ? WHERE id = ?",
                    (actual, hold_id),
                )
                if entry is not None:
                    conn.execute("INSERT INTO logs (kind, at, data) VALUES (?, ?, ?)", entry)
                return SettleResult(actual, already=False)

        return self._guard(run)

    def release(self, hold_id: str, now: float) -> bool:
        Checks.release(hold_id, now)
        if self._absent():
            raise UnknownHoldError(hold_id)

        def run() -> bool:
            with self._write() as conn:
                row = conn.execute(
                    "SELECT state, lines FROM holds WHERE id = ?", (hold_id,)
                ).fetchone()
                if row is None:
                    raise UnknownHoldError(hold_id)
                if row[0] != "held":
                    return False
                self._end_hold(conn, hold_id, row[1])
                conn.execute("UPDATE holds SET state = 'released' WHERE id = ?", (hold_id,))
                return True

        return self._guard(run)

    def charge(
        self,
        lines: Sequence[Line],
        amount: int,
        model: str | None,
        now: float,
        charge_id: str | None = None,
    ) -> bool:
        Checks.charge(lines, amount, model, now, charge_id)
        scopes = json.dumps(sorted({line.scope for line in lines}))

        def run() -> bool:
            with self._write() as conn:
                if charge_id is not None:
                    seen = conn.execute(
                        "SELECT amount, scopes FROM charges WHERE id = ?", (charge_id,)
                    ).fetchone()
                    if seen is not None:
                        if tuple(seen) != (amount, scopes):
                            raise charge_conflict(charge_id)
                        return False
                _record(conn, [(line.scope, line.window, amount) for line in lines], model)
                if charge_id is not None:
                    conn.execute(
                        "INSERT INTO charges (id, amount, scopes, at) VALUES (?, ?, ?, ?)",
                        (charge_id, amount, scopes, now),
                    )
                return True

        return self._guard(run)

    def usage(self, scope: str, window: int, now: float) -> Usage:
        Checks.window(scope, window, now)
        if self._absent():
            return Usage()

        def run() -> Usage:
            conn = self._conn()
            # One read transaction, so spent, held and per-model agree with each other. A
            # read queued in a group (group commit) is already inside the group's one.
            own = not conn.in_transaction
            if own:
                conn.execute("BEGIN")
            try:
                row = conn.execute(_SPENT, (scope, window)).fetchone()
                held = conn.execute(_HELD, (scope, window, now)).fetchone()[0]
                models = conn.execute(
                    "SELECT model, spent FROM spend_model WHERE scope = ? AND window = ?",
                    (scope, window),
                ).fetchall()
            finally:
                if own:
                    conn.execute("COMMIT")
            return Usage(row[0] if row else 0, held, dict(models))

        return self._guard(run)

    def reset(self, scope: str, window: int) -> None:
        Checks.window(scope, window)
        if self._absent():
            return

        def run() -> None:
            with self._write() as conn:
                conn.execute("DELETE FROM spend WHERE scope = ? AND window = ?", (scope, window))
                conn.execute(
                    "DELETE FROM spend_model WHERE scope = ? AND window = ?", (scope, window)
                )

        self._guard(run)

    def history(self, scope: str, limit: int = 100) -> list[tuple[int, int]]:
        Checks.history(scope, limit)
        if self._absent():
            return []

        def run() -> list[tuple[int, int]]:
            rows = self._conn().execute(
                "SELECT window, spent FROM spend WHERE scope = ? ORDER BY window DESC LIMIT ?",
                (scope, limit),
            )
            return [(w, s) for w, s in rows]

        return self._guard(run)

    def purge(self, now: float, retention: float) -> int:
        Checks.purge(now, retention)
        if self._absent():
            return 0

        def run() -> int:
            with self._write() as conn:
                # Expired holds stop counting at once; their rows are only kept for late settles.
                conn.execute("DELETE FROM active_holds WHERE expires_at <= ?", (now,))
                cursor = conn.execute("DELETE FROM holds WHERE expires_at <= ?", (now - retention,))
                conn.execute("DELETE FROM charges WHERE at <= ?", (now - retention,))
                return cursor.rowcount

        return self._guard(run)

    # -- budget definitions ----------------------------------------------------------

    def put_budget(self, record: BudgetRecord) -> None:
        Checks.record(record)

        def run() -> None:
            with self._write() as conn:
                conn.execute(
                    f"INSERT OR REPLACE INTO budgets ({_BUDGET_COLUMNS}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        record.scope,
                        record.limit,
                        record.duration,
                        record.timezone,
                        int(record.rolling),
                        record.created_at,
                        record.updated_at,
                        record.unit,
                    ),
                )

        self._guard(run)

    def get_budgets(self, scopes: Sequence[str]) -> list[BudgetRecord | None]:
        Checks.scopes(scopes)
        if self._absent():
            return [None] * len(scopes)

        def run() -> list[BudgetRecord | None]:
            if not scopes:
                return []
            marks = ",".join("?" * len(scopes))
            rows = self._conn().execute(
                f"SELECT {_BUDGET_COLUMNS} FROM budgets WHERE scope IN ({marks})", tuple(scopes)
            )
            found = {row[0]: _budget(row) for row in rows}
            return [found.get(scope) for scope in scopes]

        return self._guard(run)

    def list_budgets(self, prefix: str) -> list[BudgetRecord]:
        Checks.name(prefix, "prefix", allow_empty=True)
        if self._absent():
            return []

        def run() -> list[BudgetRecord]:
            # A range scan rather than LIKE, so '%' and '_' in scopes need no escaping.
            rows = self._conn().execute(
                f"SELECT {_BUDGET_COLUMNS} FROM budgets WHERE scope >= ? AND scope < ? "
                "ORDER BY scope",
                (prefix, prefix + "\U0010ffff"),
            )
            return [_budget(row) for row in rows]

        return self._guard(run)

    def delete_budget(self, scope: str) -> bool:
        Checks.name(scope, "scope")
        if self._absent():
            return False

        def run() -> bool:
            with self._write() as conn:
                return conn.execute("DELETE FROM budgets WHERE scope = ?", (scope,)).rowcount > 0

        return self._guard(run)

    # -- documents and logs -----------------------------------------------------------

    def put_doc(self, kind: str, key: str, data: Mapping[str, Any]) -> None:
        Checks.doc(kind, key, data)
        text = json.dumps(dict(data))

        def run() -> None:
            with self._write() as conn:
                conn.execute(
                    "INSERT OR REPLACE INTO docs (kind, key, data) VALUES (?, ?, ?)",
                    (kind, key, text),
                )

        self._guard(run)

    def create_doc(self, kind: str, key: str, data: Mapping[str, Any]) -> bool:
        Checks.doc(kind, key, data)
        text = json.dumps(dict(data))

        def run() -> bool:
            with self._write() as conn:
                cursor = conn.execute(
                    "INSERT INTO docs (kind, key, data) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                    (kind, key, text),
                )
                return cursor.rowcount > 0

        return self._guard(run)

    def get_doc(self, kind: str, key: str) -> dict[str, Any] | None:
        Checks.doc(kind, key)
        if self._absent():
            return None

        def run() -> dict[str, Any] | None:
            row = (
                self._conn()
                .execute("SELECT data FROM docs WHERE kind = ? AND key = ?", (kind, key))
                .fetchone()
            )
            return None if row is None else _load(row[0])

        return self._guard(run)

    def list_docs(self, kind: str, prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
        Checks.list_docs(kind, prefix)
        if self._absent():
            return []

        def run() -> list[tuple[str, dict[str, Any]]]:
            rows = self._conn().execute(
                "SELECT key, data FROM docs WHERE kind = ? AND key >= ? AND key < ? ORDER BY key",
                (kind, prefix, prefix + "\U0010ffff"),
            )
            return [(key, _load(data)) for key, data in rows]

        return self._guard(run)

    def delete_doc(self, kind: str, key: str) -> bool:
        Checks.doc(kind, key)
        if self._absent():
            return False

        def run() -> bool:
            with self._write() as conn:
                cursor = conn.execute("DELETE FROM docs WHERE kind = ? AND key = ?", (kind, key))
                return cursor.rowcount > 0

        return self._guard(run)

    def append_log(self, kind: str, at: float, data: Mapping[str, Any]) -> None:
        Checks.log(kind, at, data)
        text = json.dumps(dict(data))

        def run() -> None:
            with self._write() as conn:
                conn.execute("INSERT INTO logs (kind, at, data) VALUES (?, ?, ?)", (kind, at, text))

        self._guard(run)

    def read_log(
        self, kind: str, since: float = 0.0, until: float = float("inf"), limit: int = 100
    ) -> list[LogEntry]:
        Checks.read_log(kind, since, until, limit)
        if self._absent():
            return []

        def run() -> list[LogEntry]:
            rows = self._conn().execute(
                "SELECT at, data FROM logs WHERE kind = ? AND at >= ? AND at < ? "
                "ORDER BY at DESC, id DESC LIMIT ?",
                (kind, since, min(until, 1e300), limit),
            )
            return [LogEntry(at, _load(data)) for at, data in rows]

        return self._guard(run)


# (scope, window, amount) of one line of an operation.
_LineRow = tuple[str, int, int]


def _lines(text: str, amount: int) -> list[_LineRow]:
    """A hold's lines as stored: ``[scope, window, amount]``, or ``[scope, window]`` in
    holds written before lines had their own amounts (they hold the hold's ``amount``)."""
    rows: list[list[Any]] = json.loads(text)
    return [(str(r[0]), int(r[1]), int(r[2]) if len(r) > 2 else amount) for r in rows]


def _lines_json(lines: Sequence[_LineRow], amount: int) -> str:
    # A line holding the hold's amount is written as before ([scope, window]), so a
    # process of the previous version sharing the file still reads holds in dollars.
    return json.dumps([[s, w] if a == amount else [s, w, a] for s, w, a in lines])


def _record(conn: sqlite3.Connection, lines: Sequence[_LineRow], model: str | None) -> None:
    # Checked first, inside the write transaction: past int64 SQLite would silently turn
    # the column REAL (and lose every later nano-dollar), so refuse before any change.
    # Per-model spend never exceeds the total of its window, so the total is the bound.
    for scope, window, amount in lines:
        row = conn.execute(_SPENT, (scope, window)).fetchone()
        check_counter(scope, window, row[0] if row else 0, amount)
    conn.executemany(_ADD_SPEND, lines)
    if model is not None:
        conn.executemany(_ADD_MODEL_SPEND, [(s, w, model, a) for s, w, a in lines])


def _budget(row: Sequence[object]) -> BudgetRecord:
    scope, limit, duration, timezone, rolling, created_at, updated_at, unit = row
    return BudgetRecord(
        scope=str(scope),
        limit=None if limit is None else int(limit),  # type: ignore[call-overload]
        duration=None if duration is None else str(duration),
        timezone=str(timezone),
        rolling=bool(rolling),
        created_at=float(created_at),  # type: ignore[arg-type]
        updated_at=float(updated_at),  # type: ignore[arg-type]
        unit=cast(Unit, str(unit)),
    )


def _load(text: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(text)
    return data
