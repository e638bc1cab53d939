"""The seed's self-hosted protocol, driven the way LiteLLM's hosted BudgetManager drives it.

``LiteLLMClient`` below sends exactly the requests ``litellm/budget_manager.py`` sends
(``POST {api_base}/get_budget`` once at construction, ``POST {api_base}/set_budget`` with
the whole dict after each change; JSON bodies, ``Content-Type: application/json``) and
mutates its dict the same way, against a live uvicorn server. LiteLLM itself is not a
dependency; if it happens to be installed, the last test drives the real client too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmbudget.clock import FrozenClock
from llmbudget.ledger import Ledger
from llmbudget.server import ServerConfig, create_app
from llmbudget.server.seed_protocol import period_from_days, seed_days
from llmbudget.server.testing import live_server
from llmbudget.stores.sqlite import SQLiteStore

KEY = "seed-key"
# 2026-03-15 23:00:00 UTC: an hour before a daily boundary.
LATE_EVENING = 1_773_615_600.0


class LiteLLMClient:
    """The request/dict behaviour of LiteLLM's ``BudgetManager(client_type="hosted")``.

    Costs are passed in directly (LiteLLM computes them from a response; what reaches
    the server is the float it adds). ``save_data`` runs synchronously unless ``threaded``.
    """

    def __init__(self, project_name: str, api_base: str, headers: dict[str, str] | None = None):
        self.project_name = project_name
        self.api_base = api_base
        self.headers = headers or {"Content-Type": "application/json"}
        self.threads: list[threading.Thread] = []
        self.responses: list[dict[str, Any]] = []
        self.load_data()

    def _post(self, path: str, data: dict[str, Any]) -> dict[str, Any]:
        response = httpx.post(self.api_base + path, headers=self.headers, json=data)
        body: dict[str, Any] = response.json()
        return body

    def load_data(self) -> None:
        response = self._post("/get_budget", {"project_name": self.project_name})
        self.user_dict: dict[str, Any] = {} if response["status"] == "error" else response["data"]

    def create_budget(
        self, total_budget: float, user: str, duration: str | None = None, created_at: float = 0.0
    ) -> dict[str, Any]:
        self.user_dict[user] = {"total_budget": total_budget}
        if duration is None:
            return dict(self.user_dict[user])
        days = {"daily": 1, "weekly": 7, "monthly": 28, "yearly": 365}[duration]
        self.user_dict[user] = {
            "total_budget": total_budget,
            "duration": days,
            "created_at": created_at,
            "last_updated_at": created_at,
        }
        self.save_data()
        return dict(self.user_dict[user])

    def update_cost(self, user: str, cost: float, model: str, *, threaded: bool = False) -> None:
        record = self.user_dict[user]
        record["current_cost"] = cost + record.get("current_cost", 0)
        if "model_cost" in record:
            record["model_cost"][model] = cost + record["model_cost"].get(model, 0)
        else:
            record["model_cost"] = {model: cost}
        self.save_data(threaded=threaded)

    def get_current_cost(self, user: str) -> float:
        value: float = self.user_dict[user].get("current_cost", 0)
        return value

    def reset_cost(self, user: str) -> None:
        self.user_dict[user]["current_cost"] = 0
        self.user_dict[user]["model_cost"] = {}

    def reset_on_duration(self, user: str, now: float) -> None:
        record = self.user_dict[user]
        if now - record["last_updated_at"] >= record["duration"] * 24 * 60 * 60:
            self.reset_cost(user)
            record["last_updated_at"] = now
            self.save_data()

    def save_data(self, *, threaded: bool = False) -> None:
        data = {"project_name": self.project_name, "user_dict": self.user_dict}
        if not threaded:
            self.responses.append(self._post("/set_budget", data))
            return
        # LiteLLM posts from a background thread, with the dict as it is when the thread
        # serialises it: later posts may overtake earlier ones.
        import copy

        snapshot = copy.deepcopy(data)
        thread = threading.Thread(target=lambda: self._post("/set_budget", snapshot))
        thread.start()
        self.threads.append(thread)

    def join(self) -> None:
        for thread in self.threads:
            thread.join()
        self.threads.clear()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(LATE_EVENING)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    opened = SQLiteStore(str(tmp_path / "server.db"))
    yield opened
    opened.close()


@pytest.fixture
def base(store: SQLiteStore, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.delenv("LLMBUDGET_ADMIN_KEY", raising=False)
    with live_server(create_app(ServerConfig(admin_key=KEY), store=store, clock=clock)) as url:
        yield url


HEADERS = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}


def _status(store: SQLiteStore, clock: FrozenClock, project: str, user: str) -> Any:
    ledger = Ledger(store, clock=clock)
    budget = ledger.get([f"user:{project}:{user}"])[0]
    assert budget is not None
    return ledger.status(budget)


def _api(base: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, base + path, headers={"Authorization": f"Bearer {KEY}"}, **kwargs)


def test_create_update_get_round_trip(base: str, store: SQLiteStore, clock: FrozenClock) -> None:
    client = LiteLLMClient("test_project", base, HEADERS)
    assert client.user_dict == {}  # status "error": nothing stored yet
    client.create_budget(total_budget=10, user="1234", duration="daily", created_at=clock())
    for _ in range(3):
        client.update_cost("1234", 7.3e-05, "gpt-3.5-turbo-0613")
    assert client.responses == [{"status": "success"}] * 4

    fresh = LiteLLMClient("test_project", base, HEADERS)
    record = fresh.user_dict["1234"]
    assert record["total_budget"] == 10.0
    assert record["current_cost"] == pytest.approx(0.000219)
    assert record["model_cost"] == {"gpt-3.5-turbo-0613": pytest.approx(0.000219)}
    assert record["duration"] == 1  # a number: LiteLLM multiplies it by 86400
    assert record["created_at"] == clock()
    assert record["last_updated_at"] == 1_773_532_800.0  # the current day's midnight
    # Exact money on the server: three float costs, summed as decimals.
    status = _status(store, clock, "test_project", "1234")
    assert status.spent == Decimal("0.000219")
    assert status.by_model == {"gpt-3.5-turbo-0613": Decimal("0.000219")}
    assert status.limit == Decimal(10)


def test_raw_request_bytes_as_litellm_sends_them(base: str) -> None:
    # What httpx puts on the wire for LiteLLM's post(url, headers=..., json=data).
    body = b'{"project_name":"raw","user_dict":{"u":{"total_budget":1.5,"duration":7,"created_at":1.0,"last_updated_at":1.0}}}'
    response = httpx.post(
        base + "/set_budget",
        content=body,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"},
    )
    assert response.status_code == 200
    assert response.json() == {"status": "success"}
    got = httpx.post(
        base + "/get_budget",
        content=b'{"project_name": "raw"}',
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"},
    ).json()
    assert got["status"] == "success"
    assert got["data"]["u"]["total_budget"] == 1.5
    assert got["data"]["u"]["duration"] == 7
    assert got["data"]["u"]["period"] == "weekly"


def test_unknown_project_is_status_error(base: str) -> None:
    response = httpx.post(base + "/get_budget", json={"project_name": "nope"}, headers=HEADERS)
    assert response.status_code == 200
    assert response.json()["status"] == "error"


def test_reposting_the_same_dict_charges_nothing_twice(
    base: str, store: SQLiteStore, clock: FrozenClock
) -> None:
    client = LiteLLMClient("p", base, HEADERS)
    client.create_budget(5, "u", "daily", created_at=clock())
    client.update_cost("u", 0.25, "m")
    for _ in range(3):
        client.save_data()
    fresh = LiteLLMClient("p", base, HEADERS)
    fresh.save_data()  # its marker says 0.25 is the baseline: nothing new
    assert _status(store, clock, "p", "u").spent == Decimal("0.25")


def test_two_clients_and_an_api_writer_lose_nothing(
    base: str, store: SQLiteStore, clock: FrozenClock
) -> None:
    setup = LiteLLMClient("p", base, HEADERS)
    setup.create_budget(100, "u", "daily", created_at=clock())
    a = LiteLLMClient("p", base, HEADERS)
    b = LiteLLMClient("p", base, HEADERS)
    for _ in range(5):
        a.update_cost("u", 0.1, "gpt-4o")
        b.update_cost("u", 0.2, "gpt-4o-mini")
        _api(base, "POST", "/v1/projects/p/charge", json={"user": "u", "amount": "0.05"})
        b.update_cost("u", 0.01, "gpt-4o")
    status = _status(store, clock, "p", "u")
    # Each client only ever saw its own costs, yet every increment landed.
    assert a.get_current_cost("u") == pytest.approx(0.5)
    assert status.spent == Decimal("0.5") + Decimal("1.0") + Decimal("0.25") + Decimal("0.05")
    assert status.by_model == {"gpt-4o": Decimal("0.55"), "gpt-4o-mini": Decimal("1.0")}


def test_background_posts_out_of_order_are_counted_once(
    base: str, store: SQLiteStore, clock: FrozenClock
) -> None:
    client = LiteLLMClient("p", base, HEADERS)
    client.create_budget(100, "u", "daily", created_at=clock())
    for _ in range(40):
        client.update_cost("u", 0.003, "m", threaded=True)
    client.join()
    status = _status(store, clock, "p", "u")
    assert status.spent == Decimal("0.12")
    assert status.by_model == {"m": Decimal("0.12")}


def test_reset_cost_resets_the_current_window(
    base: str, store: SQLiteStore, clock: FrozenClock
) -> None:
    client = LiteLLMClient("p", base, HEADERS)
    client.create_budget(10, "u", "daily", created_at=clock())
    client.update_cost("u", 1.0, "m")
    clock.advance(10)  # past the straggler window (see the next test)
    client.reset_cost("u")
    client.update_cost("u", 0.25, "m")  # LiteLLM's reset_cost does not post; this does
    status = _status(store, clock, "p", "u")
    assert status.spent == Decimal("0.25")
    assert status.by_model == {"m": Decimal("0.25")}
    client.update_cost("u", 0.25, "m")
    assert _status(store, clock, "p", "u").spent == Decimal("0.5")


def test_a_reset_right_after_spending_is_applied_by_the_next_post(
    base: str, store: SQLiteStore, clock: FrozenClock
) -> None:
    client = LiteLLMClient("p", base, HEADERS)
    client.create_budget(10, "u", "daily", created_at=clock())
    client.update_cost("u", 1.0, "m")
    client.reset_cost("u")
    client.update_cost("u", 0.25, "m")  # within seconds: could be a straggler, so kept safe
    assert _status(store, clock, "p", "u").spent == Decimal("1")
    clock.advance(10)
    client.update_cost("u", 0.25, "m")  # now it is a reset, with all spent since
    status = _status(store, clock, "p", "u")
    assert status.spent == Decimal("0.5")


def test_reset_on_duration_keeps_other_writers_spend_in_the_new_window(
    base: str, store: SQLiteStore, clock: FrozenClock
) -> None:
    client = LiteLLMClient("p", base, HEADERS)
    client.create_budget(10, "u", "daily", created_at=clock())
    client = LiteLLMClient("p", base, HEADERS)  # loaded: last_updated_at is today's midnight
    client.update_cost("u", 0.5, "m")
    clock.advance(90 * 60)  # 00:30 the next day: the server's window rolled over by itself
    assert _status(store, clock, "p", "u").spent == 0
    _api(base, "POST", "/v1/projects/p/charge", json={"user": "u", "amount": "0.3"})
    client.reset_on_duration("u", now=clock())  # the client notices the day ended, posts 0
    assert client.get_current_cost("u") == 0
    assert _status(store, clock, "p", "u").spent == Decimal("0.3")  # not wiped
    client.update_cost("u", 0.1, "m")
    assert _status(store, clock, "p", "u").spent == Decimal("0.4")
    history = _api(base, "GET", "/v1/projects/p/history/u").json()["history"]
    assert [h["spent"] for h in history] == ["0.4", "0.5"]


def test_client_created_user_counts_from_zero_on_top_of_existing_spend(
    base: str, store: SQLiteStore, clock: FrozenClock
) -> None:
    created = _api(
        base, "POST", "/v1/projects/p/budgets", json={"user": "u", "amount": "5", "period": "daily"}
    )
    assert created.status_code == 201
    _api(base, "POST", "/v1/projects/p/charge", json={"user": "u", "amount": "2"})
    client = LiteLLMClient("p", base, HEADERS)
    client.create_budget(8, "u", "daily", created_at=clock())  # no marker: a record of its own
    client.update_cost("u", 0.5, "m")
    status = _status(store, clock, "p", "u")
    assert status.spent == Decimal("2.5")
    assert status.limit == Decimal(8)


@pytest.mark.parametrize(
    ("days", "period"),
    [(1, "daily"), (7, "weekly"), (28, "monthly"), (30, "monthly"), (31, "monthly"),
     (365, "yearly"), (2, "2d"), (90, "90d"), (0.5, "12h")],
)  # fmt: skip
def test_duration_days_map_to_periods(days: float, period: str) -> None:
    assert period_from_days(days) == period


def test_a_duration_equal_to_what_was_reported_keeps_the_period(
    base: str, store: SQLiteStore, clock: FrozenClock
) -> None:
    _api(base, "POST", "/v1/projects/p/budgets", json={"user": "u", "amount": "5", "period": "30d"})
    client = LiteLLMClient("p", base, HEADERS)
    assert client.user_dict["u"]["duration"] == 30
    client.update_cost("u", 0.1, "m")
    budget = Ledger(store, clock=clock).get(["user:p:u"])[0]
    assert budget is not None
    assert budget.period.describe() == "30d"  # not rewritten as "monthly"
    assert seed_days(budget.period) == 30


@pytest.mark.parametrize(
    "bad",
    [
        {"total_budget": "ten"},
        {"total_budget": -1},
        {"total_budget": True},
        {"total_budget": 5, "duration": -1},
        {"total_budget": 5, "duration": "fortnightly"},
        {"total_budget": 5, "current_cost": -0.5},
        {"total_budget": 5, "model_cost": ["gpt-4o"]},
        {"total_budget": 5, "model_cost": {"m": "lots"}},
        {"total_budget": 5, "created_at": "yesterday"},
        {"total_budget": 5, "llmbudget_sync": {"session": "../../etc"}},
        {"duration": 1},
        "not a record",
    ],
)
def test_a_bad_record_anywhere_stores_nothing(base: str, store: SQLiteStore, bad: Any) -> None:
    body = {
        "project_name": "p",
        "user_dict": {"good": {"total_budget": 5, "current_cost": 1.0}, "bad": bad},
    }
    response = httpx.post(base + "/set_budget", json=body, headers=HEADERS)
    assert response.status_code in (400, 422)
    payload = response.json()
    assert payload["status"] == "error"
    assert payload["error"]["message"]
    assert store.list_budgets("") == []
    assert store.history("user:p:good") == []


def test_seed_endpoints_need_the_key(base: str) -> None:
    response = httpx.post(
        base + "/set_budget",
        json={"project_name": "p", "user_dict": {"u": {"total_budget": 1}}},
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 401
    assert response.json()["status"] == "error"
    response = httpx.post(
        base + "/get_budget",
        json={"project_name": "p"},
        headers={"Authorization": "Bearer wrong"},
    )
    assert response.status_code == 403


def test_real_litellm_client_if_installed(
    base: str, store: SQLiteStore, clock: FrozenClock
) -> None:
    litellm = pytest.importorskip("litellm", reason="litellm is not installed (optional)")

    def spent() -> Decimal:
        budget = Ledger(store, clock=clock).get(["user:lite:1234"])[0]
        return Decimal(0) if budget is None else Ledger(store, clock=clock).status(budget).spent

    def wait_until(check: Any) -> None:
        deadline = time.monotonic() + 10
        while not check() and time.monotonic() < deadline:
            time.sleep(0.05)  # LiteLLM saves from a background thread

    first = litellm.BudgetManager(
        project_name="lite", client_type="hosted", api_base=base, headers=HEADERS
    )
    first.create_budget(total_budget=10, user="1234", duration="daily", created_at=clock())
    wait_until(lambda: store.get_budgets(["user:lite:1234"])[0] is not None)
    first.update_cost(user="1234", model="gpt-3.5-turbo", input_text="hello", output_text="hi")
    wait_until(lambda: spent() > 0)
    one_call = spent()
    assert one_call > 0

    second = litellm.BudgetManager(
        project_name="lite", client_type="hosted", api_base=base, headers=HEADERS
    )
    assert second.get_total_budget("1234") == 10
    assert second.user_dict["1234"]["duration"] == 1
    assert Decimal(repr(second.get_current_cost("1234"))) == one_call
    # Both clients add a call: neither overwrites the other's.
    first.update_cost(user="1234", model="gpt-3.5-turbo", input_text="hello", output_text="hi")
    second.update_cost(user="1234", model="gpt-3.5-turbo", input_text="hello", output_text="hi")
    wait_until(lambda: spent() >= 3 * one_call)
    assert spent() == 3 * one_call


def _limit(store: SQLiteStore, clock: FrozenClock, user: str = "u") -> Any:
    budget = Ledger(store, clock=clock).get([f"user:p:{user}"])[0]
    return None if budget is None else (budget.limit, budget.period.describe())


def test_a_stale_dict_does_not_undo_an_admins_limit_change(
    base: str, store: SQLiteStore, clock: FrozenClock
) -> None:
    body = {"user": "u", "amount": "100", "period": "daily"}
    assert _api(base, "POST", "/v1/projects/p/budgets", json=body).status_code == 201
    client = LiteLLMClient("p", base, HEADERS)
    assert client.user_dict["u"]["total_budget"] == 100.0
    patched = _api(base, "PATCH", "/v1/projects/p/budgets/u", json={"amount": "10"})
    assert patched.status_code == 200
    client.update_cost("u", 0.5, "m")  # posts the whole dict, still saying 100
    assert _limit(store, clock) == (Decimal(10), "daily")
    assert _status(store, clock, "p", "u").spent == Decimal("0.5")
    # The admin changes the period; the client then changes only the limit: both stay.
    assert (
        _api(base, "PATCH", "/v1/projects/p/budgets/u", json={"period": "weekly"}).status_code
        == 200
    )
    client.user_dict["u"]["total_budget"] = 50
    client.save_data()
    assert _limit(store, clock) == (Decimal(50), "weekly")
    # And a duration the client changed itself is written.
    client.user_dict["u"]["duration"] = 28
    client.save_data()
    assert _limit(store, clock) == (Decimal(50), "monthly")


def test_a_stale_dict_does_not_recreate_a_deleted_budget(
    base: str, store: SQLiteStore, clock: FrozenClock
) -> None:
    for user in ("u", "v"):
        body = {"user": user, "amount": "100", "period": "daily"}
        assert _api(base, "POST", "/v1/projects/p/budgets", json=body).status_code == 201
    client = LiteLLMClient("p", base, HEADERS)
    for user in ("u", "v"):
        assert _api(base, "DELETE", f"/v1/projects/p/budgets/{user}").status_code == 200
    client.update_cost("u", 0.5, "m")
    assert client.responses[-1] == {"status": "success"}
    assert _limit(store, clock, "u") is None and _limit(store, clock, "v") is None
    # Unless the client changes the limit (or duration) itself: then it is its budget.
    client.user_dict["v"]["total_budget"] = 7
    client.save_data()
    assert _limit(store, clock, "u") is None
    assert _limit(store, clock, "v") == (Decimal(7), "daily")
    # A brand-new user of the client (no marker) is created as before.
    client.create_budget(3, "w", "weekly", created_at=clock())
    assert _limit(store, clock, "w") == (Decimal(3), "weekly")
