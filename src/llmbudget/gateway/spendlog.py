"""The gateway's spend log: one store log entry (kind ``gateway``) per request.

Each entry is JSON, money as a plain decimal string (exact, never ``6E-8``), never the
key's secret::

    {"id": "req_...", "key": "key_1a2b...", "user": "alice", "team": "ml", "org": "acme",
     "end_user": "customer-42", "model": "gpt-4o", "deployment": "openai-main",
     "upstream_model": "gpt-4o", "prompt_tokens": 12, "completion_tokens": 40,
     "cost": "0.00043", "reserved": "0.16387", "latency_ms": 812.4, "status": "ok",
     "http_status": 200, "stream": true, "endpoint": "chat.completions", "usage_source": "upstream"}

``status`` is ``ok``, ``upstream_error``, ``client_disconnected`` or ``budget_exceeded``;
``usage_source`` says whether the cost came from the upstream's ``usage`` or from
counting the streamed text (the upstream sent none, or the client left early).

:func:`scan_spend_logs` walks the entries of a time range that match some fields (newest
first, in pages; the dashboard's reports and CSV export use it), :func:`query_spend_logs`
returns the first rows of such a walk (``GET /v1/spend/logs``), :func:`total_spend` sums
the cost of a time range, :func:`spend_row` shapes one entry for display (money re-written as plain
decimals, whatever an older writer stored) and :func:`render_spend_table` turns rows into an
HTML table.

>>> rows = [{"at": "2026-01-01T00:00:00+00:00", "key": "key_1", "user": "a", "model": "m",
...          "cost": "0.1", "status": "ok"}]
>>> "<td>key_1</td>" in render_spend_table(rows)
True
"""

from __future__ import annotations

import html
import math
from collections.abc import AsyncGenerator, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from llmbudget import operations as ops
from llmbudget.money import format_money
from llmbudget.stores.base import AsyncStore, Store

__all__ = [
    "SPEND_LOG_KIND",
    "entry_money",
    "query_spend_logs",
    "render_spend_table",
    "scan_spend_logs",
    "spend_row",
    "total_spend",
]

SPEND_LOG_KIND = "gateway"
_MAX_LIMIT = 1000
_MAX_SCAN = 20_000
_TABLE_COLUMNS = (
    "at", "key", "user", "team", "end_user", "model", "deployment", "prompt_tokens",
    "completion_tokens", "cost", "latency_ms", "status", "stream",
)  # fmt: skip
_MONEY_FIELDS = ("cost", "reserved")


def spend_row(at: float, data: Mapping[str, Any], *, timespec: str = "auto") -> dict[str, Any]:
    """One log entry as shown by the API and the dashboard: ``at`` (ISO 8601) first, money
    as plain decimal strings.

    >>> spend_row(0.0, {"cost": "6E-8", "user": "a"})
    {'at': '1970-01-01T00:00:00+00:00', 'cost': '0.00000006', 'user': 'a'}
    """
    row = {"at": datetime.fromtimestamp(at, UTC).isoformat(timespec=timespec), **data}
    for name in _MONEY_FIELDS:
        amount = entry_money(row.get(name))
        if amount is not None:
            row[name] = format_money(amount)
    return row


def entry_money(value: object) -> Decimal | None:
    """A logged amount as a Decimal; ``None`` for anything that is not a finite number."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    try:
        amount = Decimal(value)
    except InvalidOperation:
        return None  # not a number: shown as stored
    return amount if amount.is_finite() else None


async def scan_spend_logs(
    store: Store | AsyncStore,
    *,
    since: float = 0.0,
    until: float = math.inf,
    match: Mapping[str, Any] | None = None,
    page: int = 200,
    max_scan: float = _MAX_SCAN,
) -> AsyncGenerator[tuple[float, dict[str, Any]], None]:
    """Every entry with ``since <= at < until`` whose fields equal ``match``'s, newest
    first, as ``(at, data)``; read in pages of ``page``, at most ``max_scan`` entries
    scanned (20,000 unless told).
    """
    wanted = {k: v for k, v in (match or {}).items() if v is not None and v != ""}
    seen: set[str] = set()
    scanned = 0
    upper = until
    while scanned < max_scan:
        entries = await ops.ReadLog(store, SPEND_LOG_KIND, since, upper, page).arun()
        if not entries:
            return
        scanned += len(entries)
        fresh = 0
        for entry in entries:
            data = entry.data
            ident = str(data.get("id", ""))
            if ident and ident in seen:
                continue
            seen.add(ident)
            fresh += 1
            if all(data.get(k) == v for k, v in wanted.items()):
                yield entry.at, data
        if len(entries) < page or fresh == 0:
            return  # the log is exhausted, or a whole page shares one instant
        # Next page: entries older than the oldest seen, plus any sharing its timestamp
        # (ids dedupe those), so equal timestamps at a page edge are not lost.
        upper = math.nextafter(entries[-1].at, math.inf)


async def query_spend_logs(
    store: Store | AsyncStore,
    *,
    since: float = 0.0,
    until: float = math.inf,
    limit: int = 100,
    key: str | None = None,
    user: str | None = None,
    model: str | None = None,
    team: str | None = None,
) -> list[dict[str, Any]]:
    """Entries with ``since <= at < until`` matching every filter given, newest first.

    Each row is the logged entry plus ``at`` (ISO 8601). With filters, the log is read in
    pages (at most 20,000 entries scanned) until ``limit`` rows match.
    """
    limit = max(1, min(int(limit), _MAX_LIMIT))
    wanted = {"key": key, "user": user, "model": model, "team": team}
    filtered = any(wanted.values())
    rows: list[dict[str, Any]] = []
    scan = scan_spend_logs(
        store,
        since=since,
        until=until,
        match=wanted,
        page=max(limit * 4, 200) if filtered else limit,
    )
    async for at, data in scan:
        rows.append(spend_row(at, data))
        if len(rows) >= limit:
            break
    await scan.aclose()
    return rows


async def total_spend(
    store: Store | AsyncStore, *, since: float = 0.0, until: float = math.inf
) -> Decimal:
    """The exact sum of ``cost`` over the log's entries with ``since <= at < until``
    (every entry is read: an admin report, not a request-path call)."""
    total = Decimal(0)
    scan = scan_spend_logs(store, since=since, until=until, page=_MAX_LIMIT, max_scan=math.inf)
    async for _, data in scan:
        total += entry_money(data.get("cost")) or 0
    return total


def render_spend_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """An HTML ``<table>`` of spend-log rows (every value escaped), for dashboards."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in _TABLE_COLUMNS)
    body = []
    for row in rows:
        cells = "".join(
            f"<td>{html.escape('' if row.get(c) is None else str(row.get(c)))}</td>"
            for c in _TABLE_COLUMNS
        )
        body.append(f"<tr>{cells}</tr>")
    return (
        '<table class="llmbudget-spend-log">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )
