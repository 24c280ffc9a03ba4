-- Who is fetching each missing proxied blob from its upstream right now, so that one fetch serves
-- every client (and, on a shared database, every replica). A row lives while its holder renews it
-- and is removed when the blob is stored; a failed fetch stays until `expires_at` with its
-- `failure`, so the clients that waited on it hear the same answer instead of each asking again.
CREATE TABLE proxy_fetches (
    digest     TEXT    PRIMARY KEY,
    holder     TEXT    NOT NULL,
    expires_at INTEGER NOT NULL, -- unix milliseconds
    failure    TEXT             -- NULL while the fetch runs
);
