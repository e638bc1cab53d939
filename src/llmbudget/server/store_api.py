"""``/v1/store/*``: each :class:`~llmbudget.stores.base.Store` method as one endpoint.

This is what :class:`~llmbudget.stores.http.HttpStore` speaks, so a
``BudgetManager(client_type="hosted")`` runs its usual :class:`~llmbudget.ledger.Ledger`
on the client while every operation is one atomic call into the server's store: two app
servers behind a load balancer can never lose each other's updates. Money is integer
nano-dollars (or a count, for a budget in requests, tokens or slots), windows are
integer keys. All endpoints are ``POST`` with a JSON body.

Times come from the **server's** clock, never the client's: ``reserve``, ``settle``,
``release``, ``charge``, ``usage`` and ``purge`` accept a ``now`` (for compatibility) but
ignore it, so a client whose clock runs ahead cannot expire (and purge) other clients'
live holds, nor one running behind make its own holds outlive their lifetime. A
reserve's ``expires_at`` is re-based on the server's clock: the hold lives
``expires_at - now`` seconds as the client meant, clamped to ``[0, MAX_HOLD_TTL]`` (one
day). Window keys are still the client's (its ledger computes them from its budgets).
``trust_client_clock = true`` in the config restores the client's times as sent (only
for a single client whose clock is the server's, or for tests that drive time).

==============================  ==========================================================
``/v1/store/reserve``           ``{hold_id, lines, amount, expires_at, now}`` → ``{refusal}``
                                (a line may carry its own ``amount``)
``/v1/store/settle``            ``{hold_id, actual, model, now, actuals, log}`` →
                                ``{actual, already}`` (``actuals``: scope → amount)
``/v1/store/release``           ``{hold_id, now}`` → ``{released}``
``/v1/store/charge``            ``{lines, amount, model, now, charge_id}`` → ``{recorded}``
``/v1/store/usage``             ``{scope, window, now}`` → ``{spent, held, by_model}``
``/v1/store/reset``             ``{scope, window}`` → ``{ok}``
``/v1/store/history``           ``{scope, limit}`` → ``{rows: [[window, spent], …]}``
``/v1/store/purge``             ``{now, retention}`` → ``{removed}``
``/v1/store/put_budget``        ``{record}`` → ``{ok}``
``/v1/store/get_budgets``       ``{scopes}`` → ``{records: [record | null, …]}``
``/v1/store/list_budgets``      ``{prefix}`` → ``{records}``
``/v1/store/delete_budget``     ``{scope}`` → ``{deleted}``
``/v1/store/put_doc``           ``{kind, key, data}`` → ``{ok}``
``/v1/store/create_doc``        ``{kind, key, data}`` → ``{created}`` (insert if absent)
``/v1/store/get_doc``           ``{kind, key}`` → ``{data | null}``
``/v1/store/list_docs``         ``{kind, prefix}`` → ``{docs: [[key, data], …]}``
``/v1/store/delete_doc``        ``{kind, key}`` → ``{deleted}``
``/v1/store/append_log``        ``{kind, at, data}`` → ``{ok}``
``/v1/store/read_log``          ``{kind, since, until | null, limit}`` → ``{entries}``
==============================  ==========================================================

An unknown hold is a 404 with ``code: unknown_hold``; a bad argument a 400/422.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from llmbudget.periods import Period
from llmbudget.stores.base import BudgetRecord, Line, validate_lines

from .api import require_admin
from .schemas import (
    Empty,
    LineIO,
    LogEntryOut,
    RecordIO,
    RecordOut,
    RefusalOut,
    StoreAppendLogIn,
    StoreChargeIn,
    StoreChargeOut,
    StoreCreatedOut,
    StoreDeleteBudgetIn,
    StoreDeletedOut,
    StoreDocIn,
    StoreDocKeyIn,
    StoreDocOut,
    StoreDocsOut,
    StoreGetBudgetsIn,
    StoreHistoryIn,
    StoreHistoryOut,
    StoreListBudgetsIn,
    StoreListDocsIn,
    StoreLogOut,
    StorePurgeIn,
    StorePurgeOut,
    StorePutBudgetIn,
    StoreReadLogIn,
    StoreRecordsOut,
    StoreReleaseIn,
    StoreReleaseOut,
    StoreReserveIn,
    StoreReserveOut,
    StoreResetIn,
    StoreSettleIn,
    StoreSettleOut,
    StoreUsageIn,
    StoreUsageOut,
)
from .state import ServerState, get_state

__all__ = ["MAX_HOLD_TTL", "record_in", "record_out", "store_router"]

store_router = APIRouter(prefix="/v1/store", tags=["store"], dependencies=[Depends(require_admin)])

MAX_HOLD_TTL = 86_400.0
"""The longest a hold reserved through ``/v1/store/reserve`` can live (seconds)."""

_HOLD_404: dict[int | str, dict[str, Any]] = {
    404: {"description": "Unknown hold (code: unknown_hold)."}
}


def _lines(lines: list[LineIO]) -> list[Line]:
    return [Line(line.scope, line.window, line.limit, line.amount) for line in lines]


def _now(state: ServerState, client_now: float) -> float:
    """The time a store operation runs at: the server's clock, not the client's."""
    return float(client_now) if state.config.trust_client_clock else state.clock()


def _expires_at(
    state: ServerState, client_expires_at: float, client_now: float, server_now: float
) -> float:
    """The client's hold lifetime (``expires_at - now`` by its own clock), clamped to
    ``[0, MAX_HOLD_TTL]``, from the server's ``now``: clock skew cancels out."""
    if state.config.trust_client_clock:
        return float(client_expires_at)
    ttl = min(max(float(client_expires_at) - float(client_now), 0.0), MAX_HOLD_TTL)
    return server_now + ttl


def record_out(record: BudgetRecord) -> RecordOut:
    return RecordOut(
        scope=record.scope,
        limit=record.limit,
        duration=record.duration,
        timezone=record.timezone,
        rolling=record.rolling,
        created_at=record.created_at,
        updated_at=record.updated_at,
        unit=record.unit,
    )


def record_in(record: RecordIO) -> BudgetRecord:
    return BudgetRecord(
        scope=record.scope,
        limit=record.limit,
        duration=record.duration,
        timezone=record.timezone,
        rolling=record.rolling,
        created_at=float(record.created_at),
        updated_at=float(record.updated_at),
        unit=record.unit,
    )


@store_router.post("/reserve", response_model=StoreReserveOut)
def store_reserve(request: Request, body: StoreReserveIn) -> StoreReserveOut:
    state = get_state(request)
    lines = _lines(body.lines)
    validate_lines(lines, body.amount)
    now = _now(state, body.now)
    expires_at = _expires_at(state, body.expires_at, body.now, now)
    refusal = state.store.reserve(body.hold_id, lines, body.amount, expires_at, now)
    if refusal is not None:
        state.metrics.record_refusal(lines[refusal.index].scope)
        return StoreReserveOut(
            refusal=RefusalOut(index=refusal.index, spent=refusal.spent, held=refusal.held)
        )
    state.metrics.hold_opened(body.hold_id, [line.scope for line in lines], expires_at)
    return StoreReserveOut(refusal=None)


@store_router.post("/settle", response_model=StoreSettleOut, responses=_HOLD_404)
def store_settle(request: Request, body: StoreSettleIn) -> StoreSettleOut:
    state = get_state(request)
    now = _now(state, body.now)
    log = None if body.log is None else (body.log.kind, body.log.at, body.log.data)
    result = state.store.settle(body.hold_id, body.actual, body.model, now, body.actuals, log)
    scopes = state.metrics.hold_closed(body.hold_id)
    # Dollars go on a scope that records ``actual``, not on a count's (requests, tokens).
    money = [scope for scope in scopes if scope not in (body.actuals or {})]
    if not result.already and money:
        state.metrics.record_spend(money[0], result.actual / 1e9)
    if not result.already and scopes:
        state.alerts.notify(scopes)
    return StoreSettleOut(actual=result.actual, already=result.already)


@store_router.post("/release", response_model=StoreReleaseOut, responses=_HOLD_404)
def store_release(request: Request, body: StoreReleaseIn) -> StoreReleaseOut:
    state = get_state(request)
    released = state.store.release(body.hold_id, _now(state, body.now))
    state.metrics.hold_closed(body.hold_id)
    return StoreReleaseOut(released=released)


@store_router.post("/charge", response_model=StoreChargeOut)
def store_charge(request: Request, body: StoreChargeIn) -> StoreChargeOut:
    state = get_state(request)
    lines = _lines(body.lines)
    validate_lines(lines, body.amount)
    recorded = state.store.charge(
        lines, body.amount, body.model, _now(state, body.now), body.charge_id
    )
    if recorded:
        state.metrics.record_spend(lines[0].scope, body.amount / 1e9)
        state.alerts.notify(line.scope for line in lines)
    return StoreChargeOut(recorded=recorded)


@store_router.post("/usage", response_model=StoreUsageOut)
def store_usage(request: Request, body: StoreUsageIn) -> StoreUsageOut:
    state = get_state(request)
    usage = state.store.usage(body.scope, body.window, _now(state, body.now))
    return StoreUsageOut(spent=usage.spent, held=usage.held, by_model=dict(usage.by_model))


@store_router.post("/reset", response_model=Empty)
def store_reset(request: Request, body: StoreResetIn) -> Empty:
    get_state(request).store.reset(body.scope, body.window)
    return Empty()


@store_router.post("/history", response_model=StoreHistoryOut)
def store_history(request: Request, body: StoreHistoryIn) -> StoreHistoryOut:
    rows = get_state(request).store.history(body.scope, body.limit)
    return StoreHistoryOut(rows=[(w, s) for w, s in rows])


@store_router.post("/purge", response_model=StorePurgeOut)
def store_purge(request: Request, body: StorePurgeIn) -> StorePurgeOut:
    state = get_state(request)
    return StorePurgeOut(removed=state.store.purge(_now(state, body.now), body.retention))


@store_router.post("/put_budget", response_model=Empty)
def store_put_budget(request: Request, body: StorePutBudgetIn) -> Empty:
    # A record the ledger could not read back would break every later listing: refuse it
    # (400) before it is stored.
    Period.parse(body.record.duration, timezone=body.record.timezone)
    get_state(request).store.put_budget(record_in(body.record))
    return Empty()


@store_router.post("/get_budgets", response_model=StoreRecordsOut)
def store_get_budgets(request: Request, body: StoreGetBudgetsIn) -> StoreRecordsOut:
    records = get_state(request).store.get_budgets(body.scopes)
    return StoreRecordsOut(records=[None if r is None else record_out(r) for r in records])


@store_router.post("/list_budgets", response_model=StoreRecordsOut)
def store_list_budgets(request: Request, body: StoreListBudgetsIn) -> StoreRecordsOut:
    records = get_state(request).store.list_budgets(body.prefix)
    return StoreRecordsOut(records=[record_out(r) for r in records])


@store_router.post("/delete_budget", response_model=StoreDeletedOut)
def store_delete_budget(request: Request, body: StoreDeleteBudgetIn) -> StoreDeletedOut:
    return StoreDeletedOut(deleted=get_state(request).store.delete_budget(body.scope))


@store_router.post("/put_doc", response_model=Empty)
def store_put_doc(request: Request, body: StoreDocIn) -> Empty:
    get_state(request).store.put_doc(body.kind, body.key, body.data)
    return Empty()


@store_router.post("/create_doc", response_model=StoreCreatedOut)
def store_create_doc(request: Request, body: StoreDocIn) -> StoreCreatedOut:
    return StoreCreatedOut(
        created=get_state(request).store.create_doc(body.kind, body.key, body.data)
    )


@store_router.post("/get_doc", response_model=StoreDocOut)
def store_get_doc(request: Request, body: StoreDocKeyIn) -> StoreDocOut:
    return StoreDocOut(data=get_state(request).store.get_doc(body.kind, body.key))


@store_router.post("/list_docs", response_model=StoreDocsOut)
def store_list_docs(request: Request, body: StoreListDocsIn) -> StoreDocsOut:
    return StoreDocsOut(docs=get_state(request).store.list_docs(body.kind, body.prefix))


@store_router.post("/delete_doc", response_model=StoreDeletedOut)
def store_delete_doc(request: Request, body: StoreDocKeyIn) -> StoreDeletedOut:
    return StoreDeletedOut(deleted=get_state(request).store.delete_doc(body.kind, body.key))


@store_router.post("/append_log", response_model=Empty)
def store_append_log(request: Request, body: StoreAppendLogIn) -> Empty:
    get_state(request).store.append_log(body.kind, body.at, body.data)
    return Empty()


@store_router.post("/read_log", response_model=StoreLogOut)
def store_read_log(request: Request, body: StoreReadLogIn) -> StoreLogOut:
    until = float("inf") if body.until is None else float(body.until)
    entries = get_state(request).store.read_log(body.kind, float(body.since), until, body.limit)
    return StoreLogOut(entries=[LogEntryOut(at=e.at, data=dict(e.data)) for e in entries])
