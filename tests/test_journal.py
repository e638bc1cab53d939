"""No settle is lost: a settle or charge the store cannot take is kept in the journal,
counted by reserves while it waits, and replayed until it lands, exactly once."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from llmbudget.budgets import Budget
from llmbudget.clock import FrozenClock
from llmbudget.errors import BudgetExceededError, StoreUnavailableError
from llmbudget.journal import Journal, Pending, default_journal, store_identity
from llmbudget.ledger import AsyncLedger, Ledger
from llmbudget.money import to_units
from llmbudget.plans import run_sync
from llmbudget.replay import Replayer, plan_replay
from llmbudget.reservations import ScopeGroup, plan_reserve, plan_settle
from llmbudget.stores.memory import MemoryStore

ALICE = Budget.of("user:alice", 1)


class Outage(MemoryStore):
    """A memory store whose writes fail while ``down``; ``commit_then_fail`` makes a
    failing charge commit first (an ambiguous failure: the answer was lost)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.commit_then_fail = False
        self.calls = 0

    def _gate(self) -> None:
        self.calls += 1
        if self.down:
            raise StoreUnavailableError("the store is down (test)")

    def settle(self, *args: Any, **kwargs: Any) -> Any:
        self._gate()
        return super().settle(*args, **kwargs)

    def charge(self, *args: Any, **kwargs: Any) -> Any:
        if self.down and self.commit_then_fail:
            super().charge(*args, **kwargs)
        self._gate()
        return super().charge(*args, **kwargs)

    def reserve(self, *args: Any, **kwargs: Any) -> Any:
        self._gate()
        return super().reserve(*args, **kwargs)


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    return Journal(tmp_path / "journal.db")


@pytest.fixture(autouse=True)
def _no_inline_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    # The tests drive the outage by hand: no pauses inside the failing call.
    monkeypatch.setattr("llmbudget.replay.SETTLE_RETRY_DELAYS", ())


def test_an_entry_survives_a_new_journal_object_on_the_same_file(tmp_path: Path) -> None:
    entry = Pending("redis://h:6379/0#app", "settle", "h1", 40, held=60, expires_at=100.0,
                    lines=(("user:a", 7),), model="gpt-4o", at=50.0,
                    log=("gateway", 50.0, {"id": "req_1"}))  # fmt: skip
    Journal(tmp_path / "j.db").keep(entry)
    reopened = Journal(tmp_path / "j.db")  # another process, or this one after a restart
    reopened.load()
    assert reopened.entries() == [entry]
    assert reopened.count() == 1


def test_the_file_is_created_only_by_the_first_entry(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.db")
    journal.load()
    assert journal.count() == 0
    assert not (tmp_path / "j.db").exists()
    journal.keep(Pending("s", "charge", "c1", 5))
    assert (tmp_path / "j.db").stat().st_mode & 0o777 == 0o600


def test_what_a_reserve_counts_for_a_kept_settle() -> None:
    settle = Pending("s", "settle", "h", amount=70, held=50, expires_at=100.0, lines=(("u", 1),))
    # While the hold lives the store counts its 50: only the 20 beyond it are added.
    assert settle.weight(99.0) == 20
    # Once it expired the store counts nothing of it: all 70.
    assert settle.weight(100.0) == 70
    cheaper = Pending("s", "settle", "h", amount=30, held=50, expires_at=100.0)
    assert cheaper.weight(10.0) == 0  # never less than the store counts
    assert Pending("s", "charge", "c", amount=9).weight(0.0) == 9


def test_a_kept_settle_still_counts_after_its_hold_expired(journal: Journal) -> None:
    clock = FrozenClock(1_773_576_000.0)
    store = Outage()
    ledger = Ledger(store, clock=clock, journal=journal)
    hold = ledger.reserve([ALICE], "0.6", ttl=10)
    store.down = True
    assert ledger.settle(hold, "0.6") == Decimal("0.6")  # kept, not raised
    assert [e.ref for e in journal.entries()] == [hold.id]
    store.down = False
    clock.advance(11)  # the hold expired: the store alone no longer counts it
    usage = store.usage("user:alice", hold.windows[0], clock())
    assert (usage.spent, usage.held) == (0, 0)  # so by the store alone, $0.60 more would fit
    with pytest.raises(BudgetExceededError) as refused:
        ledger.reserve([ALICE], "0.6")
    assert refused.value.held == Decimal("0.6")  # the kept settle, reported as held
    # The store answered, so the kept settle was replayed: now the store knows it too.
    assert journal.entries() == []
    assert ledger.status(ALICE).spent == Decimal("0.6")


def test_the_next_operation_that_succeeds_replays_it_exactly_once(journal: Journal) -> None:
    store = Outage()
    ledger = Ledger(store, journal=journal)
    hold = ledger.reserve([ALICE], "0.5")
    store.down = True
    ledger.settle(hold, "0.25", model="m")
    ledger.charge([ALICE], "0.125", model="m")
    kept = journal.entries()
    assert [e.kind for e in kept] == ["settle", "charge"]
    store.down = False
    assert ledger.status(ALICE).spent == 0  # read before the replay it triggers
    assert journal.entries() == []
    assert ledger.status(ALICE).spent == Decimal("0.375")
    # The same entries replayed again (another process had them too) change nothing.
    for entry in kept:
        journal.keep(entry)
    assert run_sync(plan_replay(store, journal)) == 2
    assert ledger.status(ALICE).spent == Decimal("0.375")


def test_an_ambiguous_charge_is_recorded_once(journal: Journal) -> None:
    store = Outage()
    ledger = Ledger(store, journal=journal)
    store.down = store.commit_then_fail = True  # committed, then the answer was lost
    ledger.charge([ALICE], "0.2")
    store.down = False
    ledger.charge([ALICE], "0.1")  # succeeds, replays the kept one under its own id
    assert journal.entries() == []
    assert ledger.status(ALICE).spent == Decimal("0.3")


def test_a_settle_whose_hold_was_purged_lands_as_a_charge(journal: Journal) -> None:
    clock = FrozenClock(1_773_576_000.0)
    store = Outage()
    ledger = Ledger(store, clock=clock, journal=journal, retention=60)
    hold = ledger.reserve([ALICE], "0.5", ttl=10)
    store.down = True
    ledger.settle(hold, "0.4")
    store.down = False
    clock.advance(100)
    assert store.purge(clock(), 60) == 1  # the hold is forgotten: settling it is refused
    [entry] = journal.entries()
    assert run_sync(plan_replay(store, journal)) == 1
    journal.keep(entry)
    assert run_sync(plan_replay(store, journal)) == 1  # replayed again: charged once
    assert store.usage("user:alice", hold.windows[0], clock()).spent == to_units("0.4")


def test_an_unwritable_journal_raises_the_store_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    journal = Journal(tmp_path / "a-file" / "journal.db")
    store = Outage()
    ledger = Ledger(store, journal=journal)
    hold = ledger.reserve([ALICE], "0.5")
    store.down = True
    with pytest.raises(StoreUnavailableError):
        ledger.settle(hold, "0.1")


def test_a_failed_replay_backs_off(journal: Journal) -> None:
    now = [0.0]
    journal = Journal(journal.path, monotonic=lambda: now[0])
    store = Outage()
    ledger = Ledger(store, journal=journal)
    hold = ledger.reserve([ALICE], "0.5")
    store.down = True
    ledger.settle(hold, "0.1")
    journal.keep(Pending(store_identity(store), "charge", "c-x", 5, lines=(("user:bob", 0),)))
    calls = store.calls
    assert journal.claim(store_identity(store))
    journal.finished(store_identity(store), failed=True)
    assert not journal.claim(store_identity(store))  # not due yet
    assert store.calls == calls
    now[0] += 10
    assert journal.claim(store_identity(store))


def test_multi_store_settle_keeps_only_the_failing_part(journal: Journal) -> None:
    up, down = MemoryStore(), Outage()
    a, b = Ledger(up, journal=journal), Ledger(down, journal=journal)
    groups = [ScopeGroup(a.plans, (ALICE,)), ScopeGroup(b.plans, (Budget.of("team:t", 5),))]
    hold = run_sync(plan_reserve(groups, "0.5"))
    down.down = True
    assert run_sync(plan_settle(hold, "0.3", "m")) == Decimal("0.3")
    assert [e.store for e in journal.entries()] == [store_identity(down)]
    assert a.status(ALICE).spent == Decimal("0.3")
    down.down = False
    assert b.status(Budget.of("team:t", 5)).spent == 0  # the read that triggers the replay
    assert b.status(Budget.of("team:t", 5)).spent == Decimal("0.3")


async def test_the_replayer_flushes_at_start_and_in_the_background(journal: Journal) -> None:
    store = Outage()
    ledger = AsyncLedger(store, journal=journal)
    hold = await ledger.reserve([ALICE], "0.5")
    store.down = True
    await ledger.settle(hold, "0.2")
    # A restart: a fresh journal object on the same file, as a new process would have.
    restarted = Journal(journal.path)
    store.down = False
    replayer = Replayer(store, restarted)
    await replayer.start()
    try:
        deadline = time.monotonic() + 10
        while restarted.entries():
            assert time.monotonic() < deadline, "the replayer did not land the entry"
            await asyncio.sleep(0.01)
        assert store.usage("user:alice", hold.windows[0], 0).spent == to_units("0.2")
        # Kept while it runs: replayed without any request asking.
        h2 = await AsyncLedger(store, journal=restarted).reserve([ALICE], "0.1")
        store.down = True
        await AsyncLedger(store, journal=restarted).settle(h2, "0.1")
        store.down = False
        while restarted.entries():
            assert time.monotonic() < deadline, "the replayer did not land the second entry"
            await asyncio.sleep(0.01)
    finally:
        await replayer.aclose()
    assert (await AsyncLedger(store, journal=restarted).status(ALICE)).spent == Decimal("0.3")


def test_the_default_journal_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMBUDGET_JOURNAL", str(tmp_path / "here.db"))
    assert default_journal().path == str(tmp_path / "here.db")
    assert default_journal() is default_journal()


def test_store_identities_name_the_data_not_the_password(tmp_path: Path) -> None:
    from llmbudget.stores.sqlite import SQLiteStore

    (tmp_path / "sub").mkdir()
    one = SQLiteStore(str(tmp_path / "sub" / ".." / "ledger.db"))
    assert store_identity(one) == store_identity(SQLiteStore(str(tmp_path / "ledger.db")))
    assert store_identity(one).startswith("sqlite://")
    assert store_identity(MemoryStore()) != store_identity(MemoryStore())


def test_redis_and_postgres_identities_drop_credentials_and_options() -> None:
    from llmbudget.stores.postgres import _Config as PgConfig

    pg = PgConfig.parse("postgresql://u:secret@db.example:5433/app?schema=s&pool_max=3")
    assert pg.identity == "postgresql://db.example:5433/app#s"
    from llmbudget.stores.http import HttpStore

    http = HttpStore("http://u:secret@budget.example:8000/", api_key="k")
    assert http.identity == "http://budget.example:8000"
    from llmbudget.stores.redis import RedisStore

    redis = RedisStore("redis://:secret@cache.example:6380/2?prefix=app&socket_timeout=1")
    assert redis.identity == "redis://cache.example:6380/2#app"
    assert redis.timeout == 1.0
    redis.close()
