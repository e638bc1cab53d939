"""Group commit (llmbudget.stores.group_commit) and the SQLite store's use of it: calls
queued together commit together, each atomic on its own, acknowledged only once durable."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from llmbudget.errors import UnknownHoldError
from llmbudget.operations import Reserve, Settle
from llmbudget.plans import run_async
from llmbudget.stores.base import Line
from llmbudget.stores.group_commit import GroupWriter
from llmbudget.stores.sqlite import SQLiteStore

NOW = 1_000.0


class BoomError(Exception):
    pass


def test_calls_queued_while_a_group_runs_form_the_next_group() -> None:
    groups: list[list[int]] = []
    release = threading.Event()

    def run_group(calls: Sequence[Any]) -> list[Any]:
        out = [call() for call in calls]
        groups.append(out)
        release.wait(5)  # the first group holds the writer while the rest queue up
        return out

    writer = GroupWriter(run_group, name="t")

    async def main() -> list[int]:
        first = asyncio.ensure_future(writer.acall(lambda: 0))
        while not groups:
            await asyncio.sleep(0.001)
        rest = [asyncio.ensure_future(writer.acall(lambda i=i: i)) for i in range(1, 20)]
        await asyncio.sleep(0.01)
        release.set()
        return [await first, *[await r for r in rest]]

    assert asyncio.run(main()) == list(range(20))
    writer.close()
    assert groups == [[0], list(range(1, 20))]


def test_each_call_gets_its_own_outcome_and_a_failed_group_fails_every_call() -> None:
    fail_group = False

    def run_group(calls: Sequence[Any]) -> list[Any]:
        if fail_group:
            raise BoomError("commit failed")
        out: list[Any] = []
        for call in calls:
            try:
                out.append(call())
            except Exception as exc:
                out.append(exc)
        return out

    writer = GroupWriter(run_group, name="t")

    def bad() -> int:
        raise BoomError("this call")

    assert writer.submit(lambda: 1).result(5) == 1
    with pytest.raises(BoomError, match="this call"):
        writer.submit(bad).result(5)
    fail_group = True
    with pytest.raises(BoomError, match="commit failed"):
        writer.submit(lambda: 2).result(5)
    writer.close()
    with pytest.raises(RuntimeError):
        writer.submit(lambda: 3)


def test_a_caller_that_gave_up_before_its_group_started_is_not_run() -> None:
    ran: list[str] = []
    gate = threading.Event()

    def run_group(calls: Sequence[Any]) -> list[Any]:
        gate.wait(5)
        return [call() for call in calls]

    writer = GroupWriter(run_group, name="t")

    async def main() -> None:
        blocker = asyncio.ensure_future(writer.acall(lambda: ran.append("first")))
        await asyncio.sleep(0.01)
        doomed = asyncio.ensure_future(writer.acall(lambda: ran.append("cancelled")))
        await asyncio.sleep(0.01)
        doomed.cancel()
        gate.set()
        await blocker
        assert await writer.acall(lambda: ran.append("after")) is None

    asyncio.run(main())
    writer.close()
    assert ran == ["first", "after"]


# --------------------------------------------------------------------------- SQLite


def _store(tmp_path: Path) -> SQLiteStore:
    store = SQLiteStore(str(tmp_path / "g.db"))
    store.put_doc("k", "init", {})  # the database exists: groups can form
    return store


def test_concurrent_async_calls_commit_in_groups_and_stay_exact(tmp_path: Path) -> None:
    store = _store(tmp_path)
    sizes: list[int] = []
    real = store._run_group

    def counted(calls: Sequence[Any]) -> list[Any]:
        sizes.append(len(calls))
        return real(calls)

    store._run_group = counted  # type: ignore[method-assign]
    lines = (Line("user:a", 0, 100),)

    async def main() -> list[Any]:
        return await asyncio.gather(
            *(run_async(_one(Reserve(store, f"h{i}", lines, 1, NOW + 60, NOW))) for i in range(300))
        )

    results = asyncio.run(main())
    assert sum(r is None for r in results) == 100  # never past the limit
    assert len(sizes) < 300 and max(sizes) > 1  # calls shared transactions
    # Acknowledged means committed: a separate connection sees every hold.
    other = SQLiteStore(store.path)
    assert other.usage("user:a", 0, NOW).held == 100
    other.close()
    store.close()


def _one(op: Any) -> Any:
    result = yield op
    return result


def test_a_failing_call_is_rolled_back_alone_inside_its_group(tmp_path: Path) -> None:
    store = _store(tmp_path)
    lines = (Line("user:b", 0, None),)
    store.reserve("known", lines, 5, NOW + 60, NOW)

    def half_write_then_fail() -> None:
        store._conn().execute("INSERT INTO docs VALUES ('k', 'partial', '{}')")
        raise BoomError("after writing")

    async def main() -> list[Any]:
        writer = store.group_writer()
        return await asyncio.gather(
            run_async(_one(Settle(store, "known", 3, "m", NOW))),
            writer.acall(half_write_then_fail),
            run_async(_one(Settle(store, "missing", 1, "m", NOW))),
            run_async(_one(Reserve(store, "h2", lines, 2, NOW + 60, NOW))),
            return_exceptions=True,
        )

    settled, boom, missing, reserved = asyncio.run(main())
    assert settled.actual == 3 and reserved is None
    assert isinstance(boom, BoomError) and isinstance(missing, UnknownHoldError)
    assert store.get_doc("k", "partial") is None  # its write went with it
    usage = store.usage("user:b", 0, NOW)
    assert (usage.spent, usage.held) == (3, 2)
    store.close()


def test_reads_grouped_with_writes_answer_within_the_groups_transaction(tmp_path: Path) -> None:
    """A usage read queued together with settles (a status page under load) reads inside
    the group's transaction instead of failing to open one of its own."""
    from llmbudget.operations import Usage_

    store = _store(tmp_path)
    lines = (Line("user:c", 0, None),)
    for i in range(50):
        store.reserve(f"h{i}", lines, 2, NOW + 60, NOW)
    sizes: list[int] = []
    real = store._run_group

    def counted(calls: Sequence[Any]) -> list[Any]:
        sizes.append(len(calls))
        return real(calls)

    store._run_group = counted  # type: ignore[method-assign]

    async def main() -> list[Any]:
        calls = []
        for i in range(50):
            calls.append(run_async(_one(Settle(store, f"h{i}", 1, "m", NOW))))
            calls.append(run_async(_one(Usage_(store, "user:c", 0, NOW))))
        return await asyncio.gather(*calls)

    results = asyncio.run(main())
    assert max(sizes) > 1  # reads and writes did share groups
    reads = results[1::2]
    # Each read is consistent: what settled moved from held to spent, never both or neither.
    assert all(2 * usage.spent + usage.held == 100 for usage in reads)
    assert (reads[-1].spent, reads[-1].held) == (50, 0)
    store.close()


def test_a_read_before_the_database_exists_still_creates_nothing(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "absent.db"))

    async def main() -> Any:
        from llmbudget.operations import Usage_

        return await run_async(_one(Usage_(store, "user:x", 0, NOW)))

    assert asyncio.run(main()).spent == 0
    assert not (tmp_path / "absent.db").exists()
    store.close()


def test_the_writer_connection_leaves_checkpoints_to_the_checkpointer(tmp_path: Path) -> None:
    store = _store(tmp_path)
    lines = (Line("user:c", 0, None),)

    async def main() -> None:
        for i in range(50):
            await asyncio.gather(
                *(
                    run_async(_one(Reserve(store, f"c{i}-{j}", lines, 1, NOW + 60, NOW)))
                    for j in range(20)
                )
            )

    asyncio.run(main())
    writer = store.group_writer()
    # The writer's own connection never checkpoints on commit ...
    autocheckpoint = writer.submit(
        lambda: store._conn().execute("PRAGMA wal_autocheckpoint").fetchone()[0]
    ).result(5)
    assert autocheckpoint == 0
    # ... yet the pages reach the database file: copied there by the checkpointer thread
    # (nothing else here writes, and no connection was closed).
    deadline = time.monotonic() + 10
    while Path(store.path).stat().st_size < 64 * 1024 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert Path(store.path).stat().st_size >= 64 * 1024
    assert store.usage("user:c", 0, NOW).held == 1000
    store.close()
