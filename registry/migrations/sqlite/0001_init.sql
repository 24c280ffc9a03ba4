-- Berth metadata, schema version 1.
-- Types and constraints are kept to what PostgreSQL shares with SQLite, so the PostgreSQL backend
-- runs the same shape of schema. Timestamps are unix seconds.

CREATE TABLE repositories (
    id         INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);

-- Content known to be committed in storage, by digest (layers, configs and manifests alike).
CREATE TABLE blobs (
    digest     TEXT    PRIMARY KEY,
    size       INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);

-- A blob is readable in a repository once it was pushed or mounted there.
CREATE TABLE repository_blobs (
    repository_id INTEGER NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    digest        TEXT    NOT NULL REFERENCES blobs (digest),
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (repository_id, digest)
);
CREATE INDEX repository_blobs_by_digest ON repository_blobs (digest);

CREATE TABLE manifests (
    repository_id INTEGER NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    digest        TEXT    NOT NULL REFERENCES blobs (digest),
    media_type    TEXT    NOT NULL,
    size          INTEGER NOT NULL,
    artifact_type TEXT,
    subject       TEXT,
    annotations   TEXT,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (repository_id, digest)
);
CREATE INDEX manifests_by_subject ON manifests (repository_id, subject) WHERE subject IS NOT NULL;

-- Edges from a manifest to what it needs: its config and layers ('blob') or, for an index, its
-- child manifests ('manifest'). Garbage collection marks from these.
CREATE TABLE manifest_references (
    repository_id   INTEGER NOT NULL,
    manifest_digest TEXT    NOT NULL,
    child_digest    TEXT    NOT NULL,
    kind            TEXT    NOT NULL CHECK (kind IN ('blob', 'manifest')),
    PRIMARY KEY (repository_id, manifest_digest, kind, child_digest),
    FOREIGN KEY (repository_id, manifest_digest)
        REFERENCES manifests (repository_id, digest) ON DELETE CASCADE
);
CREATE INDEX manifest_references_by_child ON manifest_references (child_digest);

CREATE TABLE tags (
    repository_id INTEGER NOT NULL,
    name          TEXT    NOT NULL,
    digest        TEXT    NOT NULL,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (repository_id, name),
    FOREIGN KEY (repository_id, digest)
        REFERENCES manifests (repository_id, digest) ON DELETE CASCADE
);

-- Upload sessions survive restarts: what was received so far is recorded part by part.
CREATE TABLE uploads (
    id         TEXT    PRIMARY KEY,
    repository TEXT    NOT NULL,
    received   INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX uploads_by_updated ON uploads (updated_at);

-- Each chunk is its own storage object, named by its start offset and a nonce (so two racing
-- requests for the same offset never write the same object; the loser removes its own).
CREATE TABLE upload_parts (
    upload_id TEXT    NOT NULL REFERENCES uploads (id) ON DELETE CASCADE,
    start     INTEGER NOT NULL,
    size      INTEGER NOT NULL,
    nonce     TEXT    NOT NULL,
    PRIMARY KEY (upload_id, start)
);
