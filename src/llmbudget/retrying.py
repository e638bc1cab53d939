"""Retrying a provider call, each attempt reserved and settled on its own.

The decisions (retry or give up, how long to wait, which error to raise at the end) are
written once, in :meth:`Retrying._after`; iterating with ``for`` sleeps with
``time.sleep`` and with ``async for`` with ``asyncio.sleep``, and that is all that
differs::

    for attempt in Retrying(3, delay_for):
        with attempt:
            return call_once()          # an exception is judged by delay_for

A :class:`~llmbudget.errors.BudgetExceededError` on a retry ends the loop with the
provider error that caused the retry: the call failed as that attempt did, and the
budget simply cannot pay for another try.

>>> calls = []
>>> def flaky() -> str:
...     calls.append(1)
...     if len(calls) < 3:
...         raise ConnectionError("try again")
...     return "ok"
>>> def run() -> str:
...     for attempt in Retrying(5, lambda error, number, left: 0.0):
...         with attempt:
...             return flaky()
...     raise AssertionError("unreachable")
>>> run(), len(calls)
('ok', 3)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from types import TracebackType

from llmbudget.errors import BudgetExceededError

__all__ = ["Attempt", "DelayFor", "Retrying"]

DelayFor = Callable[[BaseException, int, int], float | None]
"""``(error, attempt number, attempts left) -> seconds to wait, or None to give up``."""


class Attempt:
    """One try: a context manager that keeps an ordinary exception for :class:`Retrying`
    to judge (``KeyboardInterrupt`` and the like pass straight through)."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.error: Exception | None = None

    def __enter__(self) -> Attempt:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if isinstance(error, Exception):
            self.error = error
            return True
        return False


class Retrying:
    """Up to ``attempts`` tries; ``delay_for`` decides, after each failure, whether and when
    to try again."""

    def __init__(self, attempts: int, delay_for: DelayFor) -> None:
        self.attempts = max(1, attempts)
        self.delay_for = delay_for
        self._failure: Exception | None = None

    def _after(self, attempt: Attempt) -> float:
        """Seconds to wait before the next attempt; raises when there is none."""
        error = attempt.error
        assert error is not None
        if isinstance(error, BudgetExceededError) and self._failure is not None:
            raise self._failure
        left = self.attempts - 1 - attempt.number
        delay = None if isinstance(error, BudgetExceededError) else self.delay_for(
            error, attempt.number, left
        )  # fmt: skip
        if delay is None or left <= 0:
            raise error
        self._failure = error
        return delay

    def __iter__(self) -> Iterator[Attempt]:
        for number in range(self.attempts):
            attempt = Attempt(number)
            yield attempt
            if attempt.error is None:
                return  # the body returned or broke out; nothing left to decide
            time.sleep(self._after(attempt))

    async def __aiter__(self) -> AsyncIterator[Attempt]:
        for number in range(self.attempts):
            attempt = Attempt(number)
            yield attempt
            if attempt.error is None:
                return
            await asyncio.sleep(self._after(attempt))
