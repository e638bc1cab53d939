-- reusing a hold id succeeds only as a retry of the same, still held reserve.
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
