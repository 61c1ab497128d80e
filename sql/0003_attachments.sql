-- Attachments (uploaded files) and the queue of stored objects still to delete.
--
-- Order of writes: the object is stored first and its row inserted second (a crash in
-- between leaves an orphan object the orphan sweep removes); the row is deleted first and
-- the object second. The second half is enforced here, not by every caller: deleting an
-- attachment row, however it happens (a message deleted and its attachments cascading, a
-- channel or workspace deleted, an unlinked upload swept), queues its objects in
-- storage_deletions in the same transaction (trigger below). The queue is drained after
-- the commit (at once by whoever deleted, else by the sweeper, which retries while storage
-- is down), so no object is ever deleted while a committed row still claims it, and no
-- object is forgotten when a delete cascades through code that knows nothing of files.

CREATE TABLE attachments (
    -- secrets.token_urlsafe(16): 128 random bits, URL-safe, never guessable or sequential.
    id             text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-]{22}$'),
    -- The objects of a deleted workspace are queued for deletion by the trigger below.
    workspace_id   bigint NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    -- No cascade: users are never hard-deleted, and files outlive their uploader's
    -- membership like their messages do.
    uploader_id    bigint NOT NULL REFERENCES users (id),
    -- Set when the upload named a channel: the attachment may then only be linked to a
    -- message in that channel. NULL: any channel of the workspace.
    channel_id     bigint,
    -- CASCADE, not SET NULL: deleting a message deletes its attachments. SET NULL would
    -- turn them back into unlinked uploads (readable by their uploader until swept), and
    -- RESTRICT would break every path that deletes messages (a channel cascading to its
    -- messages) unless each of them remembered files. The cascaded row deletions queue
    -- the objects through the trigger, in the message delete's own transaction.
    message_id     bigint REFERENCES messages (id) ON DELETE CASCADE,
    -- Server-generated (storage.new_key); never contains anything the client sent.
    storage_key    text NOT NULL UNIQUE,
    -- The sanitised display name (echora_server.filenames); never used in a key or path.
    filename       text NOT NULL CHECK (length(filename) BETWEEN 1 AND 100),
    size           bigint NOT NULL CHECK (size >= 0),
    -- What the client said (Content-Type of the part or body) and what the bytes are
    -- (magic bytes; NULL when unknown). Inline display is decided from detected_type only.
    declared_type  text NOT NULL CHECK (length(declared_type) <= 255),
    detected_type  text CHECK (length(detected_type) <= 255),
    sha256         bytea NOT NULL CHECK (length(sha256) = 32),
    width          integer CHECK (width > 0),
    height         integer CHECK (height > 0),
    thumbnail_key  text UNIQUE,
    created_at     timestamptz NOT NULL DEFAULT now(),
    linked_at      timestamptz,
    -- A channel-scoped upload's channel belongs to the upload's workspace.
    FOREIGN KEY (channel_id, workspace_id)
        REFERENCES channels (id, workspace_id) ON DELETE CASCADE,
    CHECK ((width IS NULL) = (height IS NULL)),
    CHECK ((message_id IS NULL) = (linked_at IS NULL))
);
-- The sweep of uploads never linked to a message: oldest first, unlinked only.
CREATE INDEX attachments_unlinked_idx ON attachments (created_at) WHERE message_id IS NULL;
-- A message's attachments (reads, and the ON DELETE CASCADE from messages).
CREATE INDEX attachments_message_idx ON attachments (message_id) WHERE message_id IS NOT NULL;
-- The cascade from channels.
CREATE INDEX attachments_channel_idx ON attachments (channel_id) WHERE channel_id IS NOT NULL;

-- Stored objects whose rows are gone (or that no row ever claimed) and that must still be
-- deleted from storage. A delete that fails because storage is down stays here; the
-- sweeper retries after not_before, backing off with attempts.
CREATE TABLE storage_deletions (
    key         text PRIMARY KEY,
    not_before  timestamptz NOT NULL DEFAULT now(),
    attempts    integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX storage_deletions_due_idx ON storage_deletions (not_before);

CREATE FUNCTION queue_attachment_objects() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO storage_deletions (key) VALUES (OLD.storage_key) ON CONFLICT (key) DO NOTHING;
    IF OLD.thumbnail_key IS NOT NULL THEN
        INSERT INTO storage_deletions (key) VALUES (OLD.thumbnail_key)
        ON CONFLICT (key) DO NOTHING;
    END IF;
    RETURN OLD;
END
$$;

CREATE TRIGGER attachments_queue_objects
    AFTER DELETE ON attachments
    FOR EACH ROW EXECUTE FUNCTION queue_attachment_objects();
