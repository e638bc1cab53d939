"""Benchmark the gateway's metrics hook: CPU per request of what the proxy reports.

Per simulated request, the calls ``gateway/proxy.py`` makes: a hold opened, an upstream
answer timed, the hold ended with a cost charged to six budgets (key, user, team, global,
model, deployment). Measured in one process (a registry of its own) and in
prometheus-client's multiprocess mode (values in memory-mapped files, as under
``llmbudget serve --workers N``), each in a fresh interpreter.

    python bench/bench_metrics.py --requests 200000

The whole-gateway CPU per request, with the hook in place, is ``bench/bench_cpu.py``'s.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from decimal import Decimal


def run(requests: int) -> float:
    """CPU µs per request of the hook, in this process."""
    from prometheus_client import CollectorRegistry

    from llmbudget.budgets import Budget
    from llmbudget.gateway.metrics import GatewayMetrics

    scopes = ("gw-key:k", "gw-user:u", "gw-team:t", "gw-global", "gw-model:m", "gw-deployment:d")

    class Group:
        budgets = tuple(Budget.of(s, 100, "daily") for s in scopes)

    class Meter:  # what the hook reads of a metering.Meter
        label = "m"
        cost = Decimal("0.000048")
        groups = (Group(),)

    metrics = GatewayMetrics(CollectorRegistry())
    start = time.process_time()
    for _ in range(requests):
        meter = Meter()
        metrics.opened(meter)  # type: ignore[arg-type]
        metrics.answered("d", 200, 0.001)
        metrics.ended(meter)  # type: ignore[arg-type]
    return 1e6 * (time.process_time() - start) / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(f"{run(args.requests):.2f}")
        return
    command = [sys.executable, __file__, "--child", "--requests", str(args.requests)]
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    one = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    with tempfile.TemporaryDirectory() as shared:
        env["PROMETHEUS_MULTIPROC_DIR"] = shared
        multi = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    print(f"one process:        {one.stdout.strip()} µs CPU per request")
    print(f"multiprocess mode:  {multi.stdout.strip()} µs CPU per request")


if __name__ == "__main__":
    main()
