-- The directory view (channels, platforms, products, code batches, withdrawals for the
-- operator's lists) and the sealed codes of inactive batches, kept for one export.
-- depends: 0005_audit

CREATE TABLE directory_channels_v1 (
    id             uuid PRIMARY KEY,
    name           text NOT NULL,
    parent_id      uuid,
    ancestry       uuid[] NOT NULL,
    suspended      boolean NOT NULL,
    registered_at  timestamptz NOT NULL
);
CREATE INDEX directory_channels_v1_parent ON directory_channels_v1 (parent_id);
CREATE INDEX directory_channels_v1_ancestry ON directory_channels_v1 USING gin (ancestry);

CREATE TABLE directory_platforms_v1 (
    id             uuid PRIMARY KEY,
    name           text NOT NULL,
    gateway_url    text NOT NULL,
    registered_at  timestamptz NOT NULL
);

CREATE TABLE directory_products_v1 (
    id              uuid PRIMARY KEY,
    platform_id     uuid NOT NULL,
    name            text NOT NULL,
    duration_days   integer NOT NULL,
    currency        text NOT NULL,
    face_value      bigint NOT NULL,
    wholesale_cost  bigint NOT NULL,
    registered_at   timestamptz NOT NULL
);
CREATE INDEX directory_products_v1_platform ON directory_products_v1 (platform_id);

CREATE TABLE directory_batches_v1 (
    id          uuid PRIMARY KEY,
    channel_id  uuid NOT NULL,
    product_id  uuid NOT NULL,
    quantity    integer NOT NULL,
    inactive    boolean NOT NULL,
    expires_at  timestamptz,
    issued_at   timestamptz NOT NULL
);
CREATE INDEX directory_batches_v1_channel ON directory_batches_v1 (channel_id, id);

CREATE TABLE directory_withdrawals_v1 (
    id            uuid PRIMARY KEY,
    member_id     uuid NOT NULL,
    currency      text NOT NULL,
    amount        bigint NOT NULL,
    status        text NOT NULL,
    reference     text,
    failure       text,
    requested_at  timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);
CREATE INDEX directory_withdrawals_v1_pending
    ON directory_withdrawals_v1 (requested_at) WHERE status = 'pending';

INSERT INTO projection_versions (name, live_version) VALUES ('directory', 1);
CREATE VIEW directory_channels AS SELECT * FROM directory_channels_v1;
CREATE VIEW directory_platforms AS SELECT * FROM directory_platforms_v1;
CREATE VIEW directory_products AS SELECT * FROM directory_products_v1;
CREATE VIEW directory_batches AS SELECT * FROM directory_batches_v1;
CREATE VIEW directory_withdrawals AS SELECT * FROM directory_withdrawals_v1;

CREATE TABLE sealed_batch_codes (
    batch_id     uuid PRIMARY KEY,
    channel_id   uuid NOT NULL,
    sealed       bytea,
    sealed_at    timestamptz NOT NULL DEFAULT now(),
    exported_at  timestamptz
);

-- The sandbox's payouts, kept in the database so that a payout made by a process that died
-- before recording its answer is found again (and not made twice) by the retry.
CREATE TABLE sandbox_payouts (
    payout_id  uuid PRIMARY KEY,
    payee_id   uuid NOT NULL,
    currency   text NOT NULL,
    amount     bigint NOT NULL,
    paid       boolean NOT NULL,
    reference  text,
    reason     text,
    at         timestamptz NOT NULL DEFAULT now()
);
