-- Where a blob's object is, when not at its digest's key (`blobs/<alg>/<hh>/<hex>`): on object
-- stores, a blob pushed in pieces before its digest was known (docker's `PATCH`, then `PUT
-- ?digest=`) stays where its upload wrote it (its session's multipart upload, or its one chunk),
-- so it is never copied. Set when the row is inserted (or brought back from `gone`) and never
-- changed while the blob is live; NULL: at its digest's key.
--
-- Older code would read such a blob at its digest's key and find nothing, so Berth writes
-- locations only on a database no older code uses: one this schema created (its migrations then
-- refuse older code), or one whose schema was contracted since (a later migration).
ALTER TABLE blobs ADD COLUMN location TEXT COLLATE "C";
CREATE INDEX blobs_located ON blobs (location) WHERE location IS NOT NULL;
