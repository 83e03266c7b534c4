-- The senders known to an account (issue 11, item 2): a sender that used a verification code
-- to place a recharge for the account is known to it for a day, and its sends pass the
-- account's ceiling (ledger/recharges/placement.py). It was a rate counter hit apart, one more
-- statement per acceptance; it is now recorded by the statement that marks the codes used
-- (adapters/verification.py), one row per (account, sender), and pruned by the sweeper.
-- depends: 0019_rate_limit_checks

CREATE TABLE known_senders (
    account   text NOT NULL,
    sender    text NOT NULL,
    known_at  timestamptz NOT NULL,
    PRIMARY KEY (account, sender)
);
CREATE INDEX known_senders_known_at ON known_senders (known_at);

-- the senders the counters knew (a hit in a day-long window kept the sender known until the
-- end of the next window): known from the end of their window, as late as the counter knew them
INSERT INTO known_senders (account, sender, known_at)
SELECT split_part(scope, ':', 2),
       substr(scope, length('known-sender:' || split_part(scope, ':', 2) || ':') + 1),
       least(max(window_start) + interval '1 day', now())
  FROM rate_counters
 WHERE scope LIKE 'known-sender:%' AND window_start > now() - interval '2 days'
 GROUP BY 1, 2;
DELETE FROM rate_counters WHERE scope LIKE 'known-sender:%';
