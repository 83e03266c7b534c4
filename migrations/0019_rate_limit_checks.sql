-- A recharge's rate limits and lock-out in one round trip (issue 11, item 2). The checks are
-- made in turn, as the placement lists them, and the first one refused stops the rest: a
-- request its sender's own quota refuses never counts towards the account's ceiling. A check
-- that hits adds one to its current window; a counting check (the lock-out) only reads. Each
-- row answered is (hits in the current window, hits in the window before); the estimate and
-- the refusal are the same arithmetic as adapters/rate_limits.py (which recomputes them), so
-- both stop at the same check.
-- depends: 0014_recharge_discrepancies

DROP FUNCTION IF EXISTS rate_limit_checks(
    text[], boolean[], bigint[], integer[], integer[], double precision
);  -- the first cut took the limits as integer: a ceiling of 5 x 10^9 overflowed it

CREATE OR REPLACE FUNCTION rate_limit_checks(
    scopes text[],
    hitting boolean[],
    window_starts bigint[],
    window_seconds integer[],
    limits bigint[],
    now_epoch double precision
) RETURNS TABLE (hits_now integer, hits_before integer)
LANGUAGE plpgsql AS $checks$
DECLARE
    estimate double precision;
BEGIN
    FOR i IN 1 .. coalesce(cardinality(scopes), 0) LOOP
        IF hitting[i] THEN
            INSERT INTO rate_counters AS r (scope, window_start, hits)
            VALUES (scopes[i], to_timestamp(window_starts[i]), 1)
            ON CONFLICT (scope, window_start) DO UPDATE SET hits = r.hits + 1
            RETURNING r.hits INTO hits_now;
        ELSE
            SELECT r.hits INTO hits_now FROM rate_counters r
             WHERE r.scope = scopes[i] AND r.window_start = to_timestamp(window_starts[i]);
            hits_now := coalesce(hits_now, 0);
        END IF;
        SELECT r.hits INTO hits_before FROM rate_counters r
         WHERE r.scope = scopes[i]
           AND r.window_start = to_timestamp(window_starts[i] - window_seconds[i]);
        hits_before := coalesce(hits_before, 0);
        RETURN NEXT;
        estimate := hits_now + hits_before
            * (1 - (now_epoch - window_starts[i]) / window_seconds[i]::double precision);
        EXIT WHEN (hitting[i] AND estimate > limits[i])
               OR (NOT hitting[i] AND estimate >= limits[i]);
    END LOOP;
END
$checks$;
