"""The JSON API under ``/v1`` and the seed's ``/get_budget`` + ``/set_budget``.

=========================================================  =====================================
``GET  /v1/health``                                        liveness + store check (no auth)
``GET  /v1/projects``                                      projects and their user counts
``GET  /v1/projects/{project}/budgets``                    every user's budget and status
``POST /v1/projects/{project}/budgets``                    create (409 if the user has one)
``GET|PUT|PATCH|DELETE /v1/projects/{project}/budgets/{user}``  read, upsert, update, delete
``POST /v1/projects/{project}/reserve``                    hold before a call (429 if over)
``POST /v1/projects/{project}/settle``                     record the real cost (idempotent)
``POST /v1/projects/{project}/release``                    drop a hold (the call failed)
``POST /v1/projects/{project}/charge``                     record a cost that happened
``POST /v1/projects/{project}/reset``                      zero the user's current window
``GET  /v1/projects/{project}/spend``                      spent/remaining per user and model
``GET  /v1/projects/{project}/history/{user}``             spend per past window
``POST /get_budget``, ``POST /set_budget``                 the seed's (LiteLLM's) protocol
=========================================================  =====================================

Hold ids are per user: the store keeps ``api:<scope>:<hold_id>``, so two users may use
the same idempotency key, and a hold can only be settled through its own user.

Names in URLs must be valid UTF-8 once percent-decoded: anything else is a 400, never
rewritten to U+FFFD (which would let two different names share one budget). A budget
stored by an older version with a value that cannot be used (a period whose windows
cannot be computed) answers 409 ``corrupt_budget`` when read alone, is listed under
``unreadable`` by the project's budget list, and is replaced by a ``PUT``.

>>> import httpx  # doctest: +SKIP
>>> httpx.post(f"{base}/v1/projects/app/charge", json={"user": "ann", "amount": "0.01"},
...            headers={"Authorization": f"Bearer {key}"}).json()  # doctest: +SKIP
{'user': 'ann', 'charged': '0.01'}
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any
from urllib.parse import unquote, unquote_to_bytes

from fastapi import APIRouter, Depends, Query, Request, Response, Security
from fastapi.security import HTTPAuthorizationCredentials

import llmbudget
from llmbudget.budgets import Budget, BudgetStatus, scope_key
from llmbudget.errors import (
    BudgetExceededError,
    CorruptRecordError,
    InvalidInputError,
    StoreError,
    UnknownHoldError,
    UnknownUserError,
)
from llmbudget.money import MoneyLike, cost_to_units, format_money, from_units

from .auth import bearer_scheme
from .config import parse_thresholds
from .errors import ApiError
from .schemas import (
    BudgetCreate,
    BudgetList,
    BudgetOut,
    BudgetPatch,
    BudgetPut,
    ChargeIn,
    ChargeOut,
    Health,
    HistoryOut,
    HistoryPoint,
    ProjectList,
    ProjectOut,
    ProjectSpend,
    ReleaseIn,
    ReleaseOut,
    ReserveIn,
    ReserveOut,
    SeedGetIn,
    SeedSetIn,
    SettleIn,
    SettleOut,
    UserIn,
    UserSpend,
    check_name,
)
from .state import ServerState, get_state

__all__ = ["require_admin", "router", "seed_router", "user_budget"]


def require_admin(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
) -> None:
    """Dependency guarding every route but health: 401 without a key, 403 with a wrong one."""
    get_state(request).auth.require(request)


def strict_path(request: Request) -> None:
    """Refuse a URL whose path is not UTF-8 once percent-decoded (400). The ASGI server
    decodes it with replacement characters, so two different byte strings would name
    one user; the raw path says what the client really sent."""
    raw = request.scope.get("raw_path")
    if not isinstance(raw, bytes):
        return
    try:
        unquote_to_bytes(raw.decode("latin-1")).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInputError(
            "the URL path is not valid UTF-8 once percent-decoded: names must be UTF-8 text"
        ) from None


health_router = APIRouter(tags=["health"])
router = APIRouter(
    prefix="/v1", tags=["budgets"], dependencies=[Depends(require_admin), Depends(strict_path)]
)
seed_router = APIRouter(tags=["seed protocol"], dependencies=[Depends(require_admin)])

_BUDGET_404: dict[int | str, dict[str, Any]] = {404: {"description": "No budget for this user."}}


# -- helpers -----------------------------------------------------------------------------


def _prefix(project: str) -> str:
    return scope_key("user", project) + ":"


def _scope(project: str, user: str) -> str:
    return scope_key("user", project, user)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _existing(state: ServerState, project: str, user: str) -> Budget | None:
    """The user's budget, ``None`` if none; 409 for a stored budget that cannot be used."""
    try:
        return state.ledger.get([_scope(project, user)])[0]
    except CorruptRecordError as exc:
        raise ApiError(
            409,
            "corrupt_budget",
            f"the stored budget of user {user!r} in {project!r} cannot be used "
            f"({exc.reason}); replace it with PUT or remove it with DELETE",
        ) from None


def user_budget(state: ServerState, project: str, user: str) -> Budget:
    """The user's budget; :class:`UnknownUserError` (404) if none."""
    found = _existing(state, project, user)
    if found is None:
        raise UnknownUserError(user, project)
    return found


def _out(state: ServerState, user: str, budget: Budget, status: BudgetStatus) -> BudgetOut:
    return BudgetOut(
        user=user,
        scope=budget.scope,
        limit=None if budget.limit is None else format_money(budget.limit),
        period=budget.period.describe(),
        timezone=budget.period.timezone,
        rolling=budget.period.rolling,
        created_at=budget.created_at,
        spent=format_money(status.spent),
        held=format_money(status.held),
        remaining=None if status.remaining is None else format_money(status.remaining),
        window_start=status.window_start.isoformat(),
        resets_at=_iso(status.resets_at),
        by_model={m: format_money(v) for m, v in status.by_model.items()},
        alert_thresholds=list(state.alerts.thresholds_for(budget.scope)),
    )


def _hold_key(scope: str, hold_id: str) -> str:
    return f"api:{scope}:{hold_id}"


def _names(project: str, user: str | None = None) -> None:
    check_name(project, "project")
    if "/" in project:
        raise ApiError(400, "invalid_input", "project names used in /v1 URLs cannot contain '/'")
    if user is not None:
        check_name(user, "user")


def _users(state: ServerState, project: str) -> tuple[list[tuple[str, Budget]], list[str]]:
    """The project's users with their budgets, and the users whose stored budget cannot
    be used (so one bad record never takes the whole list down)."""
    prefix = _prefix(project)
    users: list[tuple[str, Budget]] = []
    unreadable: list[str] = []
    for record in state.store.list_budgets(prefix):
        user = unquote(record.scope[len(prefix) :])
        budget = Budget.readable(record)
        if budget is None:
            unreadable.append(user)
        else:
            users.append((user, budget))
    return users, unreadable


# -- health ------------------------------------------------------------------------------


@health_router.get("/v1/health", response_model=Health, responses={503: {"model": Health}})
def health(request: Request, response: Response) -> Health:
    """Liveness and store reachability. The only endpoint that needs no key."""
    state = get_state(request)
    try:
        state.store.get_budgets(["~health"])
        store = "ok"
    except StoreError as exc:
        response.status_code = 503
        store = f"unavailable: {exc}"
    pending = state.ledger.plans.journal.count()
    return Health(
        status="ok" if store == "ok" and not pending else "degraded",
        version=llmbudget.__version__,
        store=store,
        pending_settles=pending,
    )


# -- projects and budgets ----------------------------------------------------------------


@router.get("/projects", response_model=ProjectList)
def list_projects(request: Request) -> ProjectList:
    """Every project that has at least one user budget."""
    counts: dict[str, int] = {}
    for record in get_state(request).store.list_budgets("user:"):
        parts = record.scope.split(":")
        if len(parts) >= 3:
            name = unquote(parts[1])
            counts[name] = counts.get(name, 0) + 1
    return ProjectList(projects=[ProjectOut(name=n, users=c) for n, c in sorted(counts.items())])


@router.get("/projects/{project}/budgets", response_model=BudgetList)
def list_budgets(request: Request, project: str) -> BudgetList:
    """Every user budget of a project, with where it stands in its current window."""
    _names(project)
    state = get_state(request)
    users, unreadable = _users(state, project)
    out = [_out(state, user, b, state.ledger.status(b)) for user, b in users]
    return BudgetList(project=project, budgets=out, unreadable=unreadable)


def _define(
    state: ServerState,
    project: str,
    user: str,
    amount: MoneyLike,
    period: str | None,
    timezone: str | None,
    rolling: bool,
    created_at: float | None,
    thresholds: list[float] | None,
    existing: Budget | None,
) -> Budget:
    # Validate everything (thresholds included) before the first write.
    parsed = None if thresholds is None else parse_thresholds(thresholds)
    if created_at is None:
        created_at = existing.created_at if existing is not None else state.clock()
    budget = Budget.of(
        _scope(project, user),
        amount,
        period,
        timezone=timezone or state.config.default_timezone,
        rolling=rolling,
        created_at=created_at,
    )
    state.ledger.define(budget)
    if parsed is not None:
        state.alerts.set_thresholds(budget.scope, parsed)
    return budget


@router.post(
    "/projects/{project}/budgets",
    response_model=BudgetOut,
    status_code=201,
    responses={409: {"description": "The user already has a budget."}},
)
def create_budget(request: Request, project: str, body: BudgetCreate) -> BudgetOut:
    """Create a user's budget; 409 if one exists (use PUT to replace, PATCH to change)."""
    _names(project, body.user)
    state = get_state(request)
    existing = _existing(state, project, body.user)
    if existing is not None:
        raise ApiError(
            409, "budget_exists", f"user {body.user!r} already has a budget in {project!r}"
        )
    budget = _define(
        state, project, body.user, body.amount, body.period, body.timezone, body.rolling,
        body.created_at, body.alert_thresholds, None,
    )  # fmt: skip
    return _out(state, body.user, budget, state.ledger.status(budget))


@router.get(
    "/projects/{project}/budgets/{user:path}", response_model=BudgetOut, responses=_BUDGET_404
)
def read_budget(request: Request, project: str, user: str) -> BudgetOut:
    """One user's budget: limit, period, spent, held, remaining, per model, reset time."""
    _names(project, user)
    state = get_state(request)
    budget = user_budget(state, project, user)
    return _out(state, user, budget, state.ledger.status(budget))


@router.put("/projects/{project}/budgets/{user:path}", response_model=BudgetOut)
def put_budget(
    request: Request, response: Response, project: str, user: str, body: BudgetPut
) -> BudgetOut:
    """Create or replace a user's budget. Spend already recorded is kept."""
    _names(project, user)
    state = get_state(request)
    try:
        existing = state.ledger.get([_scope(project, user)])[0]
    except CorruptRecordError:
        existing = None  # a PUT is how such a budget is replaced
    # What the request leaves out of a replacement keeps the existing budget's value
    # (timezone, rolling, created_at), not the server's defaults.
    timezone = body.timezone
    rolling = body.rolling
    if existing is not None:
        if timezone is None:
            timezone = existing.period.timezone
        if "rolling" not in body.model_fields_set:
            rolling = existing.period.rolling
    budget = _define(
        state, project, user, body.amount, body.period, timezone, rolling,
        body.created_at, body.alert_thresholds, existing,
    )  # fmt: skip
    if existing is None:
        response.status_code = 201
    return _out(state, user, budget, state.ledger.status(budget))


@router.patch(
    "/projects/{project}/budgets/{user:path}", response_model=BudgetOut, responses=_BUDGET_404
)
def patch_budget(request: Request, project: str, user: str, body: BudgetPatch) -> BudgetOut:
    """Change some fields of an existing budget (amount, period, timezone, rolling, alerts)."""
    _names(project, user)
    state = get_state(request)
    old = user_budget(state, project, user)
    fields = body.model_fields_set
    amount: MoneyLike | None = body.amount if "amount" in fields else old.limit
    if amount is None:
        raise ApiError(400, "invalid_amount", "amount must not be null", param="amount")
    budget = _define(
        state,
        project,
        user,
        amount,
        body.period if "period" in fields else old.period.describe(),
        body.timezone if body.timezone is not None else old.period.timezone,
        body.rolling if body.rolling is not None else old.period.rolling,
        old.created_at,
        body.alert_thresholds,
        old,
    )
    return _out(state, user, budget, state.ledger.status(budget))


@router.delete("/projects/{project}/budgets/{user:path}", responses=_BUDGET_404)
def delete_budget(request: Request, project: str, user: str) -> dict[str, Any]:
    """Delete a user's budget definition (recorded spend stays, for the audit trail)."""
    _names(project, user)
    state = get_state(request)
    scope = _scope(project, user)
    if not state.ledger.delete(scope):
        raise UnknownUserError(user, project)
    state.alerts.set_thresholds(scope, None)
    return {"deleted": True, "user": user}


# -- holds and charges -------------------------------------------------------------------


@router.post(
    "/projects/{project}/reserve",
    response_model=ReserveOut,
    status_code=201,
    responses={
        429: {"description": "The budget would be exceeded (OpenAI-style error)."},
        **_BUDGET_404,
    },
)
def reserve(request: Request, project: str, body: ReserveIn) -> ReserveOut:
    """Hold ``amount`` on the user's budget before a call. All or nothing: concurrent
    reserves can never together pass the limit. Refusal: 429 with ``Retry-After``."""
    _names(project, body.user)
    state = get_state(request)
    budget = user_budget(state, project, body.user)
    client_id = body.hold_id or uuid.uuid4().hex
    try:
        hold = state.ledger.reserve(
            [budget], body.amount, ttl=body.ttl, hold_id=_hold_key(budget.scope, client_id)
        )
    except BudgetExceededError:
        state.metrics.record_refusal(budget.scope)
        raise
    state.metrics.hold_opened(hold.id, hold.scopes, hold.expires_at)
    resets = hold.resets_at[0] if hold.resets_at else None
    return ReserveOut(
        hold_id=client_id,
        user=body.user,
        amount=format_money(hold.amount),
        expires_at=datetime.fromtimestamp(hold.expires_at, UTC).isoformat(),
        resets_at=None
        if resets is None
        else datetime.fromtimestamp(resets, budget.period.zone).isoformat(),
    )


@router.post("/projects/{project}/settle", response_model=SettleOut, responses=_BUDGET_404)
def settle(request: Request, project: str, body: SettleIn) -> SettleOut:
    """Record the real cost of a held call and end the hold. Idempotent: settling again
    records nothing and returns what the first settle recorded."""
    _names(project, body.user)
    state = get_state(request)
    scope = _scope(project, body.user)
    key = _hold_key(scope, body.hold_id)
    units = cost_to_units(body.actual, what="actual cost")
    try:
        # The store directly (as the ledger would), to learn whether this was a replay.
        result = state.store.settle(key, units, body.model, state.clock())
    except UnknownHoldError:
        raise UnknownHoldError(body.hold_id) from None
    state.metrics.hold_closed(key)
    recorded = from_units(result.actual)
    if not result.already:
        state.metrics.record_spend(scope, float(recorded))
        state.alerts.notify([scope])
    return SettleOut(hold_id=body.hold_id, user=body.user, recorded=format_money(recorded))


@router.post("/projects/{project}/release", response_model=ReleaseOut, responses=_BUDGET_404)
def release(request: Request, project: str, body: ReleaseIn) -> ReleaseOut:
    """End a hold without spend (the call failed); ``released`` is false if it had ended."""
    _names(project, body.user)
    state = get_state(request)
    key = _hold_key(_scope(project, body.user), body.hold_id)
    try:
        released = state.ledger.release(key)
    except UnknownHoldError:
        raise UnknownHoldError(body.hold_id) from None
    state.metrics.hold_closed(key)
    return ReleaseOut(hold_id=body.hold_id, user=body.user, released=released)


@router.post("/projects/{project}/charge", response_model=ChargeOut, responses=_BUDGET_404)
def charge(request: Request, project: str, body: ChargeIn) -> ChargeOut:
    """Record a cost that already happened (recorded even past the limit: it was spent).
    Idempotent by ``charge_id``: a retry under the same id records nothing."""
    _names(project, body.user)
    state = get_state(request)
    budget = user_budget(state, project, body.user)
    client_id = body.charge_id or uuid.uuid4().hex
    units = cost_to_units(body.amount, what="charge amount")
    now = state.clock()
    # The store directly (as the ledger would), to learn whether this repeated a charge.
    recorded = state.store.charge(
        [budget.line(budget.window_at(now))],
        units,
        body.model,
        now,
        _hold_key(budget.scope, client_id),
    )
    charged = from_units(units)
    if recorded:
        state.metrics.record_spend(budget.scope, float(charged))
        state.alerts.notify([budget.scope])
    return ChargeOut(
        user=body.user, charged=format_money(charged), charge_id=client_id, recorded=recorded
    )


@router.post("/projects/{project}/reset", response_model=BudgetOut, responses=_BUDGET_404)
def reset(request: Request, project: str, body: UserIn) -> BudgetOut:
    """Zero the user's spend in the current window only (holds in flight stay)."""
    _names(project, body.user)
    state = get_state(request)
    budget = user_budget(state, project, body.user)
    state.ledger.reset(budget)
    return _out(state, body.user, budget, state.ledger.status(budget))


# -- reporting ---------------------------------------------------------------------------


@router.get("/projects/{project}/spend", response_model=ProjectSpend)
def project_spend(request: Request, project: str) -> ProjectSpend:
    """Spent, held and remaining per user, and spend per model, in current windows."""
    _names(project)
    state = get_state(request)
    users: list[UserSpend] = []
    by_model: dict[str, Decimal] = {}
    spent = held = Decimal(0)
    for user, budget in _users(state, project)[0]:
        status = state.ledger.status(budget)
        spent += status.spent
        held += status.held
        for model, cost in status.by_model.items():
            by_model[model] = by_model.get(model, Decimal(0)) + cost
        users.append(
            UserSpend(
                user=user,
                limit=None if budget.limit is None else format_money(budget.limit),
                spent=format_money(status.spent),
                held=format_money(status.held),
                remaining=None if status.remaining is None else format_money(status.remaining),
                resets_at=_iso(status.resets_at),
                by_model={m: format_money(v) for m, v in status.by_model.items()},
            )
        )
    return ProjectSpend(
        project=project,
        spent=format_money(spent),
        held=format_money(held),
        by_model={m: format_money(v) for m, v in sorted(by_model.items())},
        users=users,
    )


@router.get(
    "/projects/{project}/history/{user:path}", response_model=HistoryOut, responses=_BUDGET_404
)
def history(
    request: Request, project: str, user: str, limit: int = Query(30, ge=1, le=1000)
) -> HistoryOut:
    """The user's spend per window, newest first (windows with no spend are absent)."""
    _names(project, user)
    state = get_state(request)
    budget = user_budget(state, project, user)
    rows = state.ledger.history(budget, limit)
    return HistoryOut(
        user=user,
        period=budget.period.describe(),
        history=[HistoryPoint(window_start=w.isoformat(), spent=format_money(s)) for w, s in rows],
    )


# -- the seed's protocol -------------------------------------------------------------------


@seed_router.post("/get_budget")
def seed_get_budget(request: Request, body: SeedGetIn) -> dict[str, Any]:
    """LiteLLM's ``load_data``: every user of the project in the seed's record shape."""
    return get_state(request).seed.get_budget(body.project_name)


@seed_router.post("/set_budget")
def seed_set_budget(request: Request, body: SeedSetIn) -> dict[str, Any]:
    """LiteLLM's ``save_data``: a whole-dict write, applied as upserts and increments
    (never as an overwrite of spend; see :mod:`llmbudget.server.seed_protocol`)."""
    state = get_state(request)
    result = state.seed.set_budget(body.project_name, body.user_dict)
    if result.charged:
        state.metrics.spend.labels(body.project_name).inc(float(result.charged))
    state.alerts.notify(result.touched)
    return {"status": "success"}
