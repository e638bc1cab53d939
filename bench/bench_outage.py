"""A Redis outage under load through the gateway: nothing lost, nothing hung, nothing unmetered.

Processes (all on 127.0.0.1):

* a private ``redis-server`` behind a TCP proxy (``tests/storekit.py``), never the shared one;
* a fake OpenAI upstream (raw asyncio) that answers after ``--upstream-delay`` seconds
  (calls are in flight when the store goes away: their settles must not be lost) and
  counts the calls it answers (``GET /count``);
* the gateway (uvicorn, own process) on that Redis through the proxy, with
  ``socket_timeout`` = ``--timeout``, its settle journal in a temporary directory;
* ``--clients`` clients (httpx, keep-alive), each sending one chat request after another.

Timeline: ``--warm`` seconds of normal traffic; the proxy **cuts** every connection and
refuses new ones for ``--cut`` seconds; Redis is then **hung** (``SIGSTOP``) for
``--hang`` seconds; then ``SIGCONT`` and ``--after`` seconds of normal traffic. Then the
clients stop, and the run waits for the gateway's journal to be empty.

Checked: the spend recorded in Redis equals the sum of the ``x-llmbudget-cost`` headers
the clients received, to the nano-dollar; every request sent during the outage was
answered within ``timeout + 0.5`` s, and every one answered during it was a 503; the
upstream answered exactly as many calls as the clients got 200s.

    python bench/bench_outage.py --clients 6 --cut 3 --hang 8 --timeout 2

Prints the figures and writes ``bench/results/outage.json``; exits 1 if a check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the TCP proxy and private Redis of tests/storekit.py
sys.path.insert(0, str(HERE))
# The process helpers and the gateway server entry are bench_gateway's, shared.
from bench_gateway import (  # noqa: E402
    free_port,
    process,
    serve_gateway,
    serve_protocol,
    wait_port,
)

RESULTS = HERE / "results" / "outage.json"
PRICE = "0.00005"  # dollars per token, input and output
USAGE = {"prompt_tokens": 8, "completion_tokens": 12, "total_tokens": 20}
BODY = {"model": "fake-gpt", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 12}
MARGIN = 0.5

# --------------------------------------------------------------------------- fake upstream


class _Upstream(asyncio.Protocol):
    """Answers every POST with one fixed chat completion after ``delay`` seconds and
    counts them; ``GET /count``."""

    answered = 0
    delay = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end]
            match = re.search(rb"content-length:\s*(\d+)", head.lower())
            length = int(match.group(1)) if match else 0
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            if head.startswith(b"GET /count"):
                self._send(json.dumps({"answered": _Upstream.answered}).encode())
            else:
                body = json.dumps(
                    {
                        "id": "chatcmpl-outage",
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
                ).encode()
                asyncio.get_running_loop().call_later(_Upstream.delay, self._answer, body)

    def _answer(self, body: bytes) -> None:
        if not self.transport.is_closing():
            _Upstream.answered += 1
            self._send(body)

    def _send(self, body: bytes) -> None:
        self.transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\nconnection: keep-alive\r\n\r\n" + body
        )  # fmt: skip


def serve_upstream(port: int, delay: float) -> None:
    _Upstream.delay = delay
    serve_protocol(_Upstream, port)


# --------------------------------------------------------------------------- gateway


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
                },
                "model_info": {"id": "fake-1"},
            }
        ],
        "general_settings": {"master_key": "sk-outage-master-0123456789", "store": store},
        "budgets": {"global": {"budget": 1_000_000, "period": "monthly"}},
        "keys": [{"key": "sk-outage-client-0123456789", "user": "outage"}],
    }


CLIENT_KEY = "sk-outage-client-0123456789"


# --------------------------------------------------------------------------- the run


@dataclass(frozen=True, slots=True)
class Answer:
    sent: float  # monotonic seconds
    done: float
    status: int
    cost: Decimal | None  # x-llmbudget-cost of a 200
    code: str | None  # the error code of a refusal


@dataclass(slots=True)
class Marks:
    cut: float = 0.0
    hang: float = 0.0
    back: float = 0.0


async def _client(url: str, stop: asyncio.Event, answers: list[Answer]) -> None:
    import httpx

    headers = {"authorization": f"Bearer {CLIENT_KEY}"}
    async with httpx.AsyncClient(base_url=url, timeout=60, headers=headers) as http:
        while not stop.is_set():
            sent = time.monotonic()
            r = await http.post("/v1/chat/completions", json=BODY)
            done = time.monotonic()
            cost = Decimal(r.headers["x-llmbudget-cost"]) if r.status_code == 200 else None
            code = None
            if r.status_code != 200:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    code = r.json()["error"]["code"]
            answers.append(Answer(sent, done, r.status_code, cost, code))


async def _drive(
    url: str, clients: int, phases: dict[str, float], proxy: Any, redis_pid: int
) -> tuple[list[Answer], Marks, list[tuple[float, int]]]:
    from llmbudget.journal import Journal

    answers: list[Answer] = []
    marks = Marks()
    stop = asyncio.Event()
    journal = Journal(os.environ["LLMBUDGET_JOURNAL"], refresh=0.0)
    kept: list[tuple[float, int]] = []

    async def watch_journal() -> None:
        while not stop.is_set():
            await asyncio.to_thread(journal.load)
            kept.append((time.monotonic(), journal.count()))
            await asyncio.sleep(0.2)

    workers = [asyncio.create_task(_client(url, stop, answers)) for _ in range(clients)]
    watcher = asyncio.create_task(watch_journal())
    await asyncio.sleep(phases["warm"])
    marks.cut = time.monotonic()
    proxy.cut()
    await asyncio.sleep(phases["cut"])
    os.kill(redis_pid, signal.SIGSTOP)
    proxy.restore()
    marks.hang = time.monotonic()
    try:
        await asyncio.sleep(phases["hang"])
    finally:
        os.kill(redis_pid, signal.SIGCONT)
    marks.back = time.monotonic()
    await asyncio.sleep(phases["after"])
    stop.set()
    await asyncio.gather(*workers)
    await watcher
    return answers, marks, kept


def _wait_for_empty_journal(path: str, limit: float) -> float:
    from llmbudget.journal import Journal

    started = time.monotonic()
    journal = Journal(path, refresh=0.0)
    while True:
        journal.load()
        if journal.count() == 0:
            return time.monotonic() - started
        if time.monotonic() - started > limit:
            raise RuntimeError(f"the journal still holds {journal.count()} entries")
        time.sleep(0.1)


def _recorded(redis_port: int) -> tuple[Decimal, Decimal]:
    """Spent and held on the global budget, read straight from Redis. Held: reserves
    that timed out while Redis was stopped and ran when it woke (the client had its
    503 by then); they count until their hold expires, never as spend."""
    from llmbudget.budgets import Budget
    from llmbudget.ledger import Ledger
    from llmbudget.stores.redis import RedisStore

    store = RedisStore(f"redis://127.0.0.1:{redis_port}/0?prefix=outage")
    try:
        status = Ledger(store).status(Budget.of("gw-global", 1_000_000, "monthly"))
        return status.spent, status.held
    finally:
        store.close()


def _upstream_count(port: int) -> int:
    import httpx

    return int(httpx.get(f"http://127.0.0.1:{port}/count").json()["answered"])


def verdict(
    answers: list[Answer],
    marks: Marks,
    recorded: Decimal,
    upstream: int,
    timeout: float,
    upstream_delay: float,
) -> dict[str, Any]:
    """The figures of a run and the checks of the module docstring (``failures``). A
    request sent during the outage may be answered 200 after it (its reserve waited for
    Redis to wake): its bound adds the upstream's own time."""
    ok = [a for a in answers if a.status == 200]
    reported = sum((a.cost for a in ok if a.cost is not None), Decimal(0))
    sent_during = [a for a in answers if marks.cut <= a.sent < marks.back]
    answered_during = [a for a in answers if marks.cut <= a.sent and a.done < marks.back]
    cut = [a for a in sent_during if a.sent < marks.hang]
    hung = [a for a in sent_during if a.sent >= marks.hang]
    bound = timeout + MARGIN
    statuses: dict[str, int] = {}
    for a in answers:
        statuses[str(a.status)] = statuses.get(str(a.status), 0) + 1
    figures: dict[str, Any] = {
        "requests": len(answers),
        "statuses": statuses,
        "ok": len(ok),
        "reported_cost_usd": str(reported),
        "recorded_spend_usd": str(recorded),
        "upstream_calls": upstream,
        "outage": {
            "requests": len(sent_during),
            "answered_503": sum(1 for a in sent_during if a.status == 503),
            "max_503_s": round(
                max((a.done - a.sent for a in sent_during if a.status == 503), default=0.0), 3
            ),
            "ok_after_wake": sum(1 for a in sent_during if a.status == 200),
            "max_ok_s": round(
                max((a.done - a.sent for a in sent_during if a.status == 200), default=0.0), 3
            ),
        },
        "during_cut": {
            "requests": len(cut),
            "max_s": round(max((a.done - a.sent for a in cut), default=0.0), 3),
            "codes": sorted({str(a.code) for a in cut if a.code}),
        },
        "during_hang": {
            "requests": len(hung),
            "max_s": round(max((a.done - a.sent for a in hung), default=0.0), 3),
            "max_503_s": round(
                max((a.done - a.sent for a in hung if a.status == 503), default=0.0), 3
            ),
            "ok_after_wake": sum(1 for a in hung if a.status == 200),
            "codes": sorted({str(a.code) for a in hung if a.code}),
        },
        "bound_s": bound,
    }
    failures = []
    if recorded != reported:
        failures.append(f"recorded ${recorded} != reported ${reported}")
    if upstream != len(ok):
        failures.append(f"upstream answered {upstream} calls, clients got {len(ok)} 200s")
    slow = [
        a
        for a in sent_during
        if a.done - a.sent > bound + (upstream_delay if a.status == 200 else 0.0)
    ]
    if slow:
        failures.append(f"{len(slow)} outage requests took over {bound} s")
    wrong = [a for a in answered_during if a.status != 503]
    if wrong:
        failures.append(f"{len(wrong)} requests answered during the outage were not 503")
    if not cut or not hung:
        failures.append("no request was sent during the cut or the hang")
    figures["failures"] = failures
    return figures


def run(
    *,
    clients: int = 6,
    warm: float = 2.0,
    cut: float = 3.0,
    hang: float = 8.0,
    after: float = 3.0,
    timeout: float = 2.0,
    upstream_delay: float = 0.2,
) -> dict[str, Any]:
    """One outage run; the :func:`verdict` figures, with the journal's peak and drain time."""
    import redis
    from tests.storekit import TcpProxy, private_redis

    me = [sys.executable, str(Path(__file__).resolve())]
    with tempfile.TemporaryDirectory(prefix="llmb-outage-") as tmpdir:
        tmp = Path(tmpdir)
        journal_path = str(tmp / "journal.db")
        env = {**os.environ, "LLMBUDGET_JOURNAL": journal_path}
        previous = os.environ.get("LLMBUDGET_JOURNAL")
        os.environ["LLMBUDGET_JOURNAL"] = journal_path
        try:
            with private_redis(tmp) as redis_port:
                redis_pid = int(redis.Redis(port=redis_port).info("server")["process_id"])
                proxy = TcpProxy("127.0.0.1", redis_port)
                store = (
                    f"redis://127.0.0.1:{proxy.port}/0?prefix=outage&socket_timeout={timeout}"
                    f"&socket_connect_timeout={timeout}"
                )
                up_port, gw_port = free_port(), free_port()
                config = tmp / "gateway.json"
                config.write_text(json.dumps(gateway_config(up_port, store)))
                try:
                    with (
                        process([*me, "--serve-upstream", str(up_port), str(upstream_delay)]),
                        process(
                            [*me, "--serve-gateway", str(config), str(gw_port)],
                            env=env,
                            log=tmp / "gateway.log",
                        ) as gw,
                    ):
                        wait_port(up_port, 10)
                        wait_port(gw_port, 60, gw)
                        phases = {"warm": warm, "cut": cut, "hang": hang, "after": after}
                        answers, marks, kept = asyncio.run(
                            _drive(f"http://127.0.0.1:{gw_port}", clients, phases, proxy, redis_pid)
                        )
                        drained = _wait_for_empty_journal(journal_path, 60)
                        upstream = _upstream_count(up_port)
                    recorded, held = _recorded(redis_port)
                finally:
                    proxy.close()
        finally:
            if previous is None:
                os.environ.pop("LLMBUDGET_JOURNAL", None)
            else:
                os.environ["LLMBUDGET_JOURNAL"] = previous
    figures = verdict(answers, marks, recorded, upstream, timeout, upstream_delay)
    figures["held_after_usd"] = str(held)
    figures["journal_peak"] = max((n for _, n in kept), default=0)
    emptied = [t for t, n in kept if t >= marks.back and n == 0]
    figures["journal_empty_s_after_wake"] = round(emptied[0] - marks.back, 3) if emptied else None
    figures["journal_empty_s_after_stop"] = round(drained, 3)
    figures["phases_s"] = phases
    figures["clients"] = clients
    figures["upstream_delay_s"] = upstream_delay
    figures["store_timeout_s"] = timeout
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--warm", type=float, default=2.0)
    parser.add_argument("--cut", type=float, default=3.0)
    parser.add_argument("--hang", type=float, default=8.0)
    parser.add_argument("--after", type=float, default=3.0)
    parser.add_argument("--timeout", type=float, default=2.0, help="Redis socket_timeout (s)")
    parser.add_argument("--upstream-delay", type=float, default=0.2, help="seconds per answer")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--serve-upstream", nargs=2, metavar=("PORT", "DELAY"), help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--serve-gateway", nargs=2, metavar=("CONFIG", "PORT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.serve_upstream:
        serve_upstream(int(args.serve_upstream[0]), float(args.serve_upstream[1]))
        return
    if args.serve_gateway:
        serve_gateway(args.serve_gateway[0], int(args.serve_gateway[1]))
        return
    figures = run(
        clients=args.clients,
        warm=args.warm,
        cut=args.cut,
        hang=args.hang,
        after=args.after,
        timeout=args.timeout,
        upstream_delay=args.upstream_delay,
    )
    figures = {
        "command": "python bench/bench_outage.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        **figures,
    }
    print(json.dumps(figures, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    sys.exit(1 if figures["failures"] else 0)


if __name__ == "__main__":
    main()
