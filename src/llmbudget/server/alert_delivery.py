"""Delivering alerts to one channel: its own queue and thread, bounded retries with backoff.

Each channel (webhook, Slack, email) gets a :class:`ChannelWorker`, so a channel that is
down, slow or refusing only delays its own alerts: the others are delivered by their own
threads. Requests never wait for any of them. A delivery that raises a retryable
:class:`~llmbudget.errors.AlertDeliveryError` is tried again after ``backoff``, doubled
each time (or the longer wait a receiver asked for; capped at :data:`MAX_BACKOFF`), at
most ``retries`` more times; then it is
logged and counted in :attr:`ChannelWorker.failed`. The queue is bounded too: alerts that
find it full are dropped, logged and counted, rather than growing memory behind a dead
channel.

>>> class Printer:
...     name = "print"
...     def deliver(self, alert): print("delivered", alert)
...     def close(self): pass
>>> worker = ChannelWorker(Printer(), retries=0, backoff=0.1)
>>> worker.start(); worker.put("hello"); worker.stop()
delivered hello
>>> worker.sent, worker.failed
(1, 0)
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from typing import Protocol

from llmbudget.errors import AlertDeliveryError

from .alert_event import Alert

__all__ = ["MAX_BACKOFF", "MAX_QUEUED", "Channel", "ChannelWorker"]

log = logging.getLogger("llmbudget.server.alerts")

#: Longest wait between two attempts, however many retries are configured.
MAX_BACKOFF = 60.0
#: Alerts waiting for one channel; more are dropped (and counted as failed).
MAX_QUEUED = 10_000


class Channel(Protocol):
    """Somewhere alerts go. ``deliver`` sends one alert or raises AlertDeliveryError."""

    name: str

    def deliver(self, alert: Alert) -> None: ...

    def close(self) -> None: ...


class ChannelWorker:
    """One channel's delivery thread. ``done`` is called once per alert put, whatever
    became of it (the alert manager counts work in flight with it)."""

    def __init__(
        self,
        channel: Channel,
        *,
        retries: int,
        backoff: float,
        done: Callable[[], None] = lambda: None,
    ) -> None:
        self.channel = channel
        self.retries = retries
        self.backoff = backoff
        self._done = done
        self._queue: queue.Queue[Alert | None] = queue.Queue(MAX_QUEUED)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.sent = 0
        self.failed = 0

    @property
    def name(self) -> str:
        return self.channel.name

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._loop, name=f"llmbudget-alerts-{self.name}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (a backoff wait is cut short: no more retries), then end."""
        thread = self._thread
        if thread is None:
            return
        self._stopping.set()
        with contextlib.suppress(queue.Full):  # a full queue: the thread ends on the join timeout
            self._queue.put(None, timeout=timeout)
        thread.join(timeout)
        self._thread = None
        self.channel.close()

    def put(self, alert: Alert) -> None:
        try:
            self._queue.put_nowait(alert)
        except queue.Full:
            self._count(sent=False)
            log.warning(
                "alert %s for %s at %s%% dropped: %d alerts already wait for it",
                self.name,
                alert.scope,
                alert.percent,
                MAX_QUEUED,
            )
            self._done()

    def _loop(self) -> None:
        while True:
            alert = self._queue.get()
            if alert is None:
                return
            try:
                self._count(sent=self.deliver(alert))
            finally:
                self._done()

    def deliver(self, alert: Alert) -> bool:
        """Try one alert until it is delivered, refused for good, or out of retries."""
        attempt = 0
        while True:
            try:
                self.channel.deliver(alert)
                return True
            except AlertDeliveryError as exc:
                problem, retryable, asked = str(exc), exc.retryable, exc.retry_after
            except Exception as exc:  # a channel's bug must not end its thread
                log.exception("alert %s for %s failed unexpectedly", self.name, alert.scope)
                problem, retryable, asked = f"{type(exc).__name__}: {exc}", False, None
            attempt += 1
            if not retryable or attempt > self.retries or self._stopping.is_set():
                break
            delay = min(max(self.backoff * 2 ** (attempt - 1), asked or 0.0), MAX_BACKOFF)
            if self._stopping.wait(delay):
                break
        log.warning(
            "alert %s for %s at %s%% failed after %d attempt(s): %s",
            self.name,
            alert.scope,
            alert.percent,
            attempt,
            problem,
        )
        return False

    def _count(self, *, sent: bool) -> None:
        with self._lock:
            if sent:
                self.sent += 1
            else:
                self.failed += 1
