-- idempotent charges. A charge id is kept with its amount and scopes for the
-- retention of holds; a retry under it records nothing.
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
