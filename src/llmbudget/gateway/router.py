"""Load balancing across the deployments of a model name, with retries, cooldowns and fallbacks.

Strategies (``router_settings.routing_strategy``):

``simple-shuffle`` (default, LiteLLM's name)
    weighted random choice by ``weight``; retries go to the others in weighted-random order.
``weighted-round-robin``
    smooth weighted round robin (nginx's): with weights 3 and 1, every 4 requests send 3 to
    the first and 1 to the second, interleaved, deterministically.
``least-busy``
    the deployment with the fewest requests in flight in this process; ties by round robin.

Health: a deployment that fails (429, 5xx, timeout, connection error) ``allowed_fails``
times within ``cooldown_time`` seconds is *cooled down* — left out — for ``cooldown_time``
seconds; a 429 cools it down at once (the provider said so). A deployment past its ``rpm``
in the current minute is left out until the next minute. A deployment whose own budget is
exhausted is skipped by the proxy (the reserve names its scope) without counting as a failure.

:meth:`Router.plan` gives the order to try things in: the model's healthy deployments,
then each fallback model's. State is per process (replicas balance independently).

>>> from llmbudget.gateway.config import GatewayConfig
>>> cfg = GatewayConfig.from_mapping({"router_settings": {"routing_strategy": "weighted-round-robin"},
...     "model_list": [{"model_name": "m", "model": "gpt-4o-mini", "weight": w,
...                     "model_info": {"id": f"d{w}"}, "api_base": "http://127.0.0.1:9/v1"} for w in (3, 1)]})
>>> router = Router(cfg)
>>> [router.plan("m")[0][1][0].id for _ in range(4)]
['d3', 'd3', 'd1', 'd3']
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from llmbudget.clock import Clock, system_clock
from llmbudget.gateway.config import Deployment, GatewayConfig

__all__ = ["DeploymentHealth", "Router"]


@dataclass(slots=True)
class DeploymentHealth:
    """Mutable per-process state of one deployment."""

    in_flight: int = 0
    fails: int = 0
    fails_since: float = 0.0
    cooldown_until: float = 0.0
    minute: int = -1
    minute_count: int = 0
    current_weight: float = 0.0
    requests: int = 0
    failures: int = 0


class Router:
    """Picks deployments; told about outcomes with :meth:`started`, :meth:`succeeded`, :meth:`failed`."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        clock: Clock = system_clock,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = config.router
        self.clock = clock
        self.rng = rng or random.Random()
        self.groups: dict[str, list[Deployment]] = {}
        for dep in config.deployments:
            self.groups.setdefault(dep.model_name, []).append(dep)
        self.health: dict[str, DeploymentHealth] = {
            d.id: DeploymentHealth() for d in config.deployments
        }

    def first_upstream_model(self, model: str) -> str:
        """The upstream model of ``model``'s first deployment (to count its prompt with)."""
        deployments = self.groups.get(model)
        return deployments[0].upstream_model if deployments else model

    def has_model(self, model: str) -> bool:
        return model in self.groups

    def plan(
        self, model: str, allowed: Callable[[str], bool] | None = None
    ) -> list[tuple[str, list[Deployment]]]:
        """``[(model, deployments in try order), (fallback, ...), ...]``; cooled-down
        deployments are left out, so a list may be empty."""
        out = [(model, self._order(model))]
        for fallback in self.settings.fallbacks.get(model, ()):
            if fallback != model and (allowed is None or allowed(fallback)):
                out.append((fallback, self._order(fallback)))
        return out

    def cooldown_remaining(self, model: str) -> float:
        """Seconds until the first cooled-down deployment of ``model`` is back (0: none)."""
        now = self.clock()
        waits = [
            self.health[d.id].cooldown_until - now
            for d in self.groups.get(model, ())
            if self.health[d.id].cooldown_until > now
        ]
        return min(waits) if waits else 0.0

    # -- outcomes --------------------------------------------------------------------------

    def started(self, dep: Deployment) -> None:
        h = self.health[dep.id]
        h.in_flight += 1
        h.requests += 1
        minute = int(self.clock() // 60)
        if minute != h.minute:
            h.minute, h.minute_count = minute, 0
        h.minute_count += 1

    def finished(self, dep: Deployment) -> None:
        h = self.health[dep.id]
        h.in_flight = max(0, h.in_flight - 1)

    def succeeded(self, dep: Deployment) -> None:
        h = self.health[dep.id]
        h.fails = 0

    def failed(self, dep: Deployment, status: int | None, retry_after: float | None = None) -> None:
        """Count a failure (``status`` ``None``: timeout or connection error)."""
        now = self.clock()
        h = self.health[dep.id]
        h.failures += 1
        window = self.settings.cooldown_time
        if now - h.fails_since > window:
            h.fails, h.fails_since = 0, now
        h.fails += 1
        if status == 429 or h.fails >= self.settings.allowed_fails:
            wait = window
            if status == 429 and retry_after is not None and 0 < retry_after <= 10 * window:
                wait = max(window, retry_after)
            h.cooldown_until = now + wait
            h.fails = 0

    # -- ordering --------------------------------------------------------------------------

    def _healthy(self, model: str) -> list[Deployment]:
        now = self.clock()
        minute = int(now // 60)
        out = []
        for dep in self.groups.get(model, ()):
            h = self.health[dep.id]
            if h.cooldown_until > now:
                continue
            if dep.rpm is not None and h.minute == minute and h.minute_count >= dep.rpm:
                continue
            out.append(dep)
        return out

    def _order(self, model: str) -> list[Deployment]:
        deps = self._healthy(model)
        if len(deps) <= 1:
            return deps
        strategy = self.settings.strategy
        if strategy == "weighted-round-robin":
            return self._round_robin(deps)
        if strategy == "least-busy":
            rr = self._round_robin(deps)
            rank = {d.id: i for i, d in enumerate(rr)}
            return sorted(deps, key=lambda d: (self.health[d.id].in_flight, rank[d.id]))
        return self._shuffle(deps)

    def _round_robin(self, deps: Sequence[Deployment]) -> list[Deployment]:
        # Smooth weighted round robin: raise every current weight by its weight, pick the
        # largest, lower it by the total. Interleaves picks instead of bursting them.
        total = 0.0
        for dep in deps:
            h = self.health[dep.id]
            h.current_weight += dep.weight
            total += dep.weight
        ordered = sorted(deps, key=lambda d: -self.health[d.id].current_weight)
        self.health[ordered[0].id].current_weight -= total
        return ordered

    def _shuffle(self, deps: Sequence[Deployment]) -> list[Deployment]:
        # Weighted sampling without replacement (Efraimidis-Spirakis keys u^(1/w)).
        keyed = [(self.rng.random() ** (1.0 / d.weight), i) for i, d in enumerate(deps)]
        keyed.sort(reverse=True)
        return [deps[i] for _, i in keyed]
