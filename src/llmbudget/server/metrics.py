"""Prometheus metrics, in a registry of the app's own (two apps in one process never clash).

=======================================  ===========  =====================================
``llmbudget_spend_dollars_total``        counter      spend recorded through this server
``llmbudget_refusals_total``             counter      reserves refused for lack of budget
``llmbudget_active_holds``               gauge        holds reserved here, not yet ended
``llmbudget_pending_settles``            gauge        settles/charges kept in the journal
``llmbudget_request_duration_seconds``   histogram    latency by method, route and status
=======================================  ===========  =====================================

Labels are bounded: ``route`` is the route's template (``/v1/projects/{project}/charge``),
never the raw path, and ``project`` is only taken from ``user:<project>:…`` scopes. The
gateway's metrics (:mod:`llmbudget.gateway.metrics`) join the same registry when it is
mounted. Under several workers every value is summed across them (holds: the live
workers'; pending settles: the shared journal's count), see :mod:`.multiprocess`.

>>> m = Metrics(lambda: 0.0)
>>> m.record_spend("user:demo:ann", 0.25)
>>> b"llmbudget_spend_dollars_total" in m.render()
True
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from urllib.parse import unquote

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from llmbudget.clock import Clock

from .multiprocess import render

__all__ = ["Metrics", "project_of"]

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def project_of(scope: str) -> str:
    """The project of a ``user:<project>:<user>`` scope; ``""`` for any other scope."""
    parts = scope.split(":")
    if len(parts) >= 3 and parts[0] == "user":
        return unquote(parts[1])
    return ""


class Metrics:
    """The server's metrics. Thread-safe: handlers run in a thread pool."""

    def __init__(self, clock: Clock, pending: Callable[[], int] | None = None) -> None:
        self.clock = clock
        self.registry = CollectorRegistry()
        self.spend = Counter(
            "llmbudget_spend_dollars",
            "Spend recorded through this server (charges and settles), in dollars.",
            ["project"],
            registry=self.registry,
        )
        self.refusals = Counter(
            "llmbudget_refusals",
            "Reserves refused because a budget would be exceeded.",
            ["project"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "llmbudget_request_duration_seconds",
            "HTTP request latency.",
            ["method", "route", "status"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.active_holds = Gauge(
            "llmbudget_active_holds",
            "Holds reserved through this server process that are neither ended nor expired.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self._pending = pending
        if pending is not None:
            # Every worker reads the same journal file: the latest reading is the count.
            self.pending_settles = Gauge(
                "llmbudget_pending_settles",
                "Settles and charges the store could not take, kept in the journal until "
                "they land.",
                registry=self.registry,
                multiprocess_mode="mostrecent",
            )
        self._lock = threading.Lock()
        # hold id -> (scopes, expires_at): only holds this process reserved. The scopes
        # let a later settle (which names only the hold) say whose spend it was.
        self._holds: dict[str, tuple[tuple[str, ...], float]] = {}

    def record_spend(self, scope: str, dollars: float) -> None:
        if dollars > 0:
            self.spend.labels(project_of(scope)).inc(dollars)

    def record_refusal(self, scope: str) -> None:
        self.refusals.labels(project_of(scope)).inc()

    def hold_opened(self, hold_id: str, scopes: Sequence[str], expires_at: float) -> None:
        with self._lock:
            if len(self._holds) >= 10_000:
                # Unscraped servers must not grow this map with holds that simply expired.
                now = self.clock()
                for held in [h for h, (_, exp) in self._holds.items() if exp <= now]:
                    del self._holds[held]
            self._holds[hold_id] = (tuple(scopes), expires_at)
            self.active_holds.set(len(self._holds))

    def hold_closed(self, hold_id: str) -> tuple[str, ...]:
        """Forget a hold; returns its scopes when this process reserved it (else ``()``)."""
        with self._lock:
            found = self._holds.pop(hold_id, None)
            if found is not None:
                self.active_holds.set(len(self._holds))
        return () if found is None else found[0]

    def _count_active(self) -> float:
        now = self.clock()
        with self._lock:
            # Expired holds no longer count anywhere, so drop them while counting.
            expired = [h for h, (_, exp) in self._holds.items() if exp <= now]
            for hold_id in expired:
                del self._holds[hold_id]
            self.active_holds.set(len(self._holds))
            return float(len(self._holds))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.latency.labels(method, route, str(status)).observe(seconds)

    def render(self) -> bytes:
        """The exposition text (every worker's under ``serve --workers N``)."""
        # Gauges read at scrape time: the values written here are what other workers see.
        self._count_active()
        if self._pending is not None:
            self.pending_settles.set(self._pending())
        return render(self.registry)
