-- Multipart uploads that requests write straight into object storage, recorded by id while they
-- run (a lease their writer renews), so one a crash leaves behind is aborted by its id.
CREATE TABLE multipart_uploads (
    key        TEXT    NOT NULL,
    upload_id  TEXT    NOT NULL,
    expires_at INTEGER NOT NULL, -- unix milliseconds
    PRIMARY KEY (key, upload_id)
);
CREATE INDEX multipart_uploads_by_expiry ON multipart_uploads (expires_at);
