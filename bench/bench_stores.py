"""Store throughput: reserve+settle pairs per second at 1, 16 and 64 concurrent clients.

Each client is a thread (and, for Redis, also an asyncio task on one event loop) sharing
one store object, looping ``reserve`` then ``settle`` on its own user budget, the common
case of per-user budgets. Next to each store, the raw server limit measured in the same
run: ``redis-benchmark -t incr`` (C client, ``-c`` clients) and a Python INCR loop
through redis-py for Redis; a one-row ``UPDATE ... RETURNING`` loop through psycopg, one
connection per client, for PostgreSQL.

    python bench/bench_stores.py [--seconds 3] [--stores memory,sqlite,postgres,redis]

Prints a table and writes ``bench/results/stores.json``. Needs the PostgreSQL and Redis
test servers (``$LLMBUDGET_TEST_POSTGRES``, ``$LLMBUDGET_TEST_REDIS``, defaults as in
``tests/storekit.py``); a store whose server is down is reported and skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
# --src TREE benches another checkout's llmbudget (before/after comparisons in one run).
SRC = Path(sys.argv[sys.argv.index("--src") + 1]) if "--src" in sys.argv else ROOT / "src"
sys.path.insert(0, str(SRC))

from llmbudget.stores.base import Line, Store  # noqa: E402

POSTGRES_URL = os.environ.get(
    "LLMBUDGET_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("LLMBUDGET_TEST_REDIS", "redis://127.0.0.1:6379/0")
CLIENTS = (1, 16, 64)
NOW = time.time()
WINDOW = int(NOW // 86_400 * 86_400)
LIMIT = 10**18  # never refuses: this measures the operations, not the refusals
AMOUNT = 10_000_000


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(params)
    return urlunsplit(parts._replace(query=urlencode(query)))


def _summary(latencies: list[float], count: int, elapsed: float) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "pairs_per_s": count / elapsed,
        "p50_ms": 1000 * statistics.median(ordered) if ordered else 0.0,
        "p99_ms": 1000 * ordered[int(0.99 * (len(ordered) - 1))] if ordered else 0.0,
    }


# -- workloads ----------------------------------------------------------------------------


def bench_threads(store: Store, clients: int, seconds: float) -> dict[str, float]:
    stop = threading.Event()
    counts = [0] * clients
    latencies: list[list[float]] = [[] for _ in range(clients)]
    start = threading.Barrier(clients + 1)
    run = uuid.uuid4().hex[:8]

    def client(n: int) -> None:
        lines = [Line(f"user:{run}:{n}", WINDOW, LIMIT)]
        mine = latencies[n]
        start.wait()
        i = 0
        while not stop.is_set():
            began = time.perf_counter()
            hold_id = f"{run}-{n}-{i}"
            store.reserve(hold_id, lines, AMOUNT, NOW + 600, NOW)
            store.settle(hold_id, AMOUNT // 2, "m", NOW)
            mine.append(time.perf_counter() - began)
            i += 1
        counts[n] = i

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    return _summary([x for lat in latencies for x in lat], sum(counts), elapsed)


def bench_async(make_store: Callable[[], Any], clients: int, seconds: float) -> dict[str, float]:
    async def main() -> dict[str, float]:
        store = make_store()
        run = uuid.uuid4().hex[:8]
        latencies: list[float] = []
        count = 0
        deadline = 0.0

        async def client(n: int) -> None:
            nonlocal count
            lines = [Line(f"user:{run}:{n}", WINDOW, LIMIT)]
            i = 0
            while time.perf_counter() < deadline:
                began = time.perf_counter()
                hold_id = f"{run}-{n}-{i}"
                await store.reserve(hold_id, lines, AMOUNT, NOW + 600, NOW)
                await store.settle(hold_id, AMOUNT // 2, "m", NOW)
                latencies.append(time.perf_counter() - began)
                i += 1
            count += i

        try:
            await store.usage("warm-up", WINDOW, NOW)
            began = time.perf_counter()
            deadline = began + seconds
            await asyncio.gather(*(client(n) for n in range(clients)))
            return _summary(latencies, count, time.perf_counter() - began)
        finally:
            await store.aclose()

    return asyncio.run(main())


def raw_redis_benchmark(clients: int) -> float | None:
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return None
    parts = urlsplit(REDIS_URL)
    out = subprocess.run(
        [
            binary,
            "-h",
            parts.hostname or "127.0.0.1",
            "-p",
            str(parts.port or 6379),
            "-t",
            "incr",
            "-q",
            "-n",
            "200000",
            "-c",
            str(clients),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    ).stdout
    found = re.findall(r"INCR: ([\d.]+) requests per second", out)
    return float(found[-1]) if found else None


def raw_redis_python(clients: int, seconds: float) -> float:
    import redis

    pool = redis.BlockingConnectionPool.from_url(REDIS_URL, max_connections=64)
    client = redis.Redis(connection_pool=pool)
    stop = threading.Event()
    counts = [0] * clients
    key = f"bench:{uuid.uuid4().hex}"

    def loop(n: int) -> None:
        i = 0
        while not stop.is_set():
            client.incr(key)
            i += 1
        counts[n] = i

    threads = [threading.Thread(target=loop, args=(n,)) for n in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    client.delete(key)
    client.close()
    pool.disconnect()
    return sum(counts) / elapsed


def raw_postgres(clients: int, seconds: float) -> float:
    import psycopg

    table = f"bench_raw_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v bigint NOT NULL)")
        conn.execute(f"INSERT INTO {table} SELECT g, 0 FROM generate_series(0, {clients}) g")
    stop = threading.Event()
    counts = [0] * clients
    start = threading.Barrier(clients + 1)

    def loop(n: int) -> None:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            start.wait()
            i = 0
            while not stop.is_set():
                conn.execute(f"UPDATE {table} SET v = v + 1 WHERE id = %s RETURNING v", (n,))
                i += 1
            counts[n] = i

    threads = [threading.Thread(target=loop, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"DROP TABLE {table}")
    return sum(counts) / elapsed


# -- stores -------------------------------------------------------------------------------


def open_stores(names: list[str], folder: Path) -> dict[str, tuple[Store, Callable[[], None]]]:
    opened: dict[str, tuple[Store, Callable[[], None]]] = {}
    tag = f"bench_{os.getpid()}"
    for name in names:
        try:
            if name == "memory":
                from llmbudget.stores.memory import MemoryStore

                opened[name] = (MemoryStore(), lambda: None)
            elif name == "sqlite":
                from llmbudget.stores.sqlite import SQLiteStore

                store = SQLiteStore(str(folder / "bench.db"))
                opened[name] = (store, store.close)
            elif name == "postgres":
                from llmbudget.stores.postgres import PostgresStore

                # 32 connections serve the 64 clients: the shared server allows 100.
                pg = PostgresStore(_with_query(POSTGRES_URL, schema=tag, pool_max="32"))

                def drop(pg: Any = pg) -> None:
                    import psycopg

                    pg.close()
                    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
                        conn.execute(f"DROP SCHEMA IF EXISTS {tag} CASCADE")

                opened[name] = (pg, drop)
            elif name == "redis":
                from llmbudget.stores.redis import RedisStore

                rs = RedisStore(_with_query(REDIS_URL, prefix=tag))

                def clean(rs: Any = rs) -> None:
                    import redis

                    rs.close()
                    raw = redis.Redis.from_url(REDIS_URL)
                    keys = list(raw.scan_iter(match="{" + tag + "}:*", count=1000))
                    for i in range(0, len(keys), 1000):
                        raw.unlink(*keys[i : i + 1000])
                    raw.close()

                opened[name] = (rs, clean)
        except Exception as exc:  # a server that is down: say so, bench the rest
            print(f"{name}: skipped ({type(exc).__name__}: {exc})", file=sys.stderr)
    return opened


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--stores", default="memory,sqlite,postgres,redis")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "stores.json"))
    parser.add_argument("--src", default=str(SRC), help="the llmbudget source tree to bench")
    args = parser.parse_args()
    names = [n.strip() for n in args.stores.split(",") if n.strip()]

    try:
        import hiredis  # noqa: F401

        parser_name = "hiredis"
    except ImportError:
        parser_name = "python"
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        stores = open_stores(names, Path(tmp))
        try:
            for name, (store, _) in stores.items():
                for clients in CLIENTS:
                    result = bench_threads(store, clients, args.seconds)
                    rows.append({"store": name, "mode": "threads", "clients": clients, **result})
                    print(f"{name:8} threads {clients:3}: {result['pairs_per_s']:9.0f} pairs/s")
                if name == "redis":
                    from llmbudget.stores.redis import AsyncRedisStore

                    url = store.url  # type: ignore[attr-defined]
                    for clients in CLIENTS:
                        result = bench_async(partial(AsyncRedisStore, url), clients, args.seconds)
                        rows.append(
                            {"store": name, "mode": "asyncio", "clients": clients, **result}
                        )
                        print(f"{name:8} asyncio {clients:3}: {result['pairs_per_s']:9.0f} pairs/s")
                if name == "postgres":
                    from llmbudget.stores.postgres import AsyncPostgresStore

                    url = store.url  # type: ignore[attr-defined]
                    for clients in CLIENTS:
                        result = bench_async(
                            partial(AsyncPostgresStore, url), clients, args.seconds
                        )
                        rows.append(
                            {"store": name, "mode": "asyncio", "clients": clients, **result}
                        )
                        print(f"{name:8} asyncio {clients:3}: {result['pairs_per_s']:9.0f} pairs/s")
        finally:
            for _, close in stores.values():
                close()

    raw: list[dict[str, Any]] = []
    for clients in CLIENTS:
        if "redis" in stores:
            c_rate = raw_redis_benchmark(clients)
            raw.append(
                {
                    "server": "redis",
                    "client": "redis-benchmark INCR",
                    "clients": clients,
                    "ops_per_s": c_rate,
                }
            )
            py_rate = raw_redis_python(clients, args.seconds)
            raw.append(
                {
                    "server": "redis",
                    "client": "redis-py INCR (threads)",
                    "clients": clients,
                    "ops_per_s": py_rate,
                }
            )
        if "postgres" in stores:
            pg_rate = raw_postgres(clients, args.seconds)
            raw.append(
                {
                    "server": "postgres",
                    "client": "psycopg UPDATE..RETURNING (threads)",
                    "clients": clients,
                    "ops_per_s": pg_rate,
                }
            )

    print()
    header = f"{'store':9}{'mode':9}{'clients':>8}{'pairs/s':>10}{'ops/s':>10}{'p50 ms':>9}{'p99 ms':>9}  vs raw"
    print(header)
    print("-" * len(header))
    for row in rows:
        ops = 2 * row["pairs_per_s"]  # a pair is two store operations (two round trips)
        limit = next(
            (
                r["ops_per_s"]
                for r in raw
                if r["server"] == row["store"] and r["clients"] == row["clients"] and r["ops_per_s"]
            ),
            None,
        )
        row["ops_per_s"] = ops
        row["fraction_of_raw_ops"] = None if limit is None else ops / limit
        share = "" if limit is None else f"{100 * ops / limit:5.1f} %"
        print(
            f"{row['store']:9}{row['mode']:9}{row['clients']:8}{row['pairs_per_s']:10.0f}"
            f"{ops:10.0f}{row['p50_ms']:9.2f}{row['p99_ms']:9.2f}  {share}"
        )
    print()
    for r in raw:
        rate = "n/a" if r["ops_per_s"] is None else f"{r['ops_per_s']:.0f}"
        print(f"raw {r['server']:8} {r['client']:38} {r['clients']:3} clients: {rate} ops/s")

    result = {
        "command": "python bench/bench_stores.py " + " ".join(sys.argv[1:]),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "redis_parser": parser_name,
        },
        "seconds_per_cell": args.seconds,
        "workload": "per-client user budget, reserve + settle (2 store operations per pair)",
        "stores": rows,
        "raw": raw,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
