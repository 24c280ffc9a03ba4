-- The UI's pages of a repository's tags, read in order from an index instead of sorting every
-- tag of the repository on each view: last pushed first, and by their manifests' last pull
-- (SQLite sorts NULL first, so a descending walk leaves never-pulled manifests last).
CREATE INDEX tags_by_pushed ON tags (repository_id, updated_at DESC, name);
CREATE INDEX manifests_by_pulled ON manifests (repository_id, pulled_at);
