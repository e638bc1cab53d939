"""Benchmark the library doors: what ``completion()`` and ``budget()`` add to an SDK call.

One process serves a fast fake OpenAI upstream (``bench_gateway``'s, keep-alive, fixed
usage); each measured variant runs in a fresh process of its own, one thread, sequential
calls, for ``--seconds``:

* ``sdk``: the ``openai`` SDK alone (the baseline);
* ``sdk+budget``: the same calls inside ``with llmbudget.budget(max_usd=...)``;
* ``completion``: ``llmbudget.completion()`` to the same upstream, global budget set;
* ``completion mock``: ``completion(mock_response=...)``, no network;
* streamed variants of the first three.

The overhead of a door is its µs per call minus the baseline's in the same run.
``--src DIR`` imports llmbudget from another checkout's ``src`` (to compare a change with
the code before it, in the same run)::

    git worktree add /tmp/before <commit>
    python bench/bench_calls.py --seconds 3 --src /tmp/before/src --src src

Prints a table and writes ``bench/results/calls.json``.
"""

from __future__ import annotations

import argparse
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
from bench_gateway import free_port, wait_port  # noqa: E402

RESULTS = HERE / "results" / "calls.json"
VARIANTS = (
    "sdk",
    "sdk+budget",
    "completion",
    "completion mock",
    "sdk stream",
    "sdk+budget stream",
    "completion stream",
)
MESSAGES = [{"role": "user", "content": "hi"}]


def child(variant: str, port: int, seconds: float) -> dict[str, Any]:
    """Run one variant in this process; returns calls/s and µs per call."""
    import openai

    import llmbudget

    base = f"http://127.0.0.1:{port}/v1"
    stream = variant.endswith("stream")
    client = openai.OpenAI(base_url=base, api_key="x", max_retries=0)
    llmbudget.max_budget = 1_000_000

    def sdk() -> None:
        result = client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, max_tokens=12, stream=stream
        )
        if stream:
            for _ in result:
                pass

    def completion() -> None:
        result = llmbudget.completion(
            "gpt-4o-mini", MESSAGES, api_base=base, api_key="x", max_tokens=12, stream=stream
        )
        if stream:
            for _ in result:
                pass

    def mock() -> None:
        llmbudget.completion("gpt-4o-mini", MESSAGES, mock_response=" a" * 12, max_tokens=12)

    call = {"sdk": sdk, "completion": completion, "completion mock": mock}[
        variant.replace("+budget", "").replace(" stream", "")
    ]
    block = llmbudget.budget(max_usd=1_000_000) if "+budget" in variant else None
    if block is not None:
        block.__enter__()
    for _ in range(20):  # warm up: tokenizer, price book, connections
        call()
    calls = 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    while time.perf_counter() - wall0 < seconds:
        call()
        calls += 1
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    if block is not None:
        block.__exit__(None, None, None)
    return {"calls_per_s": calls / wall, "us_per_call": 1e6 * wall / calls,
            "cpu_us_per_call": 1e6 * cpu / calls}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--src", action="append", default=[], help="llmbudget source tree(s)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", nargs=3, metavar=("VARIANT", "PORT", "SECONDS"))
    args = parser.parse_args()
    if args.child:
        variant, port, seconds = args.child
        print(json.dumps(child(variant, int(port), float(seconds))))
        return

    port = free_port()
    upstream = subprocess.Popen([sys.executable, __file__.replace("bench_calls", "bench_gateway"),
                                 "--serve-upstream", str(port)])  # fmt: skip
    try:
        wait_port(port, 10, upstream)
        trees = args.src or [""]
        results: dict[str, dict[str, Any]] = {}
        for tree in trees:
            env = dict(os.environ)
            if tree:
                env["PYTHONPATH"] = str(Path(tree).resolve())
            label = tree or "installed"
            results[label] = {}
            for variant in VARIANTS:
                out = subprocess.run(
                    [sys.executable, __file__, "--child", variant, str(port), str(args.seconds)],
                    env=env, capture_output=True, text=True, check=True,
                )  # fmt: skip
                results[label][variant] = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        upstream.terminate()
        upstream.wait(10)
    report = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "python": platform.python_version(),
        "seconds": args.seconds,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for label, rows in results.items():
        base = rows["sdk"]["us_per_call"]
        base_stream = rows["sdk stream"]["us_per_call"]
        print(f"\n{label}")
        print(f"{'variant':<20} {'calls/s':>9} {'µs/call':>9} {'CPU µs':>9} {'added µs':>9}")
        for variant, row in rows.items():
            ref = base_stream if variant.endswith("stream") else base
            added = row["us_per_call"] - ref if not variant.startswith("completion mock") else 0
            print(f"{variant:<20} {row['calls_per_s']:>9.0f} {row['us_per_call']:>9.0f} "
                  f"{row['cpu_us_per_call']:>9.0f} {added:>9.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
