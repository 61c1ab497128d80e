-- echora: compatible
-- A write that failed while the store was down may leave a pending multipart upload (S3) or
-- a temp file (local disk) that its own abort could not remove. It is queued here at that
-- moment, beside its key, and the cleanup pass aborts it once the store answers again,
-- instead of waiting until it is older than the longest upload.
ALTER TABLE storage_deletions ADD COLUMN upload_id text CHECK (length(upload_id) <= 1024);
