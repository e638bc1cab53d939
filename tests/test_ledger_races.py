"""Check-then-deduct races are the field's best-known bug: prove there is none here.

16 threads, and 4 processes of 16 threads each, race to reserve $0.10 against a $1.00
budget. Exactly 10 reserves may succeed, whatever the interleaving; after settling, the
recorded spend is exactly the sum of what was settled.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from llmbudget.budgets import Budget
from llmbudget.errors import BudgetExceededError
from llmbudget.ledger import Hold, Ledger
from llmbudget.stores import open_store
from tests.storekit import FACTORIES, SHARED_ACROSS_PROCESSES

USER = Budget.of("user:race", "1.00")
# Settled amounts, chosen by contender number: at, above and below the $0.10 hold.
SETTLES = {"exact": ["0.10"], "mixed": ["0.12", "0.08", "0.10", "0.137", "0.001"]}


def _contend(ledger: Ledger, barrier: Any, threads: int) -> list[Hold]:
    won: list[Hold] = []
    lock = threading.Lock()

    def one() -> None:
        barrier.wait()
        try:
            hold = ledger.reserve([USER], "0.10")
        except BudgetExceededError:
            return
        with lock:
            won.append(hold)

    workers = [threading.Thread(target=one) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return won


def _settle(ledger: Ledger, holds: list[Hold], amounts: list[str], offset: int) -> Decimal:
    total = Decimal(0)
    for i, hold in enumerate(holds):
        total += ledger.settle(hold, amounts[(offset + i) % len(amounts)], model="m")
    return total


@pytest.mark.parametrize("settles", sorted(SETTLES))
@pytest.mark.parametrize("backend", sorted(FACTORIES))
def test_16_threads_exactly_ten_win(backend: str, settles: str, tmp_path: Path) -> None:
    with FACTORIES[backend](tmp_path) as store:
        ledger = Ledger(store)
        won = _contend(ledger, threading.Barrier(16), 16)
        assert len(won) == 10
        settled = _settle(ledger, won, SETTLES[settles], 0)
        status = ledger.status(USER)
        assert status.spent == settled
        assert status.held == 0
        if settles == "exact":
            assert status.spent == Decimal("1.00")


def _process(
    url: str, barrier: Any, settled: Any, amounts: list[str], index: int, out: Any
) -> None:
    ledger = Ledger(open_store(url))
    won = _contend(ledger, barrier, 16)
    # Settling below the hold frees room; wait until every process has finished reserving,
    # or a late reserve elsewhere could rightly win an 11th slot.
    settled.wait()
    out.put((len(won), str(_settle(ledger, won, amounts, index * 16))))


@pytest.mark.slow
@pytest.mark.parametrize("settles", sorted(SETTLES))
@pytest.mark.parametrize("backend", sorted(SHARED_ACROSS_PROCESSES))
def test_4_processes_of_16_threads_exactly_ten_win(
    backend: str, settles: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    with FACTORIES[backend](tmp_path) as store:
        url = getattr(store, "url", None) or f"sqlite:///{tmp_path / 'ledger.db'}"
        ctx = mp.get_context("spawn")
        barrier = ctx.Barrier(4 * 16)
        settled = ctx.Barrier(4)
        out = ctx.Queue()
        procs = [
            ctx.Process(target=_process, args=(url, barrier, settled, SETTLES[settles], i, out))
            for i in range(4)
        ]
        for p in procs:
            p.start()
        results = [out.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(timeout=30)
            assert p.exitcode == 0
        assert sum(n for n, _ in results) == 10
        settled = sum((Decimal(s) for _, s in results), Decimal(0))
        status = Ledger(store).status(USER)
        assert status.spent == settled and status.held == 0
