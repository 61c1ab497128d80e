-- echora: compatible
-- The audit log: an append-only record of each file's lifecycle and of refused credentials.
-- New table, functions and triggers only: an older server's deletions are recorded too
-- (without request context), and it writes nothing else here.

CREATE TABLE audit_log (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at             timestamptz NOT NULL DEFAULT now(),
    -- NULL for what belongs to no workspace (an unknown token, an unrestricted one).
    workspace_id   bigint,
    -- The user or bot who acted; NULL for the server's own sweeps or an unknown caller.
    -- No foreign keys: the record outlives the account, the file and the workspace.
    actor_id       bigint,
    action         text NOT NULL CHECK (action IN (
                       'ticket.created', 'upload.received', 'upload.finalized',
                       'upload.refused', 'file.uploaded', 'file.attached', 'file.downloaded',
                       'file.deleted', 'ticket.expired', 'file.swept', 'token.refused')),
    attachment_id  text,
    request_id     text CHECK (length(request_id) <= 128),
    client_addr    text CHECK (length(client_addr) <= 64),
    details        jsonb NOT NULL DEFAULT '{}',
    -- Aggregated actions (downloads, refused tokens) are one row per key and hour.
    count          integer NOT NULL DEFAULT 1 CHECK (count > 0),
    last_at        timestamptz NOT NULL DEFAULT now(),
    agg_key        text UNIQUE
);
CREATE INDEX audit_log_workspace_idx ON audit_log (workspace_id, id);
CREATE INDEX audit_log_attachment_idx ON audit_log (attachment_id, id)
    WHERE attachment_id IS NOT NULL;
CREATE INDEX audit_log_actor_idx ON audit_log (workspace_id, actor_id, id);
CREATE INDEX audit_log_last_at_idx ON audit_log (last_at);

-- Context a transaction gives its triggers (``set_config(..., true)``): who acts, the
-- request, and which action a deletion is (``file.deleted`` unless a sweep says otherwise).
CREATE FUNCTION audit_context(name text) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT nullif(current_setting('echora.audit_' || name, true), '')
$$;

-- Every attachment row deleted, by any path (a message deleted, a sweep, a workspace gone).
CREATE FUNCTION audit_attachment_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO audit_log
        (workspace_id, actor_id, action, attachment_id, request_id, client_addr, details)
    VALUES (
        OLD.workspace_id,
        audit_context('actor')::bigint,
        coalesce(audit_context('action'), 'file.deleted'),
        OLD.id,
        audit_context('request'),
        audit_context('client'),
        jsonb_build_object('size', OLD.size, 'filename', OLD.filename,
                           'message_id', OLD.message_id)
    );
    RETURN OLD;
END
$$;

CREATE TRIGGER attachments_audit_deleted
    AFTER DELETE ON attachments
    FOR EACH ROW EXECUTE FUNCTION audit_attachment_deleted();
