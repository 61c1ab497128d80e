"""Upload tickets: ask for an upload, send the bytes, finalize."""
