-- Named leases (one reconcile pass per tick across processes on one file)
-- and the record of reconcile passes.
CREATE TABLE leases (
    name  TEXT    PRIMARY KEY,
    owner TEXT    NOT NULL,
    until INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE reconcile_passes (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at INTEGER NOT NULL,
    owner      TEXT    NOT NULL,
    checked    INTEGER NOT NULL,
    enqueued   INTEGER NOT NULL
);
CREATE INDEX reconcile_passes_started ON reconcile_passes (started_at);
