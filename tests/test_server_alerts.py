"""Soft-threshold alerts: one webhook per threshold per window, across restarts and workers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from llmbudget.clock import FrozenClock
from llmbudget.server import AlertConfig, ServerConfig, create_app
from llmbudget.stores.sqlite import SQLiteStore

KEY = "alert-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
NOON = 1_773_576_000.0


class Receiver:
    """A webhook endpoint on 127.0.0.1 that records what it is sent."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.received: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.attempts = 0
        self.statuses = statuses or []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                with receiver.lock:
                    receiver.attempts += 1
                    status = receiver.statuses.pop(0) if receiver.statuses else 204
                    if status < 300:
                        receiver.received.append(body)
                        receiver.headers.append(dict(self.headers))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.02)
        with self.lock:
            return list(self.received)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(NOON)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    opened = SQLiteStore(str(tmp_path / "alerts.db"))
    yield opened
    opened.close()


@pytest.fixture
def make_client(
    store: SQLiteStore, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., TestClient]]:
    monkeypatch.delenv("LLMBUDGET_ADMIN_KEY", raising=False)
    opened: list[TestClient] = []

    def make(url: str, **alerts: Any) -> TestClient:
        config = ServerConfig(
            admin_key=KEY,
            alerts=AlertConfig(webhook_url=url, backoff=0.01, sweep_interval=3600, **alerts),
        )
        client = TestClient(create_app(config, store=store, clock=clock), headers=AUTH)
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)


def _charge(client: TestClient, amount: str, user: str = "ann") -> None:
    response = client.post("/v1/projects/app/charge", json={"user": user, "amount": amount})
    assert response.status_code == 200, response.text


def _idle(*clients: TestClient) -> None:
    """Wait until every alert the clients' spend can cause has been handled, so that an
    assertion that nothing *more* was sent is not decided by how long we waited."""
    for client in clients:
        assert client.app.state.llmbudget.alerts.wait_idle(10.0)  # type: ignore[attr-defined]


def _create(client: TestClient, **extra: Any) -> None:
    body = {"user": "ann", "amount": "1", "period": "daily", **extra}
    assert client.post("/v1/projects/app/budgets", json=body).status_code == 201


def test_each_threshold_fires_once_per_window(
    make_client: Callable[..., TestClient], receiver: Receiver, clock: FrozenClock
) -> None:
    client = make_client(receiver.url)
    _create(client)
    _charge(client, "0.4")
    _charge(client, "0.2")  # 60 %: crosses 50 %
    got = receiver.wait_for(1)
    assert [a["threshold"] for a in got] == [0.5]
    alert = got[0]
    assert alert["event"] == "budget.threshold_crossed"
    assert (alert["project"], alert["user"], alert["scope"]) == ("app", "ann", "user:app:ann")
    assert (alert["limit"], alert["spent"]) == ("1", "0.6")
    assert alert["resets_at"] == "2026-03-16T00:00:00+00:00"
    assert receiver.headers[0]["Content-Type"] == "application/json"
    _charge(client, "0.3")  # 90 %: crosses 80 %
    _charge(client, "0.5")  # 140 %: crosses 100 %
    _charge(client, "0.5")  # nothing new to cross
    got = receiver.wait_for(3)
    _idle(client)
    assert sorted(a["threshold"] for a in receiver.received) == [0.5, 0.8, 1.0]

    clock.advance(86_400)  # a new window: alerts may fire again
    _charge(client, "0.55")
    got = receiver.wait_for(4)
    assert [a["threshold"] for a in got][-1] == 0.5
    assert got[-1]["window_start"] == "2026-03-16T00:00:00+00:00"


def test_a_jump_fires_every_crossed_threshold(
    make_client: Callable[..., TestClient], receiver: Receiver
) -> None:
    client = make_client(receiver.url)
    _create(client)
    _charge(client, "5")
    got = receiver.wait_for(3)
    assert sorted(a["threshold"] for a in got) == [0.5, 0.8, 1.0]


def test_restarts_and_several_workers_do_not_fire_twice(
    make_client: Callable[..., TestClient], receiver: Receiver
) -> None:
    first = make_client(receiver.url)
    _create(first)
    _charge(first, "0.85")
    assert len(receiver.wait_for(2)) == 2
    # Two more "workers" on the same store, each sweeping everything at once.
    workers = [make_client(receiver.url) for _ in range(2)]
    fired: list[int] = []
    barrier = threading.Barrier(3)

    def sweep(client: TestClient) -> None:
        barrier.wait()
        fired.append(client.app.state.llmbudget.alerts.sweep())  # type: ignore[attr-defined]

    threads = [threading.Thread(target=sweep, args=(c,)) for c in [first, *workers]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fired == [0, 0, 0]
    _charge(workers[1], "0.2")  # 105 %: only 100 % is new, fired by exactly one worker
    for client in workers:
        client.app.state.llmbudget.alerts.sweep()  # type: ignore[attr-defined]
    receiver.wait_for(3)
    _idle(first, *workers)
    assert sorted(a["threshold"] for a in receiver.received) == [0.5, 0.8, 1.0]


def test_per_budget_thresholds_from_the_api_and_the_config(
    make_client: Callable[..., TestClient], receiver: Receiver
) -> None:
    client = make_client(receiver.url, budgets={"user:app:bob": (0.25,)})
    _create(client, alert_thresholds=[0.9])
    assert client.get("/v1/projects/app/budgets/ann").json()["alert_thresholds"] == [0.9]
    bob = {"user": "bob", "amount": "1", "period": "daily"}
    assert client.post("/v1/projects/app/budgets", json=bob).status_code == 201
    assert client.get("/v1/projects/app/budgets/bob").json()["alert_thresholds"] == [0.25]
    _charge(client, "0.85")  # below ann's only threshold
    _charge(client, "0.3", user="bob")
    got = receiver.wait_for(1)
    _idle(client)
    assert [(a["user"], a["threshold"]) for a in receiver.received] == [("bob", 0.25)]
    # Thresholds set through the API survive a restart (they live in the store).
    again = make_client(receiver.url)
    assert again.get("/v1/projects/app/budgets/ann").json()["alert_thresholds"] == [0.9]
    patched = again.patch("/v1/projects/app/budgets/ann", json={"alert_thresholds": []})
    assert patched.json()["alert_thresholds"] == []
    _charge(again, "0.5")
    _idle(again)
    assert len(receiver.received) == 1 and got


def test_webhook_retries_then_succeeds(
    make_client: Callable[..., TestClient],
) -> None:
    flaky = Receiver(statuses=[500, 503])
    try:
        client = make_client(flaky.url, retries=3)
        _create(client)
        _charge(client, "0.6")
        got = flaky.wait_for(1)
        assert [a["threshold"] for a in got] == [0.5]
        assert flaky.attempts == 3
    finally:
        flaky.close()


def test_a_failing_webhook_never_breaks_requests(
    make_client: Callable[..., TestClient], caplog: pytest.LogCaptureFixture
) -> None:
    broken = Receiver(statuses=[500] * 20)
    try:
        client = make_client(broken.url, retries=1)
        _create(client)
        _charge(client, "0.6")
        manager = client.app.state.llmbudget.alerts  # type: ignore[attr-defined]
        deadline = time.monotonic() + 5
        while manager.failed < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert manager.failed == 1 and broken.attempts == 2
        assert "alert webhook" in caplog.text
        _charge(client, "0.1")  # requests carry on
        assert client.get("/v1/projects/app/budgets/ann").json()["spent"] == "0.7"
    finally:
        broken.close()


def test_an_unreachable_webhook_is_logged(make_client: Callable[..., TestClient]) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = make_client(f"http://127.0.0.1:{port}/hook", retries=1, timeout=0.5)
    _create(client)
    _charge(client, "0.6")
    manager = client.app.state.llmbudget.alerts  # type: ignore[attr-defined]
    deadline = time.monotonic() + 5
    while manager.failed < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert manager.failed == 1
    assert client.get("/v1/projects/app/budgets/ann").json()["spent"] == "0.6"


def test_no_webhook_means_no_alert_threads(
    store: SQLiteStore, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LLMBUDGET_ADMIN_KEY", raising=False)
    app = create_app(ServerConfig(admin_key=KEY), store=store, clock=clock)
    with TestClient(app, headers=AUTH) as client:
        _create(client)
        _charge(client, "2")
        assert not app.state.llmbudget.alerts.enabled
        assert store.list_docs("alert-fired") == []


def test_old_window_markers_are_forgotten_by_the_sweep(
    make_client: Callable[..., TestClient],
    receiver: Receiver,
    clock: FrozenClock,
    store: SQLiteStore,
) -> None:
    client = make_client(receiver.url)
    _create(client)
    _charge(client, "0.6")
    receiver.wait_for(1)
    assert len(store.list_docs("alert-fired")) == 1
    clock.advance(86_400)
    client.app.state.llmbudget.alerts.sweep()  # type: ignore[attr-defined]
    assert store.list_docs("alert-fired") == []


def test_rate_limits_are_not_alerted(
    make_client: Callable[..., TestClient], receiver: Receiver
) -> None:
    from llmbudget.budgets import Budget

    client = make_client(receiver.url)
    alerts = client.app.state.llmbudget.alerts  # type: ignore[attr-defined]
    rpm = Budget.of("rpm:key:k1", 2, "1m", unit="requests")
    alerts.ledger.define(rpm)
    for _ in range(2):  # 100 % of a rate limit
        alerts.ledger.settle(alerts.ledger.reserve([rpm], 0, counts={"requests": 1}), 0)
    assert alerts.check(rpm) == []
    dollars = Budget.of("usd:key:k1", 2, "daily")
    alerts.ledger.define(dollars)
    alerts.ledger.charge([dollars], 2)
    assert [a.threshold for a in alerts.check(dollars)] == [0.5, 0.8, 1.0]
