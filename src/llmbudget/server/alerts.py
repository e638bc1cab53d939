"""Soft budget alerts: a JSON webhook when spend crosses 50 %, 80 %, 100 % … of a limit.

Each threshold fires **once per window** per budget, even across restarts and with several
server processes on one store: the "already fired" marker is a store document
(kind ``alert-fired``, key ``<scope>|<window>|<threshold>``) created with
:meth:`~llmbudget.stores.base.Store.create_doc`, an atomic insert-if-absent. Exactly one
process creates it, and only that one sends the webhook. A new window has a new key, so
the alert can fire again there; markers of past windows are deleted by the sweep.

Per-budget thresholds set through the API are documents too (kind ``alert-config``,
keyed by scope), so any store keeps them and every server process sees them.

Requests never wait for alerts: they only queue the scopes they touched. A checker thread
compares spend with the thresholds, and a sender thread posts webhooks with a timeout and
retries; a failed webhook is logged and dropped. A periodic sweep also checks every
budget, so spend recorded by other writers of the store (library users, other servers)
raises alerts too.

>>> format_threshold(0.8), format_threshold(1.0)
('0.8', '1')
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import unquote

import httpx

from llmbudget.budgets import Budget, BudgetStatus
from llmbudget.clock import Clock
from llmbudget.errors import LLMBudgetError
from llmbudget.ledger import Ledger
from llmbudget.stores.base import Store

from .config import AlertConfig, parse_thresholds

__all__ = ["CONFIG_KIND", "FIRED_KIND", "Alert", "AlertManager", "format_threshold"]

log = logging.getLogger("llmbudget.server.alerts")

CONFIG_KIND = "alert-config"
FIRED_KIND = "alert-fired"


def format_threshold(value: float) -> str:
    return f"{value:g}"


@dataclass(frozen=True, slots=True)
class Alert:
    """One threshold crossed in one window."""

    scope: str
    threshold: float
    status: BudgetStatus
    fired_at: float

    def payload(self) -> dict[str, Any]:
        parts = self.scope.split(":")
        project = unquote(parts[1]) if len(parts) >= 3 and parts[0] == "user" else None
        user = unquote(":".join(parts[2:])) if project is not None else None
        body: dict[str, Any] = {
            "event": "budget.threshold_crossed",
            "scope": self.scope,
            "project": project,
            "user": user,
            "threshold": self.threshold,
            "threshold_percent": round(self.threshold * 100, 4),
        }
        body.update(self.status.to_dict())
        body["scope"] = self.scope
        body["fired_at"] = datetime.fromtimestamp(self.fired_at, UTC).isoformat()
        return body


class AlertManager:
    """Checks budgets against thresholds and sends webhooks in the background."""

    def __init__(self, config: AlertConfig, ledger: Ledger, store: Store, clock: Clock) -> None:
        self.config = config
        self.ledger = ledger
        self.store = store
        self.clock = clock
        self._checks: queue.Queue[str | None] = queue.Queue()
        self._sends: queue.Queue[Alert | None] = queue.Queue()
        self._pending: set[str] = set()
        self._pending_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        # Checks and sends queued or running; wait_idle() waits for it to reach zero.
        self._busy = 0
        self._idle = threading.Condition()
        self._client: httpx.Client | None = None
        # (scope, window, threshold) this process knows are fired: spares the store a
        # refused reserve on every later check of a budget that is already past a threshold.
        self._known: set[tuple[str, int, float]] = set()
        self.sent: int = 0
        self.failed: int = 0

    @property
    def enabled(self) -> bool:
        return self.config.webhook_url is not None

    # -- thresholds ------------------------------------------------------------------

    def thresholds_for(self, scope: str) -> tuple[float, ...]:
        """Per-budget override from the store, else the config file's, else the default."""
        override = self.stored_thresholds(scope)
        if override is not None:
            return override
        return self.config.budgets.get(scope, self.config.thresholds)

    def stored_thresholds(self, scope: str) -> tuple[float, ...] | None:
        doc = self.store.get_doc(CONFIG_KIND, scope)
        if doc is None:
            return None
        try:
            return parse_thresholds(doc.get("thresholds", []))
        except LLMBudgetError:
            log.warning("ignoring unreadable alert thresholds of %r: %r", scope, doc)
            return None

    def set_thresholds(self, scope: str, thresholds: Iterable[float] | None) -> None:
        """Store a per-budget override (``None`` removes it; ``[]`` silences the budget)."""
        if thresholds is None:
            self.store.delete_doc(CONFIG_KIND, scope)
            return
        values = parse_thresholds(list(thresholds))
        self.store.put_doc(CONFIG_KIND, scope, {"thresholds": list(values)})

    # -- checking --------------------------------------------------------------------

    def notify(self, scopes: Iterable[str]) -> None:
        """Queue scopes whose spend just changed (cheap; never blocks a request)."""
        if not self.enabled:
            return
        for scope in scopes:
            with self._pending_lock:
                if scope in self._pending:
                    continue
                self._pending.add(scope)
            self._begin()
            self._checks.put(scope)

    def check(self, budget: Budget) -> list[Alert]:
        """Fire (queue for sending) every threshold the budget has crossed in this window
        and that no process has fired yet. Returns what this call fired."""
        if budget.limit is None or budget.limit <= 0:
            return []
        thresholds = self.thresholds_for(budget.scope)
        if not thresholds:
            return []
        status = self.ledger.status(budget)
        fired: list[Alert] = []
        now = self.clock()
        window = budget.window_at(now).key
        for threshold in thresholds:
            if status.spent < budget.limit * Decimal(repr(threshold)):
                break  # thresholds are sorted: no higher one is crossed either
            key = (budget.scope, window, threshold)
            if key in self._known:
                continue
            claimed = self._claim(budget.scope, window, threshold, now)
            if len(self._known) > 100_000:
                self._known.clear()  # only a cache: the store keeps the truth
            self._known.add(key)
            if claimed:
                alert = Alert(budget.scope, threshold, status, now)
                fired.append(alert)
                self._begin()
                self._sends.put(alert)
        return fired

    def sweep(self) -> int:
        """Check every limited budget of the store (and forget markers of past windows);
        returns how many alerts fired."""
        count = 0
        now = self.clock()
        for budget in self.ledger.budgets(""):
            if budget.limit is None:
                continue
            try:
                count += len(self.check(budget))
                self._forget_old_markers(budget, now)
            except LLMBudgetError as exc:
                log.warning("alert check of %r failed: %s", budget.scope, exc)
        return count

    def _claim(self, scope: str, window: int, threshold: float, now: float) -> bool:
        """Atomically mark (scope, window, threshold) as fired; ``True`` for the one winner."""
        key = f"{scope}|{window}|{format_threshold(threshold)}"
        return self.store.create_doc(FIRED_KIND, key, {"fired_at": now, "threshold": threshold})

    def _forget_old_markers(self, budget: Budget, now: float) -> None:
        current = budget.window_at(now).key
        for key, _ in self.store.list_docs(FIRED_KIND, f"{budget.scope}|"):
            window = key[len(budget.scope) + 1 :].split("|", 1)[0]
            if window.lstrip("-").isdigit() and int(window) < current:
                self.store.delete_doc(FIRED_KIND, key)

    # -- background threads ------------------------------------------------------------

    def start(self) -> None:
        if not self.enabled or self._threads:
            return
        self._client = httpx.Client(timeout=self.config.timeout)
        for target, name in ((self._check_loop, "checker"), (self._send_loop, "sender")):
            thread = threading.Thread(target=target, name=f"llmbudget-alerts-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        if not self._threads:
            return
        self._checks.put(None)
        self._threads[0].join(timeout)
        self._sends.put(None)
        self._threads[1].join(timeout)
        self._threads.clear()
        if self._client is not None:
            self._client.close()
            self._client = None

    def _begin(self) -> None:
        with self._idle:
            self._busy += 1

    def _end(self) -> None:
        with self._idle:
            self._busy -= 1
            if self._busy == 0:
                self._idle.notify_all()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until every queued check and alert has been handled (sent, or given up
        on); ``False`` if that took longer than ``timeout`` seconds.

        Alerts a check fires are queued before the check counts as done, so once this
        returns ``True`` nothing caused by earlier spend is still on its way."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout)

    def _check_loop(self) -> None:
        while True:
            scope = self._checks.get()
            if scope is None:
                return
            with self._pending_lock:
                self._pending.discard(scope)
            try:
                budget = self.ledger.get([scope])[0]
                if budget is not None:
                    self.check(budget)
            except Exception:  # a broken check must never stop later ones
                log.exception("alert check of %r failed", scope)
            finally:
                self._end()

    def _send_loop(self) -> None:
        while True:
            alert = self._sends.get()
            if alert is None:
                return
            try:
                self.send(alert)
            finally:
                self._end()

    def send(self, alert: Alert) -> bool:
        """POST one alert, retrying network errors and 5xx/429 with exponential backoff."""
        url = self.config.webhook_url
        client = self._client
        if url is None or client is None:
            return False
        payload = alert.payload()
        headers = {"Content-Type": "application/json", **self.config.headers}
        attempts = self.config.retries + 1
        for attempt in range(attempts):
            try:
                response = client.post(url, json=payload, headers=headers)
                if response.status_code < 300:
                    self.sent += 1
                    return True
                retryable = response.status_code >= 500 or response.status_code == 429
                problem = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                retryable, problem = True, f"{type(exc).__name__}: {exc}"
            if not retryable or attempt == attempts - 1:
                break
            time.sleep(self.config.backoff * 2**attempt)
        self.failed += 1
        log.warning(
            "alert webhook for %s at %s%% failed after %d attempt(s): %s",
            alert.scope,
            format_threshold(alert.threshold * 100),
            attempt + 1,
            problem,
        )
        return False
