"""Races on every store: 64 clients (threads) in each of 3 processes against one budget.

Every client loops: reserve $0.01 on the shared budget and on its process' team budget
(the two lines in a random order, so PostgreSQL's lock ordering is exercised), then settle
a random actual cost at or below the hold, or release it (about one in ten), until it is
refused. Afterwards nothing was overspent and the recorded spend equals, to the nano-dollar,
the sum of the settles every client saw succeed. Memory runs the same clients as threads of
one process (it is not shared across processes).
"""

from __future__ import annotations

import multiprocessing as mp
import random
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from llmbudget.budgets import Budget
from llmbudget.errors import BudgetExceededError
from llmbudget.ledger import Ledger
from llmbudget.money import from_units
from llmbudget.stores import open_store
from llmbudget.stores.base import Store
from tests.storekit import FACTORIES, SHARED_ACROSS_PROCESSES, store_url

PROCESSES = 3
CLIENTS = 64  # per process
HOLD = Decimal("0.01")
HOLD_UNITS = 10_000_000
LIMIT = Decimal("15")
SHARED = Budget.of("user:race", LIMIT, "daily")


def _team(process: int) -> Budget:
    return Budget.of(f"team:race:{process}", "1000", "monthly")


def _client(ledger: Ledger, process: int, seed: int) -> tuple[Decimal, int, int, str | None]:
    """One client's loop; returns (settled total, settles, releases, error)."""
    rng = random.Random(seed)
    team = _team(process)
    settled, settles, releases = Decimal(0), 0, 0
    try:
        while True:
            lines = [SHARED, team] if rng.random() < 0.5 else [team, SHARED]
            try:
                hold = ledger.reserve(lines, HOLD)
            except BudgetExceededError as refused:
                assert refused.scope == SHARED.scope
                return settled, settles, releases, None
            if rng.random() < 0.1:
                assert ledger.release(hold) is True
                releases += 1
                continue
            actual = from_units(rng.randint(0, HOLD_UNITS))
            settled += ledger.settle(hold, actual, model=f"m{rng.randint(0, 2)}")
            settles += 1
    except Exception as exc:  # reported to the test, which fails on it
        return settled, settles, releases, f"{type(exc).__name__}: {exc}"


def _run_clients(
    ledger: Ledger, process: int, clients: int, start: Any
) -> tuple[Decimal, int, int, list[str]]:
    results: list[tuple[Decimal, int, int, str | None]] = []
    lock = threading.Lock()

    def one(n: int) -> None:
        start.wait()
        result = _client(ledger, process, seed=process * 1000 + n)
        with lock:
            results.append(result)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    errors = [e for *_, e in results if e is not None]
    return (
        sum((r[0] for r in results), Decimal(0)),
        sum(r[1] for r in results),
        sum(r[2] for r in results),
        errors,
    )


def _process_main(url: str, process: int, start: Any, out: Any) -> None:
    store = open_store(url)
    try:
        settled, settles, releases, errors = _run_clients(Ledger(store), process, CLIENTS, start)
        out.put((process, str(settled), settles, releases, errors))
    finally:
        store.close()


def _check(store: Store, per_process: dict[int, Decimal]) -> None:
    ledger = Ledger(store)
    shared = ledger.status(SHARED)
    total = sum(per_process.values(), Decimal(0))
    assert shared.spent <= LIMIT, f"overspent: {shared.spent} > {LIMIT}"
    assert shared.spent == total
    assert shared.held == 0
    assert sum(shared.by_model.values(), Decimal(0)) == total
    for process, settled in per_process.items():
        team = ledger.status(_team(process))
        assert (team.spent, team.held) == (settled, 0)
    # Clients stop at their first refusal, so the budget ends (nearly) full: within one
    # hold of the limit, or it would not have refused everyone.
    assert shared.spent > LIMIT - HOLD * PROCESSES * CLIENTS


@pytest.mark.slow
@pytest.mark.parametrize("backend", sorted(SHARED_ACROSS_PROCESSES))
def test_3_processes_of_64_clients_never_overspend(backend: str, tmp_path: Path) -> None:
    with FACTORIES[backend](tmp_path) as store:
        url = store_url(backend, tmp_path)
        ctx = mp.get_context("spawn")
        start = ctx.Barrier(PROCESSES * CLIENTS)
        out = ctx.Queue()
        procs = [
            ctx.Process(target=_process_main, args=(url, p, start, out)) for p in range(PROCESSES)
        ]
        began = time.monotonic()
        for proc in procs:
            proc.start()
        results = [out.get(timeout=240) for _ in procs]
        for proc in procs:
            proc.join(timeout=60)
            assert proc.exitcode == 0
        elapsed = time.monotonic() - began
        errors = [e for *_, errs in results for e in errs]
        assert not errors, errors[:5]
        per_process = {p: Decimal(s) for p, s, *_ in results}
        settles = sum(r[2] for r in results)
        releases = sum(r[3] for r in results)
        print(
            f"\n{backend}: {PROCESSES}x{CLIENTS} clients, {settles} settles, {releases} releases, "
            f"spent {sum(per_process.values())} of {LIMIT} in {elapsed:.1f} s"
        )
        assert settles > 0 and releases > 0
        _check(store, per_process)


def test_memory_192_threads_never_overspend(tmp_path: Path) -> None:
    with FACTORIES["memory"](tmp_path) as store:
        ledger = Ledger(store)
        start = threading.Barrier(PROCESSES * CLIENTS)
        per_process: dict[int, Decimal] = {}
        lock = threading.Lock()

        def process(p: int) -> None:
            settled, _, _, errors = _run_clients(ledger, p, CLIENTS, start)
            assert not errors, errors[:5]
            with lock:
                per_process[p] = settled

        groups = [threading.Thread(target=process, args=(p,)) for p in range(PROCESSES)]
        for group in groups:
            group.start()
        for group in groups:
            group.join()
        assert len(per_process) == PROCESSES
        _check(store, per_process)
