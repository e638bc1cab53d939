from __future__ import annotations

from decimal import Decimal

import pytest

from llmbudget.errors import BudgetExceededError
from llmbudget.retrying import Retrying

REFUSED = BudgetExceededError("user:x", Decimal(1), Decimal(1), Decimal(0), Decimal("0.1"))


def run_sync(outcomes: list[object], attempts: int, delays: list[float]) -> object:
    def delay_for(error: BaseException, number: int, left: int) -> float | None:
        delays.append(float(left))
        return None if isinstance(error, ValueError) else 0.0

    for attempt in Retrying(attempts, delay_for):
        with attempt:
            outcome = outcomes.pop(0)
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome
    raise AssertionError("unreachable")


async def run_async(outcomes: list[object], attempts: int) -> object:
    async for attempt in Retrying(attempts, lambda error, number, left: 0.0):
        with attempt:
            outcome = outcomes.pop(0)
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome
    raise AssertionError("unreachable")


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


async def test_async_iteration_makes_the_same_decisions() -> None:
    assert await run_async([ConnectionError(), "ok"], 2) == "ok"
    with pytest.raises(ConnectionError, match="down"):
        await run_async([ConnectionError("down"), REFUSED], 3)
