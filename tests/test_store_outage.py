"""Outages: with the server gone every operation fails fast with StoreUnavailableError
(fail closed: nothing is reserved or charged), and the *same* store object works again once
the server is back.

The shared servers are never stopped (other tests use them): a :class:`TcpProxy` in front
of them is cut and restored instead, and a private ``redis-server`` is killed and restarted
for a real server restart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from llmbudget import operations as ops
from llmbudget.budgets import Budget
from llmbudget.errors import StoreUnavailableError
from llmbudget.ledger import AsyncLedger
from llmbudget.stores.base import BudgetRecord, Line, Store
from tests import storekit
from tests.storekit import TcpProxy, with_query

NOW = 1_773_576_000.0
W = 1_773_532_800
LIMIT = [Line("user:o", W, 1_000)]
# Timeouts passed in the URLs below, and the slack allowed on top for scheduling.
PG_POOL_TIMEOUT = 1.0
REDIS_SOCKET_TIMEOUT = 2.0
SLACK = 1.5


def _via(url: str, port: int) -> str:
    """``url`` pointed at 127.0.0.1:``port`` (the proxy), credentials kept."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = (userinfo + "@" if userinfo else "") + f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _target(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


def _sync_operations(store: Store) -> list[tuple[str, Callable[[], object]]]:
    return [
        ("reserve", lambda: store.reserve("during", LIMIT, 1, NOW + 60, NOW)),
        ("settle", lambda: store.settle("before", 5, "m", NOW)),
        ("release", lambda: store.release("before", NOW)),
        ("charge", lambda: store.charge(LIMIT, 1, None, NOW)),
        ("usage", lambda: store.usage("user:o", W, NOW)),
        ("history", lambda: store.history("user:o")),
        ("purge", lambda: store.purge(NOW, 60)),
        ("put_budget", lambda: store.put_budget(BudgetRecord("user:o", 1, None))),
        ("get_budgets", lambda: store.get_budgets(["user:o"])),
        ("list_budgets", lambda: store.list_budgets("user:")),
    ]


def _assert_unavailable_fast(store: Store, bound: float) -> float:
    slowest = 0.0
    for name, operation in _sync_operations(store):
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            operation()
        elapsed = time.monotonic() - started
        assert elapsed < bound, f"{name} took {elapsed:.2f} s with the server down"
        slowest = max(slowest, elapsed)
    return slowest


def _seconds_until_it_works(operation: Callable[[], object], limit: float = 15.0) -> float:
    started = time.monotonic()
    while True:
        try:
            operation()
            return time.monotonic() - started
        except StoreUnavailableError:
            if time.monotonic() - started > limit:
                raise
            time.sleep(0.1)


def _check_state_after_outage(store: Store) -> None:
    # The reserve attempted while down did not happen; the store is whole and usable.
    usage = store.usage("user:o", W, NOW)
    assert (usage.spent, usage.held) == (0, 20)
    for name, operation in _sync_operations(store):
        if name == "release":
            assert operation() is False  # settled just before
        else:
            operation()
    assert store.usage("user:o", W, NOW).spent == 5 + 1  # the settle and the charge


@pytest.fixture
def pg_proxy() -> Iterator[TcpProxy]:
    import psycopg

    try:
        psycopg.connect(storekit.POSTGRES_URL, connect_timeout=3).close()
    except psycopg.Error as exc:
        storekit.unavailable("postgres", str(exc))
    proxy = TcpProxy(*_target(storekit.POSTGRES_URL, 5432))
    yield proxy
    proxy.close()


@pytest.fixture
def redis_proxy() -> Iterator[TcpProxy]:
    import redis

    try:
        redis.Redis.from_url(storekit.REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        storekit.unavailable("redis", str(exc))
    proxy = TcpProxy(*_target(storekit.REDIS_URL, 6379))
    yield proxy
    proxy.close()


def _pg_url(proxy: TcpProxy, tmp_path: Path) -> str:
    return with_query(
        _via(storekit.POSTGRES_URL, proxy.port),
        schema=storekit.isolation_name(tmp_path),
        pool_timeout=str(PG_POOL_TIMEOUT),
        connect_timeout="2",
        pool_max="4",
    )


def _redis_url(port: int, tmp_path: Path) -> str:
    return with_query(
        _via(storekit.REDIS_URL, port),
        prefix=storekit.isolation_name(tmp_path),
        socket_timeout=str(REDIS_SOCKET_TIMEOUT),
        socket_connect_timeout="1",
    )


def _outage_round(store: Store, proxy: TcpProxy, bound: float) -> tuple[float, float]:
    store.reserve("before", LIMIT, 10, NOW + 600, NOW)
    store.reserve("open", LIMIT, 10, NOW + 600, NOW)
    proxy.cut()
    slowest = _assert_unavailable_fast(store, bound)
    proxy.restore()
    recovery = _seconds_until_it_works(lambda: store.usage("user:o", W, NOW))
    _check_state_after_outage(store)
    return slowest, recovery


def test_postgres_outage_fails_fast_and_recovers(pg_proxy: TcpProxy, tmp_path: Path) -> None:
    from llmbudget.stores.postgres import PostgresStore

    store = PostgresStore(_pg_url(pg_proxy, tmp_path))
    try:
        slowest, recovery = _outage_round(store, pg_proxy, PG_POOL_TIMEOUT + SLACK)
        print(
            f"\npostgres: down -> error in <= {slowest:.2f} s; back -> working in {recovery:.2f} s"
        )
        assert recovery < 10
        # A second outage on the same object behaves the same.
        pg_proxy.cut()
        with pytest.raises(StoreUnavailableError):
            store.usage("user:o", W, NOW)
        pg_proxy.restore()
        _seconds_until_it_works(lambda: store.usage("user:o", W, NOW))
    finally:
        store.close()
        storekit.drop_postgres_schema(storekit.isolation_name(tmp_path))


def test_postgres_down_at_start_is_unavailable(pg_proxy: TcpProxy, tmp_path: Path) -> None:
    from llmbudget.stores.postgres import PostgresStore

    pg_proxy.cut()
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError):
        PostgresStore(_pg_url(pg_proxy, tmp_path))
    assert time.monotonic() - started < PG_POOL_TIMEOUT + SLACK


def test_redis_outage_fails_fast_and_recovers(redis_proxy: TcpProxy, tmp_path: Path) -> None:
    from llmbudget.stores.redis import RedisStore

    store = RedisStore(_redis_url(redis_proxy.port, tmp_path))
    try:
        slowest, recovery = _outage_round(store, redis_proxy, 1.0 + SLACK)
        print(f"\nredis: down -> error in <= {slowest:.2f} s; back -> working in {recovery:.2f} s")
        assert recovery < 5
    finally:
        store.close()
        storekit.delete_redis_prefix(storekit.isolation_name(tmp_path))


def test_redis_hung_server_times_out(redis_proxy: TcpProxy, tmp_path: Path) -> None:
    from llmbudget.stores.redis import RedisStore

    store = RedisStore(_redis_url(redis_proxy.port, tmp_path))
    try:
        store.charge(LIMIT, 1, None, NOW)
        redis_proxy.stall()
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            store.charge(LIMIT, 1, None, NOW)
        elapsed = time.monotonic() - started
        print(f"\nredis hung: error after {elapsed:.2f} s")
        assert REDIS_SOCKET_TIMEOUT - 0.1 < elapsed < REDIS_SOCKET_TIMEOUT + SLACK
        redis_proxy.restore()
        redis_proxy.cut()  # drop the stalled connection, as a restarted server would
        redis_proxy.restore()
        _seconds_until_it_works(lambda: store.usage("user:o", W, NOW))
        # The timed-out charge may or may not have run on the server: that is why the store
        # never retries by itself. Either way nothing else was applied.
        assert store.usage("user:o", W, NOW).spent in (1, 2)
    finally:
        store.close()
        storekit.delete_redis_prefix(storekit.isolation_name(tmp_path))


def test_redis_server_restart_same_store_recovers_and_reloads_scripts(tmp_path: Path) -> None:
    import subprocess

    from llmbudget.stores.redis import RedisStore

    with storekit.private_redis(tmp_path) as port:
        store = RedisStore(with_query(f"redis://127.0.0.1:{port}/0", socket_connect_timeout="1"))
        store.charge(LIMIT, 3, None, NOW)
        subprocess.run(
            ["redis-cli", "-p", str(port), "shutdown", "nosave"], check=False, capture_output=True
        )
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            store.usage("user:o", W, NOW)
        assert time.monotonic() - started < 1.0 + SLACK
    try:
        # The same port, a new process: no data (no persistence here) and no cached scripts.
        with storekit.private_redis(tmp_path, port=port):
            recovery = _seconds_until_it_works(lambda: store.charge(LIMIT, 4, None, NOW))
            print(f"\nredis restarted: same store working again after {recovery:.2f} s")
            assert store.usage("user:o", W, NOW).spent == 4  # NOSCRIPT -> EVAL worked
    finally:
        store.close()


# -- async stores ---------------------------------------------------------------------------


async def _async_outage(store: Any, proxy: TcpProxy, bound: float) -> tuple[float, float]:
    await store.reserve("before", LIMIT, 10, NOW + 600, NOW)
    proxy.cut()
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError):
        await store.usage("user:o", W, NOW)
    with pytest.raises(StoreUnavailableError):
        await store.reserve("during", LIMIT, 1, NOW + 60, NOW)
    slowest = time.monotonic() - started
    assert slowest < 2 * bound
    proxy.restore()
    started = time.monotonic()
    while True:
        try:
            usage = await store.usage("user:o", W, NOW)
            break
        except StoreUnavailableError:
            assert time.monotonic() - started < 15
            await _sleep(0.1)
    recovery = time.monotonic() - started
    assert (usage.spent, usage.held) == (0, 10)
    assert (await store.settle("before", 5, None, NOW)).actual == 5
    return slowest, recovery


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


async def test_async_postgres_outage(pg_proxy: TcpProxy, tmp_path: Path) -> None:
    from llmbudget.stores.postgres import AsyncPostgresStore

    store = AsyncPostgresStore(_pg_url(pg_proxy, tmp_path))
    try:
        slowest, recovery = await _async_outage(store, pg_proxy, PG_POOL_TIMEOUT + SLACK)
        print(f"\nasync postgres: 2 ops down in {slowest:.2f} s; back in {recovery:.2f} s")
    finally:
        await store.aclose()
        storekit.drop_postgres_schema(storekit.isolation_name(tmp_path))


async def test_async_redis_outage(redis_proxy: TcpProxy, tmp_path: Path) -> None:
    from llmbudget.stores.redis import AsyncRedisStore

    store = AsyncRedisStore(_redis_url(redis_proxy.port, tmp_path))
    try:
        slowest, recovery = await _async_outage(store, redis_proxy, 1.0 + SLACK)
        print(f"\nasync redis: 2 ops down in {slowest:.2f} s; back in {recovery:.2f} s")
    finally:
        await store.aclose()
        storekit.delete_redis_prefix(storekit.isolation_name(tmp_path))


# -- deadlines under asyncio: a hung server answers every call by the store's timeout --------

DEADLINE = 1.0
MARGIN = 0.5
ALICE = Budget.of("user:alice", 100)


async def _reserves_against_a_hung_store(ledger: AsyncLedger, calls: int) -> list[float]:
    """``calls`` concurrent reserves; how long each took to fail."""

    async def one() -> float:
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            await ledger.reserve([ALICE], "0.01")
        return time.monotonic() - started

    return list(await asyncio.gather(*(one() for _ in range(calls))))


async def _until_it_works(ledger: AsyncLedger, limit: float = 20.0) -> None:
    started = time.monotonic()
    while True:
        try:
            await ledger.reserve([ALICE], "0.01")
            return
        except StoreUnavailableError:
            assert time.monotonic() - started < limit, "the store did not come back"
            await asyncio.sleep(0.1)


@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_a_hung_redis_answers_every_call_by_its_deadline(
    redis_proxy: TcpProxy, tmp_path: Path, flavour: str
) -> None:
    from llmbudget.stores.redis import AsyncRedisStore, RedisStore

    url = with_query(_redis_url(redis_proxy.port, tmp_path), socket_timeout=str(DEADLINE))
    store: Any = RedisStore(url) if flavour == "sync" else AsyncRedisStore(url)
    ledger = AsyncLedger(store)
    try:
        await ledger.charge([ALICE], "0.01")
        redis_proxy.stall()
        # More calls than worker threads: none may wait behind another's timeout.
        took = await _reserves_against_a_hung_store(ledger, 24)
        print(f"\nredis hung ({flavour}): 24 calls failed in {min(took):.2f}-{max(took):.2f} s")
        assert max(took) < DEADLINE + MARGIN
        redis_proxy.restore()
        await _until_it_works(ledger)  # the same objects, no restart
    finally:
        redis_proxy.restore()
        await ops.Close(store).arun()
        storekit.delete_redis_prefix(storekit.isolation_name(tmp_path))


@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_a_hung_postgres_answers_every_call_by_its_deadline(
    pg_proxy: TcpProxy, tmp_path: Path, flavour: str
) -> None:
    from llmbudget.stores.postgres import AsyncPostgresStore, PostgresStore

    url = with_query(_pg_url(pg_proxy, tmp_path), timeout=str(DEADLINE))
    store: Any = PostgresStore(url) if flavour == "sync" else AsyncPostgresStore(url)
    ledger = AsyncLedger(store)
    try:
        await ledger.charge([ALICE], "0.01")
        pg_proxy.stall()
        took = await _reserves_against_a_hung_store(ledger, 8)
        print(f"\npostgres hung ({flavour}): 8 calls failed in {min(took):.2f}-{max(took):.2f} s")
        assert max(took) < DEADLINE + MARGIN
        pg_proxy.restore()
        await _until_it_works(ledger)
    finally:
        pg_proxy.restore()
        await ops.Close(store).arun()
        storekit.drop_postgres_schema(storekit.isolation_name(tmp_path))
