-- Read models and request bookkeeping of the foundation.
-- depends:

CREATE TABLE balances_v1 (
    account     text   NOT NULL,
    asset       text   NOT NULL,
    posted      bigint NOT NULL DEFAULT 0,
    pending     bigint NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (account, asset)
);
CREATE INDEX balances_v1_account_prefix ON balances_v1 (account text_pattern_ops);

CREATE TABLE projection_versions (
    name          text PRIMARY KEY,
    live_version  integer NOT NULL
);
INSERT INTO projection_versions (name, live_version) VALUES ('balances', 1);

CREATE TABLE api_tokens (
    id          text PRIMARY KEY,
    token_hash  bytea NOT NULL UNIQUE,
    role        text NOT NULL CHECK (role IN ('operator', 'finance', 'member')),
    subject     text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE idempotency_keys (
    principal     text NOT NULL,
    key           text NOT NULL,
    request_hash  bytea NOT NULL,
    state         text NOT NULL CHECK (state IN ('in_flight', 'done')),
    status        integer,
    body          bytea,
    sealed        boolean NOT NULL DEFAULT false,
    started_at    timestamptz NOT NULL DEFAULT now(),
    completed_at  timestamptz,
    PRIMARY KEY (principal, key)
);

CREATE TABLE used_signatures (
    signature  text PRIMARY KEY,
    seen_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX used_signatures_seen_at ON used_signatures (seen_at);
