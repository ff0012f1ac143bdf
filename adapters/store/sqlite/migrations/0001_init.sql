-- qase-sync schema, SQLite. Times are INTEGER unix microseconds (UTC).

-- Accepted webhook events; seq is the store sequence (never reused).
CREATE TABLE events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    dedup_key   TEXT    NOT NULL UNIQUE,
    name        TEXT    NOT NULL,
    project     TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    entity_id   INTEGER NOT NULL,
    ts          INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    actor_id    INTEGER NOT NULL DEFAULT 0,
    patch       TEXT    NOT NULL, -- JSON sync.Patch
    payload     BLOB              -- raw webhook body
);
-- Integer-only: a (project, kind, entity_id, seq) index halved ingest
-- throughput; entity ids are selective enough, project and kind filter after.
CREATE INDEX events_entity ON events (entity_id, seq);

-- One row per (event, route): the event's outcome on that route (ledger I1).
-- gen is the job generation the event was enqueued at.
CREATE TABLE deliveries (
    event_seq INTEGER NOT NULL, -- events.seq (no FK: events are never deleted, and the per-row check was measurable)
    route     TEXT    NOT NULL,
    project   TEXT    NOT NULL,
    kind      TEXT    NOT NULL,
    entity_id INTEGER NOT NULL,
    gen       INTEGER NOT NULL,
    status    TEXT    NOT NULL, -- pending | applied | noop | dead
    PRIMARY KEY (event_seq, route)
) WITHOUT ROWID;
-- Integer-only (text columns in this index cost much of the insert); the
-- key's route, project and kind filter after the entity id.
CREATE INDEX deliveries_pending ON deliveries (entity_id, gen) WHERE status = 'pending';

-- The work queue: one row per key.
CREATE TABLE jobs (
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
    PRIMARY KEY (route, project, kind, entity_id)
);
CREATE INDEX jobs_due ON jobs (due_at);
CREATE INDEX jobs_owner ON jobs (lease_owner) WHERE lease_owner IS NOT NULL;

CREATE TABLE snapshots (
    project   TEXT    NOT NULL,
    kind      TEXT    NOT NULL,
    entity_id INTEGER NOT NULL,
    last_seq  INTEGER NOT NULL,
    state     TEXT    NOT NULL, -- JSON sync.State
    PRIMARY KEY (project, kind, entity_id)
) WITHOUT ROWID;

CREATE TABLE links (
    route         TEXT    NOT NULL,
    project       TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    entity_id     INTEGER NOT NULL,
    state         TEXT    NOT NULL,
    tracker       TEXT    NOT NULL,
    marker_id     TEXT    NOT NULL,
    marker_label  TEXT    NOT NULL,
    issue_project TEXT    NOT NULL,
    issue_id      TEXT    NOT NULL,
    issue_key     TEXT    NOT NULL,
    issue_url     TEXT    NOT NULL,
    applied       TEXT    NOT NULL, -- JSON sync.Applied
    fingerprint   TEXT    NOT NULL,
    intent_at     INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (route, project, kind, entity_id)
) WITHOUT ROWID;
CREATE INDEX links_issue ON links (tracker, issue_id, issue_project); -- Jira ids are site-wide, GitHub numbers per repo

CREATE TABLE ledger (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
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
    request   TEXT    NOT NULL
);
CREATE INDEX ledger_key ON ledger (route, project, kind, entity_id, id);

CREATE TABLE dead_letters (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    route        TEXT    NOT NULL,
    project      TEXT    NOT NULL,
    kind         TEXT    NOT NULL,
    entity_id    INTEGER NOT NULL,
    reason       TEXT    NOT NULL,
    attempts     INTEGER NOT NULL,
    last_request TEXT    NOT NULL,
    created_at   INTEGER NOT NULL
);
