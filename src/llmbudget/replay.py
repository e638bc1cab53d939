"""Landing settles and charges: tried, kept in the journal if the store fails, replayed.

Every settle and charge of the ledger is one :func:`plan_land`::

    landed, result = yield from plan_land(op, journal, key, entry)

The store operation is tried; if it fails (:class:`~llmbudget.errors.StoreError`), the
entry ``entry()`` makes (a :class:`~llmbudget.journal.Pending`) is written to the journal first, so
that from then on neither the outage nor a restart can lose it, then the operation is
tried again after each pause of :data:`SETTLE_RETRY_DELAYS` while the failures are quick
(a hung store is not waited for again and again). Still failing: the call returns
``(False, None)`` — kept — and the entry is replayed later, until it lands:

* lazily, after the next ledger operation the store answers (a refused reserve
  included; :func:`plan_replay_due`: a library needs no background thread);
* in the background, by a :class:`Replayer` (``llmbudget serve`` and the gateway start
  one; its first replay runs at start).

Replays are idempotent: a settle names its hold (settled once by every store), a charge
its charge id. A settle whose hold the store no longer knows (purged ``retention`` after
expiry) is recorded as a charge on the hold's lines, under an id made from the hold's.

>>> from llmbudget import operations as ops
>>> from llmbudget.journal import Journal, Pending
>>> from llmbudget.plans import run_sync
>>> from llmbudget.stores.memory import MemoryStore
>>> import os, tempfile
>>> journal = Journal(os.path.join(tempfile.mkdtemp(), "journal.db"))
>>> store = MemoryStore()
>>> op = ops.Charge(store, (Line("user:a", 0),), 5, None, 1.0, "c1")
>>> key = ("s", "charge", "c1")
>>> run_sync(plan_land(op, journal, key, lambda: Pending(*key, amount=5)))
(True, True)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmbudget import operations as ops
from llmbudget.errors import InvalidInputError, StoreError, UnknownHoldError
from llmbudget.journal import Journal, Kind, Pending, default_journal, store_identity
from llmbudget.money import format_money, from_units
from llmbudget.plans import Effect, Plan, Sleep, run_async
from llmbudget.stores.base import AsyncStore, Line, Store

__all__ = [
    "QUICK_FAILURES",
    "REPLAY_BATCH",
    "SETTLE_RETRY_DELAYS",
    "Drop",
    "Keep",
    "Load",
    "Replayer",
    "plan_land",
    "plan_replay",
    "plan_replay_due",
]

log = logging.getLogger("llmbudget.journal")

#: Pauses before a settle or charge that failed is tried again in the caller's own call.
SETTLE_RETRY_DELAYS: tuple[float, ...] = (0.05, 0.2, 0.5)
#: Retries in the caller's call stop once its attempts have taken this long (seconds): a
#: store that answers slowly or not at all is left to the replays.
QUICK_FAILURES = 1.0
#: Entries replayed at most per replay (a lazy replay runs inside someone's request).
REPLAY_BATCH = 100


class _JournalIo(Effect):
    """Journal file I/O: in the journal's own thread under asyncio."""

    journal: Journal

    async def arun(self) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.journal.executor(), self.run)


@dataclass(frozen=True, slots=True)
class Keep(_JournalIo):
    journal: Journal
    entry: Pending

    def run(self) -> None:
        self.journal.keep(self.entry)


@dataclass(frozen=True, slots=True)
class Drop(_JournalIo):
    journal: Journal
    entry: Pending

    def run(self) -> None:
        self.journal.drop(self.entry)


@dataclass(frozen=True, slots=True)
class Load(_JournalIo):
    journal: Journal

    def run(self) -> None:
        self.journal.load()


def _describe(entry: Pending) -> str:
    what = f"hold {entry.ref}" if entry.kind == "settle" else f"charge {entry.ref}"
    return f"{entry.kind} of {what} (${format_money(from_units(entry.amount))})"


def plan_land(
    op: ops.StoreOp, journal: Journal, key: tuple[str, Kind, str], entry: Callable[[], Pending]
) -> Plan[tuple[bool, Any]]:
    """Run ``op`` (a settle or a charge); on a store failure keep ``entry()`` (whose
    journal key is ``key``: store identity, kind, hold or charge id) in ``journal``.
    ``(True, result)`` once it landed, ``(False, None)`` when it is kept for a later
    replay. If the journal cannot be written either, the store's error is raised (after
    the retries): nothing else can keep the operation."""
    started = time.monotonic()
    try:
        result = yield op
    except StoreError as exc:
        error: StoreError = exc
    else:
        earlier = journal.find(*key)
        if earlier is not None:  # the caller's own retry of an operation kept before
            yield Drop(journal, earlier)
        return True, result
    pending = entry()
    try:
        yield Keep(journal, pending)
        kept = True
        log.warning(
            "llmbudget: the store failed (%s); %s kept in the journal %s, replayed until it lands",
            error,
            _describe(pending),
            journal.path,
        )
    except Exception as exc:  # a full disk, a read-only directory
        kept = False
        log.error("llmbudget: could not write the journal %s: %s", journal.path, exc)
    for delay in SETTLE_RETRY_DELAYS:
        if time.monotonic() - started > QUICK_FAILURES:
            break
        yield Sleep(delay)
        try:
            result = yield op
        except StoreError as exc:
            error = exc
            continue
        if kept:
            yield Drop(journal, pending)
        return True, result
    if not kept:
        raise error
    return False, None


def _with_log(store: Store | AsyncStore, op: ops.StoreOp, entry: Pending) -> ops.StoreOp:
    if entry.log is None:
        return op
    return ops.Batch(store, (op, ops.AppendLog(store, *entry.log)))


def _land(store: Store | AsyncStore, entry: Pending) -> Plan[None]:
    lines = tuple(Line(scope, window) for scope, window in entry.lines)
    if entry.kind == "charge":
        charge = ops.Charge(store, lines, entry.amount, entry.model, entry.at, entry.ref)
        yield _with_log(store, charge, entry)
        return
    try:
        # The entry goes with the settle, atomically: a settle that had landed after all
        # (its answer lost) is found settled, and its entry is not appended twice.
        yield ops.Settle(
            store, entry.ref, entry.amount, entry.model, entry.at, entry.actuals, entry.log
        )
    except UnknownHoldError:
        if not lines:
            raise
        # The hold was purged (``retention`` after it expired): the money was still spent.
        charge_id = f"settle-{entry.ref}"
        yield _with_log(
            store, ops.Charge(store, lines, entry.amount, entry.model, entry.at, charge_id), entry
        )


def plan_replay(
    store: Store | AsyncStore, journal: Journal, *, limit: int = REPLAY_BATCH
) -> Plan[int]:
    """Replay up to ``limit`` of ``store``'s entries, oldest first; how many landed. The
    first store failure ends the replay (the store is still down)."""
    key = store_identity(store)
    landed = 0
    for entry in journal.entries(key)[:limit]:
        try:
            yield from _land(store, entry)
        except StoreError as exc:
            log.warning(
                "llmbudget: %d settle(s) still pending for %s: %s",
                len(journal.entries(key)),
                key,
                exc,
            )
            raise
        except (UnknownHoldError, InvalidInputError) as exc:
            # It can never land (a hold named by id alone that the store forgot; a charge
            # id the store holds for another charge): say so loudly, once.
            log.error("llmbudget: %s cannot be recorded and is dropped: %s", _describe(entry), exc)
        else:
            landed += 1
            log.info("llmbudget: %s landed", _describe(entry))
        yield Drop(journal, entry)
    return landed


def plan_replay_due(store: Store | AsyncStore, journal: Journal, key: str) -> Plan[None]:
    """The lazy replay: after a store operation succeeded, replay that store's entries if
    some are waiting and due (never where a :class:`Replayer` serves the store). A failed
    replay is only logged: it must not fail the operation that triggered it."""
    if journal.stale():  # entries kept by an earlier run, or by another process
        yield Load(journal)
    if not journal.claim(key):
        return
    failed = False
    try:
        yield from plan_replay(store, journal)
    except StoreError:
        failed = True
    finally:
        journal.finished(key, failed=failed)


class Replayer:
    """Replays one store's journal entries in the background, under asyncio, until it is
    closed: at :meth:`start` (the flush at start), and whenever entries are due.

    >>> from llmbudget.stores.memory import MemoryStore
    >>> async def main():
    ...     replayer = Replayer(MemoryStore())
    ...     await replayer.start()
    ...     await replayer.aclose()
    """

    def __init__(self, store: Store | AsyncStore, journal: Journal | None = None) -> None:
        self.store = store
        self.journal = journal if journal is not None else default_journal()
        self.key = store_identity(store)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Load the journal, say what is pending, replay it once (a store that is down
        fails within its timeout), and go on replaying in the background."""
        if self._task is not None:
            return
        journal = self.journal
        await Load(journal).arun()
        waiting = journal.entries(self.key)
        if waiting:
            log.warning(
                "llmbudget: %d settle(s) pending in %s for %s; replaying them",
                len(waiting),
                journal.path,
                self.key,
            )
        journal.attach(self.key)
        try:
            await self.replay_now()
        except Exception:
            log.exception("llmbudget: journal replay failed")
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def replay_now(self) -> int:
        """One replay of every due entry (what the background loop does); how many landed."""
        journal = self.journal
        if journal.stale():
            await Load(journal).arun()
        if not journal.claim(self.key, background=True):
            return 0
        failed = False
        try:
            return await run_async(plan_replay(self.store, journal))
        except StoreError:
            failed = True
            return 0
        finally:
            journal.finished(self.key, failed=failed)

    async def _run(self) -> None:
        while True:
            try:
                while (await self.replay_now()) == REPLAY_BATCH:
                    pass  # more waiting: go on at once
            except Exception:  # the loop must outlive any one failure
                log.exception("llmbudget: journal replay failed")
            await asyncio.sleep(self.journal.wait(self.key))

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        self.journal.detach(self.key)
