-- Fewer pages written per job. A create job's outcome wrote 14.3 pages to
-- the WAL (two write calls each); these three changes make it 11.3, and a
-- lease 1 instead of 2 (TestJobStepsWriteFewPages, jobs one at a time):
--
-- * jobs is WITHOUT ROWID: its primary key is the table, not a second
--   b-tree beside it, so an insert or delete changes one b-tree fewer.
-- * jobs_owner goes: it served only Release at shutdown (a scan of the
--   queue instead), and cost a page at every lease and every outcome.
-- * ledger.id drops AUTOINCREMENT, which wrote sqlite_sequence on every
--   entry. Ids only order a key's entries; a plain INTEGER PRIMARY KEY
--   hands out one more than the largest kept, so a new entry still sorts
--   after every entry there is.
CREATE TABLE jobs_new (
    route       TEXT    NOT NULL,
    project     TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    entity_id   INTEGER NOT NULL,
    gen         INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT    NOT NULL DEFAULT '',
    verify      INTEGER NOT NULL DEFAULT 0,
    first_at    INTEGER NOT NULL,
    due_at      INTEGER NOT NULL,
    lease_owner TEXT,
    lease_until INTEGER,
    lease_token TEXT,
    PRIMARY KEY (route, project, kind, entity_id)
) WITHOUT ROWID;
INSERT INTO jobs_new (route, project, kind, entity_id, gen, attempts, last_error, verify, first_at, due_at, lease_owner, lease_until, lease_token)
    SELECT route, project, kind, entity_id, gen, attempts, last_error, verify, first_at, due_at, lease_owner, lease_until, lease_token FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;
CREATE INDEX jobs_due ON jobs (due_at);
CREATE INDEX jobs_project_due ON jobs (project, due_at);

CREATE TABLE ledger_new (
    id        INTEGER PRIMARY KEY,
    at        INTEGER NOT NULL,
    route     TEXT    NOT NULL,
    project   TEXT    NOT NULL,
    kind      TEXT    NOT NULL,
    entity_id INTEGER NOT NULL,
    gen       INTEGER NOT NULL,
    outcome   TEXT    NOT NULL,
    ops       TEXT    NOT NULL, -- JSON []string
    detail    TEXT    NOT NULL,
    issue     TEXT    NOT NULL,
    request   TEXT    NOT NULL,
    drift     TEXT    NOT NULL DEFAULT '[]'
);
INSERT INTO ledger_new (id, at, route, project, kind, entity_id, gen, outcome, ops, detail, issue, request, drift)
    SELECT id, at, route, project, kind, entity_id, gen, outcome, ops, detail, issue, request, drift FROM ledger;
DROP TABLE ledger;
ALTER TABLE ledger_new RENAME TO ledger;
CREATE INDEX ledger_key ON ledger (route, project, kind, entity_id, id);
