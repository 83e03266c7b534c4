-- Recharges: the discrepancy a platform's order callback found (`late_success`: a success for
-- a recharge we had failed and released, issue 13 item 1), so an operator lists them with
-- GET /v1/recharges?discrepancy=late_success. Every version of the view's table gets the
-- column (a rebuild copies the live version's shape), and the SQL view is defined again over
-- the live version so that it shows the column. No event before this migration carries a
-- discrepancy, so existing rows are right with NULL.
-- depends: 0010_issued_batch_codes

DO $$
DECLARE
    t text;
    live integer;
BEGIN
    FOR t IN
        SELECT tablename FROM pg_tables
        WHERE schemaname = current_schema() AND tablename ~ '^recharges_v[0-9]+$'
    LOOP
        EXECUTE format('ALTER TABLE %I ADD COLUMN IF NOT EXISTS discrepancy text', t);
        EXECUTE format(
            'CREATE INDEX IF NOT EXISTS %I ON %I (discrepancy, requested_at) '
            'WHERE discrepancy IS NOT NULL',
            t || '_discrepancy', t
        );
    END LOOP;
    SELECT live_version INTO live FROM projection_versions WHERE name = 'recharges';
    EXECUTE format('CREATE OR REPLACE VIEW recharges AS SELECT * FROM %I', 'recharges_v' || live);
END;
$$;
