-- The audit log: every refusal and every decision that is not an event already.
-- Append-only: nothing updates a line, and only the pruner deletes, by age (the retention
-- setting). The owner cannot be denied UPDATE or DELETE by a REVOKE, so triggers refuse them:
-- an UPDATE always, a DELETE of a line younger than a day, a TRUNCATE always.
-- Accounts are stored masked; codes, verification codes, tokens and secrets never are.
-- depends: 0005_audit

CREATE TABLE audit_log (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    kind        text NOT NULL,
    code        text,
    principal   text,
    channel_id  uuid,
    account     text,
    address     text,
    request_id  text,
    method      text,
    path        text,
    detail      text NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_at ON audit_log (at, id);
CREATE INDEX audit_log_kind ON audit_log (kind, id);
CREATE INDEX audit_log_code ON audit_log (code, id);
CREATE INDEX audit_log_channel ON audit_log (channel_id, id) WHERE channel_id IS NOT NULL;

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.at < now() - interval '1 day' THEN
            RETURN OLD;
        END IF;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP;
END;
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_recent_delete BEFORE DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
