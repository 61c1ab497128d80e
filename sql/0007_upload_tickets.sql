-- echora: compatible
-- Upload tickets: ask for an upload, send the bytes (through Echora, or straight to the
-- store by a presigned POST), then finalize, which checks the object and creates the
-- attachment. A new table only: servers of the release before keep working, and their
-- orphan sweep cannot reach a ticket's object, which is younger than orphan_grace
-- (config refuses a grace shorter than a ticket's whole life).
CREATE TABLE upload_tickets (
    -- secrets.token_urlsafe(16), like attachment ids: the attachment takes this id.
    id             text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-]{22}$'),
    -- sha256 of the single-use secret (echu_…); the secret itself is never stored.
    token_hash     bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    workspace_id   bigint NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    owner_id       bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    channel_id     bigint,
    -- Server-generated (storage.new_key), and the attachment's key after finalize.
    storage_key    text NOT NULL UNIQUE,
    filename       text NOT NULL CHECK (length(filename) BETWEEN 1 AND 100),
    declared_type  text NOT NULL CHECK (length(declared_type) <= 255),
    size           bigint NOT NULL CHECK (size >= 0),
    -- 'put': the bytes come through Echora; 'post': a presigned POST straight to the store.
    method         text NOT NULL CHECK (method IN ('put', 'post')),
    created_at     timestamptz NOT NULL,
    -- Sending must start before this; finalize is possible until finalize_before.
    expires_at     timestamptz NOT NULL,
    finalize_before timestamptz NOT NULL,
    -- A PUT in progress holds the ticket until this time, so two PUTs never race.
    sending_until  timestamptz,
    -- Set by a completed PUT, which counted, hashed and typed the bytes on their way:
    -- finalize need not read them again.
    received_at    timestamptz,
    sha256         bytea CHECK (length(sha256) = 32),
    detected_type  text CHECK (length(detected_type) <= 255),
    width          integer CHECK (width > 0),
    height         integer CHECK (height > 0),
    -- A finalize in progress holds the ticket until this time.
    finalizing_until timestamptz,
    finalized_at   timestamptz,
    attachment_id  text,
    FOREIGN KEY (channel_id, workspace_id)
        REFERENCES channels (id, workspace_id) ON DELETE CASCADE,
    CHECK (finalize_before >= expires_at),
    CHECK ((received_at IS NULL) = (sha256 IS NULL))
);
-- Open tickets per owner (the limit), and the sweep of tickets past their life.
CREATE INDEX upload_tickets_owner_idx ON upload_tickets (owner_id) WHERE finalized_at IS NULL;
CREATE INDEX upload_tickets_finalize_before_idx ON upload_tickets (finalize_before);

-- A ticket deleted before it was finalized (swept, refused, its workspace or channel
-- deleted) queues whatever it stored, in the deleting transaction, as attachments do.
CREATE FUNCTION queue_ticket_object() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO storage_deletions (key) VALUES (OLD.storage_key) ON CONFLICT (key) DO NOTHING;
    RETURN OLD;
END
$$;

CREATE TRIGGER upload_tickets_queue_object
    AFTER DELETE ON upload_tickets
    FOR EACH ROW WHEN (OLD.finalized_at IS NULL) EXECUTE FUNCTION queue_ticket_object();
