"""Plans: operations written once, as generators, and run sync or async.

A plan is a generator that yields *effects* and receives their results. :func:`run_sync`
performs each effect in the calling thread; :func:`run_async` awaits it, sending blocking
I/O to a worker thread. An effect that raises is thrown back into the plan at its
``yield``, so the plan can release what it holds (or let the error propagate). Neither
runner holds any logic of the operations themselves: the ledger, the global budget and
the budgeted calls are each written once.

>>> def double(x: int) -> Plan[int]:
...     y = yield Io(lambda v: v * 2, (x,), blocking=False)
...     return y
>>> run_sync(double(21))
42
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar, cast

__all__ = ["Io", "Plan", "run_async", "run_sync"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Io:
    """An effect: call ``fn(*args)``. ``blocking`` effects run in a worker thread when the
    plan runs under asyncio (store I/O); non-blocking ones (in-memory stores) run inline."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    blocking: bool = True


Plan = Generator[Any, Any, T]
"""A generator yielding effects (:class:`Io`, or what the runner's ``handle`` knows)."""


def run_sync(plan: Plan[T], handle: Callable[[Any], Any] | None = None) -> T:
    """Run ``plan`` to its end. An effect that raises is thrown back into the plan, so
    it can release what it holds; ``handle`` executes effects that are not :class:`Io`."""
    result: Any = None
    error: BaseException | None = None
    while True:
        try:
            effect = plan.throw(error) if error is not None else plan.send(result)
        except StopIteration as done:
            return cast(T, done.value)
        result, error = None, None
        try:
            if isinstance(effect, Io):
                result = effect.fn(*effect.args)
            elif handle is not None:
                result = handle(effect)
            else:
                raise TypeError(f"no handler for effect {effect!r}")
        except BaseException as exc:
            error = exc


async def run_async(plan: Plan[T], handle: Callable[[Any], Awaitable[Any]] | None = None) -> T:
    """:func:`run_sync` under asyncio: blocking effects go to a thread, ``handle`` is awaited."""
    result: Any = None
    error: BaseException | None = None
    while True:
        try:
            effect = plan.throw(error) if error is not None else plan.send(result)
        except StopIteration as done:
            return cast(T, done.value)
        result, error = None, None
        try:
            if isinstance(effect, Io):
                if effect.blocking:
                    result = await asyncio.to_thread(effect.fn, *effect.args)
                else:
                    result = effect.fn(*effect.args)
                    if inspect.isawaitable(result):  # an async store's coroutine
                        result = await result
            elif handle is not None:
                result = await handle(effect)
            else:
                raise TypeError(f"no handler for effect {effect!r}")
        except BaseException as exc:
            error = exc
