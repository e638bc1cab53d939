"""Once per threshold per window across replicas: several alerters on one store (every
backend), as server instances in one process and as separate processes, deliver each
threshold exactly once, and again once in the next window."""

from __future__ import annotations

import json
import multiprocessing as mp
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from llmbudget.budgets import Budget, scope_key
from llmbudget.clock import FrozenClock
from llmbudget.ledger import Ledger
from llmbudget.server import AlertConfig, ServerConfig, create_app
from llmbudget.server.alerts import AlertManager
from llmbudget.stores import open_store
from llmbudget.stores.base import Store
from tests.alert_receivers import HttpReceiver, http_receiver
from tests.storekit import FACTORIES, SHARED_ACROSS_PROCESSES, store_url

KEY = "replica-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
ANN = Budget.of(scope_key("user", "app", "ann"), "1", "daily")
MIDNIGHT = 1_773_619_200.0  # 2026-03-16 00:00 UTC: the daily window after the frozen noon


def _thresholds(receiver: HttpReceiver) -> list[tuple[float, str]]:
    out = []
    for post in receiver.posts:
        body = json.loads(post.body)
        out.append((body["threshold"], body["window_start"]))
    return sorted(out)


@pytest.fixture
def second_store(request: pytest.FixtureRequest, store: Store, tmp_path: Path) -> Iterator[Store]:
    """The same backend as ``store``, through a connection of its own (as another replica
    would have); the memory store can only be shared as the one object."""
    backend = request.node.callspec.params["store"]
    if backend not in SHARED_ACROSS_PROCESSES:
        yield store
        return
    other = open_store(store_url(backend, tmp_path))
    yield other
    other.close()


def test_two_server_instances_deliver_each_threshold_once_per_window(
    store: Store,
    second_store: Store,
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LLMBUDGET_ADMIN_KEY", raising=False)
    with http_receiver() as hook, ExitStack() as stack:
        alerts = AlertConfig(webhook_url=hook.url, backoff=0.01, sweep_interval=3600)
        clients = [
            stack.enter_context(
                TestClient(
                    create_app(ServerConfig(admin_key=KEY, alerts=alerts), store=s, clock=clock),
                    headers=AUTH,
                )
            )
            for s in (store, second_store)
        ]
        managers: list[AlertManager] = [c.app.state.llmbudget.alerts for c in clients]  # type: ignore[attr-defined]
        body = {"user": "ann", "amount": "1", "period": "daily"}
        assert clients[0].post("/v1/projects/app/budgets", json=body).status_code == 201

        def charge_and_sweep(rounds: int, amount: str) -> None:
            # Both replicas take charges at once (each queues its own checks) and then
            # sweep everything at once: every path to firing races every other.
            barrier = threading.Barrier(2)

            def replica(i: int) -> None:
                barrier.wait()
                for _ in range(rounds):
                    charged = clients[i].post(
                        "/v1/projects/app/charge", json={"user": "ann", "amount": amount}
                    )
                    assert charged.status_code == 200, charged.text
                barrier.wait()
                managers[i].sweep()

            threads = [threading.Thread(target=replica, args=(i,)) for i in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            for manager in managers:
                assert manager.wait_idle()

        charge_and_sweep(5, "0.11")  # $1.10 in all: 50 %, 80 % and 100 % crossed
        first = "2026-03-15T00:00:00+00:00"
        assert _thresholds(hook) == [(0.5, first), (0.8, first), (1.0, first)]

        clock.advance(MIDNIGHT - clock() + 60)  # past the day's boundary: a new window
        charge_and_sweep(3, "0.1")  # $0.60: only 50 % in the new window
        second = "2026-03-16T00:00:00+00:00"
        assert _thresholds(hook) == [(0.5, first), (0.5, second), (0.8, first), (1.0, first)]
        assert sum(m.sent for m in managers) == 4
        # The sweep forgot the past window's markers; the new one's is kept.
        assert [key for key, _ in store.list_docs("alert-fired")] == [
            f"{ANN.scope}|{int(MIDNIGHT)}|0.5"
        ]


def _alerter(url: str, receiver: str, now: float, barrier: Any, out: Any) -> None:
    store = open_store(url)
    clock = FrozenClock(now)
    config = AlertConfig(slack_webhook_url=receiver, backoff=0.01)
    manager = AlertManager(config, Ledger(store, clock=clock), store, clock)
    manager.start()
    try:
        barrier.wait()
        fired = manager.sweep()
        assert manager.wait_idle(30)
        out.put((fired, manager.sent))
    finally:
        manager.stop()
        store.close()


@pytest.mark.slow
@pytest.mark.parametrize("backend", sorted(SHARED_ACROSS_PROCESSES))
def test_alerter_processes_on_one_store_deliver_once(backend: str, tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    with FACTORIES[backend](tmp_path) as store, http_receiver() as slack:
        ledger = Ledger(store, clock=FrozenClock(1_773_576_000.0))
        ledger.define(ANN)
        ledger.charge([ANN], Decimal("0.9"))

        def round_of(now: float, processes: int = 3) -> list[tuple[int, int]]:
            barrier = ctx.Barrier(processes)
            out = ctx.Queue()
            url = store_url(backend, tmp_path)
            procs = [
                ctx.Process(target=_alerter, args=(url, slack.url, now, barrier, out))
                for _ in range(processes)
            ]
            for p in procs:
                p.start()
            results = [out.get(timeout=120) for _ in procs]
            for p in procs:
                p.join(timeout=30)
                assert p.exitcode == 0
            return results

        results = round_of(1_773_576_000.0)
        assert sum(fired for fired, _ in results) == 2
        assert sum(sent for _, sent in results) == 2
        texts = sorted(json.loads(p.body)["text"] for p in slack.posts)
        assert [t.split(": ")[2].split(" ")[0] for t in texts] == ["50%", "80%"]

        # The next day: spend in the new window fires again, once.
        Ledger(store, clock=FrozenClock(MIDNIGHT + 60)).charge([ANN], Decimal("0.5"))
        results = round_of(MIDNIGHT + 60)
        assert sum(fired for fired, _ in results) == 1
        assert len(slack.posts) == 3
        last = json.loads(slack.posts[-1].body)
        assert "50%" in last["text"] and "$0.50 of $1.00" in last["text"]
