"""Outcomes: a call's result, or the exception it raised, carried as one value.

Batching helpers (:mod:`llmbudget.stores.pipelining`, :mod:`llmbudget.stores.group_commit`)
run many callers' calls together and hand each caller back its own outcome.

>>> import asyncio
>>> async def main():
...     future = asyncio.get_running_loop().create_future()
...     deliver(future, ValueError("no"))
...     return type(future.exception()).__name__
>>> asyncio.run(main())
'ValueError'
>>> unwrap(capture(lambda: 3))
3
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

__all__ = ["capture", "deliver", "unwrap"]


def deliver(future: asyncio.Future[Any] | Future[Any], outcome: Any) -> None:
    """Complete ``future`` with ``outcome`` (an exception instance is raised to its
    waiter); a future already done (its caller was cancelled) is left alone."""
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def unwrap(outcome: Any) -> Any:
    """The result an outcome carries, or its exception, raised."""
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def capture(call: Callable[[], Any]) -> Any:
    """``call``'s outcome: its result, or the exception it raised."""
    try:
        return call()
    except BaseException as exc:
        return exc
