"""Prometheus metrics across uvicorn workers: the shared directory, rendering, dead workers.

One process keeps its metrics in its own registry. Several workers behind one port
(``llmbudget serve --workers N``) each count what they serve, and a scrape reaches one of
them: ``/metrics`` must answer the sum. prometheus-client's multiprocess mode does that:
every worker writes its values to memory-mapped files in ``$PROMETHEUS_MULTIPROC_DIR``
and a scrape merges them (counters and histograms summed, gauges by their
``multiprocess_mode``).

The parent process makes a fresh directory before the workers start
(:func:`metrics_directory`) and removes it at exit; a worker started in that mode renders
every worker's files (:func:`render`), after forgetting the live gauges of workers that
died (uvicorn replaces them under new pids).

>>> from prometheus_client import CollectorRegistry, Counter
>>> registry = CollectorRegistry()
>>> Counter("demo_calls", "Calls.", registry=registry).inc()
>>> b"demo_calls_total 1.0" in render(registry)
True
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

__all__ = ["MULTIPROC_ENV", "active_directory", "metrics_directory", "render"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LIVE_FILE = re.compile(r"gauge_live\w+_(\d+)\.db$")


def active_directory() -> str | None:
    """The shared directory when this process was started in multiprocess mode, else
    ``None``. prometheus-client picks the mode once, when it is first imported, so a
    variable set later (by a parent about to start workers) changes nothing here."""
    if values.ValueClass is values.MutexValue:
        return None
    path = os.environ.get(MULTIPROC_ENV)
    return path if path and os.path.isdir(path) else None


def render(registry: CollectorRegistry) -> bytes:
    """The exposition text: ``registry``'s metrics in one process, every worker's in
    multiprocess mode (the registry's metrics are among them: each worker writes its
    values to the shared files)."""
    path = active_directory()
    if path is None:
        return generate_latest(registry)
    _forget_dead_workers(path)
    merged = CollectorRegistry()
    MultiProcessCollector(merged, path=path)  # type: ignore[no-untyped-call]
    return generate_latest(merged)


def _forget_dead_workers(path: str) -> None:
    # Counters of a dead worker stay (what it counted happened); its live gauges (holds in
    # flight) must not: uvicorn restarts a crashed worker under a new pid.
    for name in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        match = _LIVE_FILE.search(name)
        if match is None:
            continue
        pid = int(match.group(1))
        if not _alive(pid):
            mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


@contextmanager
def metrics_directory() -> Iterator[str]:
    """A fresh, private ``$PROMETHEUS_MULTIPROC_DIR`` for workers started inside the block
    (they inherit the variable); removed, and the variable restored, at exit.

    >>> with metrics_directory() as path:
    ...     os.environ[MULTIPROC_ENV] == path and os.path.isdir(path)
    True
    >>> os.path.exists(path)
    False
    """
    previous = os.environ.get(MULTIPROC_ENV)
    path = tempfile.mkdtemp(prefix="llmbudget-metrics-")
    os.environ[MULTIPROC_ENV] = path
    try:
        yield path
    finally:
        if previous is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = previous
        shutil.rmtree(path, ignore_errors=True)
