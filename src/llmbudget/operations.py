"""Store operations as typed effects: what a plan asks a store to do.

A plan (see :mod:`llmbudget.plans`) never calls a store. It yields one of these objects,
which names its store and its arguments, and receives the result. Each class calls one
:class:`~llmbudget.stores.base.Store` method by name in its :meth:`StoreOp.run`, so the
type checker and a reader's editor see every call. The same object serves a synchronous
store (the result) and an async one (the coroutine the runner awaits).

Under asyncio every call has a deadline, the store's ``timeout`` (:func:`deadline_of`):
past it the caller gets :class:`~llmbudget.errors.StoreUnavailableError` whatever the
store is doing, so no request waits behind a hung server. A synchronous store's calls run
in threads of the store's own (:func:`executor_for`); a call abandoned at its deadline
finishes there, or fails, by the driver's own timeouts.

>>> from llmbudget.stores.memory import MemoryStore
>>> from llmbudget.stores.base import Line
>>> store = MemoryStore()
>>> Reserve(store, "h1", (Line("user:a", 0, 100),), 40, 60.0, 0.0).run() is None
True
>>> Usage_(store, "user:a", 0, 1.0).run().held
40
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from llmbudget.errors import StoreUnavailableError
from llmbudget.plans import Effect
from llmbudget.stores.base import AsyncStore, BudgetRecord, Line, LogRecord, Store

__all__ = [
    "AppendLog",
    "Batch",
    "Charge",
    "Close",
    "CreateDoc",
    "DeleteBudget",
    "DeleteDoc",
    "GetBudgets",
    "GetDoc",
    "History",
    "ListBudgets",
    "ListDocs",
    "Purge",
    "PutBudget",
    "PutDoc",
    "ReadLog",
    "Release",
    "Reserve",
    "Reset",
    "Settle",
    "StoreOp",
    "Usage_",
    "deadline_of",
    "executor_for",
]

AnyStore = Store | AsyncStore

_executors: weakref.WeakKeyDictionary[Store, ThreadPoolExecutor] = weakref.WeakKeyDictionary()
_executors_lock = threading.Lock()


def executor_for(store: Store) -> Executor:
    """Where an async runner sends a blocking store's calls (one without a group writer):
    a pool of the store's own, the size of asyncio's default one. Its own, so that calls
    stuck on a hung store never hold up the process's other threaded work (the journal,
    tokenizers)."""
    executor = _executors.get(store)
    if executor is not None:
        return executor
    with _executors_lock:
        executor = _executors.get(store)
        if executor is None:
            workers = min(32, (os.cpu_count() or 1) + 4)
            executor = ThreadPoolExecutor(workers, thread_name_prefix="llmbudget-store")
            _executors[store] = executor
            weakref.finalize(store, executor.shutdown, wait=False)
        return executor


def deadline_of(store: AnyStore) -> float | None:
    """The longest one call to ``store`` may take under asyncio: its ``timeout``
    attribute (seconds), ``None`` for a store without one (in-process stores)."""
    value = getattr(store, "timeout", None)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        return None
    return float(value)


class StoreOp(Effect):
    """One store call. ``run`` returns the result, or the coroutine of an async store."""

    store: AnyStore

    async def arun(self) -> Any:
        store = self.store
        limit = deadline_of(store)
        call: asyncio.Future[Any]
        if isinstance(store, Store) and store.blocking:
            writer = store.group_writer()
            if writer is not None:
                # One write lock (SQLite): calls made together commit together. The writer
                # keeps the deadline itself (a timer, not a task per call).
                try:
                    return await writer.acall(self.run, limit)
                except TimeoutError:
                    raise _late(store, limit) from None
            # A synchronous store may wait on a lock or the network: keep the loop free.
            call = asyncio.get_running_loop().run_in_executor(executor_for(store), self.run)
        elif limit is None:
            return await Effect.arun(self)
        else:
            call = asyncio.ensure_future(Effect.arun(self))
        if limit is None:
            return await call
        try:
            done, _ = await asyncio.wait((call,), timeout=limit)
        except asyncio.CancelledError:
            call.cancel()
            raise
        if done:
            return call.result()
        # Abandoned, not awaited: a driver's clean-up after cancellation (psycopg asks the
        # server to cancel the query, and waits for its answer) must not hold the caller.
        call.cancel()
        call.add_done_callback(_retrieve)
        raise _late(store, limit)


def _late(store: AnyStore, limit: float | None) -> StoreUnavailableError:
    return StoreUnavailableError(
        f"{type(store).__name__} did not answer within its timeout ({limit or 0:g} s)"
    )


def _retrieve(call: asyncio.Future[Any]) -> None:
    if not call.cancelled():
        call.exception()  # an abandoned call's error is expected: never "not retrieved"


@dataclass(frozen=True, slots=True)
class Reserve(StoreOp):
    store: AnyStore
    hold_id: str
    lines: Sequence[Line]
    amount: int
    expires_at: float
    now: float

    def run(self) -> Any:
        return self.store.reserve(self.hold_id, self.lines, self.amount, self.expires_at, self.now)


@dataclass(frozen=True, slots=True)
class Settle(StoreOp):
    store: AnyStore
    hold_id: str
    actual: int
    model: str | None
    now: float
    #: Per scope, what its lines record instead of ``actual`` (counts beside dollars).
    actuals: Mapping[str, int] | None = None
    #: A log entry appended in the same atomic operation (see ``stores.base.LogRecord``).
    log: LogRecord | None = None

    def run(self) -> Any:
        if self.log is not None:
            return self.store.settle(
                self.hold_id, self.actual, self.model, self.now, self.actuals, self.log
            )
        if self.actuals is None:
            return self.store.settle(self.hold_id, self.actual, self.model, self.now)
        return self.store.settle(self.hold_id, self.actual, self.model, self.now, self.actuals)


@dataclass(frozen=True, slots=True)
class Release(StoreOp):
    store: AnyStore
    hold_id: str
    now: float

    def run(self) -> Any:
        return self.store.release(self.hold_id, self.now)


@dataclass(frozen=True, slots=True)
class Charge(StoreOp):
    store: AnyStore
    lines: Sequence[Line]
    amount: int
    model: str | None
    now: float
    charge_id: str | None = None

    def run(self) -> Any:
        return self.store.charge(self.lines, self.amount, self.model, self.now, self.charge_id)


@dataclass(frozen=True, slots=True)
class Usage_(StoreOp):  # noqa: N801 - `Usage` is the store's result type
    store: AnyStore
    scope: str
    window: int
    now: float

    def run(self) -> Any:
        return self.store.usage(self.scope, self.window, self.now)


@dataclass(frozen=True, slots=True)
class Reset(StoreOp):
    store: AnyStore
    scope: str
    window: int

    def run(self) -> Any:
        return self.store.reset(self.scope, self.window)


@dataclass(frozen=True, slots=True)
class History(StoreOp):
    store: AnyStore
    scope: str
    limit: int

    def run(self) -> Any:
        return self.store.history(self.scope, self.limit)


@dataclass(frozen=True, slots=True)
class Purge(StoreOp):
    store: AnyStore
    now: float
    retention: float

    def run(self) -> Any:
        return self.store.purge(self.now, self.retention)


@dataclass(frozen=True, slots=True)
class PutBudget(StoreOp):
    store: AnyStore
    record: BudgetRecord

    def run(self) -> Any:
        return self.store.put_budget(self.record)


@dataclass(frozen=True, slots=True)
class GetBudgets(StoreOp):
    store: AnyStore
    scopes: Sequence[str]

    def run(self) -> Any:
        return self.store.get_budgets(self.scopes)


@dataclass(frozen=True, slots=True)
class ListBudgets(StoreOp):
    store: AnyStore
    prefix: str

    def run(self) -> Any:
        return self.store.list_budgets(self.prefix)


@dataclass(frozen=True, slots=True)
class DeleteBudget(StoreOp):
    store: AnyStore
    scope: str

    def run(self) -> Any:
        return self.store.delete_budget(self.scope)


@dataclass(frozen=True, slots=True)
class AppendLog(StoreOp):
    store: AnyStore
    kind: str
    at: float
    data: Mapping[str, Any]

    def run(self) -> Any:
        return self.store.append_log(self.kind, self.at, self.data)


@dataclass(frozen=True, slots=True)
class ReadLog(StoreOp):
    store: AnyStore
    kind: str
    since: float
    until: float
    limit: int

    def run(self) -> Any:
        return self.store.read_log(self.kind, self.since, self.until, self.limit)


@dataclass(frozen=True, slots=True)
class GetDoc(StoreOp):
    store: AnyStore
    kind: str
    key: str

    def run(self) -> Any:
        return self.store.get_doc(self.kind, self.key)


@dataclass(frozen=True, slots=True)
class PutDoc(StoreOp):
    store: AnyStore
    kind: str
    key: str
    data: Mapping[str, Any]

    def run(self) -> Any:
        return self.store.put_doc(self.kind, self.key, self.data)


@dataclass(frozen=True, slots=True)
class CreateDoc(StoreOp):
    store: AnyStore
    kind: str
    key: str
    data: Mapping[str, Any]

    def run(self) -> Any:
        return self.store.create_doc(self.kind, self.key, self.data)


@dataclass(frozen=True, slots=True)
class ListDocs(StoreOp):
    store: AnyStore
    kind: str
    prefix: str = ""

    def run(self) -> Any:
        return self.store.list_docs(self.kind, self.prefix)


@dataclass(frozen=True, slots=True)
class DeleteDoc(StoreOp):
    store: AnyStore
    kind: str
    key: str

    def run(self) -> Any:
        return self.store.delete_doc(self.kind, self.key)


@dataclass(frozen=True, slots=True)
class Close(StoreOp):
    """Close the store (an async store's ``aclose``)."""

    store: AnyStore

    def run(self) -> Any:
        if isinstance(self.store, Store):
            return self.store.close()
        return self.store.aclose()


@dataclass(frozen=True, slots=True)
class Batch(StoreOp):
    """Several operations on one store, in order, in one trip to its thread (a settle and
    its spend-log entry). Not a transaction: each operation is atomic on its own. The
    result is the list of their results."""

    store: AnyStore
    ops: tuple[StoreOp, ...]

    def run(self) -> Any:
        if isinstance(self.store, Store):
            return [op.run() for op in self.ops]
        return self._arun()

    async def _arun(self) -> list[Any]:
        return [await op.run() for op in self.ops]
