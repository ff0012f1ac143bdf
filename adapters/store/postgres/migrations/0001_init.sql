-- qase-sync schema, PostgreSQL. JSON columns are json (not jsonb): they
-- round-trip byte for byte and are never queried into.

-- Accepted webhook events; seq is the store sequence.
CREATE TABLE events (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dedup_key   text        NOT NULL UNIQUE,
    name        text        NOT NULL,
    project     text        NOT NULL,
    kind        text        NOT NULL,
    entity_id   bigint      NOT NULL,
    ts          timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    actor_id    bigint      NOT NULL DEFAULT 0,
    patch       json        NOT NULL, -- sync.Patch
    payload     bytea                 -- raw webhook body
);
CREATE INDEX events_entity ON events (project, kind, entity_id, seq);

-- One row per (event, route): the event's outcome on that route (ledger I1).
-- gen is the job generation the event was enqueued at.
CREATE TABLE deliveries (
    event_seq bigint NOT NULL REFERENCES events (seq) ON DELETE CASCADE,
    route     text   NOT NULL,
    project   text   NOT NULL,
    kind      text   NOT NULL,
    entity_id bigint NOT NULL,
    gen       bigint NOT NULL,
    status    text   NOT NULL, -- pending | applied | noop | dead
    PRIMARY KEY (event_seq, route)
);
CREATE INDEX deliveries_pending ON deliveries (route, project, kind, entity_id, gen) WHERE status = 'pending';

-- The work queue: one row per key.
CREATE TABLE jobs (
    route       text        NOT NULL,
    project     text        NOT NULL,
    kind        text        NOT NULL,
    entity_id   bigint      NOT NULL,
    gen         bigint      NOT NULL,
    attempts    integer     NOT NULL DEFAULT 0,
    last_error  text        NOT NULL DEFAULT '',
    verify      boolean     NOT NULL DEFAULT false,
    first_at    timestamptz NOT NULL,
    due_at      timestamptz NOT NULL,
    lease_owner text,
    lease_until timestamptz,
    PRIMARY KEY (route, project, kind, entity_id)
);
CREATE INDEX jobs_due ON jobs (due_at);
CREATE INDEX jobs_owner ON jobs (lease_owner) WHERE lease_owner IS NOT NULL;

CREATE TABLE snapshots (
    project   text   NOT NULL,
    kind      text   NOT NULL,
    entity_id bigint NOT NULL,
    last_seq  bigint NOT NULL,
    state     json   NOT NULL, -- sync.State
    PRIMARY KEY (project, kind, entity_id)
);

-- Key columns use the C collation so Links pages in bytewise key order,
-- the same order as the SQLite store and Go string comparison.
CREATE TABLE links (
    route         text COLLATE "C" NOT NULL,
    project       text COLLATE "C" NOT NULL,
    kind          text COLLATE "C" NOT NULL,
    entity_id     bigint      NOT NULL,
    state         text        NOT NULL,
    tracker       text        NOT NULL,
    marker_id     text        NOT NULL,
    marker_label  text        NOT NULL,
    issue_project text        NOT NULL,
    issue_id      text        NOT NULL,
    issue_key     text        NOT NULL,
    issue_url     text        NOT NULL,
    applied       json        NOT NULL, -- sync.Applied
    fingerprint   text        NOT NULL,
    intent_at     timestamptz NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    PRIMARY KEY (route, project, kind, entity_id)
);
CREATE INDEX links_issue ON links (tracker, issue_id, issue_project); -- Jira ids are site-wide, GitHub numbers per repo

CREATE TABLE ledger (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at        timestamptz NOT NULL,
    route     text        NOT NULL,
    project   text        NOT NULL,
    kind      text        NOT NULL,
    entity_id bigint      NOT NULL,
    gen       bigint      NOT NULL,
    outcome   text        NOT NULL,
    ops       json        NOT NULL, -- []string
    detail    text        NOT NULL,
    issue     text        NOT NULL,
    request   text        NOT NULL
);
CREATE INDEX ledger_key ON ledger (route, project, kind, entity_id, id);

CREATE TABLE dead_letters (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    route        text        NOT NULL,
    project      text        NOT NULL,
    kind         text        NOT NULL,
    entity_id    bigint      NOT NULL,
    reason       text        NOT NULL,
    attempts     integer     NOT NULL,
    last_request text        NOT NULL,
    created_at   timestamptz NOT NULL
);
