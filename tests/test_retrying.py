from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from llmbudget import plans
from llmbudget.errors import BudgetExceededError
from llmbudget.plans import Plan
from llmbudget.retrying import plan_attempts, retry_after

REFUSED = BudgetExceededError("user:x", Decimal(1), Decimal(1), Decimal(0), Decimal("0.1"))


def _attempts(outcomes: list[object]) -> Any:
    def attempt(number: int) -> Plan[object]:
        outcome = outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome
        yield  # a plan

    return attempt


def run_sync(outcomes: list[object], attempts: int, delays: list[float]) -> object:
    def delay_for(error: BaseException, number: int, left: int) -> float | None:
        delays.append(float(left))
        return None if isinstance(error, ValueError) else 0.0

    return plans.run_sync(plan_attempts(attempts, _attempts(outcomes), delay_for))


async def run_async(outcomes: list[object], attempts: int) -> object:
    plan = plan_attempts(attempts, _attempts(outcomes), lambda error, number, left: 0.0)
    return await plans.run_async(plan)


def test_retries_until_success_and_counts_attempts_left() -> None:
    delays: list[float] = []
    assert run_sync([ConnectionError(), ConnectionError(), "ok"], 3, delays) == "ok"
    assert delays == [2.0, 1.0]


def test_gives_up_with_the_last_error() -> None:
    last = ConnectionError("third")
    with pytest.raises(ConnectionError, match="third"):
        run_sync([ConnectionError("1"), ConnectionError("2"), last], 3, [])


def test_an_error_not_worth_retrying_is_raised_at_once() -> None:
    outcomes: list[object] = [ValueError("bad request"), "never"]
    with pytest.raises(ValueError, match="bad request"):
        run_sync(outcomes, 3, [])
    assert outcomes == ["never"]


def test_a_refused_retry_ends_with_the_error_that_caused_it() -> None:
    with pytest.raises(ConnectionError, match="upstream down"):
        run_sync([ConnectionError("upstream down"), REFUSED], 3, [])
    with pytest.raises(BudgetExceededError):
        run_sync([REFUSED, "never"], 3, [])


def test_interrupts_pass_straight_through() -> None:
    with pytest.raises(KeyboardInterrupt):
        run_sync([KeyboardInterrupt(), "never"], 3, [])


async def test_the_async_runner_makes_the_same_decisions() -> None:
    assert await run_async([ConnectionError(), "ok"], 2) == "ok"
    with pytest.raises(ConnectionError, match="down"):
        await run_async([ConnectionError("down"), REFUSED], 3)


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "2"}, 2.0),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),
        ({"retry-after": "-1"}, None),
        ({"retry-after": "3600"}, None),
        ({}, None),
        (None, None),
    ],
)
def test_retry_after_reads_seconds_and_milliseconds(headers: Any, seconds: float | None) -> None:
    assert retry_after(headers) == seconds
