-- Events: each change a client made (a manifest pushed, a tag or manifest deleted, a referrer
-- attached), by whom, written in the same transaction as the change. They are the audit log of
-- changes and the outbox of webhooks: `deliveries` holds one row per endpoint that wants an event,
-- until it is delivered or given up. Times are unix milliseconds.
CREATE TABLE events (
    seq           INTEGER PRIMARY KEY,
    id            TEXT    NOT NULL UNIQUE,
    at            INTEGER NOT NULL,
    kind          TEXT    NOT NULL,
    repository    TEXT    NOT NULL,
    digest        TEXT,
    tag           TEXT,
    media_type    TEXT,
    artifact_type TEXT,
    size          INTEGER,
    subject       TEXT,
    actor         TEXT    NOT NULL,
    address       TEXT    NOT NULL,
    request_id    TEXT    NOT NULL
);
CREATE INDEX events_by_at ON events (at);
CREATE INDEX events_by_repository ON events (repository, seq);
CREATE INDEX events_by_actor ON events (actor, seq);

CREATE TABLE deliveries (
    endpoint      TEXT    NOT NULL,
    event_seq     INTEGER NOT NULL REFERENCES events (seq) ON DELETE CASCADE,
    -- pending, delivered or dead (given up after the endpoint's attempts)
    state         TEXT    NOT NULL DEFAULT 'pending',
    attempts      INTEGER NOT NULL DEFAULT 0,
    -- not sent before (a replica sending it holds it till then)
    next_at       INTEGER NOT NULL,
    last_error    TEXT,
    settled_at    INTEGER,
    PRIMARY KEY (endpoint, event_seq)
);
CREATE INDEX deliveries_due ON deliveries (endpoint, next_at) WHERE state = 'pending';
CREATE INDEX deliveries_dead ON deliveries (endpoint) WHERE state = 'dead';
CREATE INDEX deliveries_by_event ON deliveries (event_seq);
