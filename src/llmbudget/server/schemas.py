"""Request and response bodies (pydantic), shared by the JSON API and the store API.

Money goes out as strings (``"0.25"``) so no float creeps in, and comes in as a string or
a number (a float goes through its ``repr``: ``0.1`` is ``Decimal("0.1")``). Store-level
bodies carry integer nano-dollars and integer window keys, bounded to 64 bits so nothing
a client sends can overflow a store column.

Types are strict: ``"yes"`` is not ``true``, ``"5"`` is not ``5``. Names, ids, times and
JSON documents are refused by the same checks every store applies
(:mod:`llmbudget.validation`), so a body the server accepts is one its store keeps.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    StringConstraints,
)

from llmbudget.errors import InvalidInputError
from llmbudget.units import Unit
from llmbudget.validation import (
    INT64_MAX,
    INT64_MIN,
    MAX_TIMESTAMP,
    MAX_TTL,
    MIN_TIMESTAMP,
    MIN_TTL,
    check_id,
    check_json_object,
    text_problem,
)
from llmbudget.validation import check_name as check_store_name

__all__ = [
    "Epoch",
    "HoldId",
    "Int64",
    "Model",
    "MoneyIn",
    "Name",
    "Scope",
    "Units",
    "clean_text",
]

_INT64_MIN = INT64_MIN
_INT64_MAX = INT64_MAX


def clean_text(value: str) -> str:
    """Refuse text no store can keep: NUL (PostgreSQL refuses it) and lone surrogates
    (not encodable as UTF-8). Raises ``ValueError`` so pydantic reports a 422."""
    problem = text_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def _store_name(value: str) -> str:
    return check_store_name(value, "name")


def _store_prefix(value: str) -> str:
    return check_store_name(value, "prefix", allow_empty=True)


def _store_id(value: str) -> str:
    return check_id(value, "id")


def check_name(value: str, what: str) -> str:
    """:func:`clean_text` for path parameters, raising the library's error (a 400)."""
    if not value or len(value) > 256:
        raise InvalidInputError(f"{what} must be 1 to 256 characters")
    problem = text_problem(value)
    if problem is not None:
        raise InvalidInputError(f"{what} {problem}")
    return value


Name = Annotated[
    StrictStr, StringConstraints(min_length=1, max_length=256), AfterValidator(clean_text)
]
Model = Annotated[
    StrictStr, StringConstraints(min_length=1, max_length=256), AfterValidator(_store_name)
]
# Store-level names: exactly the limits every store keeps (the HTTP store is one).
StoreModel = Annotated[StrictStr, AfterValidator(_store_name)]
Scope = Annotated[StrictStr, AfterValidator(_store_name)]
Prefix = Annotated[StrictStr, AfterValidator(_store_prefix)]
HoldId = Annotated[StrictStr, AfterValidator(_store_id)]
ClientHoldId = Annotated[StrictStr, StringConstraints(pattern=r"^[A-Za-z0-9._:\-]{1,128}$")]
MoneyIn = Annotated[
    Annotated[StrictStr, StringConstraints(max_length=64)] | StrictInt | StrictFloat,
    Field(description="Dollars, as a string ('0.25') or a number (0.25).", examples=["0.25"]),
]
Units = Annotated[StrictInt, Field(ge=0, le=_INT64_MAX, description="Nano-dollars.")]
Int64 = Annotated[StrictInt, Field(ge=_INT64_MIN, le=_INT64_MAX)]
Epoch = Annotated[
    StrictInt | StrictFloat,
    Field(
        ge=MIN_TIMESTAMP,
        le=MAX_TIMESTAMP,
        allow_inf_nan=False,
        description="Epoch seconds (1900 to 3000).",
    ),
]
# A bound of a time range to read: any finite time (an entry cannot be past it anyway).
TimeBound = Annotated[StrictInt | StrictFloat, Field(allow_inf_nan=False)]
Seconds = Annotated[StrictInt | StrictFloat, Field(ge=MIN_TTL, le=MAX_TTL, allow_inf_nan=False)]
Threshold = Annotated[StrictInt | StrictFloat, Field(gt=0, le=10, allow_inf_nan=False)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- the JSON API ----------------------------------------------------------------------


class BudgetCreate(_Body):
    user: Name
    amount: MoneyIn
    period: Annotated[StrictStr, StringConstraints(max_length=32)] | None = Field(
        None, description="daily, weekly, monthly, yearly, hourly, '30d', '1mo'… or null."
    )
    timezone: Annotated[StrictStr, StringConstraints(max_length=64)] | None = None
    rolling: StrictBool = False
    created_at: Epoch | None = None
    alert_thresholds: Annotated[list[Threshold], Field(max_length=20)] | None = None


class BudgetPut(_Body):
    amount: MoneyIn
    period: Annotated[StrictStr, StringConstraints(max_length=32)] | None = None
    timezone: Annotated[StrictStr, StringConstraints(max_length=64)] | None = None
    rolling: StrictBool = False
    created_at: Epoch | None = None
    alert_thresholds: Annotated[list[Threshold], Field(max_length=20)] | None = None


class BudgetPatch(_Body):
    amount: MoneyIn | None = None
    period: Annotated[StrictStr, StringConstraints(max_length=32)] | None = None
    timezone: Annotated[StrictStr, StringConstraints(max_length=64)] | None = None
    rolling: StrictBool | None = None
    alert_thresholds: Annotated[list[Threshold], Field(max_length=20)] | None = None


class BudgetOut(BaseModel):
    user: str
    scope: str
    limit: str | None
    period: str | None
    timezone: str
    rolling: bool
    created_at: float
    spent: str
    held: str
    remaining: str | None
    window_start: str
    resets_at: str | None
    by_model: dict[str, str]
    alert_thresholds: list[float]


class BudgetList(BaseModel):
    project: str
    budgets: list[BudgetOut]
    unreadable: list[str] = Field(
        default_factory=list,
        description="Users whose stored budget cannot be used (replace it with PUT).",
    )


class ProjectOut(BaseModel):
    name: str
    users: int


class ProjectList(BaseModel):
    projects: list[ProjectOut]


class ReserveIn(_Body):
    user: Name
    amount: MoneyIn
    ttl: Seconds | None = None
    hold_id: ClientHoldId | None = Field(
        None, description="Idempotency key: reserving the same id again changes nothing."
    )


class ReserveOut(BaseModel):
    hold_id: str
    user: str
    amount: str
    expires_at: str
    resets_at: str | None


class SettleIn(_Body):
    user: Name
    hold_id: ClientHoldId
    actual: MoneyIn
    model: Model | None = None


class SettleOut(BaseModel):
    hold_id: str
    user: str
    recorded: str


class ReleaseIn(_Body):
    user: Name
    hold_id: ClientHoldId


class ReleaseOut(BaseModel):
    hold_id: str
    user: str
    released: bool


class ChargeIn(_Body):
    user: Name
    amount: MoneyIn
    model: Model | None = None
    charge_id: ClientHoldId | None = Field(
        None,
        description="Idempotency key: charging again under the same id (same amount) records "
        "nothing, so a retry after a lost answer is safe.",
    )


class ChargeOut(BaseModel):
    user: str
    charged: str
    charge_id: str
    recorded: bool = Field(description="False when this repeated an earlier charge_id.")


class UserIn(_Body):
    user: Name


class UserSpend(BaseModel):
    user: str
    limit: str | None
    spent: str
    held: str
    remaining: str | None
    resets_at: str | None
    by_model: dict[str, str]


class ProjectSpend(BaseModel):
    project: str
    spent: str
    held: str
    by_model: dict[str, str]
    users: list[UserSpend]


class HistoryPoint(BaseModel):
    window_start: str
    spent: str


class HistoryOut(BaseModel):
    user: str
    period: str | None
    history: list[HistoryPoint]


class Health(BaseModel):
    status: str
    version: str
    store: str
    pending_settles: int = Field(
        0,
        description="Settles and charges kept in the journal because the store could not "
        "take them; replayed until they land.",
    )


class SeedGetIn(BaseModel):
    # Extra keys are ignored, as the seed's server did: this is another project's client.
    project_name: Name


class SeedSetIn(BaseModel):
    project_name: Name
    user_dict: dict[str, Any]


# -- the store API (one endpoint per Store method, integer units) --------------------


class LineIO(_Body):
    scope: Scope
    window: Int64
    limit: Units | None = None
    amount: Units | None = Field(
        None, description="What this line reserves (default: the operation's amount)."
    )


class RefusalOut(BaseModel):
    index: int
    spent: int
    held: int


class StoreReserveIn(_Body):
    hold_id: HoldId
    lines: Annotated[list[LineIO], Field(min_length=1, max_length=64)]
    amount: Units
    expires_at: Epoch
    now: Epoch


class StoreReserveOut(BaseModel):
    refusal: RefusalOut | None


class StoreAppendLogIn(_Body):
    kind: Kind
    at: Epoch
    data: JsonObject


class StoreSettleIn(_Body):
    hold_id: HoldId
    actual: Units
    model: StoreModel | None = None
    now: Epoch
    actuals: Annotated[dict[Scope, Units], Field(max_length=64)] | None = Field(
        None, description="Per scope, what its lines record instead of actual."
    )
    log: StoreAppendLogIn | None = Field(
        None,
        description="A log entry appended in the same atomic operation, only by the call "
        "that settles the hold.",
    )


class StoreSettleOut(BaseModel):
    actual: int
    already: bool


class StoreReleaseIn(_Body):
    hold_id: HoldId
    now: Epoch


class StoreReleaseOut(BaseModel):
    released: bool


class StoreChargeIn(_Body):
    lines: Annotated[list[LineIO], Field(min_length=1, max_length=64)]
    amount: Units
    model: StoreModel | None = None
    now: Epoch
    charge_id: HoldId | None = Field(
        None, description="Idempotency key: charging again under it records nothing."
    )


class StoreChargeOut(BaseModel):
    ok: bool = True
    recorded: bool


class StoreUsageIn(_Body):
    scope: Scope
    window: Int64
    now: Epoch


class StoreUsageOut(BaseModel):
    spent: int
    held: int
    by_model: dict[str, int]


class StoreResetIn(_Body):
    scope: Scope
    window: Int64


class StoreHistoryIn(_Body):
    scope: Scope
    limit: Annotated[StrictInt, Field(ge=1, le=10_000)] = 100


class StoreHistoryOut(BaseModel):
    rows: list[tuple[int, int]]


class StorePurgeIn(_Body):
    now: Epoch
    retention: Annotated[StrictInt | StrictFloat, Field(ge=0, le=1e9, allow_inf_nan=False)]


class StorePurgeOut(BaseModel):
    removed: int


class RecordIO(_Body):
    scope: Scope
    limit: Units | None
    duration: Annotated[StrictStr, StringConstraints(max_length=32)] | None
    timezone: Annotated[StrictStr, StringConstraints(min_length=1, max_length=64)] = "UTC"
    rolling: StrictBool = False
    created_at: Epoch = 0.0
    updated_at: Epoch = 0.0
    unit: Unit = "usd"


class StorePutBudgetIn(_Body):
    record: RecordIO


class StoreGetBudgetsIn(_Body):
    scopes: Annotated[list[Scope], Field(max_length=1000)]


class RecordOut(BaseModel):
    scope: str
    limit: int | None
    duration: str | None
    timezone: str
    rolling: bool
    created_at: float
    updated_at: float
    unit: Unit = "usd"


class StoreRecordsOut(BaseModel):
    records: list[RecordOut | None]


class StoreListBudgetsIn(_Body):
    prefix: Prefix = ""


class StoreDeleteBudgetIn(_Body):
    scope: Scope


class StoreDeletedOut(BaseModel):
    deleted: bool


def check_json(value: dict[str, Any]) -> dict[str, Any]:
    """JSON documents as every store keeps them (see
    :func:`~llmbudget.validation.check_json_object`)."""
    return check_json_object(value)


JsonObject = Annotated[dict[str, Any], AfterValidator(check_json)]
Kind = Annotated[StrictStr, AfterValidator(_store_name)]
DocKey = Annotated[StrictStr, AfterValidator(_store_name)]


class StoreDocIn(_Body):
    kind: Kind
    key: DocKey
    data: JsonObject


class StoreDocKeyIn(_Body):
    kind: Kind
    key: DocKey


class StoreCreatedOut(BaseModel):
    created: bool


class StoreDocOut(BaseModel):
    data: dict[str, Any] | None


class StoreListDocsIn(_Body):
    kind: Kind
    prefix: Prefix = ""


class StoreDocsOut(BaseModel):
    docs: list[tuple[str, dict[str, Any]]]


class StoreReadLogIn(_Body):
    kind: Kind
    since: TimeBound = 0.0
    until: TimeBound | None = Field(None, description="Exclusive upper bound; null: no bound.")
    limit: Annotated[StrictInt, Field(ge=1, le=10_000)] = 100


class LogEntryOut(BaseModel):
    at: float
    data: dict[str, Any]


class StoreLogOut(BaseModel):
    entries: list[LogEntryOut]


class Empty(BaseModel):
    ok: bool = True
