"""Money shown to people or in JSON is a plain decimal string: ``0.00000006``, never ``6E-8``.

Property tests over amounts from one nano-dollar to the largest a store can hold: the
formatters, every ``to_dict``, error messages, the budget server's JSON (budgets, spend,
history, reserve/settle/charge, the 429 body), the gateway's spend log API and the
dashboard pages.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmbudget.budgets import BudgetStatus
from llmbudget.errors import BudgetExceededError
from llmbudget.gateway.spendlog import SPEND_LOG_KIND, query_spend_logs, render_spend_table
from llmbudget.http_errors import budget_exceeded_error
from llmbudget.money import format_dollars, format_money, from_units
from llmbudget.server import ServerConfig, create_app
from llmbudget.stores.memory import MemoryStore
from tests.gateway_fakes import deployment

KEY = "money-display-key"
MAX_UNITS = 2**63 - 1
# A number in exponent notation (6E-8, 1e+3, 1.5E3), not inside a word or a hex id.
EXPONENT = re.compile(r"(?<![\w.])\d+(\.\d+)?[eE][+-]?\d+(?![\w.])")
PLAIN = re.compile(r"\d+(\.\d+)?")
MONEY_KEYS = {"limit", "spent", "held", "remaining", "requested", "amount", "recorded",
              "charged", "cost", "reserved"}  # fmt: skip

units = st.one_of(
    st.integers(0, 10_000),  # up to $0.00001: str() of these is all exponent notation
    st.integers(0, MAX_UNITS),
    st.sampled_from([1, 60, 10**9, 10**12, MAX_UNITS]),
)
amounts = units.map(from_units)
# Decimals as callers pass them: any exponent, trailing zeros, up to ~$9.2 billion.
decimals = st.one_of(
    amounts,
    st.builds(
        lambda digits, exp: Decimal(digits).scaleb(exp),
        st.integers(0, 10**12),
        st.integers(-20, -2),
    ),
    st.decimals(min_value=0, max_value=Decimal("9e9"), allow_nan=False, allow_infinity=False),
)
_users = itertools.count()


def _check_json(node: Any, key: str = "") -> int:
    """Assert every money field of a JSON document is a plain decimal string (and no
    string anywhere is a number in exponent notation); returns how many were checked."""
    if isinstance(node, dict):
        return sum(_check_json(v, "by_model" if key == "by_model" else k) for k, v in node.items())
    if isinstance(node, list):
        return sum(_check_json(v, key) for v in node)
    if isinstance(node, str):
        _assert_plain(node)
        if key in MONEY_KEYS or key == "by_model":
            assert PLAIN.fullmatch(node), (key, node)
            return 1
    return 0


def _assert_plain(text: str) -> None:
    assert not EXPONENT.search(text), text


# -- the formatters --------------------------------------------------------------------


@given(decimals)
def test_format_money_is_plain_exact_and_canonical(value: Decimal) -> None:
    text = format_money(value)
    assert re.fullmatch(r"\d+(\.\d*[1-9])?", text), text
    assert Decimal(text) == value


@given(decimals)
def test_format_dollars_is_plain_exact_with_cents(value: Decimal) -> None:
    text = format_dollars(value)
    assert re.fullmatch(r"\$\d{1,3}(,\d{3})*\.\d{2,}", text), text
    assert Decimal(text[1:].replace(",", "")) == value


def test_format_examples() -> None:
    assert format_money(Decimal("6E-8")) == "0.00000006"
    assert format_money(Decimal("1E+3")) == "1000"
    assert format_money(Decimal("0E-9")) == "0"
    assert format_money(Decimal("-0")) == "0"
    assert format_money(7) == "7"
    assert format_dollars(Decimal("1234.5")) == "$1,234.50"
    assert format_dollars(Decimal("6E-8")) == "$0.00000006"
    assert format_dollars(None) == "—"


# -- to_dict and messages --------------------------------------------------------------


@given(limit=amounts, spent=amounts, held=amounts, cost=amounts)
def test_budget_status_to_dict_is_plain(
    limit: Decimal, spent: Decimal, held: Decimal, cost: Decimal
) -> None:
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    status = BudgetStatus("user:p:u", limit, spent, held, moment, moment, {"m": cost})
    data = status.to_dict()
    assert _check_json(data) == 5
    assert Decimal(str(data["spent"])) == spent
    assert data["by_model"] == {"m": format_money(cost)}


@given(limit=amounts, spent=amounts, held=amounts, requested=amounts)
def test_budget_exceeded_error_dict_message_and_429_body_are_plain(
    limit: Decimal, spent: Decimal, held: Decimal, requested: Decimal
) -> None:
    resets = datetime(2026, 1, 2, tzinfo=UTC)
    exc = BudgetExceededError("user:p:u", limit, spent, held, requested, resets)
    data = exc.to_dict()
    assert data["requested"] == format_money(requested)
    _assert_plain(str(exc))
    assert f"limit ${format_money(limit)}," in str(exc)
    body = budget_exceeded_error(exc, now=resets.timestamp() - 60).body()
    assert _check_json(data) == 4
    assert _check_json(body) == 5
    assert body["error"]["remaining"] == format_money(exc.remaining)


# -- the server's JSON, the gateway's spend log, the dashboard --------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[TestClient, MemoryStore]]:
    store = MemoryStore()
    config = ServerConfig(admin_key=KEY, gateway={"model_list": [deployment("http://127.0.0.1:9")]})
    with TestClient(create_app(config, store=store)) as client:
        client.headers["Authorization"] = f"Bearer {KEY}"
        yield client, store


def _json(response: Any, *statuses: int) -> Any:
    assert response.status_code in statuses, response.text
    assert _check_json(response.json()) > 0
    return response.json()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
# Charged plus reserved stays inside what a store counter holds (past it is refused: 400).
@given(
    limit=units,
    charged=units.filter(lambda u: u <= MAX_UNITS - 10**6),
    reserve=st.integers(1, 10**6),
)
def test_server_json_money_is_plain(
    server: tuple[TestClient, MemoryStore], limit: int, charged: int, reserve: int
) -> None:
    client, _ = server
    user = f"u{next(_users)}"
    base = "/v1/projects/money"
    created = _json(
        client.post(
            f"{base}/budgets", json={"user": user, "amount": format_money(from_units(limit))}
        ),
        201,
    )
    assert Decimal(created["limit"]) == from_units(limit)
    done = _json(
        client.post(
            f"{base}/charge",
            json={"user": user, "amount": format_money(from_units(charged)), "model": "m"},
        ),
        200,
    )
    assert Decimal(done["charged"]) == from_units(charged)
    held = client.post(
        f"{base}/reserve", json={"user": user, "amount": format_money(from_units(reserve))}
    )
    reply = _json(held, 201, 429)
    if held.status_code == 201:
        _json(
            client.post(
                f"{base}/settle",
                json={"user": user, "hold_id": reply["hold_id"],
                      "actual": format_money(from_units(reserve // 2))},
            ),
            200,
        )  # fmt: skip
    else:
        assert reply["error"]["code"] == "budget_exceeded"
    status = _json(client.get(f"{base}/budgets/{user}"), 200)
    assert Decimal(status["spent"]) == from_units(
        charged + (reserve // 2 if held.status_code == 201 else 0)
    )
    _json(client.get(f"{base}/budgets"), 200)
    _json(client.get(f"{base}/spend"), 200)
    _json(client.get(f"{base}/history/{user}"), 200)
    _json(client.post(f"{base}/reset", json={"user": user}), 200)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cost=amounts, reserved=amounts)
def test_spend_log_api_and_pages_show_plain_money(
    server: tuple[TestClient, MemoryStore], cost: Decimal, reserved: Decimal
) -> None:
    client, store = server
    ident = f"req_{next(_users)}"
    # Written as the proxy writes its entries (str() of a Decimal: "6E-8" for tiny costs).
    entry = {"id": ident, "key": "key_1", "user": "ann", "model": "m",
             "cost": str(cost), "reserved": str(reserved), "status": "ok"}  # fmt: skip
    store.append_log(SPEND_LOG_KIND, 2_000_000_000.0 + next(_users), entry)

    rows = _json(client.get("/v1/spend/logs", params={"limit": 1}), 200)["data"]
    assert rows[0]["id"] == ident
    assert (rows[0]["cost"], rows[0]["reserved"]) == (format_money(cost), format_money(reserved))
    rows = asyncio.run(query_spend_logs(store, limit=1))
    assert rows[0]["cost"] == format_money(cost)
    _assert_plain(render_spend_table(rows))
    page = client.get("/ui/spend")
    # The dashboard shows dollars for people ($1,000.00, $0.00000006), never exponents.
    assert page.status_code == 200 and format_dollars(cost) in page.text
    _assert_plain(page.text)


def test_dashboard_shows_tiny_spend_in_full(server: tuple[TestClient, MemoryStore]) -> None:
    client, _ = server
    base = "/v1/projects/tiny"
    _json(client.post(f"{base}/budgets", json={"user": "t", "amount": "0.00000009"}), 201)
    _json(client.post(f"{base}/charge", json={"user": "t", "amount": "0.00000006"}), 200)
    page = client.get("/ui/projects/tiny")
    assert page.status_code == 200
    assert "$0.00000006" in page.text and "$0.00000009" in page.text
    _assert_plain(page.text)


@pytest.mark.parametrize("name", ["llmbudget.money", "llmbudget.gateway.spendlog"])
def test_docstring_examples(name: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0
