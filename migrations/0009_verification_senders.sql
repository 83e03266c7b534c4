-- Verification an attacker cannot use against a user (issue 10, item 1). A code gets an id and
-- the random nonce its six digits derive from (HMAC under a key derived from LEDGER_SECRET_KEY),
-- so that asking again re-sends the live code instead of replacing it; `attempts` becomes the
-- code's wrong tries from everywhere (a bound against brute force), and each sender's own wrong
-- tries on a code are counted apart, so that guessing from elsewhere locks only the guesser.
-- depends: 0008_directory

ALTER TABLE verification_codes ADD COLUMN id uuid NOT NULL DEFAULT gen_random_uuid();
ALTER TABLE verification_codes ADD COLUMN nonce bytea;
CREATE UNIQUE INDEX verification_codes_id ON verification_codes (id);

CREATE TABLE verification_attempts (
    code_id  uuid NOT NULL,
    sender   text NOT NULL,
    wrong    integer NOT NULL,
    PRIMARY KEY (code_id, sender)
);
