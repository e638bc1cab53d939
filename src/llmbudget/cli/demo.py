"""``llmbudget demo``: a swarm of agents racing against per-user budgets, on the default store.

Threads play agents that call an LLM as fast as they can. Each call reserves its worst
case (prompt + ``max_tokens``) before it is "sent", and settles the real usage after —
the calls are simulated (no network, no API key), priced from the real price list. The
table at the end shows that no user went over budget, however the threads interleaved.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal

import typer
from rich.console import Console
from rich.table import Table

from llmbudget.errors import BudgetExceededError
from llmbudget.manager import BudgetManager
from llmbudget.stores import default_store_url

PROJECT = "llmbudget-demo"
MODEL = "gpt-4o-mini"
MAX_TOKENS = 400
USERS = {"alice": "0.002", "bob": "0.005", "carol": "0.01"}
WORDS = [
    "the",
    "budget",
    "holds",
    "every",
    "call",
    "before",
    "it",
    "is",
    "sent",
    "and",
    "settles",
    "the",
    "real",
    "cost",
    "after",
]


@dataclass
class _Tally:
    calls: int = 0
    refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def run_demo(store: str | None, agents: int, seconds: float, console: Console) -> bool:
    """Run the swarm; return ``True`` when every user stayed within budget."""
    from llmbudget.pricing import cost_from_usage
    from llmbudget.tokens import count_message_tokens, count_tokens

    url = store or default_store_url()
    bm = BudgetManager(PROJECT, store=url)
    for user, amount in USERS.items():
        bm.create_budget(total_budget=amount, user=user, duration="daily")
        bm.reset_cost(user)  # a fresh start on every run of the demo
    tallies = {user: _Tally() for user in USERS}
    stop = time.monotonic() + seconds
    console.print(
        f"[bold]{agents} agents[/] calling [cyan]{MODEL}[/] for {seconds:g}s against daily "
        f"budgets in [green]{url}[/] …"
    )

    def agent(seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < stop:
            user = rng.choice(list(USERS))
            messages = [{"role": "user", "content": " ".join(rng.choices(WORDS, k=40))}]
            try:
                hold = bm.reserve(user, model=MODEL, messages=messages, max_tokens=MAX_TOKENS)
            except BudgetExceededError:
                with tallies[user].lock:
                    tallies[user].refused += 1
                time.sleep(0.001)
                continue
            answer = " ".join(rng.choices(WORDS, k=rng.randint(20, 300)))
            time.sleep(rng.uniform(0.001, 0.01))  # the "call"
            usage = {
                "prompt_tokens": count_message_tokens(messages, MODEL),
                "completion_tokens": min(MAX_TOKENS, count_tokens(answer, MODEL)),
            }
            bm.settle(hold, cost_from_usage(MODEL, usage), model=MODEL)
            with tallies[user].lock:
                tallies[user].calls += 1

    threads = [threading.Thread(target=agent, args=(i,)) for i in range(agents)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    table = Table(title=f"project {PROJECT!r} — {MODEL}, max_tokens={MAX_TOKENS}")
    for column in ("user", "daily budget", "spent", "remaining", "calls", "refused", "ok"):
        table.add_column(column, justify="left" if column == "user" else "right")
    all_ok = True
    for user, tally in tallies.items():
        status = bm.status(user)
        ok = status.limit is not None and status.spent <= status.limit
        all_ok &= ok
        table.add_row(
            user,
            f"${status.limit}",
            f"${_fmt(status.spent)}",
            f"${_fmt(status.remaining or Decimal(0))}",
            str(tally.calls),
            str(tally.refused),
            "[green]within budget[/]" if ok else "[red]OVER[/]",
        )
    console.print(table)
    console.print(
        "Every call reserved its worst case first, so concurrent agents could not "
        "overspend; budgets reset by themselves at midnight UTC."
    )
    bm.close()
    return all_ok


def _fmt(value: Decimal) -> str:
    return f"{value:.9f}".rstrip("0").rstrip(".") if value else "0"


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        store: str | None = typer.Option(
            None, help="Store URL (default: $LLMBUDGET_STORE or sqlite:///llmbudget.db)."
        ),
        agents: int = typer.Option(8, min=1, max=256, help="Concurrent agent threads."),
        seconds: float = typer.Option(2.0, min=0.1, max=600, help="How long the agents run."),
    ) -> None:
        """Race agents against per-user budgets and show that none is overspent."""
        if not run_demo(store, agents, seconds, Console()):
            raise typer.Exit(1)
