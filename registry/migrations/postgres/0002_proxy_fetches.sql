-- Who is fetching each missing proxied blob from its upstream right now, across every replica:
-- one upstream fetch per blob for the whole registry. A row lives while its holder renews it and
-- is removed when the blob is stored; a failed fetch stays until `expires_at` with its `failure`,
-- so the replicas that waited on it hear the same answer instead of each asking again.
-- Expand only: replicas of schema version 1 never read it.
CREATE TABLE proxy_fetches (
    digest     TEXT   PRIMARY KEY,
    holder     TEXT   NOT NULL,
    expires_at BIGINT NOT NULL, -- unix milliseconds
    failure    TEXT            -- NULL while the fetch runs
);
