-- Request budgets shared by all replicas, one row per tracker credential
-- (or Qase API token), keyed by a digest of the credential, never the
-- secret. tat is the budget's theoretical arrival time in epoch seconds of
-- the database clock (GCRA): the budget is spent up to then, and a token
-- may be used once tat - now < burst / rate.
CREATE TABLE rate_budgets (
    key text             PRIMARY KEY,
    tat double precision NOT NULL
);
