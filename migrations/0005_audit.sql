-- Audit and operations: the journal view, dead letters, and stable names for readers.
-- Readers query the SQL views below; a rebuild re-points them at a new version in one step.
-- depends: 0003_recharges

CREATE TABLE journal_v1 (
    application         text NOT NULL,
    notification_id     bigint NOT NULL,
    originator_id       uuid NOT NULL,
    originator_version  bigint NOT NULL,
    topic               text NOT NULL,
    recorded_at         timestamptz NOT NULL,
    postings            jsonb NOT NULL,
    holds               jsonb NOT NULL,
    PRIMARY KEY (application, notification_id)
);

CREATE TABLE journal_lines_v1 (
    application      text NOT NULL,
    notification_id  bigint NOT NULL,
    line             integer NOT NULL,
    account          text NOT NULL,
    asset            text NOT NULL,
    amount           bigint NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('posted', 'pending')),
    recorded_at      timestamptz NOT NULL,
    PRIMARY KEY (application, notification_id, line)
);
CREATE INDEX journal_lines_v1_account ON journal_lines_v1 (account, recorded_at);
CREATE INDEX journal_lines_v1_recorded ON journal_lines_v1 (recorded_at);
INSERT INTO projection_versions (name, live_version) VALUES ('journal', 1);

CREATE TABLE dead_letters (
    id               bigserial PRIMARY KEY,
    view             text NOT NULL,
    version          integer NOT NULL,
    application      text NOT NULL,
    notification_id  bigint NOT NULL,
    topic            text NOT NULL,
    originator_id    text NOT NULL,
    error            text NOT NULL,
    at               timestamptz NOT NULL DEFAULT now()
);

CREATE VIEW balances AS SELECT * FROM balances_v1;
CREATE VIEW recharges AS SELECT * FROM recharges_v1;
CREATE VIEW codes AS SELECT * FROM codes_v1;
CREATE VIEW journal AS SELECT * FROM journal_v1;
CREATE VIEW journal_lines AS SELECT * FROM journal_lines_v1;
