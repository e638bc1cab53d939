"""``BudgetManager(client_type="hosted")`` over :class:`HttpStore` against a live server.

The store conformance tests of the core (ledger, rate limits, documents) run again here
with the store being the budget server, so the HTTP store keeps every semantic of a local
one. Then two processes race 500 charges each through one live uvicorn server: nothing may
be lost.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import multiprocessing as mp
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmbudget import BudgetManager
from llmbudget.budgets import Budget
from llmbudget.clock import FrozenClock
from llmbudget.errors import (
    BudgetExceededError,
    InvalidInputError,
    StoreError,
    StoreUnavailableError,
    UnknownHoldError,
    UnknownUserError,
)
from llmbudget.ledger import Ledger
from llmbudget.server import ServerConfig, create_app
from llmbudget.server.testing import live_server
from llmbudget.stores.base import Line, Store
from llmbudget.stores.http import HttpStore
from llmbudget.stores.memory import MemoryStore
from tests import test_documents as documents_suite
from tests import test_ledger as ledger_suite
from tests import test_rate_limits as rate_limits_suite
from tests import test_store_conformance as conformance_suite

KEY = "test-admin-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, MemoryStore]]:
    """A live server on a fresh in-memory store; yields (base URL, the server's store)."""
    monkeypatch.delenv("LLMBUDGET_ADMIN_KEY", raising=False)
    backing = MemoryStore()
    with live_server(create_app(ServerConfig(admin_key=KEY), store=backing)) as base:
        yield base, backing


@pytest.fixture
def http_store(server: tuple[str, MemoryStore]) -> Iterator[HttpStore]:
    store = HttpStore(server[0], api_key=KEY)
    yield store
    store.close()


@pytest.fixture
def trusted_http_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[HttpStore]:
    """An HttpStore on a server that takes the client's times as sent
    (``trust_client_clock``): the conformance suites drive time by hand (``now=0``, then
    ``now=200``...), which a server on its own clock would rightly ignore."""
    monkeypatch.delenv("LLMBUDGET_ADMIN_KEY", raising=False)
    config = ServerConfig(admin_key=KEY, trust_client_clock=True)
    with live_server(create_app(config, store=MemoryStore())) as base:
        store = HttpStore(base, api_key=KEY)
        yield store
        store.close()


_INJECTED = {"store", "ledger", "clock"}


def _suite(module: Any) -> list[Any]:
    """The module's tests that need only a store (and a ledger or clock), expanded over
    their ``parametrize`` marks, as pytest params named like the original test."""
    cases = []
    for name in sorted(dir(module)):
        fn = getattr(module, name)
        if not name.startswith("test_") or not callable(fn):
            continue
        params = set(inspect.signature(fn).parameters)
        combos: list[dict[str, Any]] = [{}]
        for mark in getattr(fn, "pytestmark", []):
            if mark.name != "parametrize":
                continue
            names = (
                [n.strip() for n in mark.args[0].split(",")]
                if isinstance(mark.args[0], str)
                else list(mark.args[0])
            )
            values = [v if len(names) > 1 else (v,) for v in mark.args[1]]
            combos = [{**c, **dict(zip(names, v, strict=True))} for c in combos for v in values]
        given = set(combos[0])
        if not params - given <= _INJECTED or not params & {"store", "ledger"}:
            continue  # needs other fixtures (backend-specific), or no store at all
        for i, combo in enumerate(combos):
            cases.append(pytest.param(name, combo, id=f"{name}[{i}]" if len(combos) > 1 else name))
    return cases


def _run_suite_test(
    fn: Callable[..., Any], extra: dict[str, Any], store: Store, clock: FrozenClock
) -> None:
    params = inspect.signature(fn).parameters
    kwargs: dict[str, Any] = dict(extra)
    if "ledger" in params:
        kwargs["ledger"] = Ledger(store, clock=clock, hold_ttl=60)
    if "store" in params:
        kwargs["store"] = store
    if "clock" in params:
        kwargs["clock"] = clock
    result = fn(**kwargs)
    if inspect.iscoroutine(result):
        asyncio.run(result)


@pytest.mark.parametrize(("name", "extra"), _suite(conformance_suite))
def test_store_conformance_over_http(
    name: str, extra: dict[str, Any], trusted_http_store: HttpStore, clock: FrozenClock
) -> None:
    _run_suite_test(getattr(conformance_suite, name), extra, trusted_http_store, clock)


@pytest.mark.parametrize(("name", "extra"), _suite(ledger_suite))
def test_ledger_conformance_over_http(
    name: str, extra: dict[str, Any], trusted_http_store: HttpStore, clock: FrozenClock
) -> None:
    _run_suite_test(getattr(ledger_suite, name), extra, trusted_http_store, clock)


@pytest.mark.parametrize(("name", "extra"), _suite(rate_limits_suite))
def test_rate_limits_over_http(
    name: str, extra: dict[str, Any], trusted_http_store: HttpStore, clock: FrozenClock
) -> None:
    _run_suite_test(getattr(rate_limits_suite, name), extra, trusted_http_store, clock)


@pytest.mark.parametrize(("name", "extra"), _suite(documents_suite))
def test_documents_conformance_over_http(
    name: str, extra: dict[str, Any], http_store: HttpStore, clock: FrozenClock
) -> None:
    _run_suite_test(getattr(documents_suite, name), extra, http_store, clock)


def test_hosted_budget_manager_round_trip(server: tuple[str, MemoryStore]) -> None:
    base, backing = server
    bm = BudgetManager("app", client_type="hosted", api_base=base, headers=AUTH)
    assert not bm.is_valid_user("ann")
    bm.create_budget(total_budget="1.00", user="ann", duration="daily")
    assert bm.is_valid_user("ann") and bm.get_users() == ["ann"]
    hold = bm.reserve("ann", "0.60")
    with pytest.raises(BudgetExceededError) as refused:
        bm.reserve("ann", "0.50")
    assert refused.value.held == Decimal("0.6")
    assert bm.settle(hold, "0.25", model="gpt-4o") == Decimal("0.25")
    budget = bm.ledger.get(["user:app:ann"])[0]
    assert budget is not None
    bm.ledger.charge([budget], "0.05")
    assert bm.get_current_cost("ann") == Decimal("0.3")
    assert bm.get_model_cost("ann") == {"gpt-4o": Decimal("0.25")}
    assert bm.remaining("ann") == Decimal("0.7")
    # The same state is visible to a second client and in the server's own store.
    other = BudgetManager("app", client_type="hosted", api_base=base, headers=AUTH)
    assert other.get_current_cost("ann") == Decimal("0.3")
    assert Ledger(backing).status(Budget.of("user:app:ann", "1", "daily")).spent == Decimal("0.3")
    bm.reset_cost("ann")
    assert other.get_current_cost("ann") == 0
    assert bm.delete_budget("ann") is True
    with pytest.raises(UnknownUserError):
        other.get_current_cost("ann")


def test_hosted_update_cost_with_the_seeds_arguments(server: tuple[str, MemoryStore]) -> None:
    from llmbudget.pricing import cost_from_text

    bm = BudgetManager("app", client_type="hosted", api_base=server[0], headers=AUTH)
    bm.create_budget(total_budget=10, user="1234", duration="daily")
    bm.update_cost(user="1234", model="gpt-4o", input_text="hello world", output_text="hi")
    expected = cost_from_text("gpt-4o", "hello world", "hi")
    assert expected > 0
    assert bm.get_current_cost("1234") == expected
    assert bm.get_model_cost("1234") == {"gpt-4o": expected}


def test_api_key_from_environment(
    server: tuple[str, MemoryStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMBUDGET_ADMIN_KEY", KEY)
    bm = BudgetManager("app", client_type="hosted", api_base=server[0])
    bm.create_budget(total_budget=5, user="bob")
    assert bm.get_total_budget("bob") == Decimal(5)


def test_wrong_or_missing_key_is_a_store_error_not_unavailable(
    server: tuple[str, MemoryStore],
) -> None:
    for headers in ({"Authorization": "Bearer wrong"}, {}):
        store = HttpStore(server[0], headers=headers)
        with pytest.raises(StoreError) as info:
            store.list_budgets("")
        assert not isinstance(info.value, StoreUnavailableError)
        assert "admin key" in str(info.value)


def test_unknown_hold_maps_to_unknown_hold_error(http_store: HttpStore) -> None:
    with pytest.raises(UnknownHoldError) as info:
        http_store.settle("never-reserved", 1, None, 100.0)
    assert info.value.hold_id == "never-reserved"
    with pytest.raises(UnknownHoldError):
        http_store.release("never-reserved", 100.0)


def test_bad_arguments_raise_invalid_input_and_store_nothing(
    http_store: HttpStore, server: tuple[str, MemoryStore]
) -> None:
    backing = server[1]
    line = Line("user:x", 0, 10)
    with pytest.raises(InvalidInputError):
        http_store.reserve("h1", [line], -5, 200.0, 100.0)  # negative amount
    with pytest.raises(InvalidInputError):
        http_store.reserve("h2", [], 5, 200.0, 100.0)  # no lines
    with pytest.raises(InvalidInputError):
        http_store.charge([line, line], 5, None, 100.0)  # the same scope twice
    with pytest.raises(InvalidInputError):
        http_store.charge([Line("user:\x00", 0, None)], 5, None, 100.0)  # NUL in a scope
    from llmbudget.stores.base import BudgetRecord

    with pytest.raises(InvalidInputError):
        http_store.put_budget(BudgetRecord("user:y", 5, "fortnightly"))  # unknown period
    with pytest.raises(InvalidInputError):
        http_store.put_budget(BudgetRecord("user:y", 5, "daily", timezone="Mars/Olympus"))
    assert backing.usage("user:x", 0, 100.0).spent == 0
    assert backing.usage("user:x", 0, 100.0).held == 0
    assert backing.list_budgets("") == []
    with pytest.raises(UnknownHoldError):
        backing.settle("h1", 0, None, 100.0)


def test_server_down_fails_closed() -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again when the block ends: nobody listens
    store = HttpStore(f"http://127.0.0.1:{port}", api_key=KEY, connect_retries=1)
    with pytest.raises(StoreUnavailableError):
        store.reserve("h", [Line("user:x", 0, 10)], 1, 200.0, 100.0)
    bm_error = None
    try:
        BudgetManager("app", client_type="hosted", api_base=f"http://127.0.0.1:{port}").reserve(
            "ann", "0.1"
        )
    except StoreUnavailableError as exc:
        bm_error = exc
    assert bm_error is not None


def _mock(handler: Callable[[httpx.Request], httpx.Response]) -> HttpStore:
    return HttpStore("http://budget.test", api_key=KEY, transport=httpx.MockTransport(handler))


def test_5xx_timeouts_and_foreign_replies_are_unavailable() -> None:
    def five_hundred(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, json={"error": {"message": "boom", "code": "internal_error"}})

    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    def html(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>proxy login</html>")

    def not_ours(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, text="Not Found")

    for handler in (five_hundred, timeout, html, not_ours):
        with pytest.raises(StoreUnavailableError):
            _mock(handler).charge([Line("user:x", 0, None)], 1, None, 100.0)


def test_timeouts_are_not_retried_but_refused_connections_are() -> None:
    calls: list[str] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if len(calls) < 3:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, json={"ok": True})

    _mock(flaky).charge([Line("user:x", 0, None)], 1, None, 100.0)
    assert calls == ["/v1/store/charge"] * 3

    calls.clear()

    def slow(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(StoreUnavailableError):
        _mock(slow).charge([Line("user:x", 0, None)], 1, None, 100.0)
    assert len(calls) == 1  # a charge that may have landed is never sent twice


def test_requests_carry_the_headers_and_exact_json() -> None:
    seen: list[httpx.Request] = []

    def capture(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"refusal": None})

    store = HttpStore(
        "http://budget.test/",
        headers={"Authorization": "Bearer abc", "X-Team": "t1", "Content-Type": "text/plain"},
        transport=httpx.MockTransport(capture),
    )
    assert store.reserve("h", [Line("user:x", 7, 100)], 5, 200.5, 100.25) is None
    request = seen[0]
    assert request.url == "http://budget.test/v1/store/reserve"
    assert request.headers["authorization"] == "Bearer abc"
    assert request.headers["x-team"] == "t1"
    assert request.headers["content-type"] == "application/json"
    import json

    assert json.loads(request.content) == {
        "hold_id": "h",
        "lines": [{"scope": "user:x", "window": 7, "limit": 100}],
        "amount": 5,
        "expires_at": 200.5,
        "now": 100.25,
    }


def test_get_budgets_in_batches(http_store: HttpStore) -> None:
    from llmbudget.stores.base import BudgetRecord

    http_store.put_budget(BudgetRecord("user:p:u1500", 5, "daily"))
    scopes = [f"user:p:u{i}" for i in range(2500)]
    records = http_store.get_budgets(scopes)
    assert len(records) == 2500
    assert [i for i, r in enumerate(records) if r is not None] == [1500]
    assert http_store.get_budgets([]) == []


def test_base_url_must_be_http() -> None:
    with pytest.raises(InvalidInputError):
        HttpStore("ftp://example")
    with pytest.raises(InvalidInputError):
        BudgetManager("app", client_type="hosted", api_base="localhost:8000")


# -- two processes, one server -----------------------------------------------------------


def _charge_500(base: str, start: Any, out: Any) -> None:
    bm = BudgetManager("race", client_type="hosted", api_base=base, headers=AUTH)
    budget = bm.ledger.get(["user:race:shared"])[0]
    assert budget is not None
    start.wait()
    done = 0
    for i in range(500):
        # Alternate the two paths: plain charges, and reserve/settle pairs.
        if i % 2:
            bm.ledger.charge([budget], "0.001", model="m")
        else:
            bm.settle(bm.reserve("shared", "0.002"), "0.001", model="m")
        done += 1
    out.put(done)


@pytest.mark.slow
def test_two_processes_500_charges_each_lose_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LLMBUDGET_ADMIN_KEY", raising=False)
    url = f"sqlite:///{tmp_path / 'server.db'}"
    with live_server(create_app(ServerConfig(store=url, admin_key=KEY))) as base:
        setup = BudgetManager("race", client_type="hosted", api_base=base, headers=AUTH)
        setup.create_budget(total_budget=10, user="shared", duration="daily")
        ctx = mp.get_context("spawn")
        start = ctx.Event()
        out = ctx.Queue()
        procs = [ctx.Process(target=_charge_500, args=(base, start, out)) for _ in range(2)]
        for p in procs:
            p.start()
        start.set()
        counts = [out.get(timeout=240) for _ in procs]
        for p in procs:
            p.join(timeout=30)
            assert p.exitcode == 0
        assert counts == [500, 500]
        status = setup.status("shared")
        assert status.spent == Decimal("1.000")
        assert status.by_model == {"m": Decimal("1.000")}
        assert status.held == 0


def test_store_api_runs_on_the_servers_clock_not_the_clients(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client whose clock is 10 hours ahead can neither expire nor purge another
    client's live hold (which would allow overspending), nor make its own hold outlive
    its lifetime on the server's clock."""
    monkeypatch.delenv("LLMBUDGET_ADMIN_KEY", raising=False)
    server_clock = FrozenClock(1_000_000.0)
    backing = MemoryStore()
    app = create_app(ServerConfig(admin_key=KEY), store=backing, clock=server_clock)
    ahead = 1_000_000.0 + 10 * 3600
    line = [Line("user:p:u", 0, 100)]
    with live_server(app) as base:
        store = HttpStore(base, api_key=KEY)
        # An honest client holds 60 of 100 for 60 s.
        assert store.reserve("honest", line, 60, 1_000_060.0, 1_000_000.0) is None
        # The skewed client: its "now" is past the honest hold's expiry, and past the
        # retention too, yet the hold still counts and survives a purge.
        assert store.usage("user:p:u", 0, ahead).held == 60
        assert store.purge(ahead, 0) == 0
        assert store.usage("user:p:u", 0, ahead).held == 60
        refusal = store.reserve("skewed", line, 50, ahead + 60, ahead)
        assert refusal is not None and refusal.held == 60
        # Its own hold lives 60 s on the server's clock (not 10 h + 60 s, nor 0 s).
        assert store.reserve("skewed", line, 40, ahead + 60, ahead) is None
        assert backing.usage("user:p:u", 0, server_clock()).held == 100
        server_clock.advance(61)
        assert backing.usage("user:p:u", 0, server_clock()).held == 0
        # The honest late settle still lands (the server's retention, not the client's).
        assert store.settle("honest", 30, None, ahead).actual == 30
        # A client far behind cannot make an immortal hold: clamped to one day.
        assert store.reserve("immortal", line, 10, 1e9, 0.0) is None
        assert backing.usage("user:p:u", 0, server_clock()).held == 10
        server_clock.advance(86_400 + 1)
        assert backing.usage("user:p:u", 0, server_clock()).held == 0
        store.close()


def test_every_charge_carries_an_id_so_the_server_can_spot_a_repeat() -> None:
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json={"ok": True, "recorded": len(bodies) == 1})

    store = _mock(handler)
    assert store.charge([Line("a", 0)], 5, None, 0.0) is True
    assert store.charge([Line("a", 0)], 5, None, 0.0, "mine") is False
    assert bodies[0]["charge_id"].startswith("http-") and bodies[1]["charge_id"] == "mine"
    store.charge([Line("a", 0)], 5, None, 0.0)
    assert bodies[2]["charge_id"] != bodies[0]["charge_id"]  # a fresh id per call


def test_a_charge_retried_over_http_with_its_id_records_once(http_store: HttpStore) -> None:
    ledger = Ledger(http_store)
    budget = Budget.of("user:p:u", 10, "daily")
    for _ in range(3):
        ledger.charge([budget], "0.25", charge_id="retry-me")
    assert ledger.status(budget).spent == Decimal("0.25")
