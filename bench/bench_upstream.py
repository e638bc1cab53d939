"""Benchmark the gateway's upstream HTTP clients: CPU per request, one asyncio process.

A fake OpenAI upstream (``bench_gateway``'s, keep-alive, fixed answer) runs in its own
process; each client runs in a fresh process of its own and POSTs the gateway's chat body
with ``concurrency`` requests in flight for ``--seconds``, reading every body. Measured:
requests/s and the client process's CPU time per request (user + system).

    python bench/bench_upstream.py --seconds 3 --concurrency 1,64

Prints a table and writes ``bench/results/upstream.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_gateway import BODY, free_port, wait_port  # noqa: E402

RESULTS = HERE / "results" / "upstream.json"


def client_for(kind: str) -> Any:
    from llmbudget.gateway import upstream

    if kind == "aiohttp":
        return upstream.AiohttpClient()
    if kind == "httpx":
        return upstream.HttpxClient()
    if kind == "fast" and hasattr(upstream, "FastClient"):
        return upstream.FastClient()
    raise SystemExit(f"no {kind} client in this tree")


def child(kind: str, port: int, concurrency: int, seconds: float) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    headers = {"content-type": "application/json", "authorization": "Bearer x"}
    body = BODY.encode()

    async def main() -> dict[str, Any]:
        client = client_for(kind)

        async def one() -> None:
            response = await client.post(url, body, headers, 30.0)
            await response.aread()
            await response.aclose()

        for _ in range(50):  # warm up: connections, imports
            await one()
        done = 0
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                await one()
                done += 1

        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        await client.aclose()
        return {"kind": kind, "concurrency": concurrency, "rps": round(done / wall, 1),
                "cpu_us_per_request": round(1e6 * cpu / done, 1)}  # fmt: skip

    return asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", default="1,64")
    parser.add_argument("--clients", default="aiohttp,httpx")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", nargs=4, metavar=("KIND", "PORT", "C", "SECONDS"))
    args = parser.parse_args()
    if args.child:
        kind, port, c, seconds = args.child
        print(json.dumps(child(kind, int(port), int(c), float(seconds))))
        return
    port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, str(HERE / "bench_gateway.py"), "--serve-upstream", str(port)]
    )
    rows = []
    try:
        wait_port(port, 10, upstream)
        for c in (int(x) for x in args.concurrency.split(",")):
            for kind in args.clients.split(","):
                out = subprocess.run(
                    [sys.executable, __file__, "--child", kind, str(port), str(c),
                     str(args.seconds)],
                    capture_output=True, text=True, check=True, env=dict(os.environ),
                )  # fmt: skip
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    finally:
        upstream.terminate()
        upstream.wait(10)
    report = {
        "command": "python bench/bench_upstream.py " + " ".join(sys.argv[1:]),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "python": platform.python_version(),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'client':<10}{'c':>4}{'req/s':>10}{'CPU µs/req':>12}")
    for row in rows:
        print(f"{row['kind']:<10}{row['concurrency']:>4}{row['rps']:>10.1f}"
              f"{row['cpu_us_per_request']:>12.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
