"""Benchmark CPU time per request: the gateway (standalone and inside ``llmbudget serve``)
and the budget server, on each store, with an optional profile summary.

Processes (all on 127.0.0.1): ``bench_gateway``'s fake OpenAI upstream; the process
measured (uvicorn with uvloop/httptools); ``wrk`` as the load (``apt-get install wrk``).
Every gateway request enforces six budgets in one atomic reserve (key, user, team,
global, model, deployment) and settles with the upstream's usage plus a spend-log entry. The server
rows send ``POST /v1/projects/bench/charge``.

Measured, per row: requests/s at ``--concurrency`` and the measured process's CPU time
(user + system, every thread, from ``/proc``) divided by the requests served in the same
window. ``--profile`` also samples the gateway on SQLite with ``py-spy`` (a developer
tool, ``pip install py-spy``; not a dependency; ``--profile STORE`` picks the store) and prints the share of samples per group
of code (store, HTTP server, upstream client, pricing, ...) with the top functions.

    python bench/bench_cpu.py --seconds 5 --stores memory,sqlite,postgres,redis --profile

``--workers 1,2`` measures ``llmbudget serve`` (the ``serve`` mode) once per worker count
and prints each count's throughput as a ratio of one worker's, from the same run; CPU is
then the whole process tree's (the supervisor and its workers).

    python bench/bench_cpu.py --modes serve --stores redis --workers 1,2 --concurrency 64

Prints tables and writes ``bench/results/cpu.json``. PostgreSQL and Redis rows need the
servers of ``$LLMBUDGET_TEST_POSTGRES`` / ``$LLMBUDGET_TEST_REDIS`` (defaults: this
machine's 127.0.0.1 services) and are skipped with a note when unreachable.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from bench_gateway import (  # noqa: E402
    BODY,
    free_port,
    process,
    run_wrk,
    wait_port,
)
from bench_gateway import gateway_config as base_gateway_config  # noqa: E402

RESULTS = HERE / "results" / "cpu.json"
KEY = "sk-bench-key-0123456789abcdef"
ADMIN = "sk-bench-admin-0123456789"
CHARGE = json.dumps({"user": "u", "amount": "0.000001", "model": "m"})
TICKS = os.sysconf("SC_CLK_TCK")

# Where a sampled frame's code lives -> the group it is reported under (first match wins).
GROUPS = [
    ("store", ("llmbudget/stores/", "llmbudget/operations", "sqlite3", "psycopg", "redis/")),
    ("ledger + metering", ("llmbudget/ledger", "llmbudget/reservations", "llmbudget/metering/",
                           "llmbudget/plans", "llmbudget/anchors", "llmbudget/periods")),
    ("pricing + money", ("llmbudget/pricing/", "llmbudget/money", "genai_prices", "decimal")),
    ("tokens", ("llmbudget/tokens", "tiktoken")),
    ("gateway", ("llmbudget/gateway/", "llmbudget/translate")),
    ("server", ("llmbudget/server/",)),
    ("upstream client", ("aiohttp/", "yarl/", "multidict/")),
    ("HTTP server + framework", ("uvicorn/", "starlette/", "fastapi/", "httptools", "h11/",
                                 "anyio/", "pydantic")),
    ("JSON", ("orjson", "json/")),
    ("event loop", ("asyncio/", "uvloop", "selectors", "concurrent/", "threading")),
]  # fmt: skip


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of every thread of ``pid`` and of its child processes
    (``serve --workers N``: the workers), living ones read from ``/proc``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = (int(fields[11]) + int(fields[12])) / TICKS
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            total += cpu_seconds(int(child))
    return total


def gateway_config(upstream_port: int, store: str) -> dict[str, Any]:
    """``bench_gateway``'s config (global, model and deployment budgets) with a key whose
    user belongs to a team, each with a budget of its own."""
    monthly = {"budget": 1_000_000, "period": "monthly"}
    return {
        **base_gateway_config(upstream_port, store),
        "teams": {"bench-team": monthly},
        "users": {"bench-user": {**monthly, "team": "bench-team"}},
        "keys": [{"id": "bench-key", "key": KEY, "user": "bench-user", **monthly}],
    }


def store_urls(names: list[str], workdir: Path) -> dict[str, str | None]:
    """Store URL per name; ``None`` when its server is unreachable."""
    urls: dict[str, str | None] = {}
    for name in names:
        if name == "memory":
            urls[name] = "memory://"
        elif name == "sqlite":
            urls[name] = f"sqlite:///{workdir / 'bench.db'}"
        elif name == "postgres":
            url = os.environ.get("LLMBUDGET_TEST_POSTGRES", "postgresql://postgres@127.0.0.1/test")
            urls[name] = url if _reachable(url) else None
        elif name == "redis":
            url = os.environ.get("LLMBUDGET_TEST_REDIS", "redis://127.0.0.1:6379/0")
            urls[name] = url if _reachable(url) else None
        else:
            raise SystemExit(f"unknown store {name!r}")
    return urls


def _reachable(url: str) -> bool:
    from llmbudget.stores import open_store

    try:
        open_store(url).close()
    except Exception:
        return False
    return True


def _fresh(url: str) -> str:
    """A private namespace per row, so rows do not see each other's spend."""
    tag = uuid.uuid4().hex[:8]
    if url.startswith("redis"):
        sep = "&" if "?" in url else "?"
        return f"{url}{sep}prefix=bench-cpu-{tag}"
    if url.startswith("postgres"):
        sep = "&" if "?" in url else "?"
        return f"{url}{sep}schema=bench_cpu_{tag}"
    return url


def drop(url: str) -> None:
    """Remove a row's namespace from the shared PostgreSQL / Redis server."""
    if url.startswith("postgres"):
        import psycopg

        base, _, query = url.partition("?")
        schema = query.split("schema=", 1)[1].split("&", maxsplit=1)[0]
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    elif url.startswith("redis"):
        import redis

        prefix = url.split("prefix=", 1)[1].split("&", maxsplit=1)[0]
        client = redis.Redis.from_url(url.partition("?")[0])
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            client.delete(key)
        client.close()


def measure(
    pid: int, url: str, key: str, body: str, concurrency: int, seconds: float
) -> dict[str, Any]:
    run_wrk(url, key, concurrency, 1, body)  # warm up: connections, caches, tokenizer
    cpu0 = cpu_seconds(pid)
    row = run_wrk(url, key, concurrency, seconds, body)
    cpu = cpu_seconds(pid) - cpu0
    row["cpu_us_per_request"] = round(1e6 * cpu / max(1, row["requests"]), 1)
    row["cpu_share"] = round(cpu / seconds, 2)  # of one core
    return row


def gateway_process(mode: str, config_file: Path, port: int, log: Path, workers: int = 1) -> Any:
    if mode == "gateway":
        args = [
            sys.executable,
            str(HERE / "bench_gateway.py"),
            "--serve-gateway",
            str(config_file),
            str(port),
        ]
    else:
        args = [str(Path(sys.executable).parent / "llmbudget"), "serve", "--config", str(config_file),
                "--port", str(port), "--log-level", "warning", "--workers", str(workers)]  # fmt: skip
    env = {**os.environ, "LLMBUDGET_ADMIN_KEY": ADMIN}
    return process(args, env=env, log=log)


def profile(pid: int, url: str, concurrency: int, seconds: float, out: Path) -> dict[str, Any]:
    """Sample ``pid`` with py-spy while under load; self time per group and function."""
    raw = out.with_suffix(".txt")
    spy = subprocess.Popen(
        ["py-spy", "record", "--pid", str(pid), "--duration", str(round(seconds)), "--rate", "250",
         "--format", "raw", "--gil", "--nonblocking", "--output", str(raw)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(0.5)
    run_wrk(url, KEY, concurrency, seconds, BODY)
    spy.wait(60)
    groups: collections.Counter[str] = collections.Counter()
    functions: collections.Counter[tuple[str, str]] = collections.Counter()
    ours: collections.Counter[str] = collections.Counter()  # inclusive time, our functions
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        leaf = frames[-1]
        n = int(count)
        total += n
        for frame in {_short(f) for f in frames if "llmbudget/" in f}:
            ours[frame] += n
        group = next((g for g, marks in GROUPS if any(m in leaf for m in marks)), "other")
        groups[group] += n
        functions[(group, _short(leaf))] += n
    return {
        "samples": total,
        "groups": {g: round(100 * n / total, 1) for g, n in groups.most_common()},
        "top": [
            {"group": g, "function": f, "percent": round(100 * n / total, 1)}
            for (g, f), n in functions.most_common(25)
        ],
        "ours_inclusive": [
            {"function": f, "percent": round(100 * n / total, 1)} for f, n in ours.most_common(30)
        ],
    }


def _short(frame: str) -> str:
    """``name (path/file.py:line)`` -> ``name file.py``."""
    name, _, where = frame.partition(" (")
    return f"{name} {where.rsplit('/', 1)[-1].split(':')[0]}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--stores", default="memory,sqlite,postgres,redis")
    parser.add_argument("--modes", default="gateway,serve,server")
    parser.add_argument(
        "--profile", nargs="?", const="sqlite", metavar="STORE",
        help="py-spy profile of the gateway on STORE (default sqlite)",
    )  # fmt: skip
    parser.add_argument(
        "--workers", default="1", help="serve mode: worker counts to measure, e.g. 1,2"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    worker_counts = [int(n) for n in args.workers.split(",")]
    if not shutil.which("wrk"):
        raise SystemExit("bench_cpu needs wrk (apt-get install wrk)")
    if args.profile and not shutil.which("py-spy"):
        raise SystemExit("--profile needs py-spy (pip install py-spy)")

    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    profiled: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        up_port = free_port()
        upstream = [
            sys.executable,
            str(HERE / "bench_gateway.py"),
            "--serve-upstream",
            str(up_port),
        ]
        with process(upstream) as up:
            wait_port(up_port, 10, up)
            for store, base_url in store_urls(args.stores.split(","), workdir).items():
                if base_url is None:
                    notes.append(f"{store}: server unreachable, rows skipped")
                    continue
                for mode, workers in [
                    (m, n) for m in args.modes.split(",")
                    for n in (worker_counts if m == "serve" else [1])
                ]:  # fmt: skip
                    url = _fresh(base_url)
                    if store == "sqlite":
                        url = f"sqlite:///{workdir / f'{mode}-{workers}.db'}"
                    port = free_port()
                    config = gateway_config(up_port, url)
                    if mode != "gateway":
                        config = {**config, "store": url, "admin_key": ADMIN}
                    if mode == "server":
                        config = {"store": url, "admin_key": ADMIN}
                    config_file = workdir / f"{store}-{mode}-{workers}.yaml"
                    config_file.write_text(yaml.safe_dump(config))
                    log = workdir / f"{store}-{mode}-{workers}.log"
                    with contextlib.ExitStack() as cleanup:
                        cleanup.callback(drop, url)
                        proc = cleanup.enter_context(
                            gateway_process(mode, config_file, port, log, workers)
                        )
                        wait_port(port, 30, proc)
                        if mode == "server":
                            base = f"http://127.0.0.1:{port}/v1/projects/bench"
                            httpx.put(f"{base}/budgets/u", json={"amount": "1000000", "period": "daily"},
                                      headers={"Authorization": f"Bearer {ADMIN}"}).raise_for_status()  # fmt: skip
                            target, key, body = f"{base}/charge", ADMIN, CHARGE
                        else:
                            target, key, body = (
                                f"http://127.0.0.1:{port}/v1/chat/completions",
                                KEY,
                                BODY,
                            )
                        row = measure(proc.pid, target, key, body, args.concurrency, args.seconds)
                        row.update(store=store, mode=mode, workers=workers)
                        rows.append(row)
                        print(f"{mode:<8}{store:<10}{workers:>3}{row['rps']:>10.1f} req/s"
                              f"{row['cpu_us_per_request']:>10.1f} µs CPU/req"
                              f"  non-2xx {row['non_2xx']}", flush=True)  # fmt: skip
                        if mode == "gateway" and store == args.profile:
                            profiled = profile(proc.pid, target, args.concurrency, args.seconds,
                                               workdir / "profile")  # fmt: skip
    report = {
        "command": "python bench/bench_cpu.py " + " ".join(sys.argv[1:]),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "concurrency": args.concurrency,
        "rows": rows,
        "profile": profiled,
        "notes": notes,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    one_worker = {r["store"]: r["rps"] for r in rows if r["mode"] == "serve" and r["workers"] == 1}
    for row in rows:
        if row["mode"] == "serve" and row["store"] in one_worker:
            row["vs_one_worker"] = round(row["rps"] / max(one_worker[row["store"]], 1e-9), 2)
    print(f"\n{'mode':<8}{'store':<10}{'workers':>8}{'req/s':>10}{'CPU µs/req':>12}{'cores':>7}"
          f"{'vs 1 worker':>13}")  # fmt: skip
    for row in rows:
        ratio = f"{row['vs_one_worker']:.2f}x" if "vs_one_worker" in row else ""
        print(f"{row['mode']:<8}{row['store']:<10}{row['workers']:>8}{row['rps']:>10.1f}"
              f"{row['cpu_us_per_request']:>12.1f}{row['cpu_share']:>7.2f}{ratio:>13}")  # fmt: skip
    for note in notes:
        print("note:", note)
    if profiled:
        print(
            f"\nprofile of the gateway on {args.profile} ({profiled['samples']} samples), self time:"
        )
        for group, share in profiled["groups"].items():
            print(f"  {share:5.1f} %  {group}")
        print("top functions (self time):")
        for item in profiled["top"]:
            print(f"  {item['percent']:5.1f} %  [{item['group']}] {item['function']}")
        print("our functions (inclusive time):")
        for item in profiled["ours_inclusive"]:
            print(f"  {item['percent']:5.1f} %  {item['function']}")


if __name__ == "__main__":
    main()
