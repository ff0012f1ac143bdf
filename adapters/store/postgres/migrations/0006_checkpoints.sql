-- How far the incremental reconciler has read: one time per name (a Qase
-- project and kind it searches, or the last full sweep).
CREATE TABLE reconcile_checkpoints (
    name text        PRIMARY KEY,
    at   timestamptz NOT NULL
);
