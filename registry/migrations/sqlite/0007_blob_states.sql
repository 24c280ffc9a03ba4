-- Blobs on their way out. A `live` blob is served. A `deleting` one is used by nothing (no
-- repository links it, no manifest is made of it): it answers as absent while readers that were
-- handed it finish, and any write of the same digest makes it `live` again. A `purging` one is
-- having its object deleted: a writer of the same digest waits. A `gone` one had its object
-- deleted (the row stays a day, so a writer that wrote before the delete and records after it
-- finds out). An object is only ever deleted while its row is `purging`, so a `live` row always
-- has its object.
ALTER TABLE blobs ADD COLUMN state TEXT NOT NULL DEFAULT 'live'
    CHECK (state IN ('live', 'deleting', 'purging', 'gone'));
ALTER TABLE blobs ADD COLUMN state_at INTEGER; -- unix milliseconds, when `state` last changed
CREATE INDEX blobs_leaving ON blobs (state_at) WHERE state <> 'live';
