"""Benchmark the gateway: added latency, throughput, memory, and a budget burst vs LiteLLM.

Processes (all on 127.0.0.1, each its own process):

* a fast fake OpenAI upstream (raw asyncio protocol, keep-alive, fixed usage: 8 prompt +
  12 completion tokens = $0.001 at $0.00005/token);
* the gateway (uvicorn, SQLite store in a temp dir; key, global, model and deployment
  budgets all enforced, so each request is one 4-scope atomic reserve + settle + log);
* the load generator: ``wrk`` when installed (``apt-get install wrk``), else httpx async;
* optionally LiteLLM's proxy (``--litellm-python`` or ``$LITELLM_PYTHON``: a python with
  ``litellm`` and its proxy dependencies) on the same upstream, with
  ``router_settings.provider_budget_config`` as its budget (the one it enforces without a
  database).

Measured: latency p50/p99 and requests/s at concurrency 1, 16, 64 against the upstream
directly and through each proxy (added latency = proxy p50/p99 - direct p50/p99); the
gateway's RSS; and a burst of 128 concurrent $0.001 requests against a $0.01 budget,
counting how many got through (more than 10 is overspend).

    python bench/bench_gateway.py --seconds 5 --litellm-python /tmp/litellm-venv/bin/python

Prints a table and writes ``bench/results/gateway.json``.

``--rate-limits REPEATS`` measures instead what rate limits cost: one gateway, two keys
with the same budget, one of them also with ``rpm_limit``, ``tpm_limit``, ``tpd_limit`` and
``max_parallel_requests`` (large enough never to refuse: four more lines in each atomic
reserve and settle; ``--limit-fields`` picks fewer), loaded in turn ``REPEATS`` times at
each concurrency (which goes first alternating); writes ``bench/results/gateway_rate_limits.json``.

    python bench/bench_gateway.py --rate-limits 3 --seconds 5 --concurrency 16,64
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "gateway.json"
RATE_LIMIT_RESULTS = HERE / "results" / "gateway_rate_limits.json"
# Never reached in a benchmark run: enforced (reserved and settled), never refusing.
BENCH_LIMITS = {
    "rpm_limit": 10_000_000,
    "tpm_limit": 1_000_000_000,
    "tpd_limit": 100_000_000_000,
    "max_parallel_requests": 100_000,
}
MASTER = "sk-bench-master-0123456789"
PRICE = 0.00005  # dollars per token, input and output
PROMPT = [{"role": "user", "content": "hi"}]  # 8 tokens in OpenAI's chat accounting
MAX_TOKENS = 12  # worst case = (8 + 12) x $0.00005 = $0.001, and the upstream bills exactly that
BODY = json.dumps({"model": "fake-gpt", "messages": PROMPT, "max_tokens": MAX_TOKENS})
# The same call through the other APIs: Responses (as sent upstream) and Anthropic's
# Messages (translated to chat for this OpenAI-compatible upstream, and back).
BODIES = {
    "chat": BODY,
    "responses": json.dumps({"model": "fake-gpt", "input": "hi", "max_output_tokens": MAX_TOKENS}),
    "messages": json.dumps({"model": "fake-gpt", "messages": PROMPT, "max_tokens": MAX_TOKENS}),
}
PATHS = {"chat": "/v1/chat/completions", "responses": "/v1/responses", "messages": "/v1/messages"}
USAGE = {"prompt_tokens": 8, "completion_tokens": 12, "total_tokens": 20}

# --------------------------------------------------------------------------- fake upstream


def _responses() -> tuple[bytes, bytes]:
    doc = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": " a" * 12},
                "finish_reason": "length",
            }
        ],
        "usage": USAGE,
    }
    plain = json.dumps(doc).encode()
    chunk = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "gpt-4o-mini",
    }
    events = [{**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}]
    events += [{**chunk, "choices": [{"index": 0, "delta": {"content": " a"}}]} for _ in range(12)]
    events += [{**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}]
    events += [{**chunk, "choices": [], "usage": USAGE}]
    stream = (
        b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    )

    def http(body: bytes, kind: bytes) -> bytes:
        return (
            b"HTTP/1.1 200 OK\r\ncontent-type: " + kind + b"\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\nconnection: keep-alive\r\n\r\n" + body
        )  # fmt: skip

    return http(plain, b"application/json"), http(stream, b"text/event-stream")


def _responses_api() -> bytes:
    doc = {
        "id": "resp_bench", "object": "response", "created_at": 0, "model": "gpt-4o-mini",
        "status": "incomplete",
        "output": [{"id": "msg_bench", "type": "message", "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": " a" * 12, "annotations": []}]}],
        "usage": {"input_tokens": 8, "output_tokens": 12, "total_tokens": 20},
    }  # fmt: skip
    body = json.dumps(doc).encode()
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
        + str(len(body)).encode() + b"\r\nconnection: keep-alive\r\n\r\n" + body
    )  # fmt: skip


class _Upstream(asyncio.Protocol):
    PLAIN, STREAM = _responses()
    RESPONSES = _responses_api()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            match = re.search(rb"content-length:\s*(\d+)", head)
            length = int(match.group(1)) if match else 0
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            stream = b'"stream":true' in body.replace(b" ", b"")
            if head.startswith(b"post /v1/responses"):
                self.transport.write(self.RESPONSES)
            else:
                self.transport.write(self.STREAM if stream else self.PLAIN)


def serve_protocol(factory: Callable[[], asyncio.Protocol], port: int) -> None:
    """Serve raw-asyncio ``factory`` protocols on 127.0.0.1:``port`` until killed."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(factory, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def serve_upstream(port: int) -> None:
    serve_protocol(_Upstream, port)


# --------------------------------------------------------------------------- gateway process


def gateway_config(upstream_port: int, store: str) -> dict[str, Any]:
    return {
        "model_list": [
            {
                "model_name": "fake-gpt",
                "litellm_params": {
                    "model": "openai/gpt-4o-mini",
                    "api_base": f"http://127.0.0.1:{upstream_port}/v1",
                    "api_key": "fake",
                    "input_cost_per_token": PRICE,
                    "output_cost_per_token": PRICE,
                    "budget": 1_000_000,
                    "period": "monthly",
                },
                "model_info": {"id": "fake-1"},
            }
        ],
        "general_settings": {
            "master_key": MASTER,
            "store": store,
            "store_calls": os.environ.get("BENCH_STORE_CALLS", "thread"),
        },
        "budgets": {
            "global": {"budget": 1_000_000, "period": "monthly"},
            "models": {"fake-gpt": {"budget": 1_000_000, "period": "daily"}},
        },
    }


def serve_gateway(config_path: str, port: int) -> None:
    import uvicorn

    from llmbudget.gateway import create_gateway_app

    app = create_gateway_app(config_path)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port} after {timeout}s")


@contextlib.contextmanager
def process(
    args: list[str], env: dict[str, str] | None = None, log: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        if log:
            out.close()  # type: ignore[union-attr]


def rss_mb(pid: int) -> dict[str, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            name, value = line.split(":", 1)
            fields[name] = round(int(value.split()[0]) / 1024, 1)
    return {"rss_mb": fields.get("VmRSS", 0.0), "peak_rss_mb": fields.get("VmHWM", 0.0)}


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, every thread) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(text)
    value, unit = float(match.group(1)), match.group(2)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def run_wrk(
    url: str, key: str, concurrency: int, seconds: float, body: str = BODY
) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(
            'wrk.method = "POST"\n'
            f"wrk.body = {json.dumps(body)}\n"
            'wrk.headers["Content-Type"] = "application/json"\n'
            f'wrk.headers["Authorization"] = "Bearer {key}"\n'
        )
        script = f.name
    try:
        threads = 1 if concurrency < 4 else 2
        out = subprocess.run(
            ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--latency", "-s", script, url],
            capture_output=True, text=True, check=True, timeout=seconds + 60,
        ).stdout  # fmt: skip
    finally:
        os.unlink(script)
    pct = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {
        "concurrency": concurrency,
        "requests": total,
        "rps": round(rps, 1),
        "p50_ms": round(_ms(pct["50"]), 3),
        "p99_ms": round(_ms(pct["99"]), 3),
        "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(0) if errors else None,
    }


def run_httpx(
    url: str, key: str, concurrency: int, seconds: float, body: str = BODY
) -> dict[str, Any]:
    import httpx

    async def main() -> dict[str, Any]:
        latencies: list[float] = []
        bad = 0
        headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:
            deadline = time.perf_counter() + seconds

            async def worker() -> None:
                nonlocal bad
                while time.perf_counter() < deadline:
                    t0 = time.perf_counter()
                    r = await client.post(url, content=body, headers=headers)
                    latencies.append((time.perf_counter() - t0) * 1000)
                    bad += r.status_code >= 300

            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            elapsed = time.perf_counter() - start
        latencies.sort()
        return {
            "concurrency": concurrency,
            "requests": len(latencies),
            "rps": round(len(latencies) / elapsed, 1),
            "p50_ms": round(latencies[len(latencies) // 2], 3),
            "p99_ms": round(latencies[int(len(latencies) * 0.99)], 3),
            "non_2xx": bad,
        }

    return asyncio.run(main())


def load(
    url: str, key: str, concurrency: int, seconds: float, tool: str, body: str = BODY
) -> dict[str, Any]:
    runner = run_wrk if tool == "wrk" else run_httpx
    runner(url, key, concurrency, min(1.0, seconds), body)  # warm-up: connections, caches
    return runner(url, key, concurrency, seconds, body)


def burst(url: str, key: str, n: int = 128) -> dict[str, Any]:
    """``n`` concurrent requests at once; how many got a 200."""
    import httpx

    async def main() -> dict[str, Any]:
        headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:
            go = asyncio.Event()

            async def one() -> int:
                await go.wait()
                r = await client.post(url, content=BODY, headers=headers)
                return r.status_code

            tasks = [asyncio.create_task(one()) for _ in range(n)]
            await asyncio.sleep(0.05)
            go.set()
            codes = await asyncio.gather(*tasks)
        counts: dict[str, int] = {}
        for code in codes:
            counts[str(code)] = counts.get(str(code), 0) + 1
        ok = counts.get("200", 0)
        return {
            "requests": n,
            "budget_usd": "0.01",
            "request_cost_usd": "0.001",
            "allowed": ok,
            "status_counts": counts,
            "spend_usd_implied": f"{ok * 0.001:.3f}",
            "overspend": ok > 10,
        }

    return asyncio.run(main())


def admin(port: int, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    import httpx

    r = httpx.request(
        method,
        f"http://127.0.0.1:{port}{path}",
        json=body,
        headers={"authorization": f"Bearer {MASTER}"},
        timeout=30,
    )
    if r.status_code >= 400:
        raise RuntimeError(f"{method} {path}: {r.status_code} {r.text}")
    return r.json()


# --------------------------------------------------------------------------- LiteLLM


def litellm_config(upstream_port: int, budget: float) -> str:
    import yaml

    return yaml.safe_dump(
        {
            "model_list": [
                {
                    "model_name": "fake-gpt",
                    "litellm_params": {
                        "model": "openai/gpt-4o-mini",
                        "api_base": f"http://127.0.0.1:{upstream_port}/v1",
                        "api_key": "fake",
                        "input_cost_per_token": PRICE,
                        "output_cost_per_token": PRICE,
                    },
                }
            ],
            "router_settings": {
                "provider_budget_config": {"openai": {"budget_limit": budget, "time_period": "1d"}}
            },
            "general_settings": {"master_key": MASTER},
            "litellm_settings": {"telemetry": False, "drop_params": True},
        }
    )


@contextlib.contextmanager
def litellm_proxy(
    python: str, upstream_port: int, budget: float, tmp: Path
) -> Iterator[tuple[int, int]]:
    port = free_port()
    cfg = tmp / f"litellm-{budget}.yaml"
    cfg.write_text(litellm_config(upstream_port, budget))
    env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
        "DISABLE_SCHEMA_UPDATE": "True",
    }
    env.pop("DATABASE_URL", None)
    args = [python, "-m", "litellm.proxy.proxy_cli", "--config", str(cfg), "--host", "127.0.0.1",
            "--port", str(port), "--num_workers", "1"]  # fmt: skip
    with process(args, env=env, log=tmp / f"litellm-{budget}.log") as proc:
        wait_port(port, 120, proc)
        yield port, proc.pid


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each load run")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--litellm-python", default=os.environ.get("LITELLM_PYTHON"))
    parser.add_argument("--tool", choices=["auto", "wrk", "httpx"], default="auto")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--limit-fields",
        default=",".join(BENCH_LIMITS),
        help="with --rate-limits: the limits the limited key has (default: all four)",
    )
    parser.add_argument(
        "--rate-limits",
        type=int,
        metavar="REPEATS",
        default=0,
        help="compare throughput with and without rate limits, interleaved, REPEATS times",
    )
    parser.add_argument("--serve-upstream", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument(
        "--serve-gateway", nargs=2, metavar=("CONFIG", "PORT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.serve_upstream:
        serve_upstream(args.serve_upstream)
        return
    if args.serve_gateway:
        serve_gateway(args.serve_gateway[0], int(args.serve_gateway[1]))
        return

    tool = args.tool if args.tool != "auto" else ("wrk" if shutil.which("wrk") else "httpx")
    levels = [int(c) for c in args.concurrency.split(",")]
    me = [sys.executable, str(Path(__file__).resolve())]
    results: dict[str, Any] = {
        "command": "python bench/bench_gateway.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "load_tool": tool,
        "seconds": args.seconds,
    }
    if args.rate_limits:
        out = args.out or RATE_LIMIT_RESULTS
        fields = [f for f in args.limit_fields.split(",") if f]
        unknown = set(fields) - set(BENCH_LIMITS)
        if unknown:
            parser.error(f"--limit-fields: unknown {', '.join(sorted(unknown))}")
        limits = {f: BENCH_LIMITS[f] for f in fields}
        results["limits"] = limits
        results.update(
            compare_rate_limits(me, levels, args.seconds, tool, args.rate_limits, limits)
        )
        report_rate_limits(results)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwrote {out}")
        return
    with tempfile.TemporaryDirectory(prefix="llmb-bench-gw-") as tmpdir:
        tmp = Path(tmpdir)
        up_port, gw_port = free_port(), free_port()
        config_path = tmp / "gateway.yaml"
        config_path.write_text(json.dumps(gateway_config(up_port, f"sqlite:///{tmp / 'gw.db'}")))
        with process([*me, "--serve-upstream", str(up_port)]):
            wait_port(up_port, 10)
            direct = {
                c: load(
                    f"http://127.0.0.1:{up_port}/v1/chat/completions", "fake", c, args.seconds, tool
                )
                for c in levels
            }
            results["direct"] = list(direct.values())
            with process(
                [*me, "--serve-gateway", str(config_path), str(gw_port)], log=tmp / "gw.log"
            ) as gw:
                wait_port(gw_port, 30, gw)
                key = admin(
                    gw_port,
                    "POST",
                    "/v1/keys",
                    {"user": "bench", "budget": 1_000_000, "period": "daily"},
                )
                url = f"http://127.0.0.1:{gw_port}/v1/chat/completions"
                runs = {c: load(url, key["key"], c, args.seconds, tool) for c in levels}
                results["gateway"] = [
                    {
                        **run,
                        "added_p50_ms": round(run["p50_ms"] - direct[c]["p50_ms"], 3),
                        "added_p99_ms": round(run["p99_ms"] - direct[c]["p99_ms"], 3),
                    }
                    for c, run in runs.items()
                ]
                for api in ("responses", "messages"):
                    # Added latency against the same call straight to the upstream's chat
                    # (messages: translated) or Responses endpoint.
                    base = direct if api == "messages" else {
                        c: load(f"http://127.0.0.1:{up_port}/v1/responses", "fake", c,
                                args.seconds, tool, BODIES[api])
                        for c in levels
                    }  # fmt: skip
                    api_url = f"http://127.0.0.1:{gw_port}{PATHS[api]}"
                    api_runs = {
                        c: load(api_url, key["key"], c, args.seconds, tool, BODIES[api])
                        for c in levels
                    }
                    results[f"gateway {PATHS[api]}"] = [
                        {**run, "added_p50_ms": round(run["p50_ms"] - base[c]["p50_ms"], 3),
                         "added_p99_ms": round(run["p99_ms"] - base[c]["p99_ms"], 3)}
                        for c, run in api_runs.items()
                    ]  # fmt: skip
                results["gateway_memory"] = rss_mb(gw.pid)
                small = admin(
                    gw_port,
                    "POST",
                    "/v1/keys",
                    {"user": "burst", "budget": "0.01", "period": "daily"},
                )
                results["gateway_burst"] = burst(url, small["key"])
                time.sleep(0.5)  # settles after the last responses
                spend = admin(gw_port, "GET", f"/v1/keys/{small['id']}")["spend"]
                status = next(iter(spend.values()))
                results["gateway_burst"]["recorded_spend_usd"] = status["spent"]
                results["gateway_burst"]["recorded_held_usd"] = status["held"]

            if args.litellm_python:
                try:
                    with litellm_proxy(args.litellm_python, up_port, 1_000_000.0, tmp) as (
                        port,
                        pid,
                    ):
                        url = f"http://127.0.0.1:{port}/v1/chat/completions"
                        runs = {c: load(url, MASTER, c, args.seconds, tool) for c in levels}
                        results["litellm"] = [
                            {
                                **run,
                                "added_p50_ms": round(run["p50_ms"] - direct[c]["p50_ms"], 3),
                                "added_p99_ms": round(run["p99_ms"] - direct[c]["p99_ms"], 3),
                            }
                            for c, run in runs.items()
                        ]
                        results["litellm_memory"] = rss_mb(pid)
                    with litellm_proxy(args.litellm_python, up_port, 0.01, tmp) as (port, _):
                        results["litellm_burst"] = burst(
                            f"http://127.0.0.1:{port}/v1/chat/completions", MASTER
                        )
                except (RuntimeError, subprocess.SubprocessError) as exc:
                    log_tail = "".join(
                        p.read_text(errors="replace")[-2000:] for p in tmp.glob("litellm-*.log")
                    )
                    results["litellm_error"] = f"{exc}: {log_tail}"
            else:
                results["litellm"] = "skipped: pass --litellm-python or set LITELLM_PYTHON"

    report(results)
    out = args.out or RESULTS
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out}")


def compare_rate_limits(
    me: list[str],
    levels: list[int],
    seconds: float,
    tool: str,
    repeats: int,
    limits: dict[str, int],
) -> dict[str, Any]:
    """Throughput of one gateway for a key without and a key with rate limits, the two
    loaded in turn so that the machine's other load falls on both alike."""
    runs: dict[str, list[dict[str, Any]]] = {"without": [], "with": []}
    with tempfile.TemporaryDirectory(prefix="llmb-bench-rl-") as tmpdir:
        tmp = Path(tmpdir)
        up_port, gw_port = free_port(), free_port()
        config_path = tmp / "gateway.yaml"
        config_path.write_text(json.dumps(gateway_config(up_port, f"sqlite:///{tmp / 'gw.db'}")))
        with (
            process([*me, "--serve-upstream", str(up_port)]),
            process(
                [*me, "--serve-gateway", str(config_path), str(gw_port)], log=tmp / "gw.log"
            ) as gw,
        ):
            wait_port(up_port, 10)
            wait_port(gw_port, 30, gw)
            budget = {"budget": 1_000_000, "period": "daily"}
            keys = {
                "without": admin(gw_port, "POST", "/v1/keys", {"user": "plain", **budget}),
                "with": admin(gw_port, "POST", "/v1/keys", {"user": "limited", **budget, **limits}),
            }
            url = f"http://127.0.0.1:{gw_port}/v1/chat/completions"
            load(url, keys["without"]["key"], levels[0], 1.0, tool)  # warm up
            for repeat in range(repeats):
                # Each goes first in every other repeat: a drift in the machine's load
                # (or the store's growth) then falls on both alike.
                order = ("without", "with") if repeat % 2 == 0 else ("with", "without")
                for c in levels:
                    for variant in order:
                        before = cpu_seconds(gw.pid)
                        run = load(url, keys[variant]["key"], c, seconds, tool)
                        # The gateway's own CPU per request: much less moved by the
                        # machine's other load than its requests/s.
                        used = (cpu_seconds(gw.pid) - before) / max(1, run["requests"])
                        runs[variant].append(
                            {**run, "repeat": repeat, "gateway_cpu_us": round(used * 1e6, 1)}
                        )
            limited = admin(gw_port, "GET", f"/v1/keys/{keys['with']['id']}")["spend"]
    ratios = {}
    for c in levels:
        total = {
            v: sum(r["rps"] for r in runs[v] if r["concurrency"] == c) for v in ("without", "with")
        }
        ratios[c] = round(total["with"] / max(1e-9, total["without"]), 3)
    cpu = {
        v: round(statistics.median(r["gateway_cpu_us"] for r in runs[v]), 1)
        for v in ("without", "with")
    }
    return {
        "rate_limits": runs,
        "rate_limit_ratio": ratios,
        "gateway_cpu_us_per_request": cpu,
        "rate_limit_spend": limited,
    }


def report_rate_limits(r: dict[str, Any]) -> None:
    print(
        f"\n{r['machine']}, Python {r['python']}, load: {r['load_tool']}, {r['seconds']} s per run\n"
    )
    print(f"limited key: {r['limits']}\n")
    print(
        f"{'key':<10}{'repeat':>7}{'c':>5}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'cpu us/req':>12}{'non-2xx':>9}"
    )
    runs = r["rate_limits"]
    for without, with_ in zip(runs["without"], runs["with"], strict=True):
        for name, row in (("without", without), ("with", with_)):
            print(
                f"{name:<10}{row['repeat']:>7}{row['concurrency']:>5}{row['rps']:>10.1f}"
                f"{row['p50_ms']:>9.3f}{row['p99_ms']:>9.3f}{row['gateway_cpu_us']:>12.1f}"
                f"{row['non_2xx']:>9}"
            )
    for c, ratio in r["rate_limit_ratio"].items():
        print(f"c={c}: throughput with rate limits / without = {ratio:.3f}")
    cpu = r["gateway_cpu_us_per_request"]
    print(
        f"gateway CPU per request (median): {cpu['without']} us without, {cpu['with']} us with"
        f" ({cpu['without'] / max(1e-9, cpu['with']):.3f} as a throughput ratio)"
    )


def report(r: dict[str, Any]) -> None:
    print(
        f"\n{r['machine']}, Python {r['python']}, load: {r['load_tool']}, {r['seconds']} s per run\n"
    )
    print(
        f"{'target':<24}{'c':>4}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'+p50 ms':>9}{'+p99 ms':>9}{'non-2xx':>9}"
    )
    for name in ("direct", "gateway", "gateway /v1/responses", "gateway /v1/messages", "litellm"):
        rows = r.get(name)
        if not isinstance(rows, list):
            print(f"{name:<24}  {rows}")
            continue
        for row in rows:
            print(
                f"{name:<24}{row['concurrency']:>4}{row['rps']:>10.1f}{row['p50_ms']:>9.3f}{row['p99_ms']:>9.3f}"
                f"{row.get('added_p50_ms', 0):>9.3f}{row.get('added_p99_ms', 0):>9.3f}{row['non_2xx']:>9}"
            )
    for name in ("gateway", "litellm"):
        rows, mem = r.get(name), r.get(f"{name}_memory")
        if mem:
            print(f"{name} memory: RSS {mem['rss_mb']} MB (peak {mem['peak_rss_mb']} MB)")
    gw, ll = r.get("gateway"), r.get("litellm")
    if isinstance(gw, list) and isinstance(ll, list):
        top = max(x["concurrency"] for x in gw)
        ratio = next(x["rps"] for x in gw if x["concurrency"] == top) / max(
            1e-9, next(x["rps"] for x in ll if x["concurrency"] == top)
        )
        r["throughput_ratio_vs_litellm"] = round(ratio, 1)
        print(f"throughput at c={top}: gateway / LiteLLM = {ratio:.1f}x")
    for name in ("gateway_burst", "litellm_burst"):
        b = r.get(name)
        if b:
            extra = (
                f", recorded spend ${b['recorded_spend_usd']}" if "recorded_spend_usd" in b else ""
            )
            print(
                f"{name}: {b['allowed']}/{b['requests']} allowed against $0.01 at $0.001 each"
                f" (statuses {b['status_counts']}){extra}; overspend: {b['overspend']}"
            )
    if "litellm_error" in r:
        print("litellm failed:", r["litellm_error"][:500])


if __name__ == "__main__":
    main()
