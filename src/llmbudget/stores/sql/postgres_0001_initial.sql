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
