"""Soft budget alerts: when spend crosses 50 %, 80 %, 100 % … of a limit, tell people.

Where: a JSON webhook (signed, :mod:`.alert_webhook`), Slack (:mod:`.alert_slack`), email
(:mod:`.alert_email`), each delivered by its own thread with bounded retries
(:mod:`.alert_delivery`), so one dead channel delays none of the others and no request.

Each threshold fires **once per window** per budget, even across restarts and with several
server processes or replicas on one store: the "already fired" marker is a store document
(kind ``alert-fired``, key ``<scope>|<window>|<threshold>``) created with
:meth:`~llmbudget.stores.base.Store.create_doc`, an atomic insert-if-absent. Exactly one
process creates it, and only that one delivers the alert. A new window has a new key, so
the alert can fire again there; markers of past windows are deleted by the sweep.

Thresholds: per budget through the API (documents of kind ``alert-config``, keyed by
scope, so every process sees them), else the config file's (:mod:`.alert_thresholds`:
per scope, per project or gateway entity, then the default).

Requests never wait for alerts: they only queue the scopes they touched, for a checker
thread. A periodic sweep also checks every budget, the library's (records in the store)
and the gateway's (:mod:`.alert_scopes`), so spend recorded by other writers of the store
(library users, other servers, the gateway) raises alerts too.

>>> format_threshold(0.8), format_threshold(1.0)
('0.8', '1')
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Awaitable, Callable, Iterable, Sequence
from decimal import Decimal

from llmbudget.budgets import Budget
from llmbudget.clock import Clock
from llmbudget.errors import LLMBudgetError
from llmbudget.ledger import Ledger
from llmbudget.stores.base import Store

from .alert_delivery import Channel, ChannelWorker
from .alert_email import EmailChannel
from .alert_event import Alert, format_threshold
from .alert_slack import SlackChannel
from .alert_thresholds import configured_thresholds
from .alert_webhook import WebhookChannel
from .config import AlertConfig, parse_thresholds

__all__ = [
    "CONFIG_KIND",
    "FIRED_KIND",
    "Alert",
    "AlertManager",
    "BudgetSource",
    "channels_for",
    "format_threshold",
]

log = logging.getLogger("llmbudget.server.alerts")

CONFIG_KIND = "alert-config"
FIRED_KIND = "alert-fired"


#: An async listing of budgets the store holds no record of (the gateway's).
BudgetSource = Callable[[], Awaitable[Sequence[Budget]]]


def channels_for(config: AlertConfig, clock: Clock) -> list[Channel]:
    """The channels the config names, in a fixed order: webhook, Slack, email."""
    channels: list[Channel] = []
    if config.webhook_url is not None:
        channels.append(
            WebhookChannel(
                config.webhook_url,
                secret=config.webhook_secret,
                headers=config.headers,
                timeout=config.timeout,
                clock=clock,
            )
        )
    if config.slack_webhook_url is not None:
        channels.append(SlackChannel(config.slack_webhook_url, timeout=config.timeout))
    if config.email is not None:
        channels.append(EmailChannel(config.email))
    return channels


class AlertManager:
    """Checks budgets against thresholds and delivers alerts in the background.

    ``channels`` default to the config's (:func:`channels_for`); tests may pass their own.

    >>> from llmbudget.clock import FrozenClock
    >>> from llmbudget.stores.memory import MemoryStore
    >>> store, clock = MemoryStore(), FrozenClock(1_773_576_000.0)
    >>> manager = AlertManager(AlertConfig(), Ledger(store, clock=clock), store, clock)
    >>> manager.enabled  # no channel configured
    False
    """

    def __init__(
        self,
        config: AlertConfig,
        ledger: Ledger,
        store: Store,
        clock: Clock,
        channels: Sequence[Channel] | None = None,
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.store = store
        self.clock = clock
        self._checks: queue.Queue[str | None] = queue.Queue()
        self._pending: set[str] = set()
        self._pending_lock = threading.Lock()
        self._checker: threading.Thread | None = None
        # Checks and deliveries queued or running; wait_idle() waits for it to reach zero.
        self._busy = 0
        self._idle = threading.Condition()
        self.workers = [
            ChannelWorker(c, retries=config.retries, backoff=config.backoff, done=self._end)
            for c in (channels_for(config, clock) if channels is None else channels)
        ]
        self._sources: list[BudgetSource] = []
        # (scope, window, threshold) this process knows are fired: spares the store a
        # refused reserve on every later check of a budget that is already past a threshold.
        self._known: set[tuple[str, int, float]] = set()

    @property
    def enabled(self) -> bool:
        return bool(self.workers)

    @property
    def sent(self) -> int:
        """Deliveries that succeeded, over every channel."""
        return sum(w.sent for w in self.workers)

    @property
    def failed(self) -> int:
        """Deliveries given up on (out of retries, refused, or dropped), over every channel."""
        return sum(w.failed for w in self.workers)

    def add_source(self, source: BudgetSource) -> None:
        """Also sweep the budgets ``source`` lists (the gateway's: see :mod:`.alert_scopes`)."""
        self._sources.append(source)

    # -- thresholds ------------------------------------------------------------------

    def thresholds_for(self, scope: str) -> tuple[float, ...]:
        """Per-budget override from the store, else the config file's, else the default."""
        override = self.stored_thresholds(scope)
        if override is not None:
            return override
        return configured_thresholds(self.config, scope)

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
        if budget.limit is None or budget.limit <= 0 or budget.unit != "usd":
            # Rate limits (requests, tokens, slots) refill every minute or day: an alert
            # per window would be noise, and they never put money at risk.
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
                for worker in self.workers:
                    self._begin()
                    worker.put(alert)
        return fired

    def sweep(self, extra: Iterable[Budget] = ()) -> int:
        """Check every limited budget of the store and of ``extra`` (and forget markers of
        past windows); returns how many alerts fired."""
        count = 0
        now = self.clock()
        budgets = {b.scope: b for b in self.ledger.budgets("")}
        budgets.update((b.scope, b) for b in extra)
        for budget in budgets.values():
            if budget.limit is None:
                continue
            try:
                count += len(self.check(budget))
                self._forget_old_markers(budget, now)
            except LLMBudgetError as exc:
                log.warning("alert check of %r failed: %s", budget.scope, exc)
        return count

    async def asweep(self) -> int:
        """:meth:`sweep` with the budgets of every added source (run from the event loop:
        the sources are async; the store calls go to a thread)."""
        extra: list[Budget] = []
        for source in self._sources:
            try:
                extra.extend(await source())
            except Exception:  # one failed listing must not stop the library's alerts
                log.exception("listing budgets for the alert sweep failed")
        return await asyncio.to_thread(self.sweep, extra)

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
        if not self.enabled or self._checker is not None:
            return
        for worker in self.workers:
            worker.start()
        self._checker = threading.Thread(
            target=self._check_loop, name="llmbudget-alerts-checker", daemon=True
        )
        self._checker.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Finish queued checks, then each channel's queued deliveries, and end the threads."""
        if self._checker is None:
            return
        self._checks.put(None)
        self._checker.join(timeout)
        self._checker = None
        for worker in self.workers:
            worker.stop(timeout)

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
