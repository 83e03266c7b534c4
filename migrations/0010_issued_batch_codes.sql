-- A batch's clear codes, sealed (AES-GCM under a key derived from LEDGER_SECRET_KEY, bound to
-- the batch and its channel) from before the batch is saved until its answer is stored: a
-- retry whose first answer was lost in a crash shows the codes that were saved. One row per
-- attempt; the attempt whose codes match the saved batch is the one shown.
-- depends: 0008_directory

CREATE TABLE issued_batch_codes (
    id          bigserial PRIMARY KEY,
    batch_id    uuid NOT NULL,
    channel_id  uuid NOT NULL,
    sealed      bytea NOT NULL,
    sealed_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX issued_batch_codes_batch ON issued_batch_codes (batch_id);
