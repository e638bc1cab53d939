"""The gateway's Prometheus metrics: the one place the proxy reports what happened.

==============================================  =========  ==============================
``llmbudget_gateway_spend_dollars_total``       counter    spend charged, by ``model``
``llmbudget_gateway_scope_spend_dollars_total`` counter    the same spend, by ``scope_kind``
                                                           of every budget it was charged to
``llmbudget_gateway_refusals_total``            counter    429s, by ``scope_kind`` and
                                                           ``reason`` (``budget``/``rate_limit``)
``llmbudget_gateway_upstream_duration_seconds`` histogram  until the upstream's answer
                                                           starts, by ``deployment``
``llmbudget_gateway_upstream_errors_total``     counter    by ``deployment`` and ``reason``
                                                           (``timeout``, ``unreachable``, status)
``llmbudget_gateway_holds_in_flight``           gauge      holds reserved, not yet ended
==============================================  =========  ==============================

Labels are bounded: models and deployments come from the config, a scope kind is the
kind of budget (``key``, ``user``, ``end_user``, ``team``, ``org``, ``global``, ``model``,
``deployment``, ``key_model`` ...), never a key, user or end-user id. A call charged to
the key, its team and the global budget adds its cost once under each of those kinds; the
``model`` counter adds it once, so its sum is the gateway's spend.

The refusal's reason follows the refused budget's unit: ``budget`` for dollars,
``rate_limit`` for requests, tokens or parallel calls.

>>> from decimal import Decimal
>>> from prometheus_client import CollectorRegistry
>>> from llmbudget.errors import BudgetExceededError
>>> m = GatewayMetrics(CollectorRegistry())
>>> m.refused(BudgetExceededError("gw-key:k1", Decimal(1), Decimal(1), Decimal(0), Decimal(1)))
>>> m.refusals.labels("key", "budget")._value.get()
1.0
>>> scope_kind("gw-end-user:alice"), scope_kind("gw-key-model:k1:gpt-4o"), scope_kind("x")
('end_user', 'key_model', 'other')
"""

from __future__ import annotations

import weakref

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from llmbudget.errors import BudgetExceededError
from llmbudget.metering import Meter

__all__ = ["GatewayMetrics", "scope_kind"]

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


def scope_kind(scope: str) -> str:
    """The kind of a gateway budget scope (``gw-team:eng`` -> ``team``); ``other`` for a
    scope the gateway does not make."""
    head = scope.split(":", 1)[0]
    if not head.startswith("gw-"):
        return "other"
    return head[3:].replace("-", "_")


class GatewayMetrics:
    """Counters the proxy updates; ``registry`` is the host server's (or a fresh one).

    Cheap on the request path: each labelled child is looked up once and kept.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.spend = Counter(
            "llmbudget_gateway_spend_dollars",
            "Spend the gateway charged (settled, or kept to settle), in dollars, by model.",
            ["model"],
            registry=self.registry,
        )
        self.scope_spend = Counter(
            "llmbudget_gateway_scope_spend_dollars",
            "Spend the gateway charged, in dollars, once per kind of budget it was charged to.",
            ["scope_kind"],
            registry=self.registry,
        )
        self.refusals = Counter(
            "llmbudget_gateway_refusals",
            "Requests refused (HTTP 429) by a budget or a rate limit.",
            ["scope_kind", "reason"],
            registry=self.registry,
        )
        self.upstream_latency = Histogram(
            "llmbudget_gateway_upstream_duration_seconds",
            "Time from sending a request upstream until its answer starts (status and "
            "headers; a stream's first bytes).",
            ["deployment"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.upstream_errors = Counter(
            "llmbudget_gateway_upstream_errors",
            "Upstream attempts that failed: timeout, unreachable, or an HTTP error status.",
            ["deployment", "reason"],
            registry=self.registry,
        )
        self.holds = Gauge(
            "llmbudget_gateway_holds_in_flight",
            "Gateway holds reserved and not yet settled or released.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self._model_spend: dict[str, Counter] = {}
        self._kind_spend: dict[str, Counter] = {}
        self._latency: dict[str, Histogram] = {}
        # Meters whose hold is open: ending one twice (a settle after a release) counts once.
        self._open: weakref.WeakSet[Meter] = weakref.WeakSet()

    def opened(self, meter: Meter) -> None:
        """``meter`` reserved its hold."""
        self._open.add(meter)
        self.holds.inc()

    def ended(self, meter: Meter) -> None:
        """``meter``'s hold ended: released, or settled at ``meter.cost`` (which stays
        ``None`` when neither the store nor the journal took the charge)."""
        if meter not in self._open:
            return
        self._open.discard(meter)
        self.holds.dec()
        cost = meter.cost
        if not cost:
            return
        dollars = float(cost)
        counter = self._model_spend.get(meter.label)
        if counter is None:
            counter = self._model_spend[meter.label] = self.spend.labels(meter.label)
        counter.inc(dollars)
        budgets = [b for group in meter.groups for b in group.budgets]
        for kind in {scope_kind(b.scope) for b in budgets if b.unit == "usd"}:
            child = self._kind_spend.get(kind)
            if child is None:
                child = self._kind_spend[kind] = self.scope_spend.labels(kind)
            child.inc(dollars)

    def refused(self, exc: BudgetExceededError) -> None:
        """A request was answered 429 because of ``exc``."""
        reason = "budget" if exc.unit == "usd" else "rate_limit"
        self.refusals.labels(scope_kind(exc.scope), reason).inc()

    def answered(self, deployment: str, status: int, seconds: float) -> None:
        """An upstream answered (any status) after ``seconds``."""
        histogram = self._latency.get(deployment)
        if histogram is None:
            histogram = self._latency[deployment] = self.upstream_latency.labels(deployment)
        histogram.observe(seconds)
        if status >= 400:
            self.upstream_errors.labels(deployment, str(status)).inc()

    def failed(self, deployment: str, *, timed_out: bool) -> None:
        """An upstream attempt got no answer."""
        self.upstream_errors.labels(deployment, "timeout" if timed_out else "unreachable").inc()
