"""The gateway's request log on the dashboard (``/ui/spend``) and its CSV (``/ui/spend.csv``).

Filters (key, user, team, org, model, status, time range) and pages of 50, newest first;
readable columns (times in the server's timezone, never wrapped; money as ``$``
decimals; yes/no for booleans; names linking to their pages). The CSV has the same
filters and every entry they match (up to the log scan's bound of 20,000 entries), money
as plain decimals (``0.00000006``, never ``6E-8``), times in ISO 8601.

>>> csv_cell("=HYPERLINK(1)"), csv_cell("alice"), csv_cell(0.5)
("'=HYPERLINK(1)", 'alice', '0.5')
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from llmbudget.gateway.spendlog import entry_money, scan_spend_logs, spend_row
from llmbudget.money import format_dollars

from .dashboard_entities import parse_query, range_form
from .dashboard_page import esc, fmt_time, guard, link, page, server_zone, table
from .state import get_state

__all__ = ["CSV_COLUMNS", "PAGE_SIZE", "csv_cell", "requests_router"]

requests_router = APIRouter(prefix="/ui", include_in_schema=False)

PAGE_SIZE = 50
#: The CSV's columns, in order: every field the gateway logs.
CSV_COLUMNS = (
    "time", "id", "key", "user", "team", "org", "end_user", "model", "deployment",
    "upstream_model", "endpoint", "prompt_tokens", "completion_tokens", "cost", "reserved",
    "latency_ms", "status", "http_status", "stream", "usage_source",
)  # fmt: skip
_COLUMNS = (
    "Time", "Key", "User", "Team", "End user", "Model", "Deployment", "Tokens in",
    "Tokens out", "Cost", "Latency", "Status", "Streamed",
)  # fmt: skip
_LINKED = {"key": "keys", "user": "users", "team": "teams"}
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> str:
    """A CSV value; text a spreadsheet would run as a formula gets a leading ``'``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if isinstance(value, str) and text.startswith(_FORMULA_START):
        return "'" + text
    return text


def _cell(name: str, data: Mapping[str, Any]) -> str:
    value = data.get(name)
    if value is None or value == "":
        return "<td></td>"
    section = _LINKED.get(name)
    if section is not None:
        return f'<td><a href="{esc(link("/ui/" + section, str(value)))}">{esc(value)}</a></td>'
    return f"<td>{esc(value)}</td>"


def _row(at: float, data: Mapping[str, Any], request: Request) -> str:
    cost = entry_money(data.get("cost"))
    latency = data.get("latency_ms")
    stream = data.get("stream")
    status = str(data.get("status") or "")
    tokens = [data.get(k) for k in ("prompt_tokens", "completion_tokens")]
    return (
        f'<tr class="request-row"><td class="when">{esc(fmt_time(at, server_zone(request)))}</td>'
        + "".join(
            _cell(n, data) for n in ("key", "user", "team", "end_user", "model", "deployment")
        )
        + "".join(f'<td class="num">{esc("" if t is None else t)}</td>' for t in tokens)
        + f'<td class="num">{esc(format_dollars(cost) if cost is not None else "")}</td>'
        + f'<td class="num">{esc(f"{latency:,.0f} ms" if isinstance(latency, int | float) else "")}</td>'
        + f'<td><span class="badge {esc(status)}">{esc(status.replace("_", " "))}</span></td>'
        + f"<td>{'' if stream is None else ('yes' if stream else 'no')}</td></tr>"
    )


@requests_router.get("/spend")
async def request_log(request: Request) -> Response:
    """The latest requests matching the filters, a page at a time."""
    refused = guard(request)
    if refused is not None:
        return refused
    query, error = parse_query(request, default="all")
    try:
        number = max(1, int(request.query_params.get("page", "1")))
    except ValueError:
        number = 1
    skip = (number - 1) * PAGE_SIZE
    shown: list[str] = []
    more = False
    seen = 0
    scan = scan_spend_logs(get_state(request).store, since=query.since, until=query.until,
                           match=query.match)  # fmt: skip
    async for at, data in scan:
        seen += 1
        if seen <= skip:
            continue
        if len(shown) == PAGE_SIZE:
            more = True
            break
        shown.append(_row(at, data, request))
    await scan.aclose()
    pager = []
    if number > 1:
        pager.append(f'<a href="/ui/spend?{esc(query.params(page=str(number - 1)))}">← newer</a>')
    pager.append(f"<span>page {number}</span>")
    if more:
        pager.append(f'<a href="/ui/spend?{esc(query.params(page=str(number + 1)))}">older →</a>')
    body = (
        '<div class="title"><h1>Gateway requests</h1>'
        f'<a class="button" href="/ui/spend.csv?{esc(query.params())}">Export CSV</a></div>'
        + range_form(request, query, error, filters=True)
        + (
            table(_COLUMNS, shown, css="data requests")
            if shown
            else '<p class="empty">No gateway requests match.</p>'
            if query.match or query.bounded
            else '<p class="empty">No gateway requests yet.</p>'
        )
        + f'<p class="pager">{" ".join(pager)}</p>'
    )
    return page(request, "Gateway requests", body)


@requests_router.get("/spend.csv")
async def request_log_csv(request: Request) -> Response:
    """Every request matching the filters, as CSV (newest first)."""
    refused = guard(request)
    if refused is not None:
        return refused
    query, error = parse_query(request, default="all")
    if error is not None:
        return page(
            request, "Refused", f'<h1>Refused</h1><p class="error">{esc(error)}</p>', status=400
        )
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    async for at, data in scan_spend_logs(
        get_state(request).store, since=query.since, until=query.until, match=query.match
    ):
        row = spend_row(at, data)
        row["time"] = datetime.fromtimestamp(at, UTC).isoformat()
        writer.writerow([csv_cell(row.get(c)) for c in CSV_COLUMNS])
    stamp = datetime.fromtimestamp(get_state(request).clock(), UTC).strftime("%Y%m%d-%H%M%S")
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="llmbudget-spend-{stamp}.csv"',
            "Cache-Control": "no-store",
        },
    )
