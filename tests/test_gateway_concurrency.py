"""64 concurrent streaming clients on a key whose budget covers about 10 requests."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from llmbudget.stores.sqlite import SQLiteStore
from tests.gateway_fakes import HI, HI_TOKENS, FakeUpstream, Gw, ServerThread, cost, deployment


@pytest.mark.parametrize("store_kind", ["memory", "sqlite"])
def test_64_streams_never_overspend_and_only_allowed_requests_reach_upstream(
    tmp_path: Path, store_kind: str
) -> None:
    upstream = FakeUpstream(reply_tokens=30, chunk_delay=0.002)
    worst = cost(HI_TOKENS, 30)  # max_tokens=30 and the upstream writes all 30
    budget = worst * 10 + cost(0, 7)  # room for 10 requests and change
    store = SQLiteStore(str(tmp_path / "gw.db")) if store_kind == "sqlite" else None
    with (
        ServerThread(upstream.app()) as server,
        Gw({"model_list": [deployment(server.url)]}, store=store) as gw,
    ):
        key_id, secret = gw.key(budget=str(budget), period="daily")

        async def one(client: httpx.AsyncClient) -> tuple[int, str]:
            async with client.stream(
                "POST",
                "/v1/chat/completions",
                json={"model": "m", "messages": HI, "max_tokens": 30, "stream": True},
                headers={"authorization": f"Bearer {secret}"},
            ) as r:
                body = (await r.aread()).decode()
                return r.status_code, body

        async def main() -> list[tuple[int, str]]:
            limits = httpx.Limits(max_connections=64)
            async with httpx.AsyncClient(base_url=gw.url, limits=limits, timeout=60) as client:
                return await asyncio.gather(*(one(client) for _ in range(64)))

        results = asyncio.run(main())
        allowed = [body for code, body in results if code == 200]
        refused = [body for code, body in results if code == 429]
        assert len(allowed) + len(refused) == 64
        # Each request costs exactly its worst case, so the budget admits exactly 10 in all.
        assert len(allowed) == 10
        assert all('"budget_exceeded"' in body for body in refused)
        assert all(body.rstrip().endswith("data: [DONE]") for body in allowed)
        # Every upstream call was an allowed request; no refused request reached it.
        assert upstream.count == len(allowed)
        status = gw.settled(f"gw-key:{key_id}", "daily")
        assert status.held == 0
        assert status.spent == worst * len(allowed)
        assert status.spent <= budget
        if store_kind == "sqlite":
            store.close()  # type: ignore[union-attr]
