"""``llmbudget demo``: a swarm of agents racing against per-user budgets, on the default store.

Threads play agents that call an LLM as fast as they can. Each call reserves its worst
case (prompt + ``max_tokens``) before it is "sent", and settles the real usage after —
the calls are simulated (no network, no API key), priced from the real price list. The
table at the end shows that no user went over budget, however the threads interleaved.
"""

from __future__ import annotations

import random
import shlex
import threading
import time
from dataclasses import dataclass, field

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from llmbudget.cli.help import STORE_HELP, ReadableCommand
from llmbudget.errors import BudgetExceededError
from llmbudget.manager import BudgetManager
from llmbudget.money import format_dollars
from llmbudget.stores import default_store_url

__all__ = ["LEGEND", "next_steps", "register", "run_demo"]

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
        f"[bold]{agents} agents[/] call [cyan]{MODEL}[/] (max_tokens={MAX_TOKENS}) for "
        f"{seconds:g}s against daily budgets"
    )
    console.print(f"store: [green]{escape(url)}[/]", soft_wrap=True)

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

    table = Table(title=f"project {PROJECT}", title_justify="left")
    for column in ("user", "daily limit", "spent", "left", "calls", "refused", "ok"):
        table.add_column(column, justify="left" if column in ("user", "ok") else "right")
    all_ok = True
    for user, tally in tallies.items():
        status = bm.status(user)
        ok = status.limit is not None and status.spent <= status.limit
        all_ok &= ok
        table.add_row(
            user,
            format_dollars(status.limit),
            format_dollars(status.spent),
            format_dollars(status.remaining),
            str(tally.calls),
            str(tally.refused),
            "[green]yes[/]" if ok else "[red]OVER[/]",
        )
    console.print(table)
    console.print(LEGEND)
    console.print("Each call reserved its worst case first, so racing agents could not overspend.")
    bm.close()
    console.print(next_steps(store), soft_wrap=True, highlight=False)
    return all_ok


LEGEND = "spent: real cost of the calls · left: still reservable · refused: over budget"


def next_steps(store: str | None) -> str:
    """What to try after the demo, on the same store.

    >>> print(next_steps(None))
    Next steps:
      llmbudget budgets list
      llmbudget serve
      then open http://127.0.0.1:8000/ui (the dashboard of this store)
    """
    option = f" --store {shlex.quote(store)}" if store else ""
    return (
        f"Next steps:\n  llmbudget budgets list{option}\n  llmbudget serve{option}\n"
        "  then open http://127.0.0.1:8000/ui (the dashboard of this store)"
    )


def register(app: typer.Typer) -> None:
    """Add the ``demo`` command to ``app``."""

    @app.command(cls=ReadableCommand)
    def demo(
        store: str | None = typer.Option(None, metavar="URL", help=STORE_HELP),
        agents: int = typer.Option(
            8, min=1, max=256, metavar="N", help="Concurrent agent threads."
        ),
        seconds: float = typer.Option(
            2.0, min=0.1, max=600, metavar="SECONDS", help="How long the agents run."
        ),
    ) -> None:
        """Race agents against per-user budgets and show that none is overspent."""
        if not run_demo(store, agents, seconds, Console()):
            raise typer.Exit(1)
