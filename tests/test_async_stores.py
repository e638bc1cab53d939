"""AsyncLedger over every store: AsyncPostgresStore and AsyncRedisStore natively, the memory
and SQLite stores through a worker thread. The core semantics, then 200 concurrent tasks."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from llmbudget.budgets import Budget
from llmbudget.clock import FrozenClock
from llmbudget.errors import BudgetExceededError, UnknownHoldError
from llmbudget.ledger import AsyncLedger
from llmbudget.stores.base import Line
from tests import storekit

BACKENDS = ["memory", "sqlite", "postgres", "redis"]


@pytest.fixture(params=BACKENDS)
async def async_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    backend = request.param
    if backend in ("memory", "sqlite"):
        with storekit.FACTORIES[backend](tmp_path) as store:
            yield store
        return
    if backend == "postgres":
        from llmbudget.errors import StoreUnavailableError
        from llmbudget.stores.postgres import AsyncPostgresStore

        pg = AsyncPostgresStore(storekit.postgres_url(tmp_path))
        try:
            await pg.open()
        except StoreUnavailableError as exc:
            await pg.aclose()
            storekit.unavailable("postgres", str(exc))
        try:
            yield pg
        finally:
            await pg.aclose()
            storekit.drop_postgres_schema(storekit.isolation_name(tmp_path))
        return
    with storekit.redis_store(tmp_path):  # skips when Redis is down; deletes the keys after
        from llmbudget.stores.redis import AsyncRedisStore

        rs = AsyncRedisStore(storekit.redis_url(tmp_path))
        try:
            yield rs
        finally:
            await rs.aclose()


USER = Budget.of("user:a", "1.00", "daily")
TEAM = Budget.of("team:a", "5", "monthly")


async def test_hold_settle_status(async_store: Any, clock: FrozenClock) -> None:
    ledger = AsyncLedger(async_store, clock=clock)
    hold = await ledger.reserve([USER, TEAM], "0.30")
    assert (await ledger.status(USER)).held == Decimal("0.3")
    assert await ledger.settle(hold, "0.1234", model="gpt-4o") == Decimal("0.1234")
    status = await ledger.status(TEAM)
    assert (status.spent, status.held) == (Decimal("0.1234"), 0)
    assert status.by_model == {"gpt-4o": Decimal("0.1234")}


async def test_refusal_is_all_or_nothing_and_names_the_budget(
    async_store: Any, clock: FrozenClock
) -> None:
    ledger = AsyncLedger(async_store, clock=clock)
    await ledger.charge([TEAM], "4.95")
    with pytest.raises(BudgetExceededError) as refused:
        await ledger.reserve([USER, TEAM], "0.10")
    assert (refused.value.scope, refused.value.spent) == ("team:a", Decimal("4.95"))
    assert refused.value.resets_at == datetime(2026, 4, 1, tzinfo=UTC)
    assert (await ledger.status(USER)).held == 0


async def test_expiry_late_settle_and_release(async_store: Any, clock: FrozenClock) -> None:
    ledger = AsyncLedger(async_store, clock=clock, hold_ttl=30)
    stuck = await ledger.reserve([USER], "0.95")
    with pytest.raises(BudgetExceededError):
        await ledger.reserve([USER], "0.10")
    clock.advance(30)
    fresh = await ledger.reserve([USER], "0.10")
    assert await ledger.settle(stuck, "0.95") == Decimal("0.95")
    assert await ledger.release(fresh) is True
    assert await ledger.release(fresh) is False
    assert await ledger.settle(fresh, "0.01") == Decimal("0.01")  # released, still recorded
    status = await ledger.status(USER)
    assert (status.spent, status.held) == (Decimal("0.96"), 0)


async def test_idempotency_and_unknown_holds(async_store: Any, clock: FrozenClock) -> None:
    ledger = AsyncLedger(async_store, clock=clock)
    hold = await ledger.reserve([USER], "0.6", hold_id="h-1")
    assert await ledger.reserve([USER], "0.6", hold_id="h-1") == hold
    assert await ledger.settle(hold, "0.5") == Decimal("0.5")
    assert await ledger.settle(hold, "0.9") == Decimal("0.5")
    assert (await ledger.status(USER)).spent == Decimal("0.5")
    with pytest.raises(UnknownHoldError):
        await ledger.settle("never", "0.1")
    with pytest.raises(UnknownHoldError):
        await ledger.release("never")


async def test_reset_history_purge_and_definitions(async_store: Any, clock: FrozenClock) -> None:
    ledger = AsyncLedger(async_store, clock=clock, hold_ttl=10, retention=60)
    await ledger.charge([USER], "0.25", model="m")
    clock.advance(86_400)
    await ledger.charge([USER], "0.5")
    assert await ledger.history(USER) == [
        (datetime(2026, 3, 16, tzinfo=UTC), Decimal("0.5")),
        (datetime(2026, 3, 15, tzinfo=UTC), Decimal("0.25")),
    ]
    await ledger.reset(USER)
    assert (await ledger.status(USER)).spent == 0
    hold = await ledger.reserve([USER], "0.1")
    clock.advance(70)
    assert await ledger.purge() == 1
    with pytest.raises(UnknownHoldError):
        await ledger.settle(hold, "0.1")
    await ledger.define(USER)
    await ledger.define(TEAM)
    assert await ledger.get(["team:a", "nope"]) == [TEAM, None]
    assert [b.scope for b in await ledger.budgets("user:")] == ["user:a"]
    assert await ledger.delete("user:a") is True
    assert await ledger.delete("user:a") is False


async def test_200_concurrent_tasks_never_overspend(async_store: Any) -> None:
    ledger = AsyncLedger(async_store)
    budget = Budget.of("user:race", "5")
    rng = random.Random(7)
    actuals = [Decimal(rng.randint(0, 50_000_000)) / 1_000_000_000 for _ in range(200)]

    reserved = 0
    all_reserved = asyncio.Event()

    async def one(n: int) -> Decimal | None:
        nonlocal reserved
        try:
            hold = await ledger.reserve([budget], "0.05")
        except BudgetExceededError:
            hold = None
        reserved += 1
        if reserved == 200:
            all_reserved.set()
        await all_reserved.wait()
        if hold is None:
            return None
        return await ledger.settle(hold, actuals[n], model="m")

    # All 200 reserve before any settles (the gate), so exactly $5 / $0.05 of them win:
    # a settle below its hold would free budget for a later reserve.
    results = await asyncio.gather(*(one(n) for n in range(200)))
    won = [r for r in results if r is not None]
    assert len(won) == 100
    status = await ledger.status(budget)
    assert status.spent == sum(won, Decimal(0))
    assert status.held == 0
    assert status.spent <= Decimal("5")


async def test_async_and_sync_forms_share_state(tmp_path: Path) -> None:
    # Same SQL / scripts and keys: what one form writes the other reads.
    with storekit.postgres_store(tmp_path) as pg:
        from llmbudget.stores.postgres import AsyncPostgresStore

        async with AsyncPostgresStore(pg.url) as apg:  # type: ignore[attr-defined]
            assert await apg.reserve("h", [Line("s", 1, 10)], 7, 100.0, 1.0) is None
            assert pg.reserve("h2", [Line("s", 1, 10)], 4, 100.0, 1.0) is not None
            pg.settle("h", 5, "m", 2.0)
            assert (await apg.usage("s", 1, 2.0)).by_model == {"m": 5}
    with storekit.redis_store(tmp_path / "r") as rs:
        from llmbudget.stores.redis import AsyncRedisStore

        async with AsyncRedisStore(rs.url) as ars:  # type: ignore[attr-defined]
            assert await ars.reserve("h", [Line("s", 1, 10)], 7, 100.0, 1.0) is None
            assert rs.reserve("h2", [Line("s", 1, 10)], 4, 100.0, 1.0) is not None
            rs.settle("h", 5, "m", 2.0)
            assert (await ars.usage("s", 1, 2.0)).by_model == {"m": 5}


async def test_async_documents_and_logs(tmp_path: Path) -> None:
    from llmbudget.stores.postgres import AsyncPostgresStore
    from llmbudget.stores.redis import AsyncRedisStore

    with storekit.postgres_store(tmp_path) as pg, storekit.redis_store(tmp_path / "r") as rs:
        for store in (AsyncPostgresStore(pg.url), AsyncRedisStore(rs.url)):  # type: ignore[attr-defined]
            try:
                assert await store.create_doc("alert", "k:1%", {"n": 1}) is True
                assert await store.create_doc("alert", "k:1%", {"n": 2}) is False
                await store.put_doc("alert", "k:2", {"n": 3})
                assert await store.get_doc("alert", "k:1%") == {"n": 1}
                assert [k for k, _ in await store.list_docs("alert", "k:")] == ["k:1%", "k:2"]
                assert await store.delete_doc("alert", "k:2") is True
                for i in range(5):
                    await store.append_log("spend", 10.0 + i, {"i": i})
                entries = await store.read_log("spend", since=11.0, until=14.0)
                assert [e.data["i"] for e in entries] == [3, 2, 1]
            finally:
                await store.aclose()
