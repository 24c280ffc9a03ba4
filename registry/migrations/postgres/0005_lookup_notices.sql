-- Replicas keep manifest lookups in memory (see meta/postgres/lookups.rs). Every change to a tag
-- or a manifest is announced on the channel `berth_lookups` as "<transaction id> <repository>",
-- delivered to every listening replica when the change commits. The trigger announces changes
-- made by any code, an older Berth's during a rolling upgrade included.
CREATE FUNCTION berth_announce_lookup_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    repo TEXT;
BEGIN
    IF TG_OP = 'DELETE' THEN
        SELECT name INTO repo FROM repositories WHERE id = OLD.repository_id;
    ELSE
        SELECT name INTO repo FROM repositories WHERE id = NEW.repository_id;
    END IF;
    -- A repository deleted with its rows has no name left: "" tells replicas to forget all.
    PERFORM pg_notify('berth_lookups', pg_current_xact_id()::text || ' ' || coalesce(repo, ''));
    RETURN NULL;
END
$$;

CREATE TRIGGER tags_announce AFTER INSERT OR UPDATE OR DELETE ON tags
    FOR EACH ROW EXECUTE FUNCTION berth_announce_lookup_change();
CREATE TRIGGER manifests_announce AFTER INSERT OR UPDATE OR DELETE ON manifests
    FOR EACH ROW EXECUTE FUNCTION berth_announce_lookup_change();

-- The replicas whose kept lookups a writer must hear from before it acknowledges a change:
-- each renews its row every second while its listening connection works. `listening_since` is
-- the snapshot taken right after that connection's LISTEN: a transaction visible in it committed
-- before the replica listened, and the replica cleared everything it kept since then.
CREATE TABLE lookup_replicas (
    id              TEXT PRIMARY KEY,
    alive_until     BIGINT NOT NULL,
    listening_since TEXT NOT NULL
);
