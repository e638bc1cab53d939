"""Group commit: one writer thread runs a store's concurrent calls in shared transactions.

A store with one write lock (SQLite) pays per transaction, not per row: ``BEGIN
IMMEDIATE`` and ``COMMIT`` cost more than a reserve's few statements, and each call sent
to a thread of its own costs two thread hand-offs. :class:`GroupWriter` owns one thread;
calls queue up while it works, and each turn it hands everything queued (up to
``max_group`` calls) to ``run_group``, which runs them in order in one transaction, each
in a savepoint of its own, and commits once. Each call stays atomic and ordered, and its
outcome is delivered only after the commit, so an acknowledged write is as durable as
before. Event loops waiting on a group are woken once per group, not once per call.

``run_group(calls)`` returns one outcome per call: its result, or the exception instance
it raised (that call alone was rolled back). If ``run_group`` itself raises (the commit
failed), every call of the group gets that error and none was applied.

>>> import asyncio
>>> writer = GroupWriter(lambda calls: [call() for call in calls], name="doc")
>>> async def main():
...     return await asyncio.gather(*(writer.acall(lambda i=i: i * i) for i in range(4)))
>>> asyncio.run(main())
[0, 1, 4, 9]
>>> writer.submit(lambda: "sync callers too").result()
'sync callers too'
>>> writer.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

from llmbudget.stores.outcomes import deliver

__all__ = ["GroupWriter"]

Call = Callable[[], Any]
RunGroup = Callable[[Sequence[Call]], Sequence[Any]]


class GroupWriter:
    """One writer thread running queued calls in groups (see the module docstring)."""

    def __init__(self, run_group: RunGroup, *, name: str, max_group: int = 256) -> None:
        self._run_group = run_group
        self._name = name
        self._max = max_group
        # (call, loop or None, asyncio future or concurrent future)
        self._queue: deque[tuple[Call, asyncio.AbstractEventLoop | None, Any]] = deque()
        self._wake = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._closed = False
        self._idle = False  # the writer is waiting for work (only then is it woken)

    async def acall(self, call: Call, timeout: float | None = None) -> Any:
        """Run ``call`` in the writer thread, in the next group; its result or error.
        Past ``timeout`` seconds the caller gets :class:`TimeoutError` instead (the call
        is abandoned, not stopped: it still runs if it has started)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._put(call, loop, future)
        if timeout is None:
            return await future
        timer = loop.call_later(timeout, _expire, future, timeout)
        try:
            return await future
        finally:
            timer.cancel()

    def submit(self, call: Call) -> Future[Any]:
        """The same for a thread: a :class:`concurrent.futures.Future` of the outcome."""
        future: Future[Any] = Future()
        self._put(call, None, future)
        return future

    def close(self) -> None:
        """Stop the thread once the calls already queued are done."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(30)

    def _put(self, call: Call, loop: asyncio.AbstractEventLoop | None, future: Any) -> None:
        with self._wake:
            if self._closed:
                raise RuntimeError(f"{self._name}: the writer is closed")
            self._queue.append((call, loop, future))
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
                self._thread.start()
            elif self._idle:
                # A busy writer looks at the queue again before it waits: no wake-up needed.
                self._wake.notify()

    def _work(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._closed:
                    self._idle = True
                    self._wake.wait()
                    self._idle = False
                if not self._queue:
                    return
                count = min(len(self._queue), self._max)
                group = [self._queue.popleft() for _ in range(count)]
            # A call whose caller gave up before it started is not run (as an executor's
            # queued job is not): a reserve nobody waits for would only hold money.
            group = [entry for entry in group if _still_wanted(entry[2])]
            if group:
                self._deliver(group, self._outcomes([call for call, _, _ in group]))

    def _outcomes(self, calls: Sequence[Call]) -> Sequence[Any]:
        try:
            outcomes = self._run_group(calls)
        except BaseException as exc:  # the group failed as a whole: nothing was applied
            return [exc] * len(calls)
        if len(outcomes) != len(calls):  # pragma: no cover - a broken run_group
            error = RuntimeError(f"{self._name}: {len(outcomes)} outcomes for {len(calls)} calls")
            return [error] * len(calls)
        return outcomes

    @staticmethod
    def _deliver(
        group: Sequence[tuple[Call, asyncio.AbstractEventLoop | None, Any]],
        outcomes: Sequence[Any],
    ) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Any, Any]]] = {}
        for (_, loop, future), outcome in zip(group, outcomes, strict=True):
            if loop is None:
                deliver(future, outcome)
            else:
                by_loop.setdefault(loop, []).append((future, outcome))
        for loop, pairs in by_loop.items():
            # RuntimeError: that loop is closed, and nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, pairs)


def _expire(future: asyncio.Future[Any], timeout: float) -> None:
    if not future.done():
        future.set_exception(TimeoutError(f"no answer within {timeout:g} s"))


def _still_wanted(future: Any) -> bool:
    if isinstance(future, Future):
        return future.set_running_or_notify_cancel()
    # Read from the writer thread: at worst a call given up this instant still runs.
    return not future.done()


def _resolve(pairs: Sequence[tuple[asyncio.Future[Any], Any]]) -> None:
    for future, outcome in pairs:
        deliver(future, outcome)
