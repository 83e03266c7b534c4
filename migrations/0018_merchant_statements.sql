-- Merchant settlement (issue 13, item 5): the merchant statements view. Every line that moved
-- a merchant's payable (a consumption's merchant part, a refund's reversal of it), marked with
-- the settlement that collected it, and one row per merchant settlement (lists, the sweeper).
-- depends: 0014_recharge_discrepancies

CREATE TABLE merchant_statement_lines_v1 (
    id              uuid PRIMARY KEY,
    merchant_id     uuid NOT NULL,
    kind            text NOT NULL,
    consumption_id  uuid NOT NULL,
    currency        text NOT NULL,
    amount          bigint NOT NULL,
    recorded_at     timestamptz NOT NULL,
    settlement_id   uuid
);
CREATE INDEX merchant_statement_lines_v1_unsettled
    ON merchant_statement_lines_v1 (merchant_id, recorded_at) WHERE settlement_id IS NULL;
CREATE INDEX merchant_statement_lines_v1_settlement
    ON merchant_statement_lines_v1 (settlement_id);

CREATE TABLE merchant_settlements_v1 (
    id               uuid PRIMARY KEY,
    merchant_id      uuid NOT NULL,
    period           text NOT NULL,
    status           text NOT NULL,
    cutoff           timestamptz NOT NULL,
    lines            integer NOT NULL,
    totals           jsonb NOT NULL,
    paid_currencies  text[] NOT NULL DEFAULT '{}',
    failure          text,
    opened_at        timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL
);
CREATE INDEX merchant_settlements_v1_merchant ON merchant_settlements_v1 (merchant_id, id);
CREATE INDEX merchant_settlements_v1_unfinished
    ON merchant_settlements_v1 (updated_at) WHERE status IN ('collecting', 'paying');

INSERT INTO projection_versions (name, live_version) VALUES ('merchant_statements', 1);
CREATE VIEW merchant_statement_lines AS SELECT * FROM merchant_statement_lines_v1;
CREATE VIEW merchant_settlements AS SELECT * FROM merchant_settlements_v1;
