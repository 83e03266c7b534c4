-- Signing v2: a (key, nonce) pair is accepted once within the window; the signature itself is
-- no longer the replay key (two identical requests with different nonces are two requests).
-- Rows older than twice the window are pruned by the authenticator.
-- depends: 0005_audit

DROP TABLE IF EXISTS used_signatures;

CREATE TABLE used_nonces (
    key_id   text NOT NULL,
    nonce    text NOT NULL,
    seen_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (key_id, nonce)
);
CREATE INDEX used_nonces_seen_at ON used_nonces (seen_at);
