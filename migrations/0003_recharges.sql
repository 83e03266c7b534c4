-- Recharges: the saga's read model (lists, review queue, due steps) and request bookkeeping.
-- depends: 0001_foundation

CREATE TABLE recharges_v1 (
    id            uuid PRIMARY KEY,
    channel_id    uuid NOT NULL,
    code_id       uuid NOT NULL,
    product_id    uuid NOT NULL,
    account       text NOT NULL,
    status        text NOT NULL,
    step_id       text,
    step_due_at   timestamptz,
    deadline      timestamptz NOT NULL,
    failure       text,
    requested_at  timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);
CREATE INDEX recharges_v1_channel ON recharges_v1 (channel_id, requested_at DESC);
CREATE INDEX recharges_v1_due ON recharges_v1 (step_due_at) WHERE status = 'pending';
CREATE INDEX recharges_v1_status ON recharges_v1 (status, requested_at);
INSERT INTO projection_versions (name, live_version) VALUES ('recharges', 1);

CREATE TABLE verification_codes (
    channel_id  uuid NOT NULL,
    account     text NOT NULL,
    code_hash   bytea NOT NULL,
    sent_at     timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    attempts    integer NOT NULL DEFAULT 0,
    used_at     timestamptz,
    PRIMARY KEY (channel_id, account, sent_at)
);

CREATE TABLE rate_counters (
    scope         text NOT NULL,
    window_start  timestamptz NOT NULL,
    hits          integer NOT NULL,
    PRIMARY KEY (scope, window_start)
);

CREATE TABLE sandbox_sms_outbox (
    id       bigserial PRIMARY KEY,
    account  text NOT NULL,
    message  text NOT NULL,
    code     text NOT NULL,
    sent_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sandbox_sms_outbox_account ON sandbox_sms_outbox (account, id DESC);

CREATE TABLE codes_v1 (
    code_id     uuid PRIMARY KEY,
    batch_id    uuid NOT NULL,
    channel_id  uuid NOT NULL,
    product_id  uuid NOT NULL,
    status      text NOT NULL,
    active      boolean NOT NULL,
    expires_at  timestamptz,
    issued_at   timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX codes_v1_batch ON codes_v1 (batch_id);
CREATE INDEX codes_v1_due ON codes_v1 (expires_at) WHERE status = 'issued';
INSERT INTO projection_versions (name, live_version) VALUES ('codes', 1);
