"""The journal: settles and charges kept on disk until their store takes them.

A settle whose store cannot be reached (an outage, a hung server) must not be lost: the
call was made and billed. The ledger writes it here — a small SQLite file that survives
a restart of the process — and :mod:`llmbudget.replay` replays it until it lands.
Replaying is idempotent: a hold settles once, a charge id is recorded once. While an
entry waits, reserves on its scopes count it (:meth:`Journal.counted`), so an outage
cannot become an overspend.

The file is ``$LLMBUDGET_JOURNAL``, else ``llmbudget-journal.db`` in the working
directory (beside the default store), created at the first entry. Entries name their
store by :func:`store_identity` (its address, never its password), so any process that
opens the same store — after a restart, or another worker sharing the file — finds them.
Processes sharing the file see each other's entries within ``refresh`` seconds.

>>> import os, tempfile
>>> journal = Journal(os.path.join(tempfile.mkdtemp(), "journal.db"))
>>> entry = Pending("redis://h:6379/0?prefix=app", "charge", "c1", 250, lines=(("user:a", 7),))
>>> journal.keep(entry)
>>> journal.counted("redis://h:6379/0?prefix=app", [Line("user:a", 7, 1000)], now=0.0)
[250]
>>> journal.drop(entry)
>>> journal.count()
0
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

from llmbudget.stores.base import Line, LogRecord

__all__ = [
    "DEFAULT_JOURNAL_PATH",
    "JOURNAL_ENV",
    "REPLAY_DELAYS",
    "Journal",
    "Kind",
    "LogRecord",
    "Pending",
    "default_journal",
    "store_identity",
]

JOURNAL_ENV = "LLMBUDGET_JOURNAL"
DEFAULT_JOURNAL_PATH = "llmbudget-journal.db"
#: Pauses between replays of a store's entries while it keeps failing (the last repeats).
REPLAY_DELAYS: tuple[float, ...] = (0.05, 0.2, 0.5, 1.0, 2.0, 5.0)

Kind = Literal["settle", "charge"]


@dataclass(frozen=True, slots=True)
class Pending:
    """A settle or charge that has not reached its store yet.

    ``ref`` is the hold id (settle) or the charge id (charge); ``amount`` the units it
    records on each of ``lines`` (``(scope, window)`` pairs). A settle's hold keeps
    counting ``held`` units in the store until ``expires_at``.
    """

    store: str
    kind: Kind
    ref: str
    amount: int
    held: int = 0
    expires_at: float | None = None
    lines: tuple[tuple[str, int], ...] = ()
    model: str | None = None
    at: float = 0.0
    log: LogRecord | None = None
    #: A settle's per-scope amounts for scopes in other units (requests, tokens, slots).
    actuals: Mapping[str, int] | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.store, self.kind, self.ref)

    def weight(self, now: float) -> int:
        """Units a reserve at ``now`` must count on each line, on top of what the store
        counts. While its hold lives, the store counts the hold's ``held`` units, so only
        what the settle adds beyond them; once the hold has expired the store counts
        nothing of it, so all of it (a charge is never counted by the store)."""
        if self.kind == "settle" and self.expires_at is not None and now < self.expires_at:
            return max(0, self.amount - self.held)
        return self.amount

    def to_json(self) -> str:
        log = None if self.log is None else [self.log[0], self.log[1], dict(self.log[2])]
        return json.dumps(
            {
                "amount": self.amount,
                "held": self.held,
                "expires_at": self.expires_at,
                "lines": [list(line) for line in self.lines],
                "model": self.model,
                "at": self.at,
                "log": log,
                "actuals": None if self.actuals is None else dict(self.actuals),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_row(cls, store: str, kind: str, ref: str, data: str) -> Pending:
        doc = json.loads(data)
        log = doc.get("log")
        return cls(
            store=store,
            kind="settle" if kind == "settle" else "charge",
            ref=ref,
            amount=int(doc["amount"]),
            held=int(doc.get("held", 0)),
            expires_at=doc.get("expires_at"),
            lines=tuple((str(s), int(w)) for s, w in doc.get("lines", ())),
            model=doc.get("model"),
            at=float(doc.get("at", 0.0)),
            log=None if log is None else (str(log[0]), float(log[1]), dict(log[2])),
            actuals=None
            if doc.get("actuals") is None
            else {str(k): int(v) for k, v in doc["actuals"].items()},
        )


def store_identity(store: object) -> str:
    """What names ``store`` in the journal: its ``identity`` (the address of its data,
    without credentials), else an id valid in this process only."""
    identity = getattr(store, "identity", None)
    if isinstance(identity, str) and identity:
        return identity
    return f"{type(store).__name__}@{id(store):x}"


@dataclass(slots=True)
class _Schedule:
    """When a store's entries are next tried (this process only)."""

    failures: int = 0
    next_try: float = 0.0
    busy: bool = False
    attached: int = 0


_SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (
    store TEXT NOT NULL,
    kind TEXT NOT NULL,
    ref TEXT NOT NULL,
    data TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (store, kind, ref)
)
"""


class Journal:
    """Pending settles and charges in one SQLite file (see the module docstring).

    Thread-safe. Reads are served from memory, reloaded from the file by :meth:`load`
    (which :meth:`stale` says is due every ``refresh`` seconds, to see other processes'
    entries); :meth:`keep` writes through to the file (``synchronous=FULL``) before it
    returns.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        refresh: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self.refresh = refresh
        self._monotonic = monotonic
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._by_store: dict[str, dict[tuple[str, str, str], Pending]] = {}
        self._loaded_at: float | None = None
        self._schedules: dict[str, _Schedule] = {}
        self._executor: ThreadPoolExecutor | None = None

    def __repr__(self) -> str:
        return f"Journal({self.path!r})"

    # -- the file ----------------------------------------------------------------------

    def _connect(self, create: bool) -> sqlite3.Connection | None:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        if not create and not os.path.exists(self.path):
            return None
        if create and not os.path.exists(self.path):
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            # Entries name users and keys: readable by this account only.
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        conn = sqlite3.connect(
            self.path, timeout=30.0, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(_SCHEMA)
        self._conn, self._pid = conn, os.getpid()
        return conn

    def load(self) -> None:
        """Reload the entries from the file (every process's). Blocking I/O."""
        with self._lock:
            conn = self._connect(create=False)
            by_store: dict[str, dict[tuple[str, str, str], Pending]] = {}
            if conn is not None:
                for store, kind, ref, data in conn.execute(
                    "SELECT store, kind, ref, data FROM pending ORDER BY created"
                ):
                    entry = Pending.from_row(store, kind, ref, data)
                    by_store.setdefault(store, {})[entry.key] = entry
            self._by_store = by_store
            self._loaded_at = self._monotonic()

    def stale(self) -> bool:
        """Whether the entries in memory are older than ``refresh`` seconds."""
        loaded = self._loaded_at
        return loaded is None or self._monotonic() - loaded >= self.refresh

    def keep(self, entry: Pending) -> None:
        """Write ``entry`` to the file (durably) unless one with its key is there: the
        first settle of a hold is the one that counts, as in every store."""
        with self._lock:
            conn = self._connect(create=True)
            assert conn is not None
            conn.execute(
                "INSERT OR IGNORE INTO pending (store, kind, ref, data, created) "
                "VALUES (?, ?, ?, ?, ?)",
                (entry.store, entry.kind, entry.ref, entry.to_json(), time.time()),
            )
            self._by_store.setdefault(entry.store, {}).setdefault(entry.key, entry)

    def drop(self, entry: Pending) -> None:
        """Forget ``entry``: it landed (or can never land)."""
        with self._lock:
            entries = self._by_store.get(entry.store)
            if entries is not None:
                entries.pop(entry.key, None)
                if not entries:
                    del self._by_store[entry.store]
            conn = self._connect(create=False)
            if conn is not None:
                conn.execute(
                    "DELETE FROM pending WHERE store = ? AND kind = ? AND ref = ?", entry.key
                )

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None
            if self._executor is not None:
                self._executor.shutdown(wait=False)
                self._executor = None

    def executor(self) -> ThreadPoolExecutor:
        """The one thread that does this journal's file I/O under asyncio (so a hung
        store's calls, busy in other threads, never delay a write here)."""
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="llmbudget-journal")
            return self._executor

    # -- reading (memory only) -----------------------------------------------------------

    def entries(self, store: str | None = None) -> list[Pending]:
        """Pending entries of ``store`` (all stores: ``None``), oldest first."""
        with self._lock:
            if store is not None:
                return list(self._by_store.get(store, {}).values())
            return [e for entries in self._by_store.values() for e in entries.values()]

    def find(self, store: str, kind: Kind, ref: str) -> Pending | None:
        entries = self._by_store.get(store)
        return None if entries is None else entries.get((store, kind, ref))

    def count(self) -> int:
        """How many entries are pending, across stores (reloaded first if stale)."""
        if self.stale():
            self.load()
        with self._lock:
            return sum(len(entries) for entries in self._by_store.values())

    def counted(self, store: str, lines: Sequence[Line], now: float) -> list[int] | None:
        """Units a reserve at ``now`` must count on each of ``lines`` for the entries of
        ``store`` (see :meth:`Pending.weight`); ``None`` when nothing is pending there."""
        entries = self._by_store.get(store)
        if not entries:
            return None
        with self._lock:
            waiting = list(entries.values())
        extra = [0] * len(lines)
        for index, line in enumerate(lines):
            spot = (line.scope, line.window)
            for entry in waiting:
                if spot in entry.lines:
                    extra[index] += entry.weight(now)
        return extra if any(extra) else None

    # -- when to replay (this process) ----------------------------------------------------

    def _schedule(self, store: str) -> _Schedule:
        schedule = self._schedules.get(store)
        if schedule is None:
            schedule = self._schedules[store] = _Schedule()
        return schedule

    def claim(self, store: str, *, background: bool = False) -> bool:
        """Whether a replay of ``store``'s entries should start now, and if so mark one as
        running (:meth:`finished` ends it). A store with a background replayer
        (:meth:`attach`) is replayed only by it."""
        if store not in self._by_store:
            return False
        with self._lock:
            schedule = self._schedule(store)
            if schedule.busy or (schedule.attached and not background):
                return False
            if self._monotonic() < schedule.next_try:
                return False
            schedule.busy = True
            return True

    def finished(self, store: str, *, failed: bool) -> None:
        """A replay of ``store`` ended; after a failure the next waits longer."""
        with self._lock:
            schedule = self._schedule(store)
            schedule.busy = False
            schedule.failures = schedule.failures + 1 if failed else 0
            delay = REPLAY_DELAYS[min(schedule.failures, len(REPLAY_DELAYS) - 1)]
            schedule.next_try = self._monotonic() + (delay if failed else 0.0)

    def wait(self, store: str) -> float:
        """Seconds until ``store``'s next replay is due: ``refresh`` when nothing waits
        (entries kept meanwhile, by this process or another, are seen by then)."""
        schedule = self._schedules.get(store)
        if store not in self._by_store or schedule is None:
            return self.refresh
        return min(max(schedule.next_try - self._monotonic(), 0.01), self.refresh)

    def attach(self, store: str) -> None:
        """A background replayer now serves ``store``: requests no longer replay it."""
        with self._lock:
            self._schedule(store).attached += 1

    def detach(self, store: str) -> None:
        with self._lock:
            schedule = self._schedule(store)
            schedule.attached = max(0, schedule.attached - 1)


_journals: dict[str, Journal] = {}
_journals_lock = threading.Lock()
_resolved: dict[str | None, str] = {}


def default_journal() -> Journal:
    """The process's journal: ``$LLMBUDGET_JOURNAL``, else ``llmbudget-journal.db`` in
    the working directory (resolved once per value of the variable)."""
    setting = os.environ.get(JOURNAL_ENV) or None
    path = _resolved.get(setting)
    if path is None:
        path = _resolved[setting] = os.path.abspath(setting or DEFAULT_JOURNAL_PATH)
    journal = _journals.get(path)
    if journal is None:
        with _journals_lock:
            journal = _journals.get(path)
            if journal is None:
                journal = _journals[path] = Journal(path)
    return journal
