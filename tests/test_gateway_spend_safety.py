"""Never overspend, never under-record: output caps, lost answers, cancellation, edge input."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmbudget.budgets import Budget
from llmbudget.errors import StoreUnavailableError
from llmbudget.gateway import create_gateway_app
from llmbudget.gateway.config import DEFAULT_OUTPUT_TOKENS, load_gateway_config
from llmbudget.journal import Journal
from llmbudget.ledger import AsyncLedger, Ledger
from llmbudget.metering import DEFAULT_OUTPUT_CAP as SAFE_OUTPUT_CAP
from llmbudget.metering import BillableCall, worst_case
from llmbudget.plans import run_async
from llmbudget.reservations import ScopeGroup, plan_reserve, plan_settle
from llmbudget.stores.memory import MemoryStore
from tests.gateway_fakes import HI_TOKENS, MASTER, FakeUpstream, Gw, ServerThread, cost, deployment


@pytest.fixture
def fake() -> Iterator[tuple[FakeUpstream, str]]:
    upstream = FakeUpstream()
    with ServerThread(upstream.app()) as server:
        yield upstream, server.url


def book_priced(url: str, model: str = "openai/gpt-4o", **extra: Any) -> dict[str, Any]:
    """A deployment priced from the price data (no prices or max output in the config)."""
    params = {"model": model, "api_base": f"{url}/v1", "api_key": "upstream-secret", **extra}
    return {"model_name": "m", "litellm_params": params}


# --------------------------------------------------------------------------- 1: default cap


def test_the_default_output_cap_is_4096_not_the_context_window() -> None:
    assert DEFAULT_OUTPUT_TOKENS == SAFE_OUTPUT_CAP == 4096
    config = load_gateway_config({"model_list": [book_priced("http://127.0.0.1:9")]})
    [dep] = config.deployments
    assert dep.price.max_output_tokens is None  # genai-prices does not say
    assert dep.price.context_window == 128_000
    assert dep.max_output_tokens == 4096


def test_without_max_tokens_4096_is_reserved_and_forwarded(fake):
    upstream, url = fake
    with Gw({"model_list": [book_priced(url)]}) as gw:
        _, secret = gw.key(budget=10)
        r = gw.chat(secret)
        assert r.status_code == 200, r.text
        assert upstream.calls[-1]["max_tokens"] == 4096
        assert "max_completion_tokens" not in upstream.calls[-1]
        [entry] = gw.logs()
        price = gw.gateway.config.deployments[0].price
        call = BillableCall("chat", "gpt-4o", HI_TOKENS)
        assert Decimal(entry["reserved"]) == worst_case(price, call, 4096)


def test_a_call_no_budget_limits_is_forwarded_as_sent(fake):
    # Spend is tracked on an uncapped key; nothing can be overspent, so nothing is added.
    upstream, url = fake
    with Gw({"model_list": [book_priced(url)]}) as gw:
        _, secret = gw.key()
        assert gw.chat(secret).status_code == 200
        assert "max_tokens" not in upstream.calls[-1]
        assert "max_completion_tokens" not in upstream.calls[-1]


def test_the_default_cap_leaves_room_for_the_prompt_in_the_context_window(fake):
    upstream, url = fake
    with Gw({"model_list": [book_priced(url)]}) as gw:
        _, secret = gw.key(budget=10)
        long = [{"role": "user", "content": " a" * 125_000}]
        r = gw.chat(secret, messages=long)
        assert r.status_code == 200, r.text
        prompt = gw.logs()[0]["prompt_tokens"]
        assert prompt > 124_000
        assert upstream.calls[-1]["max_tokens"] == 128_000 - prompt < 4096


# --------------------------------------------------------------------------- 2: one cap forwarded


def test_only_the_reserved_cap_is_forwarded(fake):
    upstream, url = fake
    with Gw({"model_list": [deployment(url)]}) as gw:
        _, secret = gw.key()
        assert gw.chat(secret, max_completion_tokens=10).status_code == 200
        assert upstream.calls[-1]["max_tokens"] == 10
        assert "max_completion_tokens" not in upstream.calls[-1]
        assert gw.chat(secret, max_tokens=12, max_completion_tokens=12).status_code == 200
        assert upstream.calls[-1]["max_tokens"] == 12
        assert "max_completion_tokens" not in upstream.calls[-1]


def test_the_cap_goes_under_the_deployments_parameter_name(fake):
    upstream, url = fake
    with Gw({"model_list": [deployment(url, max_tokens_param="max_completion_tokens")]}) as gw:
        _, secret = gw.key()
        assert gw.chat(secret, max_tokens=10).status_code == 200
        assert upstream.calls[-1]["max_completion_tokens"] == 10
        assert "max_tokens" not in upstream.calls[-1]


def test_conflicting_caps_are_refused_before_anything_is_reserved(fake):
    upstream, url = fake
    with Gw({"model_list": [deployment(url)]}) as gw:
        key_id, secret = gw.key(budget=1)
        r = gw.chat(secret, max_completion_tokens=10, max_tokens=100_000)
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "invalid_request"
        assert upstream.count == 0
        status = gw.status(f"gw-key:{key_id}")
        assert (status.spent, status.held) == (0, 0)
        assert gw.logs() == []


# --------------------------------------------------------------------------- 3: lost answers


@contextlib.contextmanager
def _two_upstreams(slow: FakeUpstream) -> Iterator[tuple[FakeUpstream, str, str]]:
    good = FakeUpstream(name="good")
    with ServerThread(slow.app()) as a, ServerThread(good.app()) as b:
        yield good, a.url, b.url


def _spend_config(first: str, second: str | None = None, **extra: Any) -> dict[str, Any]:
    models = [deployment(first, id_="first", **extra)]
    if second is not None:
        models.append(deployment(second, id_="second"))
    return {
        "model_list": models,
        # Deterministic order: "first" is always tried first.
        "router_settings": {"routing_strategy": "weighted-round-robin", "num_retries": 1},
    }


def test_a_timeout_after_sending_settles_the_full_hold_then_retries():
    slow = FakeUpstream(name="slow", delay=1.5)
    with (
        _two_upstreams(slow) as (good, slow_url, good_url),
        Gw(_spend_config(slow_url, good_url, timeout=0.3)) as gw,
    ):
        key_id, secret = gw.key()
        r = gw.chat(secret, max_tokens=50)
        assert r.status_code == 200, r.text
        assert r.headers["x-llmbudget-deployment"] == "second"
        assert slow.count == 1 and good.count == 1
        status = gw.settled(f"gw-key:{key_id}")
        # The slow provider may have done (and billed) the work: its whole hold counts.
        assert status.spent == cost(HI_TOKENS, 50) + cost(HI_TOKENS, 20)
        lost = [e for e in gw.logs() if e["deployment"] == "first"]
        assert len(lost) == 1
        assert lost[0]["status"] == "upstream_timeout"
        assert lost[0]["usage_source"] == "reserved"
        assert lost[0]["cost"] == lost[0]["reserved"] == str(cost(HI_TOKENS, 50))


def test_a_timeout_on_the_only_deployment_is_504_and_recorded():
    slow = FakeUpstream(name="slow", delay=1.5)
    with ServerThread(slow.app()) as server, Gw(_spend_config(server.url, timeout=0.3)) as gw:
        key_id, secret = gw.key()
        r = gw.chat(secret, max_tokens=50)
        assert r.status_code == 504
        assert r.json()["error"]["code"] == "upstream_timeout"
        status = gw.settled(f"gw-key:{key_id}")
        assert status.spent == cost(HI_TOKENS, 50) and status.held == 0


def test_a_body_broken_off_after_200_settles_the_full_hold():
    broken = FakeUpstream(name="broken", break_body=True)
    with (
        _two_upstreams(broken) as (_good, broken_url, good_url),
        Gw(_spend_config(broken_url, good_url)) as gw,
    ):
        key_id, secret = gw.key()
        r = gw.chat(secret, max_tokens=50)
        assert r.status_code == 200, r.text
        status = gw.settled(f"gw-key:{key_id}")
        assert status.spent == cost(HI_TOKENS, 50) + cost(HI_TOKENS, 20)
        [lost] = [e for e in gw.logs() if e["deployment"] == "first"]
        assert lost["status"] == "upstream_failed" and lost["usage_source"] == "reserved"


def test_a_refused_connection_releases_the_hold():
    good = FakeUpstream(name="good")
    with ServerThread(good.app()) as server:
        config = _spend_config("http://127.0.0.1:1", server.url)
        with Gw(config) as gw:
            key_id, secret = gw.key()
            r = gw.chat(secret, max_tokens=50)
            assert r.status_code == 200
            status = gw.settled(f"gw-key:{key_id}")
            assert status.spent == cost(HI_TOKENS, 20)  # nothing for the unreachable one
            assert [e["deployment"] for e in gw.logs()] == ["second"]


def test_a_handler_cancelled_while_the_upstream_works_settles_the_full_hold():
    slow = FakeUpstream(name="slow", delay=2.0)
    with ServerThread(slow.app()) as server:
        store = MemoryStore()
        config = {
            "model_list": [deployment(server.url)],
            "general_settings": {"master_key": MASTER},
        }
        app = create_gateway_app(config, store=store)
        gateway = app.state.gateway

        async def main() -> str:
            transport = httpx.ASGITransport(app=app)
            headers = {"authorization": f"Bearer {MASTER}"}
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                created = await client.post("/v1/keys", json={"user": "alice"}, headers=headers)
                key = created.json()
                post = client.post(
                    "/v1/chat/completions",
                    json={
                        "model": "m",
                        "messages": [{"role": "user", "content": "hi"}],
                        "max_tokens": 50,
                    },
                    headers={"authorization": f"Bearer {key['key']}"},
                )
                task = asyncio.ensure_future(post)
                while slow.count == 0:  # the request has reached the upstream
                    await asyncio.sleep(0.01)
                task.cancel()  # the client goes away; the handler is cancelled
                with pytest.raises(asyncio.CancelledError):
                    await task
            await gateway.aclose()
            return str(key["id"])

        key_id = asyncio.run(main())
        status = Ledger(store).status(Budget.of(f"gw-key:{key_id}", None))
        assert status.held == 0
        assert status.spent == cost(HI_TOKENS, 50)
        logs = [e.data for e in store.read_log("gateway", 0, 1e12, 100)]
        assert [(e["status"], e["usage_source"]) for e in logs] == [("cancelled", "reserved")]


# --------------------------------------------------------------------------- 4: edge input


@pytest.mark.parametrize("max_tokens", [10**16, 2**63])
def test_a_huge_max_tokens_is_400_and_reserves_nothing(fake, max_tokens):
    upstream, url = fake
    with Gw({"model_list": [deployment(url)]}) as gw:
        key_id, secret = gw.key()
        r = gw.chat(secret, max_tokens=max_tokens)  # a worst case beyond what can be held
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "invalid_request"
        assert upstream.count == 0
        status = gw.status(f"gw-key:{key_id}")
        assert (status.spent, status.held) == (0, 0)


@pytest.mark.parametrize(
    "field",
    [{"expires_at": 1e20}, {"expires_at": 10**400}, {"duration": "9" * 30 + "d"}],
)
def test_an_expiry_beyond_year_9999_is_a_json_400(fake, field):
    _, url = fake
    with Gw({"model_list": [deployment(url)]}) as gw:
        r = gw.http.post(
            "/v1/keys",
            json={"user": "alice", **field},
            headers={"authorization": f"Bearer {MASTER}"},
        )
        assert r.status_code == 400, r.text
        assert r.headers["content-type"].startswith("application/json")
        assert r.json()["error"]["message"]


class _LostAnswerStore(MemoryStore):
    """Its first settle is applied, then its answer is lost (the connection broke)."""

    def __init__(self) -> None:
        super().__init__()
        self.lose_answers = 1

    def settle(self, *args: Any, **kwargs: Any) -> Any:
        result = super().settle(*args, **kwargs)
        if self.lose_answers:
            self.lose_answers -= 1
            raise StoreUnavailableError("connection lost after the settle was applied")
        return result


def test_a_settle_and_its_log_entry_land_exactly_once_when_an_answer_is_lost(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    store = _LostAnswerStore()
    journal = Journal(tmp_path / "journal.db")
    ledger = AsyncLedger(store, journal=journal)
    # One try, no retries: the second settle below is the caller's own retry.
    monkeypatch.setattr("llmbudget.replay.SETTLE_RETRY_DELAYS", ())

    async def main() -> None:
        group = ScopeGroup(ledger.plans, (Budget.of("k", 1),))
        hold = await run_async(plan_reserve([group], "0.5"))
        record = ("gateway", 1.0, {"id": "req_1", "cost": "0.2"})
        # Applied (with its entry, atomically), answer lost: kept in the journal, not raised.
        assert await run_async(plan_settle(hold, "0.2", "m", record)) == Decimal("0.2")
        assert [e.ref for e in journal.entries()] == [hold.id]
        assert await run_async(plan_settle(hold, "0.2", "m", record)) == Decimal("0.2")
        assert journal.entries() == []  # the retry found it settled: nothing left to replay

    asyncio.run(main())
    # One entry, not two: the retry of a settle that had landed appends nothing again.
    assert [e.data["id"] for e in store.read_log("gateway", 0, 1e12, 10)] == ["req_1"]
    assert Ledger(store).status(Budget.of("k", 1)).spent == Decimal("0.2")
