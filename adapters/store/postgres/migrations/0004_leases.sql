-- Named leases (one reconcile pass per tick across replicas) and the
-- record of reconcile passes.
CREATE TABLE leases (
    name  text        PRIMARY KEY,
    owner text        NOT NULL,
    until timestamptz NOT NULL
);

CREATE TABLE reconcile_passes (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at timestamptz NOT NULL,
    owner      text        NOT NULL,
    checked    integer     NOT NULL,
    enqueued   integer     NOT NULL
);
CREATE INDEX reconcile_passes_started ON reconcile_passes (started_at);
