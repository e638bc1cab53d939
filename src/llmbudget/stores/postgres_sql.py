"""The PostgreSQL store's operations as plans: the SQL each runs, its parameters, and the
decoding of its rows. Pure: nothing here holds a connection; both shells in
:mod:`llmbudget.stores.postgres` execute what these plans yield (see :mod:`llmbudget.plans`).
The schema is the migrations in ``stores/sql/postgres_<version>_<name>.sql``, applied in order.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from psycopg import sql

from llmbudget.errors import (
    InvalidInputError,
    StoreError,
    UnknownHoldError,
)
from llmbudget.stores.base import (
    BudgetRecord,
    Checks,
    Line,
    LogEntry,
    LogRecord,
    Refusal,
    SettleResult,
    Usage,
    charge_conflict,
)
from llmbudget.stores.sql import migrations

__all__ = [
    "BUDGET_COLUMNS",
    "LOCK_CLASS",
    "MIGRATIONS",
    "Plan",
    "Query",
    "append_log",
    "charge",
    "create_doc",
    "delete_budget",
    "delete_doc",
    "get_budgets",
    "get_doc",
    "history",
    "list_budgets",
    "list_docs",
    "migrate",
    "purge",
    "put_budget",
    "put_doc",
    "read_log",
    "release",
    "reserve",
    "reset",
    "settle",
    "usage",
]

T = TypeVar("T")

# First key of the two-int advisory lock taken while migrating ("LLMB"); the second is a
# hash of the schema name, so stores in different schemas migrate independently.
LOCK_CLASS = 0x4C4C4D42

# The schema, one migration per file in ``stores/sql/`` (``postgres_<version>_<name>.sql``),
# applied in order; never edit one that has shipped.
MIGRATIONS = migrations("postgres")

BUDGET_COLUMNS = "scope, limit_units, duration, timezone, rolling, created_at, updated_at, unit"


# -- operations: SQL, parameters and decoding, shared by both shells --------------------


@dataclass(frozen=True, slots=True)
class Query:
    """One statement: what both shells execute, sync or async."""

    sql: str | sql.Composed
    params: Sequence[Any] | Mapping[str, Any] | None = None


Plan = Generator[Query, list[tuple[Any, ...]], T]


def migrate(schema: str) -> Plan[None]:
    yield Query("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (LOCK_CLASS, schema))
    if not (yield Query("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))):
        yield Query(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    yield Query(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        "version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    rows = yield Query("SELECT COALESCE(max(version), 0) FROM schema_version")
    current = int(rows[0][0])
    if current > len(MIGRATIONS):
        raise StoreError(
            f"PostgreSQL schema {schema!r} is at version {current}, newer than this llmbudget "
            f"({len(MIGRATIONS)}): upgrade llmbudget"
        )
    for number, script in enumerate(MIGRATIONS[current:], start=current + 1):
        yield Query(script)
        yield Query("INSERT INTO schema_version (version) VALUES (%s)", (number,))


def reserve(
    hold_id: str, lines: Sequence[Line], amount: int, expires_at: float, now: float
) -> Plan[Refusal | None]:
    Checks.reserve(hold_id, lines, amount, expires_at, now)
    rows = yield Query(
        "SELECT llmbudget_reserve(%s, %s::text[], %s::bigint[], %s::bigint[], %s::bigint[], "
        "%s::bigint, %s::float8, %s::float8)",
        (
            hold_id,
            [line.scope for line in lines],
            [line.window for line in lines],
            [line.limit for line in lines],
            [line.amount_or(amount) for line in lines],
            amount,
            float(expires_at),
            float(now),
        ),
    )
    refusal = rows[0][0]
    if refusal is None:
        return None
    if len(refusal) == 1:  # ARRAY[-1]: the id is taken by an ended or different hold
        raise InvalidInputError(
            f"hold id {hold_id!r} was already used for a different or finished reservation"
        )
    return Refusal(*(int(v) for v in refusal))


def settle(
    hold_id: str,
    actual: int,
    model: str | None,
    now: float,
    actuals: Mapping[str, int] | None,
    log: LogRecord | None = None,
) -> Plan[SettleResult]:
    Checks.settle(hold_id, actual, model, now, actuals, log)
    over = dict(actuals or {})
    params: tuple[Any, ...] = (hold_id, actual, model, list(over), list(over.values()))
    settle = "SELECT llmbudget_settle(%s, %s::bigint, %s::text, %s::text[], %s::bigint[])"
    if log is None:
        rows = yield Query(settle, params)
    else:
        # One statement, so one transaction and one round trip: the entry is inserted only
        # when this call settled the hold (r[2] = 0), never for a replayed settle.
        rows = yield Query(
            f"WITH s AS MATERIALIZED ({settle} AS r), "
            "l AS (INSERT INTO logs (kind, at, data) SELECT %s, %s::float8, %s FROM s "
            "WHERE s.r IS NOT NULL AND s.r[2] = 0 RETURNING 1) "
            "SELECT r FROM s",
            (*params, log[0], float(log[1]), _dumps(log[2])),
        )
    result = rows[0][0]
    if result is None:
        raise UnknownHoldError(hold_id)
    return SettleResult(int(result[0]), already=bool(result[1]))


def release(hold_id: str, now: float) -> Plan[bool]:
    Checks.release(hold_id, now)
    rows = yield Query("SELECT llmbudget_release(%s)", (hold_id,))
    if rows[0][0] < 0:
        raise UnknownHoldError(hold_id)
    return bool(rows[0][0])


def charge(
    lines: Sequence[Line], amount: int, model: str | None, now: float, charge_id: str | None
) -> Plan[bool]:
    Checks.charge(lines, amount, model, now, charge_id)
    scopes = [line.scope for line in lines]
    wins = [line.window for line in lines]
    if charge_id is None:
        yield Query(
            "SELECT llmbudget_record(%s::text[], %s::bigint[], %s::bigint, %s::text)",
            (scopes, wins, amount, model),
        )
        return True
    rows = yield Query(
        "SELECT llmbudget_charge(%s, %s::text[], %s::bigint[], %s::bigint, %s::text, %s::float8)",
        (charge_id, scopes, wins, amount, model, float(now)),
    )
    if rows[0][0] < 0:
        raise charge_conflict(charge_id)
    return bool(rows[0][0])


def usage(scope: str, window: int, now: float) -> Plan[Usage]:
    Checks.window(scope, window, now)
    # One statement, so spent, held and per-model spend come from one snapshot.
    rows = yield Query(
        "SELECT"
        " (SELECT spent FROM spend WHERE scope = %(s)s AND win = %(w)s),"
        " (SELECT sum(amount) FROM active_holds"
        "   WHERE scope = %(s)s AND win = %(w)s AND expires_at > %(now)s::float8),"
        " ARRAY(SELECT model FROM spend_model WHERE scope = %(s)s AND win = %(w)s ORDER BY model),"
        " ARRAY(SELECT spent FROM spend_model WHERE scope = %(s)s AND win = %(w)s ORDER BY model)",
        {"s": scope, "w": window, "now": float(now)},
    )
    spent, held, models, amounts = rows[0]
    return Usage(int(spent or 0), int(held or 0), dict(zip(models, amounts, strict=True)))


def reset(scope: str, window: int) -> Plan[None]:
    Checks.window(scope, window)
    yield Query("SELECT llmbudget_reset(%s, %s::bigint)", (scope, window))


def history(scope: str, limit: int) -> Plan[list[tuple[int, int]]]:
    Checks.history(scope, limit)
    rows = yield Query(
        "SELECT win, spent FROM spend WHERE scope = %s AND recorded ORDER BY win DESC LIMIT %s",
        (scope, max(limit, 0)),
    )
    return [(int(w), int(s)) for w, s in rows]


def purge(now: float, retention: float) -> Plan[int]:
    Checks.purge(now, retention)
    rows = yield Query(
        "SELECT llmbudget_purge(%s::float8, %s::float8)", (float(now), float(now - retention))
    )
    return int(rows[0][0])


def _budget(row: Sequence[Any]) -> BudgetRecord:
    scope, limit, duration, timezone, rolling, created_at, updated_at, unit = row
    return BudgetRecord(
        scope=scope,
        limit=None if limit is None else int(limit),
        duration=duration,
        timezone=timezone,
        rolling=bool(rolling),
        created_at=float(created_at),
        updated_at=float(updated_at),
        unit=unit,
    )


def put_budget(record: BudgetRecord) -> Plan[None]:
    Checks.record(record)
    yield Query(
        f"INSERT INTO budgets ({BUDGET_COLUMNS}) "
        "VALUES (%s, %s::bigint, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (scope) DO UPDATE SET limit_units = excluded.limit_units, "
        "duration = excluded.duration, timezone = excluded.timezone, "
        "rolling = excluded.rolling, created_at = excluded.created_at, "
        "updated_at = excluded.updated_at, unit = excluded.unit",
        (
            record.scope,
            record.limit,
            record.duration,
            record.timezone,
            record.rolling,
            float(record.created_at),
            float(record.updated_at),
            record.unit,
        ),
    )


def get_budgets(scopes: Sequence[str]) -> Plan[list[BudgetRecord | None]]:
    Checks.scopes(scopes)
    if not scopes:
        return []
    rows = yield Query(
        f"SELECT {BUDGET_COLUMNS} FROM budgets WHERE scope = ANY(%s::text[])", (list(scopes),)
    )
    found = {row[0]: _budget(row) for row in rows}
    return [found.get(scope) for scope in scopes]


def list_budgets(prefix: str) -> Plan[list[BudgetRecord]]:
    Checks.name(prefix, "prefix", allow_empty=True)
    # starts_with rather than LIKE, so '%' and '_' in a prefix need no escaping; the
    # range condition lets the (COLLATE "C") primary key serve the scan and the order.
    rows = yield Query(
        f"SELECT {BUDGET_COLUMNS} FROM budgets WHERE scope >= %(p)s AND starts_with(scope, %(p)s) "
        "ORDER BY scope",
        {"p": prefix},
    )
    return [_budget(row) for row in rows]


def delete_budget(scope: str) -> Plan[bool]:
    Checks.name(scope, "scope")
    rows = yield Query("DELETE FROM budgets WHERE scope = %s RETURNING 1", (scope,))
    return bool(rows)


def _dumps(data: Mapping[str, Any]) -> str:
    return json.dumps(dict(data))


def _loads(text: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(text)
    return data


def put_doc(kind: str, key: str, data: Mapping[str, Any]) -> Plan[None]:
    Checks.doc(kind, key, data)
    yield Query(
        "INSERT INTO docs (kind, key, data) VALUES (%s, %s, %s) "
        "ON CONFLICT (kind, key) DO UPDATE SET data = excluded.data",
        (kind, key, _dumps(data)),
    )


def create_doc(kind: str, key: str, data: Mapping[str, Any]) -> Plan[bool]:
    Checks.doc(kind, key, data)
    rows = yield Query(
        "INSERT INTO docs (kind, key, data) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1",
        (kind, key, _dumps(data)),
    )
    return bool(rows)


def get_doc(kind: str, key: str) -> Plan[dict[str, Any] | None]:
    Checks.doc(kind, key)
    rows = yield Query("SELECT data FROM docs WHERE kind = %s AND key = %s", (kind, key))
    return _loads(rows[0][0]) if rows else None


def list_docs(kind: str, prefix: str) -> Plan[list[tuple[str, dict[str, Any]]]]:
    Checks.list_docs(kind, prefix)
    rows = yield Query(
        "SELECT key, data FROM docs WHERE kind = %(k)s AND key >= %(p)s "
        "AND starts_with(key, %(p)s) ORDER BY key",
        {"k": kind, "p": prefix},
    )
    return [(key, _loads(data)) for key, data in rows]


def delete_doc(kind: str, key: str) -> Plan[bool]:
    Checks.doc(kind, key)
    rows = yield Query("DELETE FROM docs WHERE kind = %s AND key = %s RETURNING 1", (kind, key))
    return bool(rows)


def append_log(kind: str, at: float, data: Mapping[str, Any]) -> Plan[None]:
    Checks.log(kind, at, data)
    yield Query(
        "INSERT INTO logs (kind, at, data) VALUES (%s, %s::float8, %s)",
        (kind, float(at), _dumps(data)),
    )


def read_log(kind: str, since: float, until: float, limit: int) -> Plan[list[LogEntry]]:
    Checks.read_log(kind, since, until, limit)
    rows = yield Query(
        "SELECT at, data FROM logs WHERE kind = %s AND at >= %s::float8 AND at < %s::float8 "
        "ORDER BY at DESC, id DESC LIMIT %s",
        (kind, float(since), float(until), max(limit, 0)),
    )
    return [LogEntry(float(at), _loads(data)) for at, data in rows]
