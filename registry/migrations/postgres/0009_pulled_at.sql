-- When each manifest was last pulled (unix seconds), written behind pulls in batches: retention's
-- most_recently_pulled and pulled_within read it. Empty until the first pull.
-- Expand only: a nullable column older code never reads.
ALTER TABLE manifests ADD COLUMN pulled_at BIGINT;
