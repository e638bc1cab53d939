"""Retrying a provider call, each attempt reserved and settled on its own.

The loop is a plan (see :mod:`llmbudget.plans`), so it is written once for sync and async
callers; :func:`retry_delay` decides, as the ``openai`` / ``anthropic`` SDKs do, whether
and when to try again::

    result = yield from plan_attempts(3, attempt_plan, retry_delay_for_this_client)

A :class:`~llmbudget.errors.BudgetExceededError` on a retry ends the loop with the
provider error that caused the retry: the call failed as that attempt did, and the
budget simply cannot pay for another try.

>>> from llmbudget.plans import run_sync
>>> calls = []
>>> def attempt(number: int):
...     calls.append(number)
...     if number < 2:
...         raise ConnectionError("try again")
...     return "ok"
...     yield  # a plan
>>> run_sync(plan_attempts(5, attempt, lambda error, number, left: 0.0)), calls
('ok', [0, 1, 2])
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from llmbudget.errors import BudgetExceededError
from llmbudget.plans import Plan, Sleep

__all__ = ["DelayFor", "plan_attempts", "retry_after", "retry_delay"]

T = TypeVar("T")

DelayFor = Callable[[BaseException, int, int], float | None]
"""``(error, attempt number, attempts left) -> seconds to wait, or None to give up``."""

# The SDKs' retry statuses.
_RETRY_STATUSES = frozenset({408, 409, 429})
_MAX_RETRY_AFTER = 60.0


def plan_attempts(attempts: int, attempt: Callable[[int], Plan[T]], delay_for: DelayFor) -> Plan[T]:
    """Run ``attempt(0)``, ``attempt(1)``... until one returns, at most ``attempts``
    times, pausing as ``delay_for`` says after each failure."""
    attempts = max(1, attempts)
    failure: Exception | None = None
    for number in range(attempts):
        try:
            return (yield from attempt(number))
        except BudgetExceededError:
            if failure is not None:
                raise failure from None
            raise
        except Exception as exc:
            left = attempts - 1 - number
            delay = delay_for(exc, number, left) if left > 0 else None
            if delay is None:
                raise
            failure = exc
        yield Sleep(delay)
    raise AssertionError("the last attempt raises or returns")


def retry_after(headers: Mapping[str, str] | Any) -> float | None:
    """Seconds a ``Retry-After`` header (or ``retry-after-ms``) asks to wait; ``None`` when
    absent, unreadable or not a small positive number of seconds (HTTP dates are not
    worth waiting for)."""
    if headers is None:
        return None
    try:
        milliseconds = headers.get("retry-after-ms")
        if milliseconds is not None:
            value = float(milliseconds) / 1000
        else:
            raw = headers.get("retry-after")
            if raw is None:
                return None
            value = float(raw)
    except (TypeError, ValueError, AttributeError):
        return None
    return value if 0 < value <= _MAX_RETRY_AFTER else None


def _status_of(error: BaseException) -> int | None:
    status = getattr(error, "status_code", None)
    return status if isinstance(status, int) and not isinstance(status, bool) else None


def retry_delay(
    error: BaseException,
    retries_taken: int,
    remaining: int,
    client: Any = None,
    options: Any = None,
) -> float | None:
    """Seconds to wait before trying a failed request again, or ``None`` to give up.

    Retried as the SDKs retry: connection errors and timeouts, HTTP 408, 409, 429 and
    5xx (and whatever the server's ``x-should-retry`` header says). The pause honours
    ``Retry-After`` (through the SDK client's own rule when ``client`` is given)."""
    if remaining <= 0 or not isinstance(error, Exception):
        return None
    names = {cls.__name__ for cls in type(error).__mro__}
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None)
    if "APIStatusError" in names or ("ProviderError" in names and _status_of(error) is not None):
        should = getattr(client, "_should_retry", None)
        if callable(should) and response is not None:
            try:
                if not should(response):
                    return None
            except Exception:
                should = None
        if not callable(should) or response is None:
            status = _status_of(error) or 0
            if status not in _RETRY_STATUSES and status < 500:
                return None
    elif not names & {"APIConnectionError", "ProviderConnectionError"}:
        return None
    else:
        headers = None
    calculate = getattr(client, "_calculate_retry_timeout", None)
    if callable(calculate) and options is not None:
        try:
            return float(calculate(remaining, options, headers))
        except Exception:
            pass
    after = retry_after(headers)
    if after is None:
        given = getattr(error, "retry_after", None)
        if isinstance(given, int | float) and 0 < given <= _MAX_RETRY_AFTER:
            after = float(given)
    if after is not None:
        return after
    return min(0.5 * 2.0**retries_taken, 8.0) * (1 - 0.25 * random.random())
