-- Request budgets shared by all replicas, one row per tracker credential
-- (or Qase workspace token), keyed by a digest of the credential, never
-- the secret. tat is the budget's theoretical arrival time in epoch
-- seconds of the database clock (GCRA): a token is free while
-- tat - now < burst / rate. granted is the last take's answer.
CREATE TABLE rate_budgets (
    key     text             PRIMARY KEY,
    tat     double precision NOT NULL,
    granted integer          NOT NULL DEFAULT 0
);
