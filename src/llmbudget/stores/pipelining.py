"""Automatic pipelining: concurrent calls from one process share round trips.

A network store (Redis) spends most of an operation's time waiting for its reply. When
many threads or tasks of one process call it at once, each waiting on its own round trip,
the calls can instead be sent together: everything that arrives while a batch is on the
wire waits for the next batch, and one ``send`` carries it. Each call keeps its own
atomicity (one script per call, as before); only the trips are shared.

``send`` receives the batch's items in arrival order and returns one reply per item: a
value, or the exception instance for that item alone. An exception *raised* by ``send``
(the connection broke) is the reply of every item in the batch.

:class:`AsyncPipeliner` batches the tasks of one event loop: calls made while a batch is
being sent gather behind it (at most ``depth`` batches are on the wire at once).
:class:`ThreadPipeliner` does the same for threads: the first caller sends; callers that
arrive meanwhile wait, and one of them sends the next batch for all of them.

>>> import asyncio
>>> async def send(items):
...     return [item * 2 for item in items]
>>> async def main():
...     pipe = AsyncPipeliner(send)
...     return await asyncio.gather(*(pipe.call(i) for i in range(4)))
>>> asyncio.run(main())
[0, 2, 4, 6]
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from llmbudget.stores.outcomes import deliver, unwrap

__all__ = ["AsyncPipeliner", "ThreadPipeliner"]

Item = TypeVar("Item")


class AsyncPipeliner(Generic[Item]):
    """Batches the calls of one event loop's tasks (see the module docstring)."""

    def __init__(
        self, send: Callable[[Sequence[Item]], Awaitable[Sequence[Any]]], *, depth: int = 2
    ) -> None:
        self._send = send
        self._depth = depth
        self._pending: list[tuple[Item, asyncio.Future[Any]]] = []
        self._in_flight = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()  # the loop keeps only weak references

    async def call(self, item: Item) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((item, future))
        if not self._scheduled and self._in_flight < self._depth:
            # Sent on the loop's next turn, so every task ready now can join this batch.
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        if not self._pending or self._in_flight >= self._depth:
            return
        batch, self._pending = self._pending, []
        self._in_flight += 1
        task = asyncio.get_running_loop().create_task(self._deliver(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, batch: list[tuple[Item, asyncio.Future[Any]]]) -> None:
        try:
            try:
                replies: Sequence[Any] = await self._send([item for item, _ in batch])
            except asyncio.CancelledError:
                for _, future in batch:
                    future.cancel()
                raise
            except Exception as exc:  # every caller gets its reply
                replies = [exc] * len(batch)
            for (_, future), reply in zip(batch, replies, strict=True):
                deliver(future, reply)
        finally:
            self._in_flight -= 1
            if self._pending and not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)


class _Slot:
    __slots__ = ("done", "item", "lead", "reply")

    def __init__(self, item: Any) -> None:
        self.item = item
        self.reply: Any = None
        self.lead = False  # woken to send the next batch, not with a reply
        self.done = threading.Event()


class ThreadPipeliner(Generic[Item]):
    """Batches the calls of threads (see the module docstring)."""

    def __init__(self, send: Callable[[Sequence[Item]], Sequence[Any]]) -> None:
        self._send = send
        self._lock = threading.Lock()
        self._queue: list[_Slot] = []
        self._sending = False

    def call(self, item: Item) -> Any:
        slot = _Slot(item)
        with self._lock:
            self._queue.append(slot)
            lead = not self._sending
            self._sending = True
        if not lead:
            slot.done.wait()
            if not slot.lead:
                return unwrap(slot.reply)
            slot.done.clear()
        self._send_queued()
        slot.done.wait()
        return unwrap(slot.reply)

    def _send_queued(self) -> None:
        """Send everything queued, as one batch, then hand the next batch to a waiter."""
        with self._lock:
            batch, self._queue = self._queue, []
        try:
            replies: Sequence[Any] = self._send([slot.item for slot in batch])
        except BaseException as exc:  # every caller gets its reply, even KeyboardInterrupt
            replies = [exc] * len(batch)
        for slot, reply in zip(batch, replies, strict=True):
            slot.reply = reply
            slot.done.set()
        with self._lock:
            if self._queue:
                # Someone who arrived meanwhile sends the next batch; this caller returns.
                successor = self._queue[0]
                successor.lead = True
                successor.done.set()
            else:
                self._sending = False
