"""Plans: operations written once, as generators, and run sync or async.

A plan is a generator that yields *effects* (:class:`Effect`: a store operation of
:mod:`llmbudget.operations`, or an :class:`Io` call) and receives their results.
:func:`run_sync` performs each effect in the calling thread; :func:`run_async` awaits it,
sending blocking I/O to a worker thread. An effect that raises is thrown back into the
plan at its ``yield``, so the plan can release what it holds (or let the error
propagate). Neither runner holds any logic of the operations themselves: the ledger, the
budgeted calls and the gateway's requests are each written once, as plans.

>>> def double(x: int) -> Plan[int]:
...     y = yield Io(lambda v: v * 2, (x,), blocking=False)
...     return y
>>> run_sync(double(21))
42
"""

from __future__ import annotations

import asyncio
import inspect
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar, cast

__all__ = ["Effect", "Io", "Plan", "Sleep", "run_async", "run_sync"]

T = TypeVar("T")


class Effect(ABC):
    """Something a plan asks its runner to do: :meth:`run` in a synchronous plan,
    :meth:`arun` under asyncio."""

    @abstractmethod
    def run(self) -> Any:
        """Do it, in this thread."""

    async def arun(self) -> Any:
        """Do it under asyncio; an awaitable that :meth:`run` returns is awaited."""
        result = self.run()
        if inspect.isawaitable(result):
            result = await result
        return result


@dataclass(frozen=True, slots=True)
class Io(Effect):
    """Call ``fn(*args)``. Under asyncio a ``blocking`` call runs in a worker thread; the
    others run inline (a coroutine they return is awaited)."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    blocking: bool = True

    def run(self) -> Any:
        return self.fn(*self.args)

    async def arun(self) -> Any:
        if self.blocking:
            return await asyncio.to_thread(self.fn, *self.args)
        return await Effect.arun(self)


@dataclass(frozen=True, slots=True)
class Sleep(Effect):
    """Pause: ``time.sleep`` in a synchronous plan, ``asyncio.sleep`` under asyncio."""

    seconds: float

    def run(self) -> None:
        time.sleep(self.seconds)

    async def arun(self) -> None:
        await asyncio.sleep(self.seconds)


Plan = Generator[Any, Any, T]
"""A generator yielding effects (:class:`Effect`, or what the runner's ``handle``
knows) and returning ``T``."""


def run_sync(plan: Plan[T], handle: Callable[[Any], Any] | None = None) -> T:
    """Run ``plan`` to its end in this thread. An effect that raises is thrown back into
    the plan, so it can release what it holds; ``handle`` executes effects that are not
    :class:`Effect` objects (a door's own "send the request" step)."""
    result: Any = None
    error: BaseException | None = None
    while True:
        try:
            effect = plan.throw(error) if error is not None else plan.send(result)
        except StopIteration as done:
            return cast(T, done.value)
        result, error = None, None
        try:
            if isinstance(effect, Effect):
                result = effect.run()
                if inspect.isawaitable(result):
                    _discard(result)
                    raise TypeError(f"{effect!r} needs an event loop: use run_async")
            elif handle is not None:
                result = handle(effect)
            else:
                raise TypeError(f"no handler for effect {effect!r}")
        except BaseException as exc:
            error = exc


async def run_async(plan: Plan[T], handle: Callable[[Any], Awaitable[Any]] | None = None) -> T:
    """:func:`run_sync` under asyncio: each effect's :meth:`Effect.arun` is awaited (blocking
    I/O goes to a worker thread), and so is ``handle``."""
    result: Any = None
    error: BaseException | None = None
    while True:
        try:
            effect = plan.throw(error) if error is not None else plan.send(result)
        except StopIteration as done:
            return cast(T, done.value)
        result, error = None, None
        try:
            if isinstance(effect, Effect):
                result = await effect.arun()
            elif handle is not None:
                result = await handle(effect)
            else:
                raise TypeError(f"no handler for effect {effect!r}")
        except BaseException as exc:
            error = exc


def _discard(awaitable: Any) -> None:
    close = getattr(awaitable, "close", None)
    if callable(close):
        close()  # a coroutine never awaited: close it rather than warn at collection
