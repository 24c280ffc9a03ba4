-- Replicas keep blob lookups (is this blob in that repository, and its size) in memory beside
-- manifest lookups. Removing a link is announced like a tag or manifest change, by whatever code
-- removes it (an upload's delete, a collection, an eviction, an older Berth's too).
CREATE TRIGGER repository_blobs_announce AFTER DELETE ON repository_blobs
    FOR EACH ROW EXECUTE FUNCTION berth_announce_lookup_change();
