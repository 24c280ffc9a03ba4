-- The schema each replica's code knows, beside its lease: a replica contracts the schema (rules
-- older code out) only once no lease of an older replica is alive, or ended within the last
-- minute. Older code renews its lease without this column, so its rows keep NULL: older.
ALTER TABLE lookup_replicas ADD COLUMN schema INTEGER;
