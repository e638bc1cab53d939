"""Rate limits: budgets in requests, tokens and concurrent slots, held in the same atomic
reserve as the dollars, on every store (the ``store`` fixture; the HTTP store runs these
again in ``test_hosted_manager.py``).

The clock starts at 2026-03-15 12:00:00 UTC, on a minute boundary: ``"1m"`` windows run
from 12:00:00 to 12:01:00.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from llmbudget.budgets import Budget
from llmbudget.clock import FrozenClock
from llmbudget.errors import BudgetExceededError, InvalidInputError
from llmbudget.ledger import AsyncLedger, Hold, Ledger
from llmbudget.metering import BillableCall, Meter, worst_case_tokens
from llmbudget.plans import run_sync
from llmbudget.pricing import ModelPrice
from llmbudget.reservations import ScopeGroup
from llmbudget.stores.base import Store

NEXT_MINUTE = datetime(2026, 3, 15, 12, 1, tzinfo=UTC)
ONE = {"requests": 1}
PRICE = ModelPrice("m", "x", Decimal(1), Decimal(2), context_window=100_000)
CALL = BillableCall("chat", "m", prompt_tokens=100)  # no cap of its own: 4,096 by default
WORST_TOKENS = 100 + 4096


def rpm(limit: int = 10) -> Budget:
    return Budget.of("rpm:key:k1", limit, "1m", unit="requests")


def contend(workers: int, attempt: object) -> list[object]:
    """Run ``attempt()`` in ``workers`` threads released at once; their results (or errors)."""
    assert callable(attempt)
    barrier = threading.Barrier(workers)
    results: list[object] = []
    lock = threading.Lock()

    def run() -> None:
        barrier.wait()
        try:
            result = attempt()
        except Exception as exc:
            result = exc
        with lock:
            results.append(result)

    threads = [threading.Thread(target=run) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


# -- requests per minute ---------------------------------------------------------------------


def test_64_concurrent_reserves_against_10_requests_a_minute_hold_exactly_10(
    store: Store, clock: FrozenClock
) -> None:
    ledger = Ledger(store, clock=clock)
    dollars, limit = Budget.of("key:k1", 100), rpm(10)
    results = contend(64, lambda: ledger.reserve([dollars, limit], "0.01", counts=ONE))
    holds = [r for r in results if isinstance(r, Hold)]
    refusals = [r for r in results if isinstance(r, BudgetExceededError)]
    assert (len(holds), len(refusals)) == (10, 54)
    for refusal in refusals:
        assert (refusal.scope, refusal.unit, refusal.limit, refusal.requested) == (
            "rpm:key:k1", "requests", Decimal(10), Decimal(1))  # fmt: skip
        assert refusal.resets_at == NEXT_MINUTE
    assert ledger.status(limit).held == 10 and ledger.status(dollars).held == Decimal("0.1")
    for hold in holds:
        ledger.settle(hold, "0.004", model="m")
    status = ledger.status(limit)
    assert (status.spent, status.held, status.remaining, status.unit) == (10, 0, 0, "requests")
    assert status.by_model == {"m": 10}
    assert ledger.status(dollars).spent == Decimal("0.04")


def test_a_minute_window_resets_at_its_calendar_boundary(store: Store, clock: FrozenClock) -> None:
    ledger = Ledger(store, clock=clock)
    limit = rpm(10)
    for _ in range(10):
        ledger.settle(ledger.reserve([limit], 0, counts=ONE), 0)
    clock.advance(59.999)
    with pytest.raises(BudgetExceededError) as refused:
        ledger.reserve([limit], 0, counts=ONE)
    assert refused.value.resets_at == NEXT_MINUTE
    assert (refused.value.spent, refused.value.remaining) == (10, 0)
    clock.set(NEXT_MINUTE)
    # Calendar windows: a full minute's worth is available again at once (a burst of up to
    # twice the limit across a boundary is the price of exact, keyed windows).
    for _ in range(10):
        ledger.settle(ledger.reserve([limit], 0, counts=ONE), 0)
    with pytest.raises(BudgetExceededError):
        ledger.reserve([limit], 0, counts=ONE)
    assert ledger.history(limit) == [(NEXT_MINUTE, 10), (datetime(2026, 3, 15, 12, tzinfo=UTC), 10)]


def test_released_requests_do_not_count_and_settled_ones_do(
    store: Store, clock: FrozenClock
) -> None:
    ledger = Ledger(store, clock=clock)
    limit = rpm(4)
    holds = [ledger.reserve([limit], 0, counts=ONE) for _ in range(4)]
    ledger.release(holds[0])
    ledger.release(holds[1])
    ledger.settle(holds[2], 0)
    assert (ledger.status(limit).spent, ledger.status(limit).held) == (1, 1)
    ledger.reserve([limit], 0, counts=ONE)
    ledger.reserve([limit], 0, counts=ONE)
    with pytest.raises(BudgetExceededError):
        ledger.reserve([limit], 0, counts=ONE)
    # A request released and then settled anyway (it was sent after all) counts.
    ledger.settle(holds[0], 0)
    assert ledger.status(limit).spent == 2


# -- tokens ------------------------------------------------------------------------------------


def test_a_tokens_budget_holds_a_count_and_settles_the_used_one(
    store: Store, clock: FrozenClock
) -> None:
    ledger = Ledger(store, clock=clock)
    tpm = Budget.of("tpm:key:k1", 1000, "1m", unit="tokens")
    hold = ledger.reserve([tpm], "0.5", counts={"tokens": 400})
    assert ledger.status(tpm).held == 400
    assert ledger.settle(hold, "0.2", counts={"tokens": 150}) == Decimal("0.2")
    assert (ledger.status(tpm).spent, ledger.status(tpm).held) == (150, 0)
    # Settled without a count, a hold records what it reserved (the worst case).
    ledger.settle(ledger.reserve([tpm], 0, counts={"tokens": 300}), 0)
    assert ledger.status(tpm).spent == 450
    with pytest.raises(BudgetExceededError) as refused:
        ledger.reserve([tpm], 0, counts={"tokens": 551})
    assert (refused.value.unit, refused.value.remaining, refused.value.requested) == (
        "tokens", Decimal(550), Decimal(551))  # fmt: skip
    assert "rate limit exceeded for tpm:key:k1: limit 1000 tokens" in str(refused.value)


def test_a_tokens_budget_covering_5_worst_cases_settles_at_most_its_limit(
    store: Store, clock: FrozenClock
) -> None:
    ledger = Ledger(store, clock=clock)
    limit = 5 * WORST_TOKENS + 20
    tpm = Budget.of("tpm:key:k1", limit, "1m", unit="tokens")
    group = ScopeGroup(ledger.plans, (Budget.of("key:k1", 10), tpm))
    settled: list[int] = []
    lock = threading.Lock()

    def call(seed: int) -> object:
        meter = Meter(CALL, PRICE, [group])
        run_sync(meter.plan_open())
        assert meter.cap is not None and meter.reserved_tokens == 100 + meter.cap
        # The upstream honours the forwarded cap: it generates up to that many tokens.
        output = random.Random(seed).randint(0, meter.cap)
        usage = {"prompt_tokens": 100, "completion_tokens": output}
        run_sync(meter.plan_close(usage))
        with lock:
            settled.append(100 + output)
        return meter.cap

    seeds = iter(range(64))
    results = contend(64, lambda: call(next(seeds)))
    caps = [r for r in results if isinstance(r, int)]
    assert all(isinstance(r, int | BudgetExceededError) for r in results), results
    assert len(caps) >= 5 and all(1 <= cap <= 4096 for cap in caps)
    status = ledger.status(tpm)
    assert status.held == 0
    assert status.spent == sum(settled) <= limit


def test_a_tokens_refusal_lowers_the_cap_to_the_tokens_left(
    store: Store, clock: FrozenClock
) -> None:
    ledger = Ledger(store, clock=clock)
    tpm = Budget.of("tpm:key:k1", 5 * WORST_TOKENS + 1020, "1m", unit="tokens")
    group = ScopeGroup(ledger.plans, (tpm,))
    for _ in range(5):
        full = Meter(CALL, PRICE, [group])
        run_sync(full.plan_open())
        assert full.cap == 4096
    lowered = Meter(CALL, PRICE, [group])
    run_sync(lowered.plan_open())
    assert (lowered.cap, lowered.reserved_tokens) == (920, 1020)
    assert ledger.status(tpm).remaining == 0
    with pytest.raises(BudgetExceededError) as refused:
        run_sync(Meter(CALL, PRICE, [group]).plan_open())
    assert refused.value.unit == "tokens"
    # The caller's own cap is never lowered: reserved as asked, or refused.
    run_sync(lowered.plan_release())
    explicit = BillableCall("chat", "m", prompt_tokens=100, requested_cap=1000)
    with pytest.raises(BudgetExceededError):
        run_sync(Meter(explicit, PRICE, [group]).plan_open())


def test_the_meter_counts_a_request_its_tokens_and_a_slot(store: Store, clock: FrozenClock) -> None:
    ledger = Ledger(store, clock=clock)
    budgets = (
        Budget.of("key:k1", 10),
        rpm(10),
        Budget.of("tpm:key:k1", 100_000, "1m", unit="tokens"),
        Budget.of("par:key:k1", 3, unit="concurrent"),
    )
    group = ScopeGroup(ledger.plans, budgets)

    def state() -> list[tuple[Decimal, Decimal]]:
        return [(s.spent, s.held) for s in map(ledger.status, budgets[1:])]

    meter = Meter(CALL, PRICE, [group])
    run_sync(meter.plan_open())
    assert meter.cap == 4096 and meter.hold is not None
    assert meter.hold.counts == {"requests": 1, "tokens": WORST_TOKENS, "concurrent": 1}
    assert state() == [(0, 1), (0, WORST_TOKENS), (0, 1)]
    run_sync(meter.plan_close({"prompt_tokens": 100, "completion_tokens": 42}))
    assert state() == [(1, 0), (142, 0), (0, 0)]

    counted = Meter(CALL, PRICE, [group])
    run_sync(counted.plan_open())
    run_sync(counted.plan_close(None, text="Hello there", finished=True))
    assert counted.tokens is not None
    assert state()[1] == (142 + 100 + counted.tokens.output_tokens, 0)

    cut = Meter(CALL, PRICE, [group])
    run_sync(cut.plan_open())
    run_sync(cut.plan_close(None))  # no usage, no finish: the whole reservation
    assert state()[1][0] == 142 + 100 + counted.tokens.output_tokens + WORST_TOKENS

    failed = Meter(CALL, PRICE, [group])
    run_sync(failed.plan_open())
    run_sync(failed.plan_release())
    assert state()[0] == (3, 0) and state()[2] == (0, 0)


def test_a_tokens_limit_bounds_the_output_even_when_it_is_free(
    store: Store, clock: FrozenClock
) -> None:
    ledger = Ledger(store, clock=clock)
    group = ScopeGroup(ledger.plans, (Budget.of("tpm:local", 1000, "1m", unit="tokens"),))
    meter = Meter(CALL, None, [group], free=True)
    run_sync(meter.plan_open())
    assert (meter.cap, meter.reserved_tokens) == (900, 1000)
    assert worst_case_tokens(None, CALL, 900) == 1000


def test_requests_and_slots_refusals_are_not_squeezed(store: Store, clock: FrozenClock) -> None:
    ledger = Ledger(store, clock=clock)
    for budget in (rpm(1), Budget.of("par:key:k1", 1, unit="concurrent")):
        group = ScopeGroup(ledger.plans, (Budget.of("key:k1", 10), budget))
        first = Meter(CALL, PRICE, [group])
        run_sync(first.plan_open())
        with pytest.raises(BudgetExceededError) as refused:
            run_sync(Meter(CALL, PRICE, [group]).plan_open())
        assert (refused.value.scope, refused.value.unit) == (budget.scope, budget.unit)
        run_sync(first.plan_release())


# -- concurrent slots ----------------------------------------------------------------------------


def test_slow_calls_never_hold_more_than_3_slots(store: Store, clock: FrozenClock) -> None:
    ledger = Ledger(store, clock=clock)
    slots = Budget.of("par:key:k1", 3, unit="concurrent")
    freed = threading.Condition()
    in_flight, most, done = 0, 0, 0
    calls_each, workers = 5, 8

    def worker(n: int) -> None:
        nonlocal in_flight, most, done
        deadline = time.monotonic() + 60
        for i in range(calls_each):
            while True:
                try:
                    hold = ledger.reserve([slots], 0, counts={"concurrent": 1})
                    break
                except BudgetExceededError:
                    assert time.monotonic() < deadline, "no slot was ever freed"
                    with freed:
                        freed.wait(0.05)
            with freed:
                in_flight += 1
                most = max(most, in_flight)
            time.sleep(0.002)  # a slow call holds its slot while the others contend
            with freed:
                in_flight -= 1
            if (n + i) % 2:
                ledger.settle(hold, "0.01", model="m")
            else:
                ledger.release(hold)
            with freed:
                done += 1
                freed.notify_all()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert done == calls_each * workers
    assert 1 <= most <= 3
    status = ledger.status(slots)
    assert (status.spent, status.held) == (0, 0)


def test_slots_are_freed_at_settle_release_and_expiry(store: Store, clock: FrozenClock) -> None:
    ledger = Ledger(store, clock=clock, hold_ttl=30)
    slots = Budget.of("par:key:k1", 3, unit="concurrent")
    slot = {"concurrent": 1}
    holds = [ledger.reserve([slots], 0, counts=slot) for _ in range(3)]
    with pytest.raises(BudgetExceededError) as refused:
        ledger.reserve([slots], 0, counts=slot)
    assert (refused.value.unit, refused.value.held, refused.value.resets_at) == (
        "concurrent", Decimal(3), None)  # fmt: skip
    ledger.settle(holds[0], "0.5", counts={"concurrent": 1})  # a slot is never spent
    holds.append(ledger.reserve([slots], 0, counts=slot))
    ledger.release(holds[1])
    holds.append(ledger.reserve([slots], 0, counts=slot))
    with pytest.raises(BudgetExceededError):
        ledger.reserve([slots], 0, counts=slot)
    clock.advance(30)  # the process holding them died: its holds expire
    late = [ledger.reserve([slots], 0, counts=slot) for _ in range(3)]
    ledger.settle(holds[2], "0.1")  # a late settle of an expired slot spends none
    status = ledger.status(slots)
    assert (status.spent, status.held, status.remaining) == (0, 3, 0)
    for hold in late:
        ledger.release(hold)
    assert ledger.status(slots).held == 0


async def test_asyncio_tasks_share_3_slots(store: Store, clock: FrozenClock) -> None:
    ledger = AsyncLedger(store, clock=clock)
    slots = Budget.of("par:key:k1", 3, unit="concurrent")
    slot = {"concurrent": 1}
    tried = await asyncio.gather(
        *(ledger.reserve([slots], "0.01", counts=slot) for _ in range(10)), return_exceptions=True
    )
    holds = [h for h in tried if isinstance(h, Hold)]
    assert len(holds) == 3
    assert all(isinstance(r, BudgetExceededError) for r in tried if not isinstance(r, Hold))
    await ledger.settle(holds[0], "0.01", model="m")
    await ledger.release(holds[1])
    again = await asyncio.gather(
        *(ledger.reserve([slots], "0.01", counts=slot) for _ in range(5)), return_exceptions=True
    )
    assert sum(isinstance(h, Hold) for h in again) == 2
    status = await ledger.status(slots)
    assert (status.spent, status.held) == (0, 3)


# -- mixed units, validation -------------------------------------------------------------------------


def test_dollars_requests_and_tokens_in_one_reserve_are_all_or_none(
    store: Store, clock: FrozenClock
) -> None:
    ledger = Ledger(store, clock=clock)
    dollars = Budget.of("user:u", "1.00", "daily")
    requests = rpm(100)
    tokens = Budget.of("tpm:key:k1", 1000, "1m", unit="tokens")
    budgets = [dollars, requests, tokens]

    def held() -> list[Decimal]:
        return [ledger.status(b).held for b in budgets]

    first = ledger.reserve(budgets, "0.10", counts={"requests": 1, "tokens": 600})
    assert held() == [Decimal("0.1"), 1, 600]
    with pytest.raises(BudgetExceededError) as by_tokens:
        ledger.reserve(budgets, "0.10", counts={"requests": 1, "tokens": 401})
    assert (by_tokens.value.scope, by_tokens.value.remaining) == (tokens.scope, 400)
    with pytest.raises(BudgetExceededError) as by_dollars:
        ledger.reserve(budgets, "0.91", counts={"requests": 1, "tokens": 1})
    assert (by_dollars.value.scope, by_dollars.value.unit) == (dollars.scope, "usd")
    assert "budget exceeded for user:u: limit $1, spent $0, held $0.1" in str(by_dollars.value)
    assert held() == [Decimal("0.1"), 1, 600]
    ledger.settle(first, "0.07", model="m", counts={"tokens": 550})
    assert [ledger.status(b).spent for b in budgets] == [Decimal("0.07"), 1, 550]
    assert ledger.status(tokens).by_model == {"m": 550}


def test_a_call_must_say_what_it_takes_of_each_limited_unit(
    store: Store, clock: FrozenClock
) -> None:
    ledger = Ledger(store, clock=clock)
    dollars, tokens = Budget.of("user:u", 1), Budget.of("tpm", 10, "1m", unit="tokens")
    with pytest.raises(InvalidInputError, match="tokens"):
        ledger.reserve([dollars, tokens], "0.1", counts=ONE)
    for bad in ({"tokens": -1}, {"tokens": 1.5}, {"tokens": True}, {"usd": 1}, {"euros": 1}):
        with pytest.raises(InvalidInputError):
            ledger.reserve([dollars, tokens], "0.1", counts=bad)  # type: ignore[dict-item]
    assert ledger.status(dollars).held == 0 and ledger.status(tokens).held == 0
    hold = ledger.reserve([dollars, tokens], "0.1", counts={"tokens": 5})
    with pytest.raises(InvalidInputError):  # only the Hold knows each scope's unit
        ledger.settle(hold.id, "0.1", counts={"tokens": 3})
    with pytest.raises(InvalidInputError):
        ledger.settle(hold, "0.1", counts={"tokens": -3})
    assert ledger.settle(hold, "0.1", counts={"tokens": 3}) == Decimal("0.1")
    assert (ledger.status(dollars).spent, ledger.status(tokens).spent) == (Decimal("0.1"), 3)


def test_budgets_in_counts_are_defined_shown_and_kept_apart(
    store: Store, clock: FrozenClock
) -> None:
    ledger = Ledger(store, clock=clock)
    limit = ledger.define(rpm(10))
    assert ledger.get([limit.scope]) == [limit]
    assert ledger.budgets("rpm:") == [limit]
    ledger.settle(ledger.reserve([limit], 0, counts={"requests": 3}), 0)
    shown = ledger.status(limit).to_dict()
    assert (shown["unit"], shown["limit"], shown["spent"], shown["remaining"]) == (
        "requests", "10", "3", "7")  # fmt: skip
    # A scope counts in one unit: dollars on it would be read as requests.
    with pytest.raises(InvalidInputError, match="scope of its own"):
        ledger.define(Budget.of(limit.scope, 10, "1m"))
    with pytest.raises(InvalidInputError, match="charge records dollars"):
        ledger.charge([limit], "0.5")
    assert ledger.status(limit).spent == 3


@pytest.mark.parametrize(
    ("limit", "unit"),
    [
        (1, "euros"),
        ("1.5", "requests"),
        (Decimal("0.1"), "tokens"),
        (2**63, "requests"),
        (-1, "concurrent"),
    ],
)
def test_bad_units_and_counts_are_refused(limit: object, unit: str) -> None:
    with pytest.raises(InvalidInputError):
        Budget.of("rpm:x", limit, "1m", unit=unit)  # type: ignore[arg-type]


def test_a_budget_built_directly_is_checked_too() -> None:
    with pytest.raises(InvalidInputError):
        Budget("rpm:x", Decimal("2.5"), unit="requests")
    with pytest.raises(InvalidInputError):
        Budget("rpm:x", Decimal(2), unit="calls")  # type: ignore[arg-type]
    assert Budget.of("usd:x", "2.5").unit == "usd"


@pytest.mark.parametrize(
    "name",
    [
        "llmbudget.units",
        "llmbudget.budgets",
        "llmbudget.ledger",
        "llmbudget.errors",
        "llmbudget.reservations",
        "llmbudget.stores.base",
        "llmbudget.metering.policy",
        "llmbudget.metering.usage",
    ],
)
def test_docstring_examples(name: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0
