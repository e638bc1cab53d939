"""Fault injection: the store is cut between reserve and settle, the process is killed
(SIGKILL) with its settle kept in the journal, and the next process to open the store
lands it, exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from llmbudget.budgets import Budget
from llmbudget.journal import Journal
from llmbudget.ledger import Ledger
from tests import storekit
from tests.storekit import TcpProxy, with_query

BUDGET = Budget.of("user:crash", 10)

CHILD = textwrap.dedent(
    """
    import sys
    from llmbudget import Budget, Ledger

    ledger = Ledger(sys.argv[1])
    budget = Budget.of("user:crash", 10)
    if sys.argv[2] == "crash":
        hold = ledger.reserve([budget], "1")
        print(hold.id, flush=True)
        sys.stdin.readline()                      # the parent cuts the store here
        ledger.settle(hold, "0.75", model="m")    # cannot reach it: kept in the journal
        print("kept", flush=True)
        sys.stdin.readline()                      # and is killed here
    else:                                         # a later run of the program
        ledger.status(budget)                     # a store call that works: replays
        print(ledger.status(budget).spent, flush=True)
    """
)


def _via(url: str, port: int) -> str:
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    return urlunsplit(
        parts._replace(netloc=(userinfo + "@" if userinfo else "") + f"127.0.0.1:{port}")
    )


@pytest.fixture(params=["redis", "postgres"])
def proxied(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[TcpProxy, str]]:
    backend = request.param
    with storekit.FACTORIES[backend](tmp_path):  # skips when the server is not there
        pass
    direct = storekit.store_url(backend, tmp_path)
    parts = urlsplit(direct)
    proxy = TcpProxy(
        parts.hostname or "127.0.0.1", parts.port or (6379 if backend == "redis" else 5432)
    )
    timeouts = (
        {"socket_timeout": "2", "socket_connect_timeout": "1"}
        if backend == "redis"
        else {"connect_timeout": "1", "pool_timeout": "1", "timeout": "2"}
    )
    try:
        yield proxy, with_query(_via(direct, proxy.port), **timeouts)
    finally:
        proxy.close()
        if backend == "redis":
            storekit.delete_redis_prefix(storekit.isolation_name(tmp_path))
        else:
            storekit.drop_postgres_schema(storekit.isolation_name(tmp_path))


def _run(url: str, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, url, mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_a_settle_kept_by_a_killed_process_lands_once_after_restart(
    proxied: tuple[TcpProxy, str],
) -> None:
    proxy, url = proxied
    journal = Journal(os.environ["LLMBUDGET_JOURNAL"])
    child = _run(url, "crash")
    try:
        assert child.stdout is not None and child.stdin is not None
        hold_id = child.stdout.readline().strip()
        proxy.cut()
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "kept"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    journal.load()
    assert [(e.kind, e.ref) for e in journal.entries()] == [("settle", hold_id)]
    proxy.restore()
    for _ in range(2):  # restarted, then restarted again: landed once
        again = _run(url, "restart")
        out, _ = again.communicate(timeout=60)
        assert again.returncode == 0
        assert Decimal(out.strip()) == Decimal("0.75")
    journal.load()
    assert journal.entries() == []
    status = Ledger(url, journal=journal).status(BUDGET)
    assert (status.spent, status.held) == (Decimal("0.75"), 0)
