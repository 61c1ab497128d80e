"""The audit log's writing side: the request context, records in the caller's transaction,
and in-process tallies of busy actions (downloads, refused tokens) flushed as hourly rows."""
