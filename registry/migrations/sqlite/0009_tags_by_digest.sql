-- Which tags name a manifest: garbage collection asks for every manifest it would remove, and
-- deleting a manifest removes its tags (the foreign key's cascade looks them up this way).
CREATE INDEX tags_by_digest ON tags (repository_id, digest);
