"""Time is injected: every component takes a clock instead of reading the time itself.

A clock is any zero-argument callable returning epoch seconds. Tests pass a
:class:`FrozenClock` and move it by hand across DST changes, month ends and years.

>>> clock = FrozenClock(1_700_000_000.0)
>>> clock.advance(60)
>>> clock()
1700000060.0
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime

__all__ = ["Clock", "FrozenClock", "system_clock"]

Clock = Callable[[], float]

system_clock: Clock = time.time


class FrozenClock:
    """A clock that only moves when told to (thread-safe)."""

    def __init__(self, at: float | datetime = 0.0) -> None:
        self._lock = threading.Lock()
        self._now = at.timestamp() if isinstance(at, datetime) else float(at)

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def set(self, at: float | datetime) -> None:
        with self._lock:
            self._now = at.timestamp() if isinstance(at, datetime) else float(at)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds
