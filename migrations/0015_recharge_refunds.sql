-- Recharges: refunds (issue 13 item 2). A refunded recharge has status `refunded` (listed with
-- GET /v1/recharges?status=refunded); its latest refund's number and review status are shown
-- beside it, and the refund's current step (polling the platform's review) is kept so the
-- sweeper re-sends one whose wake-up was lost. Every version of the view's table gets the
-- columns (a rebuild copies the live version's shape) and the SQL view is defined again over
-- the live version. No event before this migration is a refund's, so NULL is right for
-- existing rows.
-- depends: 0014_recharge_discrepancies

DO $$
DECLARE
    t text;
    live integer;
BEGIN
    FOR t IN
        SELECT tablename FROM pg_tables
        WHERE schemaname = current_schema() AND tablename ~ '^recharges_v[0-9]+$'
    LOOP
        EXECUTE format('ALTER TABLE %I ADD COLUMN IF NOT EXISTS refund_no text', t);
        EXECUTE format('ALTER TABLE %I ADD COLUMN IF NOT EXISTS refund_status text', t);
        EXECUTE format('ALTER TABLE %I ADD COLUMN IF NOT EXISTS refund_step_id text', t);
        EXECUTE format('ALTER TABLE %I ADD COLUMN IF NOT EXISTS refund_step_due_at timestamptz', t);
        EXECUTE format(
            'CREATE INDEX IF NOT EXISTS %I ON %I (refund_step_due_at) '
            'WHERE refund_step_id IS NOT NULL',
            t || '_refund_due', t
        );
    END LOOP;
    SELECT live_version INTO live FROM projection_versions WHERE name = 'recharges';
    EXECUTE format('CREATE OR REPLACE VIEW recharges AS SELECT * FROM %I', 'recharges_v' || live);
END;
$$;
