-- echora: compatible
-- Acknowledged inbox entries are kept for a retention window, then swept: an index for that
-- pass (an older server only sweeps by expiry, and never reads this).
CREATE INDEX inbox_entries_acked_idx ON inbox_entries (acked_at) WHERE acked_at IS NOT NULL;
