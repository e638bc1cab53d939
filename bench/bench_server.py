"""Benchmark: charge requests per second and latency of a real server on SQLite.

Starts ``uvicorn`` (the budget server, in its own process) on a free 127.0.0.1 port with a
fresh SQLite store, then ``--clients`` concurrent HTTP clients (one connection each, httpx
async) send ``POST /v1/projects/bench/charge`` for ``--seconds``. Prints the throughput
and the latency percentiles, checks that the server recorded every charge exactly (so a
fast but lossy server cannot pass), and writes ``bench/results/server.json``.

    python bench/bench_server.py                  # 64 clients, 10 s
    python bench/bench_server.py --clients 16 --seconds 5 --endpoint reserve-settle

Only loopback traffic, bounded in time; the server is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
AMOUNT = "0.001"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start_server(store_url: str, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "LLMBUDGET_STORE": store_url,
        "LLMBUDGET_ADMIN_KEY": KEY,
        "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    command = [
        sys.executable, "-m", "uvicorn", "--factory", "llmbudget.server.app:app_from_env",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    process = subprocess.Popen(command, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("server did not start within 30 s")


async def _client(
    base: str, endpoint: str, stop_at: float, latencies: list[float], errors: list[str]
) -> int:
    done = 0
    async with httpx.AsyncClient(base_url=base, headers=AUTH, timeout=30) as client:
        while time.perf_counter() < stop_at:
            start = time.perf_counter()
            try:
                if endpoint == "charge":
                    response = await client.post(
                        "/v1/projects/bench/charge",
                        json={"user": "u", "amount": AMOUNT, "model": "m"},
                    )
                else:
                    response = await client.post(
                        "/v1/projects/bench/reserve", json={"user": "u", "amount": "0.002"}
                    )
                    if response.status_code == 201:
                        hold = response.json()["hold_id"]
                        response = await client.post(
                            "/v1/projects/bench/settle",
                            json={"user": "u", "hold_id": hold, "actual": AMOUNT, "model": "m"},
                        )
            except httpx.HTTPError as exc:
                errors.append(type(exc).__name__)
                continue
            latencies.append(time.perf_counter() - start)
            if response.status_code != 200:
                errors.append(str(response.status_code))
                continue
            done += 1
    return done


async def _load(base: str, clients: int, seconds: float, endpoint: str) -> dict[str, Any]:
    latencies: list[float] = []
    errors: list[str] = []
    start = time.perf_counter()
    stop_at = start + seconds
    counts = await asyncio.gather(
        *(_client(base, endpoint, stop_at, latencies, errors) for _ in range(clients))
    )
    elapsed = time.perf_counter() - start
    ok = sum(counts)
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000 if ordered else 0.0

    return {
        "operations_ok": ok,
        "errors": len(errors),
        "error_kinds": sorted(set(errors)),
        "elapsed_s": round(elapsed, 3),
        "ops_per_s": round(ok / elapsed, 1),
        "latency_ms": {
            "p50": round(pct(0.50), 2),
            "p90": round(pct(0.90), 2),
            "p99": round(pct(0.99), 2),
            "max": round(ordered[-1] * 1000, 2) if ordered else 0.0,
            "mean": round(statistics.fmean(ordered) * 1000, 2) if ordered else 0.0,
        },
    }


def _server_latency(metrics: str, endpoint: str) -> dict[str, float | None]:
    """p50/p99 of the time spent inside the server, from its own latency histogram
    (bucket upper bounds, warm-up included): what the clients see minus queueing on the
    client side and in the kernel."""
    route = "/v1/projects/{project}/" + ("charge" if endpoint == "charge" else "settle")
    buckets: list[tuple[float, float]] = []
    for line in metrics.splitlines():
        if (
            line.startswith("llmbudget_request_duration_seconds_bucket{")
            and f'route="{route}"' in line
        ):
            labels, value = line.rsplit(" ", 1)
            bound = labels.split('le="', 1)[1].split('"', 1)[0]
            if 'status="200"' in labels:
                buckets.append((float("inf") if bound == "+Inf" else float(bound), float(value)))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0.0

    def pct(p: float) -> float | None:
        for bound, count in buckets:
            if total and count >= p * total:
                return None if bound == float("inf") else bound * 1000
        return None

    return {"p50_at_most": pct(0.50), "p99_at_most": pct(0.99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--endpoint", choices=["charge", "reserve-settle"], default="charge")
    parser.add_argument("--store", help="store URL (default: a fresh SQLite file)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "server.json")
    args = parser.parse_args()
    if not 1 <= args.clients <= 512 or not 0 < args.seconds <= 120:
        raise SystemExit("--clients must be 1..512 and --seconds 0..120")

    with tempfile.TemporaryDirectory(prefix="llmbudget-bench-") as tmp:
        store_url = args.store or f"sqlite:///{tmp}/bench.db"
        port = _free_port()
        server = _start_server(store_url, port)
        base = f"http://127.0.0.1:{port}"
        try:
            httpx.put(
                f"{base}/v1/projects/bench/budgets/u",
                json={"amount": "1000000", "period": "daily"},
                headers=AUTH,
            ).raise_for_status()
            # Warm-up (connections, SQLite pages), not measured.
            asyncio.run(_load(base, min(args.clients, 8), 1.0, args.endpoint))
            httpx.post(
                f"{base}/v1/projects/bench/reset", json={"user": "u"}, headers=AUTH
            ).raise_for_status()
            result = asyncio.run(_load(base, args.clients, args.seconds, args.endpoint))
            spent = Decimal(
                httpx.get(f"{base}/v1/projects/bench/budgets/u", headers=AUTH).json()["spent"]
            )
            metrics = httpx.get(f"{base}/metrics", headers=AUTH).text
        finally:
            server.terminate()
            server.wait(timeout=30)

    expected = Decimal(AMOUNT) * result["operations_ok"]
    result["server_latency_ms"] = _server_latency(metrics, args.endpoint)
    result.update(
        {
            "benchmark": "llmbudget server",
            "endpoint": args.endpoint,
            "clients": args.clients,
            "seconds": args.seconds,
            "store": "sqlite (fresh file)" if not args.store else args.store,
            "server": _server_stack(),
            "spent_recorded": str(spent),
            "spent_expected": str(expected),
            "exact": spent == expected,
            "machine": {
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
            },
            "command": "python " + " ".join([os.path.relpath(__file__, ROOT), *sys.argv[1:]]),
        }
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    lat = result["latency_ms"]
    print(
        f"{args.endpoint}: {result['ops_per_s']} ops/s with {args.clients} clients over "
        f"{result['elapsed_s']} s; latency p50 {lat['p50']} ms, p99 {lat['p99']} ms, "
        f"max {lat['max']} ms; in-server p50 <= {result['server_latency_ms']['p50_at_most']} ms, "
        f"p99 <= {result['server_latency_ms']['p99_at_most']} ms; errors {result['errors']}; "
        f"recorded ${spent} = expected ${expected}: {result['exact']}"
    )
    print(f"wrote {os.path.relpath(args.out, ROOT)}")
    if not result["exact"] or result["errors"]:
        raise SystemExit(1)


def _server_stack() -> str:
    """What uvicorn's "auto" settings pick here: uvloop and httptools when installed."""
    import importlib.util

    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return f"uvicorn, 1 worker, {loop} loop, {http}"


if __name__ == "__main__":
    main()
