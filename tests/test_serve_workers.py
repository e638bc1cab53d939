"""``llmbudget serve --workers N``: real uvicorn worker processes on one port, one store.

The burst: 64 concurrent openai-SDK clients on a key whose budget covers exactly 10 calls,
against two workers, on every shared store. Nothing overspends, only allowed calls reach
the upstream, and ``/metrics`` (answered by whichever worker is scraped) sums what every
worker counted: the same spend as the store, as many refusals as 429s.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from typer.testing import CliRunner

from llmbudget.budgets import Budget
from llmbudget.cli import _register, app
from llmbudget.ledger import Ledger
from llmbudget.server.workers import check_workers, default_workers, shared_safe
from tests.gateway_fakes import HI, HI_TOKENS, FakeUpstream, ServerThread, cost, deployment
from tests.storekit import FACTORIES, store_url

ADMIN = "sk-admin-workers-0123456789"
SERVE = [sys.executable, "-c", "from llmbudget.cli import main; main()", "serve"]


def _samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample of ``name`` in Prometheus text: (labels, value)."""
    found = []
    for match in re.finditer(rf"^{name}(?:{{(.*?)}})? (\S+)$", text, flags=re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        found.append((labels, float(match.group(2))))
    return found


def _total(text: str, name: str) -> float:
    return sum(value for _, value in _samples(text, name))


@contextmanager
def serving(config: dict[str, Any], tmp_path: Path, *args: str) -> Iterator[tuple[str, Path]]:
    """``llmbudget serve`` in a process of its own on a free port; yields its URL and the
    metrics directory it made (under ``tmp_path``: ``TMPDIR`` points there)."""
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp), "PYTHONUNBUFFERED": "1"}
    command = [*SERVE, "--config", str(path), "--port", "0", "--log-level", "warning", *args]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True
    )
    text = ""
    try:
        assert proc.stdout is not None
        banner: list[str] = []
        while not any(line.startswith("  workers") for line in banner):
            line = proc.stdout.readline()
            assert line, "serve exited before its banner:\n" + "".join(banner)
            banner.append(line)
        text = "".join(banner)
        port = re.search(r"listening\s+http://127\.0\.0\.1:(\d+)", text)
        assert port is not None, text
        (metrics_dir,) = temp.glob("llmbudget-metrics-*")
        yield f"http://127.0.0.1:{port.group(1)}", metrics_dir
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rest, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            rest, _ = proc.communicate()
    # One block for the whole server, not one per worker.
    assert (text + rest).count(" server\n  listening") == 1, text + rest


def _wait_for_workers(metrics_dir: Path, count: int, timeout: float = 60.0) -> set[str]:
    """The pids of the workers that built their app (each writes its live gauges)."""
    deadline = time.monotonic() + timeout
    while True:
        pids = {p.stem.rsplit("_", 1)[1] for p in metrics_dir.glob("gauge_livesum_*.db")}
        if len(pids) >= count or time.monotonic() > deadline:
            return pids
        time.sleep(0.05)


def _wait_ready(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/v1/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server did not answer"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgres", "redis"])
def test_two_workers_64_clients_never_overspend_and_metrics_agree(
    backend: str, tmp_path: Path
) -> None:
    upstream = FakeUpstream(reply_tokens=20)
    worst = cost(HI_TOKENS, 20)  # max_tokens=20 and the upstream writes all 20
    budget = worst * 10  # exactly 10 calls
    with (
        FACTORIES[backend](tmp_path) as store,  # the same store the workers open; cleaned up
        ServerThread(upstream.app()) as up,
    ):
        config = {
            "admin_key": ADMIN,
            "store": store_url(backend, tmp_path),
            "model_list": [deployment(up.url)],
        }
        with serving(config, tmp_path, "--workers", "2") as (url, metrics_dir):
            assert len(_wait_for_workers(metrics_dir, 2)) == 2
            _wait_ready(url)
            admin = {"Authorization": f"Bearer {ADMIN}"}
            created = httpx.post(
                f"{url}/v1/keys",
                json={"user": "ann", "budget": str(budget), "period": "daily"},
                headers=admin,
                timeout=30,
            )
            assert created.status_code in (200, 201), created.text
            key_id, secret = created.json()["id"], created.json()["key"]

            async def burst() -> list[int]:
                http = httpx.AsyncClient(limits=httpx.Limits(max_connections=64), timeout=60)
                sdk = openai.AsyncOpenAI(
                    api_key=secret, base_url=f"{url}/v1", max_retries=0, http_client=http
                )

                async def one() -> int:
                    try:
                        await sdk.chat.completions.create(
                            model="m",
                            messages=HI,  # type: ignore[arg-type]
                            max_tokens=20,
                        )
                    except openai.RateLimitError as exc:
                        return exc.status_code
                    return 200

                try:
                    return await asyncio.gather(*(one() for _ in range(64)))
                finally:
                    await sdk.close()

            codes = asyncio.run(burst())
            allowed, refused = codes.count(200), codes.count(429)
            assert allowed + refused == 64, codes
            assert allowed == 10  # each call costs exactly its worst case
            assert upstream.count == allowed

            ledger = Ledger(store)
            key = Budget.of(f"gw-key:{key_id}", None, "daily")
            deadline = time.monotonic() + 30
            while (status := ledger.status(key)).held and time.monotonic() < deadline:
                time.sleep(0.02)  # settles run after the responses
            assert status.held == 0
            assert status.spent == worst * allowed <= budget

            deadline = time.monotonic() + 30
            while True:
                scraped = httpx.get(f"{url}/metrics", headers=admin, timeout=30)
                assert scraped.status_code == 200
                text = scraped.text
                if _total(text, "llmbudget_gateway_holds_in_flight") == 0:
                    break
                assert time.monotonic() < deadline, text
                time.sleep(0.02)
            spend = _total(text, "llmbudget_gateway_spend_dollars_total")
            assert Decimal(str(spend)).quantize(Decimal("1e-12")) == status.spent
            kinds = dict(
                (labels["scope_kind"], value)
                for labels, value in _samples(text, "llmbudget_gateway_scope_spend_dollars_total")
            )
            assert kinds["key"] == pytest.approx(spend)
            refusals = _samples(text, "llmbudget_gateway_refusals_total")
            assert sum(v for _, v in refusals) == refused
            assert {(labels["scope_kind"], labels["reason"]) for labels, _ in refusals} == {
                ("key", "budget")
            }
            deployments = _samples(text, "llmbudget_gateway_upstream_duration_seconds_count")
            assert sum(v for _, v in deployments) == allowed
            # A second scrape (perhaps the other worker) tells the same story.
            again = httpx.get(f"{url}/metrics", headers=admin, timeout=30).text
            assert _total(again, "llmbudget_gateway_spend_dollars_total") == spend
        assert not metrics_dir.exists()  # removed when serve exits


def test_workers_with_a_memory_store_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    from llmbudget.server import workers

    started: list[object] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: started.append(a))
    monkeypatch.setattr(workers, "run_workers", lambda *a, **k: started.append(a))
    _register()
    runner = CliRunner()
    result = runner.invoke(app, ["serve", "--store", "memory://", "--workers", "2"])
    shown = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert "--workers 2 with memory://" in shown and "--workers 1" in shown
    assert started == []
    # Without --workers, memory:// is served by one process.
    result = runner.invoke(app, ["serve", "--store", "memory://"])
    assert result.exit_code == 0, result.output
    assert re.search(r"^  workers\s+1$", result.output, flags=re.M)
    assert len(started) == 1


def test_default_worker_count_follows_the_store(tmp_path: Path) -> None:
    cores = len(os.sched_getaffinity(0))
    for url in ("sqlite:///a.db", "postgresql://h/db", "redis://h:6379/0", "https://budgets"):
        assert shared_safe(url) and default_workers(url) == cores
    for url in ("memory://", "sqlite:///:memory:"):
        assert not shared_safe(url) and default_workers(url) == 1
    check_workers("sqlite:///a.db", 8)  # any number on a shared store
    with pytest.raises(ValueError, match="at least 1"):
        check_workers("sqlite:///a.db", 0)


def _holds_by_pid(metrics_dir: Path) -> dict[int, float]:
    """Each worker's own holds in flight, read from its file."""
    from prometheus_client.multiprocess import MultiProcessCollector

    found = {}
    for path in metrics_dir.glob("gauge_livesum_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        for metric in MultiProcessCollector.merge([str(path)], accumulate=False):
            if metric.name == "llmbudget_gateway_holds_in_flight":
                found[pid] = sum(s.value for s in metric.samples)
    return found


@pytest.mark.slow
def test_a_dead_workers_holds_leave_the_metrics(tmp_path: Path) -> None:
    upstream = FakeUpstream(reply_tokens=20, delay=4.0)  # calls stay in flight meanwhile
    with FACTORIES["sqlite"](tmp_path), ServerThread(upstream.app()) as up:
        config = {
            "admin_key": ADMIN,
            "store": store_url("sqlite", tmp_path),
            "model_list": [deployment(up.url, timeout=60)],
        }
        with serving(config, tmp_path, "--workers", "2") as (url, metrics_dir):
            assert len(_wait_for_workers(metrics_dir, 2)) == 2
            _wait_ready(url)
            admin = {"Authorization": f"Bearer {ADMIN}"}
            created = httpx.post(f"{url}/v1/keys", json={"user": "ann"}, headers=admin)
            secret = created.json()["key"]

            async def calls() -> tuple[list[int], float]:
                async with httpx.AsyncClient(base_url=url, timeout=60) as http:

                    async def one() -> int:
                        try:
                            r = await http.post(
                                "/v1/chat/completions",
                                json={"model": "m", "messages": HI, "max_tokens": 20},
                                headers={"Authorization": f"Bearer {secret}"},
                            )
                        except httpx.TransportError:
                            return 0  # its worker died
                        return r.status_code

                    tasks = [asyncio.create_task(one()) for _ in range(8)]
                    deadline = time.monotonic() + 30
                    while upstream.count < 8:  # every call is held and upstream
                        assert time.monotonic() < deadline
                        await asyncio.sleep(0.02)
                    by_pid = _holds_by_pid(metrics_dir)
                    assert sum(by_pid.values()) == 8
                    victim = max(by_pid, key=lambda pid: by_pid[pid])
                    os.kill(victim, signal.SIGKILL)
                    deadline = time.monotonic() + 30
                    while True:  # the scrape forgets the dead worker once it is reaped
                        text = (await http.get("/metrics", headers=admin)).text
                        held = _total(text, "llmbudget_gateway_holds_in_flight")
                        if held == 8 - by_pid[victim]:
                            break
                        assert time.monotonic() < deadline, (held, by_pid)
                        await asyncio.sleep(0.05)
                    return await asyncio.gather(*tasks), by_pid[victim]

            codes, cut = asyncio.run(calls())
            assert codes.count(0) == cut >= 1  # the victim's calls were cut
            assert codes.count(200) == 8 - codes.count(0)
