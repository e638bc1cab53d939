"""Automatic pipelining (llmbudget.stores.pipelining) and its use by the Redis store:
concurrent calls share round trips, each keeps its own reply and its own error."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from llmbudget.errors import StoreError
from llmbudget.stores.pipelining import AsyncPipeliner, ThreadPipeliner
from tests.storekit import redis_store, redis_url


class BoomError(Exception):
    pass


def _run_threads(worker: Any, n: int) -> None:
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)


def test_async_calls_made_together_share_one_send() -> None:
    batches: list[list[int]] = []

    async def send(items: Sequence[int]) -> list[Any]:
        batches.append(list(items))
        await asyncio.sleep(0.01)
        return [BoomError(i) if i == 3 else i * 10 for i in items]

    async def main() -> list[Any]:
        pipe = AsyncPipeliner(send)
        return await asyncio.gather(*(pipe.call(i) for i in range(8)), return_exceptions=True)

    replies = asyncio.run(main())
    assert batches == [list(range(8))]
    assert [r for r in replies if not isinstance(r, BoomError)] == [0, 10, 20, 40, 50, 60, 70]
    assert isinstance(replies[3], BoomError)  # only the call that failed gets its error


def test_async_calls_arriving_while_batches_are_on_the_wire_wait_for_the_next() -> None:
    batches: list[list[int]] = []
    in_flight = 0
    most = 0

    async def send(items: Sequence[int]) -> list[int]:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        batches.append(list(items))
        await asyncio.sleep(0.02)
        in_flight -= 1
        return list(items)

    async def caller(pipe: AsyncPipeliner[int], i: int) -> int:
        await asyncio.sleep(0.003 * i)  # arrivals spread over the sends
        return int(await pipe.call(i))

    async def main() -> list[int]:
        pipe = AsyncPipeliner(send, depth=2)
        return await asyncio.gather(*(caller(pipe, i) for i in range(30)))

    assert asyncio.run(main()) == list(range(30))
    assert most <= 2
    assert len(batches) < 30  # trips were shared
    assert sorted(i for batch in batches for i in batch) == list(range(30))


def test_an_async_send_that_raises_fails_every_call_of_its_batch_only() -> None:
    calls = 0

    async def send(items: Sequence[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise BoomError("connection lost")
        return list(items)

    async def main() -> tuple[list[Any], int]:
        pipe = AsyncPipeliner(send)
        first = await asyncio.gather(*(pipe.call(i) for i in range(3)), return_exceptions=True)
        return first, await pipe.call(7)

    first, after = asyncio.run(main())
    assert all(isinstance(r, BoomError) for r in first)
    assert after == 7


def test_a_cancelled_async_caller_does_not_disturb_the_others() -> None:
    async def send(items: Sequence[int]) -> list[int]:
        await asyncio.sleep(0.02)
        return list(items)

    async def main() -> list[Any]:
        pipe = AsyncPipeliner(send)
        tasks = [asyncio.ensure_future(pipe.call(i)) for i in range(3)]
        await asyncio.sleep(0.005)
        tasks[1].cancel()
        return await asyncio.gather(*tasks, return_exceptions=True)

    replies = asyncio.run(main())
    assert replies[0] == 0 and replies[2] == 2
    assert isinstance(replies[1], asyncio.CancelledError)


def test_threads_calling_together_share_sends_and_each_gets_its_reply() -> None:
    batches: list[list[int]] = []
    lock = threading.Lock()

    def send(items: Sequence[int]) -> list[Any]:
        with lock:
            batches.append(list(items))
        time.sleep(0.01)
        return [BoomError(i) if i % 7 == 0 else i + 1000 for i in items]

    pipe = ThreadPipeliner(send)
    replies: dict[int, Any] = {}
    start = threading.Barrier(32)

    def worker(i: int) -> None:
        start.wait()
        try:
            replies[i] = pipe.call(i)
        except BoomError as exc:
            replies[i] = exc

    _run_threads(worker, 32)
    assert sorted(replies) == list(range(32))
    for i, reply in replies.items():
        if i % 7 == 0:
            assert isinstance(reply, BoomError) and reply.args == (i,)
        else:
            assert reply == i + 1000
    assert len(batches) < 32
    assert sorted(i for batch in batches for i in batch) == list(range(32))


def test_a_thread_send_that_raises_fails_its_batch_and_the_next_caller_still_works() -> None:
    failing = True

    def send(items: Sequence[int]) -> list[int]:
        if failing:
            raise BoomError("down")
        return list(items)

    pipe = ThreadPipeliner(send)
    with pytest.raises(BoomError):
        pipe.call(1)
    failing = False
    assert pipe.call(2) == 2


# --------------------------------------------------------------------------- the Redis store


def test_redis_async_store_shares_round_trips_and_keeps_every_operation_exact(
    tmp_path: Path,
) -> None:
    from llmbudget.stores.base import Line
    from llmbudget.stores.redis import AsyncRedisStore

    now = 1_000.0

    async def main() -> tuple[int, int, Any]:
        store = AsyncRedisStore(redis_url(tmp_path))
        trips = 0
        real = store._round_trip

        async def counted(batch: Any) -> list[Any]:
            nonlocal trips
            trips += 1
            return await real(batch)

        store._round_trip = counted  # type: ignore[method-assign]
        limit = 50
        lines = (Line("pipe:a", 0, limit),)
        results = await asyncio.gather(
            *(store.reserve(f"h{i}", lines, 1, now + 60, now) for i in range(200))
        )
        granted = sum(r is None for r in results)
        usage = await store.usage("pipe:a", 0, now)
        await store.aclose()
        return granted, trips, usage

    with redis_store(tmp_path):  # skips (or fails under CI) without Redis; cleans up
        granted, trips, usage = asyncio.run(main())
    assert granted == 50 and usage.held == 50  # never more than the limit
    assert trips < 100  # 200 reserves (+1 usage) in far fewer round trips


def test_redis_server_errors_reach_only_their_own_caller(tmp_path: Path) -> None:
    from llmbudget.stores.base import Line

    with redis_store(tmp_path) as store:
        _errors_stay_with_their_caller(store, Line)


def _errors_stay_with_their_caller(store: Any, Line: Any) -> None:  # noqa: N803
    store._client.set(store._ops.k_spent("broken"), "not a hash")
    replies: dict[str, Any] = {}
    start = threading.Barrier(16)

    def worker(i: int) -> None:
        scope = "broken" if i == 0 else f"fine{i}"
        start.wait()
        try:
            replies[scope] = store.reserve(f"e{i}", (Line(scope, 0, 10),), 1, 2_000.0, 1_000.0)
        except StoreError as exc:
            replies[scope] = exc

    _run_threads(worker, 16)
    assert isinstance(replies.pop("broken"), StoreError)
    assert list(replies.values()) == [None] * 15
