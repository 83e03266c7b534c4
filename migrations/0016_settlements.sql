-- Settlements with the platforms (issue 13 items 3-4): the settlements view, one row per
-- settlement saga (lists per platform and period, the sweeper's due settlements) and one per
-- discrepancy case (the operators' queue). The sagas, their line chunks and the cases are
-- events of the `settlements` application, whose tables eventsourcing creates.
-- depends: 0014_recharge_discrepancies

CREATE TABLE settlements_v1 (
    id               uuid PRIMARY KEY,
    platform_id      uuid NOT NULL,
    period           date NOT NULL,
    status           text NOT NULL,
    due_at           timestamptz,
    consistent       boolean NOT NULL DEFAULT true,
    open_cases       integer NOT NULL DEFAULT 0,
    payment_fixed    boolean NOT NULL DEFAULT false,
    adjustments_due  integer NOT NULL DEFAULT 0,
    opened_at        timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL
);
CREATE INDEX settlements_v1_period ON settlements_v1 (period DESC, id DESC);
CREATE INDEX settlements_v1_platform ON settlements_v1 (platform_id, period DESC);
CREATE INDEX settlements_v1_due ON settlements_v1 (due_at) WHERE status <> 'paid';

CREATE TABLE settlement_cases_v1 (
    id             uuid PRIMARY KEY,
    settlement_id  uuid,
    platform_id    uuid NOT NULL,
    kind           text NOT NULL,
    status         text NOT NULL,
    order_no       text NOT NULL,
    opened_at      timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);
CREATE INDEX settlement_cases_v1_queue ON settlement_cases_v1 (status, kind, opened_at, id);
CREATE INDEX settlement_cases_v1_settlement ON settlement_cases_v1 (settlement_id);

INSERT INTO projection_versions (name, live_version) VALUES ('settlements', 1);
CREATE VIEW settlements AS SELECT * FROM settlements_v1;
CREATE VIEW settlement_cases AS SELECT * FROM settlement_cases_v1;
