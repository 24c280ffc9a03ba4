-- What needs a manifest or blob within its repository (GC's removal checks ask this for every
-- candidate). Without statistics SQLite answered it from the primary key's repository prefix, a
-- scan of the repository's every reference per check; this index answers it directly, and
-- replaces the one on the digest alone, which no query uses.
DROP INDEX manifest_references_by_child;
CREATE INDEX manifest_references_by_child ON manifest_references (repository_id, child_digest, kind);
