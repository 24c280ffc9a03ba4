-- Garbage collections, running and done: what each was asked, how far it got, and its report,
-- so any replica answers for a run another one does, and a run cut short by a crash is resumed.
-- Expand only: a new table.
CREATE TABLE gc_runs (
    id               TEXT    PRIMARY KEY,
    host             TEXT    NOT NULL,
    dry_run          BOOLEAN NOT NULL,
    grace_seconds    BIGINT  NOT NULL,
    keep_untagged    BOOLEAN NOT NULL,
    scrub            BOOLEAN NOT NULL,
    verify           BOOLEAN NOT NULL,
    queued           BOOLEAN NOT NULL,
    -- running, succeeded, failed, cancelled or interrupted
    state            TEXT    NOT NULL,
    started_at       BIGINT  NOT NULL,
    ended_at         BIGINT,
    progress         TEXT    NOT NULL,
    report           TEXT,
    error            TEXT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    resumed_from     TEXT
);
CREATE INDEX gc_runs_by_start ON gc_runs (started_at);

-- Repositories whose content changed since a collection last looked at them (unix seconds: the
-- first change not yet looked at, and the last).
CREATE TABLE gc_queue (
    repository TEXT    COLLATE "C" PRIMARY KEY,
    queued_at  BIGINT  NOT NULL,
    touched_at BIGINT  NOT NULL
);
