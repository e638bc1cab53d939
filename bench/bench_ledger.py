"""Ledger throughput on the default SQLite store.

Prints, and writes to ``bench/results/ledger.json``:

* persisted ``BudgetManager.update_cost`` ops/s at 1k and 10k users (one process, one
  thread, each update a committed SQLite transaction);
* reserve+settle pairs/s with 1 and 8 threads.

Optionally the seed's reference implementation (LiteLLM's ``BudgetManager``, which
rewrites a JSON file of all users on every update) is measured the same way when
``--litellm-python`` names a Python that has ``litellm`` installed.

    python bench/bench_ledger.py [--seconds 3] [--litellm-python /path/to/venv/bin/python]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

from llmbudget import BudgetManager
from llmbudget.budgets import Budget
from llmbudget.ledger import Ledger
from llmbudget.stores.sqlite import SQLiteStore

RESULTS = Path(__file__).parent / "results" / "ledger.json"

# A realistic chat-completion response with usage; priced from genai-prices each time.
RESPONSE = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
    "usage": {"prompt_tokens": 120, "completion_tokens": 40, "total_tokens": 160},
}


def bench_update_cost(users: int, seconds: float, workdir: Path) -> dict[str, Any]:
    store = SQLiteStore(str(workdir / f"update_cost_{users}.db"))
    bm = BudgetManager("bench", store=store)
    names = [f"user-{i}" for i in range(users)]
    for name in names:
        bm.create_budget(total_budget=1000, user=name, duration="monthly")
    ops = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for _ in range(100):
            bm.update_cost(user=names[ops % users], completion_obj=RESPONSE)
            ops += 1
    elapsed = time.perf_counter() - start
    store.close()
    return {
        "users": users,
        "ops": ops,
        "seconds": round(elapsed, 3),
        "ops_per_s": round(ops / elapsed),
    }


def bench_pairs(threads: int, seconds: float, workdir: Path) -> dict[str, Any]:
    store = SQLiteStore(str(workdir / f"pairs_{threads}.db"))
    ledger = Ledger(store)
    budgets = [Budget.of(f"user:bench:{i}", 10**6, "daily") for i in range(threads)]
    counts = [0] * threads
    stop = threading.Event()

    def worker(i: int) -> None:
        while not stop.is_set():
            hold = ledger.reserve([budgets[i]], "0.01")
            ledger.settle(hold, "0.004", model="m")
            counts[i] += 1

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    store.close()
    total = sum(counts)
    return {"threads": threads, "pairs": total, "seconds": round(elapsed, 3),
            "pairs_per_s": round(total / elapsed)}  # fmt: skip


LITELLM_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    os.chdir(sys.argv[1])
    from litellm import BudgetManager
    users, seconds = int(sys.argv[2]), float(sys.argv[3])
    bm = BudgetManager(project_name="bench")
    for i in range(users):
        bm.user_dict[f"user-{i}"] = {"total_budget": 1000}
    response = json.loads(sys.argv[4])
    from litellm import ModelResponse
    obj = ModelResponse(**response)
    ops, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        bm.update_cost(user=f"user-{ops % users}", completion_obj=obj)
        bm.save_data()  # what its background thread does after every update
        ops += 1
    elapsed = time.perf_counter() - start
    print(json.dumps({"users": users, "ops": ops, "seconds": round(elapsed, 3),
                      "ops_per_s": round(ops / elapsed, 1)}))
    """
)


def bench_litellm(python: str, users: int, seconds: float, workdir: Path) -> dict[str, Any]:
    # LiteLLM's update_cost saves in a background thread; calling save_data inline measures
    # the persisted rate (otherwise updates pile up unsaved and a crash loses them).
    out = subprocess.run(
        [python, "-c", LITELLM_SCRIPT, str(workdir), str(users), str(seconds),
         json.dumps(RESPONSE)],
        capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--litellm-python", default=os.environ.get("LITELLM_PYTHON"))
    args = parser.parse_args()

    results: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "sqlite": __import__("sqlite3").sqlite_version,
    }
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        results["update_cost"] = [
            bench_update_cost(n, args.seconds, workdir) for n in (1000, 10000)
        ]
        results["reserve_settle"] = [bench_pairs(t, args.seconds, workdir) for t in (1, 8)]
        if args.litellm_python:
            results["litellm_update_cost"] = [
                bench_litellm(args.litellm_python, n, args.seconds, workdir) for n in (1000, 10000)
            ]

    print("persisted update_cost (one process, SQLite, WAL):")
    for row in results["update_cost"]:
        print(f"  {row['users']:>6} users: {row['ops_per_s']:>8} ops/s")
    for row in results.get("litellm_update_cost", []):
        print(
            f"  seed reference (LiteLLM BudgetManager) {row['users']:>6} users: {row['ops_per_s']:>8} ops/s"
        )
    print("reserve+settle pairs (SQLite):")
    for row in results["reserve_settle"]:
        print(f"  {row['threads']:>2} threads: {row['pairs_per_s']:>8} pairs/s")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
