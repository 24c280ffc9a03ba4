-- Work that one replica at a time does (a garbage collection): held by `holder` until
-- `expires_at` (unix milliseconds), renewed while the work runs, taken over once it lapses.
CREATE TABLE leases (
    name       TEXT    PRIMARY KEY,
    holder     TEXT    NOT NULL,
    expires_at BIGINT  NOT NULL
);
-- Expand only: a new table.
