-- an operation that would take a counter past bigint is refused before any change
-- (SQLSTATE 22003, translated to CounterOverflowError), on every line of a reserve.
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
