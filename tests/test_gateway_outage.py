"""The gateway through a store outage: a hung or cut store is a 503 within its timeout,
OpenAI-style, the service recovers by itself, and no settle is lost.

The full run (6 clients, Redis cut then hung) is ``bench/bench_outage.py``; here it runs
with short phases, and its checks must all hold.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from llmbudget.journal import default_journal
from llmbudget.stores.redis import RedisStore
from tests import storekit
from tests.gateway_fakes import FakeUpstream, Gw, ServerThread, cost, deployment
from tests.storekit import TcpProxy, with_query

TIMEOUT = 1.0
MARGIN = 0.5


@pytest.fixture
def upstream() -> Iterator[tuple[FakeUpstream, str]]:
    fake = FakeUpstream(reply_tokens=5)
    with ServerThread(fake.app()) as server:
        yield fake, server.url


@pytest.fixture
def proxied_redis(tmp_path: Path) -> Iterator[tuple[TcpProxy, str]]:
    with storekit.private_redis(tmp_path) as port:
        proxy = TcpProxy("127.0.0.1", port)
        url = with_query(
            f"redis://127.0.0.1:{proxy.port}/0",
            prefix="gw-outage",
            socket_timeout=str(TIMEOUT),
            socket_connect_timeout=str(TIMEOUT),
        )
        try:
            yield proxy, url
        finally:
            proxy.close()


def test_a_hung_store_is_a_503_within_its_timeout_and_the_gateway_recovers(
    upstream: tuple[FakeUpstream, str], proxied_redis: tuple[TcpProxy, str]
) -> None:
    fake, url = upstream
    proxy, store_url = proxied_redis
    store = RedisStore(store_url)
    config = {
        "model_list": [deployment(url)],
        "budgets": {"global": {"budget": 100}},
        "keys": [{"key": "sk-outage-0123456789", "user": "alice"}],
    }
    with Gw(config, store=store) as gw:
        assert gw.chat("sk-outage-0123456789").status_code == 200
        calls = fake.count
        proxy.stall()  # a hung server: connections open, nothing answered
        try:
            started = time.monotonic()
            r = gw.chat("sk-outage-0123456789")
            took = time.monotonic() - started
        finally:
            proxy.restore()
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "store_unavailable"
        assert r.json()["error"]["type"]  # OpenAI's shape: the SDKs raise on it
        assert took < TIMEOUT + MARGIN
        assert fake.count == calls  # refused before anything was sent upstream
        deadline = time.monotonic() + 20
        while (r := gw.chat("sk-outage-0123456789")).status_code != 200:
            assert time.monotonic() < deadline, "the gateway did not recover"
            time.sleep(0.1)
        status = gw.settled("gw-global")
        assert status.spent == 2 * cost(8, 5)  # the two calls that were answered
    store.close()


def test_a_settle_the_store_cannot_take_is_kept_and_lands(
    upstream: tuple[FakeUpstream, str], proxied_redis: tuple[TcpProxy, str]
) -> None:
    fake, url = upstream
    fake.delay = 0.5  # time to cut the store while the call is upstream
    proxy, store_url = proxied_redis
    store = RedisStore(store_url)
    config = {
        "model_list": [deployment(url)],
        "budgets": {"global": {"budget": 100}},
        "keys": [{"key": "sk-outage-0123456789", "user": "alice"}],
    }
    with Gw(config, store=store) as gw:
        answers: list[object] = []
        request = threading.Thread(target=lambda: answers.append(gw.chat("sk-outage-0123456789")))
        request.start()
        deadline = time.monotonic() + 10
        while fake.count == 0:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        proxy.cut()
        request.join(30)
        [r] = answers
        assert r.status_code == 200  # type: ignore[attr-defined]
        reported = Decimal(r.headers["x-llmbudget-cost"])  # type: ignore[attr-defined]
        deadline = time.monotonic() + 10
        while not default_journal().count():
            assert time.monotonic() < deadline, "the settle was not kept"
            time.sleep(0.05)
        proxy.restore()
        deadline = time.monotonic() + 20
        while default_journal().count():  # the gateway's replayer lands it
            assert time.monotonic() < deadline, "the kept settle did not land"
            time.sleep(0.05)
        assert gw.settled("gw-global").spent == reported
    store.close()


def test_outage_run_through_the_gateway() -> None:
    """bench/bench_outage.py with short phases: every check of the full run holds."""
    from bench.bench_outage import run

    figures = run(clients=6, warm=1.0, cut=1.0, hang=2.0, after=1.0, timeout=TIMEOUT)
    assert figures["failures"] == [], figures
    assert figures["during_cut"]["requests"] and figures["during_hang"]["requests"]
    assert Decimal(figures["recorded_spend_usd"]) == Decimal(figures["reported_cost_usd"]) > 0
