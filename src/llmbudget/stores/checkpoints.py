"""WAL checkpoints of the SQLite store, beside its writer thread.

The writer connection never checkpoints on commit (``wal_autocheckpoint=0``): a checkpoint's
fsyncs would land on a request. This thread copies the WAL back instead.
"""

from __future__ import annotations

import os
import sqlite3
import threading

__all__ = ["Checkpointer"]


class Checkpointer:
    """Checkpoints the WAL beside the writer thread, whose connection does not.

    ``PASSIVE`` copies what it can without waiting for, or blocking, any writer or reader
    (its fsyncs happen here, not in a commit); it runs every ``interval`` seconds, on a
    connection of its own, and costs next to nothing when there is nothing to copy.
    """

    def __init__(self, path: str, *, interval: float = 0.5) -> None:
        self._path = path
        self._interval = interval
        self._stop = threading.Event()
        self._owned: sqlite3.Connection | None = None
        self._thread = threading.Thread(
            target=self._work, name="llmbudget-sqlite-checkpoint", daemon=True
        )
        self._thread.start()

    def own(self, conn: sqlite3.Connection) -> None:
        """The writer's connection: it stops checkpointing on commit from now on."""
        if self._owned is not conn:
            conn.execute("PRAGMA wal_autocheckpoint=0")
            self._owned = conn

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(10)

    def _work(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while not self._stop.wait(self._interval):
                if not os.path.exists(self._path):
                    continue
                try:
                    if conn is None:
                        conn = sqlite3.connect(self._path, isolation_level=None)
                    # A WAL that is all copied restarts from its start at the next write.
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:
                    continue  # retried next interval; commits are unaffected
        finally:
            if conn is not None:
                conn.close()
