-- Garbage collections, running and done: what each was asked, how far it got, and its report,
-- so any replica answers for a run another one does, and a run cut short by a crash is resumed.
CREATE TABLE gc_runs (
    id               TEXT    PRIMARY KEY,
    host             TEXT    NOT NULL,
    dry_run          INTEGER NOT NULL,
    grace_seconds    INTEGER NOT NULL,
    keep_untagged    INTEGER NOT NULL,
    scrub            INTEGER NOT NULL,
    verify           INTEGER NOT NULL,
    queued           INTEGER NOT NULL,
    -- running, succeeded, failed, cancelled or interrupted
    state            TEXT    NOT NULL,
    started_at       INTEGER NOT NULL,
    ended_at         INTEGER,
    progress         TEXT    NOT NULL,
    report           TEXT,
    error            TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    resumed_from     TEXT
);
CREATE INDEX gc_runs_by_start ON gc_runs (started_at);

-- Repositories whose content changed since a collection last looked at them (unix seconds: the
-- first change not yet looked at, and the last).
CREATE TABLE gc_queue (
    repository TEXT    PRIMARY KEY,
    queued_at  INTEGER NOT NULL,
    touched_at INTEGER NOT NULL
);
