-- Duplicates are found among the events of one entity: dedup keys are
-- content-derived and name their entity, so a key never recurs for another.
-- One index (entity_id, dedup_key) now serves both the duplicate check and
-- the per-entity reads. A table-wide UNIQUE on the random-looking key put
-- each new event on a different index page: one more page written per
-- event, which was about a third of ingest's store cost.
--
-- seq drops AUTOINCREMENT (which writes sqlite_sequence on every insert):
-- events are never deleted, so the largest seq stays and a plain INTEGER
-- PRIMARY KEY still never hands out a number twice.
CREATE TABLE events_new (
    seq         INTEGER PRIMARY KEY,
    dedup_key   TEXT    NOT NULL,
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
INSERT INTO events_new (seq, dedup_key, name, project, kind, entity_id, ts, received_at, actor_id, patch, payload)
    SELECT seq, dedup_key, name, project, kind, entity_id, ts, received_at, actor_id, patch, payload FROM events;
DROP TABLE events;
ALTER TABLE events_new RENAME TO events;
CREATE UNIQUE INDEX events_entity_dedup ON events (entity_id, dedup_key);
