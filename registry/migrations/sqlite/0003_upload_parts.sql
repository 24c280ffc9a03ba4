-- How many chunks each upload session holds, so a PATCH can refuse one more past the limit
-- without counting rows. Sessions open during the upgrade start at 0: the limit is only lenient
-- for them.
ALTER TABLE uploads ADD COLUMN parts INTEGER NOT NULL DEFAULT 0;
