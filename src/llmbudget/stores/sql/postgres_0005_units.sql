-- budgets in other units (requests, tokens, concurrent slots), and lines that hold
-- and settle amounts of their own in one reserve. The functions of migrations 1-4 stay
-- (another signature each), so clients of the previous version keep working.
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
