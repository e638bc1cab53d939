"""PostgreSQL store (``postgresql://``): one statement or PL/pgSQL function call per operation.

Every ledger operation is a single round trip: ``SELECT llmbudget_reserve(...)``,
``llmbudget_settle``, ``llmbudget_release``, ``llmbudget_record`` (charge),
``llmbudget_reset``, ``llmbudget_purge``, or one plain statement (usage, history, budgets,
documents, logs). Connections are autocommit, so each call is its own transaction.

Why it cannot overspend: a reserve first locks the ``spend`` row of each of its
``(scope, window)`` lines (``SELECT ... FOR UPDATE``, creating the row if needed) in
``(scope, window)`` order, then reads spent and active holds, then inserts the hold. Two
reserves sharing a line queue on that row lock; because every writer (reserve, settle,
charge, reset) takes these locks in the same order, multi-scope operations cannot
deadlock. Amounts are ``BIGINT`` (nano-dollars, or counts for budgets in requests, tokens
or slots, each line of a hold with its own amount); limit checks are done in ``numeric``
so that they cannot overflow.

Each query runs at READ COMMITTED inside a volatile PL/pgSQL function, so every statement
sees a fresh snapshot: the held sum a reserve reads *after* taking its locks includes every
hold committed by the reserves it waited for.

Schema: versioned migrations (``schema_version`` table), applied at start under a
transaction-scoped advisory lock, so concurrent starts are safe. ``?schema=NAME`` puts every
table and function in schema ``NAME`` (created if missing; default ``llmbudget``).
Other URL parameters: ``pool_min`` (1), ``pool_max`` (10), ``pool_timeout`` (5 s: the
longest an operation waits for a connection, so the bound on failing when the server is
down), ``timeout`` (5 s: under asyncio, the deadline of one operation end to end, see
:mod:`llmbudget.operations`), and every libpq parameter (``connect_timeout`` defaults to
2 s). A bad URL (unknown host,
refused port, missing database) fails at once, in one line naming the reason.
"""

from __future__ import annotations

import functools
import json
import select
from collections.abc import AsyncIterator, Generator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolClosed, PoolTimeout

from llmbudget.errors import (
    CounterOverflowError,
    InvalidInputError,
    LLMBudgetError,
    StoreError,
    StoreUnavailableError,
    UnknownHoldError,
)
from llmbudget.plans import run_async, run_sync
from llmbudget.stores.base import (
    BudgetRecord,
    Checks,
    Line,
    LogEntry,
    LogRecord,
    Refusal,
    SettleResult,
    Store,
    Usage,
    charge_conflict,
)

__all__ = ["AsyncPostgresStore", "PostgresStore"]

T = TypeVar("T")

DEFAULT_SCHEMA = "llmbudget"
# First key of the two-int advisory lock taken while migrating ("LLMB"); the second is a
# hash of the schema name, so stores in different schemas migrate independently.
_LOCK_CLASS = 0x4C4C4D42

# Each entry upgrades the schema by one version; never edit one that has shipped.
_MIGRATIONS: tuple[str, ...] = (
    r"""
CREATE TABLE spend (
    scope text COLLATE "C" NOT NULL,
    win bigint NOT NULL,
    spent bigint NOT NULL DEFAULT 0,
    -- Reserves create the row only to lock it; history lists a window once spend was recorded.
    recorded boolean NOT NULL DEFAULT false,
    PRIMARY KEY (scope, win)
);
CREATE TABLE spend_model (
    scope text COLLATE "C" NOT NULL,
    win bigint NOT NULL,
    model text NOT NULL,
    spent bigint NOT NULL,
    PRIMARY KEY (scope, win, model)
);
CREATE TABLE holds (
    id text PRIMARY KEY,
    amount bigint NOT NULL,
    expires_at double precision NOT NULL,
    state "char" NOT NULL,  -- h: held, s: settled, r: released
    actual bigint NOT NULL DEFAULT 0,
    scopes text[] NOT NULL,
    wins bigint[] NOT NULL
);
CREATE INDEX holds_expires_at ON holds (expires_at);
-- One row per line of each hold still counting (until settled, released or purged).
CREATE TABLE active_holds (
    scope text COLLATE "C" NOT NULL,
    win bigint NOT NULL,
    hold_id text NOT NULL,
    amount bigint NOT NULL,
    expires_at double precision NOT NULL,
    PRIMARY KEY (scope, win, hold_id)
);
CREATE INDEX active_holds_expires_at ON active_holds (expires_at);
CREATE TABLE budgets (
    scope text COLLATE "C" PRIMARY KEY,
    limit_units bigint,
    duration text,
    timezone text NOT NULL,
    rolling boolean NOT NULL,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL
);
-- JSON kept as text, not jsonb: the exact text Python wrote comes back (jsonb would
-- refuse NaN and renormalise numbers).
CREATE TABLE docs (
    kind text NOT NULL,
    key text COLLATE "C" NOT NULL,
    data text NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE TABLE logs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind text NOT NULL,
    at double precision NOT NULL,
    data text NOT NULL
);
CREATE INDEX logs_kind_at ON logs (kind, at);

CREATE FUNCTION llmbudget_reserve(
    p_id text, p_scopes text[], p_wins bigint[], p_limits bigint[],
    p_amount bigint, p_expires_at double precision, p_now double precision
) RETURNS bigint[] LANGUAGE plpgsql AS $fn$
DECLARE
    v_line record;
    v_spent bigint;
    v_held numeric;
BEGIN
    -- Lock every line's spend row in (scope, window) order, the order every writer uses,
    -- so overlapping multi-scope operations queue instead of deadlocking.
    FOR v_line IN
        SELECT u.s, u.w FROM unnest(p_scopes, p_wins) AS u(s, w) ORDER BY u.s COLLATE "C", u.w
    LOOP
        INSERT INTO spend (scope, win) VALUES (v_line.s, v_line.w) ON CONFLICT DO NOTHING;
        PERFORM 1 FROM spend WHERE scope = v_line.s AND win = v_line.w FOR UPDATE;
    END LOOP;
    -- Under the locks, so a concurrent reserve of the same id has committed by now.
    IF EXISTS (SELECT 1 FROM holds WHERE id = p_id) THEN
        RETURN NULL;
    END IF;
    FOR i IN 1 .. cardinality(p_scopes) LOOP
        CONTINUE WHEN p_limits[i] IS NULL;
        SELECT spent INTO v_spent FROM spend WHERE scope = p_scopes[i] AND win = p_wins[i];
        SELECT COALESCE(sum(amount), 0) INTO v_held FROM active_holds
            WHERE scope = p_scopes[i] AND win = p_wins[i] AND expires_at > p_now;
        IF v_spent::numeric + v_held + p_amount > p_limits[i] THEN
            RETURN ARRAY[i - 1, v_spent, v_held::bigint];
        END IF;
    END LOOP;
    -- Same id reserved with other lines at the same moment: that reserve won, we succeed.
    INSERT INTO holds (id, amount, expires_at, state, scopes, wins)
        VALUES (p_id, p_amount, p_expires_at, 'h', p_scopes, p_wins)
        ON CONFLICT (id) DO NOTHING;
    IF FOUND THEN
        INSERT INTO active_holds (scope, win, hold_id, amount, expires_at)
            SELECT u.s, u.w, p_id, p_amount, p_expires_at FROM unnest(p_scopes, p_wins) AS u(s, w);
    END IF;
    RETURN NULL;
END
$fn$;

CREATE FUNCTION llmbudget_record(
    p_scopes text[], p_wins bigint[], p_amount bigint, p_model text
) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    -- Rows in (scope, window) order: the lock order of reserves.
    INSERT INTO spend AS t (scope, win, spent, recorded)
        SELECT u.s, u.w, p_amount, true FROM unnest(p_scopes, p_wins) AS u(s, w)
        ORDER BY u.s COLLATE "C", u.w
        ON CONFLICT (scope, win) DO UPDATE SET spent = t.spent + excluded.spent, recorded = true;
    IF p_model IS NOT NULL THEN
        INSERT INTO spend_model AS t (scope, win, model, spent)
            SELECT u.s, u.w, p_model, p_amount FROM unnest(p_scopes, p_wins) AS u(s, w)
            ORDER BY u.s COLLATE "C", u.w
            ON CONFLICT (scope, win, model) DO UPDATE SET spent = t.spent + excluded.spent;
    END IF;
END
$fn$;

CREATE FUNCTION llmbudget_settle(p_id text, p_actual bigint, p_model text)
RETURNS bigint[] LANGUAGE plpgsql AS $fn$
DECLARE
    v_hold holds%ROWTYPE;
BEGIN
    SELECT * INTO v_hold FROM holds WHERE id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF v_hold.state = 's' THEN
        RETURN ARRAY[v_hold.actual, 1];
    END IF;
    DELETE FROM active_holds
        WHERE (scope, win, hold_id) IN (
            SELECT u.s, u.w, p_id FROM unnest(v_hold.scopes, v_hold.wins) AS u(s, w));
    -- A released or expired hold still records: the money was spent.
    PERFORM llmbudget_record(v_hold.scopes, v_hold.wins, p_actual, p_model);
    UPDATE holds SET state = 's', actual = p_actual WHERE id = p_id;
    RETURN ARRAY[p_actual, 0];
END
$fn$;

CREATE FUNCTION llmbudget_release(p_id text) RETURNS integer LANGUAGE plpgsql AS $fn$
DECLARE
    v_hold holds%ROWTYPE;
BEGIN
    SELECT * INTO v_hold FROM holds WHERE id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN -1;
    END IF;
    IF v_hold.state <> 'h' THEN
        RETURN 0;
    END IF;
    DELETE FROM active_holds
        WHERE (scope, win, hold_id) IN (
            SELECT u.s, u.w, p_id FROM unnest(v_hold.scopes, v_hold.wins) AS u(s, w));
    UPDATE holds SET state = 'r' WHERE id = p_id;
    RETURN 1;
END
$fn$;

CREATE FUNCTION llmbudget_reset(p_scope text, p_win bigint) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    -- spend before spend_model: the order settle and charge lock them in.
    UPDATE spend SET spent = 0, recorded = false WHERE scope = p_scope AND win = p_win;
    DELETE FROM spend_model WHERE scope = p_scope AND win = p_win;
END
$fn$;

CREATE FUNCTION llmbudget_purge(p_now double precision, p_cutoff double precision)
RETURNS bigint LANGUAGE plpgsql AS $fn$
DECLARE
    v_removed bigint;
BEGIN
    -- SKIP LOCKED: a row being ended by a settle or release right now is theirs to delete,
    -- and waiting for rows in arbitrary order could deadlock with them.
    DELETE FROM active_holds WHERE ctid = ANY (ARRAY(
        SELECT ctid FROM active_holds WHERE expires_at <= p_now FOR UPDATE SKIP LOCKED));
    WITH gone AS (
        DELETE FROM holds WHERE id IN (
            SELECT id FROM holds WHERE expires_at <= p_cutoff FOR UPDATE SKIP LOCKED)
        RETURNING 1)
    SELECT count(*) INTO v_removed FROM gone;
    RETURN v_removed;
END
$fn$;
""",
    # 2: reusing a hold id succeeds only as a retry of the same, still held reserve.
    r"""
-- 0 when p_id names no hold, 1 when it names a held hold of this amount and these lines
-- (a retry), -1 when it names an ended hold or a different reservation.
CREATE FUNCTION llmbudget_hold_reuse(
    p_id text, p_scopes text[], p_wins bigint[], p_amount bigint
) RETURNS integer LANGUAGE plpgsql AS $fn$
DECLARE
    v_hold holds%ROWTYPE;
BEGIN
    SELECT * INTO v_hold FROM holds WHERE id = p_id;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    -- Lines of one call are distinct (checked before the call): equal counts plus
    -- inclusion mean equal (scope, window) sets.
    IF v_hold.state = 'h' AND v_hold.amount = p_amount
        AND cardinality(v_hold.scopes) = cardinality(p_scopes)
        AND NOT EXISTS (
            SELECT 1 FROM unnest(v_hold.scopes, v_hold.wins) AS h(s, w)
            WHERE NOT EXISTS (
                SELECT 1 FROM unnest(p_scopes, p_wins) AS u(s, w)
                WHERE u.s = h.s COLLATE "C" AND u.w = h.w))
    THEN
        RETURN 1;
    END IF;
    RETURN -1;
END
$fn$;

-- Returns NULL when held (or a retry of a reserve still held under this id), ARRAY[-1]
-- when the id is taken by an ended hold or a different reservation, else
-- ARRAY[index, spent, held] of the first line that would go over.
CREATE OR REPLACE FUNCTION llmbudget_reserve(
    p_id text, p_scopes text[], p_wins bigint[], p_limits bigint[],
    p_amount bigint, p_expires_at double precision, p_now double precision
) RETURNS bigint[] LANGUAGE plpgsql AS $fn$
DECLARE
    v_line record;
    v_spent bigint;
    v_held numeric;
    v_reuse integer;
BEGIN
    -- Lock every line's spend row in (scope, window) order, the order every writer uses,
    -- so overlapping multi-scope operations queue instead of deadlocking.
    FOR v_line IN
        SELECT u.s, u.w FROM unnest(p_scopes, p_wins) AS u(s, w) ORDER BY u.s COLLATE "C", u.w
    LOOP
        INSERT INTO spend (scope, win) VALUES (v_line.s, v_line.w) ON CONFLICT DO NOTHING;
        PERFORM 1 FROM spend WHERE scope = v_line.s AND win = v_line.w FOR UPDATE;
    END LOOP;
    -- Under the locks, so a concurrent reserve of the same id and lines has committed by now.
    v_reuse := llmbudget_hold_reuse(p_id, p_scopes, p_wins, p_amount);
    IF v_reuse > 0 THEN
        RETURN NULL;
    ELSIF v_reuse < 0 THEN
        RETURN ARRAY[-1]::bigint[];
    END IF;
    FOR i IN 1 .. cardinality(p_scopes) LOOP
        CONTINUE WHEN p_limits[i] IS NULL;
        SELECT spent INTO v_spent FROM spend WHERE scope = p_scopes[i] AND win = p_wins[i];
        SELECT COALESCE(sum(amount), 0) INTO v_held FROM active_holds
            WHERE scope = p_scopes[i] AND win = p_wins[i] AND expires_at > p_now;
        IF v_spent::numeric + v_held + p_amount > p_limits[i] THEN
            RETURN ARRAY[i - 1, v_spent, v_held::bigint];
        END IF;
    END LOOP;
    INSERT INTO holds (id, amount, expires_at, state, scopes, wins)
        VALUES (p_id, p_amount, p_expires_at, 'h', p_scopes, p_wins)
        ON CONFLICT (id) DO NOTHING;
    IF FOUND THEN
        INSERT INTO active_holds (scope, win, hold_id, amount, expires_at)
            SELECT u.s, u.w, p_id, p_amount, p_expires_at FROM unnest(p_scopes, p_wins) AS u(s, w);
        RETURN NULL;
    END IF;
    -- The same id was reserved at the same moment under other locks (other lines) and
    -- that reserve committed first: judge ours as a retry of it.
    IF llmbudget_hold_reuse(p_id, p_scopes, p_wins, p_amount) > 0 THEN
        RETURN NULL;
    END IF;
    RETURN ARRAY[-1]::bigint[];
END
$fn$;
""",
    # 3: an operation that would take a counter past bigint is refused before any change
    # (SQLSTATE 22003, translated to CounterOverflowError), on every line of a reserve.
    r"""
-- Returns NULL when held (or a retry of a reserve still held under this id), ARRAY[-1]
-- when the id is taken by an ended hold or a different reservation, else
-- ARRAY[index, spent, held] of the first line that would go over.
CREATE OR REPLACE FUNCTION llmbudget_reserve(
    p_id text, p_scopes text[], p_wins bigint[], p_limits bigint[],
    p_amount bigint, p_expires_at double precision, p_now double precision
) RETURNS bigint[] LANGUAGE plpgsql AS $fn$
DECLARE
    v_line record;
    v_spent bigint;
    v_held numeric;
    v_reuse integer;
BEGIN
    -- Lock every line's spend row in (scope, window) order, the order every writer uses,
    -- so overlapping multi-scope operations queue instead of deadlocking.
    FOR v_line IN
        SELECT u.s, u.w FROM unnest(p_scopes, p_wins) AS u(s, w) ORDER BY u.s COLLATE "C", u.w
    LOOP
        INSERT INTO spend (scope, win) VALUES (v_line.s, v_line.w) ON CONFLICT DO NOTHING;
        PERFORM 1 FROM spend WHERE scope = v_line.s AND win = v_line.w FOR UPDATE;
    END LOOP;
    -- Under the locks, so a concurrent reserve of the same id and lines has committed by now.
    v_reuse := llmbudget_hold_reuse(p_id, p_scopes, p_wins, p_amount);
    IF v_reuse > 0 THEN
        RETURN NULL;
    ELSIF v_reuse < 0 THEN
        RETURN ARRAY[-1]::bigint[];
    END IF;
    FOR i IN 1 .. cardinality(p_scopes) LOOP
        SELECT spent INTO v_spent FROM spend WHERE scope = p_scopes[i] AND win = p_wins[i];
        SELECT COALESCE(sum(amount), 0) INTO v_held FROM active_holds
            WHERE scope = p_scopes[i] AND win = p_wins[i] AND expires_at > p_now;
        -- Every line, limited or not: spend and the held sum must stay within bigint.
        IF v_spent::numeric + v_held + p_amount > 9223372036854775807 THEN
            RAISE EXCEPTION 'llmbudget counter overflow: %', p_scopes[i] USING ERRCODE = '22003';
        END IF;
        CONTINUE WHEN p_limits[i] IS NULL;
        IF v_spent::numeric + v_held + p_amount > p_limits[i] THEN
            RETURN ARRAY[i - 1, v_spent, v_held::bigint];
        END IF;
    END LOOP;
    INSERT INTO holds (id, amount, expires_at, state, scopes, wins)
        VALUES (p_id, p_amount, p_expires_at, 'h', p_scopes, p_wins)
        ON CONFLICT (id) DO NOTHING;
    IF FOUND THEN
        INSERT INTO active_holds (scope, win, hold_id, amount, expires_at)
            SELECT u.s, u.w, p_id, p_amount, p_expires_at FROM unnest(p_scopes, p_wins) AS u(s, w);
        RETURN NULL;
    END IF;
    -- The same id was reserved at the same moment under other locks (other lines) and
    -- that reserve committed first: judge ours as a retry of it.
    IF llmbudget_hold_reuse(p_id, p_scopes, p_wins, p_amount) > 0 THEN
        RETURN NULL;
    END IF;
    RETURN ARRAY[-1]::bigint[];
END
$fn$;

CREATE OR REPLACE FUNCTION llmbudget_record(
    p_scopes text[], p_wins bigint[], p_amount bigint, p_model text
) RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    v_scope text;
BEGIN
    -- Checked before the first row changes (per-model spend never exceeds its window's
    -- total, so the total is the bound).
    SELECT u.s INTO v_scope FROM unnest(p_scopes, p_wins) AS u(s, w)
        JOIN spend t ON t.scope = u.s AND t.win = u.w
        WHERE t.spent::numeric + p_amount > 9223372036854775807 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'llmbudget counter overflow: %', v_scope USING ERRCODE = '22003';
    END IF;
    -- Rows in (scope, window) order: the lock order of reserves.
    INSERT INTO spend AS t (scope, win, spent, recorded)
        SELECT u.s, u.w, p_amount, true FROM unnest(p_scopes, p_wins) AS u(s, w)
        ORDER BY u.s COLLATE "C", u.w
        ON CONFLICT (scope, win) DO UPDATE SET spent = t.spent + excluded.spent, recorded = true;
    IF p_model IS NOT NULL THEN
        INSERT INTO spend_model AS t (scope, win, model, spent)
            SELECT u.s, u.w, p_model, p_amount FROM unnest(p_scopes, p_wins) AS u(s, w)
            ORDER BY u.s COLLATE "C", u.w
            ON CONFLICT (scope, win, model) DO UPDATE SET spent = t.spent + excluded.spent;
    END IF;
END
$fn$;
""",
    # 4: idempotent charges. A charge id is kept with its amount and scopes for the
    # retention of holds; a retry under it records nothing.
    r"""
CREATE TABLE charges (
    id text PRIMARY KEY,
    amount bigint NOT NULL,
    scopes text[] NOT NULL,  -- distinct, sorted (COLLATE "C")
    at double precision NOT NULL
);
CREATE INDEX charges_at ON charges (at);

-- 1 when recorded, 0 when p_id was already charged with this amount on these scopes (a
-- retry: nothing recorded), -1 when p_id was used for another charge.
CREATE FUNCTION llmbudget_charge(
    p_id text, p_scopes text[], p_wins bigint[], p_amount bigint, p_model text,
    p_now double precision
) RETURNS integer LANGUAGE plpgsql AS $fn$
DECLARE
    v_scopes text[];
    v_seen charges%ROWTYPE;
BEGIN
    v_scopes := ARRAY(SELECT DISTINCT u.s COLLATE "C" FROM unnest(p_scopes) AS u(s) ORDER BY 1);
    -- A concurrent charge of the same id waits here on the primary key until the first
    -- commits, then reads it as a retry.
    INSERT INTO charges (id, amount, scopes, at) VALUES (p_id, p_amount, v_scopes, p_now)
        ON CONFLICT (id) DO NOTHING;
    IF NOT FOUND THEN
        SELECT * INTO v_seen FROM charges WHERE id = p_id;
        IF v_seen.amount = p_amount AND v_seen.scopes = v_scopes THEN
            RETURN 0;
        END IF;
        RETURN -1;
    END IF;
    PERFORM llmbudget_record(p_scopes, p_wins, p_amount, p_model);
    RETURN 1;
END
$fn$;

CREATE OR REPLACE FUNCTION llmbudget_purge(p_now double precision, p_cutoff double precision)
RETURNS bigint LANGUAGE plpgsql AS $fn$
DECLARE
    v_removed bigint;
BEGIN
    -- SKIP LOCKED: a row being ended by a settle or release right now is theirs to delete,
    -- and waiting for rows in arbitrary order could deadlock with them.
    DELETE FROM active_holds WHERE ctid = ANY (ARRAY(
        SELECT ctid FROM active_holds WHERE expires_at <= p_now FOR UPDATE SKIP LOCKED));
    WITH gone AS (
        DELETE FROM holds WHERE id IN (
            SELECT id FROM holds WHERE expires_at <= p_cutoff FOR UPDATE SKIP LOCKED)
        RETURNING 1)
    SELECT count(*) INTO v_removed FROM gone;
    DELETE FROM charges WHERE id IN (
        SELECT id FROM charges WHERE at <= p_cutoff FOR UPDATE SKIP LOCKED);
    RETURN v_removed;
END
$fn$;
""",
    # 5: budgets in other units (requests, tokens, concurrent slots), and lines that hold
    # and settle amounts of their own in one reserve. The functions of migrations 1-4 stay
    # (another signature each), so clients of the previous version keep working.
    r"""
ALTER TABLE budgets ADD COLUMN unit text NOT NULL DEFAULT 'usd';
-- What each line holds; NULL (holds written before) means every line holds `amount`.
ALTER TABLE holds ADD COLUMN amounts bigint[];

-- p_amounts[i] recorded on (p_scopes[i], p_wins[i]); refused before any change when a
-- counter would pass bigint (per-model spend never exceeds its window's total).
CREATE FUNCTION llmbudget_record_lines(
    p_scopes text[], p_wins bigint[], p_amounts bigint[], p_model text
) RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    v_scope text;
BEGIN
    SELECT u.s INTO v_scope FROM unnest(p_scopes, p_wins, p_amounts) AS u(s, w, a)
        JOIN spend t ON t.scope = u.s AND t.win = u.w
        WHERE t.spent::numeric + u.a > 9223372036854775807 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'llmbudget counter overflow: %', v_scope USING ERRCODE = '22003';
    END IF;
    -- Rows in (scope, window) order: the lock order of reserves.
    INSERT INTO spend AS t (scope, win, spent, recorded)
        SELECT u.s, u.w, u.a, true FROM unnest(p_scopes, p_wins, p_amounts) AS u(s, w, a)
        ORDER BY u.s COLLATE "C", u.w
        ON CONFLICT (scope, win) DO UPDATE SET spent = t.spent + excluded.spent, recorded = true;
    IF p_model IS NOT NULL THEN
        INSERT INTO spend_model AS t (scope, win, model, spent)
            SELECT u.s, u.w, p_model, u.a FROM unnest(p_scopes, p_wins, p_amounts) AS u(s, w, a)
            ORDER BY u.s COLLATE "C", u.w
            ON CONFLICT (scope, win, model) DO UPDATE SET spent = t.spent + excluded.spent;
    END IF;
END
$fn$;

-- 0 when p_id names no hold, 1 when it names a held hold of this amount and these lines
-- (scope, window and amount: a retry), -1 when it names an ended or different hold.
CREATE FUNCTION llmbudget_hold_reuse(
    p_id text, p_scopes text[], p_wins bigint[], p_amounts bigint[], p_amount bigint
) RETURNS integer LANGUAGE plpgsql AS $fn$
DECLARE
    v_hold holds%ROWTYPE;
BEGIN
    SELECT * INTO v_hold FROM holds WHERE id = p_id;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    -- Lines of one call are distinct (checked before the call): equal counts plus
    -- inclusion mean equal sets.
    IF v_hold.state = 'h' AND v_hold.amount = p_amount
        AND cardinality(v_hold.scopes) = cardinality(p_scopes)
        AND NOT EXISTS (
            SELECT 1 FROM unnest(
                v_hold.scopes, v_hold.wins,
                COALESCE(v_hold.amounts,
                         array_fill(v_hold.amount, ARRAY[cardinality(v_hold.scopes)]))
            ) AS h(s, w, a)
            WHERE NOT EXISTS (
                SELECT 1 FROM unnest(p_scopes, p_wins, p_amounts) AS u(s, w, a)
                WHERE u.s = h.s COLLATE "C" AND u.w = h.w AND u.a = h.a))
    THEN
        RETURN 1;
    END IF;
    RETURN -1;
END
$fn$;

-- Returns NULL when held (or a retry of a reserve still held under this id), ARRAY[-1]
-- when the id is taken by an ended hold or a different reservation, else
-- ARRAY[index, spent, held] of the first line that would go over. Line i holds
-- p_amounts[i].
CREATE FUNCTION llmbudget_reserve(
    p_id text, p_scopes text[], p_wins bigint[], p_limits bigint[], p_amounts bigint[],
    p_amount bigint, p_expires_at double precision, p_now double precision
) RETURNS bigint[] LANGUAGE plpgsql AS $fn$
DECLARE
    v_line record;
    v_spent bigint;
    v_held numeric;
    v_reuse integer;
BEGIN
    -- Lock every line's spend row in (scope, window) order, the order every writer uses,
    -- so overlapping multi-scope operations queue instead of deadlocking.
    FOR v_line IN
        SELECT u.s, u.w FROM unnest(p_scopes, p_wins) AS u(s, w) ORDER BY u.s COLLATE "C", u.w
    LOOP
        INSERT INTO spend (scope, win) VALUES (v_line.s, v_line.w) ON CONFLICT DO NOTHING;
        PERFORM 1 FROM spend WHERE scope = v_line.s AND win = v_line.w FOR UPDATE;
    END LOOP;
    -- Under the locks, so a concurrent reserve of the same id and lines has committed by now.
    v_reuse := llmbudget_hold_reuse(p_id, p_scopes, p_wins, p_amounts, p_amount);
    IF v_reuse > 0 THEN
        RETURN NULL;
    ELSIF v_reuse < 0 THEN
        RETURN ARRAY[-1]::bigint[];
    END IF;
    FOR i IN 1 .. cardinality(p_scopes) LOOP
        SELECT spent INTO v_spent FROM spend WHERE scope = p_scopes[i] AND win = p_wins[i];
        SELECT COALESCE(sum(amount), 0) INTO v_held FROM active_holds
            WHERE scope = p_scopes[i] AND win = p_wins[i] AND expires_at > p_now;
        -- Every line, limited or not: spend and the held sum must stay within bigint.
        IF v_spent::numeric + v_held + p_amounts[i] > 9223372036854775807 THEN
            RAISE EXCEPTION 'llmbudget counter overflow: %', p_scopes[i] USING ERRCODE = '22003';
        END IF;
        CONTINUE WHEN p_limits[i] IS NULL;
        IF v_spent::numeric + v_held + p_amounts[i] > p_limits[i] THEN
            RETURN ARRAY[i - 1, v_spent, v_held::bigint];
        END IF;
    END LOOP;
    INSERT INTO holds (id, amount, expires_at, state, scopes, wins, amounts)
        VALUES (p_id, p_amount, p_expires_at, 'h', p_scopes, p_wins, p_amounts)
        ON CONFLICT (id) DO NOTHING;
    IF FOUND THEN
        INSERT INTO active_holds (scope, win, hold_id, amount, expires_at)
            SELECT u.s, u.w, p_id, u.a, p_expires_at
            FROM unnest(p_scopes, p_wins, p_amounts) AS u(s, w, a);
        RETURN NULL;
    END IF;
    -- The same id was reserved at the same moment under other locks (other lines) and
    -- that reserve committed first: judge ours as a retry of it.
    IF llmbudget_hold_reuse(p_id, p_scopes, p_wins, p_amounts, p_amount) > 0 THEN
        RETURN NULL;
    END IF;
    RETURN ARRAY[-1]::bigint[];
END
$fn$;

-- Settle with p_actual on every line, except the lines of the scopes in p_over_scopes,
-- which record p_over_actuals (a count beside the dollars). Returns NULL for an unknown
-- hold, else ARRAY[actual recorded, 1 if it replayed an earlier settle].
CREATE FUNCTION llmbudget_settle(
    p_id text, p_actual bigint, p_model text, p_over_scopes text[], p_over_actuals bigint[]
) RETURNS bigint[] LANGUAGE plpgsql AS $fn$
DECLARE
    v_hold holds%ROWTYPE;
    v_actuals bigint[];
BEGIN
    SELECT * INTO v_hold FROM holds WHERE id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF v_hold.state = 's' THEN
        RETURN ARRAY[v_hold.actual, 1];
    END IF;
    v_actuals := ARRAY(
        SELECT COALESCE(
            (SELECT o.a FROM unnest(p_over_scopes, p_over_actuals) AS o(s, a)
             WHERE o.s = h.s COLLATE "C" LIMIT 1),
            p_actual)
        FROM unnest(v_hold.scopes) WITH ORDINALITY AS h(s, i) ORDER BY h.i);
    DELETE FROM active_holds
        WHERE (scope, win, hold_id) IN (
            SELECT u.s, u.w, p_id FROM unnest(v_hold.scopes, v_hold.wins) AS u(s, w));
    -- A released or expired hold still records: the money was spent.
    PERFORM llmbudget_record_lines(v_hold.scopes, v_hold.wins, v_actuals, p_model);
    UPDATE holds SET state = 's', actual = p_actual WHERE id = p_id;
    RETURN ARRAY[p_actual, 0];
END
$fn$;
""",
)

_BUDGET_COLUMNS = "scope, limit_units, duration, timezone, rolling, created_at, updated_at, unit"


# -- operations: SQL, parameters and decoding, shared by both shells --------------------


@dataclass(frozen=True, slots=True)
class _Query:
    """One statement: what both shells execute, sync or async."""

    sql: str | sql.Composed
    params: Sequence[Any] | Mapping[str, Any] | None = None


Plan = Generator[_Query, list[tuple[Any, ...]], T]


def _migrate(schema: str) -> Plan[None]:
    yield _Query("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK_CLASS, schema))
    if not (yield _Query("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))):
        yield _Query(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    yield _Query(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        "version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    rows = yield _Query("SELECT COALESCE(max(version), 0) FROM schema_version")
    current = int(rows[0][0])
    if current > len(_MIGRATIONS):
        raise StoreError(
            f"PostgreSQL schema {schema!r} is at version {current}, newer than this llmbudget "
            f"({len(_MIGRATIONS)}): upgrade llmbudget"
        )
    for number, script in enumerate(_MIGRATIONS[current:], start=current + 1):
        yield _Query(script)
        yield _Query("INSERT INTO schema_version (version) VALUES (%s)", (number,))


def _reserve(
    hold_id: str, lines: Sequence[Line], amount: int, expires_at: float, now: float
) -> Plan[Refusal | None]:
    Checks.reserve(hold_id, lines, amount, expires_at, now)
    rows = yield _Query(
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


def _settle(
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
        rows = yield _Query(settle, params)
    else:
        # One statement, so one transaction and one round trip: the entry is inserted only
        # when this call settled the hold (r[2] = 0), never for a replayed settle.
        rows = yield _Query(
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


def _release(hold_id: str, now: float) -> Plan[bool]:
    Checks.release(hold_id, now)
    rows = yield _Query("SELECT llmbudget_release(%s)", (hold_id,))
    if rows[0][0] < 0:
        raise UnknownHoldError(hold_id)
    return bool(rows[0][0])


def _charge(
    lines: Sequence[Line], amount: int, model: str | None, now: float, charge_id: str | None
) -> Plan[bool]:
    Checks.charge(lines, amount, model, now, charge_id)
    scopes = [line.scope for line in lines]
    wins = [line.window for line in lines]
    if charge_id is None:
        yield _Query(
            "SELECT llmbudget_record(%s::text[], %s::bigint[], %s::bigint, %s::text)",
            (scopes, wins, amount, model),
        )
        return True
    rows = yield _Query(
        "SELECT llmbudget_charge(%s, %s::text[], %s::bigint[], %s::bigint, %s::text, %s::float8)",
        (charge_id, scopes, wins, amount, model, float(now)),
    )
    if rows[0][0] < 0:
        raise charge_conflict(charge_id)
    return bool(rows[0][0])


def _usage(scope: str, window: int, now: float) -> Plan[Usage]:
    Checks.window(scope, window, now)
    # One statement, so spent, held and per-model spend come from one snapshot.
    rows = yield _Query(
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


def _reset(scope: str, window: int) -> Plan[None]:
    Checks.window(scope, window)
    yield _Query("SELECT llmbudget_reset(%s, %s::bigint)", (scope, window))


def _history(scope: str, limit: int) -> Plan[list[tuple[int, int]]]:
    Checks.history(scope, limit)
    rows = yield _Query(
        "SELECT win, spent FROM spend WHERE scope = %s AND recorded ORDER BY win DESC LIMIT %s",
        (scope, max(limit, 0)),
    )
    return [(int(w), int(s)) for w, s in rows]


def _purge(now: float, retention: float) -> Plan[int]:
    Checks.purge(now, retention)
    rows = yield _Query(
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


def _put_budget(record: BudgetRecord) -> Plan[None]:
    Checks.record(record)
    yield _Query(
        f"INSERT INTO budgets ({_BUDGET_COLUMNS}) "
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


def _get_budgets(scopes: Sequence[str]) -> Plan[list[BudgetRecord | None]]:
    Checks.scopes(scopes)
    if not scopes:
        return []
    rows = yield _Query(
        f"SELECT {_BUDGET_COLUMNS} FROM budgets WHERE scope = ANY(%s::text[])", (list(scopes),)
    )
    found = {row[0]: _budget(row) for row in rows}
    return [found.get(scope) for scope in scopes]


def _list_budgets(prefix: str) -> Plan[list[BudgetRecord]]:
    Checks.name(prefix, "prefix", allow_empty=True)
    # starts_with rather than LIKE, so '%' and '_' in a prefix need no escaping; the
    # range condition lets the (COLLATE "C") primary key serve the scan and the order.
    rows = yield _Query(
        f"SELECT {_BUDGET_COLUMNS} FROM budgets WHERE scope >= %(p)s AND starts_with(scope, %(p)s) "
        "ORDER BY scope",
        {"p": prefix},
    )
    return [_budget(row) for row in rows]


def _delete_budget(scope: str) -> Plan[bool]:
    Checks.name(scope, "scope")
    rows = yield _Query("DELETE FROM budgets WHERE scope = %s RETURNING 1", (scope,))
    return bool(rows)


def _dumps(data: Mapping[str, Any]) -> str:
    return json.dumps(dict(data))


def _loads(text: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(text)
    return data


def _put_doc(kind: str, key: str, data: Mapping[str, Any]) -> Plan[None]:
    Checks.doc(kind, key, data)
    yield _Query(
        "INSERT INTO docs (kind, key, data) VALUES (%s, %s, %s) "
        "ON CONFLICT (kind, key) DO UPDATE SET data = excluded.data",
        (kind, key, _dumps(data)),
    )


def _create_doc(kind: str, key: str, data: Mapping[str, Any]) -> Plan[bool]:
    Checks.doc(kind, key, data)
    rows = yield _Query(
        "INSERT INTO docs (kind, key, data) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1",
        (kind, key, _dumps(data)),
    )
    return bool(rows)


def _get_doc(kind: str, key: str) -> Plan[dict[str, Any] | None]:
    Checks.doc(kind, key)
    rows = yield _Query("SELECT data FROM docs WHERE kind = %s AND key = %s", (kind, key))
    return _loads(rows[0][0]) if rows else None


def _list_docs(kind: str, prefix: str) -> Plan[list[tuple[str, dict[str, Any]]]]:
    Checks.list_docs(kind, prefix)
    rows = yield _Query(
        "SELECT key, data FROM docs WHERE kind = %(k)s AND key >= %(p)s "
        "AND starts_with(key, %(p)s) ORDER BY key",
        {"k": kind, "p": prefix},
    )
    return [(key, _loads(data)) for key, data in rows]


def _delete_doc(kind: str, key: str) -> Plan[bool]:
    Checks.doc(kind, key)
    rows = yield _Query("DELETE FROM docs WHERE kind = %s AND key = %s RETURNING 1", (kind, key))
    return bool(rows)


def _append_log(kind: str, at: float, data: Mapping[str, Any]) -> Plan[None]:
    Checks.log(kind, at, data)
    yield _Query(
        "INSERT INTO logs (kind, at, data) VALUES (%s, %s::float8, %s)",
        (kind, float(at), _dumps(data)),
    )


def _read_log(kind: str, since: float, until: float, limit: int) -> Plan[list[LogEntry]]:
    Checks.read_log(kind, since, until, limit)
    rows = yield _Query(
        "SELECT at, data FROM logs WHERE kind = %s AND at >= %s::float8 AND at < %s::float8 "
        "ORDER BY at DESC, id DESC LIMIT %s",
        (kind, float(since), float(until), max(limit, 0)),
    )
    return [LogEntry(float(at), _loads(data)) for at, data in rows]


# -- connection ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Config:
    url: str  # as given, so another process can open the same store
    conninfo: str  # for libpq: the URL without llmbudget's own parameters
    schema: str
    pool_min: int
    pool_max: int
    pool_timeout: float
    where: str
    timeout: float = 5.0
    identity: str = ""

    @classmethod
    def parse(cls, url: str) -> _Config:
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("postgresql", "postgres"):
            raise InvalidInputError(f"not a PostgreSQL URL: {url!r}")
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        schema = query.pop("schema", DEFAULT_SCHEMA)
        if not schema:
            raise InvalidInputError("?schema= must name a schema")
        try:
            pool_min = int(query.pop("pool_min", "1"))
            pool_max = int(query.pop("pool_max", "10"))
            pool_timeout = float(query.pop("pool_timeout", "5"))
            timeout = float(query.pop("timeout", "5"))
        except ValueError as exc:
            raise InvalidInputError(f"bad pool parameter in {url!r}: {exc}") from None
        if not 0 <= pool_min <= pool_max or pool_max < 1 or pool_timeout <= 0:
            raise InvalidInputError(
                "need 0 <= pool_min <= pool_max, pool_max >= 1, pool_timeout > 0"
            )
        if not 0 < timeout < float("inf"):
            raise InvalidInputError(f"timeout must be a positive number of seconds in {url!r}")
        # Bounded failure when the server or network is gone: connect within 2 s, and let
        # TCP give up on a silent peer (keepalives while waiting, user timeout while sending).
        query.setdefault("connect_timeout", "2")
        query.setdefault("keepalives", "1")
        query.setdefault("keepalives_idle", "5")
        query.setdefault("keepalives_interval", "2")
        query.setdefault("keepalives_count", "3")
        query.setdefault("tcp_user_timeout", "10000")
        query.setdefault("application_name", "llmbudget")
        conninfo = urlunsplit(
            (parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment)
        )
        where = (
            f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path} schema {schema!r}"
        )
        identity = (
            f"postgresql://{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path}"
            f"#{schema}"
        )
        return cls(
            url, conninfo, schema, pool_min, pool_max, pool_timeout, where, timeout, identity
        )

    def pool_args(self) -> dict[str, Any]:
        return {
            "min_size": self.pool_min,
            "max_size": self.pool_max,
            "timeout": self.pool_timeout,
            # Give up a failed reconnection after a few seconds: the next request then
            # starts a fresh attempt at once instead of waiting out a long backoff.
            "reconnect_timeout": max(self.pool_timeout, 2.0),
            "kwargs": {"autocommit": True},
            "open": False,
            "name": f"llmbudget {self.where}",
        }

    def search_path(self) -> sql.Composed:
        return sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema))


_OVERFLOW = "llmbudget counter overflow: "


def _one_line(exc: BaseException) -> str:
    # libpq's messages span lines ("...failed: Connection refused\n\tIs the server
    # running..."): one line, so a log or a terminal shows the reason once, whole.
    return " ".join(str(exc).split())


def _translate(exc: BaseException, where: str) -> LLMBudgetError:
    if isinstance(exc, psycopg.errors.NumericValueOutOfRange):
        # Raised by the functions before any change (migration 3): a refusal, not a failure.
        message = exc.diag.message_primary or ""
        scope = message[len(_OVERFLOW) :] if message.startswith(_OVERFLOW) else None
        return CounterOverflowError(scope)
    if isinstance(exc, PoolClosed):
        return StoreError(f"PostgreSQL store {where} is closed")
    if isinstance(exc, PoolTimeout):
        return StoreUnavailableError(f"PostgreSQL store {where}: no connection: {_one_line(exc)}")
    if isinstance(exc, psycopg.OperationalError):
        state = exc.sqlstate
        # No SQLSTATE: the client lost or never had the connection. 08: connection
        # exception, 53: insufficient resources, 57: operator intervention (shutdown,
        # cancel), 58: system error. Others (deadlock, serialization) are store errors.
        if state is None or state[:2] in ("08", "53", "57", "58"):
            return StoreUnavailableError(f"PostgreSQL store {where}: {_one_line(exc)}")
    return StoreError(f"PostgreSQL store {where}: {_one_line(exc)}")


def _readable(fd: int) -> bool:
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))
    ready, _, _ = select.select([fd], [], [], 0)
    return bool(ready)


def _stale(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    """True for a pooled connection the server has closed (restart, failover, proxy cut).

    An idle connection has nothing to read unless the server sent something, normally its
    goodbye or EOF: only then is libpq asked to read, so a healthy connection costs one
    poll() and no round trip. Without this, the first call after a restart would fail.
    """
    if conn.closed or conn.broken:
        return True
    try:
        if not _readable(conn.fileno()):
            return False
        conn.pgconn.consume_input()
    except (psycopg.Error, OSError, ValueError):
        return True
    return conn.pgconn.status != psycopg.pq.ConnStatus.OK


def _rows(cursor: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any]) -> bool:
    return cursor.description is not None


def _execute(conn: psycopg.Connection[Any], query: _Query) -> list[tuple[Any, ...]]:
    """One query the plans yield, on ``conn``: its rows (run by :func:`~llmbudget.plans.run_sync`)."""
    cursor = conn.execute(query.sql, query.params)
    return cursor.fetchall() if _rows(cursor) else []


async def _aexecute(conn: psycopg.AsyncConnection[Any], query: _Query) -> list[tuple[Any, ...]]:
    """:func:`_execute` on an asyncio connection (run by :func:`~llmbudget.plans.run_async`)."""
    cursor = await conn.execute(query.sql, query.params)
    return await cursor.fetchall() if _rows(cursor) else []


# -- the shells: they only execute what the plans yield -----------------------------------


class PostgresStore(Store):
    """PostgreSQL-backed store, shared safely by threads, processes and machines.

    ``url``: a libpq URL, ``postgresql://user:password@host:5432/dbname``, with optional
    ``?schema=NAME`` (default ``llmbudget``), ``pool_min``, ``pool_max``, ``pool_timeout``.
    Migrations run on construction; :class:`~llmbudget.errors.StoreUnavailableError` if
    the server cannot be reached.

    >>> from llmbudget import Ledger, Budget
    >>> store = PostgresStore("postgresql://postgres@127.0.0.1/test?schema=docs")  # doctest: +SKIP
    >>> ledger = Ledger(store)  # doctest: +SKIP
    >>> ledger.charge([Budget.of("team:a", 10, "daily")], "0.25")  # doctest: +SKIP
    Decimal('0.25')
    """

    def __init__(self, url: str) -> None:
        self._config = _Config.parse(url)
        config = self._config
        #: Each operation's deadline under asyncio (``?timeout=``).
        self.timeout = config.timeout

        def configure(conn: psycopg.Connection[Any]) -> None:
            conn.execute(config.search_path())

        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            config.conninfo, configure=configure, **config.pool_args()
        )
        try:
            # One direct connection first, which also migrates: a bad URL (unknown host,
            # refused port, missing database) fails at once with libpq's reason, in one
            # line, instead of the pool retrying (and logging each attempt) until
            # pool_timeout.
            plan = _migrate(config.schema)
            with psycopg.connect(config.conninfo, autocommit=True) as conn:
                conn.execute(config.search_path())
                with conn.transaction():
                    run_sync(plan, functools.partial(_execute, conn))
            self._pool.open(wait=True, timeout=config.pool_timeout)
        except BaseException as exc:
            self._pool.close()
            if isinstance(exc, psycopg.Error):
                raise _translate(exc, config.where) from exc
            raise

    @property
    def url(self) -> str:
        """The URL this store was opened with (another process can open the same store)."""
        return self._config.url

    @property
    def identity(self) -> str:
        """Where the data is (host, port, database, schema), for the journal."""
        return self._config.identity

    @property
    def schema(self) -> str:
        return self._config.schema

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        # Every pooled connection may be dead after an outage: drop those and take another.
        for _ in range(self._config.pool_max + 1):
            with self._pool.connection() as conn:
                if _stale(conn):
                    conn.close()
                    continue
                yield conn
                return
        raise StoreUnavailableError(f"PostgreSQL store {self._config.where}: no live connection")

    def _run(self, plan: Plan[T], *, transaction: bool = False) -> T:
        try:
            with (
                self._connection() as conn,
                conn.transaction() if transaction else nullcontext(),
            ):
                return run_sync(plan, functools.partial(_execute, conn))
        except psycopg.Error as exc:
            raise _translate(exc, self._config.where) from exc

    def reserve(
        self, hold_id: str, lines: Sequence[Line], amount: int, expires_at: float, now: float
    ) -> Refusal | None:
        return self._run(_reserve(hold_id, lines, amount, expires_at, now))

    def settle(
        self,
        hold_id: str,
        actual: int,
        model: str | None,
        now: float,
        actuals: Mapping[str, int] | None = None,
        log: LogRecord | None = None,
    ) -> SettleResult:
        return self._run(_settle(hold_id, actual, model, now, actuals, log))

    def release(self, hold_id: str, now: float) -> bool:
        return self._run(_release(hold_id, now))

    def charge(
        self,
        lines: Sequence[Line],
        amount: int,
        model: str | None,
        now: float,
        charge_id: str | None = None,
    ) -> bool:
        return self._run(_charge(lines, amount, model, now, charge_id))

    def usage(self, scope: str, window: int, now: float) -> Usage:
        return self._run(_usage(scope, window, now))

    def reset(self, scope: str, window: int) -> None:
        self._run(_reset(scope, window))

    def history(self, scope: str, limit: int = 100) -> list[tuple[int, int]]:
        return self._run(_history(scope, limit))

    def purge(self, now: float, retention: float) -> int:
        return self._run(_purge(now, retention))

    def put_budget(self, record: BudgetRecord) -> None:
        self._run(_put_budget(record))

    def get_budgets(self, scopes: Sequence[str]) -> list[BudgetRecord | None]:
        return self._run(_get_budgets(scopes))

    def list_budgets(self, prefix: str) -> list[BudgetRecord]:
        return self._run(_list_budgets(prefix))

    def delete_budget(self, scope: str) -> bool:
        return self._run(_delete_budget(scope))

    def put_doc(self, kind: str, key: str, data: Mapping[str, Any]) -> None:
        self._run(_put_doc(kind, key, data))

    def create_doc(self, kind: str, key: str, data: Mapping[str, Any]) -> bool:
        return self._run(_create_doc(kind, key, data))

    def get_doc(self, kind: str, key: str) -> dict[str, Any] | None:
        return self._run(_get_doc(kind, key))

    def list_docs(self, kind: str, prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
        return self._run(_list_docs(kind, prefix))

    def delete_doc(self, kind: str, key: str) -> bool:
        return self._run(_delete_doc(kind, key))

    def append_log(self, kind: str, at: float, data: Mapping[str, Any]) -> None:
        self._run(_append_log(kind, at, data))

    def read_log(
        self, kind: str, since: float = 0.0, until: float = float("inf"), limit: int = 100
    ) -> list[LogEntry]:
        return self._run(_read_log(kind, since, until, limit))

    def close(self) -> None:
        self._pool.close()


class AsyncPostgresStore:
    """The same store for asyncio (``AsyncConnectionPool``): the same SQL and decoding.

    The pool opens and migrations run on first use (or ``await store.open()``).

    >>> from llmbudget import AsyncLedger
    >>> store = AsyncPostgresStore("postgresql://postgres@127.0.0.1/test")  # doctest: +SKIP
    >>> ledger = AsyncLedger(store)  # doctest: +SKIP
    >>> hold = await ledger.reserve([budget], "0.10")  # doctest: +SKIP
    """

    def __init__(self, url: str) -> None:
        self._config = _Config.parse(url)
        config = self._config

        async def configure(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(config.search_path())

        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
            config.conninfo, configure=configure, **config.pool_args()
        )
        self._ready = False
        self._opening: Any = None  # an asyncio.Lock, made inside the running loop

    @property
    def url(self) -> str:
        return self._config.url

    @property
    def identity(self) -> str:
        return self._config.identity

    @property
    def timeout(self) -> float:
        return self._config.timeout

    @property
    def schema(self) -> str:
        return self._config.schema

    async def open(self) -> AsyncPostgresStore:
        """Open the pool and apply migrations (done by the first operation otherwise)."""
        import asyncio

        if self._ready:
            return self
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if not self._ready:
                config = self._config
                plan = _migrate(config.schema)
                try:
                    # As in PostgresStore: one direct connection first (fast, clear errors).
                    conn = await psycopg.AsyncConnection.connect(config.conninfo, autocommit=True)
                    async with conn:
                        await conn.execute(config.search_path())
                        async with conn.transaction():
                            await run_async(plan, functools.partial(_aexecute, conn))
                    await self._pool.open(wait=True, timeout=config.pool_timeout)
                except psycopg.Error as exc:
                    raise _translate(exc, config.where) from exc
                self._ready = True
        return self

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        for _ in range(self._config.pool_max + 1):
            async with self._pool.connection() as conn:
                if _stale(conn):
                    await conn.close()
                    continue
                yield conn
                return
        raise StoreUnavailableError(f"PostgreSQL store {self._config.where}: no live connection")

    async def _run(self, plan: Plan[T]) -> T:
        if not self._ready:
            await self.open()
        return await self._execute(plan)

    async def _execute(self, plan: Plan[T], *, transaction: bool = False) -> T:
        try:
            async with (
                self._connection() as conn,
                conn.transaction() if transaction else nullcontext(),
            ):
                return await run_async(plan, functools.partial(_aexecute, conn))
        except psycopg.Error as exc:
            raise _translate(exc, self._config.where) from exc

    async def reserve(
        self, hold_id: str, lines: Sequence[Line], amount: int, expires_at: float, now: float
    ) -> Refusal | None:
        return await self._run(_reserve(hold_id, lines, amount, expires_at, now))

    async def settle(
        self,
        hold_id: str,
        actual: int,
        model: str | None,
        now: float,
        actuals: Mapping[str, int] | None = None,
        log: LogRecord | None = None,
    ) -> SettleResult:
        return await self._run(_settle(hold_id, actual, model, now, actuals, log))

    async def release(self, hold_id: str, now: float) -> bool:
        return await self._run(_release(hold_id, now))

    async def charge(
        self,
        lines: Sequence[Line],
        amount: int,
        model: str | None,
        now: float,
        charge_id: str | None = None,
    ) -> bool:
        return await self._run(_charge(lines, amount, model, now, charge_id))

    async def usage(self, scope: str, window: int, now: float) -> Usage:
        return await self._run(_usage(scope, window, now))

    async def reset(self, scope: str, window: int) -> None:
        await self._run(_reset(scope, window))

    async def history(self, scope: str, limit: int = 100) -> list[tuple[int, int]]:
        return await self._run(_history(scope, limit))

    async def purge(self, now: float, retention: float) -> int:
        return await self._run(_purge(now, retention))

    async def put_budget(self, record: BudgetRecord) -> None:
        await self._run(_put_budget(record))

    async def get_budgets(self, scopes: Sequence[str]) -> list[BudgetRecord | None]:
        return await self._run(_get_budgets(scopes))

    async def list_budgets(self, prefix: str) -> list[BudgetRecord]:
        return await self._run(_list_budgets(prefix))

    async def delete_budget(self, scope: str) -> bool:
        return await self._run(_delete_budget(scope))

    async def put_doc(self, kind: str, key: str, data: Mapping[str, Any]) -> None:
        await self._run(_put_doc(kind, key, data))

    async def create_doc(self, kind: str, key: str, data: Mapping[str, Any]) -> bool:
        return await self._run(_create_doc(kind, key, data))

    async def get_doc(self, kind: str, key: str) -> dict[str, Any] | None:
        return await self._run(_get_doc(kind, key))

    async def list_docs(self, kind: str, prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
        return await self._run(_list_docs(kind, prefix))

    async def delete_doc(self, kind: str, key: str) -> bool:
        return await self._run(_delete_doc(kind, key))

    async def append_log(self, kind: str, at: float, data: Mapping[str, Any]) -> None:
        await self._run(_append_log(kind, at, data))

    async def read_log(
        self, kind: str, since: float = 0.0, until: float = float("inf"), limit: int = 100
    ) -> list[LogEntry]:
        return await self._run(_read_log(kind, since, until, limit))

    async def aclose(self) -> None:
        await self._pool.close()

    async def __aenter__(self) -> AsyncPostgresStore:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
