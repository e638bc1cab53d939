"""``llmbudget prices show|list|providers`` and ``llmbudget cost``: look up and apply prices.

All commands read genai-prices' bundled data (offline); ``--prices-file`` layers your own
JSON/YAML overrides (llmbudget's format or LiteLLM's) on top, as the library does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from llmbudget.cli.errors import fail as _fail
from llmbudget.cli.help import ReadableCommand, ReadableGroup
from llmbudget.errors import LLMBudgetError, UnknownModelError
from llmbudget.money import format_dollars as _money
from llmbudget.pricing import ModelPrice, PriceBook, TokenUsage

__all__ = ["register"]

PricesFile = Annotated[
    Path | None,
    typer.Option(
        "--prices-file",
        metavar="FILE",
        help="JSON/YAML price overrides (llmbudget or LiteLLM format); they win.",
        exists=True,
        dir_okay=False,
        readable=True,
    ),
]

_RATE_LABELS = (
    ("input_per_mtok", "input"),
    ("output_per_mtok", "output"),
    ("cache_read_per_mtok", "cache read"),
    ("cache_write_per_mtok", "cache write"),
    ("cache_write_1h_per_mtok", "cache write (1h)"),
    ("input_audio_per_mtok", "audio input"),
    ("cache_audio_read_per_mtok", "audio cache read"),
    ("output_audio_per_mtok", "audio output"),
    ("output_reasoning_per_mtok", "reasoning output"),
)


def _console() -> Console:
    return Console(highlight=False, soft_wrap=False)


def _book(prices_file: Path | None) -> PriceBook:
    if prices_file is None:
        return PriceBook.default()
    book = PriceBook()
    try:
        book.load_file(prices_file)
    except (LLMBudgetError, OSError) as exc:
        _fail(f"cannot load {prices_file}: {exc}")
    return book


def _lookup(book: PriceBook, model: str) -> ModelPrice:
    try:
        return book.lookup(model)
    except UnknownModelError as exc:
        hint = f" Did you mean: {', '.join(exc.suggestions)}?" if exc.suggestions else ""
        _fail(f"no price known for model {model!r}.{hint}")
    except LLMBudgetError as exc:
        _fail(str(exc))


def show(
    model: Annotated[
        str,
        typer.Argument(metavar="MODEL", help="Model name, e.g. gpt-4o or anthropic/claude-..."),
    ],
    prices_file: PricesFile = None,
) -> None:
    """Show every price llmbudget knows for MODEL (per million tokens)."""
    price = _lookup(_book(prices_file), model)
    console = _console()
    table = Table(title=f"{price.provider}/{price.model}", title_justify="left")
    table.add_column("price", style="bold")
    table.add_column("base $/Mtok", justify="right")
    for tier in price.tiers:
        table.add_column(f"> {tier.above_input_tokens:,} in", justify="right")
    for name, label in _RATE_LABELS:
        base = getattr(price, name)
        tiered = [getattr(t, name) for t in price.tiers]
        if base is None and all(v is None for v in tiered):
            continue
        row = [label, _money(base)]
        row += [_money(price.rate(name, t.above_input_tokens + 1)) for t in price.tiers]
        table.add_row(*row)
    console.print(table)
    facts = [
        ("web search", _money(price.web_search_per_thousand) + " / 1k")
        if price.web_search_per_thousand is not None
        else None,
        ("request fee", _money(price.request_per_thousand) + " / 1k")
        if price.request_per_thousand is not None
        else None,
        ("context window", f"{price.context_window:,}" if price.context_window else "unknown"),
        ("max output", f"{price.max_output_tokens:,}" if price.max_output_tokens else "unknown"),
        ("source", price.source),
    ]
    for fact in facts:
        if fact is not None:
            console.print(f"{fact[0]}: {fact[1]}")


def list_models(
    provider: Annotated[
        str | None,
        typer.Option("--provider", "-p", metavar="NAME", help="Only this provider."),
    ] = None,
    search: Annotated[
        str | None,
        typer.Option("--search", "-s", metavar="TEXT", help="Only names containing this."),
    ] = None,
    prices_file: PricesFile = None,
) -> None:
    """List models priced per token, with input/output/cache prices per million tokens."""
    book = _book(prices_file)
    names = book.models(provider)
    if provider is not None and not names:
        _fail(f"unknown provider {provider!r}; known: {', '.join(book.providers())}")
    if search:
        needle = search.lower()
        names = [n for n in names if needle in n.lower()]
    table = Table(title=f"{len(names)} models", title_justify="left")
    table.add_column("model", overflow="fold")
    for label in ("input", "output", "cache read", "cache write"):
        table.add_column(f"{label} $/Mtok", justify="right")
    table.add_column("tiers", justify="right")
    for name in names:
        price = book.lookup(name)
        table.add_row(
            name,
            _money(price.input_per_mtok),
            _money(price.output_per_mtok),
            _money(price.cache_read_per_mtok),
            _money(price.cache_write_per_mtok),
            str(len(price.tiers)) if price.tiers else "",
        )
    _console().print(table)


def list_providers(prices_file: PricesFile = None) -> None:
    """List providers with their number of models priced per token."""
    book = _book(prices_file)
    table = Table(title_justify="left")
    table.add_column("provider")
    table.add_column("models", justify="right")
    for provider in book.providers():
        table.add_row(provider, str(len(book.models(provider))))
    _console().print(table)


def cost(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="Model name, e.g. gpt-4o")],
    input_tokens: Annotated[
        int,
        typer.Option(
            "--input-tokens", "-i", min=0, metavar="N", help="Prompt tokens, cache included."
        ),
    ],
    output_tokens: Annotated[
        int, typer.Option("--output-tokens", "-o", min=0, metavar="N", help="Completion tokens.")
    ] = 0,
    cache_read_tokens: Annotated[
        int,
        typer.Option(
            "--cache-read-tokens", min=0, metavar="N", help="Of the input, read from cache."
        ),
    ] = 0,
    cache_write_tokens: Annotated[
        int,
        typer.Option(
            "--cache-write-tokens", min=0, metavar="N", help="Of the input, written to cache."
        ),
    ] = 0,
    prices_file: PricesFile = None,
) -> None:
    """Print the exact dollar cost of one call to MODEL."""
    price = _lookup(_book(prices_file), model)
    try:
        usage = TokenUsage(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_read_tokens=cache_read_tokens,
            cache_write_tokens=cache_write_tokens,
        )
        amount = price.cost(usage)
    except LLMBudgetError as exc:
        _fail(str(exc))
    console = _console()
    console.print(
        f"{price.provider}/{price.model}: {input_tokens:,} input + {output_tokens:,} output "
        f"tokens = [bold]{_money(amount)}[/bold]"
    )


def register(app: typer.Typer) -> None:
    """Add the ``prices`` sub-app and the top-level ``cost`` command to ``app``.

    >>> import typer
    >>> app = typer.Typer()
    >>> register(app)
    """
    prices_app = typer.Typer(
        cls=ReadableGroup,
        name="prices",
        help="Model prices (genai-prices data, plus your overrides).",
        no_args_is_help=True,
        add_completion=False,
    )
    prices_app.command("show", cls=ReadableCommand)(show)
    prices_app.command("list", cls=ReadableCommand)(list_models)
    prices_app.command("providers", cls=ReadableCommand)(list_providers)
    app.add_typer(prices_app, name="prices")
    app.command("cost", cls=ReadableCommand)(cost)
